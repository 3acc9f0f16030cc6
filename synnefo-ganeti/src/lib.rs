//! # synnefo-ganeti
//!
//! The control plane's side of Ganeti. Synnefo drives Ganeti only through
//! its Remote API, so this crate is what a program embeds to talk to
//! Ganeti clusters: it runs inside `synnefo api` and `synnefo reconcile`
//! (the WEBSERVER and LOGIC nodes of a deployment) and in any other Rust
//! program that wants a typed RAPI client. It pulls in no HTTP server.
//!
//! Beside it, in the same directory, live the crates that are *not*
//! embedded by clients: `synnefo-ganeti-sim` (a RAPI-speaking Ganeti
//! simulator for tests, demos and benchmarks) and `synnefo-ganeti-master`
//! (ganeti-eventd and the Ganeti hook, run on the GANETI-MASTER node).
//! `docs/architecture.md` has the whole map.
//!
//! * [`rapi`]: an async Ganeti RAPI v2 client (reqwest + rustls): one type
//!   per call, pinned-certificate or CA verification, basic auth, timeouts,
//!   retries of idempotent GETs, typed answers, job long-polling.
//! * [`backend`]: [`backend::RapiBackend`], the core's `GanetiBackend` port
//!   over several clusters, and the pure mapping of Synnefo's flavors,
//!   images and NICs onto Ganeti's create request.
//! * [`allocator`]: picks the cluster for a new VM (least loaded, skipping
//!   drained and offline clusters).
//! * [`RapiError`]: the crate's one error type; it converts into the
//!   port's `BackendError`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synnefo_ganeti::RapiError> {
//! use std::time::Duration;
//! use synnefo_ganeti::rapi::{RapiClient, RapiConfig};
//!
//! let pem = std::fs::read("cluster1-rapi.pem")?;
//! let client = RapiClient::new(
//!     RapiConfig::new("https://cluster1.example.org:5080")
//!         .credentials("synnefo", "secret")
//!         .ca_pem(pem),
//! )?;
//! let job = client.shutdown("snf-3", Some(Duration::from_secs(30))).await?;
//! client.wait_for_job_success(job, Duration::from_secs(10)).await?;
//! assert_eq!(client.instance("snf-3").await?.status.as_deref(), Some("ADMIN_down"));
//! # Ok(()) }
//! ```

pub mod allocator;
pub mod backend;
pub mod error;
pub mod passwd;
pub mod rapi;

pub use error::RapiError;
