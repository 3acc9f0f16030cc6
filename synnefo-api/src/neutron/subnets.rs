//! `/v2.0/subnets`.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::network::{Subnet, SubnetRequest, SubnetUpdate};
use synnefo_core::ports::NetQuery;

use super::query::ListRequest;
use super::{
    Fault, Id, NetAuth, NetBody, NetParams, Variant, bad_request, collection_url, created, ip,
    items_of, no_content, nullable, service, views,
};
use crate::state::Shared;

/// Filterable attributes.
const FILTERS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "cidr",
    "ip_version",
    "gateway_ip",
    "enable_dhcp",
    "project_id",
    "tenant_id",
    "description",
];

fn push(k: &str, v: &str, q: &mut NetQuery) -> bool {
    match k {
        "name" => q.name = Some(v.to_string()),
        "network_id" => q.network_id = Some(v.to_string()),
        _ => return false,
    }
    true
}

/// An allocation pool of a request.
#[derive(Debug, Deserialize)]
pub struct PoolBody {
    start: String,
    end: String,
}

/// `subnet` of a create or update body (unknown keys ignored).
#[derive(Debug, Deserialize)]
pub struct SubnetBody {
    #[serde(default)]
    network_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    ip_version: Option<u8>,
    #[serde(default, deserialize_with = "nullable")]
    gateway_ip: Option<Option<String>>,
    #[serde(default)]
    allocation_pools: Option<Vec<PoolBody>>,
    #[serde(default)]
    enable_dhcp: Option<bool>,
    #[serde(default)]
    dns_nameservers: Option<Vec<String>>,
    #[serde(default)]
    host_routes: Option<Vec<Value>>,
    #[serde(default)]
    subnetpool_id: Option<String>,
}

fn no_host_routes(b: &SubnetBody) -> Result<(), Fault> {
    if b.host_routes.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(bad_request(
            "Invalid input: host_routes are not supported on this cloud.",
        ));
    }
    Ok(())
}

/// `GET /v2.0/subnets`.
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
                .subnets(caller, q)
                .await?
                .iter()
                .map(views::subnet)
                .collect())
        })
        .await?;
    Ok(Json(req.finish(
        "subnets",
        items,
        &collection_url(&app, v, "subnets"),
    )))
}

/// `GET /v2.0/subnets/{id}`.
pub async fn show(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
    NetParams(p): NetParams,
) -> Result<Json<Value>, Fault> {
    let req = ListRequest::parse(&p, &[], |_, _, _| false)?;
    let s = service(&app).subnet(&auth.caller(), &id).await?;
    Ok(Json(json!({"subnet": req.select(views::subnet(&s))})))
}

/// `POST /v2.0/subnets` (201), single or bulk (`{"subnets": [...]}`).
pub async fn create(
    State(app): State<Shared>,
    auth: NetAuth,
    NetBody(body): NetBody,
) -> Result<Response, Fault> {
    let (items, bulk) = items_of::<SubnetBody>(body, "subnet", Some("subnets"))?;
    let mut reqs = Vec::new();
    for b in items {
        no_host_routes(&b)?;
        if b.subnetpool_id.is_some() {
            return Err(bad_request(
                "Invalid input: subnet pools are not supported; give a cidr.",
            ));
        }
        let network_id = b
            .network_id
            .ok_or_else(|| bad_request("Invalid input: network_id is required."))?;
        let cidr = b
            .cidr
            .ok_or_else(|| bad_request("Invalid input: cidr is required."))?;
        let req = SubnetRequest {
            cidr,
            ip_version: b.ip_version,
            gateway: b.gateway_ip,
            allocation_pools: b
                .allocation_pools
                .map(|ps| ps.into_iter().map(|p| (p.start, p.end)).collect()),
            enable_dhcp: b.enable_dhcp,
            dns_nameservers: b.dns_nameservers.unwrap_or_default(),
        };
        reqs.push((network_id, b.name.unwrap_or_default(), req));
    }
    let net = service(&app);
    let caller = auth.caller();
    let mut made: Vec<Subnet> = Vec::new();
    for (network_id, name, req) in reqs {
        match net.create_subnet(&caller, &network_id, name, req).await {
            Ok(s) => made.push(s),
            Err(e) => {
                for s in &made {
                    if let Err(e) = net.delete_subnet(&caller, &s.id).await {
                        tracing::warn!(subnet = %s.id, error = %e, "bulk create: rollback failed");
                    }
                }
                return Err(e.into());
            }
        }
    }
    let mut views: Vec<Value> = made.iter().map(views::subnet).collect();
    Ok(created(if bulk {
        json!({ "subnets": views })
    } else {
        json!({ "subnet": views.pop().unwrap_or_default() })
    }))
}

/// `PUT /v2.0/subnets/{id}`: name, `enable_dhcp`, `dns_nameservers` (the
/// range, gateway and pools of a subnet are fixed once made).
pub async fn update(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
    NetBody(body): NetBody,
) -> Result<Json<Value>, Fault> {
    let (mut items, _) = items_of::<SubnetBody>(body, "subnet", None)?;
    let b = items
        .pop()
        .ok_or_else(|| bad_request("Resource body required."))?;
    no_host_routes(&b)?;
    if b.gateway_ip.is_some() || b.allocation_pools.is_some() || b.cidr.is_some() {
        return Err(bad_request(
            "Invalid input: a subnet's cidr, gateway_ip and allocation_pools cannot be changed.",
        ));
    }
    let dns = b
        .dns_nameservers
        .map(|d| {
            d.iter()
                .map(|s| ip("dns_nameservers", s))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let s = service(&app)
        .update_subnet(
            &auth.caller(),
            &id,
            SubnetUpdate {
                name: b.name,
                enable_dhcp: b.enable_dhcp,
                dns_nameservers: dns,
            },
        )
        .await?;
    Ok(Json(json!({"subnet": views::subnet(&s)})))
}

/// `DELETE /v2.0/subnets/{id}` (204; 409 `SubnetInUse` while addresses
/// of it are held).
pub async fn delete(
    State(app): State<Shared>,
    auth: NetAuth,
    Id(id): Id,
) -> Result<Response, Fault> {
    service(&app).delete_subnet(&auth.caller(), &id).await?;
    Ok(no_content())
}
