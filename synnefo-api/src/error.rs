//! One error type for every handler, rendered in the caller's dialect.
//!
//! Handlers return `Result<_, ApiError>`; the service layer's
//! [`ServiceError`] converts into it with `?`. The user-facing message is
//! kept apart from internal detail: store and protocol errors are logged
//! with their context and answered with a generic message, never a
//! backtrace. Nova and Cyclades clients read `{"<faultName>": {"code": N,
//! "message": ...}}`; Keystone clients read `{"error": {"code": N, "title":
//! ..., "message": ...}}`; Glance clients read a plain text body; Neutron
//! clients read `{"NeutronError": {"type": ..., "message": ..., "detail":
//! ""}}` (see [`crate::neutron`] for how service errors get their Neutron
//! type).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use synnefo_core::error::{ActionError, BackendError, ServiceError, StoreError};

/// Which fault format to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Nova / Cyclades fault objects.
    #[default]
    Compute,
    /// Keystone `{"error": ...}`.
    Identity,
    /// Glance's plain text.
    Image,
    /// Neutron's `{"NeutronError": {"type", "message", "detail"}}`; the
    /// type is [`ApiError::fault`] when it is a Neutron type already
    /// (`NetworkNotFound`, ...), else translated from the Nova fault name.
    Network,
}

/// The Neutron error type of a Nova fault name (errors raised before a
/// Neutron handler ran: body, auth, routing); Neutron types pass through.
pub fn neutron_type(fault: &'static str) -> &'static str {
    match fault {
        "badRequest" => "BadRequest",
        "unauthorized" => "HTTPUnauthorized",
        "forbidden" => "HTTPForbidden",
        "itemNotFound" => "HTTPNotFound",
        "badMethod" => "HTTPMethodNotAllowed",
        "conflictingRequest" => "Conflict",
        "overLimit" => "OverQuota",
        "serviceUnavailable" => "ServiceUnavailable",
        "computeFault" => "HTTPInternalServerError",
        other => other,
    }
}

/// An HTTP error: status, fault name and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Nova fault name (`itemNotFound`, `badRequest`, ...).
    pub fault: &'static str,
    /// Message for the client.
    pub message: String,
    /// Output format.
    pub dialect: Dialect,
    /// Seconds for a `Retry-After` header (busy and rate-limited answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A fault with an explicit status and name.
    pub fn new(status: StatusCode, fault: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            fault,
            message: message.into(),
            dialect: Dialect::Compute,
            retry_after: None,
        }
    }

    /// 429 overLimit (one caller's share used up) with `Retry-After`.
    pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "overLimit", message);
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// 503 serviceUnavailable (the service is busy) with `Retry-After`.
    pub fn busy(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::unavailable(message);
        e.retry_after = Some(retry_after_secs);
        e
    }

    /// 400 badRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "badRequest", message)
    }

    /// 401 unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 itemNotFound.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "itemNotFound", message)
    }

    /// 405 (Nova answers with a badMethod fault).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "badMethod",
            "The method is not allowed for this resource.",
        )
    }

    /// 409 conflictingRequest.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflictingRequest", message)
    }

    /// 413 (request body too large).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "overLimit", message)
    }

    /// 503 serviceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceUnavailable",
            message,
        )
    }

    /// 500 computeFault, with a generic message.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "computeFault",
            "The server has either erred or is incapable of performing the requested operation.",
        )
    }

    /// The same error in another output format.
    pub fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }
}

impl From<synnefo_core::StoreError> for ApiError {
    fn from(e: synnefo_core::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadRequest(m) => ApiError::bad_request(m),
            ServiceError::NotFound(m) => ApiError::not_found(m),
            ServiceError::OverLimit(m) => ApiError::forbidden(m),
            ServiceError::Unauthorized(m) => ApiError::unauthorized(m),
            ServiceError::Forbidden(m) => ApiError::forbidden(m),
            ServiceError::Action(a) => match a {
                ActionError::BuildInProgress => ApiError::new(
                    StatusCode::CONFLICT,
                    "conflictingRequest",
                    "Cannot perform the action while the server is being built.",
                ),
                ActionError::Deleted => ApiError::not_found("The server is deleted."),
                bad if bad.is_bad_request() => ApiError::bad_request(bad.to_string()),
                other => ApiError::conflict(other.to_string()),
            },
            ServiceError::Backend(b) => match b {
                BackendError::Rejected(m) => ApiError::conflict(m),
                BackendError::NotFound(m) => {
                    ApiError::conflict(format!("Ganeti does not know it: {m}"))
                }
                BackendError::NoBackend(m) => {
                    ApiError::unavailable(format!("No valid host was found. {m}"))
                }
                BackendError::Unavailable(m) => {
                    tracing::warn!(error = %m, "Ganeti unavailable");
                    ApiError::unavailable(
                        "The Ganeti cluster is unreachable; nothing was changed. Try again later.",
                    )
                }
                BackendError::Auth(m) | BackendError::Protocol(m) => {
                    tracing::error!(error = %m, "Ganeti error");
                    ApiError::unavailable(
                        "The Ganeti cluster did not answer properly; nothing was changed.",
                    )
                }
                BackendError::JobFailed {
                    job_id, message, ..
                } => ApiError::conflict(format!("Ganeti job {job_id} failed: {message}")),
            },
            ServiceError::Store(s) => match s {
                StoreError::NotFound(m) => ApiError::not_found(format!("{m} not found")),
                StoreError::Conflict(m) => ApiError::conflict(format!("Concurrent update: {m}")),
                StoreError::Integrity(m) | StoreError::Exhausted(m) => ApiError::conflict(m),
                StoreError::QuotaExceeded { .. } => ApiError::forbidden(s.to_string()),
                StoreError::Database(m) => {
                    tracing::error!(error = %m, "database error");
                    ApiError::unavailable("The database is unavailable.")
                }
                StoreError::Corrupt(m) => {
                    tracing::error!(error = %m, "corrupt stored value");
                    ApiError::internal()
                }
            },
            ServiceError::Event(e) => ApiError::bad_request(e.to_string()),
            ServiceError::Busy {
                message,
                retry_after_secs,
                per_caller,
            } => {
                if per_caller {
                    ApiError::too_many(message, retry_after_secs)
                } else {
                    ApiError::busy(message, retry_after_secs)
                }
            }
        }
    }
}

fn keystone_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status.as_u16();
        let mut resp = match self.dialect {
            Dialect::Compute => {
                let body = json!({ self.fault: { "code": code, "message": self.message } });
                (self.status, axum::Json(body)).into_response()
            }
            Dialect::Identity => {
                let body = json!({ "error": {
                    "code": code,
                    "title": keystone_title(self.status),
                    "message": self.message,
                }});
                (self.status, axum::Json(body)).into_response()
            }
            Dialect::Network => {
                let kind = match (self.status, self.fault) {
                    (StatusCode::PAYLOAD_TOO_LARGE, _) => "HTTPRequestEntityTooLarge",
                    (StatusCode::TOO_MANY_REQUESTS, _) => "HTTPTooManyRequests",
                    (_, f) => neutron_type(f),
                };
                let body = json!({ "NeutronError": {
                    "type": kind,
                    "message": self.message,
                    "detail": "",
                }});
                (self.status, axum::Json(body)).into_response()
            }
            Dialect::Image => {
                let text = format!(
                    "{} {}\n\n{}\n",
                    code,
                    self.status.canonical_reason().unwrap_or(""),
                    self.message
                );
                (
                    self.status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=UTF-8"),
                    )],
                    text,
                )
                    .into_response()
            }
        };
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED && self.dialect == Dialect::Identity {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Keystone uri=\"/identity\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_nova_faults() {
        let e: ApiError = ServiceError::NotFound("Instance 7 could not be found.".into()).into();
        assert_eq!((e.status, e.fault), (StatusCode::NOT_FOUND, "itemNotFound"));
        let e: ApiError = ServiceError::OverLimit("quota".into()).into();
        assert_eq!((e.status, e.fault), (StatusCode::FORBIDDEN, "forbidden"));
        let e: ApiError =
            ServiceError::Backend(BackendError::Unavailable("connect refused 10.0.0.1".into()))
                .into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !e.message.contains("10.0.0.1"),
            "internal detail leaked: {}",
            e.message
        );
        let e: ApiError = ServiceError::Store(StoreError::Database("password=x".into())).into();
        assert!(!e.message.contains("password"), "{}", e.message);
        let e: ApiError = ServiceError::Action(ActionError::BuildInProgress).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
    }
}
