//! Nova's `os-interface`: a server's ports, attached and detached while
//! it runs (NIC hot-plug through Ganeti's `OP_INSTANCE_SET_PARAMS`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use synnefo_core::network::Port;

use crate::error::ApiError;
use crate::extract::{Auth, Body};
use crate::state::Shared;

fn attachment(p: &Port) -> Value {
    json!({
        "port_id": p.id,
        "net_id": p.network_id,
        "mac_addr": p.mac,
        "port_state": p.status.as_str(),
        "fixed_ips": p.fixed_ips.iter().map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip.to_string()})).collect::<Vec<_>>(),
    })
}

/// `GET /servers/{id}/os-interface`.
pub async fn list(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ports = app
        .compute
        .networking()
        .server_ports(&auth.caller(), &id)
        .await?;
    Ok(Json(
        json!({"interfaceAttachments": ports.iter().map(attachment).collect::<Vec<_>>()}),
    ))
}

/// `GET /servers/{id}/os-interface/{port_id}`.
pub async fn show(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, port)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ports = app
        .compute
        .networking()
        .server_ports(&auth.caller(), &id)
        .await?;
    let p = ports
        .iter()
        .find(|p| p.id == port)
        .ok_or_else(|| ApiError::not_found(format!("Port {port} is not attached")))?;
    Ok(Json(json!({"interfaceAttachment": attachment(p)})))
}

/// `POST /servers/{id}/os-interface`: `{"interfaceAttachment": {"net_id"
/// | "port_id", "fixed_ips": [{"ip_address"}]}}`.
pub async fn create(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>, ApiError> {
    let a = body
        .get("interfaceAttachment")
        .cloned()
        .unwrap_or(Value::Null);
    if !(a.is_object() || a.is_null()) {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute interfaceAttachment.",
        ));
    }
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match a.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {k}. Value: {other}."
            ))),
        }
    };
    let net = text("net_id")?;
    let port = text("port_id")?;
    let fixed = match a.get("fixed_ips") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.len() == 1 => {
            let ip = items[0]
                .get("ip_address")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Invalid input for field/attribute fixed_ips: ip_address is required.",
                    )
                })?;
            Some(ip.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid input for field/attribute ip_address. Value: {ip}."
                ))
            })?)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute fixed_ips: give one address.",
            ));
        }
    };
    if net.is_none() && port.is_none() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute interfaceAttachment: give net_id or port_id.",
        ));
    }
    let p = app
        .compute
        .networking()
        .attach_interface(&auth.caller(), &id, net.as_deref(), port.as_deref(), fixed)
        .await?;
    Ok(Json(json!({"interfaceAttachment": attachment(&p)})))
}

/// `DELETE /servers/{id}/os-interface/{port_id}`.
pub async fn delete(
    State(app): State<Shared>,
    auth: Auth,
    Path((id, port)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app.compute
        .networking()
        .detach_interface(&auth.caller(), &id, &port)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
