//! `OP_INSTANCE_SET_PARAMS` (`PUT /2/instances/NAME/modify`): NICs added
//! (network checks and pool addresses as for a create, a MAC written into
//! the op's input when it starts) or removed, and backend, hypervisor and
//! OS parameters changed. The result lists the changes as Ganeti does.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use super::input::{ModifyParams, NicAction, NicInput};
use super::unknown_instance;
use crate::model::{SimNic, SimState};

/// How many MACs starting this op's input will take: one per `add` item
/// without a `mac` key (reads the raw input, as [`fill_macs`] writes it).
pub(crate) fn macs_needed(input: &Map<String, Value>) -> usize {
    let Some(mods) = input.get("nics").and_then(Value::as_array) else {
        return 0;
    };
    mods.iter()
        .filter(|m| m.get(0).and_then(Value::as_str) == Some("add"))
        .filter(|m| {
            m.as_array()
                .and_then(|a| a.last())
                .is_some_and(|p| p.get("mac").is_none())
        })
        .count()
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
    /// The NICs a modify adds: the same checks and pool as a create.
    pub(crate) fn modify_prereq(
        &self,
        p: &ModifyParams,
        logs: &mut Vec<String>,
    ) -> Result<Vec<SimNic>, Value> {
        let mut nics = Vec::new();
        for m in p.nics.iter().filter(|m| m.action == NicAction::Add) {
            nics.push(self.nic_syntax(&m.params)?);
        }
        self.resolve_nets(&mut nics, p.conflicts_check.unwrap_or(true), logs, false)?;
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
                    new_nics.push((NicAction::Add, nic))
                }
                NicAction::Remove => {
                    let placeholder = self.nic_from(&NicInput::default());
                    new_nics.push((NicAction::Remove, placeholder))
                }
                NicAction::Other => {}
            }
        }
        let i = self.instances.get_mut(name).expect("checked above");
        for (what, nic) in new_nics {
            if what == NicAction::Add {
                let idx = i.nics.len();
                changes.push(json!([
                    format!("nic.{idx}"),
                    format!(
                        "add:mac={},ip={},mode={},link={},network={}",
                        nic.mac,
                        nic.ip.clone().unwrap_or_else(|| "None".into()),
                        nic.mode,
                        nic.link,
                        nic.network_uuid.clone().unwrap_or_else(|| "None".into())
                    )
                ]));
                i.nics.push(nic);
            } else if i.nics.pop().is_some() {
                changes.push(json!([format!("nic.{}", i.nics.len()), "remove"]));
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
        for (k, v) in &p.hvparams {
            i.hvparams.insert(k.clone(), v.clone());
            changes.push(json!([format!("hv/{k}"), v]));
        }
        for (k, v) in &p.osparams {
            i.osparams.insert(k.clone(), v.clone());
            changes.push(json!([format!("os/{k}"), v]));
        }
        i.touch();
        Ok(Value::Array(changes))
    }
}
