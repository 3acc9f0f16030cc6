//! Typed RAPI payloads: what Ganeti 3.0 answers, and the request bodies we
//! send. Field names follow Ganeti's wire names exactly (`nic.ips`,
//! `received_ts`, ...); see `synnefo-ganeti/tests/fixtures/ganeti-3.0/` for recorded
//! answers.
//!
//! Decoding is lenient where Ganeti is loose (a job id is a number or a
//! string, lists may be `null`, `admin_state` was a bool before 2.x) and
//! strict where a wrong value would mislead (an unknown job status is an
//! error, not a default).

use serde::Deserialize;
use serde::de::Deserializer;

/// `null` decodes as the type's default (Ganeti sends `null` for empty
/// lists on offline nodes and for missing job fields).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

mod cluster;
mod instance;
mod job;
mod network;
mod request;
mod wire;

pub use cluster::*;
pub use instance::*;
pub use job::*;
pub use network::*;
pub use request::*;
pub use wire::*;

#[cfg(test)]
mod tests;
