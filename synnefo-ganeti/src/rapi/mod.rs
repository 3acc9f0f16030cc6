//! The Ganeti RAPI v2 client.
//!
//! * [`RapiClient`] / [`RapiConfig`]: HTTPS (pinned certificate or CA),
//!   basic auth, timeouts, retries of idempotent GETs.
//! * [`endpoints`]: one type per call, implementing [`Endpoint`]; request
//!   building is pure and unit-tested.
//! * [`types`]: the typed answers (`Instance`, `NodeInfo`, `RapiJob`, ...)
//!   and request bodies (`CreateInstanceRequest`, ...), named as on the wire.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synnefo_ganeti::RapiError> {
//! use synnefo_ganeti::rapi::{RapiClient, RapiConfig};
//! let pem = std::fs::read("/etc/synnefo/cluster1-rapi.pem").unwrap_or_default();
//! let client = RapiClient::new(
//!     RapiConfig::new("https://cluster1.example.org:5080").credentials("synnefo", "secret").ca_pem(pem),
//! )?;
//! let job = client.startup("snf-42").await?;
//! let done = client.wait_for_job_success(job, std::time::Duration::from_secs(60)).await?;
//! println!("{:?}", done.status);
//! # Ok(()) }
//! ```

mod client;
pub mod endpoints;
mod tls;
pub mod types;

pub use client::{RapiClient, RapiConfig, decode, decode_instances};
pub use endpoints::Endpoint;
pub use tls::certs_from_pem;
pub use types::*;
