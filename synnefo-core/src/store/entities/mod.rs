//! sea-orm entities: one module per table, plain row types.
//!
//! The entities mirror the tables created by [`super::migration`]; they are
//! row shapes only (no relations, no behaviour). Conversions to and from the
//! domain types of [`crate::model`] live in the store, so the domain never
//! depends on sea-orm.

pub mod backend;
pub mod flavor;
pub mod floating_ip;
pub mod image;
pub mod instance_action;
pub mod ip_allocation;
pub mod ip_history;
pub mod keypair;
pub mod membership;
pub mod network;
pub mod network_backend;
pub mod nic;
pub mod port;
pub mod project;
pub mod quota;
pub mod subnet;
pub mod token;
pub mod user;
pub mod vm;
pub mod vm_diagnostic;
pub mod vm_metadata;
