//! The network opcodes (`POST /2/networks`, `PUT /2/networks/NAME/connect`
//! and `/disconnect`, `DELETE /2/networks/NAME`): Ganeti 3.0's
//! `LUNetworkAdd`, `LUNetworkConnect`, `LUNetworkDisconnect` and
//! `LUNetworkRemove` (`lib/cmdlib/network.py`), with their errors and
//! warnings worded as recorded from the lab
//! (`synnefo-ganeti/tests/fixtures/ganeti-3.0-networks/`). The simulator
//! has one node group, `default`.

use serde_json::{Value, json};

use super::input::{NetworkAddParams, NetworkConnectParams};
use super::prereq;
use crate::config::SimNetworkConfig;
use crate::model::SimState;
use crate::networks::{GROUP, NetLink, NetState};

fn unknown_network(name: &str) -> Value {
    prereq(format!("Network '{name}' not found"), "unknown_entity")
}

fn unknown_group(name: &str) -> Value {
    prereq(format!("Node group '{name}' not found"), "unknown_entity")
}

fn conflicting() -> Value {
    prereq(
        "Conflicting IP addresses found;  remove/modify the corresponding network interfaces"
            .into(),
        "wrong_state",
    )
}

impl SimState {
    /// The warning Ganeti logs before refusing a connect/disconnect
    /// (`_NetworkConflictCheck`): `None` when no NIC matches.
    fn conflict_warning(
        &self,
        network: &str,
        action: &str,
        matches: impl Fn(&crate::model::SimNic) -> bool,
    ) -> Option<String> {
        let found: Vec<String> = self
            .instances
            .values()
            .filter_map(|i| {
                let nics: Vec<String> = i
                    .nics
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| matches(n))
                    .map(|(idx, n)| format!("nic{idx}/{}", n.ip.as_deref().unwrap_or("None")))
                    .collect();
                (!nics.is_empty()).then(|| format!("{}: {}", i.name, nics.join(", ")))
            })
            .collect();
        (!found.is_empty()).then(|| {
            format!(
                " - WARNING: IP addresses from network '{network}', which is about to {action} node group '{GROUP}', are in use: {}",
                found.join(", ")
            )
        })
    }

    /// `LUNetworkAdd.CheckPrereq`.
    pub(crate) fn network_add_prereq(&self, name: &str, p: &NetworkAddParams) -> Result<(), Value> {
        if p.network.is_none() {
            return Err(prereq("Network must be given".into(), "wrong_input"));
        }
        if let Some(existing) = self.network(name) {
            return Err(prereq(
                format!(
                    "Desired network name '{name}' already exists as a network (UUID: {})",
                    existing.uuid
                ),
                "already_exists",
            ));
        }
        Ok(())
    }

    /// `LUNetworkAdd.Exec`'s log lines: the node addresses it reserves.
    pub(crate) fn network_add_logs(&self, p: &NetworkAddParams) -> Vec<String> {
        let Some(net) = p
            .network
            .as_deref()
            .and_then(|subnet| NetState::new(&SimNetworkConfig::new("probe", subnet), &[]))
        else {
            return vec![];
        };
        if !p.conflicts_check.unwrap_or(true) {
            return vec![];
        }
        self.nodes
            .iter()
            .filter(|n| net.contains(&n.ip))
            .map(|n| {
                format!(
                    " - INFO: Reserved IP address of node '{}' ({})",
                    n.cfg.name, n.ip
                )
            })
            .collect()
    }

    /// `LUNetworkAdd.Exec`: the network, not connected to any group.
    pub(crate) fn network_add(&mut self, name: &str, p: &NetworkAddParams) -> Result<Value, Value> {
        let cfg = SimNetworkConfig {
            name: name.to_string(),
            subnet: p.network.clone().unwrap_or_default(),
            gateway: p.gateway.clone(),
            ..SimNetworkConfig::default()
        };
        let node_ips: Vec<String> = if p.conflicts_check.unwrap_or(true) {
            self.nodes.iter().map(|n| n.ip.clone()).collect()
        } else {
            vec![]
        };
        let mut net = NetState::new(&cfg, &node_ips).ok_or_else(|| {
            let why = cfg.subnet_v4().err().unwrap_or_default();
            json!([
                "OpExecError",
                [format!(
                    "Cannot create IP address pool for network '{name}': {why}"
                )]
            ])
        })?;
        for ip in &p.add_reserved_ips {
            if !net.reserve_external(ip) {
                return Err(json!([
                    "OpExecError",
                    [format!(
                        "Cannot reserve IP address '{ip}': {ip} is not in network {}",
                        cfg.subnet
                    )]
                ]));
            }
        }
        net.conn = None;
        net.mac_prefix = p.mac_prefix.clone().map(|m| m.to_ascii_lowercase());
        net.network6 = p.network6.clone();
        net.gateway6 = p.gateway6.clone();
        net.tags = p.tags.clone();
        self.networks.push(net);
        Ok(Value::Null)
    }

    /// `LUNetworkConnect.CheckPrereq` (and `ExpandNames`' lookups): the
    /// warning of an existing connection, or the conflict check.
    pub(crate) fn network_connect_prereq(
        &self,
        name: &str,
        p: &NetworkConnectParams,
        logs: &mut Vec<String>,
    ) -> Result<(), Value> {
        let net = self.network(name).ok_or_else(|| unknown_network(name))?;
        let group = p.group_name.clone().unwrap_or_default();
        if group != GROUP {
            return Err(unknown_group(&group));
        }
        if net.conn.is_some() {
            logs.push(format!(
                " - WARNING: Network '{name}' is already mapped to group '{GROUP}'"
            ));
        } else if p.conflicts_check.unwrap_or(true)
            && let Some(w) = self.conflict_warning(name, "connect to", |n| {
                n.ip.as_deref().is_some_and(|ip| net.contains(ip))
            })
        {
            logs.push(w);
            return Err(conflicting());
        }
        Ok(())
    }

    /// `LUNetworkConnect.Exec`: connects unless already connected.
    pub(crate) fn network_connect(
        &mut self,
        name: &str,
        p: &NetworkConnectParams,
    ) -> Result<Value, Value> {
        let net = self
            .networks
            .iter_mut()
            .find(|n| n.cfg.name == name || n.uuid == name)
            .ok_or_else(|| unknown_network(name))?;
        if net.conn.is_none() {
            net.conn = Some(NetLink {
                mode: p.network_mode.clone().unwrap_or_default(),
                link: p.network_link.clone().unwrap_or_default(),
                vlan: p.network_vlan.clone().unwrap_or_default(),
            });
        }
        Ok(Value::Null)
    }

    /// `LUNetworkDisconnect.CheckPrereq`: the warning of a missing
    /// connection, or the refusal while NICs use the network.
    pub(crate) fn network_disconnect_prereq(
        &self,
        name: &str,
        group: &str,
        logs: &mut Vec<String>,
    ) -> Result<(), Value> {
        let net = self.network(name).ok_or_else(|| unknown_network(name))?;
        if group != GROUP {
            return Err(unknown_group(group));
        }
        if net.conn.is_none() {
            logs.push(format!(
                " - WARNING: Network '{name}' is not mapped to group '{GROUP}'"
            ));
        } else if let Some(w) = self.conflict_warning(name, "disconnect from", |n| {
            n.network_uuid.as_deref() == Some(net.uuid.as_str())
        }) {
            logs.push(w);
            return Err(conflicting());
        }
        Ok(())
    }

    /// `LUNetworkDisconnect.Exec`.
    pub(crate) fn network_disconnect(&mut self, name: &str) -> Result<Value, Value> {
        let net = self
            .networks
            .iter_mut()
            .find(|n| n.cfg.name == name || n.uuid == name)
            .ok_or_else(|| unknown_network(name))?;
        net.conn = None;
        Ok(Value::Null)
    }

    /// `LUNetworkRemove.CheckPrereq`: refused while connected (a network
    /// instances use is connected: a disconnect refuses while they do).
    pub(crate) fn network_remove_prereq(
        &self,
        name: &str,
        logs: &mut Vec<String>,
    ) -> Result<(), Value> {
        let net = self.network(name).ok_or_else(|| unknown_network(name))?;
        if net.conn.is_some() {
            logs.push(format!(
                " - WARNING: Network '{name}' is connected to the following node groups: {GROUP}"
            ));
            return Err(prereq("Network still connected".into(), "wrong_state"));
        }
        Ok(())
    }

    /// `LUNetworkRemove.Exec`.
    pub(crate) fn network_remove(&mut self, name: &str) -> Result<Value, Value> {
        let before = self.networks.len();
        self.networks
            .retain(|n| n.cfg.name != name && n.uuid != name);
        if self.networks.len() == before {
            return Err(json!([
                "OpExecError",
                [format!("Network '{name}' disappeared")]
            ]));
        }
        Ok(Value::Null)
    }

    /// `GET /2/groups?bulk=1`: the one group.
    pub(crate) fn groups_json(&self) -> Value {
        let info = self.info_json();
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.cfg.name.as_str()).collect();
        let uuid = self.nodes.first().map(|n| n.group_uuid.clone());
        json!([{
            "alloc_policy": "preferred", "name": GROUP, "node_cnt": nodes.len(), "node_list": nodes,
            "ipolicy": info.get("ipolicy").cloned().unwrap_or_else(|| json!({})),
            "custom_ipolicy": {}, "diskparams": info.get("diskparams").cloned().unwrap_or_else(|| json!({})),
            "custom_diskparams": {},
            "ndparams": info.get("ndparams").cloned().unwrap_or_else(|| json!({})),
            "custom_ndparams": {}, "ctime": 0, "mtime": self.ctime, "uuid": uuid,
            "serial_no": 1, "tags": [],
        }])
    }
}
