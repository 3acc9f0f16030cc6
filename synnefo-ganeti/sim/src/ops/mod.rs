//! What each opcode checks and does, one module per opcode family:
//! [`create`], [`modify`] (set-params), [`power`] (startup, shutdown,
//! reboot), [`remove`] and [`network`] (network add, connect, disconnect,
//! remove). [`input`] reads an op's JSON input into typed
//! parameters once; this module dispatches on them and holds what every
//! opcode shares: the parameters Ganeti adds to each (`reason`, `priority`,
//! ...) and its recorded defaults.

use serde_json::{Map, Value, json};

use crate::jobs::OpState;
use crate::model::{SimNic, SimState};
use input::OpKind;

pub(crate) mod create;
pub(crate) mod input;
pub(crate) mod modify;
pub(crate) mod network;
pub(crate) mod power;
pub(crate) mod remove;

/// Ganeti's prerequisite error, `["OpPrereqError", [msg, ecode]]`.
pub(crate) fn prereq(msg: String, code: &str) -> Value {
    json!(["OpPrereqError", [msg, code]])
}

/// The error of an op on an instance the cluster does not have.
pub(crate) fn unknown_instance(name: &str) -> Value {
    prereq(format!("Instance '{name}' not known"), "unknown_entity")
}

fn ns_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Parameters every opcode carries.
pub(crate) fn common_params(op_id: &str, resource: &str, job: u64) -> Map<String, Value> {
    let opname = op_id.trim_start_matches("OP_").to_ascii_lowercase();
    let ns = ns_now();
    let mut m = Map::new();
    m.insert("dry_run".into(), json!(false));
    m.insert("debug_level".into(), json!(0));
    m.insert("priority".into(), json!(0));
    m.insert("depends".into(), Value::Null);
    m.insert("comment".into(), Value::Null);
    m.insert(
        "reason".into(),
        json!([
            [format!("gnt:library:rlib2:{resource}"), "", ns],
            [
                format!("gnt:opcode:{opname}"),
                format!("job={job};index=0"),
                ns + 1000
            ]
        ]),
    );
    m
}

/// Ganeti's defaults of the opcodes the simulator runs (as recorded from 3.0).
pub(crate) fn opcode_defaults(op_id: &str) -> Value {
    match op_id {
        "OP_INSTANCE_CREATE" => json!({
            "force_variant": false, "wait_for_sync": true, "name_check": true, "ignore_ipolicy": false,
            "opportunistic_locking": false, "beparams": {}, "disks": [], "disk_template": null, "group_name": null,
            "file_driver": null, "file_storage_dir": null, "hvparams": {}, "hypervisor": null, "iallocator": null,
            "identify_defaults": false, "ip_check": true, "conflicts_check": true, "mode": "create", "nics": [],
            "no_install": null, "osparams": {}, "osparams_private": {}, "osparams_secret": {}, "os_type": null,
            "pnode": null, "pnode_uuid": null, "snode": null, "snode_uuid": null, "source_handshake": null,
            "source_instance_name": null, "source_shutdown_timeout": 120, "source_x509_ca": null, "src_node": null,
            "src_node_uuid": null, "src_path": null, "compress": "none", "start": true, "forthcoming": false,
            "commit": false, "tags": [], "instance_communication": false, "helper_startup_timeout": 300,
            "helper_shutdown_timeout": 7200
        }),
        "OP_INSTANCE_STARTUP" => json!({
            "force": false, "ignore_offline_nodes": false, "hvparams": {}, "beparams": {}, "no_remember": false,
            "startup_paused": false, "shutdown_timeout": 120
        }),
        "OP_INSTANCE_SHUTDOWN" => json!({
            "force": false, "ignore_offline_nodes": false, "timeout": 120, "no_remember": false,
            "admin_state_source": "admin"
        }),
        "OP_INSTANCE_REBOOT" => {
            json!({"shutdown_timeout": 120, "ignore_secondaries": false, "reboot_type": "hard"})
        }
        "OP_INSTANCE_REMOVE" => json!({"shutdown_timeout": 120, "ignore_failures": false}),
        "OP_INSTANCE_SET_PARAMS" => json!({
            "force": false, "force_variant": false, "ignore_ipolicy": false, "nics": [], "disks": [], "beparams": {},
            "hvparams": {}, "ext_params": {}, "osparams": {}, "wait_for_sync": true, "conflicts_check": true,
            "hotplug": false, "hotplug_if_possible": false
        }),
        "OP_NETWORK_ADD" => json!({"conflicts_check": true, "tags": []}),
        "OP_NETWORK_CONNECT" => json!({"network_vlan": "", "conflicts_check": true}),
        "OP_NETWORK_REMOVE" => json!({"force": false}),
        _ => json!({}),
    }
}

impl SimState {
    /// The log lines an op writes while running (after its prerequisites).
    pub(crate) fn logs_for(&self, op: &OpState) -> Vec<String> {
        match &op.params.kind {
            OpKind::Create(p) => create::logs(&op.params.instance, p),
            OpKind::Modify(p) => self.modify_logs(&op.params.instance, p),
            OpKind::NetworkAdd(p) => self.network_add_logs(p),
            _ => vec![],
        }
    }

    /// The op's prerequisites, like Ganeti's `CheckPrereq`: the log lines
    /// it writes on the way (kept even when a later check fails) and either
    /// the error (`["OpPrereqError", [msg, ecode]]`, or `OpExecError` for
    /// the OS parameter validation, as Ganeti raises it) or the NICs worked
    /// out for a create (all) or a modify (the added ones).
    pub(crate) fn prereq(&self, op: &OpState) -> (Vec<String>, Result<Option<Vec<SimNic>>, Value>) {
        let mut logs = Vec::new();
        let name = op.params.instance.as_str();
        let net = op.params.network.as_str();
        let r = match &op.params.kind {
            OpKind::Create(p) => self.create_prereq(name, p, &mut logs).map(Some),
            OpKind::NetworkAdd(p) => self.network_add_prereq(net, p).map(|_| None),
            OpKind::NetworkConnect(p) => {
                self.network_connect_prereq(net, p, &mut logs).map(|_| None)
            }
            OpKind::NetworkDisconnect(g) => self
                .network_disconnect_prereq(net, g, &mut logs)
                .map(|_| None),
            OpKind::NetworkRemove => self.network_remove_prereq(net, &mut logs).map(|_| None),
            _ if op.opcode.is_empty() => Ok(None),
            _ if !self.instances.contains_key(name) => Err(unknown_instance(name)),
            OpKind::Modify(p) => self.modify_prereq(name, p, &mut logs).map(Some),
            _ => Ok(None),
        };
        (logs, r)
    }

    /// Applies an op whose checks passed; returns its `opresult` or the
    /// error it fails with.
    pub(crate) fn apply(&mut self, op: &OpState) -> Result<Value, Value> {
        let name = op.params.instance.as_str();
        if op.params.dry_run {
            return Ok(match &op.params.kind {
                OpKind::Create(p) => json!([self.create_target(p)]),
                _ => Value::Null,
            });
        }
        match &op.params.kind {
            OpKind::Create(p) => Ok(self.create(name, p, op.nics.as_deref())),
            OpKind::Remove => self.remove(name),
            OpKind::Startup | OpKind::Reboot => self.power(name, true),
            OpKind::Shutdown => self.power(name, false),
            OpKind::Modify(p) => self.modify(name, p, op.nics.as_deref()),
            OpKind::NetworkAdd(p) => self.network_add(&op.params.network, p),
            OpKind::NetworkConnect(p) => self.network_connect(&op.params.network, p),
            OpKind::NetworkDisconnect(_) => self.network_disconnect(&op.params.network),
            OpKind::NetworkRemove => self.network_remove(&op.params.network),
            OpKind::Other => Err(json!([
                "OpExecError",
                [format!("Opcode {} is not simulated", op.opcode)]
            ])),
        }
    }
}
