//! Ganeti networks: address pools, and the NIC checks a create or a
//! modify runs against them (Ganeti's `ComputeNics` and the pool
//! reservations of `LUInstanceCreate`/`LUInstanceSetParams`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::config::SimNetworkConfig;
use crate::model::{SimNic, SimState, now_f64};
use crate::ops::input::NicInput;
use crate::ops::prereq;

/// The simulator's one node group (Ganeti's `default`).
pub(crate) const GROUP: &str = "default";

/// A network's connection to the node group: Ganeti's netparams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetLink {
    /// `bridged`, `routed` or `openvswitch`.
    pub mode: String,
    /// Bridge, routing table or switch.
    pub link: String,
    /// VLAN (`""`: none).
    pub vlan: String,
}

/// A network: its configuration, UUID, group connection and address pool
/// (Ganeti's `AddressPool`: a bit per address of the subnet).
#[derive(Debug, Clone)]
pub(crate) struct NetState {
    /// The network as configured (`mode`/`link`/`vlan` only meaningful
    /// through [`NetState::conn`]).
    pub cfg: SimNetworkConfig,
    /// Its UUID (configured, or generated at start).
    pub uuid: String,
    /// The connection to the node group; configured networks start
    /// connected, networks added through RAPI do not.
    pub conn: Option<NetLink>,
    /// MAC prefix of the NICs generated on it.
    pub mac_prefix: Option<String>,
    /// IPv6 subnet.
    pub network6: Option<String>,
    /// IPv6 gateway.
    pub gateway6: Option<String>,
    /// Ganeti tags.
    pub tags: Vec<String>,
    /// Creation time.
    pub ctime: f64,
    /// Last change.
    pub mtime: f64,
    /// Configuration serial.
    pub serial_no: u64,
    base: u32,
    size: u32,
    /// External reservations (index in the subnet): network, broadcast,
    /// gateway, `reserved_ips`, node addresses in the subnet.
    ext: BTreeSet<u32>,
}

impl NetState {
    pub(crate) fn new(cfg: &SimNetworkConfig, node_ips: &[String]) -> Option<Self> {
        let (base, prefix) = cfg.subnet_v4().ok()?;
        let now = now_f64();
        let mut n = Self {
            cfg: cfg.clone(),
            uuid: cfg
                .uuid
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            conn: Some(NetLink {
                mode: cfg.mode.clone(),
                link: cfg.link.clone(),
                vlan: cfg.vlan.clone(),
            }),
            mac_prefix: None,
            network6: None,
            gateway6: None,
            tags: vec![],
            ctime: now,
            mtime: now,
            serial_no: 1,
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

    /// Reserves an address of the subnet externally (`add_reserved_ips`,
    /// node addresses); false if it is outside the subnet.
    pub(crate) fn reserve_external(&mut self, ip: &str) -> bool {
        match self.index(ip) {
            Some(i) => {
                self.ext.insert(i);
                true
            }
            None => false,
        }
    }

    /// Whether an address belongs to the subnet (Ganeti's `Contains`).
    pub(crate) fn contains(&self, ip: &str) -> bool {
        self.index(ip).is_some()
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
        create: Option<&str>,
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
            let Some(conn) = &net.conn else {
                return Err(prereq(
                    match create {
                        Some(pnode) => format!(
                            "No netparams found for network {}. Probably not connected to node's {pnode} nodegroup",
                            c.name
                        ),
                        None => format!(
                            "No netparams found for the network {}, probably not connected",
                            c.name
                        ),
                    },
                    "wrong_input",
                ));
            };
            if create.is_some() {
                logs.push(format!(
                    " - INFO: NIC/{idx} inherits netparams {}",
                    py_str_list(&[&conn.link, &conn.mode, &conn.vlan])
                ));
            }
            nic.mode = conn.mode.clone();
            nic.link = conn.link.clone();
            nic.vlan = Some(conn.vlan.clone());
            let used = taken
                .entry(uuid.clone())
                .or_insert_with(|| self.used_addresses(net));
            match nic.ip.as_deref() {
                Some(ip) if ip.eq_ignore_ascii_case("pool") => {
                    let i = net.first_free(used).ok_or_else(|| {
                        // LUInstanceCreate names the NIC, LUInstanceSetParams does not.
                        let which = if create.is_some() {
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
                    match (taken_here, create) {
                        (Some(i), _) => {
                            used.insert(i);
                            if create.is_none() {
                                logs.push(format!(
                                    " - INFO: Reserving IP {ip} in network {}",
                                    c.name
                                ));
                            }
                        }
                        // LUInstanceCreate and LUInstanceSetParams word it differently.
                        (None, Some(_)) => {
                            return Err(prereq(
                                format!(
                                    "IP address {ip} already in use or does not belong to network {}",
                                    c.name
                                ),
                                "resource_not_unique",
                            ));
                        }
                        (None, None) => {
                            return Err(prereq(
                                format!("IP {ip} not available in network {}", c.name),
                                "resource_not_unique",
                            ));
                        }
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// `GET /2/networks` entries (Ganeti's `NET_FIELDS`).
    pub(crate) fn network_json(&self, net: &NetState) -> Value {
        let used = self.used_addresses(net);
        let map: String = (0..net.size)
            .map(|i| {
                if net.ext.contains(&i) || used.contains(&i) {
                    'X'
                } else {
                    '.'
                }
            })
            .collect();
        let reserved = map.chars().filter(|c| *c == 'X').count() as u64;
        let ext: Vec<String> = net.ext.iter().map(|i| net.addr(*i)).collect();
        let groups: Vec<Value> = net
            .conn
            .iter()
            .map(|c| serde_json::json!([GROUP, c.mode, c.link, c.vlan]))
            .collect();
        let insts: Vec<&str> = self
            .instances
            .values()
            .filter(|i| {
                i.nics
                    .iter()
                    .any(|n| n.network_uuid.as_deref() == Some(net.uuid.as_str()))
            })
            .map(|i| i.name.as_str())
            .collect();
        serde_json::json!({
            "name": net.cfg.name, "network": net.cfg.subnet, "gateway": net.cfg.gateway,
            "network6": net.network6, "gateway6": net.gateway6, "mac_prefix": net.mac_prefix,
            "free_count": u64::from(net.size) - reserved, "reserved_count": reserved,
            "map": map, "group_list": groups, "inst_list": insts,
            "external_reservations": ext.join(", "),
            "ctime": net.ctime, "mtime": net.mtime, "uuid": net.uuid, "serial_no": net.serial_no,
            "tags": net.tags,
        })
    }

    /// A network by name or UUID.
    pub(crate) fn network(&self, name: &str) -> Option<&NetState> {
        self.networks
            .iter()
            .find(|n| n.cfg.name == name || n.uuid == name)
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
