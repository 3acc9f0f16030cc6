//! # synnefo-ganeti
//!
//! The Ganeti side of Synnefo. The control plane drives Ganeti only
//! through its Remote API, so everything here speaks RAPI:
//!
//! * [`rapi`]: an async Ganeti RAPI v2 client (reqwest + rustls): one type
//!   per call, pinned-certificate or CA verification, basic auth, timeouts,
//!   retries of idempotent GETs, typed answers, job long-polling.
//! * [`backend`]: [`backend::RapiBackend`], the core's `GanetiBackend` port
//!   over several clusters, and the pure mapping of Synnefo's flavors,
//!   images and NICs onto Ganeti's create request.
//! * [`allocator`]: picks the cluster for a new VM (least loaded, skipping
//!   drained and offline clusters).
//! * [`sim`]: a Ganeti simulator speaking the same RAPI JSON as Ganeti 3.0
//!   and writing Ganeti-shaped job files, for tests, demos and benchmarks.
//! * [`eventd`], [`hook`]: the job-queue watcher and the Ganeti hook.
//! * [`RapiError`]: the crate's one error type; it converts into the
//!   port's `BackendError`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synnefo_ganeti::RapiError> {
//! use std::time::Duration;
//! use synnefo_ganeti::sim::Simulator;
//!
//! // A simulated cluster over HTTPS; its client pins the generated certificate.
//! let sim = Simulator::builder().https().instances(10).start().await?;
//! let client = sim.client()?;
//! let job = client.shutdown("snf-3", Some(Duration::from_secs(30))).await?;
//! client.wait_for_job_success(job, Duration::from_secs(10)).await?;
//! assert_eq!(client.instance("snf-3").await?.status.as_deref(), Some("ADMIN_down"));
//! # Ok(()) }
//! ```

#![recursion_limit = "256"]

pub mod allocator;
pub mod backend;
pub mod error;
pub mod eventd;
pub mod hook;
pub mod rapi;
pub mod sim;

pub use error::RapiError;
