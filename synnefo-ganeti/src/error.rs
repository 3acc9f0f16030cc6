//! The crate's one error type, [`RapiError`], and its mapping onto the
//! core port's [`BackendError`].
//!
//! The variants keep apart what a caller reacts to differently: bad
//! credentials (fix the settings), a missing instance or job (reconcile),
//! a refusal (409/400: do not retry as is), a failed Ganeti job (show its
//! log to the user), and transport trouble (TLS, timeouts, connection
//! errors: retry later).

use serde_json::Value;
use synnefo_core::BackendError;
use synnefo_core::state::OpError;

/// What can go wrong talking RAPI to a Ganeti cluster.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RapiError {
    /// 401: missing or wrong credentials (403: the user may not write).
    #[error("RAPI authentication failed (HTTP {status}): {message}")]
    Auth {
        /// 401 or 403.
        status: u16,
        /// Ganeti's `message`/`explain`.
        message: String,
    },
    /// 404, or a job query answered with all fields null.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: the request conflicts with the cluster's state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 400 (and 415): Ganeti refused the request as malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Any other non-success HTTP status (500, 502, 503, ...).
    #[error("RAPI answered HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// Ganeti's `message`/`explain`, or the body.
        message: String,
    },
    /// A Ganeti job ended in `error` (or `canceled`).
    #[error("job {job_id} failed: {message}")]
    JobFailed {
        /// The failed job's id.
        job_id: u64,
        /// A readable message (the failing op's error text).
        message: String,
        /// The failing op's error, typed (read from `result` where the
        /// answer came in); boxed to keep the error small.
        error: Option<Box<OpError>>,
        /// The failing op's raw `opresult` (e.g. `["OpPrereqError", [msg, ecode]]`).
        result: Value,
        /// The job's log messages, oldest first.
        log: Vec<String>,
    },
    /// The TLS handshake failed (wrong or untrusted certificate, ...).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The request (or a job wait) did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Connection refused, reset, DNS, ...
    #[error("transport error: {0}")]
    Transport(String),
    /// The answer is not the JSON we expect.
    #[error("cannot decode RAPI answer: {0}")]
    Decode(String),
    /// Invalid client configuration (URL, CA file, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Local I/O (reading a CA or certificate file).
    #[error("I/O error: {0}")]
    Io(String),
}

impl RapiError {
    /// True for errors that may go away on retry (transport, timeout,
    /// 502/503/504).
    pub fn is_transient(&self) -> bool {
        match self {
            RapiError::Timeout(_) | RapiError::Transport(_) => true,
            RapiError::Http { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

impl From<std::io::Error> for RapiError {
    fn from(e: std::io::Error) -> Self {
        RapiError::Io(e.to_string())
    }
}

impl From<RapiError> for BackendError {
    fn from(e: RapiError) -> Self {
        match e {
            RapiError::Auth { .. } => BackendError::Auth(e.to_string()),
            RapiError::NotFound(what) => BackendError::NotFound(what),
            RapiError::Conflict(m) | RapiError::BadRequest(m) => BackendError::Rejected(m),
            RapiError::JobFailed {
                job_id,
                message,
                error,
                ..
            } => BackendError::JobFailed {
                job_id,
                message,
                error: error.map(|e| *e),
            },
            RapiError::Http { status, .. } if (500..600).contains(&status) => {
                BackendError::Unavailable(e.to_string())
            }
            RapiError::Http { .. } => BackendError::Rejected(e.to_string()),
            RapiError::Tls(_) | RapiError::Timeout(_) | RapiError::Transport(_) => {
                BackendError::Unavailable(e.to_string())
            }
            RapiError::Decode(_) | RapiError::Config(_) | RapiError::Io(_) => {
                BackendError::Protocol(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_onto_backend_errors() {
        let auth = RapiError::Auth {
            status: 401,
            message: "x".into(),
        };
        assert!(matches!(BackendError::from(auth), BackendError::Auth(_)));
        assert!(matches!(
            BackendError::from(RapiError::NotFound("i".into())),
            BackendError::NotFound(_)
        ));
        assert!(matches!(
            BackendError::from(RapiError::Conflict("c".into())),
            BackendError::Rejected(_)
        ));
        assert!(matches!(
            BackendError::from(RapiError::Tls("t".into())),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            BackendError::from(RapiError::Http {
                status: 503,
                message: String::new()
            }),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            BackendError::from(RapiError::Decode("d".into())),
            BackendError::Protocol(_)
        ));
        let failed = RapiError::JobFailed {
            job_id: 7,
            message: "boom".into(),
            error: Some(Box::new(OpError {
                class: "OpExecError".into(),
                message: "boom".into(),
                code: None,
            })),
            result: Value::Null,
            log: vec![],
        };
        match BackendError::from(failed) {
            BackendError::JobFailed {
                job_id,
                message,
                error,
            } => {
                assert_eq!((job_id, message.as_str()), (7, "boom"));
                assert_eq!(
                    error.unwrap().class,
                    "OpExecError",
                    "the typed error survives"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transient_errors() {
        assert!(RapiError::Timeout("t".into()).is_transient());
        assert!(
            RapiError::Http {
                status: 503,
                message: String::new()
            }
            .is_transient()
        );
        assert!(!RapiError::NotFound("x".into()).is_transient());
    }
}
