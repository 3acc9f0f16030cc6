//! Synnefo's own compute dialect, for scripts built on kamaki 0.16: the
//! Cyclades compute API under `/compute/v2.0` (Astakos identity and
//! account are in [`crate::astakos`]).
//!
//! Same core calls as the Nova adapter; only the shapes differ: integer ids
//! in JSON, Synnefo status names (`STOPPED` rather than `SHUTOFF`),
//! `{"start":{}}` / `{"shutdown":{}}` / `{"reboot":{"type":...}}` actions,
//! `{"resize":{"flavorRef":...}}` (202; Synnefo's resize: no confirmation
//! step, refusals 400 in Synnefo's words, status `RESIZE` while the job
//! runs), and `{"console":{"type":"vnc"}}` answering 200 with the proxy's
//! host, port and one-time password. Key pairs (`os-keypairs`) as Synnefo
//! 0.20 serves them: SSH only, Nova 2.2's status codes (201, 204) without
//! `type` or `user_id`.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::ids::FlavorId;
use synnefo_core::model::{Diagnostic, Flavor, Image, ServerAttrs, Vm};
use synnefo_core::service::compute::{CreateServer, FlavorFilter, ImageFilter};
use synnefo_core::service::network::{ServerAddress, ServerNetworks};
use synnefo_core::state::{RebootKind, synnefo_status};

use crate::error::ApiError;
use crate::extract::{Auth, Body, Params};
use crate::nova::servers::server_filter;
use crate::nova::views::{addresses, iso, nova_states};
use crate::state::Shared;

/// Routes of both Synnefo services.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/compute/v2.0/servers", get(list).post(create))
        .route("/compute/v2.0/servers/detail", get(detail))
        .route(
            "/compute/v2.0/servers/{id}",
            get(show).put(rename).delete(delete),
        )
        .route("/compute/v2.0/servers/{id}/action", post(action))
        .route(
            "/compute/v2.0/servers/{id}/password",
            get(server_password).delete(delete_server_password),
        )
        .route("/compute/v2.0/servers/{id}/ips", get(ips))
        .route("/compute/v2.0/servers/{id}/diagnostics", get(diagnostics))
        .route(
            "/compute/v2.0/servers/{id}/metadata",
            get(metadata).post(metadata_merge),
        )
        .route(
            "/compute/v2.0/servers/{id}/metadata/{key}",
            get(metadata_get).put(metadata_put).delete(metadata_delete),
        )
        .route(
            "/compute/v2.0/os-keypairs",
            get(keypairs_list).post(keypairs_create),
        )
        .route(
            "/compute/v2.0/os-keypairs/{name}",
            get(keypairs_show).delete(keypairs_delete),
        )
        .route("/compute/v2.0/flavors", get(flavors))
        .route("/compute/v2.0/flavors/detail", get(flavors_detail))
        .route("/compute/v2.0/flavors/{id}", get(flavor))
        .route("/compute/v2.0/images", get(images))
        .route("/compute/v2.0/images/detail", get(images_detail))
        .route("/compute/v2.0/images/{id}", get(image))
}

// ---------------------------------------------------------------- views

fn links(app: &Shared, collection: &str, id: &str) -> Value {
    let base = format!("{}/compute/v2.0", app.config.public_url);
    json!([
        {"href": format!("{base}/{collection}/{id}"), "rel": "self"},
        {"href": format!("{base}/{collection}/{id}"), "rel": "bookmark"},
    ])
}

/// Synnefo's `attachments`: one per NIC (a port, or a floating IP's NIC),
/// with its addresses; kamaki detaches a NIC by deleting the port named
/// by `id`.
fn attachments(vm: &Vm, nics: &[ServerAddress]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut seen: Vec<(String, bool)> = Vec::new();
    for a in nics {
        let key = (a.port_id.clone(), a.floating);
        let v6 = a.ip.is_ipv6();
        if let Some(i) = seen.iter().position(|k| *k == key) {
            let slot = if v6 { "ipv6" } else { "ipv4" };
            out[i][slot] = json!(a.ip.to_string());
            continue;
        }
        seen.push(key);
        let id = match a.port_id.strip_prefix("nic-") {
            Some(index) => format!("nic-{}-{index}", vm.id),
            None => a.port_id.clone(),
        };
        out.push(json!({
            "id": id,
            "network_id": a.network_id,
            "mac_address": a.mac,
            "ipv4": if v6 { None } else { Some(a.ip.to_string()) },
            "ipv6": if v6 { Some(a.ip.to_string()) } else { None },
            "firewallProfile": "DISABLED",
            "OS-EXT-IPS:type": if a.floating { "floating" } else { "fixed" },
        }));
    }
    out
}

/// Synnefo's diagnostic entry (`api/servers.py` `diagnostics_to_dict`).
fn diagnostic_body(d: &Diagnostic) -> Value {
    json!({
        "source": d.source,
        "created": iso_micro(&d.created),
        "message": d.message,
        "details": d.details,
        "level": d.level.as_str(),
        "source_date": iso_micro(&d.source_time),
    })
}

/// Synnefo's `utils.isoformat`: microseconds and the UTC offset.
fn iso_micro(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// A Cyclades server body (`attrs.key_names`: the key pairs given at
/// create, Synnefo's `SNF:key_names`; `key_name` is the first; `latest`:
/// its newest diagnostic, as Synnefo shows it).
fn server(
    app: &Shared,
    vm: &Vm,
    nics: &[ServerAddress],
    attrs: &ServerAttrs,
    latest: Option<&Diagnostic>,
) -> Value {
    let key_names = attrs.key_names.as_slice();
    let status = synnefo_status(&vm.state);
    let (_, task, _) = nova_states(vm);
    let id = vm.id.to_string();
    json!({
        "id": vm.id.0,
        "name": vm.name,
        "status": status,
        "progress": match status {
            "ACTIVE" | "STOPPED" => 100,
            "BUILD" => attrs.build_progress.min(100),
            _ => 0,
        },
        "user_id": vm.user_id,
        "tenant_id": vm.project_id,
        "created": iso(&vm.created),
        "updated": iso(&vm.updated),
        "flavor": {"id": vm.flavor_id.0, "links": links(app, "flavors", &vm.flavor_id.to_string())},
        "image": {"id": vm.image_id, "links": links(app, "images", &vm.image_id)},
        "hostId": "",
        "metadata": vm.metadata,
        "addresses": addresses(nics, true),
        "attachments": attachments(vm, nics),
        "suspended": vm.state.suspended(),
        "deleted": vm.state.deleted(),
        "SNF:task_state": task.map(str::to_ascii_uppercase),
        "SNF:rescue": vm.state.rescue().is_some_and(|r| r.stage != synnefo_core::state::RescueStage::Rescuing),
        "SNF:fqdn": null,
        "SNF:port_forwarding": {},
        "diagnostics": latest.map(diagnostic_body).into_iter().collect::<Vec<_>>(),
        "key_name": key_names.first(),
        "SNF:key_names": key_names,
        "config_drive": "",
        "links": links(app, "servers", &id),
    })
}

fn flavor_body(app: &Shared, f: &Flavor) -> Value {
    json!({
        "id": f.id.0,
        "name": f.name,
        "ram": f.ram_mib,
        "vcpus": f.vcpus,
        "disk": f.disk_gib,
        "SNF:disk_template": f.disk_template,
        "SNF:allow_create": !f.deleted,
        "links": links(app, "flavors", &f.id.to_string()),
    })
}

fn image_body(app: &Shared, i: &Image) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "status": crate::nova::views::nova_image_status(&i.status),
        "progress": 100,
        "created": iso(&i.created),
        "updated": iso(&i.updated),
        "metadata": i.metadata,
        "user_id": i.owner,
        "tenant_id": i.owner,
        "is_public": i.is_public,
        "links": links(app, "images", &i.id),
    })
}

// ---------------------------------------------------------------- servers

async fn list(State(app): State<Shared>, auth: Auth, p: Params) -> Result<Json<Value>, ApiError> {
    let f = server_filter(&p)?;
    let vms = app.compute.list_servers(&auth.caller(), &f).await?;
    let items: Vec<Value> = vms
        .iter()
        .map(|vm| json!({"id": vm.id.0, "name": vm.name, "links": links(&app, "servers", &vm.id.to_string())}))
        .collect();
    Ok(Json(json!({ "servers": items })))
}

async fn detail(State(app): State<Shared>, auth: Auth, p: Params) -> Result<Json<Value>, ApiError> {
    let f = server_filter(&p)?;
    let vms = app.compute.list_servers(&auth.caller(), &f).await?;
    let nics: HashMap<_, _> = app.compute.nics_of(&vms).await?;
    let attrs = app.compute.server_attrs_of(&vms).await?;
    let latest = app.compute.latest_diagnostics_of(&vms).await?;
    let items: Vec<Value> = vms
        .iter()
        .map(|vm| {
            server(
                &app,
                vm,
                nics.get(&vm.id).map_or(&[][..], Vec::as_slice),
                attrs.get(&vm.id).unwrap_or(&ServerAttrs::default()),
                latest.get(&vm.id),
            )
        })
        .collect();
    Ok(Json(json!({ "servers": items })))
}

async fn show(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (vm, nics) = app.compute.server_with_nics(&auth.caller(), &id).await?;
    let attrs = app.compute.server_attrs(&vm).await?;
    let latest = app
        .compute
        .latest_diagnostics_of(std::slice::from_ref(&vm))
        .await?
        .remove(&vm.id);
    Ok(Json(
        json!({"server": server(&app, &vm, &nics, &attrs, latest.as_ref())}),
    ))
}

/// `GET /servers/{id}/diagnostics` (kamaki's `server info --diagnostics`):
/// snf-image's messages about the server's build, newest first, as
/// Synnefo 0.20 lists them (a bare JSON list).
async fn diagnostics(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let list = app.compute.server_diagnostics(&auth.caller(), &id).await?;
    Ok(Json(Value::Array(
        list.iter().map(diagnostic_body).collect(),
    )))
}

/// `GET /servers/{id}/ips` (kamaki's `server info --nics`): the server's
/// addresses by network, as in its `addresses`.
async fn ips(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, nics) = app.compute.server_with_nics(&auth.caller(), &id).await?;
    Ok(Json(json!({"addresses": addresses(&nics, true)})))
}

/// Synnefo's `GET /servers/{id}/password`: the admin password of the
/// server's create while this API process keeps it
/// (`[api] server_password_ttl_secs`), `{"password": "..."}`; 404 once it
/// expired or was deleted, as Synnefo's `VM_PASSWORD_CACHE` miss.
async fn server_password(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match app.compute.server_password(&auth.caller(), &id).await? {
        Some(password) => Ok(Json(json!({"password": password}))),
        None => Err(ApiError::not_found("Server password not found.")),
    }
}

/// Synnefo's `DELETE /servers/{id}/password`: forgets it (204).
async fn delete_server_password(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.compute
        .delete_server_password(&auth.caller(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cyclades create request (unknown keys are a 400, never ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    server: CreateBody,
}

/// `server`: what kamaki 0.16's `create_server` can send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(rename = "imageRef")]
    image_ref: String,
    #[serde(rename = "flavorRef")]
    flavor_ref: Value,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    personality: Vec<Value>,
    /// `None`: the cloud's default NICs; `[]`: no NIC at all.
    #[serde(default)]
    networks: Option<Vec<Value>>,
    /// The project to charge; must be the token's.
    #[serde(default)]
    project: Option<String>,
    /// One of the caller's key pairs to inject.
    #[serde(default)]
    key_name: Option<String>,
    /// Synnefo's several key pairs (not together with `key_name`).
    #[serde(rename = "SNF:key_names", default)]
    key_names: Option<Vec<String>>,
    #[serde(default)]
    user_data: Option<Value>,
}

impl CreateBody {
    /// Honours what Synnefo here can do (no NIC, the token's project) and
    /// refuses the rest instead of silently dropping it.
    fn check(&self, auth: &Auth) -> Result<(), ApiError> {
        if self.key_name.is_some() && self.key_names.as_ref().is_some_and(|k| !k.is_empty()) {
            return Err(ApiError::bad_request(
                "Only one of the SNF:key_names and key_name can be set",
            ));
        }
        if self.user_data.as_ref().is_some_and(|u| !u.is_string()) {
            return Err(ApiError::bad_request("Malformed user_data request"));
        }
        if let Some(p) = &self.project
            && p != &auth.0.project.id
        {
            return Err(ApiError::bad_request(format!(
                "Servers are created in the project of the token ({}); \
                 for project {p}, authenticate with tenantId {p}.",
                auth.0.project.id
            )));
        }
        Ok(())
    }
}

async fn create(
    State(app): State<Shared>,
    auth: Auth,
    Body(req): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let s = req.server;
    s.check(&auth)?;
    let flavor_ref = match &s.flavor_ref {
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::String(v) if !v.is_empty() => v.clone(),
        other => return Err(ApiError::bad_request(format!("Invalid flavorRef: {other}"))),
    };
    // Synnefo: no `networks` for the default NICs, [] for none.
    let networks = match &s.networks {
        None => ServerNetworks::Auto,
        Some(items) if items.is_empty() => ServerNetworks::None,
        Some(items) => ServerNetworks::List(crate::nova::servers::server_networks(items)?),
    };
    let created = app
        .compute
        .create_server(
            &auth.caller(),
            CreateServer {
                name: s.name,
                flavor_ref,
                image_ref: s.image_ref,
                metadata: s.metadata,
                admin_pass: None,
                networks,
                key_names: match s.key_name {
                    Some(k) => vec![k],
                    None => s.key_names.unwrap_or_default(),
                },
                personality: crate::nova::servers::personality_files(&s.personality, true)?,
                user_data: s.user_data.and_then(|u| u.as_str().map(str::to_string)),
            },
        )
        .await?;
    let attrs = app.compute.server_attrs(&created.vm).await?;
    let mut body = server(&app, &created.vm, &[], &attrs, None);
    body["adminPass"] = json!(created.admin_pass);
    Ok((StatusCode::ACCEPTED, Json(json!({ "server": body }))).into_response())
}

/// `{"server": {"name": ...}}`.
#[derive(Debug, Deserialize)]
pub struct RenameRequest {
    server: RenameBody,
}

/// `server`.
#[derive(Debug, Deserialize)]
pub struct RenameBody {
    name: String,
}

async fn rename(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<RenameRequest>,
) -> Result<StatusCode, ApiError> {
    app.compute
        .rename_server(&auth.caller(), &id, &req.server.name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.compute.delete(&auth.caller(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn action(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
    Body(body): Body<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    let mut entries = body.into_iter();
    let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
        return Err(ApiError::bad_request(
            "Exactly one action is expected in the request body.",
        ));
    };
    let caller = auth.caller();
    match name.as_str() {
        "start" => app.compute.start(&caller, &id).await.map(|_| StatusCode::ACCEPTED.into_response()),
        "shutdown" => app.compute.stop(&caller, &id).await.map(|_| StatusCode::ACCEPTED.into_response()),
        "reboot" => {
            let kind = match arg.get("type").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
                None | Some("SOFT") => RebootKind::Soft,
                Some("HARD") => RebootKind::Hard,
                Some(other) => return Err(ApiError::bad_request(format!("Invalid reboot type {other}"))),
            };
            app.compute.reboot(&caller, &id, kind).await.map(|_| StatusCode::ACCEPTED.into_response())
        }
        "resize" => return resize(&app, &caller, &id, &arg).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "rescue" | "unrescue" => return rescue(&app, &caller, &id, &name, &arg).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "console" => {
            let kind = arg.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "vnc" {
                return Err(ApiError::bad_request(format!("Type of console {kind:?} not supported; use \"vnc\".")));
            }
            let c = app.compute.console(&caller, &id).await?;
            Ok(Json(json!({"console": {"type": "vnc", "host": c.host, "port": c.port, "password": c.password}})).into_response())
        }
        // Synnefo 0.20 finds the server, then answers NotImplemented.
        "rebuild" => {
            app.compute.server(&caller, &id).await?;
            return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "notImplemented", "Rebuild not supported."));
        }
        other => return Err(ApiError::bad_request(format!("Unknown action {other}"))),
    }
    .map_err(ApiError::from)
}

/// Synnefo's `resize` action (`{"resize": {"flavorRef": ID}}`): the
/// flavor looked up as Synnefo's `get_flavor` does (400 for an id that is
/// not a number, 404 for none), then the compute service's resize without a
/// confirmation step; refusals 400 with Synnefo's messages.
async fn resize(
    app: &Shared,
    caller: &synnefo_core::service::compute::Caller,
    id: &str,
    arg: &Value,
) -> Result<(), ApiError> {
    use synnefo_core::ServiceError;
    use synnefo_core::error::ActionError;
    let flavor_id = match arg.get("flavorRef") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request("Missing 'flavorRef' attribute."));
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if flavor_id.trim().parse::<i64>().is_err() {
        return Err(ApiError::bad_request(format!(
            "Invalid flavor ID '{flavor_id}'"
        )));
    }
    let vm = app.compute.server(caller, id).await?;
    let flavor = match app.compute.flavor(caller, flavor_id.trim()).await {
        Ok(f) if !f.deleted => f,
        Ok(_) | Err(ServiceError::NotFound(_)) => {
            return Err(ApiError::not_found("Flavor not found."));
        }
        Err(e) => return Err(e.into()),
    };
    let resized = app
        .compute
        .resize(
            caller,
            id,
            &flavor.id.to_string(),
            synnefo_core::service::compute::ResizeConfirm::Automatic,
        )
        .await;
    let refused = |m: String| Err(ApiError::bad_request(m));
    match resized {
        Ok(_) => Ok(()),
        Err(ServiceError::Action(a)) => match a {
            ActionError::SameFlavor => refused(format!(
                "Server '{}' flavor is already '{}'.",
                vm.id, flavor.name
            )),
            ActionError::DiskSize { .. } => refused("Cannot change instance's disk size.".into()),
            ActionError::DiskTemplate { .. } => {
                refused("Cannot change instance's volume type.".into())
            }
            ActionError::InvalidState { operstate, .. } => refused(format!(
                "Cannot perform 'RESIZE' action while server is in '{operstate}' state."
            )),
            ActionError::Pending { pending, .. } => refused(format!(
                "Cannot perform 'RESIZE' action while there is a pending '{}'.",
                pending.as_str()
            )),
            ActionError::Resizing { .. } => {
                refused("Cannot perform 'RESIZE' action while there is a pending 'RESIZE'.".into())
            }
            ActionError::BuildInProgress => Err(ApiError::conflict(format!(
                "Server '{}' is being built.",
                vm.id
            ))),
            other => Err(ServiceError::Action(other).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Synnefo's `rescue` (`{"rescue": {"rescue_image_ref": ID}}`, the
/// reference optional) and `unrescue` actions: 202, refusals 400 with
/// Synnefo's messages. There is one rescue image (`[ganeti]
/// rescue_image`): a `rescue_image_ref` is refused.
async fn rescue(
    app: &Shared,
    caller: &synnefo_core::service::compute::Caller,
    id: &str,
    name: &str,
    arg: &Value,
) -> Result<(), ApiError> {
    use synnefo_core::ServiceError;
    use synnefo_core::error::ActionError;
    use synnefo_core::state::RescueStage;
    let upper = name.to_ascii_uppercase();
    if name == "rescue"
        && let Some(r) = arg.get("rescue_image_ref").filter(|r| !r.is_null())
    {
        return Err(ApiError::bad_request(format!(
            "Rescue image {r} is not available: this cloud boots its own rescue image (omit rescue_image_ref)."
        )));
    }
    let done = if name == "rescue" {
        app.compute.rescue(caller, id).await
    } else {
        app.compute.unrescue(caller, id).await
    };
    let refused = |m: String| Err(ApiError::bad_request(m));
    match done {
        Ok(_) => Ok(()),
        Err(ServiceError::Action(a)) => match a {
            ActionError::InvalidState { operstate, .. } => refused(format!(
                "Cannot perform '{upper}' action while server is in '{operstate}' state."
            )),
            ActionError::Rescue { stage: None, .. } => refused(format!(
                "Cannot perform '{upper}' action while server is not in rescue mode."
            )),
            ActionError::Rescue {
                stage: Some(RescueStage::Rescued),
                ..
            } => refused(format!(
                "Cannot perform '{upper}' action while server is in rescue mode."
            )),
            ActionError::Rescue { stage: Some(s), .. } => refused(format!(
                "Cannot perform '{upper}' action while there is a pending '{}'.",
                if s == RescueStage::Rescuing {
                    "RESCUE"
                } else {
                    "UNRESCUE"
                }
            )),
            ActionError::Pending { pending, .. } => refused(format!(
                "Cannot perform '{upper}' action while there is a pending '{}'.",
                pending.as_str()
            )),
            ActionError::Resizing { .. } => refused(format!(
                "Cannot perform '{upper}' action while there is a pending 'RESIZE'."
            )),
            ActionError::BuildInProgress => {
                Err(ApiError::conflict(format!("Server '{id}' is being built.")))
            }
            other => Err(ServiceError::Action(other).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// `{"metadata": {...}}`.
#[derive(Debug, Deserialize)]
pub struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

/// `{"meta": {...}}`.
#[derive(Debug, Deserialize)]
pub struct MetaBody {
    meta: BTreeMap<String, String>,
}

async fn metadata(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"metadata": app.compute.metadata(&auth.caller(), &id).await?}),
    ))
}

async fn metadata_merge(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
    Body(b): Body<MetadataBody>,
) -> Result<Response, ApiError> {
    let meta = app
        .compute
        .set_metadata(&auth.caller(), &id, &b.metadata, false)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "metadata": meta }))).into_response())
}

async fn metadata_get(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = app.compute.metadata_item(&auth.caller(), &id, &key).await?;
    Ok(Json(json!({"meta": { key: v }})))
}

async fn metadata_put(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
    Body(b): Body<MetaBody>,
) -> Result<Response, ApiError> {
    let Some(value) = b.meta.get(&key).cloned().filter(|_| b.meta.len() == 1) else {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    };
    app.compute
        .set_metadata_item(&auth.caller(), &id, &key, &value)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"meta": { key: value }}))).into_response())
}

async fn metadata_delete(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.compute
        .delete_metadata_item(&auth.caller(), &id, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- catalog

async fn flavors(State(app): State<Shared>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let list = app
        .compute
        .list_flavors(&auth.caller(), &FlavorFilter::default())
        .await?;
    let items: Vec<Value> = list
        .iter()
        .map(|f| json!({"id": f.id.0, "name": f.name, "links": links(&app, "flavors", &f.id.to_string())}))
        .collect();
    Ok(Json(json!({ "flavors": items })))
}

async fn flavors_detail(State(app): State<Shared>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let list = app
        .compute
        .list_flavors(&auth.caller(), &FlavorFilter::default())
        .await?;
    Ok(Json(
        json!({"flavors": list.iter().map(|f| flavor_body(&app, f)).collect::<Vec<_>>()}),
    ))
}

async fn flavor(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let _: FlavorId = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("Flavor {id} could not be found.")))?;
    let f = app.compute.flavor(&auth.caller(), &id).await?;
    Ok(Json(json!({"flavor": flavor_body(&app, &f)})))
}

async fn images(State(app): State<Shared>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let list = app
        .compute
        .list_images(&auth.caller(), &ImageFilter::default())
        .await?;
    let items: Vec<Value> = list
        .iter()
        .map(|i| json!({"id": i.id, "name": i.name, "links": links(&app, "images", &i.id)}))
        .collect();
    Ok(Json(json!({ "images": items })))
}

async fn images_detail(State(app): State<Shared>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let list = app
        .compute
        .list_images(&auth.caller(), &ImageFilter::default())
        .await?;
    Ok(Json(
        json!({"images": list.iter().map(|i| image_body(&app, i)).collect::<Vec<_>>()}),
    ))
}

async fn image(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let i = app.compute.image(&auth.caller(), &id).await?;
    Ok(Json(json!({"image": image_body(&app, &i)})))
}

// ---------------------------------------------------------------- key pairs

/// Cyclades' key pair create body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairRequest {
    keypair: KeypairBody,
}

/// `keypair`: a name, and a public key to import (generated if absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairBody {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
}

fn keypair_brief(k: &synnefo_core::model::Keypair) -> Value {
    json!({"name": k.name, "fingerprint": k.fingerprint, "public_key": k.public_key})
}

async fn keypairs_list(State(app): State<Shared>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let keys = app
        .compute
        .keypairs(&auth.caller(), None, None, None)
        .await?;
    let items: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "keypair": keypair_brief(k) }))
        .collect();
    Ok(Json(json!({ "keypairs": items })))
}

async fn keypairs_create(
    State(app): State<Shared>,
    auth: Auth,
    Body(req): Body<KeypairRequest>,
) -> Result<Response, ApiError> {
    use crate::nova::keypairs::{generate_ssh, import_ssh};
    let b = req.keypair;
    synnefo_core::service::compute::validate_keypair_name(&b.name)?;
    let caller = auth.caller();
    let (public_key, fingerprint, private_key) = match &b.public_key {
        Some(pk) => {
            let i = import_ssh(pk)?;
            (i.public_key, i.fingerprint, None)
        }
        None => {
            let g = tokio::task::spawn_blocking(generate_ssh)
                .await
                .map_err(|_| ApiError::internal())??;
            (g.public_key, g.fingerprint, Some(g.private_key))
        }
    };
    let k = app
        .compute
        .create_keypair(
            &caller,
            synnefo_core::model::NewKeypair {
                user_id: caller.user_id.clone(),
                name: b.name,
                kind: synnefo_core::model::KeypairType::Ssh,
                fingerprint,
                public_key,
            },
        )
        .await?;
    let mut body = keypair_brief(&k);
    if let Some(pk) = private_key {
        body["private_key"] = json!(pk);
    }
    Ok((StatusCode::CREATED, Json(json!({ "keypair": body }))).into_response())
}

async fn keypairs_show(
    State(app): State<Shared>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let k = app.compute.keypair(&auth.caller(), &name, None).await?;
    let mut body = keypair_brief(&k);
    body["id"] = json!(k.id);
    body["deleted"] = json!(false);
    body["created_at"] = json!(k.created.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string());
    body["updated_at"] = Value::Null;
    body["deleted_at"] = Value::Null;
    Ok(Json(json!({ "keypair": body })))
}

async fn keypairs_delete(
    State(app): State<Shared>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.compute
        .delete_keypair(&auth.caller(), &name, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
