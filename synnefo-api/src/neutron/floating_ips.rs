//! `/v2.0/floatingips`.
//!
//! A floating IP comes from an external network's pool and belongs to the
//! caller's project. `PUT {"port_id": P}` associates it with a server's
//! port (the server gets a NIC on the external network carrying the
//! address, as in Cyclades); a port that cannot carry it is a 404, so the
//! `openstack` CLI's `server add floating ip` tries the server's next
//! port. `PUT {"port_id": null}` disassociates.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::network::FloatingIp;
use synnefo_core::ports::NetQuery;
use synnefo_core::service::compute::Caller;

use super::query::ListRequest;
use super::{
    Fault, Id, NetAuth, NetBody, NetParams, Variant, bad_request, check_project, collection_url,
    ip, items_of, no_content, nullable, service, views,
};
use crate::state::Shared;

/// Filterable attributes.
const FILTERS: &[&str] = &[
    "id",
    "floating_ip_address",
    "floating_network_id",
    "port_id",
    "fixed_ip_address",
    "router_id",
    "status",
    "project_id",
    "tenant_id",
    "description",
];

fn push(k: &str, v: &str, q: &mut NetQuery) -> bool {
    match k {
        "floating_network_id" => q.network_id = Some(v.to_string()),
        "port_id" if !v.is_empty() => q.port_id = Some(v.to_string()),
        "floating_ip_address" => match v.parse() {
            Ok(a) => q.address = Some(a),
            Err(_) => return false,
        },
        _ => return false,
    }
    true
}

/// `floatingip` of a create or update body (unknown keys ignored).
#[derive(Debug, Deserialize)]
pub struct FloatingIpBody {
    #[serde(default)]
    floating_network_id: Option<String>,
    #[serde(default)]
    floating_ip_address: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    port_id: Option<Option<String>>,
    #[serde(default)]
    fixed_ip_address: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    subnet_id: Option<String>,
    /// Synnefo's project to charge (kamaki's `--project-id`): the token's.
    #[serde(default)]
    project: Option<String>,
}

/// A floating IP's body; at the Cyclades mount with Synnefo's
/// `instance_id` too (the server of its port, else null), which kamaki
/// reads.
async fn view(app: &Shared, v: Variant, caller: &Caller, f: &FloatingIp) -> Value {
    let mut body = views::floating_ip(f);
    if v == Variant::Cyclades {
        let server = match &f.port_id {
            Some(p) => service(app)
                .port(caller, p)
                .await
                .ok()
                .map(|p| p.device_id)
                .filter(|d| !d.is_empty()),
            None => None,
        };
        body["instance_id"] = json!(server);
    }
    body
}

/// `GET /v2.0/floatingips` (and kamaki's `/floatingips/detail`).
pub async fn list(
    State(app): State<Shared>,
    v: Variant,
    auth: NetAuth,
    NetParams(p): NetParams,
) -> Result<Json<Value>, Fault> {
    let net = service(&app);
    let req = ListRequest::parse(&p, FILTERS, push)?.bounded(net.config().pagination_max_limit);
    let (app, net, caller) = (&app, &net, &auth.caller());
    let items = req
        .collect(move |q| async move {
            let fips = net.floating_ips(caller, q).await?;
            let mut items = Vec::with_capacity(fips.len());
            for f in &fips {
                items.push(view(app, v, caller, f).await);
            }
            Ok(items)
        })
        .await?;
    Ok(Json(req.finish(
        "floatingips",
        items,
        &collection_url(app, v, "floatingips"),
    )))
}

/// `GET /v2.0/floatingips/{id}` (an address instead of an id is a 404:
/// the CLI then lists and matches the address itself).
pub async fn show(
    State(app): State<Shared>,
    v: Variant,
    auth: NetAuth,
    Id(id): Id,
    NetParams(p): NetParams,
) -> Result<Json<Value>, Fault> {
    let req = ListRequest::parse(&p, &[], |_, _, _| false)?;
    let caller = auth.caller();
    let f = service(&app).floating_ip(&caller, &id).await?;
    Ok(Json(
        json!({"floatingip": req.select(view(&app, v, &caller, &f).await)}),
    ))
}

/// `POST /v2.0/floatingips` (201; Synnefo's 200 at the Cyclades mount):
/// from `floating_network_id`, or the first external network when absent
/// (kamaki); associated at once when a `port_id` is given.
pub async fn create(
    State(app): State<Shared>,
    v: Variant,
    auth: NetAuth,
    NetBody(body): NetBody,
) -> Result<Response, Fault> {
    let (mut items, _) = items_of::<FloatingIpBody>(body, "floatingip", None)?;
    let b = items
        .pop()
        .ok_or_else(|| bad_request("Resource body required."))?;
    if b.fixed_ip_address.is_some() {
        return Err(bad_request(
            "Invalid input: give fixed_ip_address when associating (PUT), not at create.",
        ));
    }
    if b.subnet_id.is_some() {
        return Err(bad_request(
            "Invalid input: subnet_id cannot be chosen; the external network's subnet is used.",
        ));
    }
    let address = b
        .floating_ip_address
        .as_deref()
        .map(|a| ip("floating_ip_address", a))
        .transpose()?;
    let caller = auth.caller();
    check_project(b.project.as_deref(), &caller, "Floating IPs")?;
    let port = b.port_id.flatten();
    let f = service(&app)
        .create_floating_ip(
            &caller,
            b.floating_network_id.as_deref(),
            address,
            port.as_deref(),
            b.description.as_deref().unwrap_or_default(),
        )
        .await?;
    Ok((
        v.floating_ip_created(),
        Json(json!({"floatingip": view(&app, v, &caller, &f).await})),
    )
        .into_response())
}

/// `PUT /v2.0/floatingips/{id}`: `{"port_id": P}` associates (with
/// `fixed_ip_address`, that address of the port), `{"port_id": null}`
/// disassociates; without `port_id` nothing changes.
pub async fn update(
    State(app): State<Shared>,
    v: Variant,
    auth: NetAuth,
    Id(id): Id,
    NetBody(body): NetBody,
) -> Result<Json<Value>, Fault> {
    let (mut items, _) = items_of::<FloatingIpBody>(body, "floatingip", None)?;
    let b = items
        .pop()
        .ok_or_else(|| bad_request("Resource body required."))?;
    let fixed = b
        .fixed_ip_address
        .as_deref()
        .map(|a| ip("fixed_ip_address", a))
        .transpose()?;
    let net = service(&app);
    let caller = auth.caller();
    let f = match b.port_id {
        None => net.floating_ip(&caller, &id).await?,
        Some(port) => net.associate(&caller, &id, port.as_deref(), fixed).await?,
    };
    Ok(Json(
        json!({"floatingip": view(&app, v, &caller, &f).await}),
    ))
}

/// `DELETE /v2.0/floatingips/{id}` (204; disassociated first).
pub async fn delete(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
) -> Result<Response, Fault> {
    service(&app)
        .delete_floating_ip(&auth.caller(), &id)
        .await?;
    Ok(no_content())
}
