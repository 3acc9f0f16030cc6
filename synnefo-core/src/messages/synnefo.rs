//! The parts of Synnefo's eventd messages beyond the op-status core: the
//! instance's NICs, disks and hypervisor parameters as Ganeti reports them,
//! and the network and cluster messages. Field names and shapes are those
//! of Synnefo 0.16-0.20's `snf-cyclades-gtools/synnefo/ganeti/eventd.py`
//! (see `docs/eventd.md`, "What Synnefo's producers publish"), so either
//! side can be ours.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One NIC of `instance_nics`, as Synnefo's eventd reports it from Ganeti's
/// instance query (`nic.names`, `nic.networks.names`, `nic.ips`,
/// `nic.macs`, `nic.modes`, `nic.links`, `nic.uuids`): every key present,
/// `null` where Ganeti has nothing; Synnefo's dispatcher matches NICs by
/// `name` (`<prefix>nic-<id>`) and networks by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceNic {
    /// Ganeti's NIC name (`snf-nic-<port>` for NICs we made).
    #[serde(default)]
    pub name: Option<String>,
    /// The Ganeti network's **name** (not its UUID), if the NIC is on one.
    #[serde(default)]
    pub network: Option<String>,
    /// IPv4 address.
    #[serde(default)]
    pub ip: Option<String>,
    /// MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// `bridged`, `routed`, `openvswitch` (the cluster default filled in).
    #[serde(default)]
    pub mode: Option<String>,
    /// Bridge or routing table (filled in likewise).
    #[serde(default)]
    pub link: Option<String>,
    /// Ganeti's NIC UUID.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Firewall profile from the instance tag
    /// `synnefo:network:<nic name>:<profile>`; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<String>,
    /// Position on the instance: only in what Synnefo's eventd reads off
    /// the master (from `config.data`); absent on the master's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// One disk of `instance_disks` (`disk.names`, `disk.sizes`, `disk.uuids`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceDisk {
    /// Ganeti's disk name (Synnefo names them `<prefix>vol-<id>`), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Size in MiB.
    #[serde(default)]
    pub size: Option<u64>,
    /// Ganeti's disk UUID.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Position (only off the master, as for [`InstanceNic::index`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// `instance_hvparams`: the two (filled) hypervisor parameters Synnefo's
/// dispatcher reads to tell rescue mode (`cdrom_image_path` set and
/// `boot_order` starting with `cdrom`). KVM parameters: `null` on a
/// hypervisor without them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceHvParams {
    /// `hv/boot_order` (`disk`, `cdrom`, ...).
    #[serde(default)]
    pub boot_order: Option<String>,
    /// `hv/cdrom_image_path`.
    #[serde(default)]
    pub cdrom_image_path: Option<String>,
}

/// `job_fields` of a `ganeti-network-status` message: the opcode's input
/// under Synnefo's names, each `null` when the opcode has no such input.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkJobFields {
    /// The IPv4 subnet (the input's `network`).
    #[serde(default)]
    pub subnet: Option<String>,
    /// The IPv4 gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Addresses to reserve (`OP_NETWORK_ADD`, `OP_NETWORK_SET_PARAMS`).
    #[serde(default)]
    pub add_reserved_ips: Option<Vec<String>>,
    /// Addresses to release (`OP_NETWORK_SET_PARAMS`).
    #[serde(default)]
    pub remove_reserved_ips: Option<Vec<String>>,
    /// Node group (`OP_NETWORK_CONNECT`/`DISCONNECT`).
    #[serde(default)]
    pub group_name: Option<String>,
}

/// `ganeti-network-status`: one `OP_NETWORK_*` opcode of a job changed
/// status (Synnefo's eventd; routing key `ganeti.<prefix>.event.network`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatusMessage {
    /// Always `ganeti-network-status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The Ganeti network's name (`snf-net-<id>`).
    pub network: String,
    /// Ganeti `OP_ID`.
    pub operation: String,
    /// Job id.
    #[serde(rename = "jobId")]
    pub job_id: u64,
    /// Opcode status.
    pub status: String,
    /// Last log line (or null).
    #[serde(default)]
    pub logmsg: Option<String>,
    /// The opcode's result (or null).
    #[serde(default)]
    pub result: Value,
    /// `[seconds, microseconds]` of the status change.
    pub event_time: (i64, i64),
    /// Cluster name.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The opcode's input.
    #[serde(default)]
    pub job_fields: NetworkJobFields,
    /// Index of the opcode within its job (ours; absent from Synnefo's).
    #[serde(default)]
    pub op_index: u32,
}

/// `ganeti-cluster-status`: an `OP_CLUSTER_SET_PARAMS` changed status
/// (Synnefo's eventd; routing key `ganeti.event.cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatusMessage {
    /// Always `ganeti-cluster-status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Ganeti `OP_ID` (`OP_CLUSTER_SET_PARAMS`).
    pub operation: String,
    /// Job id.
    #[serde(rename = "jobId")]
    pub job_id: u64,
    /// Opcode status.
    pub status: String,
    /// Last log line (or null).
    #[serde(default)]
    pub logmsg: Option<String>,
    /// The opcode's result (or null).
    #[serde(default)]
    pub result: Value,
    /// `[seconds, microseconds]` of the status change.
    pub event_time: (i64, i64),
    /// Cluster name (Synnefo's dispatcher ignores the message without it).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Index of the opcode within its job (ours).
    #[serde(default)]
    pub op_index: u32,
}

/// One of snf-image's monitor messages as Synnefo's `snf-progress-monitor`
/// publishes it (routing key `ganeti.<prefix>.event.progress`): snf-image's
/// own JSON object (`type`, `timestamp` and the type's fields, see
/// snf-image's "Progress Monitoring Interface") with the monitor's
/// `instance` and `event_time` added. Fields no snf-image sends are kept
/// in [`ProgressMessage::extra`], so a message read and written again is
/// the same message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressMessage {
    /// `image-copy-progress`, `image-info`, `image-error`, `image-helper`
    /// (`image-warning` too, which Synnefo's dispatcher reads).
    #[serde(rename = "type")]
    pub kind: String,
    /// The instance (`snf-42`): the monitor's only argument.
    pub instance: String,
    /// `[seconds, microseconds]` when the monitor read the message.
    pub event_time: (i64, i64),
    /// snf-image's own time of the message (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// `image-copy-progress`: percent of the image copied (may exceed
    /// 100: snf-image counts what the image handlers read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// `image-copy-progress`: bytes written so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// `image-copy-progress`: the image's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// `image-info`, `image-error`, `image-helper` warnings and errors:
    /// the message lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<String>>,
    /// `image-error` and helper `error`: the last lines of the failing
    /// program's standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// `image-helper`: `task-start`, `task-end`, `warning`, `error`
    /// (`info` too, which Synnefo's dispatcher reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// `image-helper` `task-start`/`task-end`: the configuration task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Anything else the message carried.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}
