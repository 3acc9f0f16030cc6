//! `/v2.1/servers...`: extract, call [`synnefo_core::service::compute`], wrap.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::model::{AccessIps, NameRegex, ServerAttrs};
use synnefo_core::service::compute::{
    ConsoleAccess, CreateCount, CreateServer, ServerFilter, ref_id,
};
use synnefo_core::service::network::{ServerNetwork, ServerNetworks};
use synnefo_core::state::{RebootKind, ServerStatus};

use super::Mount;
use super::views::{self, View};
use crate::error::ApiError;
use crate::extract::{Auth, Body, Params};
use crate::microversion::Version;
use crate::state::Shared;

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
    format!(
        "{}|{}|{}|{}?{}",
        auth.0.project.id,
        m.0,
        v,
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
        let bodies: Vec<_> = vms
            .iter()
            .map(|vm| {
                views::server(
                    &base,
                    v,
                    View::Detail,
                    vm,
                    nics.get(&vm.id).map_or(&[][..], Vec::as_slice),
                    &flavors,
                    attrs.get(&vm.id).unwrap_or(&ServerAttrs::default()),
                )
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

async fn render_one(
    app: &Shared,
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
    Ok(json!({"server": views::server(&app.base(m.0), v, view, vm, &nics, &flavors, &attrs)}))
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
    Ok(Json(render_one(&app, m, v, View::Show, &vm).await?))
}

/// Nova's create request (`additionalProperties: false`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    server: CreateBody,
    #[serde(rename = "os:scheduler_hints", default)]
    _hints: Option<Value>,
    #[serde(rename = "OS-SCH-HNT:scheduler_hints", default)]
    _hints_legacy: Option<Value>,
}

/// The `server` object of a create request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(rename = "imageRef", default)]
    image_ref: Option<String>,
    #[serde(rename = "flavorRef")]
    flavor_ref: Value,
    #[serde(rename = "adminPass", default)]
    admin_pass: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    networks: Option<Value>,
    #[serde(rename = "accessIPv4", default)]
    access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6", default)]
    access_ipv6: Option<String>,
    #[serde(default)]
    personality: Option<Vec<Value>>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    block_device_mapping: Option<Vec<Value>>,
    #[serde(default)]
    block_device_mapping_v2: Option<Vec<Value>>,
    #[serde(default)]
    config_drive: Option<Value>,
    #[serde(default)]
    min_count: Option<Value>,
    #[serde(default)]
    max_count: Option<Value>,
    #[serde(default)]
    return_reservation_id: Option<Value>,
    #[serde(default)]
    security_groups: Option<Vec<SecurityGroupRef>>,
    #[serde(rename = "OS-DCF:diskConfig", default)]
    disk_config: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    trusted_image_certificates: Option<Vec<String>>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    hypervisor_hostname: Option<String>,
}

/// `{"name": ...}` in `security_groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRef {
    name: String,
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} is not supported by this cloud."))
}

/// `accessIPv4` / `accessIPv6` as Nova validates them (format `ipv4` /
/// `ipv6`); an empty string means unset.
pub fn access_ips(v4: Option<&str>, v6: Option<&str>) -> Result<AccessIps, ApiError> {
    fn one<T: std::str::FromStr>(
        key: &str,
        kind: &str,
        v: Option<&str>,
    ) -> Result<Option<T>, ApiError> {
        match v {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid input for field/attribute {key}. Value: {s}. '{s}' is not a '{kind}'"
                ))
            }),
        }
    }
    Ok(AccessIps {
        v4: one("accessIPv4", "ipv4", v4)?,
        v6: one("accessIPv6", "ipv6", v6)?,
    })
}

/// Nova's `min_count` / `max_count` (`positive_integer`: an integer or a
/// string of digits, at least 1).
fn positive_count(v: &Option<Value>, key: &str) -> Result<Option<u32>, ApiError> {
    let bad = |other: &Value| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not a positive integer"
        ))
    };
    let n = match v {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Some(other) => return Err(bad(other)),
    };
    match n {
        Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        _ => Err(bad(v.as_ref().unwrap_or(&Value::Null))),
    }
}

/// A Nova boolean (`parameter_types.boolean`): JSON true/false or the
/// strings Nova accepts.
fn nova_bool(v: &Option<Value>, key: &str) -> Result<bool, ApiError> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {key}. Value: {s}."
            ))),
        },
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: {other}."
        ))),
    }
}

/// A block device mapping that only says "boot from the image onto a
/// local disk", which is what python-openstackclient sends for
/// `--image`: the one mapping Synnefo honours (it is what it does anyway).
fn is_image_to_local(b: &Value) -> bool {
    let field = |k: &str| b.get(k).and_then(Value::as_str);
    let boot_index_zero = match b.get("boot_index") {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0",
        _ => false,
    };
    field("source_type") == Some("image")
        && matches!(field("destination_type"), None | Some("local"))
        && boot_index_zero
        && b.get("volume_size").is_none_or(Value::is_null)
}

impl CreateBody {
    /// The image to boot: `imageRef`, or the image of an image-to-local
    /// block device mapping.
    fn image(&self) -> Option<String> {
        if let Some(i) = self.image_ref.as_deref().filter(|i| !i.is_empty()) {
            return Some(i.to_string());
        }
        self.block_device_mapping_v2
            .as_ref()?
            .iter()
            .find(|b| is_image_to_local(b))
            .and_then(|b| b.get("uuid").and_then(Value::as_str))
            .map(str::to_string)
    }

    /// Refuses the Nova features Synnefo cannot honour instead of silently
    /// ignoring them.
    fn check(&self, v: Version) -> Result<(), ApiError> {
        if self.image().is_none() {
            return Err(unsupported("Booting from volume (no imageRef)"));
        }
        match &self.networks {
            None => {
                if v.at_least(37) {
                    return Err(ApiError::bad_request(
                        "Invalid input for field/attribute server. 'networks' is a required property",
                    ));
                }
            }
            Some(Value::String(s)) if s == "auto" || s == "none" => {}
            Some(Value::Array(a)) => {
                server_networks(a)?;
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute networks. Value: {other}."
                )));
            }
        }
        if self.personality.as_ref().is_some_and(|p| !p.is_empty()) {
            if v.at_least(57) {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute server. Additional properties are not allowed ('personality' was unexpected)",
                ));
            }
            return Err(unsupported("File injection (personality)"));
        }
        if let Some(k) = &self.key_name
            && (k.is_empty() || k.chars().count() > 255)
        {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute key_name. Value: {k}."
            )));
        }
        if self.user_data.is_some() {
            return Err(unsupported("User data"));
        }
        if self
            .availability_zone
            .as_deref()
            .is_some_and(|z| !z.is_empty() && z != "nova")
        {
            return Err(ApiError::bad_request(format!(
                "The requested availability zone {:?} is not available",
                self.availability_zone.as_deref().unwrap_or("")
            )));
        }
        if self
            .block_device_mapping
            .as_ref()
            .is_some_and(|b| !b.is_empty())
            || self
                .block_device_mapping_v2
                .as_ref()
                .is_some_and(|b| !b.iter().all(is_image_to_local))
        {
            return Err(unsupported("Block device mapping"));
        }
        if matches!(&self.config_drive, Some(Value::Bool(true)))
            || matches!(&self.config_drive, Some(Value::String(s)) if s.eq_ignore_ascii_case("true"))
        {
            return Err(unsupported("Config drive"));
        }
        if let Some(groups) = &self.security_groups
            && groups.iter().any(|g| g.name != "default")
        {
            return Err(unsupported("Security groups"));
        }
        if let Some(dc) = &self.disk_config
            && dc != "AUTO"
            && dc != "MANUAL"
        {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute OS-DCF:diskConfig. Value: {dc}."
            )));
        }
        let gated: [(&str, bool, u16); 5] = [
            ("description", self.description.is_some(), 19),
            ("tags", self.tags.is_some(), 52),
            (
                "trusted_image_certificates",
                self.trusted_image_certificates.is_some(),
                63,
            ),
            ("host", self.host.is_some(), 74),
            (
                "hypervisor_hostname",
                self.hypervisor_hostname.is_some(),
                74,
            ),
        ];
        for (key, given, min) in gated {
            if given && !v.at_least(min) {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute server. Additional properties are not allowed ('{key}' was unexpected)"
                )));
            }
            if given {
                let meaningful = match key {
                    "description" => self.description.as_deref().is_some_and(|d| !d.is_empty()),
                    "tags" => self.tags.as_ref().is_some_and(|t| !t.is_empty()),
                    "trusted_image_certificates" => self
                        .trusted_image_certificates
                        .as_ref()
                        .is_some_and(|t| !t.is_empty()),
                    _ => true,
                };
                if meaningful {
                    return Err(unsupported(key));
                }
            }
        }
        Ok(())
    }
}

fn flavor_ref_string(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute flavorRef. Value: {other}."
        ))),
    }
}

/// `POST /servers`.
pub async fn create(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Body(req): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let s = req.server;
    s.check(v)?;
    let min_count = positive_count(&s.min_count, "min_count")?.unwrap_or(1);
    let max_count = positive_count(&s.max_count, "max_count")?.unwrap_or(min_count);
    if min_count > max_count {
        return Err(ApiError::bad_request("min_count must be <= max_count"));
    }
    let reservation = nova_bool(&s.return_reservation_id, "return_reservation_id")?;
    let access = access_ips(s.access_ipv4.as_deref(), s.access_ipv6.as_deref())?;
    let image = s.image().unwrap_or_default();
    let networks = match &s.networks {
        Some(Value::String(n)) if n == "none" => ServerNetworks::None,
        Some(Value::Array(a)) if !a.is_empty() => ServerNetworks::List(server_networks(a)?),
        _ => ServerNetworks::Auto,
    };
    let batch = app
        .compute
        .create_servers(
            &auth.caller(),
            CreateServer {
                name: s.name,
                flavor_ref: flavor_ref_string(&s.flavor_ref)?,
                image_ref: image,
                metadata: s.metadata.unwrap_or_default(),
                admin_pass: s.admin_pass,
                networks,
                key_names: s.key_name.into_iter().collect(),
            },
            CreateCount {
                min: min_count,
                max: max_count,
            },
            access,
        )
        .await?;
    if reservation {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"reservation_id": batch.reservation_id})),
        )
            .into_response());
    }
    // Nova answers a multi-create with the first server.
    let Some(created) = batch.servers.into_iter().next() else {
        return Err(ApiError::internal());
    };
    let body = json!({"server": views::created(&app.base(m.0), &created.vm, created.admin_pass)});
    let location = format!("{}/v2.1/servers/{}", app.base(m.0), created.vm.id);
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(h) = location.parse() {
        resp.headers_mut().insert(axum::http::header::LOCATION, h);
    }
    Ok(resp)
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
    Ok(Json(render_one(&app, m, v, View::Update, &vm).await?))
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

fn console_url(app: &Shared, kind: &str, c: &ConsoleAccess) -> String {
    match (kind, &app.config.novnc_url) {
        ("novnc", Some(page)) => crate::consoles::novnc_console_url(page, &c.password),
        _ => format!("vnc://{}:{}", c.host, c.port),
    }
}

/// `POST /servers/{id}/action`.
pub async fn action(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path(id): Path<String>,
    Body(body): Body<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    if body.len() != 1 {
        return Err(ApiError::bad_request(
            "Exactly one action is expected in the request body.",
        ));
    }
    let Some((name, arg)) = body.into_iter().next() else {
        return Err(ApiError::bad_request(
            "Exactly one action is expected in the request body.",
        ));
    };
    let caller = auth.caller();
    match name.as_str() {
        "reboot" => {
            let kind = arg.get("type").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(
                    "Invalid input for field/attribute reboot. 'type' is a required property",
                )
            })?;
            let kind = match kind {
                "SOFT" | "Soft" | "soft" => RebootKind::Soft,
                "HARD" | "Hard" | "hard" => RebootKind::Hard,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid input for field/attribute type. Value: {other}. '{other}' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
                    )));
                }
            };
            app.compute.reboot(&caller, &id, kind).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-start" => {
            app.compute.start(&caller, &id).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-stop" => {
            app.compute.stop(&caller, &id).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-getVNCConsole" if !v.at_least(6) => {
            let kind = arg.get("type").and_then(Value::as_str).unwrap_or("");
            if !matches!(kind, "novnc" | "xvpvnc") {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute type. Value: {kind}."
                )));
            }
            let c = app.compute.console(&caller, &id).await?;
            Ok(
                Json(json!({"console": {"type": kind, "url": console_url(&app, kind, &c)}}))
                    .into_response(),
            )
        }
        "os-getVNCConsole" => Err(ApiError::not_found("The resource could not be found.")),
        "lock" => {
            let reason = lock_reason(&arg, v)?;
            app.compute.lock(&caller, &id, reason).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "unlock" => {
            if !(arg.is_null() || arg.as_object().is_some_and(|o| o.is_empty())) {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute unlock. Value: must be null.",
                ));
            }
            app.compute.unlock(&caller, &id).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "addFloatingIp" if !v.at_least(44) => {
            let address = ip_arg(&arg, "address", "addFloatingIp")?
                .ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute addFloatingIp. 'address' is a required property"))?;
            let fixed = ip_arg(&arg, "fixed_address", "addFloatingIp")?;
            app.compute
                .networking()
                .add_floating_ip(&caller, &id, address, fixed)
                .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "removeFloatingIp" if !v.at_least(44) => {
            let address = ip_arg(&arg, "address", "removeFloatingIp")?
                .ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute removeFloatingIp. 'address' is a required property"))?;
            app.compute
                .networking()
                .remove_floating_ip(&caller, &id, address)
                .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "addFloatingIp" | "removeFloatingIp" => Err(ApiError::bad_request(format!(
            "There is no such action: {name} (removed in microversion 2.44; use the network API's floating IPs)"
        ))),
        other if NOVA_ACTIONS_NOT_HERE.contains(&other) => {
            // Nova finds the server first: an unknown server is 404 whatever
            // the action.
            app.compute.server(&caller, &id).await?;
            Err(unsupported(&format!("The {other} action")))
        }
        other => Err(ApiError::bad_request(format!(
            "There is no such action: {other}"
        ))),
    }
}

/// An address argument of an action (`None` when absent).
fn ip_arg(arg: &Value, key: &str, action: &str) -> Result<Option<std::net::IpAddr>, ApiError> {
    match arg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute {action}. Value: {s}. '{s}' is not a valid IP address"
            ))
        }),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not of type 'string'"
        ))),
    }
}

/// The `lock` action's argument: `null` (or `{}`), or from 2.73
/// `{"locked_reason": "..."}` (a string of at most 255 characters).
fn lock_reason(arg: &Value, v: Version) -> Result<Option<String>, ApiError> {
    match arg {
        Value::Null => Ok(None),
        Value::Object(o) if o.is_empty() => Ok(None),
        Value::Object(o) if v.at_least(73) && o.len() == 1 => match o.get("locked_reason") {
            Some(Value::String(r)) => Ok(Some(r.clone())),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute locked_reason. Value: {other}. {other} is not of type 'string'"
            ))),
            None => Err(ApiError::bad_request(
                "Invalid input for field/attribute lock. Additional properties are not allowed",
            )),
        },
        other => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute lock. Value: {other}."
        ))),
    }
}

/// Server actions Nova has and this cloud does not (yet): the server is
/// looked up first, so an unknown server answers 404 as in Nova, then 400.
const NOVA_ACTIONS_NOT_HERE: &[&str] = &[
    "rebuild",
    "resize",
    "confirmResize",
    "revertResize",
    "createImage",
    "createBackup",
    "changePassword",
    "forceDelete",
    "restore",
    "pause",
    "unpause",
    "suspend",
    "resume",
    "shelve",
    "shelveOffload",
    "unshelve",
    "rescue",
    "unrescue",
    "migrate",
    "os-migrateLive",
    "evacuate",
    "addSecurityGroup",
    "removeSecurityGroup",
    "addFloatingIp",
    "removeFloatingIp",
    "addFixedIp",
    "removeFixedIp",
    "os-getConsoleOutput",
    "os-getSPICEConsole",
    "os-getRDPConsole",
    "os-getSerialConsole",
    "os-resetState",
    "os-resetNetwork",
    "injectNetworkInfo",
    "trigger_crash_dump",
];

/// `remote_console` request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConsoleRequest {
    remote_console: RemoteConsoleBody,
}

/// `{"protocol", "type"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConsoleBody {
    protocol: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `POST /servers/{id}/remote-consoles` (2.6+).
pub async fn remote_console(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<RemoteConsoleRequest>,
) -> Result<Response, ApiError> {
    if !v.at_least(6) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    let RemoteConsoleBody { protocol, kind } = req.remote_console;
    match (protocol.as_str(), kind.as_str()) {
        ("vnc", "novnc" | "xvpvnc") => {}
        ("vnc" | "spice" | "rdp" | "serial" | "mks", _) => {
            return Err(ApiError::bad_request(format!(
                "Unsupported console type {kind} for protocol {protocol}."
            )));
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute protocol. Value: {protocol}."
            )));
        }
    }
    let c = app.compute.console(&auth.caller(), &id).await?;
    Ok(Json(json!({"remote_console": {"protocol": protocol, "type": kind, "url": console_url(&app, &kind, &c)}})).into_response())
}

/// Nova's `networks` list: `{"uuid"}`, `{"port"}`, each with an optional
/// `fixed_ip` (and a `tag`, accepted and not kept).
pub(crate) fn server_networks(items: &[Value]) -> Result<Vec<ServerNetwork>, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute networks. {what}"
        ))
    };
    items
        .iter()
        .map(|item| {
            let Value::Object(o) = item else {
                return Err(bad("Each item must be an object."));
            };
            let text = |k: &str| -> Result<Option<String>, ApiError> {
                match o.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => {
                        Ok(Some(s.clone()))
                    }
                    Some(_) => Err(bad(&format!("'{k}' must be a non-empty string."))),
                }
            };
            let fixed_ip = match text("fixed_ip")? {
                None => None,
                Some(ip) => Some(
                    ip.parse()
                        .map_err(|_| bad(&format!("'{ip}' is not a valid IP address.")))?,
                ),
            };
            let n = ServerNetwork {
                network_id: text("uuid")?,
                port_id: text("port")?,
                fixed_ip,
            };
            if n.network_id.is_none() && n.port_id.is_none() {
                return Err(bad("Each item needs a 'uuid' or a 'port'."));
            }
            Ok(n)
        })
        .collect()
}

/// `GET /servers/{id}/ips`.
pub async fn ips(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, nics) = app.compute.server_with_nics(&auth.caller(), &id).await?;
    Ok(Json(json!({"addresses": views::addresses(&nics, false)})))
}

/// `GET /servers/{id}/ips/{network}`.
pub async fn ips_network(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, network)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (_, nics) = app.compute.server_with_nics(&auth.caller(), &id).await?;
    let mut all = views::addresses(&nics, false);
    match all.remove(&network) {
        Some(list) => Ok(Json(json!({ network: list }))),
        None => Err(ApiError::not_found("Network does not have any addresses")),
    }
}

/// `{"metadata": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

/// `{"meta": {"key": "value"}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaItemBody {
    meta: BTreeMap<String, String>,
}

/// `GET /servers/{id}/metadata`.
pub async fn metadata_list(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"metadata": app.compute.metadata(&auth.caller(), &id).await?}),
    ))
}

/// `POST /servers/{id}/metadata` (merge).
pub async fn metadata_merge(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
    Body(b): Body<MetadataBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"metadata": app.compute.set_metadata(&auth.caller(), &id, &b.metadata, false).await?}),
    ))
}

/// `PUT /servers/{id}/metadata` (replace).
pub async fn metadata_replace(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
    Body(b): Body<MetadataBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"metadata": app.compute.set_metadata(&auth.caller(), &id, &b.metadata, true).await?}),
    ))
}

/// `GET /servers/{id}/metadata/{key}`.
pub async fn metadata_get(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let value = app.compute.metadata_item(&auth.caller(), &id, &key).await?;
    Ok(Json(json!({"meta": { key: value }})))
}

/// `PUT /servers/{id}/metadata/{key}`.
pub async fn metadata_put(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
    Body(b): Body<MetaItemBody>,
) -> Result<Json<Value>, ApiError> {
    if b.meta.len() != 1 {
        return Err(ApiError::bad_request(
            "Request body contains too many items",
        ));
    }
    let Some((k, value)) = b.meta.into_iter().next() else {
        return Err(ApiError::bad_request(
            "Request body contains too many items",
        ));
    };
    if k != key {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    app.compute
        .set_metadata_item(&auth.caller(), &id, &key, &value)
        .await?;
    Ok(Json(json!({"meta": { key: value }})))
}

/// `DELETE /servers/{id}/metadata/{key}`.
pub async fn metadata_delete(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.compute
        .delete_metadata_item(&auth.caller(), &id, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
