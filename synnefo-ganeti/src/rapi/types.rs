//! Typed RAPI payloads: what Ganeti 3.0 answers, and the request bodies we
//! send. Field names follow Ganeti's wire names exactly (`nic.ips`,
//! `received_ts`, ...); see `tests/fixtures/ganeti-3.0/` for recorded
//! answers.
//!
//! Decoding is lenient where Ganeti is loose (a job id is a number or a
//! string, lists may be `null`, `admin_state` was a bool before 2.x) and
//! strict where a wrong value would mislead (an unknown job status is an
//! error, not a default).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use synnefo_core::ids::JobId;
use synnefo_core::model::Nic;
use synnefo_core::ports::{ConsoleInfo, InstanceInfo, JobInfo, JobOpInfo};
use synnefo_core::state::JobStatus;
use synnefo_core::state::OpError;

use crate::error::RapiError;

/// `null` decodes as the type's default (Ganeti sends `null` for empty
/// lists on offline nodes and for missing job fields).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ------------------------------------------------------------------ ids, timestamps, log

/// A job id as Ganeti sends it: a JSON number (3.0) or a numeric string
/// (older releases and some documentation). Serialises as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireJobId(pub u64);

impl From<WireJobId> for JobId {
    fn from(id: WireJobId) -> JobId {
        JobId(id.0)
    }
}

impl Serialize for WireJobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for WireJobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireJobId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job id (number or numeric string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireJobId, E> {
                Ok(WireJobId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireJobId, E> {
                u64::try_from(v)
                    .map(WireJobId)
                    .map_err(|_| E::custom(format!("negative job id {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireJobId, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < 1e15 {
                    Ok(WireJobId(v as u64))
                } else {
                    Err(E::custom(format!("invalid job id {v}")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireJobId, E> {
                v.trim()
                    .parse::<u64>()
                    .map(WireJobId)
                    .map_err(|_| E::custom(format!("invalid job id {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Ganeti's `[seconds, microseconds]` timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Microseconds within the second.
    pub usecs: i64,
}

impl Timestamp {
    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.secs
            .saturating_mul(1_000_000)
            .saturating_add(self.usecs)
    }

    /// The current time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            usecs: i64::from(d.subsec_micros()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&self.secs)?;
        seq.serialize_element(&self.usecs)?;
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Ganeti writes integers; accept floats too (older job files).
        let (secs, usecs): (f64, f64) = Deserialize::deserialize(d)?;
        Ok(Timestamp {
            secs: secs as i64,
            usecs: usecs as i64,
        })
    }
}

/// One job log entry: `[serial, [sec, usec], type, message]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Job-wide serial number (grows by one per entry).
    pub serial: u64,
    /// When it was logged.
    pub time: Timestamp,
    /// `message`, `remote-import`, ...
    pub kind: String,
    /// Usually a string; some kinds carry structured data.
    pub message: Value,
}

impl LogEntry {
    /// The message as text (JSON for structured messages).
    pub fn text(&self) -> String {
        match &self.message {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.serial, self.time, &self.kind, &self.message).serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LogEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a log entry [serial, [sec, usec], type, message]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LogEntry, A::Error> {
                let serial: u64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let time: Timestamp = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let kind: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let message: Value = seq.next_element()?.unwrap_or(Value::Null);
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(LogEntry {
                    serial,
                    time,
                    kind,
                    message,
                })
            }
        }
        d.deserialize_seq(V)
    }
}

// ------------------------------------------------------------------ cluster, nodes

/// `GET /2/info`: the fields we use, the rest kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
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
    /// Enabled hypervisors.
    #[serde(default, deserialize_with = "null_default")]
    pub enabled_hypervisors: Vec<String>,
    /// Enabled disk templates.
    #[serde(default, deserialize_with = "null_default")]
    pub enabled_disk_templates: Vec<String>,
    /// Cluster-wide backend parameters (`{"default": {...}}`).
    #[serde(default, deserialize_with = "null_default")]
    pub beparams: BTreeMap<String, Map<String, Value>>,
    /// Cluster UUID.
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
    /// Node name.
    pub name: String,
    /// Offline (unreachable, no instances run there).
    #[serde(deserialize_with = "null_default")]
    pub offline: bool,
    /// Drained (no new instances).
    #[serde(deserialize_with = "null_default")]
    pub drained: bool,
    /// Master candidate.
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
    /// Total spindles.
    pub sptotal: Option<u64>,
    /// Free spindles.
    pub spfree: Option<u64>,
    /// CPUs.
    pub ctotal: Option<u64>,
    /// CPUs used by the node OS.
    pub cnos: Option<u64>,
    /// NUMA nodes.
    pub cnodes: Option<u64>,
    /// CPU sockets.
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
    /// Primary IP.
    pub pip: Option<String>,
    /// Secondary IP.
    pub sip: Option<String>,
    /// Node parameters.
    pub ndparams: Option<Value>,
    /// Node group UUID.
    #[serde(rename = "group.uuid")]
    pub group_uuid: Option<String>,
    /// Creation time.
    pub ctime: Option<f64>,
    /// Modification time.
    pub mtime: Option<f64>,
    /// UUID.
    pub uuid: Option<String>,
    /// Config serial.
    pub serial_no: Option<u64>,
    /// Tags.
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
}

// ------------------------------------------------------------------ instances

/// Backend parameters as Ganeti reports them (filled with cluster defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BeParams {
    /// vCPUs.
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
    /// Spindles used.
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
    /// Name.
    pub name: String,
    /// `up`, `down` or `offline`.
    #[serde(deserialize_with = "admin_state")]
    pub admin_state: Option<String>,
    /// OS (`noop+default`).
    pub os: Option<String>,
    /// Primary node.
    pub pnode: Option<String>,
    /// Secondary nodes.
    #[serde(deserialize_with = "null_default")]
    pub snodes: Vec<String>,
    /// Disk template.
    pub disk_template: Option<String>,
    /// NIC IPs.
    #[serde(rename = "nic.ips", deserialize_with = "null_default")]
    pub nic_ips: Vec<Option<String>>,
    /// NIC MACs.
    #[serde(rename = "nic.macs", deserialize_with = "null_default")]
    pub nic_macs: Vec<Option<String>>,
    /// NIC modes.
    #[serde(rename = "nic.modes", deserialize_with = "null_default")]
    pub nic_modes: Vec<Option<String>>,
    /// NIC UUIDs.
    #[serde(rename = "nic.uuids", deserialize_with = "null_default")]
    pub nic_uuids: Vec<Option<String>>,
    /// NIC names.
    #[serde(rename = "nic.names", deserialize_with = "null_default")]
    pub nic_names: Vec<Option<String>>,
    /// NIC links.
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
    /// Disk spindles.
    #[serde(rename = "disk.spindles", deserialize_with = "null_default")]
    pub disk_spindles: Vec<Option<u64>>,
    /// Disk space used (MiB).
    pub disk_usage: Option<u64>,
    /// Disk UUIDs.
    #[serde(rename = "disk.uuids", deserialize_with = "null_default")]
    pub disk_uuids: Vec<Option<String>>,
    /// Disk names.
    #[serde(rename = "disk.names", deserialize_with = "null_default")]
    pub disk_names: Vec<Option<String>>,
    /// Backend parameters (filled).
    #[serde(deserialize_with = "null_default")]
    pub beparams: BeParams,
    /// Hypervisor parameters (filled).
    #[serde(deserialize_with = "null_default")]
    pub hvparams: Map<String, Value>,
    /// Actually running.
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
    /// Creation time.
    pub ctime: Option<f64>,
    /// Modification time.
    pub mtime: Option<f64>,
    /// UUID.
    pub uuid: Option<String>,
    /// Config serial.
    pub serial_no: Option<u64>,
    /// Tags.
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
    /// TCP port.
    pub port: Option<u16>,
    /// SSH user.
    pub user: Option<String>,
    /// SSH command.
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

// ------------------------------------------------------------------ jobs

/// `GET /2/jobs/ID` (Ganeti's `J_FIELDS`). For an unknown job Ganeti 3.0
/// answers 200 with `id` echoed and every other field `null`; the client turns that into
/// [`RapiError::NotFound`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RapiJob {
    /// Job id.
    pub id: Option<WireJobId>,
    /// The opcodes' inputs (each with `OP_ID`).
    pub ops: Option<Vec<Value>>,
    /// Job status.
    pub status: Option<String>,
    /// One summary per op (`INSTANCE_STARTUP(snf-1)`).
    pub summary: Option<Vec<String>>,
    /// One status per op.
    pub opstatus: Option<Vec<String>>,
    /// Submitted.
    pub received_ts: Option<Timestamp>,
    /// Started.
    pub start_ts: Option<Timestamp>,
    /// Ended.
    pub end_ts: Option<Timestamp>,
    /// One log per op.
    pub oplog: Option<Vec<Vec<LogEntry>>>,
    /// One result per op (`["OpPrereqError", [msg, ecode]]` on failure).
    pub opresult: Option<Vec<Value>>,
}

fn parse_status(s: &str) -> Result<JobStatus, RapiError> {
    s.parse::<JobStatus>()
        .map_err(|e| RapiError::Decode(e.to_string()))
}

/// A readable message from a failed op's result (`["OpPrereqError",
/// ["Instance 'x' not known", "unknown_entity"]]` -> `OpPrereqError:
/// Instance 'x' not known (unknown_entity)`): the text form of the
/// [`OpError`] it carries, else the result as it is.
pub fn op_error_message(result: &Value) -> Option<String> {
    match result {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => {
            Some(OpError::from_result(other).map_or_else(|| other.to_string(), |e| e.to_string()))
        }
    }
}

impl RapiJob {
    /// True when Ganeti answered with every field but `id` null (no such job).
    pub fn is_missing(&self) -> bool {
        self.status.is_none() && self.ops.is_none() && self.opstatus.is_none()
    }

    /// The job status.
    pub fn job_status(&self) -> Result<JobStatus, RapiError> {
        parse_status(
            self.status
                .as_deref()
                .ok_or_else(|| RapiError::Decode("job without status".into()))?,
        )
    }

    /// Every log message of every op, oldest first.
    pub fn log_messages(&self) -> Vec<String> {
        self.oplog
            .iter()
            .flatten()
            .flatten()
            .map(LogEntry::text)
            .collect()
    }

    /// The first failing op's result and a readable message for it.
    pub fn failure(&self) -> Option<(Value, String)> {
        let statuses = self.opstatus.as_ref()?;
        let i = statuses
            .iter()
            .position(|s| s == "error" || s == "canceled")?;
        let result = self
            .opresult
            .as_ref()
            .and_then(|r| r.get(i))
            .cloned()
            .unwrap_or(Value::Null);
        let msg = op_error_message(&result).unwrap_or_else(|| {
            self.oplog
                .as_ref()
                .and_then(|l| l.get(i))
                .and_then(|l| l.last())
                .map(LogEntry::text)
                .unwrap_or_else(|| format!("job {}", statuses[i]))
        });
        Some((result, msg))
    }

    /// The core's view of this job.
    pub fn to_job_info(&self) -> Result<JobInfo, RapiError> {
        let id = self
            .id
            .ok_or_else(|| RapiError::Decode("job without id".into()))?;
        let status = self.job_status()?;
        let ops = self.ops.as_deref().unwrap_or_default();
        let opstatus = self.opstatus.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let opcode = op
                .get("OP_ID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let st = match opstatus.get(i) {
                Some(s) => parse_status(s)?,
                None => status,
            };
            out.push(JobOpInfo {
                opcode,
                status: st,
                error: self
                    .opresult
                    .as_ref()
                    .and_then(|r| r.get(i))
                    .and_then(OpError::from_result),
                log: self
                    .oplog
                    .as_ref()
                    .and_then(|l| l.get(i))
                    .map(|l| l.iter().map(LogEntry::text).collect())
                    .unwrap_or_default(),
            });
        }
        Ok(JobInfo {
            id: id.into(),
            status,
            ops: out,
            end_time_us: self.end_ts.map(Timestamp::as_micros),
        })
    }
}

/// `GET /2/jobs/ID/wait` answer when something changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobChange {
    /// The values of the requested fields, in request order.
    pub job_info: Vec<Value>,
    /// Log entries newer than `previous_log_serial`.
    #[serde(default, deserialize_with = "null_default")]
    pub log_entries: Vec<LogEntry>,
}

/// `DELETE /2/jobs/ID` answer: `[success, message]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelResult {
    /// True if the job was (or will be) canceled.
    pub canceled: bool,
    /// Ganeti's message.
    pub message: String,
}

impl<'de> Deserialize<'de> for CancelResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Array(a) => Ok(CancelResult {
                canceled: a.first().and_then(Value::as_bool).unwrap_or(false),
                message: a
                    .get(1)
                    .map(|m| {
                        m.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| m.to_string())
                    })
                    .unwrap_or_default(),
            }),
            Value::Bool(b) => Ok(CancelResult {
                canceled: b,
                message: String::new(),
            }),
            other => Err(de::Error::custom(format!(
                "unexpected cancel answer {other}"
            ))),
        }
    }
}

impl Serialize for CancelResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.canceled, &self.message).serialize(s)
    }
}

/// Ganeti's error body: `{"code": 404, "message": "Not Found", "explain": ...}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// HTTP status code.
    pub code: u16,
    /// Short reason.
    pub message: String,
    /// Longer explanation (may be null).
    pub explain: Option<Value>,
}

impl ErrorBody {
    /// `message: explain` (or just one of them).
    pub fn text(&self) -> String {
        let explain = match &self.explain {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(Value::String(_)) => None,
            Some(other) => Some(other.to_string()),
        };
        match (self.message.is_empty(), explain) {
            (false, Some(e)) => format!("{}: {}", self.message, e),
            (false, None) => self.message.clone(),
            (true, Some(e)) => e,
            (true, None) => format!("HTTP {}", self.code),
        }
    }
}

// ------------------------------------------------------------------ request bodies

/// One disk of a create request (`size` in MiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRequest {
    /// Size in MiB.
    pub size: u64,
    /// `rw` or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Disk name.
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
    /// Ganeti network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// NIC name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fixed MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Backend parameters to set (`maxmem`/`minmem` in MiB).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BeParamsRequest {
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    /// Maximum memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmem: Option<u64>,
    /// Minimum memory.
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
    /// Instance name.
    pub instance_name: String,
    /// Disk template.
    pub disk_template: String,
    /// Disks.
    pub disks: Vec<DiskRequest>,
    /// NICs.
    pub nics: Vec<NicRequest>,
    /// OS (`snf-image+default`).
    pub os_type: String,
    /// OS parameters.
    #[serde(default)]
    pub osparams: BTreeMap<String, String>,
    /// OS parameters Ganeti passes to the OS but never stores.
    #[serde(default, skip_serializing_if = "SecretOsParams::is_empty")]
    pub osparams_secret: SecretOsParams,
    /// Backend parameters.
    #[serde(default)]
    pub beparams: BeParamsRequest,
    /// Hypervisor parameters.
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
    /// Tags.
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
    /// Disk modifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Value>>,
    /// Skip safety checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_ids_are_numbers_or_strings() {
        let a: WireJobId = serde_json::from_value(json!(42)).unwrap();
        let b: WireJobId = serde_json::from_value(json!("42")).unwrap();
        assert_eq!(a, b);
        assert!(serde_json::from_value::<WireJobId>(json!("x")).is_err());
        assert!(serde_json::from_value::<WireJobId>(json!(-1)).is_err());
        assert_eq!(serde_json::to_value(a).unwrap(), json!(42));
    }

    #[test]
    fn log_entries_decode() {
        let e: LogEntry =
            serde_json::from_value(json!([3, [1795555493, 45112], "message", "hi"])).unwrap();
        assert_eq!(e.serial, 3);
        assert_eq!(e.time.as_micros(), 1_795_555_493_045_112);
        assert_eq!(e.text(), "hi");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!([3, [1795555493, 45112], "message", "hi"])
        );
        assert!(serde_json::from_value::<LogEntry>(json!([1])).is_err());
    }

    #[test]
    fn missing_job_is_all_null() {
        let j: RapiJob = serde_json::from_value(json!({"id": 999999, "ops": null, "status": null, "summary": null,
            "opstatus": null, "received_ts": null, "start_ts": null, "end_ts": null, "oplog": null, "opresult": null}))
        .unwrap();
        assert!(j.is_missing());
    }

    #[test]
    fn failed_job_message() {
        let j: RapiJob = serde_json::from_value(json!({"id": 5, "status": "error",
            "ops": [{"OP_ID": "OP_INSTANCE_STARTUP"}], "opstatus": ["error"],
            "opresult": [["OpPrereqError", ["Instance 'x' not known", "unknown_entity"]]],
            "oplog": [[[1, [1, 2], "message", "starting"]]]}))
        .unwrap();
        let (result, msg) = j.failure().unwrap();
        assert_eq!(result[0], "OpPrereqError");
        assert_eq!(
            msg,
            "OpPrereqError: Instance 'x' not known (unknown_entity)"
        );
        let info = j.to_job_info().unwrap();
        assert_eq!(info.status, JobStatus::Error);
        assert_eq!(info.ops[0].opcode, "OP_INSTANCE_STARTUP");
        assert_eq!(info.ops[0].log, vec!["starting".to_string()]);
    }

    #[test]
    fn unknown_status_is_an_error() {
        let j: RapiJob = serde_json::from_value(json!({"id": 5, "status": "weird"})).unwrap();
        assert!(matches!(j.to_job_info(), Err(RapiError::Decode(_))));
    }

    #[test]
    fn cancel_results() {
        let c: CancelResult =
            serde_json::from_value(json!([true, "Job 3 will be canceled"])).unwrap();
        assert!(c.canceled);
        let c: CancelResult =
            serde_json::from_value(json!([false, "Job 3 is no longer waiting in the queue"]))
                .unwrap();
        assert!(!c.canceled);
    }

    #[test]
    fn admin_state_old_and_new() {
        let i: Instance =
            serde_json::from_value(json!({"name": "a", "admin_state": true})).unwrap();
        assert_eq!(i.admin_state.as_deref(), Some("up"));
        let i: Instance =
            serde_json::from_value(json!({"name": "a", "admin_state": "down", "nic.ips": null}))
                .unwrap();
        assert_eq!(i.admin_state.as_deref(), Some("down"));
        assert!(i.nic_ips.is_empty());
    }
}
