//! The crate's error type and its mapping onto the core's [`BusError`].

use synnefo_core::BusError;

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AmqpError {
    /// Bad configuration (URI, names too long for AMQP).
    #[error("invalid AMQP configuration: {0}")]
    Config(String),
    /// The broker cannot be reached or refused the login.
    #[error("cannot connect to RabbitMQ at {uri}: {reason}")]
    Connect {
        /// The URI, password masked.
        uri: String,
        /// Why.
        reason: String,
    },
    /// Declaring exchanges/queues failed (e.g. a queue exists with other
    /// arguments, such as classic vs quorum).
    #[error("declaring the RabbitMQ topology failed: {0}")]
    Topology(String),
    /// A channel-level operation failed (the connection is probably gone).
    #[error("AMQP channel error: {0}")]
    Channel(String),
    /// The broker did not confirm a publish in time (it stays unknown
    /// whether it has the message; the caller retries or spools).
    #[error("publish not confirmed within {0:?}: {1}")]
    PublishTimeout(std::time::Duration, String),
    /// The broker refused a publish (negative confirm or unroutable).
    #[error("the broker refused the message: {0}")]
    Refused(String),
    /// The bus was closed.
    #[error("the AMQP bus is closed")]
    Closed,
}

impl From<AmqpError> for BusError {
    fn from(e: AmqpError) -> Self {
        match e {
            AmqpError::Closed => BusError::Closed,
            AmqpError::Config(_) | AmqpError::Topology(_) => BusError::Other(e.to_string()),
            other => BusError::Unavailable(other.to_string()),
        }
    }
}

pub(crate) fn channel_err(what: &str, e: lapin::Error) -> AmqpError {
    AmqpError::Channel(format!("{what}: {e}"))
}
