//! `OP_INSTANCE_SET_PARAMS` (`PUT /2/instances/NAME/modify`): NICs added
//! (network checks and pool addresses as for a create, a MAC written into
//! the op's input when it starts, from the network's MAC prefix) or removed
//! (by index, name or UUID), hot-plugged when asked and possible (KVM with
//! the guest running; otherwise `hotplug_if_possible` logs Ganeti's
//! warning and `hotplug` fails), and backend, hypervisor and OS
//! parameters changed. The result lists the changes as Ganeti does
//! (`nic.N` for an add, `NIC/N` for a remove, as recorded in
//! `tests/fixtures/ganeti-3.0-networks/`).

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use super::input::{ModifyParams, NicAction, NicInput};
use super::{prereq, unknown_instance};
use crate::model::{SimNic, SimState};

/// The MACs starting this op's input will take: one per `add` item
/// without a `mac` key, with the network it names (its MAC prefix
/// applies); reads the raw input, as [`fill_macs`] writes it.
pub(crate) fn mac_networks(input: &Map<String, Value>) -> Vec<Option<String>> {
    let Some(mods) = input.get("nics").and_then(Value::as_array) else {
        return vec![];
    };
    mods.iter()
        .filter(|m| m.get(0).and_then(Value::as_str) == Some("add"))
        .filter_map(|m| m.as_array().and_then(|a| a.last()))
        .filter(|p| p.get("mac").is_none())
        .map(|p| p.get("network").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Ganeti's `GetItemFromContainer` for a NIC: an index (`-1`: the last),
/// else a name or UUID.
fn find_nic(nics: &[SimNic], id: &Value) -> Result<usize, Value> {
    let as_int = match id {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let bad_index = |msg: String| prereq(msg, "wrong_input");
    if let Some(i) = as_int {
        return match i {
            -1 if !nics.is_empty() => Ok(nics.len() - 1),
            i if i < -1 => Err(bad_index(
                "Not accepting negative indices other than -1".into(),
            )),
            i if i >= 0 && (i as usize) < nics.len() => Ok(i as usize),
            i => Err(bad_index(format!(
                "Got NIC index {i}, but there are only {}",
                nics.len()
            ))),
        };
    }
    let id = match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    nics.iter()
        .position(|n| n.name.as_deref() == Some(id.as_str()) || n.uuid == id)
        .ok_or_else(|| {
            prereq(
                format!("Cannot find NIC with identifier {id}"),
                "unknown_entity",
            )
        })
}

/// Like Ganeti, writes a generated MAC into each added NIC's parameters in
/// the op's input (shown in the job file and `/2/jobs/ID`).
pub(crate) fn fill_macs(input: &mut Map<String, Value>, macs: &mut VecDeque<String>) {
    let Some(Value::Array(mods)) = input.get_mut("nics") else {
        return;
    };
    for m in mods.iter_mut() {
        let is_add = m.get(0).and_then(Value::as_str) == Some("add");
        if let (true, Some(Value::Object(p))) =
            (is_add, m.as_array_mut().and_then(|a| a.last_mut()))
            && !p.contains_key("mac")
            && let Some(mac) = macs.pop_front()
        {
            p.insert("mac".into(), json!(mac));
        }
    }
}

impl SimState {
    /// Ganeti's `_CheckHotplug`: whether NIC changes are hot-plugged, the
    /// log lines on the way, or the error of a `hotplug` that cannot be.
    fn hotplug(&self, name: &str, p: &ModifyParams) -> (bool, Vec<String>, Result<(), Value>) {
        let hotplug = p.hotplug.unwrap_or(false);
        if !hotplug && !p.hotplug_if_possible.unwrap_or(false) {
            return (false, vec![], Ok(()));
        }
        let why = match self.instances.get(name) {
            Some(i) if i.hypervisor == "kvm" && i.running => return (true, vec![], Ok(())),
            Some(i) if i.hypervisor == "kvm" => "Instance is probably down",
            _ => "Hotplug is not supported by this hypervisor",
        };
        let fail_msg = format!("Hotplug is not supported: {why}");
        if hotplug {
            // RpcResult.Raise appends the failure to the message.
            return (
                false,
                vec![],
                Err(prereq(
                    format!("Hotplug is not possible: {fail_msg}: {fail_msg}"),
                    "wrong_state",
                )),
            );
        }
        (
            false,
            vec![
                format!(" - WARNING: {fail_msg}"),
                " - INFO: Modification will take place without hotplugging.".into(),
            ],
            Ok(()),
        )
    }

    /// The log lines a modify writes while running: Ganeti's
    /// `_HotplugDevice` per NIC added or removed, when hot-plugging.
    pub(crate) fn modify_logs(&self, name: &str, p: &ModifyParams) -> Vec<String> {
        if !self.hotplug(name, p).0 {
            return vec![];
        }
        p.nics
            .iter()
            .filter(|m| m.action != NicAction::Other)
            .flat_map(|_| {
                [
                    " - INFO: Trying to hotplug device...".to_string(),
                    " - INFO: Hotplug done.".to_string(),
                ]
            })
            .collect()
    }

    /// The NICs a modify adds: the hot-plug check, the same checks and
    /// pool as a create, and the NICs it removes found; before them the
    /// hypervisor parameters checked ([`hv_check`]).
    pub(crate) fn modify_prereq(
        &self,
        name: &str,
        p: &ModifyParams,
        logs: &mut Vec<String>,
    ) -> Result<Vec<SimNic>, Value> {
        if !p.hvparams.is_empty()
            && let Some(i) = self.instances.get(name)
        {
            hv_check(&i.hypervisor, &updated_hvparams(&i.hvparams, &p.hvparams))?;
        }
        let (_, hot_logs, hot) = self.hotplug(name, p);
        logs.extend(hot_logs);
        hot?;
        let mut nics = Vec::new();
        for m in p.nics.iter().filter(|m| m.action == NicAction::Add) {
            nics.push(self.nic_syntax(&m.params)?);
        }
        // The removals, in order, against the NICs as the adds before them leave them.
        let mut current: Vec<SimNic> = self
            .instances
            .get(name)
            .map(|i| i.nics.clone())
            .unwrap_or_default();
        let mut added = nics.iter();
        for m in &p.nics {
            match m.action {
                NicAction::Add => current.extend(added.next().cloned()),
                NicAction::Remove => {
                    let idx = find_nic(&current, &m.identifier)?;
                    current.remove(idx);
                }
                NicAction::Other => {}
            }
        }
        self.resolve_nets(&mut nics, p.conflicts_check.unwrap_or(true), logs, None)?;
        Ok(nics)
    }

    /// A NIC as given (a MAC generated unless one is given).
    pub(crate) fn nic_from(&mut self, n: &NicInput) -> SimNic {
        SimNic {
            ip: n.ip.clone(),
            mac: n
                .mac
                .clone()
                .filter(|m| m != "auto" && m != "generate")
                .unwrap_or_else(|| self.new_mac()),
            mode: n.mode.clone().unwrap_or_else(|| "bridged".into()),
            link: n.link.clone().unwrap_or_else(|| "br0".into()),
            network: n.network.clone(),
            network_uuid: None,
            name: n.name.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            vlan: None,
        }
    }

    /// Applies a modify; the result is Ganeti's list of `[what, value]`
    /// changes. `resolved` are the added NICs the checks worked out.
    pub(crate) fn modify(
        &mut self,
        name: &str,
        p: &ModifyParams,
        resolved: Option<&[SimNic]>,
    ) -> Result<Value, Value> {
        if !self.instances.contains_key(name) {
            return Err(unknown_instance(name));
        }
        let hotplug = self.hotplug(name, p).0;
        let mut changes = Vec::new();
        let mut new_nics = Vec::new();
        let mut resolved = resolved.into_iter().flatten();
        for m in &p.nics {
            match m.action {
                NicAction::Add => {
                    let mut nic = self.nic_from(&m.params);
                    nic.vlan = Some(m.params.vlan.clone().unwrap_or_default());
                    if let Some(r) = resolved.next() {
                        nic.ip.clone_from(&r.ip);
                        nic.mode.clone_from(&r.mode);
                        nic.link.clone_from(&r.link);
                        nic.network.clone_from(&r.network);
                        nic.network_uuid.clone_from(&r.network_uuid);
                        if r.network_uuid.is_some() {
                            nic.vlan.clone_from(&r.vlan);
                        }
                    }
                    new_nics.push((NicAction::Add, Some(nic), m));
                }
                NicAction::Remove => new_nics.push((NicAction::Remove, None, m)),
                NicAction::Other => {}
            }
        }
        let i = self.instances.get_mut(name).expect("checked above");
        for (what, nic, m) in new_nics {
            match (what, nic) {
                (NicAction::Add, Some(nic)) => {
                    let idx = i.nics.len();
                    // Ganeti shows the network as the request named it.
                    changes.push(json!([
                        format!("nic.{idx}"),
                        format!(
                            "add:mac={},ip={},mode={},link={},network={}",
                            nic.mac,
                            nic.ip.clone().unwrap_or_else(|| "None".into()),
                            nic.mode,
                            nic.link,
                            m.params.network.clone().unwrap_or_else(|| "None".into())
                        )
                    ]));
                    if hotplug {
                        changes.push(json!([format!("nic.{idx}"), "hotplug:done"]));
                    }
                    i.nics.push(nic);
                }
                _ => {
                    let idx = find_nic(&i.nics, &m.identifier)?;
                    i.nics.remove(idx);
                    changes.push(json!([format!("NIC/{idx}"), "remove"]));
                    if hotplug {
                        changes.push(json!([format!("NIC/{idx}"), "hotplug:done"]));
                    }
                }
            }
        }
        // In key order, as Ganeti lists them.
        let be = &p.beparams;
        let be_changes = [
            ("maxmem", be.maxmem),
            ("memory", be.memory),
            ("minmem", be.minmem),
            ("vcpus", be.vcpus),
        ];
        for (k, v) in be_changes {
            let Some(n) = v else { continue };
            match k {
                "vcpus" => i.vcpus = n,
                "maxmem" | "memory" => i.maxmem = n,
                _ => i.minmem = n,
            }
            changes.push(json!([format!("be/{k}"), n]));
        }
        if !p.hvparams.is_empty() {
            // Ganeti keeps the instance's own values ("default" drops one,
            // the cluster's applies again) and lists each change as given.
            i.hvparams = updated_hvparams(&i.hvparams, &p.hvparams);
            for (k, v) in &p.hvparams {
                changes.push(json!([format!("hv/{k}"), v]));
            }
        }
        for (k, v) in &p.osparams {
            i.osparams.insert(k.clone(), v.clone());
            changes.push(json!([format!("os/{k}"), v]));
        }
        i.touch();
        Ok(Value::Array(changes))
    }
}

/// Ganeti's `GetUpdatedParams`: the instance's own hypervisor parameters
/// with `update` applied, a value `"default"` removing the key (the
/// cluster's value applies again).
pub(crate) fn updated_hvparams(
    own: &Map<String, Value>,
    update: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = own.clone();
    for (k, v) in update {
        if v.as_str() == Some("default") {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The cluster's hypervisor parameters for `hypervisor` (`/2/info`'s
/// `hvparams`) filled with an instance's own: what the instance runs with.
pub(crate) fn filled_hvparams(hypervisor: &str, own: &Map<String, Value>) -> Map<String, Value> {
    static CLUSTER: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| {
        serde_json::from_str::<Value>(include_str!("../cluster-info.json"))
            .ok()
            .and_then(|v| v.get("hvparams").cloned())
            .unwrap_or(Value::Null)
    });
    let mut out = cluster
        .get(hypervisor)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in own {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The checks `LUInstanceSetParams` makes of new hypervisor parameters,
/// for the two a rescue changes: `utils.ForceDictType` (strings), the KVM
/// syntax checks (`boot_order` one of Ganeti's, `cdrom_image_path` an
/// absolute normalized path or a URL, or empty) and
/// `check_boot_parameters` ("Cannot boot from cdrom without an ISO
/// path"). Whether the image file exists on the nodes (Ganeti's
/// `ValidateParameters` on each node) is not simulated.
pub(crate) fn hv_check(hypervisor: &str, own: &Map<String, Value>) -> Result<(), Value> {
    let type_error = |msg: String| json!(["TypeEnforcementError", [msg]]);
    let hv_error = |msg: String| json!(["HypervisorError", [msg]]);
    for key in ["boot_order", "cdrom_image_path"] {
        match own.get(key) {
            None | Some(Value::String(_)) => {}
            Some(Value::Bool(false)) => {}
            Some(other) => {
                return Err(type_error(format!(
                    "'{key}' (value {other}) is not a valid string"
                )));
            }
        }
    }
    if hypervisor != "kvm" {
        return Ok(());
    }
    let filled = filled_hvparams(hypervisor, own);
    let text = |k: &str| {
        filled
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let order = text("boot_order");
    const ORDERS: [&str; 4] = ["floppy", "cdrom", "disk", "network"];
    if !ORDERS.contains(&order.as_str()) {
        return Err(hv_error(format!(
            "Parameter 'boot_order' fails syntax check: The value must be one of: {} (current value: '{order}')",
            ORDERS.join(", ")
        )));
    }
    let path = text("cdrom_image_path");
    let is_url = ["http://", "https://", "ftp://", "file://"]
        .iter()
        .any(|p| path.starts_with(p));
    let norm_abs = path.starts_with('/')
        && !path.contains("//")
        && !path.split('/').any(|c| c == "." || c == "..")
        && (path == "/" || !path.ends_with('/'));
    if !path.is_empty() && !is_url && !norm_abs {
        return Err(hv_error(format!(
            "Parameter 'cdrom_image_path' fails syntax check: must be an absolute normalized path or a URL (current value: '{path}')"
        )));
    }
    if order == "cdrom" && path.is_empty() {
        return Err(hv_error(
            "Cannot boot from cdrom without an ISO path".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod hv_tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn hvparams_update_as_ganeti_does() {
        let own = map(json!({"boot_order": "cdrom", "cdrom_image_path": "/r.iso", "acpi": false}));
        // "default" drops the instance's own value; others replace it.
        let next = updated_hvparams(
            &own,
            &map(json!({"boot_order": "default", "cdrom_image_path": ""})),
        );
        assert_eq!(next, map(json!({"cdrom_image_path": "", "acpi": false})));
        // filled: the cluster's KVM defaults under the instance's own
        let filled = filled_hvparams("kvm", &next);
        assert_eq!(filled["boot_order"], "disk");
        assert_eq!(filled["acpi"], false);
    }

    #[test]
    fn hvparams_are_checked_as_kvm_checks_them() {
        let ok = |v: Value| hv_check("kvm", &map(v));
        assert_eq!(
            ok(json!({"boot_order": "cdrom", "cdrom_image_path": "/a/r.iso"})),
            Ok(())
        );
        assert_eq!(
            ok(json!({"boot_order": "cdrom", "cdrom_image_path": "http://h/r.iso"})),
            Ok(())
        );
        assert_eq!(
            ok(json!({"boot_order": "disk", "cdrom_image_path": ""})),
            Ok(())
        );
        assert_eq!(
            ok(json!({"boot_order": "cdrom"})),
            Err(json!([
                "HypervisorError",
                ["Cannot boot from cdrom without an ISO path"]
            ]))
        );
        let class = |r: Result<(), Value>| r.unwrap_err()[0].as_str().unwrap().to_string();
        assert_eq!(class(ok(json!({"boot_order": "usb"}))), "HypervisorError");
        assert_eq!(
            class(ok(json!({"cdrom_image_path": "r.iso"}))),
            "HypervisorError"
        );
        assert_eq!(
            class(ok(json!({"cdrom_image_path": "/a/../r.iso"}))),
            "HypervisorError"
        );
        assert_eq!(class(ok(json!({"boot_order": 3}))), "TypeEnforcementError");
        // other hypervisors: the types only
        assert_eq!(
            hv_check("fake", &map(json!({"boot_order": "cdrom"}))),
            Ok(())
        );
    }
}
