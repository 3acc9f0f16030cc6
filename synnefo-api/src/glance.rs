//! Glance v2 read subset at `/image`: the CLI resolves `--image NAME`
//! through it (`GET /v2/images/NAME` first, then `?name=NAME`), and
//! `openstack image list` pages through `/v2/images`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use synnefo_core::model::Image;
use synnefo_core::service::compute::ImageFilter;

use crate::error::{ApiError, Dialect};
use crate::extract::{Auth, Params};
use crate::state::Shared;

/// Routes under `/image`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/image", get(versions_multiple))
        .route("/image/", get(versions_multiple))
        .route("/image/versions", get(versions))
        .route("/image/v2/images", get(list))
        .route("/image/v2/images/{id}", get(show))
}

fn version_list(app: &Shared) -> Value {
    let href = format!("{}/image/v2/", app.config.public_url);
    let v = |id: &str, status: &str| json!({"id": id, "status": status, "links": [{"rel": "self", "href": href}]});
    json!({"versions": [v("v2.9", "CURRENT"), v("v2.1", "SUPPORTED"), v("v2.0", "SUPPORTED")]})
}

async fn versions_multiple(State(app): State<Shared>) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(version_list(&app))).into_response()
}

async fn versions(State(app): State<Shared>) -> Json<Value> {
    Json(version_list(&app))
}

fn ts(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Glance's view of an image.
pub fn image_body(img: &Image) -> Value {
    let mut m = Map::new();
    // Custom properties go at the top level in Glance v2; base keys win.
    for (k, v) in &img.metadata {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    let base = json!({
        "id": img.id,
        "name": img.name,
        "status": img.status.to_ascii_lowercase(),
        "visibility": if img.is_public { "public" } else { "private" },
        "protected": false,
        "os_hidden": false,
        "checksum": null,
        "os_hash_algo": null,
        "os_hash_value": null,
        "owner": img.owner,
        "size": null,
        "virtual_size": null,
        "min_ram": img.min_ram_mib,
        "min_disk": img.min_disk_gib,
        "disk_format": img.metadata.get("disk_format").cloned().unwrap_or_else(|| "diskdump".into()),
        "container_format": img.metadata.get("container_format").cloned().unwrap_or_else(|| "bare".into()),
        "created_at": ts(&img.created),
        "updated_at": ts(&img.updated),
        "tags": [],
        "self": format!("/v2/images/{}", img.id),
        "file": format!("/v2/images/{}/file", img.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(b) = base {
        m.extend(b);
    }
    Value::Object(m)
}

fn err(e: ApiError) -> ApiError {
    e.in_dialect(Dialect::Image)
}

async fn list(State(app): State<Shared>, auth: Auth, p: Params) -> Result<Json<Value>, ApiError> {
    let ids = match p.get("id") {
        None => None,
        Some(v) => match v.strip_prefix("in:") {
            Some(list) => Some(
                list.split(',')
                    .map(|s| s.trim().trim_matches('"').to_string())
                    .collect(),
            ),
            None => Some(vec![v.to_string()]),
        },
    };
    if let Some(vis) = p.get("visibility")
        && !matches!(vis, "public" | "private" | "shared" | "community" | "all")
    {
        return Err(err(ApiError::bad_request(format!(
            "Invalid visibility value: {vis}"
        ))));
    }
    let limit = p.limit().map_err(err)?;
    let f = ImageFilter {
        name: p.get("name").map(str::to_string),
        ids,
        status: p.get("status").map(str::to_string),
        marker: p.get("marker").map(str::to_string),
        limit,
    };
    let list = app
        .compute
        .list_images(&auth.caller(), &f)
        .await
        .map_err(|e| err(e.into()))?;
    let images: Vec<Value> = list
        .iter()
        .filter(|i| match p.get("visibility") {
            Some("public") => i.is_public,
            Some("private") => !i.is_public,
            _ => true,
        })
        .map(image_body)
        .collect();
    let mut body = json!({"images": images, "schema": "/v2/schemas/images", "first": "/v2/images"});
    if let (Some(limit), Some(last)) = (limit, list.last())
        && list.len() as u64 == limit
        && limit > 0
    {
        body["next"] = json!(format!("/v2/images?marker={}&limit={limit}", last.id));
    }
    Ok(Json(body))
}

async fn show(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let img = app
        .compute
        .image(&auth.caller(), &id)
        .await
        .map_err(|_| err(ApiError::not_found(format!("No image found with ID {id}"))))?;
    Ok(Json(image_body(&img)))
}
