//! The one error type of the console module.

/// Everything that can go wrong in the console proxy, its control protocol
/// and its RFB handshakes.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// An I/O error on a socket or file.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is unusable.
    #[error("invalid vncauthproxy configuration: {0}")]
    Config(String),
    /// A control request could not be parsed or is invalid.
    #[error("bad control request: {0}")]
    BadRequest(String),
    /// The control server answered FAILED (client side).
    #[error("vncauthproxy refused the forwarding: {0}")]
    Refused(String),
    /// The requested source port is taken or cannot be bound.
    #[error("port {port} is unavailable: {reason}")]
    PortUnavailable {
        /// The port asked for.
        port: u16,
        /// Why it cannot be used.
        reason: String,
    },
    /// Every port of the pool is in use.
    #[error("no free port left in the pool {first}..={last}")]
    PoolExhausted {
        /// First port of the pool.
        first: u16,
        /// Last port of the pool.
        last: u16,
    },
    /// A user or project has as many pending forwardings as allowed.
    #[error("too many pending console forwardings for this {scope} (limit {limit})")]
    TooManyPending {
        /// `user` or `project`.
        scope: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The limit of concurrent sessions is reached.
    #[error("too many concurrent sessions (limit {0})")]
    TooManySessions(usize),
    /// The peer violated the RFB protocol.
    #[error("RFB protocol error: {0}")]
    Protocol(String),
    /// RFB authentication failed (wrong, reused or expired password).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The source address failed authentication too often.
    #[error("too many authentication failures from {0}")]
    RateLimited(std::net::IpAddr),
    /// The backend VNC server refused us or misbehaved.
    #[error("backend VNC server {address}: {reason}")]
    Backend {
        /// `host:port` of the backend.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The proxy is shutting down.
    #[error("vncauthproxy is shutting down")]
    ShuttingDown,
}

impl ConsoleError {
    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Self::Protocol(msg.into())
    }
}
