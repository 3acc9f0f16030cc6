//! `/v2.1/flavors`, `/v2.1/images` (Nova's image proxy, gone from 2.36 as in
//! Nova) and `/v2.1/limits`.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{Value, json};
use synnefo_core::service::compute::{FlavorFilter, ImageFilter};

use super::Mount;
use super::views;
use crate::error::ApiError;
use crate::extract::{Auth, Params};
use crate::microversion::Version;
use crate::state::Shared;

fn int_filter(p: &Params, key: &str) -> Result<Option<i32>, ApiError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid {key} filter [{v}]"))),
    }
}

/// Flavor filters from the query string.
pub fn flavor_filter(p: &Params) -> Result<FlavorFilter, ApiError> {
    let is_public = match p.get("is_public").map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") => None,
        Some("true" | "t" | "1" | "yes" | "y" | "on") => Some(true),
        Some("false" | "f" | "0" | "no" | "n" | "off") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid is_public filter [{other}]"
            )));
        }
    };
    let marker = match p.get("marker") {
        None => None,
        Some(m) => Some(
            m.parse()
                .map_err(|_| ApiError::bad_request(format!("marker [{m}] not found")))?,
        ),
    };
    if let Some(dir) = p.get("sort_dir")
        && !matches!(dir, "asc" | "desc")
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for query parameters sort_dir. Value: {dir}."
        )));
    }
    Ok(FlavorFilter {
        min_disk: int_filter(p, "minDisk")?,
        min_ram: int_filter(p, "minRam")?,
        is_public,
        marker,
        limit: p.limit()?,
    })
}

async fn list_flavors(
    app: &Shared,
    auth: &Auth,
    p: &Params,
) -> Result<(Vec<synnefo_core::model::Flavor>, FlavorFilter), ApiError> {
    let f = flavor_filter(p)?;
    Ok((app.compute.list_flavors(&auth.caller(), &f).await?, f))
}

/// `GET /flavors`.
pub async fn flavors(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
) -> Result<Json<Value>, ApiError> {
    let (list, f) = list_flavors(&app, &auth, &p).await?;
    let base = app.base(m.0);
    let items: Vec<_> = list
        .iter()
        .map(|fl| views::flavor_ref(&base, v, fl))
        .collect();
    let mut body = json!({ "flavors": items });
    if let Some(next) = views::next_link(
        &base,
        "flavors",
        &p.0,
        list.last().map(|f| f.id.to_string()),
        f.limit,
        list.len(),
    ) {
        body["flavors_links"] = json!(next);
    }
    Ok(Json(body))
}

/// `GET /flavors/detail`.
pub async fn flavors_detail(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
) -> Result<Json<Value>, ApiError> {
    let (list, f) = list_flavors(&app, &auth, &p).await?;
    let base = app.base(m.0);
    let items: Vec<_> = list.iter().map(|fl| views::flavor(&base, v, fl)).collect();
    let mut body = json!({ "flavors": items });
    if let Some(next) = views::next_link(
        &base,
        "flavors/detail",
        &p.0,
        list.last().map(|f| f.id.to_string()),
        f.limit,
        list.len(),
    ) {
        body["flavors_links"] = json!(next);
    }
    Ok(Json(body))
}

/// `GET /flavors/{id}`.
pub async fn flavor(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let f = app.compute.flavor(&auth.caller(), &id).await?;
    Ok(Json(
        json!({"flavor": views::flavor(&app.base(m.0), v, &f)}),
    ))
}

fn proxy_gone(v: Version) -> Result<(), ApiError> {
    if v.at_least(36) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    Ok(())
}

fn image_filter(p: &Params) -> Result<ImageFilter, ApiError> {
    Ok(ImageFilter {
        name: p.get("name").map(str::to_string),
        status: p.get("status").map(str::to_string),
        marker: p.get("marker").map(str::to_string),
        limit: p.limit()?,
        ids: None,
    })
}

/// `GET /images` (before 2.36).
pub async fn images(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
) -> Result<Json<Value>, ApiError> {
    proxy_gone(v)?;
    let f = image_filter(&p)?;
    let list = app.compute.list_images(&auth.caller(), &f).await?;
    let base = app.base(m.0);
    let items: Vec<_> = list.iter().map(|i| views::image_ref(&base, i)).collect();
    let mut body = json!({ "images": items });
    if let Some(next) = views::next_link(
        &base,
        "images",
        &p.0,
        list.last().map(|i| i.id.clone()),
        f.limit,
        list.len(),
    ) {
        body["images_links"] = json!(next);
    }
    Ok(Json(body))
}

/// `GET /images/detail` (before 2.36).
pub async fn images_detail(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
) -> Result<Json<Value>, ApiError> {
    proxy_gone(v)?;
    let f = image_filter(&p)?;
    let list = app.compute.list_images(&auth.caller(), &f).await?;
    let base = app.base(m.0);
    let items: Vec<_> = list.iter().map(|i| views::image(&base, i)).collect();
    let mut body = json!({ "images": items });
    if let Some(next) = views::next_link(
        &base,
        "images/detail",
        &p.0,
        list.last().map(|i| i.id.clone()),
        f.limit,
        list.len(),
    ) {
        body["images_links"] = json!(next);
    }
    Ok(Json(body))
}

/// `GET /images/{id}` (before 2.36).
pub async fn image(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    proxy_gone(v)?;
    let img = app.compute.image(&auth.caller(), &id).await?;
    Ok(Json(json!({"image": views::image(&app.base(m.0), &img)})))
}

/// `GET /limits`.
pub async fn limits(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    let l = app.compute.limits(&auth.caller()).await?;
    Ok(Json(views::limits(v, &l)))
}
