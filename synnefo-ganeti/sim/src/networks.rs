//! Ganeti networks: address pools, and the NIC checks a create or a
//! modify runs against them (Ganeti's `ComputeNics` and the pool
//! reservations of `LUInstanceCreate`/`LUInstanceSetParams`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::config::SimNetworkConfig;
use crate::model::{SimNic, SimState};
use crate::ops::input::NicInput;
use crate::ops::prereq;

/// A network: its configuration, UUID and address pool (Ganeti's
/// `AddressPool`: a bit per address of the subnet).
#[derive(Debug, Clone)]
pub(crate) struct NetState {
    /// The network as configured.
    pub cfg: SimNetworkConfig,
    /// Its UUID (configured, or generated at start).
    pub uuid: String,
    base: u32,
    size: u32,
    /// External reservations (index in the subnet): network, broadcast,
    /// gateway, `reserved_ips`, node addresses in the subnet.
    ext: BTreeSet<u32>,
}

impl NetState {
    pub(crate) fn new(cfg: &SimNetworkConfig, node_ips: &[String]) -> Option<Self> {
        let (base, prefix) = cfg.subnet_v4().ok()?;
        let mut n = Self {
            cfg: cfg.clone(),
            uuid: cfg
                .uuid
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            base,
            size: 1 << (32 - prefix),
            ext: BTreeSet::new(),
        };
        n.ext.insert(0);
        n.ext.insert(n.size - 1);
        let reserved = cfg.gateway.iter().chain(&cfg.reserved_ips).chain(node_ips);
        for ip in reserved {
            if let Some(i) = n.index(ip) {
                n.ext.insert(i);
            }
        }
        Some(n)
    }

    /// The index of an address in the subnet.
    fn index(&self, ip: &str) -> Option<u32> {
        let a = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        a.checked_sub(self.base).filter(|i| *i < self.size)
    }

    fn addr(&self, index: u32) -> String {
        Ipv4Addr::from(self.base + index).to_string()
    }

    /// Ganeti's `GenerateFree`: the lowest address reserved by no one.
    fn first_free(&self, used: &BTreeSet<u32>) -> Option<u32> {
        (0..self.size).find(|i| !self.ext.contains(i) && !used.contains(i))
    }
}

/// Python's `repr` of a list of strings (`['100', 'routed', '']`).
fn py_str_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

impl SimState {
    /// One requested NIC checked like Ganeti's `ComputeNics` (no MAC yet:
    /// `mac` is empty unless given).
    pub(crate) fn nic_syntax(&self, n: &NicInput) -> Result<SimNic, Value> {
        let not_none = |x: &Option<String>| x.clone().filter(|x| !x.eq_ignore_ascii_case("none"));
        let network = not_none(&n.network);
        let ip = not_none(&n.ip);
        let mut nic = SimNic {
            ip: ip.clone(),
            mac: n
                .mac
                .clone()
                .filter(|m| m != "auto" && m != "generate")
                .unwrap_or_default(),
            mode: n.mode.clone().unwrap_or_else(|| "bridged".into()),
            link: n.link.clone().unwrap_or_else(|| "br0".into()),
            network: None,
            network_uuid: None,
            name: not_none(&n.name),
            uuid: uuid::Uuid::new_v4().to_string(),
            vlan: None,
        };
        if network.is_some() && n.sets_mode_or_link {
            return Err(prereq(
                "If network is given, no mode or link is allowed to be passed".into(),
                "wrong_input",
            ));
        }
        if ip
            .as_deref()
            .is_some_and(|i| i.eq_ignore_ascii_case("pool"))
            && network.is_none()
        {
            return Err(prereq(
                "if ip=pool, parameter network must be passed too".into(),
                "wrong_input",
            ));
        }
        if let Some(net) = network {
            let found = self
                .networks
                .iter()
                .find(|x| x.cfg.name == net || x.uuid == net)
                .ok_or_else(|| prereq(format!("Network '{net}' not found"), "unknown_entity"))?;
            nic.network = Some(found.cfg.name.clone());
            nic.network_uuid = Some(found.uuid.clone());
        }
        Ok(nic)
    }

    /// Network NICs take the mode/link/vlan of the network's group
    /// connection (a create logs them) and `ip: pool` the first free
    /// address (logged).
    pub(crate) fn resolve_nets(
        &self,
        nics: &mut [SimNic],
        conflicts_check: bool,
        logs: &mut Vec<String>,
        create: bool,
    ) -> Result<(), Value> {
        let mut taken: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (idx, nic) in nics.iter_mut().enumerate() {
            let Some(uuid) = nic.network_uuid.clone() else {
                continue;
            };
            let net = self
                .networks
                .iter()
                .find(|n| n.uuid == uuid)
                .expect("looked up before");
            let c = &net.cfg;
            if create {
                logs.push(format!(
                    " - INFO: NIC/{idx} inherits netparams {}",
                    py_str_list(&[&c.link, &c.mode, &c.vlan])
                ));
            }
            nic.mode = c.mode.clone();
            nic.link = c.link.clone();
            nic.vlan = Some(c.vlan.clone());
            let used = taken
                .entry(uuid.clone())
                .or_insert_with(|| self.used_addresses(net));
            match nic.ip.as_deref() {
                Some(ip) if ip.eq_ignore_ascii_case("pool") => {
                    let i = net.first_free(used).ok_or_else(|| {
                        // LUInstanceCreate names the NIC, LUInstanceSetParams does not.
                        let which = if create {
                            format!(" for NIC {idx}")
                        } else {
                            String::new()
                        };
                        prereq(
                            format!("Unable to get a free IP{which} from the address pool"),
                            "wrong_state",
                        )
                    })?;
                    used.insert(i);
                    let ip = net.addr(i);
                    logs.push(format!(" - INFO: Chose IP {ip} from network {}", c.name));
                    nic.ip = Some(ip);
                }
                Some(ip) => {
                    let taken_here = net
                        .index(ip)
                        .filter(|i| !(conflicts_check && used.contains(i)));
                    match taken_here {
                        Some(i) => {
                            used.insert(i);
                        }
                        None => {
                            return Err(prereq(
                                format!(
                                    "IP address {ip} already in use or does not belong to network {}",
                                    c.name
                                ),
                                "not_unique",
                            ));
                        }
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Addresses of a network held by instances' NICs and by ops that are
    /// still running (Ganeti's temporary reservations).
    fn used_addresses(&self, net: &NetState) -> BTreeSet<u32> {
        let in_net = |n: &SimNic| {
            (n.network_uuid.as_deref() == Some(net.uuid.as_str()))
                .then(|| n.ip.as_deref().and_then(|ip| net.index(ip)))
                .flatten()
        };
        let held = self
            .instances
            .values()
            .flat_map(|i| i.nics.iter().filter_map(in_net));
        let pending = self
            .jobs
            .values()
            .filter(|j| !j.status().is_terminal())
            .flat_map(|j| j.ops.iter())
            .filter(|o| !o.status.is_terminal())
            .filter_map(|o| o.nics.as_ref())
            .flat_map(|nics| nics.iter().filter_map(in_net));
        held.chain(pending).collect()
    }
}
