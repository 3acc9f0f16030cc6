//! The crate's one error type, [`SimError`]: why a simulator did not start.
//!
//! Everything after the start is an answer on the wire (Ganeti's HTTP
//! errors, failed jobs), not a Rust error. A `SimError` converts into the
//! client's [`RapiError`], so a test that talks to the simulator with
//! [`synnefo_ganeti::rapi::RapiClient`] can use one error type throughout.

use synnefo_ganeti::RapiError;

/// Why [`crate::SimBuilder::start`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SimError {
    /// The configuration is inconsistent (see [`crate::SimConfig`]), or a
    /// given certificate or key does not parse.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No certificate could be generated, or rustls refused the pair.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The listener could not bind, or the data directory (queue, ssconf)
    /// could not be written.
    #[error("I/O error: {0}")]
    Io(String),
}

impl From<std::io::Error> for SimError {
    fn from(e: std::io::Error) -> Self {
        SimError::Io(e.to_string())
    }
}

impl From<SimError> for RapiError {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Config(m) => RapiError::Config(m),
            SimError::Tls(m) => RapiError::Tls(m),
            SimError::Io(m) => RapiError::Io(m),
        }
    }
}
