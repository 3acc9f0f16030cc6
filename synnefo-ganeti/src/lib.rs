//! # synnefo-ganeti
//!
//! The Ganeti side of Synnefo.
//!
//! * [`rapi`]: an async Ganeti RAPI v2 client (reqwest + rustls).
//! * [`backend`]: [`backend::RapiBackend`], the `GanetiBackend` port over
//!   several clusters.
//! * [`allocator`]: picks the cluster for a new VM.
//! * [`sim`]: a Ganeti simulator speaking the same RAPI JSON, writing
//!   Ganeti-shaped job files, for tests, demos and benchmarks.
//! * [`eventd`], [`hook`]: the job-queue watcher and the Ganeti hook.

#![recursion_limit = "256"]

pub mod allocator;
pub mod backend;
pub mod error;
pub mod eventd;
pub mod hook;
pub mod rapi;
pub mod sim;

pub use error::RapiError;
