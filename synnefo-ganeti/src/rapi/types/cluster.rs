//! `GET /2/info` and `GET /2/nodes?bulk=1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::*;

/// `GET /2/info`: the fields we use, the rest kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster's name (its DNS name, as `gnt-cluster init` gave it).
    pub name: String,
    /// Current master node.
    pub master: String,
    /// Ganeti version (`3.0.2`).
    pub software_version: String,
    /// Protocol version.
    #[serde(default)]
    pub protocol_version: Option<u64>,
    /// Hypervisor used when a create does not name one.
    #[serde(default)]
    pub default_hypervisor: Option<String>,
    /// Hypervisors enabled on the cluster (`kvm`, `xen-pvm`, `fake`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub enabled_hypervisors: Vec<String>,
    /// Enabled disk templates.
    #[serde(default, deserialize_with = "null_default")]
    pub enabled_disk_templates: Vec<String>,
    /// Cluster-wide backend parameters (`{"default": {...}}`).
    #[serde(default, deserialize_with = "null_default")]
    pub beparams: BTreeMap<String, Map<String, Value>>,
    /// The cluster's UUID; stable across renames.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Everything else Ganeti reports (hvparams, ipolicy, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One node of `GET /2/nodes?bulk=1` (Ganeti's `N_FIELDS`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeInfo {
    /// The node's name (its DNS name).
    pub name: String,
    /// Offline (unreachable, no instances run there).
    #[serde(deserialize_with = "null_default")]
    pub offline: bool,
    /// Drained (no new instances).
    #[serde(deserialize_with = "null_default")]
    pub drained: bool,
    /// Holds a copy of the cluster configuration and may become master.
    #[serde(deserialize_with = "null_default")]
    pub master_candidate: bool,
    /// May become master.
    pub master_capable: Option<bool>,
    /// May host instances.
    pub vm_capable: Option<bool>,
    /// Role letter (`M`, `C`, `R`, `D`, `O`).
    pub role: Option<String>,
    /// Total memory (MiB); null when the node does not answer.
    pub mtotal: Option<u64>,
    /// Memory used by the node itself (MiB).
    pub mnode: Option<u64>,
    /// Free memory (MiB).
    pub mfree: Option<u64>,
    /// Total disk (MiB).
    pub dtotal: Option<u64>,
    /// Free disk (MiB).
    pub dfree: Option<u64>,
    /// Spindles in total (exclusive storage; null elsewhere).
    pub sptotal: Option<u64>,
    /// Spindles not used by instances.
    pub spfree: Option<u64>,
    /// Physical CPUs the node reports.
    pub ctotal: Option<u64>,
    /// CPUs used by the node OS.
    pub cnos: Option<u64>,
    /// NUMA nodes the node reports.
    pub cnodes: Option<u64>,
    /// CPU sockets the node reports.
    pub csockets: Option<u64>,
    /// Instances with this node as primary.
    pub pinst_cnt: Option<u64>,
    /// Instances with this node as secondary.
    pub sinst_cnt: Option<u64>,
    /// Names of the primary instances.
    #[serde(deserialize_with = "null_default")]
    pub pinst_list: Vec<String>,
    /// Names of the secondary instances.
    #[serde(deserialize_with = "null_default")]
    pub sinst_list: Vec<String>,
    /// Primary IP: the address the cluster reaches the node on.
    pub pip: Option<String>,
    /// Secondary IP: the replication network (DRBD); the primary if none.
    pub sip: Option<String>,
    /// Node parameters (`ndparams`: OOB program, OVS settings, SSH port, ...).
    pub ndparams: Option<Value>,
    /// Node group UUID.
    #[serde(rename = "group.uuid")]
    pub group_uuid: Option<String>,
    /// When the node joined (seconds since the epoch).
    pub ctime: Option<f64>,
    /// When the node's configuration last changed (seconds since the epoch).
    pub mtime: Option<f64>,
    /// The node's UUID.
    pub uuid: Option<String>,
    /// Configuration serial, bumped on every change to the node.
    pub serial_no: Option<u64>,
    /// Ganeti tags on the node.
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
}
