//! Rows to domain values: networks, subnets, ports and floating IPs as
//! the store reads them (a malformed row is `StoreError::Corrupt`).

use super::*;

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn network_of(m: network::Model) -> Result<Network, StoreError> {
    Ok(Network {
        flavor: NetworkFlavor::parse(&m.flavor)
            .ok_or_else(|| corrupt(format!("network {}: flavor {:?}", m.id, m.flavor)))?,
        status: NetworkStatus::parse(&m.status)
            .ok_or_else(|| corrupt(format!("network {}: status {:?}", m.id, m.status)))?,
        id: m.id,
        name: m.name,
        project_id: m.project_id,
        shared: m.shared,
        external: m.external,
        mode: m.mode,
        link: m.link,
        mac_prefix: m.mac_prefix,
        admin_state_up: m.admin_state_up,
        created: m.created,
        updated: m.updated,
    })
}

pub(super) fn ip(s: &str, what: &str) -> Result<IpAddr, StoreError> {
    s.parse()
        .map_err(|_| corrupt(format!("{what}: address {s:?}")))
}

pub(super) fn subnet_of(m: subnet::Model) -> Result<Subnet, StoreError> {
    let pools: Vec<(String, String)> = serde_json::from_str(&m.pools)
        .map_err(|e| corrupt(format!("subnet {}: pools: {e}", m.id)))?;
    let dns: Vec<String> =
        serde_json::from_str(&m.dns).map_err(|e| corrupt(format!("subnet {}: dns: {e}", m.id)))?;
    Ok(Subnet {
        cidr: m
            .cidr
            .parse()
            .map_err(|_| corrupt(format!("subnet {}: cidr {:?}", m.id, m.cidr)))?,
        gateway: m.gateway.as_deref().map(|g| ip(g, "gateway")).transpose()?,
        allocation_pools: pools
            .iter()
            .map(|(s, e)| {
                Ok(AllocationPool {
                    start: ip(s, "pool")?,
                    end: ip(e, "pool")?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        dns_nameservers: dns.iter().map(|d| ip(d, "dns")).collect::<Result<_, _>>()?,
        id: m.id,
        network_id: m.network_id,
        project_id: m.project_id,
        name: m.name,
        enable_dhcp: m.enable_dhcp,
        created: m.created,
        updated: m.updated,
    })
}

pub(super) fn port_of(m: port::Model, ips: Vec<FixedIp>) -> Result<Port, StoreError> {
    Ok(Port {
        status: PortStatus::parse(&m.status)
            .ok_or_else(|| corrupt(format!("port {}: status {:?}", m.id, m.status)))?,
        id: m.id,
        network_id: m.network_id,
        project_id: m.project_id,
        name: m.name,
        device_id: m.device_id,
        device_owner: m.device_owner,
        mac: m.mac,
        fixed_ips: ips,
        admin_state_up: m.admin_state_up,
        created: m.created,
        updated: m.updated,
    })
}

pub(super) fn floating_of(m: floating_ip::Model) -> Result<FloatingIp, StoreError> {
    Ok(FloatingIp {
        address: ip(&m.address, "floating ip")?,
        fixed_ip: m
            .fixed_ip
            .as_deref()
            .map(|a| ip(a, "fixed ip"))
            .transpose()?,
        id: m.id,
        project_id: m.project_id,
        network_id: m.network_id,
        subnet_id: m.subnet_id,
        port_id: m.port_id,
        mac: m.mac,
        description: m.description,
        created: m.created,
        updated: m.updated,
    })
}

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
