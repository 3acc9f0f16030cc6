//! Neutron JSON bodies of networks, subnets, ports and floating IPs.
//!
//! Every key the stock clients read is always present (see
//! docs/api.md, "Networks"): the `openstack` CLI's subnet
//! formatters crash on a missing or null `allocation_pools`,
//! `dns_nameservers` or `host_routes`, and `server add floating ip` walks
//! each port's `fixed_ips`. Attributes Synnefo has no notion of get
//! Neutron's neutral values (`mtu` 1500, `description` "", empty lists).
//! Networks also carry Synnefo's `type`, `public` and
//! `SNF:floating_ip_pool`, which kamaki reads.

use serde_json::{Value, json};
use synnefo_core::network::{FloatingIp, Network, Port, Subnet};

use crate::nova::views::iso;

/// The MTU every network reports (Ganeti NICs use the link's default).
pub const MTU: u32 = 1500;

/// A network, with the ids of its subnets.
pub fn network(n: &Network, subnets: &[String]) -> Value {
    let mut subnets = subnets.to_vec();
    subnets.sort();
    json!({
        "id": n.id,
        "name": n.name,
        "status": n.status.as_str(),
        "admin_state_up": n.admin_state_up,
        "subnets": subnets,
        "shared": n.shared,
        "router:external": n.external,
        "project_id": n.project_id,
        "tenant_id": n.project_id,
        "mtu": MTU,
        "description": "",
        "tags": [],
        "availability_zone_hints": [],
        "availability_zones": [],
        "created_at": iso(&n.created),
        "updated_at": iso(&n.updated),
        "revision_number": 0,
        "type": n.flavor.as_str(),
        "public": n.project_id.is_none() || n.shared,
        "SNF:floating_ip_pool": n.external,
    })
}

/// A subnet.
pub fn subnet(s: &Subnet) -> Value {
    let pools: Vec<Value> = s
        .allocation_pools
        .iter()
        .map(|p| json!({"start": p.start.to_string(), "end": p.end.to_string()}))
        .collect();
    let dns: Vec<String> = s.dns_nameservers.iter().map(|d| d.to_string()).collect();
    let v6 = s.cidr.version() == 6;
    json!({
        "id": s.id,
        "name": s.name,
        "network_id": s.network_id,
        "cidr": s.cidr.to_string(),
        "ip_version": s.cidr.version(),
        "gateway_ip": s.gateway.map(|g| g.to_string()),
        "enable_dhcp": s.enable_dhcp,
        "allocation_pools": pools,
        "dns_nameservers": dns,
        "host_routes": [],
        "service_types": [],
        "tags": [],
        "ipv6_address_mode": if v6 { Value::from("slaac") } else { Value::Null },
        "ipv6_ra_mode": if v6 { Value::from("slaac") } else { Value::Null },
        "subnetpool_id": null,
        "segment_id": null,
        "description": "",
        "project_id": s.project_id,
        "tenant_id": s.project_id,
        "created_at": iso(&s.created),
        "updated_at": iso(&s.updated),
        "revision_number": 0,
    })
}

/// A port.
pub fn port(p: &Port) -> Value {
    let fixed: Vec<Value> = p
        .fixed_ips
        .iter()
        .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip.to_string()}))
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "network_id": p.network_id,
        "mac_address": p.mac,
        "fixed_ips": fixed,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "status": p.status.as_str(),
        "admin_state_up": p.admin_state_up,
        "project_id": p.project_id,
        "tenant_id": p.project_id,
        "security_groups": [],
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "description": "",
        "tags": [],
        "created_at": iso(&p.created),
        "updated_at": iso(&p.updated),
        "revision_number": 0,
    })
}

/// A floating IP: `ACTIVE` while associated with a port, else `DOWN`.
pub fn floating_ip(f: &FloatingIp) -> Value {
    json!({
        "id": f.id,
        "floating_ip_address": f.address.to_string(),
        "floating_network_id": f.network_id,
        "port_id": f.port_id,
        "fixed_ip_address": f.fixed_ip.map(|ip| ip.to_string()),
        "router_id": null,
        "status": if f.port_id.is_some() { "ACTIVE" } else { "DOWN" },
        "description": f.description,
        "project_id": f.project_id,
        "tenant_id": f.project_id,
        "tags": [],
        "port_details": null,
        "created_at": iso(&f.created),
        "updated_at": iso(&f.updated),
        "revision_number": 0,
    })
}
