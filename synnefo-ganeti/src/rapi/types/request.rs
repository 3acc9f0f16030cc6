//! The request bodies the client sends (create, shutdown, modify, wait).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One disk of a create request (`size` in MiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRequest {
    /// Size in MiB.
    pub size: u64,
    /// `rw` or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The disk's name, if it should have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One NIC of a create request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NicRequest {
    /// Fixed IP, or `pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `bridged`, `routed`, `openvswitch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Bridge / routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A Ganeti network (name or UUID): mode, link and pool come from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The NIC's name, if it should have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fixed MAC; Ganeti generates one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Backend parameters to set (`maxmem`/`minmem` in MiB).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BeParamsRequest {
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    /// Maximum memory in MiB (what the instance gets when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmem: Option<u64>,
    /// Minimum memory in MiB (ballooning floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minmem: Option<u64>,
}

/// OS parameters whose values never show in `Debug` output (logs).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretOsParams(pub BTreeMap<String, String>);

impl SecretOsParams {
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretOsParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "********")))
            .finish()
    }
}

/// The `POST /2/instances` body, request version 1 (`OP_INSTANCE_CREATE`
/// parameters plus `__version__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateInstanceRequest {
    /// Always 1.
    #[serde(rename = "__version__")]
    pub version: u8,
    /// `create` (or `import`, `remote-import`).
    pub mode: String,
    /// The new instance's name (Synnefo's `snf-<id>`).
    pub instance_name: String,
    /// How disks are stored (`diskless`, `plain`, `drbd`, `file`, `ext`, ...).
    pub disk_template: String,
    /// The disks, in index order (may be empty for `diskless`).
    pub disks: Vec<DiskRequest>,
    /// The NICs, in index order.
    pub nics: Vec<NicRequest>,
    /// OS (`snf-image+default`).
    pub os_type: String,
    /// OS parameters the OS scripts see (and the job file shows).
    #[serde(default)]
    pub osparams: BTreeMap<String, String>,
    /// OS parameters Ganeti passes to the OS but never stores.
    #[serde(default, skip_serializing_if = "SecretOsParams::is_empty")]
    pub osparams_secret: SecretOsParams,
    /// Memory and CPUs.
    #[serde(default)]
    pub beparams: BeParamsRequest,
    /// Hypervisor parameters overriding the cluster's (`kernel_path`, ...).
    #[serde(default)]
    pub hvparams: BTreeMap<String, Value>,
    /// Hypervisor (the cluster default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// Primary node (mutually exclusive with `iallocator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnode: Option<String>,
    /// Instance allocator (`hail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iallocator: Option<String>,
    /// Check the IP is not in use.
    pub ip_check: bool,
    /// Check the name resolves.
    pub name_check: bool,
    /// Check IP conflicts within the network.
    pub conflicts_check: bool,
    /// Start after creation.
    pub start: bool,
    /// Ganeti tags to set on the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The `PUT /2/instances/NAME/shutdown` body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// Seconds to wait for a clean shutdown before killing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// The `PUT /2/instances/NAME/modify` body (`OP_INSTANCE_SET_PARAMS`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModifyInstanceRequest {
    /// Backend parameters to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beparams: Option<BeParamsRequest>,
    /// Hypervisor parameters to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hvparams: Option<BTreeMap<String, Value>>,
    /// OS parameters to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osparams: Option<BTreeMap<String, String>>,
    /// NIC modifications (`[["add", {...}], [0, {...}], ["remove", {}]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<Vec<Value>>,
    /// Disk modifications, in Ganeti's `[[action, index, params]]` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Value>>,
    /// Skip safety checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Hot-plug NIC/disk changes, failing the job where the hypervisor
    /// cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug: Option<bool>,
    /// Hot-plug where the hypervisor can (KVM, running instance), else
    /// apply at the next restart with a warning in the job log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_if_possible: Option<bool>,
    /// Refuse addresses already in use in the network (Ganeti: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts_check: Option<bool>,
}

/// The `POST /2/instances/NAME/reinstall` body, version 1 (Ganeti's
/// `instance-reinstall-reqv1` feature): Ganeti 3.0 reads `os`, `start` and
/// `osparams` only, and submits `OP_INSTANCE_SHUTDOWN`,
/// `OP_INSTANCE_REINSTALL` and, when `start`, `OP_INSTANCE_STARTUP` as one
/// job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReinstallRequest {
    /// The OS definition to install (the instance's own when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Start the instance afterwards (Ganeti's default: true).
    pub start: bool,
    /// OS parameters (they replace the instance's stored ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osparams: Option<BTreeMap<String, String>>,
}

/// The `POST /2/networks` body (`OP_NETWORK_ADD`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    /// The new network's name.
    pub network_name: String,
    /// IPv4 subnet in CIDR notation (required by Ganeti).
    pub network: String,
    /// IPv4 gateway (reserved in the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network6: Option<String>,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// MAC prefix (three octets) for the NICs Ganeti generates on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_prefix: Option<String>,
    /// Addresses to reserve in the pool (never given to NICs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_reserved_ips: Vec<String>,
    /// Ganeti tags to set on the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Reserve the node and master addresses that fall in the subnet.
    pub conflicts_check: bool,
}

/// The `PUT /2/networks/NAME/connect` body (`OP_NETWORK_CONNECT`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectNetworkRequest {
    /// The node group to connect.
    pub group_name: String,
    /// `bridged`, `routed` or `openvswitch`.
    pub network_mode: String,
    /// Bridge, routing table or switch.
    pub network_link: String,
    /// VLAN (`""`: none).
    pub network_vlan: String,
    /// Refuse when instances of the group hold addresses of the subnet.
    pub conflicts_check: bool,
}

/// The `PUT /2/networks/NAME/disconnect` body (`OP_NETWORK_DISCONNECT`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DisconnectNetworkRequest {
    /// The node group to disconnect.
    pub group_name: String,
}

/// The `GET /2/jobs/ID/wait` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WaitForJobRequest {
    /// Job fields to watch (`status`, `opstatus`, ...).
    pub fields: Vec<String>,
    /// Values seen last time (same order as `fields`), or null.
    pub previous_job_info: Option<Vec<Value>>,
    /// Highest log serial seen, or null.
    pub previous_log_serial: Option<u64>,
}
