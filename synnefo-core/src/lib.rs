//! # synnefo-core
//!
//! The heart of Synnefo in Rust, with no network I/O of its own:
//!
//! * [`ids`], [`model`]: domain types (VMs, flavors, images, users,
//!   projects, tokens, NICs, Ganeti backends).
//! * [`state`]: the VM state machine as pure functions
//!   ([`state::start_action`], [`state::apply_op_status`]).
//! * [`messages`]: the `ganeti-op-status` / `ganeti-net-status` wire format
//!   shared by eventd, the hook and the dispatcher.
//! * [`ports`]: the traits at the boundaries ([`ports::GanetiBackend`],
//!   [`ports::Store`], [`ports::EventBus`]).
//! * [`service`]: the application layer the API, the dispatcher and
//!   reconciliation all call, so one code path changes a VM.
//! * [`reconcile`]: the reconciliation algorithm (DB vs Ganeti) as a pure
//!   diff, and the staggered schedule.
//! * [`bus`]: the in-process event bus of the embedded default.
//! * [`dispatcher`]: the LOGIC node's loop (consume, apply, ack).
//! * [`settings`]: shipped defaults + operator overrides + environment.
//! * `store` (feature `sea-orm-store`, default): the sea-orm store over
//!   SQLite, PostgreSQL and MySQL/MariaDB, with its migrations.
//!
//! ```no_run
//! use synnefo_core::state::{apply_op_status, OpStatusEvent, OpCode, JobStatus, Transition, VmState};
//! use synnefo_core::ids::JobId;
//!
//! let vm = VmState::new_build();
//! let ev = OpStatusEvent {
//!     job_id: JobId(1), op_index: 0, opcode: OpCode::InstanceCreate,
//!     status: JobStatus::Success, log_msg: None, error: None, time_us: 1,
//! };
//! if let Transition::Applied(next) = apply_op_status(&vm, &ev) {
//!     assert_eq!(next.operstate(), synnefo_core::state::OperState::Started);
//! }
//! ```

pub mod bus;
pub mod dispatcher;
pub mod error;
pub mod ids;
pub mod messages;
pub mod model;
pub mod network;
pub mod ports;
pub mod reconcile;
pub mod service;
pub mod settings;
pub mod state;
#[cfg(feature = "sea-orm-store")]
pub mod store;
pub mod testing;

pub use error::{
    ActionError, BackendError, BusError, DomainError, EventError, ServiceError, SettingsError,
    StoreError,
};
