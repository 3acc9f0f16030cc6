//! Extractors whose rejections are our faults, never axum's plain text.
//!
//! * [`Body`]: strict JSON (size-limited, `deny_unknown_fields` where the
//!   Nova schema says `additionalProperties: false`); a malformed body or a
//!   wrong type is a 400 naming the problem, a too large one a 413.
//! * [`Auth`]: the `X-Auth-Token` header, validated against the store.
//! * [`Params`]: the query string as ordered pairs (Nova repeats keys, e.g.
//!   `status=ACTIVE&status=ERROR`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use synnefo_core::service::compute::Caller;
use synnefo_core::service::identity::Authenticated;

use crate::error::{ApiError, Dialect};
use crate::state::Shared;

/// A JSON request body.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

/// True when a JSON text holds an escaped NUL (`\u0000`): no database
/// stores NUL in text (PostgreSQL refuses it), so such input is a 400 here
/// rather than a 503 from the store.
fn has_escaped_nul(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && (w[1] == b'u' || w[1] == b'U') && &w[2..] == b"0000")
}

/// Decodes a JSON body, mapping every failure to a 400 (or 413).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; a JSON object is required.",
        ));
    }
    if has_escaped_nul(bytes) {
        return Err(ApiError::bad_request(
            "Invalid input: NUL characters are not allowed.",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "Malformed request body"
        } else {
            "Invalid input"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("Request is too large.")
    } else {
        ApiError::bad_request(format!("Cannot read the request body: {r}"))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        decode(&bytes).map(Body)
    }
}

/// A JSON body rendered in Keystone's error format on failure.
#[derive(Debug, Clone)]
pub struct IdentityBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for IdentityBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_rejection(r).in_dialect(Dialect::Identity))?;
        decode(&bytes)
            .map(IdentityBody)
            .map_err(|e| e.in_dialect(Dialect::Identity))
    }
}

/// The raw token header value.
pub fn token_header(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An authenticated caller (compute dialects), with the id of the request
/// it made (for the instance-action history).
#[derive(Debug, Clone)]
pub struct Auth(pub Authenticated, pub Option<String>);

impl Auth {
    /// The compute caller.
    pub fn caller(&self) -> Caller {
        Caller {
            request_id: self.1.clone(),
            ..self.0.caller()
        }
    }
}

impl FromRequestParts<Shared> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        let token =
            token_header(parts).ok_or_else(|| ApiError::unauthorized("Authentication required"))?;
        let digest = synnefo_core::service::identity::token_digest(token);
        let request_id = parts
            .extensions
            .get::<crate::RequestId>()
            .map(|r| r.0.clone());
        if let Some(auth) = app.token_cache.get(&digest) {
            return Ok(Auth(auth, request_id));
        }
        // Read before validating: a revocation that clears the cache while
        // this validation runs makes the `put` below a no-op.
        let epoch = app.token_cache.epoch();
        let auth = app
            .identity
            .validate(token)
            .await
            .map_err(|e| match ApiError::from(e) {
                e if e.status == StatusCode::UNAUTHORIZED => {
                    ApiError::unauthorized("Authentication required")
                }
                other => other,
            })?;
        app.token_cache.put(digest, auth.clone(), epoch);
        Ok(Auth(auth, request_id))
    }
}

/// The client's address, when the server recorded it (the
/// [`ConnectInfo`](axum::extract::ConnectInfo) extension [`crate::serve()`]
/// sets); `None` for routers served otherwise (tests, embedding).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Query parameters in order, repeated keys kept.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses a raw query string (400 on bad percent-encoding).
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        match query {
            None | Some("") => Ok(Self::default()),
            Some(q) => {
                let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                    .map_err(|e| ApiError::bad_request(format!("Invalid query string: {e}")))?;
                if pairs
                    .iter()
                    .any(|(k, v)| k.contains('\0') || v.contains('\0'))
                {
                    return Err(ApiError::bad_request(
                        "Invalid query string: NUL characters are not allowed.",
                    ));
                }
                Ok(Params(pairs))
            }
        }
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `limit`: a non-negative integer, else 400.
    pub fn limit(&self) -> Result<Option<u64>, ApiError> {
        match self.get("limit") {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Invalid input for query parameters limit. Value: {v}. {v:?} is not a valid non-negative integer."))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Params::parse(parts.uri.query())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: String,
    }

    #[test]
    fn decode_errors_are_400s() {
        for bad in [
            &b""[..],
            b"  ",
            b"{",
            b"[1]",
            b"{\"a\": 1}",
            b"{\"a\": \"x\", \"b\": 2}",
            b"\xff\xfe",
        ] {
            let e = decode::<T>(bad).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(decode::<T>(b"{\"a\":\"x\"}").unwrap().a, "x");
    }

    #[test]
    fn nul_is_a_400_in_bodies_and_queries() {
        let e = decode::<T>(br#"{"a": "x\u0000y"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("NUL"), "{}", e.message);
        assert!(Params::parse(Some("name=a%00b")).is_err());
        assert!(Params::parse(Some("na%00me=a")).is_err());
        assert_eq!(decode::<T>(br#"{"a": "x\u0001"}"#).unwrap().a, "x\u{1}");
    }

    #[test]
    fn params_keep_repeats() {
        let p = Params::parse(Some("status=ACTIVE&status=ERROR&name=a%20b&limit=5")).unwrap();
        assert_eq!(p.all("status"), vec!["ACTIVE", "ERROR"]);
        assert_eq!(p.get("name"), Some("a b"));
        assert_eq!(p.limit().unwrap(), Some(5));
        assert!(Params::parse(Some("limit=-1")).unwrap().limit().is_err());
        assert!(Params::parse(Some("limit=abc")).unwrap().limit().is_err());
    }
}
