//! `OP_INSTANCE_CREATE` (`POST /2/instances`): Ganeti's `LUInstanceCreate`
//! checks in its order, its log lines, and the new instance.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::input::CreateParams;
use super::prereq;
use crate::model::{SimDisk, SimInstance, SimNic, SimState, now_f64};

/// The log line after which Ganeti runs the OS create scripts (where
/// snf-image copies the image and reports its progress).
pub(crate) const OS_SCRIPTS_LOG: &str = "* running the instance OS create scripts...";

/// What snf-image's create script sends its `PROGRESS_MONITOR` (without
/// the `timestamp`, added when each is written): the copy announced,
/// `copy_steps` copy percentages up to 100, the copy's end, the helper's
/// configuration tasks, the end of the customization.
pub(crate) fn snf_image_messages(copy_steps: u32) -> Vec<Value> {
    const TOTAL: u64 = 474_398_720;
    let info = |m: &str| json!({"type": "image-info", "messages": [m]});
    let mut v = vec![info("Starting image copy...")];
    for k in 1..=u64::from(copy_steps) {
        let position = TOTAL * k / u64::from(copy_steps);
        let progress = (position as f64 * 10000.0 / TOTAL as f64).round() / 100.0;
        v.push(json!({"type": "image-copy-progress", "position": position,
            "total": TOTAL, "progress": progress}));
    }
    v.push(info("Image copy finished."));
    for task in [
        "FixPartitionTable",
        "FilesystemResizeUnmounted",
        "MountImage",
    ] {
        for sub in ["task-start", "task-end"] {
            v.push(json!({"type": "image-helper", "subtype": sub, "task": task}));
        }
    }
    v.push(info("Image customization finished successfully."));
    v
}

/// The log lines a create writes while running. As recorded from Ganeti
/// 3.0.2 (fixtures `job-create*.json`): disks are announced first; a job
/// with disks waits for their sync and runs the OS create scripts
/// (skipped for diskless).
pub(crate) fn logs(name: &str, p: &CreateParams) -> Vec<String> {
    let sizes: Vec<u64> = p.disk_sizes().collect();
    let mut v: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| format!("* disk {i}, size {}", format_unit(*size)))
        .collect();
    v.push("* creating instance disks...".to_string());
    v.push(format!("adding instance {name} to cluster config"));
    v.push("adding disks to cluster config".to_string());
    if !sizes.is_empty() {
        if p.wait_for_sync.unwrap_or(true) {
            for _ in 0..2 {
                v.push(format!(
                    " - INFO: Waiting for instance {name} to sync disks"
                ));
                v.push(format!(" - INFO: Instance {name}'s disks are in sync"));
            }
        }
        v.push(OS_SCRIPTS_LOG.to_string());
    }
    if p.start.unwrap_or(true) {
        v.push("* starting instance...".into());
    }
    v
}

/// Ganeti's `utils.FormatUnit(value, "h")` for a size in MiB: `512M`,
/// `1.0G`, `2.0T`.
fn format_unit(mib: u64) -> String {
    if mib >= 1024 * 1024 {
        format!("{:.1}T", mib as f64 / (1024.0 * 1024.0))
    } else if mib >= 1024 {
        format!("{:.1}G", mib as f64 / 1024.0)
    } else {
        format!("{mib}M")
    }
}

impl SimState {
    /// `LUInstanceCreate`'s checks (`CheckArguments`, `ExpandNames`,
    /// `CheckPrereq`) in Ganeti's order; the NICs with their network
    /// parameters and pool addresses on success.
    pub(crate) fn create_prereq(
        &self,
        name: &str,
        p: &CreateParams,
        logs: &mut Vec<String>,
    ) -> Result<Vec<SimNic>, Value> {
        // CheckArguments.
        let Some(os_type) = p.os_type.as_deref() else {
            return Err(prereq(
                "No guest OS or OS image specified".into(),
                "wrong_input",
            ));
        };
        // ExpandNames / CheckPrereq, in Ganeti's order.
        if self.instances.contains_key(name) {
            return Err(prereq(
                format!("Instance '{name}' is already in the cluster"),
                "already_exists",
            ));
        }
        if let Some(pn) = p.pnode.as_deref()
            && !self.nodes.iter().any(|n| n.cfg.name == pn)
        {
            return Err(prereq(format!("Node '{pn}' not known"), "unknown_entity"));
        }
        // ComputeNics: syntax and network lookup.
        let mut nics = Vec::new();
        for n in &p.nics {
            nics.push(self.nic_syntax(n)?);
        }
        // The allocator, then the primary node's state.
        let pnode = match p.pnode.as_deref() {
            Some(pn) => pn.to_string(),
            None => {
                let iallocator = p.iallocator.as_deref().unwrap_or("hail");
                let chosen = self.pick_node(0).ok_or_else(|| {
                    prereq(
                        format!(
                            "Can't compute nodes using iallocator '{iallocator}': no usable node"
                        ),
                        "insufficient_resources",
                    )
                })?;
                logs.push(format!(
                    " - INFO: Selected nodes for instance {name} via iallocator {iallocator}: {chosen}"
                ));
                chosen
            }
        };
        let node = self
            .nodes
            .iter()
            .find(|n| n.cfg.name == pnode)
            .expect("known node");
        self.check_primary_node(node)?;
        // Network NICs: parameters of the group connection, pool addresses.
        self.resolve_nets(
            &mut nics,
            p.conflicts_check.unwrap_or(true),
            logs,
            Some(&pnode),
        )?;
        // Instance policy.
        if !p.ignore_ipolicy.unwrap_or(false) {
            self.check_ipolicy(node, p.disk_sizes())?;
        }
        // The OS (CheckNodeHasOS, then CheckOSParams).
        let os = self.check_os(os_type, &pnode, p.force_variant.unwrap_or(false))?;
        let given: BTreeSet<&str> = [&p.osparams, &p.osparams_private, &p.osparams_secret]
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        Self::check_os_params(os, &pnode, given)?;
        // Memory on the primary node.
        if p.start.unwrap_or(true) {
            self.check_free_memory(node, name, p.maxmem())?;
        }
        Ok(nics)
    }

    /// The node a create lands on: the one asked for, else the allocator's.
    pub(crate) fn create_target(&self, p: &CreateParams) -> String {
        p.pnode
            .clone()
            .or_else(|| self.pick_node(0))
            .unwrap_or_else(|| self.master())
    }

    /// Adds the instance; the result is `[primary node]`. `resolved` are
    /// the NICs the checks worked out (their MACs are generated here).
    pub(crate) fn create(
        &mut self,
        name: &str,
        p: &CreateParams,
        resolved: Option<&[SimNic]>,
    ) -> Value {
        let pnode = self.create_target(p);
        let start = p.start.unwrap_or(true);
        let hypervisor = p
            .hypervisor
            .clone()
            .unwrap_or_else(|| self.cfg.hypervisor.clone());
        let mut nics = Vec::new();
        match resolved {
            Some(resolved) => {
                for n in resolved {
                    let mut n = n.clone();
                    if n.mac.is_empty() {
                        n.mac = self.new_mac_on(n.network_uuid.as_deref());
                    }
                    nics.push(n);
                }
            }
            None => {
                for n in &p.nics {
                    nics.push(self.nic_from(n));
                }
            }
        }
        let disks = p
            .disks
            .iter()
            .map(|d| SimDisk {
                size: d.size.unwrap_or(0),
                uuid: uuid::Uuid::new_v4().to_string(),
                name: d.name.clone(),
            })
            .collect();
        let now = now_f64();
        let inst = SimInstance {
            name: name.to_string(),
            uuid: uuid::Uuid::new_v4().to_string(),
            os: p.os_type.clone().unwrap_or_else(|| "noop+default".into()),
            pnode: pnode.clone(),
            disk_template: p.disk_template.clone().unwrap_or_else(|| "diskless".into()),
            admin_up: start,
            running: start,
            nics,
            disks,
            vcpus: p.vcpus(),
            maxmem: p.maxmem(),
            minmem: p.minmem(),
            hvparams: p.hvparams.clone(),
            osparams: p
                .osparams
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            network_port: self.new_port(&hypervisor),
            hypervisor,
            ctime: now,
            mtime: now,
            serial_no: 1,
            tags: p.tags.clone(),
        };
        self.instances.insert(name.to_string(), inst);
        json!([pnode])
    }
}
