//! The OpenStack Compute (Nova) v2.1 dialect.
//!
//! Mounted twice by [`crate::router`]: at the root (`/v2.1/...`, the layout
//! Nova itself uses) and under `/compute` (the layout the service catalog
//! advertises, next to `/identity` and `/image`). [`Mount`] tells handlers
//! which one served the request, so links point back at the same place.

mod catalog;
mod instance_actions;
pub(crate) mod interfaces;
pub mod keypairs;
mod server_password;
pub(crate) mod servers;
pub mod views;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::microversion::{self, MAX, MIN};
use crate::state::Shared;

/// Where the Nova routes are mounted (`""` or `"/compute"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount(pub &'static str);

/// The Nova routes under `mount`.
pub fn routes(mount: &'static str) -> Router<Shared> {
    let v21 = Router::new()
        .route(&format!("{mount}/v2.1"), get(version_v21))
        .route(&format!("{mount}/v2.1/"), get(version_v21))
        .route(
            &format!("{mount}/v2.1/servers"),
            get(servers::list).post(servers::create),
        )
        .route(
            &format!("{mount}/v2.1/servers/detail"),
            get(servers::detail),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}"),
            get(servers::show)
                .put(servers::update)
                .delete(servers::delete),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/action"),
            post(servers::action),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/ips"),
            get(servers::ips),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/ips/{{network}}"),
            get(servers::ips_network),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/metadata"),
            get(servers::metadata_list)
                .post(servers::metadata_merge)
                .put(servers::metadata_replace),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/metadata/{{key}}"),
            get(servers::metadata_get)
                .put(servers::metadata_put)
                .delete(servers::metadata_delete),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/remote-consoles"),
            post(servers::remote_console),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/os-server-password"),
            get(server_password::show).delete(server_password::clear),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/os-instance-actions"),
            get(instance_actions::list),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/os-instance-actions/{{request_id}}"),
            get(instance_actions::show),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/os-interface"),
            get(interfaces::list).post(interfaces::create),
        )
        .route(
            &format!("{mount}/v2.1/servers/{{id}}/os-interface/{{port}}"),
            get(interfaces::show).delete(interfaces::delete),
        )
        .route(
            &format!("{mount}/v2.1/os-keypairs"),
            get(keypairs::list).post(keypairs::create),
        )
        .route(
            &format!("{mount}/v2.1/os-keypairs/{{name}}"),
            get(keypairs::show).delete(keypairs::delete),
        )
        .route(&format!("{mount}/v2.1/flavors"), get(catalog::flavors))
        .route(
            &format!("{mount}/v2.1/flavors/detail"),
            get(catalog::flavors_detail),
        )
        .route(
            &format!("{mount}/v2.1/flavors/{{id}}"),
            get(catalog::flavor),
        )
        .route(&format!("{mount}/v2.1/images"), get(catalog::images))
        .route(
            &format!("{mount}/v2.1/images/detail"),
            get(catalog::images_detail),
        )
        .route(&format!("{mount}/v2.1/images/{{id}}"), get(catalog::image))
        .route(&format!("{mount}/v2.1/limits"), get(catalog::limits))
        .route_layer(middleware::from_fn(negotiate));
    let root = if mount.is_empty() {
        "/".to_string()
    } else {
        format!("{mount}/")
    };
    let mut r = Router::new().route(&root, get(versions));
    if !mount.is_empty() {
        r = r.route(mount, get(versions));
    }
    r.route(&format!("{mount}/v2"), get(version_v2))
        .route(&format!("{mount}/v2/"), get(version_v2))
        .merge(v21)
        .layer(Extension(Mount(mount)))
}

/// Negotiates the microversion, hands it to the handler, echoes it.
async fn negotiate(mut req: Request, next: Next) -> Response {
    let v = match microversion::negotiate(req.headers()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(v);
    let mut resp = next.run(req).await;
    microversion::echo(resp.headers_mut(), v);
    resp
}

fn version_doc(
    base: &str,
    id: &str,
    path: &str,
    status: &str,
    version: String,
    min: String,
    updated: &str,
) -> serde_json::Value {
    json!({
        "id": id,
        "links": [{"href": format!("{base}/{path}/"), "rel": "self"}],
        "status": status,
        "version": version,
        "min_version": min,
        "updated": updated,
    })
}

/// `GET /`: the versions Nova serves.
async fn versions(State(app): State<Shared>, Extension(m): Extension<Mount>) -> Response {
    let base = app.base(m.0);
    let body = json!({"versions": [
        version_doc(&base, "v2.0", "v2", "SUPPORTED", String::new(), String::new(), "2011-01-21T11:33:21Z"),
        version_doc(&base, "v2.1", "v2.1", "CURRENT", MAX.to_string(), MIN.to_string(), "2013-07-23T11:33:21Z"),
    ]});
    (StatusCode::OK, Json(body)).into_response()
}

#[allow(clippy::too_many_arguments)]
fn single_version(
    base: &str,
    id: &str,
    path: &str,
    status: &str,
    version: String,
    min: String,
    updated: &str,
    media: &str,
) -> serde_json::Value {
    let mut doc = version_doc(base, id, path, status, version, min, updated);
    if let Some(l) = doc["links"].as_array_mut() {
        l.push(json!({"href": "http://docs.openstack.org/", "rel": "describedby", "type": "text/html"}));
    }
    doc["media-types"] = json!([{"base": "application/json", "type": media}]);
    json!({ "version": doc })
}

async fn version_v2(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
) -> Json<serde_json::Value> {
    Json(single_version(
        &app.base(m.0),
        "v2.0",
        "v2",
        "SUPPORTED",
        String::new(),
        String::new(),
        "2011-01-21T11:33:21Z",
        "application/vnd.openstack.compute+json;version=2",
    ))
}

async fn version_v21(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
) -> Json<serde_json::Value> {
    Json(single_version(
        &app.base(m.0),
        "v2.1",
        "v2.1",
        "CURRENT",
        MAX.to_string(),
        MIN.to_string(),
        "2013-07-23T11:33:21Z",
        "application/vnd.openstack.compute+json;version=2.1",
    ))
}

/// 404 for unknown paths in the compute dialect.
pub async fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}
