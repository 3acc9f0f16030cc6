//! `synnefo admin networks ...`: public networks, pools, the links and
//! MAC prefixes networks lease, and the address history, through
//! [`synnefo_core::service::network::Networking`] with operator rights.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use synnefo_core::network::{NetworkFlavor, PoolKind, SubnetRequest};
use synnefo_core::ports::{NetQuery, Store};
use synnefo_core::service::admin::Admin;
use synnefo_core::service::compute::ComputeConfig;
use synnefo_core::service::network::{FlavorRecipe, Networking};

use super::{NetworksCommand, print};
use crate::common::Context;

/// Runs `admin networks`.
pub(super) async fn run(
    ctx: &Context,
    store: Arc<dyn Store>,
    c: NetworksCommand,
) -> anyhow::Result<()> {
    let ganeti = crate::cmd::reconcile::backends(&*store, ctx).await?;
    let net = Networking::new(
        store.clone(),
        ganeti,
        ComputeConfig::from_settings(&ctx.settings).network,
        ctx.settings.backend_prefix_id.clone(),
    );
    match c {
        NetworksCommand::CreatePublic {
            name,
            subnet,
            gateway,
            flavor,
            mode,
            link,
            out,
        } => {
            let flavor = NetworkFlavor::parse(&flavor)
                .with_context(|| format!("unknown network flavor {flavor}"))?;
            let recipe = match (mode, link) {
                (Some(mode), Some(link)) => Some(FlavorRecipe { mode, link }),
                _ => None,
            };
            let req = SubnetRequest {
                cidr: subnet,
                gateway: gateway.map(|g| (g != "none").then_some(g)),
                ..SubnetRequest::default()
            };
            let (n, s) = net
                .create_public_network(&name, flavor, recipe, req)
                .await?;
            print(
                out,
                &["ID", "NAME", "SUBNET", "GATEWAY"],
                vec![vec![
                    n.id.clone(),
                    n.name.clone(),
                    s.cidr.to_string(),
                    s.gateway.map(|g| g.to_string()).unwrap_or_default(),
                ]],
                json!({"network": n, "subnet": s}),
            );
        }
        NetworksCommand::List { out } => {
            let op = Admin::cli_operator();
            let nets = net.networks(&op, NetQuery::default()).await?;
            let subnets = store.list_subnets(&NetQuery::default()).await?;
            let mut rows = Vec::new();
            let mut items = Vec::new();
            for n in &nets {
                let cidrs: Vec<String> = subnets
                    .iter()
                    .filter(|s| s.network_id == n.id)
                    .map(|s| s.cidr.to_string())
                    .collect();
                let on = store.network_backends(&n.id).await?;
                rows.push(vec![
                    n.id.clone(),
                    n.name.clone(),
                    n.project_id.clone().unwrap_or_else(|| "(public)".into()),
                    n.flavor.as_str().to_string(),
                    format!("{}/{}", n.mode, n.link),
                    cidrs.join(","),
                    on.iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ]);
                items.push(json!({"network": n, "subnets": cidrs, "clusters": on}));
            }
            print(
                out,
                &[
                    "ID",
                    "NAME",
                    "PROJECT",
                    "FLAVOR",
                    "MODE/LINK",
                    "SUBNETS",
                    "CLUSTERS",
                ],
                rows,
                json!(items),
            );
        }
        NetworksCommand::Delete { id } => {
            net.delete_network(&Admin::cli_operator(), &id).await?;
            println!("deleted network {id}");
        }
        NetworksCommand::Pools { out } => {
            let mut rows = Vec::new();
            let mut items = Vec::new();
            for s in store.list_subnets(&NetQuery::default()).await? {
                if s.cidr.version() != 4 {
                    continue;
                }
                let u = store.pool_usage(&s.id).await?;
                rows.push(vec![
                    s.id.clone(),
                    s.network_id.clone(),
                    s.cidr.to_string(),
                    u.size.to_string(),
                    u.used.to_string(),
                    (u.size - u.used.min(u.size)).to_string(),
                ]);
                items.push(json!({"subnet": s.id, "network": s.network_id, "cidr": s.cidr.to_string(), "size": u.size, "used": u.used}));
            }
            print(
                out,
                &["SUBNET", "NETWORK", "CIDR", "SIZE", "USED", "FREE"],
                rows,
                json!(items),
            );
        }
        NetworksCommand::Leases { out } => {
            let mut leases = store.pool_leases(PoolKind::Link).await?;
            leases.extend(store.pool_leases(PoolKind::MacPrefix).await?);
            let rows = leases
                .iter()
                .map(|l| {
                    vec![
                        l.kind.as_str().to_string(),
                        l.value.clone(),
                        l.network_id.clone(),
                    ]
                })
                .collect();
            print(out, &["KIND", "VALUE", "NETWORK"], rows, json!(leases));
        }
        NetworksCommand::IpHistory {
            address,
            limit,
            out,
        } => {
            let h = store.ip_history(address, limit).await?;
            let rows = h
                .iter()
                .map(|e| {
                    vec![
                        e.allocated.to_rfc3339(),
                        e.released
                            .map(|r| r.to_rfc3339())
                            .unwrap_or_else(|| "(held)".into()),
                        e.project_id.clone().unwrap_or_default(),
                        e.user_id.clone().unwrap_or_default(),
                        e.server_id.clone().unwrap_or_default(),
                        e.port_id
                            .clone()
                            .or_else(|| e.floating_ip_id.clone())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            print(
                out,
                &[
                    "FROM",
                    "UNTIL",
                    "PROJECT",
                    "USER",
                    "SERVER",
                    "PORT/FLOATING IP",
                ],
                rows,
                json!(h),
            );
        }
    }
    Ok(())
}
