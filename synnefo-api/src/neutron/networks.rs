//! `/v2.0/networks`.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::network::{Network, NetworkFlavor, NetworkUpdate};
use synnefo_core::ports::NetQuery;
use synnefo_core::service::network::{CreateNetwork, Networking};

use super::query::ListRequest;
use super::{
    Fault, Id, NetAuth, NetBody, NetParams, Variant, bad_request, check_project, collection_url,
    created, items_of, no_content, service, views,
};
use crate::state::Shared;

/// Filterable attributes.
const FILTERS: &[&str] = &[
    "id",
    "name",
    "status",
    "admin_state_up",
    "shared",
    "router:external",
    "project_id",
    "tenant_id",
    "mtu",
    "type",
    "description",
];

fn push(k: &str, v: &str, q: &mut NetQuery) -> bool {
    match k {
        "name" => q.name = Some(v.to_string()),
        "shared" => q.shared = Some(v == "true"),
        "router:external" => q.external = Some(v == "true"),
        _ => return false,
    }
    true
}

/// `network` of a create or update body (unknown keys ignored).
#[derive(Debug, Deserialize)]
pub struct NetworkBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    admin_state_up: Option<bool>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default, rename = "router:external")]
    external: Option<bool>,
    /// Synnefo's network type (`MAC_FILTERED`, ...).
    #[serde(default, rename = "type")]
    flavor: Option<String>,
    /// Synnefo's project to charge (kamaki's `--project-id`): the token's.
    #[serde(default)]
    project: Option<String>,
}

async fn render(net: &Networking, nets: &[Network]) -> Result<Vec<Value>, Fault> {
    let subnets = net.subnet_ids(nets).await?;
    Ok(nets
        .iter()
        .map(|n| views::network(n, subnets.get(&n.id).map(Vec::as_slice).unwrap_or_default()))
        .collect())
}

/// `GET /v2.0/networks` (and kamaki's `/networks/detail`).
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
        .collect(move |q| async move { render(net, &net.networks(caller, q).await?).await })
        .await?;
    Ok(Json(req.finish(
        "networks",
        items,
        &collection_url(&app, v, "networks"),
    )))
}

/// `GET /v2.0/networks/{id}`.
pub async fn show(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
    NetParams(p): NetParams,
) -> Result<Json<Value>, Fault> {
    let req = ListRequest::parse(&p, &[], |_, _, _| false)?;
    let net = service(&app);
    let n = net.network(&auth.caller(), &id).await?;
    let v = render(&net, std::slice::from_ref(&n)).await?;
    Ok(Json(
        json!({"network": req.select(v.into_iter().next().unwrap_or_default())}),
    ))
}

fn create_request(b: NetworkBody) -> Result<CreateNetwork, Fault> {
    let flavor = match b.flavor.as_deref() {
        None => None,
        Some(t) => Some(
            NetworkFlavor::parse(t)
                .ok_or_else(|| bad_request(format!("Invalid network type {t:?}.")))?,
        ),
    };
    Ok(CreateNetwork {
        name: b.name.unwrap_or_default(),
        admin_state_up: b.admin_state_up,
        shared: b.shared,
        external: b.external,
        flavor,
        custom: None,
    })
}

/// `POST /v2.0/networks` (201): `{"network": {...}}`, or `{"networks":
/// [...]}` in bulk (all or nothing: the ones made are deleted again when
/// one fails).
pub async fn create(
    State(app): State<Shared>,
    auth: NetAuth,
    NetBody(body): NetBody,
) -> Result<Response, Fault> {
    let (items, bulk) = items_of::<NetworkBody>(body, "network", Some("networks"))?;
    let caller = auth.caller();
    for b in &items {
        check_project(b.project.as_deref(), &caller, "Networks")?;
    }
    let reqs = items
        .into_iter()
        .map(create_request)
        .collect::<Result<Vec<_>, _>>()?;
    let net = service(&app);
    let mut made: Vec<Network> = Vec::new();
    for r in reqs {
        match net.create_network(&caller, r).await {
            Ok(n) => made.push(n),
            Err(e) => {
                for n in &made {
                    if let Err(e) = net.delete_network(&caller, &n.id).await {
                        tracing::warn!(network = %n.id, error = %e, "bulk create: rollback failed");
                    }
                }
                return Err(e.into());
            }
        }
    }
    let mut views = render(&net, &made).await?;
    Ok(created(if bulk {
        json!({ "networks": views })
    } else {
        json!({ "network": views.pop().unwrap_or_default() })
    }))
}

/// `PUT /v2.0/networks/{id}`: name, `admin_state_up`, and (operators)
/// `shared`, `router:external`.
pub async fn update(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
    NetBody(body): NetBody,
) -> Result<Json<Value>, Fault> {
    let (mut items, _) = items_of::<NetworkBody>(body, "network", None)?;
    let b = items
        .pop()
        .ok_or_else(|| bad_request("Resource body required."))?;
    if b.flavor.is_some() {
        return Err(bad_request(
            "Invalid input: a network's type cannot be changed.",
        ));
    }
    let net = service(&app);
    let n = net
        .update_network(
            &auth.caller(),
            &id,
            NetworkUpdate {
                name: b.name,
                admin_state_up: b.admin_state_up,
                shared: b.shared,
                external: b.external,
            },
        )
        .await?;
    let mut v = render(&net, std::slice::from_ref(&n)).await?;
    Ok(Json(json!({"network": v.pop().unwrap_or_default()})))
}

/// `DELETE /v2.0/networks/{id}` (204; 409 `NetworkInUse` while ports or
/// floating IPs use it).
pub async fn delete(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
) -> Result<Response, Fault> {
    service(&app).delete_network(&auth.caller(), &id).await?;
    Ok(no_content())
}
