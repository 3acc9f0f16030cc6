//! The simulated cluster: nodes, instances, the job queue and its engine.
//!
//! Everything here is synchronous and runs under one mutex; the HTTP layer
//! and the driver task only lock, call, unlock. A job advances one status
//! per [`SimState::advance`] call: queued -> waiting -> running (one more
//! call per log line) -> success/error, like the versions Ganeti writes.
//! Jobs touching the same instance run in id order (Ganeti's instance
//! lock): a later job stays `waiting` until the earlier ones end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use synnefo_core::state::JobStatus;

use super::config::{SimConfig, SimLatency, SimNetworkConfig, SimNodeConfig, SimOsConfig};
use super::json::to_py_vec;
use super::queue::QueueFiles;
use crate::rapi::types::{LogEntry, Timestamp};

fn now_f64() -> f64 {
    let t = Timestamp::now();
    t.secs as f64 + t.usecs as f64 / 1e6
}

fn ns_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn prereq(msg: String, code: &str) -> Value {
    json!(["OpPrereqError", [msg, code]])
}

// ---------------------------------------------------------------- nodes and instances

/// A node's state.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub cfg: SimNodeConfig,
    pub ip: String,
    pub uuid: String,
    pub group_uuid: String,
    pub ctime: f64,
}

/// A network: its configuration, UUID and address pool (Ganeti's
/// `AddressPool`: a bit per address of the subnet).
#[derive(Debug, Clone)]
pub(crate) struct NetState {
    pub cfg: SimNetworkConfig,
    pub uuid: String,
    base: u32,
    size: u32,
    /// External reservations (index in the subnet): network, broadcast,
    /// gateway, `reserved_ips`, node addresses in the subnet.
    ext: BTreeSet<u32>,
}

impl NetState {
    fn new(cfg: &SimNetworkConfig, node_ips: &[String]) -> Option<Self> {
        let (base, prefix) = cfg.subnet_v4().ok()?;
        let mut n = Self {
            cfg: cfg.clone(),
            uuid: cfg
                .uuid
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            base,
            size: 1 << (32 - prefix),
            ext: BTreeSet::new(),
        };
        n.ext.insert(0);
        n.ext.insert(n.size - 1);
        let reserved = cfg.gateway.iter().chain(&cfg.reserved_ips).chain(node_ips);
        for ip in reserved {
            if let Some(i) = n.index(ip) {
                n.ext.insert(i);
            }
        }
        Some(n)
    }

    /// The index of an address in the subnet.
    fn index(&self, ip: &str) -> Option<u32> {
        let a = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        a.checked_sub(self.base).filter(|i| *i < self.size)
    }

    fn addr(&self, index: u32) -> String {
        Ipv4Addr::from(self.base + index).to_string()
    }

    /// Ganeti's `GenerateFree`: the lowest address reserved by no one.
    fn first_free(&self, used: &BTreeSet<u32>) -> Option<u32> {
        (0..self.size).find(|i| !self.ext.contains(i) && !used.contains(i))
    }
}

/// Python's `repr` of a list of strings (`['100', 'routed', '']`).
fn py_str_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// One NIC of a simulated instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimNic {
    /// IP address.
    pub ip: Option<String>,
    /// MAC address.
    pub mac: String,
    /// `bridged`, `routed`, `openvswitch`.
    pub mode: String,
    /// Link.
    pub link: String,
    /// Ganeti network name (`nic.networks.names`).
    pub network: Option<String>,
    /// Ganeti network UUID (`nic.networks`).
    #[serde(default)]
    pub network_uuid: Option<String>,
    /// NIC name.
    pub name: Option<String>,
    /// UUID.
    pub uuid: String,
    /// VLAN, as Ganeti records it for NICs added by a modify (`""`).
    #[serde(default)]
    pub vlan: Option<String>,
}

/// One disk of a simulated instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDisk {
    /// Size (MiB).
    pub size: u64,
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: Option<String>,
}

/// A simulated instance, as [`super::SimHandle::instance`] returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimInstance {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// OS.
    pub os: String,
    /// Primary node.
    pub pnode: String,
    /// Disk template.
    pub disk_template: String,
    /// `admin_state == "up"`.
    pub admin_up: bool,
    /// `oper_state`.
    pub running: bool,
    /// NICs.
    pub nics: Vec<SimNic>,
    /// Disks.
    pub disks: Vec<SimDisk>,
    /// vCPUs.
    pub vcpus: u64,
    /// Max memory (MiB).
    pub maxmem: u64,
    /// Min memory (MiB).
    pub minmem: u64,
    /// Hypervisor parameters set on the instance.
    pub hvparams: Map<String, Value>,
    /// OS parameters.
    pub osparams: BTreeMap<String, Value>,
    /// Hypervisor.
    pub hypervisor: String,
    /// VNC port (KVM) or none.
    pub network_port: Option<u64>,
    /// Creation time.
    pub ctime: f64,
    /// Modification time.
    pub mtime: f64,
    /// Config serial.
    pub serial_no: u64,
    /// Tags.
    pub tags: Vec<String>,
}

impl SimInstance {
    /// Ganeti's status string.
    pub fn status(&self) -> &'static str {
        match (self.admin_up, self.running) {
            (true, true) => "running",
            (false, false) => "ADMIN_down",
            (true, false) => "ERROR_down",
            (false, true) => "ERROR_up",
        }
    }

    fn touch(&mut self) {
        self.mtime = now_f64();
        self.serial_no += 1;
    }
}

/// What [`super::SimHandle::add_instance_directly`] creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewSimInstance {
    /// Name.
    pub name: String,
    /// Primary node (default: the first node).
    pub pnode: Option<String>,
    /// Memory (MiB).
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u64,
    /// Running and admin up (else ADMIN_down).
    pub running: bool,
    /// OS.
    pub os: String,
    /// Disk template.
    pub disk_template: String,
    /// NIC IPs (one NIC per entry).
    pub nic_ips: Vec<Option<String>>,
    /// Tags.
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

struct Seq<I>(std::cell::Cell<Option<I>>);

impl<I, T> Serialize for Seq<I>
where
    I: Iterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(it) => s.collect_seq(it),
            None => s.collect_seq(std::iter::empty::<T>()),
        }
    }
}

fn seq<I: Iterator>(it: I) -> Seq<I> {
    Seq(std::cell::Cell::new(Some(it)))
}

/// Serialises an instance with Ganeti's `I_FIELDS`, optionally restricted.
pub(crate) struct InstanceView<'a> {
    pub inst: &'a SimInstance,
    pub fields: Option<&'a [String]>,
}

impl Serialize for InstanceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.inst;
        let want = |f: &str| self.fields.is_none_or(|fs| fs.iter().any(|x| x == f));
        let mut m = s.serialize_map(None)?;
        macro_rules! field {
            ($k:literal, $v:expr) => {
                if want($k) {
                    m.serialize_entry($k, &$v)?;
                }
            };
        }
        field!("name", i.name);
        field!("admin_state", if i.admin_up { "up" } else { "down" });
        field!("os", i.os);
        field!("pnode", i.pnode);
        field!("snodes", seq(std::iter::empty::<&str>()));
        field!("disk_template", i.disk_template);
        field!("nic.ips", seq(i.nics.iter().map(|n| n.ip.as_deref())));
        field!("nic.macs", seq(i.nics.iter().map(|n| n.mac.as_str())));
        field!("nic.modes", seq(i.nics.iter().map(|n| n.mode.as_str())));
        field!("nic.uuids", seq(i.nics.iter().map(|n| n.uuid.as_str())));
        field!("nic.names", seq(i.nics.iter().map(|n| n.name.as_deref())));
        field!("nic.links", seq(i.nics.iter().map(|n| n.link.as_str())));
        field!(
            "nic.networks",
            seq(i.nics.iter().map(|n| n.network_uuid.as_deref()))
        );
        field!(
            "nic.networks.names",
            seq(i.nics.iter().map(|n| n.network.as_deref()))
        );
        field!(
            "nic.bridges",
            seq(i
                .nics
                .iter()
                .map(|n| (n.mode == "bridged").then_some(n.link.as_str())))
        );
        field!("network_port", i.network_port);
        field!("disk.sizes", seq(i.disks.iter().map(|d| d.size)));
        field!(
            "disk.spindles",
            seq(i.disks.iter().map(|_| Option::<u64>::None))
        );
        field!("disk_usage", i.disks.iter().map(|d| d.size).sum::<u64>());
        field!("disk.uuids", seq(i.disks.iter().map(|d| d.uuid.as_str())));
        field!("disk.names", seq(i.disks.iter().map(|d| d.name.as_deref())));
        if want("beparams") {
            m.serialize_entry("beparams", &BeView { i, filled: true })?;
        }
        field!("hvparams", i.hvparams);
        field!("oper_state", i.running);
        field!("oper_ram", i.running.then_some(i.maxmem));
        field!("oper_vcpus", i.running.then_some(i.vcpus));
        field!("status", i.status());
        field!("custom_hvparams", i.hvparams);
        if want("custom_beparams") {
            m.serialize_entry("custom_beparams", &BeView { i, filled: false })?;
        }
        field!("custom_nicparams", seq(i.nics.iter().map(NicParams)));
        field!("ctime", i.ctime);
        field!("mtime", i.mtime);
        field!("uuid", i.uuid);
        field!("serial_no", i.serial_no);
        field!("tags", i.tags);
        m.end()
    }
}

struct BeView<'a> {
    i: &'a SimInstance,
    filled: bool,
}

impl Serialize for BeView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("minmem", &self.i.minmem)?;
        m.serialize_entry("maxmem", &self.i.maxmem)?;
        m.serialize_entry("vcpus", &self.i.vcpus)?;
        if self.filled {
            m.serialize_entry("auto_balance", &true)?;
            m.serialize_entry("always_failover", &false)?;
            m.serialize_entry("spindle_use", &1)?;
            m.serialize_entry("memory", &self.i.maxmem)?;
        }
        m.end()
    }
}

struct NicParams<'a>(&'a SimNic);

impl Serialize for NicParams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("mode", &self.0.mode)?;
        m.serialize_entry("link", &self.0.link)?;
        if let Some(vlan) = &self.0.vlan {
            m.serialize_entry("vlan", vlan)?;
        }
        m.end()
    }
}

// ---------------------------------------------------------------- jobs

/// An injected failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRule {
    /// Only this opcode (`OP_INSTANCE_CREATE`); any if `None`.
    pub opcode: Option<String>,
    /// Only this instance; any if `None`.
    pub instance: Option<String>,
    /// How many more jobs it fails (`None`: every matching job).
    pub remaining: Option<u32>,
    /// `OpPrereqError` fails before running (no log); anything else
    /// (`OpExecError`) fails at the end of `running`, after the op's log.
    pub class: String,
    /// The error text.
    pub message: String,
    /// Error classification (`wrong_state`, `insufficient_resources`, ...).
    pub ecode: Option<String>,
}

impl FailureRule {
    fn result(&self) -> Value {
        match &self.ecode {
            Some(code) => json!([self.class, [self.message, code]]),
            None => json!([self.class, [self.message]]),
        }
    }
    fn matches(&self, opcode: &str, instance: &str) -> bool {
        self.opcode.as_deref().is_none_or(|o| o == opcode)
            && self.instance.as_deref().is_none_or(|i| i == instance)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OpState {
    pub opcode: String,
    pub input: Map<String, Value>,
    pub status: JobStatus,
    pub result: Value,
    pub log: Vec<LogEntry>,
    pub start: Option<Timestamp>,
    pub exec: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub pending_logs: VecDeque<String>,
    pub failure: Option<FailureRule>,
    /// NICs worked out in the prerequisites (a create's NICs, a modify's
    /// added NICs): network parameters inherited, pool addresses chosen.
    /// Their addresses stay reserved while the op runs.
    pub nics: Option<Vec<SimNic>>,
}

impl OpState {
    /// The items of a list in the op's input (`disks`, `nics`); none if
    /// absent or not a list.
    fn input_list(&self, key: &str) -> impl Iterator<Item = &Value> {
        self.input
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    fn instance(&self) -> &str {
        self.input
            .get("instance_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: u64,
    pub ops: Vec<OpState>,
    pub received: Timestamp,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub log_serial: u64,
    pub next_at: Option<Instant>,
    pub ended_at: Option<Instant>,
    pub archived: bool,
    pub process: Option<(u32, String)>,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        let st: Vec<JobStatus> = self.ops.iter().map(|o| o.status).collect();
        if st.contains(&JobStatus::Canceling) {
            JobStatus::Canceling
        } else if st.contains(&JobStatus::Error) {
            JobStatus::Error
        } else if st.contains(&JobStatus::Canceled) {
            JobStatus::Canceled
        } else {
            st.into_iter()
                .find(|s| *s != JobStatus::Success)
                .unwrap_or(JobStatus::Success)
        }
    }

    fn current(&self) -> Option<usize> {
        self.ops.iter().position(|o| !o.status.is_terminal())
    }

    fn finish(&mut self) {
        let now = Timestamp::now();
        self.end = Some(now);
        self.ended_at = Some(Instant::now());
        self.next_at = None;
    }

    /// The RAPI `J_FIELDS` value of one field.
    pub fn field(&self, name: &str) -> Value {
        match name {
            "id" => json!(self.id),
            "ops" => Value::Array(
                self.ops
                    .iter()
                    .map(|o| Value::Object(o.input.clone()))
                    .collect(),
            ),
            "status" => json!(self.status().as_str()),
            "summary" => Value::Array(
                self.ops
                    .iter()
                    .map(|o| {
                        json!(format!(
                            "{}({})",
                            o.opcode.trim_start_matches("OP_"),
                            o.instance()
                        ))
                    })
                    .collect(),
            ),
            "opstatus" => Value::Array(self.ops.iter().map(|o| json!(o.status.as_str())).collect()),
            "received_ts" => json!(self.received),
            "start_ts" => json!(self.start),
            "end_ts" => json!(self.end),
            "oplog" => Value::Array(self.ops.iter().map(|o| json!(o.log)).collect()),
            "opresult" => Value::Array(self.ops.iter().map(|o| o.result.clone()).collect()),
            _ => Value::Null,
        }
    }

    /// `GET /2/jobs/ID`.
    pub fn rapi_json(&self) -> Value {
        let mut m = Map::new();
        for f in J_FIELDS {
            m.insert((*f).into(), self.field(f));
        }
        Value::Object(m)
    }

    /// The queue file, and whether luxid (compact) or the job process wrote it.
    pub fn file_bytes(&self) -> (Vec<u8>, bool) {
        let luxid = self.process.is_none();
        let view = JobFileView { job: self, luxid };
        if luxid {
            (serde_json::to_vec(&view).unwrap_or_default(), true)
        } else {
            (to_py_vec(&view), false)
        }
    }
}

/// A job file in the key order of its writer (luxid or the job process).
struct JobFileView<'a> {
    job: &'a Job,
    luxid: bool,
}

struct OpFileView<'a> {
    op: &'a OpState,
    luxid: bool,
}

impl Serialize for OpFileView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.op;
        let mut input = o.input.clone();
        input.insert("OP_ID".into(), json!(o.opcode));
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("input", &input)?;
        m.serialize_entry("status", o.status.as_str())?;
        m.serialize_entry("result", &o.result)?;
        m.serialize_entry("log", &o.log)?;
        if self.luxid {
            m.serialize_entry("priority", &0)?;
        }
        m.serialize_entry("start_timestamp", &o.start)?;
        m.serialize_entry("exec_timestamp", &o.exec)?;
        m.serialize_entry("end_timestamp", &o.end)?;
        if !self.luxid {
            m.serialize_entry("priority", &0)?;
        }
        m.end()
    }
}

impl Serialize for JobFileView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let j = self.job;
        let ops: Vec<OpFileView<'_>> = j
            .ops
            .iter()
            .map(|op| OpFileView {
                op,
                luxid: self.luxid,
            })
            .collect();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &j.id)?;
        m.serialize_entry("ops", &ops)?;
        match &j.process {
            None => {
                m.serialize_entry("received_timestamp", &j.received)?;
                m.serialize_entry("start_timestamp", &j.start)?;
                m.serialize_entry("end_timestamp", &j.end)?;
                if !j.status().is_terminal() {
                    m.serialize_entry(
                        "livelock",
                        &format!("/var/run/ganeti/livelocks/luxi-daemon_{}", j.received.secs),
                    )?;
                }
            }
            Some((pid, livelock)) => {
                m.serialize_entry("start_timestamp", &j.start)?;
                m.serialize_entry("end_timestamp", &j.end)?;
                m.serialize_entry("received_timestamp", &j.received)?;
                m.serialize_entry("livelock", livelock)?;
                m.serialize_entry("process_id", pid)?;
            }
        }
        m.end()
    }
}

/// Ganeti's `J_FIELDS`.
pub(crate) const J_FIELDS: &[&str] = &[
    "id",
    "ops",
    "status",
    "summary",
    "opstatus",
    "received_ts",
    "start_ts",
    "end_ts",
    "oplog",
    "opresult",
];

/// Parameters every opcode carries.
fn common_params(op_id: &str, resource: &str, job: u64) -> Map<String, Value> {
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
fn opcode_defaults(op_id: &str) -> Value {
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
        _ => json!({}),
    }
}

/// The answer of `DELETE /2/jobs/ID`.
pub(crate) type CancelAnswer = (bool, String);

// ---------------------------------------------------------------- the state

/// The whole simulated cluster.
#[derive(Debug)]
pub(crate) struct SimState {
    pub cfg: SimConfig,
    pub latency: SimLatency,
    pub single_step: bool,
    pub cluster_uuid: String,
    pub ctime: f64,
    pub nodes: Vec<NodeState>,
    pub networks: Vec<NetState>,
    pub instances: BTreeMap<String, SimInstance>,
    pub jobs: BTreeMap<u64, Job>,
    pub last_job_id: u64,
    pub failures: Vec<FailureRule>,
    pub queue: Option<QueueFiles>,
    pub next_port: u64,
    pub mac_counter: u64,
    /// Bumped on every job change (wakes `/wait` long polls).
    pub generation: u64,
}

impl SimState {
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

    pub(crate) fn master(&self) -> String {
        self.nodes
            .first()
            .map(|n| n.cfg.name.clone())
            .unwrap_or_else(|| "node1.sim".into())
    }

    fn new_mac(&mut self) -> String {
        self.mac_counter += 1;
        let x = self.mac_counter.wrapping_mul(0x9E37_79B9) & 0xff_ffff;
        format!(
            "aa:00:00:{:02x}:{:02x}:{:02x}",
            (x >> 16) & 0xff,
            (x >> 8) & 0xff,
            x & 0xff
        )
    }

    fn new_port(&mut self, hypervisor: &str) -> Option<u64> {
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

    /// Memory in use by running instances, per node name.
    fn used_memory(&self) -> BTreeMap<&str, (u64, u64)> {
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

    fn node_free(&self, node: &NodeState, used: u64) -> u64 {
        node.cfg
            .memory_mib
            .saturating_sub(node.cfg.node_memory_mib)
            .saturating_sub(used)
    }

    /// `GET /2/nodes?bulk=1`.
    pub(crate) fn nodes_json(&self) -> Value {
        let used = self.used_memory();
        let master = self.master();
        Value::Array(
            self.nodes
                .iter()
                .map(|n| {
                    let (mem, count) = used.get(n.cfg.name.as_str()).copied().unwrap_or_default();
                    let pinst: Vec<&str> =
                        self.instances.values().filter(|i| i.pnode == n.cfg.name).map(|i| i.name.as_str()).collect();
                    let role = if n.cfg.name == master {
                        "M"
                    } else if n.cfg.offline {
                        "O"
                    } else if n.cfg.drained {
                        "D"
                    } else {
                        "C"
                    };
                    let offline = n.cfg.offline;
                    json!({
                        "name": n.cfg.name, "offline": offline, "master_candidate": !offline && !n.cfg.drained,
                        "drained": n.cfg.drained,
                        "dtotal": (!offline).then_some(n.cfg.disk_mib), "dfree": (!offline).then_some(n.cfg.disk_mib),
                        "sptotal": null, "spfree": null,
                        "mtotal": (!offline).then_some(n.cfg.memory_mib), "mnode": (!offline).then_some(n.cfg.node_memory_mib),
                        "mfree": (!offline).then(|| self.node_free(n, mem)),
                        "pinst_cnt": count, "sinst_cnt": 0,
                        "ctotal": (!offline).then_some(n.cfg.cpus), "cnos": (!offline).then_some(1), "cnodes": (!offline).then_some(1),
                        "csockets": (!offline).then_some(1),
                        "pip": n.ip, "sip": n.ip, "role": role,
                        "pinst_list": pinst, "sinst_list": [],
                        "master_capable": true, "vm_capable": true,
                        "ndparams": {"oob_program": "", "spindle_count": 1, "exclusive_storage": false, "ovs": false,
                                     "ovs_name": "switch1", "ovs_link": "", "ssh_port": 22, "cpu_speed": 1},
                        "group.uuid": n.group_uuid,
                        "ctime": n.ctime, "mtime": n.ctime, "uuid": n.uuid, "serial_no": 1, "tags": [],
                    })
                })
                .collect(),
        )
    }

    /// `GET /2/info`.
    pub(crate) fn info_json(&self) -> Value {
        let mut v: Value =
            serde_json::from_str(include_str!("cluster-info.json")).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("name".into(), json!(self.cfg.cluster_name));
            m.insert("master".into(), json!(self.master()));
            m.insert("uuid".into(), json!(self.cluster_uuid));
            m.insert("ctime".into(), json!(self.ctime));
            m.insert("mtime".into(), json!(self.ctime));
            m.insert("default_hypervisor".into(), json!(self.cfg.hypervisor));
            let mut hvs = vec![self.cfg.hypervisor.clone()];
            for h in ["kvm", "fake"] {
                if !hvs.iter().any(|x| x == h) {
                    hvs.push(h.into());
                }
            }
            m.insert("enabled_hypervisors".into(), json!(hvs));
        }
        v
    }

    /// `GET /2/instances/NAME/console`.
    pub(crate) fn console_json(&self, name: &str) -> Option<Value> {
        let i = self.instances.get(name)?;
        Some(match (i.hypervisor.as_str(), i.network_port) {
            (_, _) if !i.running => {
                json!({"instance": name, "kind": "msg", "message": format!("Instance {name} is not running")})
            }
            ("kvm", Some(port)) => {
                let host = self
                    .nodes
                    .iter()
                    .find(|n| n.cfg.name == i.pnode)
                    .map(|n| n.ip.clone())
                    .unwrap_or_else(|| i.pnode.clone());
                json!({"instance": name, "kind": "vnc", "host": host, "port": port, "display": port.saturating_sub(5900)})
            }
            (hv, _) => {
                json!({"instance": name, "kind": "msg", "message": format!("Console not available for {hv} hypervisor")})
            }
        })
    }

    // ------------------------------------------------------------ jobs

    /// Submits a one-op job; returns its id.
    pub(crate) fn submit(
        &mut self,
        op_id: &str,
        resource: &str,
        params: Map<String, Value>,
    ) -> u64 {
        self.last_job_id += 1;
        let id = self.last_job_id;
        let mut input = common_params(op_id, resource, id);
        if let Value::Object(d) = opcode_defaults(op_id) {
            input.extend(d);
        }
        input.extend(params);
        input.insert("OP_ID".into(), json!(op_id));
        // Like Ganeti: secret OS parameters reach the OS, never the job file.
        if let Some(Value::Object(secret)) = input.get_mut("osparams_secret") {
            for v in secret.values_mut() {
                *v = Value::Null;
            }
        }
        let instance = input
            .get("instance_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let failure = self.take_failure(op_id, &instance);
        let op = OpState {
            opcode: op_id.into(),
            input,
            status: JobStatus::Queued,
            result: Value::Null,
            log: vec![],
            start: None,
            exec: None,
            end: None,
            pending_logs: VecDeque::new(),
            failure,
            nics: None,
        };
        let job = Job {
            id,
            ops: vec![op],
            received: Timestamp::now(),
            start: None,
            end: None,
            log_serial: 0,
            next_at: Some(Instant::now() + Duration::from_millis(self.latency.queued_ms)),
            ended_at: None,
            archived: false,
            process: None,
        };
        self.jobs.insert(id, job);
        if let Some(q) = &mut self.queue {
            let _ = q.write_luxid("serial", format!("{id}\n").as_bytes());
        }
        self.persist(id);
        self.generation += 1;
        id
    }

    fn take_failure(&mut self, opcode: &str, instance: &str) -> Option<FailureRule> {
        let idx = self
            .failures
            .iter()
            .position(|r| r.matches(opcode, instance))?;
        let rule = self.failures[idx].clone();
        if let Some(n) = &mut self.failures[idx].remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.failures.remove(idx);
            }
        }
        Some(rule)
    }

    fn persist(&mut self, id: u64) {
        let (Some(q), Some(job)) = (self.queue.as_mut(), self.jobs.get(&id)) else {
            return;
        };
        if job.archived || !self.cfg.write_job_files {
            return;
        }
        let (bytes, luxid) = job.file_bytes();
        let name = format!("job-{id}");
        let r = if luxid {
            q.write_luxid(&name, &bytes)
        } else {
            q.write_process(&name, &bytes)
        };
        if let Err(e) = r {
            tracing::warn!(job = id, error = %e, "simulator cannot write job file");
        }
    }

    /// True if an earlier unfinished job works on the same instance.
    fn blocked(&self, id: u64, instance: &str) -> bool {
        !instance.is_empty()
            && self.jobs.range(..id).rev().any(|(_, j)| {
                !j.status().is_terminal() && j.ops.iter().any(|o| o.instance() == instance)
            })
    }

    fn schedule(&mut self, id: u64, ms: u64) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.next_at = Some(Instant::now() + Duration::from_millis(ms));
        }
    }

    /// Jobs whose turn has come (timed mode), in id order.
    pub(crate) fn due(&self, now: Instant) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| j.next_at.is_some_and(|t| t <= now) && !j.status().is_terminal())
            .map(|j| j.id)
            .collect()
    }

    /// The earliest pending deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter(|j| !j.status().is_terminal())
            .filter_map(|j| j.next_at)
            .min()
    }

    /// Unfinished job ids.
    pub(crate) fn active(&self) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| !j.status().is_terminal())
            .map(|j| j.id)
            .collect()
    }

    /// Moves a job one status forward; false if it could not move (done,
    /// or waiting for an instance lock).
    pub(crate) fn advance(&mut self, id: u64) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        let Some(i) = job.current() else { return false };
        let status = job.ops[i].status;
        let instance = job.ops[i].instance().to_string();
        let now = Timestamp::now();
        let lat = self.latency;
        match status {
            JobStatus::Queued => {
                let job = self.jobs.get_mut(&id).expect("job exists");
                let op = &mut job.ops[i];
                op.status = JobStatus::Waiting;
                op.start = Some(now);
                if job.start.is_none() {
                    job.start = Some(now);
                    job.process = Some((
                        std::process::id(),
                        format!("/var/run/ganeti/livelocks/job_{:06}_{}", id, now.secs),
                    ));
                }
                self.schedule(id, lat.waiting_ms);
            }
            JobStatus::Waiting => {
                if self.blocked(id, &instance) {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.next_at = None;
                    }
                    return false;
                }
                let opcode = self.jobs[&id].ops[i].opcode.clone();
                // Log lines of the prerequisites (Ganeti's LogInfo in
                // CheckPrereq) are written even if a later check fails.
                let (prelogs, check) = self.prereq(&self.jobs[&id].ops[i]);
                let uuid = self
                    .instances
                    .get(&instance)
                    .map(|x| json!(x.uuid))
                    .unwrap_or(Value::Null);
                let logs = self.logs_for(&self.jobs[&id].ops[i]);
                // Like Ganeti, a NIC added by a modify gets its MAC in the op's input.
                let need_mac = self.jobs[&id].ops[i]
                    .input
                    .get("nics")
                    .and_then(Value::as_array)
                    .map(|mods| {
                        mods.iter()
                            .filter(|m| m.get(0).and_then(Value::as_str) == Some("add"))
                            .filter(|m| {
                                m.as_array()
                                    .and_then(|a| a.last())
                                    .is_some_and(|p| p.get("mac").is_none())
                            })
                            .count()
                    })
                    .unwrap_or(0);
                let mut macs: VecDeque<String> = (0..need_mac).map(|_| self.new_mac()).collect();
                let job = self.jobs.get_mut(&id).expect("job exists");
                for msg in prelogs {
                    job.log_serial += 1;
                    job.ops[i].log.push(LogEntry {
                        serial: job.log_serial,
                        time: now,
                        kind: "message".into(),
                        message: json!(msg),
                    });
                }
                let op = &mut job.ops[i];
                if opcode == "OP_INSTANCE_SET_PARAMS"
                    && let Some(Value::Array(mods)) = op.input.get_mut("nics")
                {
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
                if opcode != "OP_INSTANCE_CREATE" && !instance.is_empty() {
                    op.input.insert("instance_uuid".into(), uuid);
                }
                let injected_prereq = op
                    .failure
                    .as_ref()
                    .filter(|f| f.class == "OpPrereqError")
                    .map(FailureRule::result);
                let check = match (check, injected_prereq) {
                    (Err(e), _) | (Ok(_), Some(e)) => Err(e),
                    (Ok(nics), None) => Ok(nics),
                };
                if let Err(err) = check.clone() {
                    self.fail(id, i, err);
                } else {
                    op.nics = check.ok().flatten();
                    op.status = JobStatus::Running;
                    op.exec = Some(now);
                    op.pending_logs = logs.into();
                    let steps = op.pending_logs.len() as u64 + 1;
                    self.schedule(id, lat.running_ms / steps);
                }
            }
            JobStatus::Running => {
                let job = self.jobs.get_mut(&id).expect("job exists");
                if let Some(msg) = job.ops[i].pending_logs.pop_front() {
                    job.log_serial += 1;
                    let entry = LogEntry {
                        serial: job.log_serial,
                        time: now,
                        kind: "message".into(),
                        message: json!(msg),
                    };
                    job.ops[i].log.push(entry);
                    let steps = job.ops[i].pending_logs.len() as u64 + 1;
                    self.schedule(id, lat.running_ms / (steps + 1));
                } else if let Some(f) = job.ops[i].failure.clone() {
                    self.fail(id, i, f.result());
                } else {
                    let op = job.ops[i].clone();
                    match self.apply(&op) {
                        Ok(result) => {
                            let job = self.jobs.get_mut(&id).expect("job exists");
                            let op = &mut job.ops[i];
                            op.status = JobStatus::Success;
                            op.result = result;
                            op.end = Some(now);
                            if job.current().is_none() {
                                job.finish();
                            } else {
                                self.schedule(id, lat.queued_ms);
                            }
                        }
                        Err(e) => self.fail(id, i, e),
                    }
                }
            }
            JobStatus::Canceling => {
                let job = self.jobs.get_mut(&id).expect("job exists");
                for op in job.ops.iter_mut().filter(|o| !o.status.is_terminal()) {
                    op.status = JobStatus::Canceled;
                    op.end = Some(now);
                }
                job.finish();
            }
            _ => return false,
        }
        self.persist(id);
        self.generation += 1;
        true
    }

    fn fail(&mut self, id: u64, i: usize, err: Value) {
        let now = Timestamp::now();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        for (j, op) in job.ops.iter_mut().enumerate().skip(i) {
            op.status = JobStatus::Error;
            op.end = Some(now);
            op.result = if j == i {
                err.clone()
            } else {
                json!(["OpExecError", ["Error in previous opcode"]])
            };
        }
        job.finish();
    }

    fn logs_for(&self, op: &OpState) -> Vec<String> {
        match op.opcode.as_str() {
            "OP_INSTANCE_CREATE" => {
                // As recorded from Ganeti 3.0.2 (fixtures job-create*.json):
                // disks are announced first; a job with disks waits for their
                // sync and runs the OS create scripts (skipped for diskless).
                let name = op.instance();
                let flag = |k: &str| op.input.get(k).and_then(Value::as_bool).unwrap_or(true);
                let sizes: Vec<u64> = op
                    .input_list("disks")
                    .map(|d| d.get("size").and_then(Value::as_u64).unwrap_or(0))
                    .collect();
                let mut v: Vec<String> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, size)| format!("* disk {i}, size {}", format_unit(*size)))
                    .collect();
                v.push("* creating instance disks...".to_string());
                v.push(format!("adding instance {name} to cluster config"));
                v.push("adding disks to cluster config".to_string());
                if !sizes.is_empty() {
                    if flag("wait_for_sync") {
                        for _ in 0..2 {
                            v.push(format!(
                                " - INFO: Waiting for instance {name} to sync disks"
                            ));
                            v.push(format!(" - INFO: Instance {name}'s disks are in sync"));
                        }
                    }
                    v.push("* running the instance OS create scripts...".to_string());
                }
                if flag("start") {
                    v.push("* starting instance...".into());
                }
                v
            }
            _ => vec![],
        }
    }

    /// The op's prerequisites, like Ganeti's `CheckPrereq`: the log lines
    /// it writes on the way (kept even when a later check fails) and either
    /// the error (`["OpPrereqError", [msg, ecode]]`, or `OpExecError` for
    /// the OS parameter validation, as Ganeti raises it) or the NICs worked
    /// out for a create (all) or a modify (the added ones).
    fn prereq(&self, op: &OpState) -> (Vec<String>, Result<Option<Vec<SimNic>>, Value>) {
        let mut logs = Vec::new();
        let name = op.instance();
        let r = match op.opcode.as_str() {
            "OP_INSTANCE_CREATE" => self.create_prereq(op, &mut logs).map(Some),
            "" => Ok(None),
            _ if !self.instances.contains_key(name) => Err(prereq(
                format!("Instance '{name}' not known"),
                "unknown_entity",
            )),
            "OP_INSTANCE_SET_PARAMS" => self.modify_prereq(op, &mut logs).map(Some),
            _ => Ok(None),
        };
        (logs, r)
    }

    fn create_prereq(&self, op: &OpState, logs: &mut Vec<String>) -> Result<Vec<SimNic>, Value> {
        let name = op.instance();
        let input = &op.input;
        let flag =
            |k: &str, default: bool| input.get(k).and_then(Value::as_bool).unwrap_or(default);
        // CheckArguments.
        let os_type = input.get("os_type").and_then(Value::as_str);
        let Some(os_type) = os_type else {
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
        if let Some(p) = input.get("pnode").and_then(Value::as_str)
            && !self.nodes.iter().any(|n| n.cfg.name == p)
        {
            return Err(prereq(format!("Node '{p}' not known"), "unknown_entity"));
        }
        // ComputeNics: syntax and network lookup.
        let requested: Vec<Value> = input
            .get("nics")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut nics = Vec::new();
        for n in &requested {
            nics.push(self.nic_syntax(n)?);
        }
        // The allocator, then the primary node's state.
        let pnode = match input.get("pnode").and_then(Value::as_str) {
            Some(p) => p.to_string(),
            None => {
                let iallocator = input
                    .get("iallocator")
                    .and_then(Value::as_str)
                    .unwrap_or("hail");
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
        if node.cfg.offline {
            return Err(prereq(
                format!("Cannot use offline primary node '{pnode}'"),
                "wrong_state",
            ));
        }
        if node.cfg.drained {
            return Err(prereq(
                format!("Cannot use drained primary node '{pnode}'"),
                "wrong_state",
            ));
        }
        // Network NICs: parameters of the group connection, pool addresses.
        let conflicts_check = flag("conflicts_check", true);
        self.resolve_nets(&mut nics, conflicts_check, logs, true)?;
        // Instance policy.
        if !flag("ignore_ipolicy", false) {
            let sizes = input
                .get("disks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|d| d.get("size").and_then(Value::as_u64).unwrap_or(0));
            let (min, max) = (
                self.cfg.ipolicy.disk_size_min_mib,
                self.cfg.ipolicy.disk_size_max_mib,
            );
            let violations: Vec<String> = sizes
                .enumerate()
                .filter(|(_, size)| *size < min || *size > max)
                .map(|(i, size)| {
                    format!("disk-size/{i} value {size} is not in range [{min}, {max}]")
                })
                .collect();
            if !violations.is_empty() {
                return Err(prereq(
                    format!(
                        "Instance allocation to group {} (default) violates policy: {}",
                        node.group_uuid,
                        violations.join(", ")
                    ),
                    "wrong_input",
                ));
            }
        }
        // The OS (CheckNodeHasOS, then CheckOSParams).
        let os = self.check_os(os_type, &pnode, flag("force_variant", false))?;
        let mut unsupported: BTreeSet<&str> = BTreeSet::new();
        for key in ["osparams", "osparams_private", "osparams_secret"] {
            for k in input
                .get(key)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if !os.parameters.iter().any(|p| p == k) {
                    unsupported.insert(k);
                }
            }
        }
        if !unsupported.is_empty() {
            return Err(json!([
                "OpExecError",
                [format!(
                    "OS Parameters validation failed on node {pnode}: The following parameters are not supported by the OS {}: {}",
                    os.name,
                    unsupported.into_iter().collect::<Vec<_>>().join(", ")
                )]
            ]));
        }
        // Memory on the primary node.
        let mem = create_beparam(op, "maxmem");
        if flag("start", true) {
            let used = self.used_memory();
            let free = self.node_free(node, used.get(pnode.as_str()).map(|u| u.0).unwrap_or(0));
            if free < mem {
                return Err(prereq(
                    format!(
                        "Not enough memory on node {pnode} for starting instance {name}: needed {mem} MiB, available {free} MiB"
                    ),
                    "insufficient_resources",
                ));
            }
        }
        Ok(nics)
    }

    /// The NICs a modify adds: the same checks and pool as a create.
    fn modify_prereq(&self, op: &OpState, logs: &mut Vec<String>) -> Result<Vec<SimNic>, Value> {
        let mut nics = Vec::new();
        for m in op.input_list("nics") {
            let a = m.as_array().cloned().unwrap_or_default();
            if a.first().and_then(Value::as_str) == Some("add") {
                nics.push(self.nic_syntax(a.last().unwrap_or(&Value::Null))?);
            }
        }
        let conflicts_check = op
            .input
            .get("conflicts_check")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        self.resolve_nets(&mut nics, conflicts_check, logs, false)?;
        Ok(nics)
    }

    /// One requested NIC checked like Ganeti's `ComputeNics` (no MAC yet:
    /// `mac` is empty unless given).
    fn nic_syntax(&self, n: &Value) -> Result<SimNic, Value> {
        let s = |k: &str| n.get(k).and_then(Value::as_str).map(str::to_string);
        let network = s("network").filter(|x| !x.eq_ignore_ascii_case("none"));
        let ip = s("ip").filter(|x| !x.eq_ignore_ascii_case("none"));
        let mut nic = SimNic {
            ip: ip.clone(),
            mac: s("mac")
                .filter(|m| m != "auto" && m != "generate")
                .unwrap_or_default(),
            mode: s("mode").unwrap_or_else(|| "bridged".into()),
            link: s("link").unwrap_or_else(|| "br0".into()),
            network: None,
            network_uuid: None,
            name: s("name").filter(|x| !x.eq_ignore_ascii_case("none")),
            uuid: uuid::Uuid::new_v4().to_string(),
            vlan: None,
        };
        let given = |k: &str| n.get(k).is_some_and(|v| !v.is_null());
        if network.is_some() && (given("mode") || given("link")) {
            return Err(prereq(
                "If network is given, no mode or link is allowed to be passed".into(),
                "wrong_input",
            ));
        }
        if ip
            .as_deref()
            .is_some_and(|i| i.eq_ignore_ascii_case("pool"))
            && network.is_none()
        {
            return Err(prereq(
                "if ip=pool, parameter network must be passed too".into(),
                "wrong_input",
            ));
        }
        if let Some(net) = network {
            let found = self
                .networks
                .iter()
                .find(|x| x.cfg.name == net || x.uuid == net)
                .ok_or_else(|| prereq(format!("Network '{net}' not found"), "unknown_entity"))?;
            nic.network = Some(found.cfg.name.clone());
            nic.network_uuid = Some(found.uuid.clone());
        }
        Ok(nic)
    }

    /// Network NICs take the mode/link/vlan of the network's group
    /// connection (a create logs them) and `ip: pool` the first free
    /// address (logged).
    fn resolve_nets(
        &self,
        nics: &mut [SimNic],
        conflicts_check: bool,
        logs: &mut Vec<String>,
        create: bool,
    ) -> Result<(), Value> {
        let mut taken: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (idx, nic) in nics.iter_mut().enumerate() {
            let Some(uuid) = nic.network_uuid.clone() else {
                continue;
            };
            let net = self
                .networks
                .iter()
                .find(|n| n.uuid == uuid)
                .expect("looked up before");
            let c = &net.cfg;
            if create {
                logs.push(format!(
                    " - INFO: NIC/{idx} inherits netparams {}",
                    py_str_list(&[&c.link, &c.mode, &c.vlan])
                ));
            }
            nic.mode = c.mode.clone();
            nic.link = c.link.clone();
            nic.vlan = Some(c.vlan.clone());
            let used = taken
                .entry(uuid.clone())
                .or_insert_with(|| self.used_addresses(net));
            match nic.ip.as_deref() {
                Some(ip) if ip.eq_ignore_ascii_case("pool") => {
                    let i = net.first_free(used).ok_or_else(|| {
                        // LUInstanceCreate names the NIC, LUInstanceSetParams does not.
                        let which = if create {
                            format!(" for NIC {idx}")
                        } else {
                            String::new()
                        };
                        prereq(
                            format!("Unable to get a free IP{which} from the address pool"),
                            "wrong_state",
                        )
                    })?;
                    used.insert(i);
                    let ip = net.addr(i);
                    logs.push(format!(" - INFO: Chose IP {ip} from network {}", c.name));
                    nic.ip = Some(ip);
                }
                Some(ip) => {
                    let taken_here = net
                        .index(ip)
                        .filter(|i| !(conflicts_check && used.contains(i)));
                    match taken_here {
                        Some(i) => {
                            used.insert(i);
                        }
                        None => {
                            return Err(prereq(
                                format!(
                                    "IP address {ip} already in use or does not belong to network {}",
                                    c.name
                                ),
                                "not_unique",
                            ));
                        }
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Addresses of a network held by instances' NICs and by ops that are
    /// still running (Ganeti's temporary reservations).
    fn used_addresses(&self, net: &NetState) -> BTreeSet<u32> {
        let in_net = |n: &SimNic| {
            (n.network_uuid.as_deref() == Some(net.uuid.as_str()))
                .then(|| n.ip.as_deref().and_then(|ip| net.index(ip)))
                .flatten()
        };
        let held = self
            .instances
            .values()
            .flat_map(|i| i.nics.iter().filter_map(in_net));
        let pending = self
            .jobs
            .values()
            .filter(|j| !j.status().is_terminal())
            .flat_map(|j| j.ops.iter())
            .filter(|o| !o.status.is_terminal())
            .filter_map(|o| o.nics.as_ref())
            .flat_map(|nics| nics.iter().filter_map(in_net));
        held.chain(pending).collect()
    }

    /// Ganeti's `CheckNodeHasOS`: the OS exists on the node, with the variant.
    fn check_os(
        &self,
        os_type: &str,
        node: &str,
        force_variant: bool,
    ) -> Result<&SimOsConfig, Value> {
        let (base, variant) = match os_type.split_once('+') {
            Some((b, v)) => (b, Some(v)),
            None => (os_type, None),
        };
        let os = self.cfg.os.iter().find(|o| o.name == base).ok_or_else(|| {
            prereq(
                format!(
                    "OS '{os_type}' not in supported OS list for node {node}: Directory for OS {base} not found in search path"
                ),
                "wrong_input",
            )
        })?;
        if force_variant {
            return Ok(os);
        }
        match variant {
            Some(v) if os.variants.is_empty() => Err(prereq(
                format!("OS '{}' doesn't support variants ('{v}' passed)", os.name),
                "wrong_input",
            )),
            None if !os.variants.is_empty() => Err(prereq(
                "OS name must include a variant".into(),
                "wrong_input",
            )),
            Some(v) if !os.variants.iter().any(|x| x == v) => {
                Err(prereq("Unsupported OS variant".into(), "wrong_input"))
            }
            _ => Ok(os),
        }
    }

    fn pick_node(&self, need: u64) -> Option<String> {
        let used = self.used_memory();
        self.nodes
            .iter()
            .filter(|n| !n.cfg.offline && !n.cfg.drained)
            .map(|n| {
                (
                    self.node_free(n, used.get(n.cfg.name.as_str()).map(|u| u.0).unwrap_or(0)),
                    &n.cfg.name,
                )
            })
            .filter(|(free, _)| *free >= need)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
            .map(|(_, name)| name.clone())
    }

    fn target_node(&self, op: &OpState) -> Option<String> {
        op.input
            .get("pnode")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.pick_node(0))
    }

    /// Applies a successful op; returns its result.
    fn apply(&mut self, op: &OpState) -> Result<Value, Value> {
        let name = op.instance().to_string();
        if op
            .input
            .get("dry_run")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Ok(match op.opcode.as_str() {
                "OP_INSTANCE_CREATE" => {
                    json!([self.target_node(op).unwrap_or_else(|| self.master())])
                }
                _ => Value::Null,
            });
        }
        match op.opcode.as_str() {
            "OP_INSTANCE_CREATE" => {
                let pnode = self.target_node(op).unwrap_or_else(|| self.master());
                let start = op
                    .input
                    .get("start")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let hypervisor = op
                    .input
                    .get("hypervisor")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| self.cfg.hypervisor.clone());
                let mut nics = Vec::new();
                match &op.nics {
                    Some(resolved) => {
                        for n in resolved {
                            let mut n = n.clone();
                            if n.mac.is_empty() {
                                n.mac = self.new_mac();
                            }
                            nics.push(n);
                        }
                    }
                    None => {
                        for n in op.input_list("nics") {
                            nics.push(self.nic_from(n));
                        }
                    }
                }
                let disk_template = op
                    .input
                    .get("disk_template")
                    .and_then(Value::as_str)
                    .unwrap_or("diskless")
                    .to_string();
                let disks = op
                    .input_list("disks")
                    .map(|d| SimDisk {
                        size: d.get("size").and_then(Value::as_u64).unwrap_or(0),
                        uuid: uuid::Uuid::new_v4().to_string(),
                        name: d.get("name").and_then(Value::as_str).map(str::to_string),
                    })
                    .collect();
                let maxmem = create_beparam(op, "maxmem");
                let now = now_f64();
                let inst = SimInstance {
                    name: name.clone(),
                    uuid: uuid::Uuid::new_v4().to_string(),
                    os: op
                        .input
                        .get("os_type")
                        .and_then(Value::as_str)
                        .unwrap_or("noop+default")
                        .to_string(),
                    pnode: pnode.clone(),
                    disk_template,
                    admin_up: start,
                    running: start,
                    nics,
                    disks,
                    vcpus: create_beparam(op, "vcpus"),
                    maxmem,
                    minmem: op
                        .input
                        .get("beparams")
                        .and_then(|b| b.get("minmem"))
                        .and_then(Value::as_u64)
                        .unwrap_or(maxmem),
                    hvparams: op
                        .input
                        .get("hvparams")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                    osparams: op
                        .input
                        .get("osparams")
                        .and_then(Value::as_object)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                    network_port: self.new_port(&hypervisor),
                    hypervisor,
                    ctime: now,
                    mtime: now,
                    serial_no: 1,
                    tags: op
                        .input
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|t| {
                            t.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                self.instances.insert(name, inst);
                Ok(json!([pnode]))
            }
            "OP_INSTANCE_REMOVE" => {
                self.instances.remove(&name).ok_or_else(|| {
                    prereq(format!("Instance '{name}' not known"), "unknown_entity")
                })?;
                Ok(Value::Null)
            }
            "OP_INSTANCE_STARTUP" | "OP_INSTANCE_REBOOT" => {
                let i = self.instances.get_mut(&name).ok_or_else(|| {
                    prereq(format!("Instance '{name}' not known"), "unknown_entity")
                })?;
                i.admin_up = true;
                i.running = true;
                i.touch();
                Ok(Value::Null)
            }
            "OP_INSTANCE_SHUTDOWN" => {
                let i = self.instances.get_mut(&name).ok_or_else(|| {
                    prereq(format!("Instance '{name}' not known"), "unknown_entity")
                })?;
                i.admin_up = false;
                i.running = false;
                i.touch();
                Ok(Value::Null)
            }
            "OP_INSTANCE_SET_PARAMS" => self.modify(&name, op),
            other => Err(json!([
                "OpExecError",
                [format!("Opcode {other} is not simulated")]
            ])),
        }
    }

    fn nic_from(&mut self, n: &Value) -> SimNic {
        let s = |k: &str| n.get(k).and_then(Value::as_str).map(str::to_string);
        SimNic {
            ip: s("ip"),
            mac: s("mac")
                .filter(|m| m != "auto" && m != "generate")
                .unwrap_or_else(|| self.new_mac()),
            mode: s("mode").unwrap_or_else(|| "bridged".into()),
            link: s("link").unwrap_or_else(|| "br0".into()),
            network: s("network"),
            network_uuid: None,
            name: s("name"),
            uuid: uuid::Uuid::new_v4().to_string(),
            vlan: None,
        }
    }

    fn modify(&mut self, name: &str, op: &OpState) -> Result<Value, Value> {
        if !self.instances.contains_key(name) {
            return Err(prereq(
                format!("Instance '{name}' not known"),
                "unknown_entity",
            ));
        }
        let mut changes = Vec::new();
        let mut new_nics = Vec::new();
        let mut resolved = op.nics.iter().flatten();
        for m in op.input_list("nics") {
            // ["add", index, {...}] or ["add", {...}] or [index, {...}] or ["remove", index, {}]
            let a = m.as_array().cloned().unwrap_or_default();
            let params = a.last().cloned().unwrap_or(Value::Null);
            match a.first().and_then(Value::as_str) {
                Some("add") => {
                    let mut nic = self.nic_from(&params);
                    nic.vlan = Some(
                        params
                            .get("vlan")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    );
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
                    new_nics.push(("add", nic))
                }
                Some("remove") => new_nics.push(("remove", self.nic_from(&Value::Null))),
                _ => {}
            }
        }
        let i = self.instances.get_mut(name).expect("checked above");
        for (what, nic) in new_nics {
            if what == "add" {
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
        if let Some(be) = op.input.get("beparams").and_then(Value::as_object) {
            for (k, v) in be {
                let Some(n) = v.as_u64() else { continue };
                match k.as_str() {
                    "vcpus" => i.vcpus = n,
                    "maxmem" | "memory" => i.maxmem = n,
                    "minmem" => i.minmem = n,
                    _ => continue,
                }
                changes.push(json!([format!("be/{k}"), n]));
            }
        }
        if let Some(hv) = op.input.get("hvparams").and_then(Value::as_object) {
            for (k, v) in hv {
                i.hvparams.insert(k.clone(), v.clone());
                changes.push(json!([format!("hv/{k}"), v]));
            }
        }
        if let Some(os) = op.input.get("osparams").and_then(Value::as_object) {
            for (k, v) in os {
                i.osparams.insert(k.clone(), v.clone());
                changes.push(json!([format!("os/{k}"), v]));
            }
        }
        i.touch();
        Ok(Value::Array(changes))
    }

    /// `DELETE /2/jobs/ID`.
    pub(crate) fn cancel(&mut self, id: u64) -> CancelAnswer {
        let Some(job) = self.jobs.get_mut(&id) else {
            return (false, format!("Job {id} not found in queue"));
        };
        match job.status() {
            JobStatus::Queued if job.start.is_none() => {
                let now = Timestamp::now();
                for op in &mut job.ops {
                    op.status = JobStatus::Canceled;
                    op.end = Some(now);
                }
                job.finish();
                self.persist(id);
                self.generation += 1;
                (true, format!("Dequeued job {id}"))
            }
            JobStatus::Queued | JobStatus::Waiting => {
                if let Some(i) = job.current() {
                    job.ops[i].status = JobStatus::Canceling;
                }
                job.next_at = Some(Instant::now());
                self.persist(id);
                self.generation += 1;
                (true, format!("Job {id} will be canceled"))
            }
            JobStatus::Running | JobStatus::Canceling => {
                (false, format!("Job {id} is no longer waiting in the queue"))
            }
            _ => (false, format!("Job {id} not found in queue")),
        }
    }

    /// Archives finished jobs that ended at least `older_than` ago.
    pub(crate) fn archive(&mut self, older_than: Duration) -> usize {
        let now = Instant::now();
        let ids: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| {
                !j.archived
                    && j.ended_at
                        .is_some_and(|t| now.duration_since(t) >= older_than)
            })
            .map(|j| j.id)
            .collect();
        for id in &ids {
            if let Some(q) = &mut self.queue
                && let Err(e) = q.archive(*id)
            {
                tracing::warn!(job = id, error = %e, "simulator cannot archive job file");
            }
            if let Some(j) = self.jobs.get_mut(id) {
                j.archived = true;
            }
        }
        ids.len()
    }
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

fn create_beparam(op: &OpState, key: &str) -> u64 {
    let be = op.input.get("beparams");
    let v = be.and_then(|b| b.get(key)).and_then(Value::as_u64);
    match key {
        "maxmem" => v
            .or_else(|| be.and_then(|b| b.get("memory")).and_then(Value::as_u64))
            .unwrap_or(128),
        "vcpus" => v.unwrap_or(1),
        _ => v.unwrap_or(0),
    }
}
