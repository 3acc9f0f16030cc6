//! The simulated cluster as data: nodes, instances, and [`SimState`],
//! which holds them with the networks and the job queue.
//!
//! Everything in the simulator is synchronous and runs under one mutex;
//! the HTTP layer and the driver task only lock, call, unlock. How the
//! state is shown (RAPI JSON), how jobs move ([`crate::jobs`]) and what
//! each opcode does ([`crate::ops`]) live in their own modules, all as
//! `impl SimState` blocks over this one struct.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use synnefo_ganeti::rapi::types::Timestamp;

use crate::config::{SimConfig, SimLatency, SimNodeConfig};
use crate::jobs::{FailureRule, Job};
use crate::networks::NetState;
use crate::queue::QueueFiles;

/// Now, as Ganeti's float timestamps (`ctime`, `mtime`).
pub(crate) fn now_f64() -> f64 {
    let t = Timestamp::now();
    t.secs as f64 + t.usecs as f64 / 1e6
}

/// A node: its configuration (offline and drained flags change at run
/// time) and what Ganeti generates for it.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    /// The node as configured, with its current flags.
    pub cfg: SimNodeConfig,
    /// Primary address (configured, else `192.0.2.10 + index`).
    pub ip: String,
    /// Node UUID, generated at start.
    pub uuid: String,
    /// The UUID of the one node group.
    pub group_uuid: String,
    /// Creation time (the simulator's start).
    pub ctime: f64,
}

/// One NIC of a simulated instance, as Ganeti's `nic.*` fields show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimNic {
    /// IPv4 address, if the NIC has one (a pool address for `ip: pool`).
    pub ip: Option<String>,
    /// MAC address (`aa:00:00:..`, generated unless the request gave one).
    pub mac: String,
    /// `bridged`, `routed`, `openvswitch`.
    pub mode: String,
    /// The bridge (bridged) or routing table (routed) the NIC attaches to.
    pub link: String,
    /// Ganeti network name (`nic.networks.names`).
    pub network: Option<String>,
    /// Ganeti network UUID (`nic.networks`).
    #[serde(default)]
    pub network_uuid: Option<String>,
    /// The name given at creation, if any.
    pub name: Option<String>,
    /// NIC UUID, generated when the NIC is added.
    pub uuid: String,
    /// VLAN, as Ganeti records it for NICs added by a modify (`""`).
    #[serde(default)]
    pub vlan: Option<String>,
}

/// One disk of a simulated instance (only its size is modelled; no
/// storage is allocated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDisk {
    /// Size in MiB, as requested.
    pub size: u64,
    /// Disk UUID, generated at creation.
    pub uuid: String,
    /// The name given at creation, if any.
    pub name: Option<String>,
}

/// A snapshot of a simulated instance, as [`crate::SimHandle::instance`]
/// returns it; the RAPI views render it with Ganeti's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimInstance {
    /// Instance name (Synnefo's `snf-<id>`), the key of the cluster's map.
    pub name: String,
    /// Instance UUID, generated at creation.
    pub uuid: String,
    /// The OS as `name+variant` (`noop+default` unless given).
    pub os: String,
    /// The primary node's name.
    pub pnode: String,
    /// `diskless`, `plain`, `drbd`, ... (recorded, not simulated).
    pub disk_template: String,
    /// `admin_state == "up"`: what the administrator asked for.
    pub admin_up: bool,
    /// `oper_state`: whether the guest actually runs.
    pub running: bool,
    /// The NICs, in Ganeti's index order.
    pub nics: Vec<SimNic>,
    /// The disks, in index order.
    pub disks: Vec<SimDisk>,
    /// Virtual CPUs (`beparams.vcpus`).
    pub vcpus: u64,
    /// Maximum memory in MiB (`beparams.maxmem`); what a running
    /// instance takes from its node.
    pub maxmem: u64,
    /// Minimum memory in MiB (`beparams.minmem`).
    pub minmem: u64,
    /// Hypervisor parameters set on the instance.
    pub hvparams: Map<String, Value>,
    /// OS parameters.
    pub osparams: BTreeMap<String, Value>,
    /// `kvm` or `fake` (the cluster default unless the create named one).
    pub hypervisor: String,
    /// The VNC port on the primary node (KVM only), from `vnc_port_base` up.
    pub network_port: Option<u64>,
    /// Creation time (seconds since the epoch).
    pub ctime: f64,
    /// Last modification time (seconds since the epoch).
    pub mtime: f64,
    /// Ganeti's config serial, bumped on every change.
    pub serial_no: u64,
    /// Ganeti tags.
    pub tags: Vec<String>,
}

impl SimInstance {
    /// Ganeti's `status` field from the admin and operational states:
    /// `running`, `ADMIN_down`, `ERROR_down` (crashed) or `ERROR_up`.
    pub fn status(&self) -> &'static str {
        match (self.admin_up, self.running) {
            (true, true) => "running",
            (false, false) => "ADMIN_down",
            (true, false) => "ERROR_down",
            (false, true) => "ERROR_up",
        }
    }

    /// Records a change: new `mtime`, next `serial_no`.
    pub(crate) fn touch(&mut self) {
        self.mtime = now_f64();
        self.serial_no += 1;
    }
}

/// An instance to add without a job, as [`crate::SimHandle::add_instance_directly`]
/// and the populate setting create them (bridged NICs on `br0`, no disks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewSimInstance {
    /// Instance name; an existing instance of that name is replaced.
    pub name: String,
    /// Primary node (default: the first node).
    pub pnode: Option<String>,
    /// Memory in MiB (both `maxmem` and `minmem`; default 128).
    pub memory_mib: u64,
    /// Virtual CPUs (default 1).
    pub vcpus: u64,
    /// Running and admin up (the default), else `ADMIN_down`.
    pub running: bool,
    /// The OS as `name+variant` (default `noop+default`).
    pub os: String,
    /// Disk template (default `diskless`).
    pub disk_template: String,
    /// One NIC per entry, with this address (default: one NIC, no address).
    pub nic_ips: Vec<Option<String>>,
    /// Ganeti tags.
    pub tags: Vec<String>,
}

impl Default for NewSimInstance {
    fn default() -> Self {
        Self {
            name: String::new(),
            pnode: None,
            memory_mib: 128,
            vcpus: 1,
            running: true,
            os: "noop+default".into(),
            disk_template: "diskless".into(),
            nic_ips: vec![None],
            tags: vec![],
        }
    }
}

/// The whole simulated cluster, behind the simulator's one mutex.
#[derive(Debug)]
pub(crate) struct SimState {
    /// The configuration it started with.
    pub cfg: SimConfig,
    /// Job latency now (changeable at run time).
    pub latency: SimLatency,
    /// Jobs advance only when a test steps them.
    pub single_step: bool,
    /// Cluster UUID, generated at start.
    pub cluster_uuid: String,
    /// Cluster creation time (the simulator's start).
    pub ctime: f64,
    /// The nodes; the first one is the master.
    pub nodes: Vec<NodeState>,
    /// The networks and their address pools.
    pub networks: Vec<NetState>,
    /// Instances by name.
    pub instances: BTreeMap<String, SimInstance>,
    /// Every job not yet forgotten, by id (archived ones included).
    pub jobs: BTreeMap<u64, Job>,
    /// The last job id handed out (continues `queue/serial`).
    pub last_job_id: u64,
    /// Injected failures, matched in order against new jobs.
    pub failures: Vec<FailureRule>,
    /// The queue directory writer, when job files are written.
    pub queue: Option<QueueFiles>,
    /// The next VNC port to hand out.
    pub next_port: u64,
    /// How many MACs were generated (MACs derive from it).
    pub mac_counter: u64,
    /// Bumped on every job change (wakes `/wait` long polls).
    pub generation: u64,
    /// snf-image monitor messages emitted and not yet handed to the
    /// progress monitor: `(instance, message)`.
    pub progress_out: Vec<(String, serde_json::Value)>,
}

impl SimState {
    /// A cluster from its configuration: nodes, networks, populated
    /// instances; job ids continue from the queue's `serial`.
    pub(crate) fn new(cfg: SimConfig, queue: Option<QueueFiles>) -> Self {
        let ctime = now_f64();
        let group_uuid = uuid::Uuid::new_v4().to_string();
        let nodes: Vec<NodeState> = cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeState {
                cfg: n.clone(),
                ip: n
                    .ip
                    .clone()
                    .unwrap_or_else(|| format!("192.0.2.{}", 10 + i)),
                uuid: uuid::Uuid::new_v4().to_string(),
                group_uuid: group_uuid.clone(),
                ctime,
            })
            .collect();
        let node_ips: Vec<String> = nodes.iter().map(|n| n.ip.clone()).collect();
        let networks = cfg
            .networks
            .iter()
            .filter_map(|n| NetState::new(n, &node_ips))
            .collect();
        let last_job_id = queue.as_ref().map(QueueFiles::read_serial).unwrap_or(0);
        let mut s = Self {
            latency: cfg.latency,
            single_step: cfg.single_step,
            next_port: u64::from(cfg.vnc_port_base),
            cfg,
            cluster_uuid: uuid::Uuid::new_v4().to_string(),
            ctime,
            nodes,
            networks,
            instances: BTreeMap::new(),
            jobs: BTreeMap::new(),
            last_job_id,
            failures: Vec::new(),
            queue,
            mac_counter: 0,
            generation: 0,
            progress_out: Vec::new(),
        };
        if let Some(p) = s.cfg.populate.clone() {
            for n in p.first..p.first + p.count {
                let spec = NewSimInstance {
                    name: format!("{}{n}", p.prefix),
                    memory_mib: p.memory_mib,
                    vcpus: p.vcpus,
                    pnode: s
                        .nodes
                        .get((n as usize) % s.nodes.len().max(1))
                        .map(|n| n.cfg.name.clone()),
                    ..Default::default()
                };
                s.add_instance(&spec);
            }
        }
        s
    }

    /// The master node's name (the first node).
    pub(crate) fn master(&self) -> String {
        self.nodes
            .first()
            .map(|n| n.cfg.name.clone())
            .unwrap_or_else(|| "node1.sim".into())
    }

    /// A new MAC in Ganeti's `aa:00:00` prefix, spread over the counter.
    pub(crate) fn new_mac(&mut self) -> String {
        self.new_mac_on(None)
    }

    /// A new MAC for a NIC on this network (by name or UUID): the
    /// network's MAC prefix if it has one (Ganeti's `GenerateMAC`), else
    /// the cluster's `aa:00:00`.
    pub(crate) fn new_mac_on(&mut self, network: Option<&str>) -> String {
        let prefix = network
            .and_then(|n| self.network(n))
            .and_then(|n| n.mac_prefix.clone())
            .unwrap_or_else(|| "aa:00:00".into());
        self.mac_counter += 1;
        let x = self.mac_counter.wrapping_mul(0x9E37_79B9) & 0xff_ffff;
        format!(
            "{prefix}:{:02x}:{:02x}:{:02x}",
            (x >> 16) & 0xff,
            (x >> 8) & 0xff,
            x & 0xff
        )
    }

    /// The next VNC port for a KVM instance; none for other hypervisors.
    pub(crate) fn new_port(&mut self, hypervisor: &str) -> Option<u64> {
        (hypervisor == "kvm").then(|| {
            let p = self.next_port;
            self.next_port += 1;
            p
        })
    }

    /// Adds an instance without a job (behind Ganeti's back, or populate).
    pub(crate) fn add_instance(&mut self, spec: &NewSimInstance) {
        let pnode = spec.pnode.clone().unwrap_or_else(|| self.master());
        let hypervisor = self.cfg.hypervisor.clone();
        let now = now_f64();
        let nics = spec
            .nic_ips
            .iter()
            .map(|ip| SimNic {
                ip: ip.clone(),
                mac: self.new_mac(),
                mode: "bridged".into(),
                link: "br0".into(),
                network: None,
                network_uuid: None,
                name: None,
                uuid: uuid::Uuid::new_v4().to_string(),
                vlan: None,
            })
            .collect();
        let inst = SimInstance {
            name: spec.name.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            os: spec.os.clone(),
            pnode,
            disk_template: spec.disk_template.clone(),
            admin_up: spec.running,
            running: spec.running,
            nics,
            disks: vec![],
            vcpus: spec.vcpus,
            maxmem: spec.memory_mib,
            minmem: spec.memory_mib,
            hvparams: Map::new(),
            osparams: BTreeMap::new(),
            network_port: self.new_port(&hypervisor),
            hypervisor,
            ctime: now,
            mtime: now,
            serial_no: 1,
            tags: spec.tags.clone(),
        };
        self.instances.insert(inst.name.clone(), inst);
    }

    /// Per node name: memory in use by running instances (MiB) and the
    /// number of primary instances.
    pub(crate) fn used_memory(&self) -> BTreeMap<&str, (u64, u64)> {
        let mut m: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for i in self.instances.values() {
            let e = m.entry(i.pnode.as_str()).or_default();
            e.1 += 1;
            if i.running {
                e.0 += i.maxmem;
            }
        }
        m
    }

    /// A node's free memory given `used` MiB of running instances.
    pub(crate) fn node_free(&self, node: &NodeState, used: u64) -> u64 {
        node.cfg
            .memory_mib
            .saturating_sub(node.cfg.node_memory_mib)
            .saturating_sub(used)
    }
}
