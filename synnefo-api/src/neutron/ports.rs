//! `/v2.0/ports`.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::network::Port;
use synnefo_core::ports::NetQuery;
use synnefo_core::service::network::{CreatePort, FixedIpRequest};

use super::query::ListRequest;
use super::{
    Fault, Id, NetAuth, NetBody, NetParams, Variant, bad_request, collection_url, created, ip,
    items_of, no_content, service, views,
};
use crate::state::Shared;

/// Filterable attributes.
const FILTERS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "device_id",
    "device_owner",
    "mac_address",
    "status",
    "admin_state_up",
    "project_id",
    "tenant_id",
    "fixed_ips",
    "description",
];

fn push(k: &str, v: &str, q: &mut NetQuery) -> bool {
    match k {
        "name" => q.name = Some(v.to_string()),
        "network_id" => q.network_id = Some(v.to_string()),
        "device_id" => q.device_id = Some(v.to_string()),
        // the store compares MACs lower-cased, the item check ignores case
        "mac_address" => q.mac = Some(v.to_string()),
        "fixed_ips" => match v.split_once('=') {
            Some(("ip_address", a)) => match a.parse() {
                Ok(a) => q.address = Some(a),
                Err(_) => return false,
            },
            _ => return false,
        },
        _ => return false,
    }
    true
}

/// One of `fixed_ips` of a create body.
#[derive(Debug, Deserialize)]
pub struct FixedIpBody {
    #[serde(default)]
    subnet_id: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
}

/// `port` of a create or update body (unknown keys ignored).
#[derive(Debug, Deserialize)]
pub struct PortBody {
    #[serde(default)]
    network_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fixed_ips: Option<Vec<FixedIpBody>>,
    #[serde(default)]
    admin_state_up: Option<bool>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    mac_address: Option<String>,
}

/// `GET /v2.0/ports` (and kamaki's `/ports/detail`).
pub async fn list(
    State(app): State<Shared>,
    v: Variant,
    auth: NetAuth,
    NetParams(p): NetParams,
) -> Result<Json<Value>, Fault> {
    let net = service(&app);
    let req = ListRequest::parse(&p, FILTERS, push)?.bounded(net.config().pagination_max_limit);
    let (net, caller) = (&net, &auth.caller());
    let items = req
        .collect(move |q| async move {
            Ok(net
                .ports(caller, q)
                .await?
                .iter()
                .map(views::port)
                .collect())
        })
        .await?;
    Ok(Json(req.finish(
        "ports",
        items,
        &collection_url(&app, v, "ports"),
    )))
}

/// `GET /v2.0/ports/{id}`.
pub async fn show(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
    NetParams(p): NetParams,
) -> Result<Json<Value>, Fault> {
    let req = ListRequest::parse(&p, &[], |_, _, _| false)?;
    let port = service(&app).port(&auth.caller(), &id).await?;
    Ok(Json(json!({"port": req.select(views::port(&port))})))
}

fn create_request(b: PortBody) -> Result<CreatePort, Fault> {
    if b.mac_address.is_some() {
        return Err(bad_request(
            "Invalid input: mac_address cannot be chosen; it is allocated.",
        ));
    }
    let network_id = b
        .network_id
        .ok_or_else(|| bad_request("Invalid input: network_id is required."))?;
    let fixed_ips = b
        .fixed_ips
        .map(|ips| {
            ips.into_iter()
                .map(|f| {
                    Ok(FixedIpRequest {
                        subnet_id: f.subnet_id,
                        ip: f
                            .ip_address
                            .as_deref()
                            .map(|a| ip("fixed_ips", a))
                            .transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, Fault>>()
        })
        .transpose()?;
    Ok(CreatePort {
        network_id,
        name: b.name.unwrap_or_default(),
        fixed_ips,
        admin_state_up: b.admin_state_up,
        device_id: b.device_id.filter(|d| !d.is_empty()),
    })
}

/// `POST /v2.0/ports` (201), single or bulk (`{"ports": [...]}`); with a
/// `device_id` the port is attached to that server at once.
pub async fn create(
    State(app): State<Shared>,
    auth: NetAuth,
    NetBody(body): NetBody,
) -> Result<Response, Fault> {
    let (items, bulk) = items_of::<PortBody>(body, "port", Some("ports"))?;
    let reqs = items
        .into_iter()
        .map(create_request)
        .collect::<Result<Vec<_>, _>>()?;
    let net = service(&app);
    let caller = auth.caller();
    let mut made: Vec<Port> = Vec::new();
    for r in reqs {
        match net.create_port(&caller, r).await {
            Ok(p) => made.push(p),
            Err(e) => {
                for p in &made {
                    if let Err(e) = net.delete_port(&caller, &p.id).await {
                        tracing::warn!(port = %p.id, error = %e, "bulk create: rollback failed");
                    }
                }
                return Err(e.into());
            }
        }
    }
    let mut views: Vec<Value> = made.iter().map(views::port).collect();
    Ok(created(if bulk {
        json!({ "ports": views })
    } else {
        json!({ "port": views.pop().unwrap_or_default() })
    }))
}

/// `PUT /v2.0/ports/{id}`: name and `admin_state_up`.
pub async fn update(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
    NetBody(body): NetBody,
) -> Result<Json<Value>, Fault> {
    let (mut items, _) = items_of::<PortBody>(body, "port", None)?;
    let b = items
        .pop()
        .ok_or_else(|| bad_request("Resource body required."))?;
    if b.mac_address.is_some() || b.fixed_ips.is_some() {
        return Err(bad_request(
            "Invalid input: a port's mac_address and fixed_ips cannot be changed.",
        ));
    }
    let p = service(&app)
        .update_port(&auth.caller(), &id, b.name, b.admin_state_up)
        .await?;
    Ok(Json(json!({"port": views::port(&p)})))
}

/// `DELETE /v2.0/ports/{id}` (204): a server's port is detached from it
/// first.
pub async fn delete(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
) -> Result<Response, Fault> {
    service(&app).delete_port(&auth.caller(), &id).await?;
    Ok(no_content())
}
