//! `POST /servers/{id}/action` and `/remote-consoles`: one handler per
//! body key, each a call into the compute (or network) service.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::service::compute::ConsoleAccess;
use synnefo_core::service::network::ServerNetwork;
use synnefo_core::state::RebootKind;

use super::super::views;
use super::*;
use crate::error::ApiError;
use crate::extract::{Auth, Body};
use crate::microversion::Version;
use crate::state::Shared;

pub(super) fn console_url(app: &Shared, kind: &str, c: &ConsoleAccess) -> String {
    match (kind, &app.config.novnc_url) {
        ("novnc", Some(page)) => crate::consoles::novnc_console_url(page, &c.password),
        _ => format!("vnc://{}:{}", c.host, c.port),
    }
}

/// `POST /servers/{id}/action`.
pub async fn action(
    State(app): State<Shared>,
    Extension(m): Extension<super::Mount>,
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
        "resize" => {
            let flavor = super::resize::resize_flavor_ref(&arg)?;
            super::resize::run(&app, &caller, &id, "resize", Some(flavor)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "rebuild" => {
            let req = super::rebuild::rebuild_request(&arg, v)?;
            let done = super::rebuild::run(&app, &caller, &id, req).await?;
            let mut body = render_one(&app, &auth, m, v, views::View::Show, &done.vm).await?;
            body["server"]["adminPass"] = json!(done.admin_pass);
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
        "changePassword" => {
            super::rebuild::change_password(&app, &caller, &id, &arg).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        // Nova's schemas leave the value unrestricted ("Restrict the
        // value to 'null' in a future API version"); tempest sends `{}`.
        "confirmResize" => {
            super::resize::run(&app, &caller, &id, "confirmResize", None).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "revertResize" => {
            super::resize::run(&app, &caller, &id, "revertResize", None).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "rescue" => {
            super::rescue::rescue_arg(&arg)?;
            super::rescue::run(&app, &caller, &id, "rescue").await?;
            // No password is set on the rescue system (a rescue image
            // with its own login): Nova's answer without `adminPass`.
            Ok(Json(json!({})).into_response())
        }
        "unrescue" => {
            super::resize::null_arg("unrescue", &arg)?;
            super::rescue::run(&app, &caller, &id, "unrescue").await?;
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
pub(super) fn ip_arg(
    arg: &Value,
    key: &str,
    action: &str,
) -> Result<Option<std::net::IpAddr>, ApiError> {
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
pub(super) fn lock_reason(arg: &Value, v: Version) -> Result<Option<String>, ApiError> {
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
pub(super) const NOVA_ACTIONS_NOT_HERE: &[&str] = &[
    "createImage",
    "createBackup",
    "forceDelete",
    "restore",
    "pause",
    "unpause",
    "suspend",
    "resume",
    "shelve",
    "shelveOffload",
    "unshelve",
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
