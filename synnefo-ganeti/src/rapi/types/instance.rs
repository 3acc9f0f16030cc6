//! Instances (`GET /2/instances`, `GET /2/instances/NAME`) and their
//! console (`GET /2/instances/NAME/console`).

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use synnefo_core::model::Nic;
use synnefo_core::ports::{ConsoleInfo, InstanceInfo};

use super::*;

/// Backend parameters as Ganeti reports them (filled with cluster defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BeParams {
    /// Virtual CPUs.
    pub vcpus: Option<u64>,
    /// Maximum memory (MiB).
    pub maxmem: Option<u64>,
    /// Minimum memory (MiB).
    pub minmem: Option<u64>,
    /// Legacy alias of `maxmem` that RAPI still adds.
    pub memory: Option<u64>,
    /// Rebalance on failover.
    pub auto_balance: Option<bool>,
    /// Always fail over instead of migrating.
    pub always_failover: Option<bool>,
    /// Spindles the instance counts for in the instance policy.
    pub spindle_use: Option<u64>,
}

/// `admin_state` accepts Ganeti 3.0's `"up"`/`"down"`/`"offline"` and
/// the old boolean.
fn admin_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Bool(true)) => Some("up".into()),
        Some(Value::Bool(false)) => Some("down".into()),
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(de::Error::custom(format!("invalid admin_state {other}"))),
    })
}

/// One instance of `GET /2/instances?bulk=1` or `GET /2/instances/NAME`
/// (Ganeti's `I_FIELDS`). Everything but the name is optional, so the
/// same type decodes a `fields`-restricted listing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    /// The instance's name (Synnefo's `snf-<id>`); the only field always present.
    pub name: String,
    /// `up`, `down` or `offline`.
    #[serde(deserialize_with = "admin_state")]
    pub admin_state: Option<String>,
    /// OS (`noop+default`).
    pub os: Option<String>,
    /// The node the instance runs on.
    pub pnode: Option<String>,
    /// DRBD secondaries (empty for other templates).
    #[serde(deserialize_with = "null_default")]
    pub snodes: Vec<String>,
    /// How disks are stored: `diskless`, `plain`, `drbd`, `file`, `ext`, ...
    pub disk_template: Option<String>,
    /// Per NIC, its IPv4 address if any.
    #[serde(rename = "nic.ips", deserialize_with = "null_default")]
    pub nic_ips: Vec<Option<String>>,
    /// Per NIC, its MAC address.
    #[serde(rename = "nic.macs", deserialize_with = "null_default")]
    pub nic_macs: Vec<Option<String>>,
    /// Per NIC, `bridged`, `routed` or `openvswitch`.
    #[serde(rename = "nic.modes", deserialize_with = "null_default")]
    pub nic_modes: Vec<Option<String>>,
    /// Per NIC, its UUID.
    #[serde(rename = "nic.uuids", deserialize_with = "null_default")]
    pub nic_uuids: Vec<Option<String>>,
    /// Per NIC, its name if it has one.
    #[serde(rename = "nic.names", deserialize_with = "null_default")]
    pub nic_names: Vec<Option<String>>,
    /// Per NIC, its bridge or routing table.
    #[serde(rename = "nic.links", deserialize_with = "null_default")]
    pub nic_links: Vec<Option<String>>,
    /// NIC network UUIDs.
    #[serde(rename = "nic.networks", deserialize_with = "null_default")]
    pub nic_networks: Vec<Option<String>>,
    /// NIC network names.
    #[serde(rename = "nic.networks.names", deserialize_with = "null_default")]
    pub nic_network_names: Vec<Option<String>>,
    /// NIC bridges (bridged mode).
    #[serde(rename = "nic.bridges", deserialize_with = "null_default")]
    pub nic_bridges: Vec<Option<String>>,
    /// Hypervisor network port (the VNC port on KVM).
    pub network_port: Option<u64>,
    /// Disk sizes (MiB).
    #[serde(rename = "disk.sizes", deserialize_with = "null_default")]
    pub disk_sizes: Vec<Option<u64>>,
    /// Per disk, its spindles (null outside exclusive storage).
    #[serde(rename = "disk.spindles", deserialize_with = "null_default")]
    pub disk_spindles: Vec<Option<u64>>,
    /// Disk space used (MiB).
    pub disk_usage: Option<u64>,
    /// Per disk, its UUID.
    #[serde(rename = "disk.uuids", deserialize_with = "null_default")]
    pub disk_uuids: Vec<Option<String>>,
    /// Per disk, its name if it has one.
    #[serde(rename = "disk.names", deserialize_with = "null_default")]
    pub disk_names: Vec<Option<String>>,
    /// Backend parameters (filled).
    #[serde(deserialize_with = "null_default")]
    pub beparams: BeParams,
    /// Hypervisor parameters (filled).
    #[serde(deserialize_with = "null_default")]
    pub hvparams: Map<String, Value>,
    /// Whether the guest actually runs (`oper_state`), whatever `admin_state` says.
    pub oper_state: Option<bool>,
    /// Memory in use (MiB), when running.
    pub oper_ram: Option<u64>,
    /// vCPUs in use, when running.
    pub oper_vcpus: Option<u64>,
    /// `running`, `ADMIN_down`, `ERROR_down`, ...
    pub status: Option<String>,
    /// Hypervisor parameters set on the instance itself.
    #[serde(deserialize_with = "null_default")]
    pub custom_hvparams: Map<String, Value>,
    /// Backend parameters set on the instance itself.
    #[serde(deserialize_with = "null_default")]
    pub custom_beparams: Map<String, Value>,
    /// NIC parameters set on the instance itself.
    #[serde(deserialize_with = "null_default")]
    pub custom_nicparams: Vec<Map<String, Value>>,
    /// When the instance was created (seconds since the epoch).
    pub ctime: Option<f64>,
    /// When its configuration last changed (seconds since the epoch).
    pub mtime: Option<f64>,
    /// The instance's UUID.
    pub uuid: Option<String>,
    /// Configuration serial, bumped on every change to the instance.
    pub serial_no: Option<u64>,
    /// Ganeti tags on the instance.
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
}

impl Instance {
    /// The NICs, zipped from the `nic.*` lists.
    pub fn nics(&self) -> Vec<Nic> {
        let at = |v: &Vec<Option<String>>, i: usize| v.get(i).cloned().flatten();
        let n = self
            .nic_macs
            .len()
            .max(self.nic_ips.len())
            .max(self.nic_modes.len())
            .max(self.nic_links.len());
        (0..n)
            .map(|i| Nic {
                index: i as i32,
                ip: at(&self.nic_ips, i),
                mac: at(&self.nic_macs, i),
                network: at(&self.nic_network_names, i).or_else(|| at(&self.nic_networks, i)),
                link: at(&self.nic_links, i),
                mode: at(&self.nic_modes, i),
            })
            .collect()
    }

    /// The core's view of this instance.
    pub fn to_info(&self) -> InstanceInfo {
        InstanceInfo {
            name: self.name.clone(),
            admin_up: self.admin_state.as_deref() == Some("up"),
            running: self.oper_state.unwrap_or(false),
            status: self.status.clone().unwrap_or_default(),
            vcpus: self.beparams.vcpus.and_then(|v| i32::try_from(v).ok()),
            ram_mib: self
                .beparams
                .maxmem
                .or(self.beparams.memory)
                .and_then(|v| i32::try_from(v).ok()),
            nics: self.nics(),
            nic_names: self.nic_names.clone(),
            pnode: self.pnode.clone(),
            disk_template: self.disk_template.clone(),
            tags: self.tags.clone(),
            mtime: self.mtime,
        }
    }
}

/// `GET /2/instances/NAME/console`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceConsole {
    /// The instance (name, or its serialised config in some versions).
    pub instance: Option<Value>,
    /// `vnc`, `spice`, `ssh` or `msg`.
    pub kind: String,
    /// Host to connect to.
    pub host: Option<String>,
    /// The console's TCP port on `host` (VNC: 5900 + display).
    pub port: Option<u16>,
    /// The user to log in as (`kind: ssh`).
    pub user: Option<String>,
    /// The command to run on the node (`kind: ssh`, Xen consoles).
    pub command: Option<Value>,
    /// VNC display number.
    pub display: Option<u64>,
    /// Message (`msg` kind).
    pub message: Option<String>,
}

impl InstanceConsole {
    /// The core's view.
    pub fn to_console_info(&self) -> ConsoleInfo {
        ConsoleInfo {
            kind: self.kind.clone(),
            host: self.host.clone(),
            port: self.port,
            message: self.message.clone(),
        }
    }
}
