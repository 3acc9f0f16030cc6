//! `/v2.1/servers...`: extract, call [`synnefo_core::service::compute`], wrap.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::model::{AccessIps, NameRegex, ServerAttrs};
use synnefo_core::service::compute::{ServerFilter, ref_id};
use synnefo_core::state::ServerStatus;

use super::Mount;
use super::views::{self, View};
use crate::error::ApiError;
use crate::extract::{Auth, Body, Params};
use crate::microversion::Version;
use crate::state::Shared;

mod actions;
mod create;
mod rebuild;
mod rescue;
mod resize;
pub use actions::*;
pub use create::*;

/// Parses `changes-since` (ISO 8601; no zone means UTC).
pub fn parse_time(v: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    Err(ApiError::bad_request(format!(
        "Invalid input for query parameters changes-since. Value: {v}. It is not a valid ISO 8601 date-time."
    )))
}

/// The `name` filter: a regular expression, as in Nova (invalid, too long
/// or too big once compiled: 400, as Nova's `format: regex` check).
fn name_regex(pattern: &str) -> Result<NameRegex, ApiError> {
    NameRegex::new(pattern).map_err(|why| {
        ApiError::bad_request(format!(
            "Invalid input for query parameters name. Value: {pattern}. '{pattern}' is not a 'regex': {why}"
        ))
    })
}

/// Server list filters from the query string.
pub fn server_filter(p: &Params) -> Result<ServerFilter, ApiError> {
    let mut f = ServerFilter {
        name: p
            .get("name")
            .filter(|s| !s.is_empty())
            .map(name_regex)
            .transpose()?,
        image: p.get("image").map(|i| ref_id(i).to_string()),
        limit: p.limit()?,
        ..ServerFilter::default()
    };
    let statuses = p.all("status");
    if !statuses.is_empty() {
        let mut parsed = Vec::new();
        for s in statuses {
            match ServerStatus::parse(s) {
                Some(st) => parsed.push(st),
                None if NOVA_ONLY_STATUSES.iter().any(|n| n.eq_ignore_ascii_case(s)) => {}
                None => return Err(ApiError::bad_request(format!("Invalid server status: {s}"))),
            }
        }
        f.statuses = Some(parsed);
    }
    if let Some(fl) = p.get("flavor") {
        // Nova flavor ids are strings; one that is not ours matches nothing.
        match ref_id(fl).parse() {
            Ok(id) => f.flavor = Some(id),
            Err(_) => f.statuses = Some(Vec::new()),
        }
    }
    if let Some(all) = p.get("all_tenants") {
        f.all_tenants = match all.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => true,
            "0" | "f" | "false" | "off" | "n" | "no" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for query parameters all_tenants. Value: {all}. Unrecognized value '{all}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
                )));
            }
        };
    }
    if let Some(cs) = p.get("changes-since") {
        f.changes_since = Some(parse_time(cs)?);
    }
    if let Some(m) = p.get("marker") {
        f.marker = Some(
            m.parse()
                .map_err(|_| ApiError::bad_request(format!("marker [{m}] not found")))?,
        );
    }
    if let Some(dir) = p.get("sort_dir")
        && !matches!(dir, "asc" | "desc")
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for query parameters sort_dir. Value: {dir}."
        )));
    }
    Ok(f)
}

/// Statuses Nova has and Synnefo never reaches: valid filters, no matches.
const NOVA_ONLY_STATUSES: &[&str] = &[
    "PAUSED",
    "SUSPENDED",
    "RESCUE",
    "RESIZE",
    "VERIFY_RESIZE",
    "REVERT_RESIZE",
    "MIGRATING",
    "REBUILD",
    "PASSWORD",
    "SHELVED",
    "SHELVED_OFFLOADED",
    "SOFT_DELETED",
    "UNKNOWN",
];

async fn list_vms(
    app: &Shared,
    auth: &Auth,
    p: &Params,
    v: Version,
) -> Result<(Vec<synnefo_core::model::Vm>, ServerFilter), ApiError> {
    // Before 2.38 Nova lists nothing for an unknown status; from 2.38 it is 400.
    if !v.at_least(38)
        && p.all("status").iter().any(|s| {
            ServerStatus::parse(s).is_none()
                && !NOVA_ONLY_STATUSES.iter().any(|n| n.eq_ignore_ascii_case(s))
        })
    {
        return Ok((Vec::new(), ServerFilter::default()));
    }
    let f = server_filter(p)?;
    if f.statuses.as_ref().is_some_and(Vec::is_empty) {
        return Ok((Vec::new(), f));
    }
    let vms = app.compute.list_servers(&auth.caller(), &f).await?;
    Ok((vms, f))
}

/// A listing page, from [`crate::listing::Listings`] (exact: validated
/// against the project's VM generation) or rendered by `render`.
async fn listing_page<F, Fut>(
    app: &Shared,
    auth: &Auth,
    p: &Params,
    key: String,
    render: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<bytes::Bytes, ApiError>>,
{
    // The cache is validated by the caller's project generation: a listing
    // across projects (all_tenants) is never cached.
    let page = if p.get("all_tenants").is_some() {
        render().await?
    } else {
        app.listings.page(&auth.0.project.id, key, render).await?
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        page,
    )
        .into_response())
}

/// Query parameters that shape a server listing. Others are ignored, as
/// Nova ignores them: they are dropped before rendering, so they neither
/// reach the cache key (junk parameters cannot fill the cache with copies
/// of one page) nor the page's `next` link.
const LISTING_PARAMS: &[&str] = &[
    "name",
    "image",
    "flavor",
    "status",
    "changes-since",
    "marker",
    "limit",
    "sort_dir",
    "sort_key",
    "all_tenants",
];

fn listing_params(p: &Params) -> Params {
    Params(
        p.0.iter()
            .filter(|(k, _)| LISTING_PARAMS.contains(&k.as_str()))
            .cloned()
            .collect(),
    )
}

/// The cache key of a listing: who sees it, in which dialect, the path and
/// the parameters that shape it ([`LISTING_PARAMS`], in request order).
fn listing_key(auth: &Auth, m: Mount, v: Version, uri: &axum::http::Uri, p: &Params) -> String {
    let query = serde_urlencoded::to_string(&p.0).unwrap_or_default();
    // Operators see more (`OS-EXT-SRV-ATTR:user_data`): their pages are
    // cached apart.
    format!(
        "{}|{}|{}|{}|{}?{}",
        auth.0.project.id,
        m.0,
        v,
        u8::from(auth.caller().is_admin),
        uri.path(),
        query
    )
}

fn to_json_bytes(v: &impl serde::Serialize) -> Result<bytes::Bytes, ApiError> {
    serde_json::to_vec(v)
        .map(bytes::Bytes::from)
        .map_err(|_| ApiError::internal())
}

/// `GET /servers`.
pub async fn list(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let p = listing_params(&p);
    let key = listing_key(&auth, m, v, &uri, &p);
    listing_page(&app, &auth, &p, key, || async {
        let (vms, f) = list_vms(&app, &auth, &p, v).await?;
        let base = app.base(m.0);
        let refs: Vec<_> = vms.iter().map(|vm| views::server_ref(&base, vm)).collect();
        let next = views::next_link(
            &base,
            "servers",
            &p.0,
            vms.last().map(|v| v.id.to_string()),
            f.limit,
            vms.len(),
        );
        to_json_bytes(&match next {
            Some(links) => json!({"servers": refs, "servers_links": links}),
            None => json!({"servers": refs}),
        })
    })
    .await
}

/// `GET /servers/detail`.
pub async fn detail(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let p = listing_params(&p);
    let key = listing_key(&auth, m, v, &uri, &p);
    listing_page(&app, &auth, &p, key, || async {
        let (vms, f) = list_vms(&app, &auth, &p, v).await?;
        let base = app.base(m.0);
        let nics = app.compute.nics_of(&vms).await?;
        let attrs = app.compute.server_attrs_of(&vms).await?;
        let flavors = if v.at_least(47) {
            app.compute.flavor_map().await?
        } else {
            Default::default()
        };
        let mut user_data = if shows_user_data(&auth, v) {
            Some(app.compute.user_data_of(&auth.caller(), &vms).await?)
        } else {
            None
        };
        let bodies: Vec<_> = vms
            .iter()
            .map(|vm| {
                let body = views::server(
                    &base,
                    v,
                    View::Detail,
                    vm,
                    nics.get(&vm.id).map_or(&[][..], Vec::as_slice),
                    &flavors,
                    attrs.get(&vm.id).unwrap_or(&ServerAttrs::default()),
                );
                match user_data.as_mut() {
                    Some(u) => body.with_user_data(u.remove(&vm.id)),
                    None => body,
                }
            })
            .collect();
        let next = views::next_link(
            &base,
            "servers/detail",
            &p.0,
            vms.last().map(|v| v.id.to_string()),
            f.limit,
            vms.len(),
        );
        #[derive(serde::Serialize)]
        struct Page<'a> {
            servers: &'a [views::ServerBody],
            #[serde(skip_serializing_if = "Option::is_none")]
            servers_links: Option<Vec<views::Link>>,
        }
        to_json_bytes(&Page {
            servers: &bodies,
            servers_links: next,
        })
    })
    .await
}

/// Nova shows `OS-EXT-SRV-ATTR:user_data` to operators from 2.3.
fn shows_user_data(auth: &Auth, v: Version) -> bool {
    v.at_least(3) && auth.caller().is_admin
}

async fn render_one(
    app: &Shared,
    auth: &Auth,
    m: Mount,
    v: Version,
    view: View,
    vm: &synnefo_core::model::Vm,
) -> Result<Value, ApiError> {
    let nics = app
        .compute
        .nics_of(std::slice::from_ref(vm))
        .await?
        .remove(&vm.id)
        .unwrap_or_default();
    let flavors = if v.at_least(47) {
        app.compute.flavor_map().await?
    } else {
        Default::default()
    };
    let attrs = app.compute.server_attrs(vm).await?;
    let mut body = views::server(&app.base(m.0), v, view, vm, &nics, &flavors, &attrs);
    if view == View::Show && shows_user_data(auth, v) {
        let mut u = app
            .compute
            .user_data_of(&auth.caller(), std::slice::from_ref(vm))
            .await?;
        body = body.with_user_data(u.remove(&vm.id));
    }
    Ok(json!({ "server": body }))
}

/// `GET /servers/{id}`.
pub async fn show(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let vm = app.compute.server(&auth.caller(), &id).await?;
    Ok(Json(render_one(&app, &auth, m, v, View::Show, &vm).await?))
}

/// `PUT /servers/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    server: UpdateBody,
}

/// The `server` object of an update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "accessIPv4", default)]
    access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6", default)]
    access_ipv6: Option<String>,
    #[serde(rename = "OS-DCF:diskConfig", default)]
    disk_config: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
}

/// `PUT /servers/{id}`.
pub async fn update(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<UpdateRequest>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth.caller();
    let vm = app.compute.server(&caller, &id).await?;
    let u = req.server;
    let access = if u.access_ipv4.is_some() || u.access_ipv6.is_some() {
        Some(access_ips(
            u.access_ipv4.as_deref(),
            u.access_ipv6.as_deref(),
        )?)
    } else {
        None
    };
    if u.description.is_some() && !v.at_least(19) {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)",
        ));
    }
    if u.description.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported("description"));
    }
    if u.hostname.is_some() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute server. Additional properties are not allowed ('hostname' was unexpected)",
        ));
    }
    if let Some(dc) = &u.disk_config
        && dc != "AUTO"
        && dc != "MANUAL"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute OS-DCF:diskConfig. Value: {dc}."
        )));
    }
    let vm = match u.name {
        Some(name) => app.compute.rename_server(&caller, &id, &name).await?,
        None => vm,
    };
    let vm = match access {
        // a field left out keeps its value, as in Nova
        Some(new) => {
            let old = app
                .compute
                .access_ips_of(std::slice::from_ref(&vm))
                .await?
                .remove(&vm.id)
                .unwrap_or_default();
            let merged = AccessIps {
                v4: if u.access_ipv4.is_some() {
                    new.v4
                } else {
                    old.v4
                },
                v6: if u.access_ipv6.is_some() {
                    new.v6
                } else {
                    old.v6
                },
            };
            app.compute.set_access_ips(&caller, &id, merged).await?
        }
        None => vm,
    };
    Ok(Json(
        render_one(&app, &auth, m, v, View::Update, &vm).await?,
    ))
}

/// `DELETE /servers/{id}`.
pub async fn delete(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.compute.delete(&auth.caller(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
