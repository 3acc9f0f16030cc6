//! The WEBSERVER node of Synnefo: the OpenStack Compute API (plus identity,
//! image proxy and the Synnefo/Cyclades dialect) as an embeddable axum
//! `Router`, and the out-of-band VNC console proxy (`console`).
//!
//! [`router`] builds the whole HTTP surface from an [`ApiState`] (the core
//! ports plus settings), so other programs can mount it:
//!
//! | path | dialect |
//! |---|---|
//! | `/`, `/v2/`, `/v2.1/...` and `/compute/...` | OpenStack Compute v2.1 (microversions up to [`microversion::MAX`]) |
//! | `/identity/v3/...` | Keystone v3 subset (password and token methods) |
//! | `/image/v2/...` | Glance v2 read subset |
//! | `/compute/v2.0/...` | Synnefo's Cyclades compute dialect (kamaki) |
//! | `/network/v2.0/...` | OpenStack Networking (Neutron) v2.0 subset: networks, subnets, ports, floating IPs |
//! | `/cyclades/network/v2.0/...` | the same in Synnefo's Cyclades network dialect (kamaki) |
//! | `/identity/v2.0/tokens`, `/account/v1.0/...` | Astakos identity and account API (kamaki) |
//! | `/healthz`, `/metrics`, `/openapi.json` | operations |
//!
//! Handlers are a few lines: extract, call
//! [`synnefo_core::service::compute`] / [`synnefo_core::service::identity`],
//! wrap. Every response carries `x-openstack-request-id`; bad input is a
//! 400 (or 413) fault, never a 500. Server listings are served from an
//! exact per-process cache validated against the database on every request
//! ([`listing`]), so API processes stay stateless.
//!
//! ```no_run
//! use std::sync::Arc;
//! use synnefo_api::{ApiConfig, ApiState, router};
//! # async fn demo(store: Arc<dyn synnefo_core::ports::Store>, ganeti: Arc<dyn synnefo_core::ports::GanetiBackend>) -> std::io::Result<()> {
//! let app = router(ApiState::new(store, ganeti, ApiConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8774").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

mod astakos;
pub mod console;
pub mod consoles;
mod cyclades;
pub mod error;
pub mod extract;
mod glance;
mod keystone;
pub mod listing;
pub mod metrics;
pub mod microversion;
pub mod neutron;
pub mod nova;
pub mod openapi;
pub mod serve;
pub mod state;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tracing::Instrument;

pub use error::ApiError;
pub use serve::{ServeConfig, serve};
pub use state::{ApiConfig, ApiState, App};

/// The request id of the current request (in request extensions).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the whole API.
pub fn router(state: ApiState) -> Router {
    let limit = state.config.max_body_bytes;
    let app: state::Shared = Arc::new(App::new(state));
    if let Some(every) = app.config.token_purge_interval {
        state::spawn_token_purger(&app, every);
    }
    Router::new()
        .merge(nova::routes(""))
        .merge(nova::routes("/compute"))
        .merge(keystone::routes())
        .merge(glance::routes())
        .merge(cyclades::routes())
        .merge(neutron::routes())
        .merge(astakos::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .fallback(nova::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Request id, tracing span and metrics around every request.
async fn observe(State(app): State<state::Shared>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let method = req.method().clone();
    // the label set stays closed whatever method a client invents
    let method_label = metrics::method_label(method.as_str());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    req.extensions_mut().insert(RequestId(id.clone()));
    let write = !matches!(method, axum::http::Method::GET | axum::http::Method::HEAD);
    let span = tracing::info_span!("request", request_id = %id, method = method_label, path = %req.uri().path());
    let mut resp = next.run(req).instrument(span.clone()).await;
    if write {
        app.token_cache.clear();
    }
    let elapsed = started.elapsed();
    let status = resp.status();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request served"
            );
        }
    });
    app.metrics
        .observe(method_label, &route, status.as_u16(), elapsed);
    if let Ok(h) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert("x-openstack-request-id", h.clone());
        resp.headers_mut().insert("x-compute-request-id", h);
    }
    resp
}

async fn healthz(State(app): State<state::Shared>) -> Response {
    match app.compute.store().count_vms().await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable", "database": "unreachable"})),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(app): State<state::Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn openapi_json(State(app): State<state::Shared>) -> Json<serde_json::Value> {
    Json(openapi::document(&app.config.public_url))
}

/// Entry points for the fuzz targets (`synnefo-api/fuzz`): the request
/// decoding handlers run before any store access (bodies, query filters,
/// microversion headers). Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use axum::http::StatusCode;
    use axum::http::{HeaderMap, HeaderValue};

    use crate::error::ApiError;
    use crate::extract::{Params, decode};

    fn client_error(r: Result<(), ApiError>) -> Result<(), StatusCode> {
        r.map_err(|e| e.status)
    }

    /// Decodes `bytes` as request body number `kind` (server create,
    /// update, metadata, metadata item, remote console, action, Keystone
    /// auth, Astakos tokens); `Err` is the answer's status.
    pub fn body(kind: u8, bytes: &[u8]) -> Result<(), StatusCode> {
        use crate::nova::servers as s;
        client_error(match kind % 8 {
            0 => decode::<s::CreateRequest>(bytes).map(drop),
            1 => decode::<s::UpdateRequest>(bytes).map(drop),
            2 => decode::<s::MetadataBody>(bytes).map(drop),
            3 => decode::<s::MetaItemBody>(bytes).map(drop),
            4 => decode::<s::RemoteConsoleRequest>(bytes).map(drop),
            5 => decode::<serde_json::Map<String, serde_json::Value>>(bytes).map(drop),
            6 => decode::<crate::keystone::AuthRequest>(bytes).map(drop),
            _ => decode::<crate::astakos::TokensRequest>(bytes).map(drop),
        })
    }

    /// Parses a query string and the server-list filters from it.
    pub fn query(q: &str) -> Result<(), StatusCode> {
        client_error((|| {
            let p = Params::parse(Some(q))?;
            p.limit()?;
            crate::nova::servers::server_filter(&p)?;
            Ok(())
        })())
    }

    /// Negotiates a microversion from the two headers clients send.
    pub fn microversion(openstack: &[u8], nova: &[u8]) -> Result<(), StatusCode> {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(openstack) {
            h.insert("openstack-api-version", v);
        }
        if let Ok(v) = HeaderValue::from_bytes(nova) {
            h.insert("x-openstack-nova-api-version", v);
        }
        client_error(crate::microversion::negotiate(&h).map(drop))
    }

    /// The fuzz target's contract on stable Rust, without cargo-fuzz: a
    /// fixed corpus of hostile inputs and a few thousand pseudo-random
    /// mutations of it, each through the three entry points. No panic,
    /// and every refusal a 4xx.
    #[cfg(test)]
    mod tests {
        use super::*;

        const SEEDS: &[&[u8]] = &[
            b"",
            b"{}",
            b"null",
            b"{\"server\": {\"name\": \"a\\u0000b\", \"flavorRef\": 1, \"imageRef\": []}}",
            b"{\"metadata\": {\"k\": \"v\\u0000\"}}",
            b"{\"meta\": {\"\": \"\"}}",
            b"{\"auth\": {\"identity\": {\"methods\": [\"password\"]}}}",
            b"{\"auth\": {\"passwordCredentials\": {\"username\": 1}}}",
            b"{\"remote_console\": {\"protocol\": \"vnc\", \"type\": 99999999999999999999}}",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            b"name=%00&limit=-1&marker=zz&changes-since=99999-99-99&sort_dir=up",
            b"limit=18446744073709551616&status=%FF%FE&flavor=&image=%",
            b"compute 2.99999999999999999999\ncompute latest",
            b"\xff\xfe\x00\n2.",
        ];

        fn check(r: Result<(), StatusCode>) {
            if let Err(s) = r {
                assert!(s.is_client_error(), "a refusal answered {s}");
            }
        }

        fn one(data: &[u8]) {
            let Some((&selector, rest)) = data.split_first() else {
                return;
            };
            for kind in 0..8 {
                check(body(kind, rest));
            }
            check(body(selector, data));
            check(query(&String::from_utf8_lossy(data)));
            let cut = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
            let (a, b) = data.split_at(cut);
            check(microversion(a, b.get(1..).unwrap_or_default()));
        }

        #[test]
        fn decoding_refuses_hostile_input_with_4xx_only() {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for seed in SEEDS {
                one(seed);
                for _ in 0..200 {
                    let mut d = seed.to_vec();
                    for _ in 0..=(next() % 4) {
                        let r = next();
                        let at = if d.is_empty() {
                            0
                        } else {
                            (r as usize >> 8) % d.len()
                        };
                        match r % 3 {
                            0 if !d.is_empty() => d[at] = (r >> 32) as u8,
                            1 => d.insert(at, (r >> 40) as u8),
                            _ if !d.is_empty() => {
                                d.remove(at);
                            }
                            _ => d.push(r as u8),
                        }
                    }
                    one(&d);
                }
            }
        }
    }
}
