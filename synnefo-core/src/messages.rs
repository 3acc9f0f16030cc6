//! Backend notifications on the bus, in the wire format of Synnefo's own
//! later `snf-ganeti-eventd` (0.16–0.20), so our dispatcher and eventd are
//! drop-in replacements for theirs, one component at a time.
//!
//! Routing keys: `ganeti.<prefix>.event.op` and `ganeti.<prefix>.event.net`
//! where `<prefix>` is `BACKEND_PREFIX_ID` without its trailing `-`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EventError;
use crate::ids::{InstanceName, JobId, VmId};
use crate::model::{BeParams, Nic};
use crate::state::{JobStatus, OpError, OpStatusEvent};

mod progress;
mod synnefo;

pub use progress::{
    BuildReport, DiagnosticLevel, KNOWN_TYPES as PROGRESS_TYPES, MAX_DIAGNOSTIC_DETAILS,
    MAX_DIAGNOSTIC_MESSAGE, MAX_DIAGNOSTIC_SOURCE, NewDiagnostic, ProgressNote,
};
pub use synnefo::{
    ClusterStatusMessage, InstanceDisk, InstanceHvParams, InstanceNic, NetworkJobFields,
    NetworkStatusMessage, ProgressMessage,
};

/// The exchange all notifications go to (topic, durable).
pub const EXCHANGE: &str = "ganeti";

/// The kind of a notification, which picks its queue and handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    /// `ganeti-op-status`.
    OpStatus,
    /// `ganeti-net-status` (the Ganeti hook's NICs; ours and Synnefo's
    /// before 0.14).
    NetStatus,
    /// `ganeti-network-status`: Synnefo's eventd for `OP_NETWORK_*` jobs.
    NetworkStatus,
    /// snf-image's progress monitor: `image-copy-progress`,
    /// `image-helper`, `image-error`, `image-info`.
    Progress,
    /// `ganeti-cluster-status`: Synnefo's eventd for `OP_CLUSTER_SET_PARAMS`
    /// (its routing key carries no prefix).
    ClusterStatus,
}

impl MessageKind {
    /// The kinds our own processes publish: their queues always exist.
    pub const ALL: [MessageKind; 2] = [MessageKind::OpStatus, MessageKind::NetStatus];

    /// The kinds of Synnefo's own queues: what Synnefo's eventd and
    /// snf-image's progress monitor publish (ours, `synnefo
    /// progress-monitor`, publishes the progress kind too); their queues
    /// exist when `amqp.topology.synnefo_queues` (the default).
    pub const SYNNEFO: [MessageKind; 3] = [
        MessageKind::NetworkStatus,
        MessageKind::Progress,
        MessageKind::ClusterStatus,
    ];

    /// The routing key for this kind under an instance-name prefix.
    pub fn routing_key(self, prefix: &str) -> String {
        let p = prefix.trim_end_matches('-');
        match self {
            MessageKind::OpStatus => format!("ganeti.{p}.event.op"),
            MessageKind::NetStatus => format!("ganeti.{p}.event.net"),
            MessageKind::NetworkStatus => format!("ganeti.{p}.event.network"),
            MessageKind::Progress => format!("ganeti.{p}.event.progress"),
            MessageKind::ClusterStatus => "ganeti.event.cluster".to_string(),
        }
    }

    /// The `type` field value (for [`MessageKind::Progress`], the family:
    /// each message's own type starts with `image-`).
    pub fn type_name(self) -> &'static str {
        match self {
            MessageKind::OpStatus => "ganeti-op-status",
            MessageKind::NetStatus => "ganeti-net-status",
            MessageKind::NetworkStatus => "ganeti-network-status",
            MessageKind::Progress => "image-progress",
            MessageKind::ClusterStatus => "ganeti-cluster-status",
        }
    }

    /// The last word of Synnefo's queue name for this kind
    /// (`<prefix>-events-<word>`).
    pub fn queue_word(self) -> &'static str {
        match self {
            MessageKind::OpStatus => "op",
            MessageKind::NetStatus => "net",
            MessageKind::NetworkStatus => "network",
            MessageKind::Progress => "progress",
            MessageKind::ClusterStatus => "cluster",
        }
    }
}

/// `ganeti-op-status`: one opcode of one job changed status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpStatusMessage {
    /// Always `ganeti-op-status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Instance name (`snf-42`).
    pub instance: String,
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
    /// Opcode inputs that matter: `{nics, disks, hvparams, beparams}` for
    /// `OP_INSTANCE_CREATE`/`SET_PARAMS`, `{disks}` for a snapshot, the
    /// whole input for a failed create (`{}` for other opcodes from
    /// Synnefo's eventd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_fields: Option<Value>,
    /// The instance's NICs as Ganeti has them, with a successful create or
    /// startup and a finished modify or disk grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_nics: Option<Vec<InstanceNic>>,
    /// The instance's disks, with the same ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_disks: Option<Vec<InstanceDisk>>,
    /// The instance's (filled) boot hypervisor parameters, with the same ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_hvparams: Option<InstanceHvParams>,
    /// Index of the opcode within its job (ours; absent from Synnefo's
    /// messages, where jobs have one opcode, hence the default 0).
    #[serde(default)]
    pub op_index: u32,
}

/// A NIC on the wire (the hook's `ganeti-net-status`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WireNic {
    /// Address.
    #[serde(default)]
    pub ip: Option<String>,
    /// MAC.
    #[serde(default)]
    pub mac: Option<String>,
    /// Link.
    #[serde(default)]
    pub link: Option<String>,
    /// Ganeti network.
    #[serde(default)]
    pub network: Option<String>,
    /// Mode.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `ganeti-net-status`: the instance's NICs, from the Ganeti hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetStatusMessage {
    /// Always `ganeti-net-status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Instance name.
    pub instance: String,
    /// The NICs.
    pub nics: Vec<WireNic>,
    /// `[seconds, microseconds]` when the hook ran (ours; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<(i64, i64)>,
    /// Cluster name (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A decoded notification, addressed to one of our VMs.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// An op-status change.
    OpStatus {
        /// The VM.
        vm: VmId,
        /// The event.
        event: OpStatusEvent,
        /// NICs reported with a successful op, if any.
        nics: Option<Vec<Nic>>,
        /// The backend parameters a successful op set (its input's
        /// `beparams`, which Synnefo's eventd sends for `CREATE` and
        /// `SET_PARAMS`), if it set any.
        beparams: Option<BeParams>,
    },
    /// NIC state from the hook.
    NetStatus {
        /// The VM.
        vm: VmId,
        /// The NICs.
        nics: Vec<Nic>,
        /// When, microseconds since the epoch.
        time_us: Option<i64>,
    },
}

impl Notification {
    /// The VM the notification is about.
    pub fn vm(&self) -> VmId {
        match self {
            Notification::OpStatus { vm, .. } | Notification::NetStatus { vm, .. } => *vm,
        }
    }
}

fn to_nics(wire: &[WireNic]) -> Vec<Nic> {
    wire.iter()
        .enumerate()
        .map(|(i, n)| nic(i, &n.ip, &n.mac, &n.network, &n.link, &n.mode))
        .collect()
}

fn instance_nics_to_nics(wire: &[InstanceNic]) -> Vec<Nic> {
    wire.iter()
        .enumerate()
        .map(|(i, n)| nic(i, &n.ip, &n.mac, &n.network, &n.link, &n.mode))
        .collect()
}

fn nic(
    index: usize,
    ip: &Option<String>,
    mac: &Option<String>,
    network: &Option<String>,
    link: &Option<String>,
    mode: &Option<String>,
) -> Nic {
    let keep = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Nic {
        index: i32::try_from(index).unwrap_or(i32::MAX),
        ip: keep(ip),
        mac: keep(mac),
        network: keep(network),
        link: keep(link),
        mode: keep(mode),
    }
}

/// `job_fields.beparams` of an op-status message: `vcpus` and `maxmem`
/// (`memory` before Ganeti 2.6), as numbers or as the strings Ganeti's
/// command line passes (`"2"`, `"512"`, `"512M"`, `"1G"`). Absent or empty:
/// `None`; a value that is neither: malformed.
fn beparams_of(job_fields: Option<&Value>) -> Result<Option<BeParams>, EventError> {
    let Some(Value::Object(be)) = job_fields.and_then(|f| f.get("beparams")) else {
        return Ok(None);
    };
    let read = |key: &str, unit_mib: bool| -> Result<Option<i32>, EventError> {
        let Some(v) = be.get(key).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let bad = || EventError::Malformed(format!("beparams {key}: {}", bounded(&v.to_string())));
        let n: i64 = match v {
            Value::Number(n) => n.as_i64().ok_or_else(bad)?,
            Value::String(t) => {
                let t = t.trim();
                let (digits, factor) = match t.as_bytes().last() {
                    Some(b'M' | b'm') if unit_mib => (&t[..t.len() - 1], 1),
                    Some(b'G' | b'g') if unit_mib => (&t[..t.len() - 1], 1024),
                    Some(b'T' | b't') if unit_mib => (&t[..t.len() - 1], 1024 * 1024),
                    _ => (t, 1),
                };
                digits
                    .parse::<i64>()
                    .ok()
                    .and_then(|d| d.checked_mul(factor))
                    .ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
        i32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(bad)
    };
    let params = BeParams {
        vcpus: read("vcpus", false)?,
        ram_mib: match read("maxmem", true)? {
            Some(m) => Some(m),
            None => read("memory", true)?,
        },
        requested: None,
    };
    Ok((!params.is_empty()).then_some(params))
}

fn time_us((sec, usec): (i64, i64)) -> Result<i64, EventError> {
    if !(0..1_000_000).contains(&usec) || sec < 0 {
        return Err(EventError::Malformed(format!(
            "bad event_time [{sec}, {usec}]"
        )));
    }
    sec.checked_mul(1_000_000)
        .and_then(|v| v.checked_add(usec))
        .ok_or_else(|| EventError::Malformed(format!("event_time out of range [{sec}, {usec}]")))
}

impl OpStatusMessage {
    /// Validates the message into a [`Notification`] for `prefix`'s VMs.
    ///
    /// A failed opcode whose `result` is Ganeti's error
    /// (`["OpPrereqError", ["Instance 'snf-1' not known", "unknown_entity"]]`)
    /// carries it typed ([`OpStatusEvent::error`], read here by
    /// [`OpError::from_result`], the one reader of that tuple); the
    /// producer's `logmsg` (our eventd's rendering, or, from Synnefo's own
    /// eventd, the op's last progress line) stays as it came.
    pub fn into_notification(self, prefix: &str) -> Result<Notification, EventError> {
        if self.kind != MessageKind::OpStatus.type_name() {
            return Err(EventError::Malformed(format!(
                "unexpected type {:?}",
                self.kind
            )));
        }
        let name = InstanceName::parse(prefix, &self.instance)
            .ok_or_else(|| EventError::ForeignInstance(self.instance.clone()))?;
        let opcode = self.operation.parse()?;
        let status: JobStatus = self.status.parse()?;
        let error = match status {
            JobStatus::Error => OpError::from_result(&self.result),
            _ => None,
        };
        let event = OpStatusEvent {
            job_id: JobId(self.job_id),
            op_index: self.op_index,
            opcode,
            status,
            log_msg: self.logmsg,
            error,
            time_us: time_us(self.event_time)?,
        };
        // Synnefo's dispatcher takes the flavor from the beparams of any
        // successful op whose message carries them (its eventd sends them
        // for CREATE and SET_PARAMS).
        let beparams = match event.status {
            JobStatus::Success => beparams_of(self.job_fields.as_ref())?,
            _ => None,
        };
        Ok(Notification::OpStatus {
            vm: name.vm_id(),
            event,
            nics: self.instance_nics.as_deref().map(instance_nics_to_nics),
            beparams,
        })
    }
}

impl NetStatusMessage {
    /// Validates the message into a [`Notification`] for `prefix`'s VMs.
    pub fn into_notification(self, prefix: &str) -> Result<Notification, EventError> {
        if self.kind != MessageKind::NetStatus.type_name() {
            return Err(EventError::Malformed(format!(
                "unexpected type {:?}",
                self.kind
            )));
        }
        let name = InstanceName::parse(prefix, &self.instance)
            .ok_or_else(|| EventError::ForeignInstance(self.instance.clone()))?;
        Ok(Notification::NetStatus {
            vm: name.vm_id(),
            nics: to_nics(&self.nics),
            time_us: self.event_time.map(time_us).transpose()?,
        })
    }
}

/// Decodes a message that changes a server (`ganeti-op-status` of a
/// tracked opcode, `ganeti-net-status`); anything else [`decode_any`]
/// reads is an error here.
pub fn decode(body: &[u8], prefix: &str) -> Result<Notification, EventError> {
    match decode_any(body, prefix)? {
        Decoded::Apply(n) => Ok(n),
        Decoded::Record(r) => Err(EventError::Malformed(format!(
            "a {} message changes no server here",
            r.label()
        ))),
        Decoded::Progress(_) => Err(EventError::Malformed(
            "a build progress message changes no server state".into(),
        )),
    }
}

/// A message that is understood but changes no server here: what Synnefo's
/// eventd and snf-image publish for things this control plane does not
/// model yet (networks, cluster parameters, build progress), and opcodes
/// with no state effect. The dispatcher acknowledges and counts each, as
/// Synnefo's dispatcher acknowledges what it has no callback for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An `OP_*` opcode we do not track on one of our servers (tags,
    /// backups, other instance ops): Ganeti ran it, no state follows.
    Op {
        /// The server.
        vm: VmId,
        /// The opcode (well-formed `OP_[A-Z0-9_]+`, at most 64 bytes).
        opcode: String,
        /// Its status.
        status: JobStatus,
    },
    /// `ganeti-network-status` for a Ganeti network.
    Network {
        /// The Ganeti network's name.
        network: String,
        /// The `OP_NETWORK_*` opcode.
        opcode: String,
        /// Its status.
        status: JobStatus,
    },
    /// `ganeti-cluster-status`.
    Cluster {
        /// The cluster's name, if given.
        cluster: Option<String>,
    },
    /// An `image-*` message for one of our servers of a type Synnefo's
    /// dispatcher does not act on either (the build messages it acts on
    /// are [`Decoded::Progress`]).
    Progress {
        /// The server.
        vm: VmId,
        /// The `image-*` type.
        kind: String,
    },
}

impl Record {
    /// A short label for logs and metrics (a fixed set of values).
    pub fn label(&self) -> &'static str {
        match self {
            Record::Op { .. } => "untracked-op",
            Record::Network { .. } => "network",
            Record::Cluster { .. } => "cluster",
            Record::Progress { .. } => "progress",
        }
    }
}

/// What a message on the bus is, once read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A notification that changes (or may change) one of our servers.
    Apply(Notification),
    /// Understood; changes nothing here (acknowledged and counted).
    Record(Record),
    /// snf-image's build progress or a diagnostic for one of our servers
    /// (applied by [`crate::service::build`], outside the state machine).
    Progress(ProgressNote),
}

/// An opcode name as Ganeti writes them: `OP_` then capitals, digits and
/// underscores, bounded.
fn well_formed_opcode(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with("OP_")
        && s.len() > 3
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn bounded(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Reads any message Synnefo 0.16-0.20's eventd, its Ganeti hook (before
/// 0.14), snf-image's progress monitor or our own producers publish, for
/// `prefix`'s servers.
///
/// Errors: [`EventError::ForeignInstance`] for another deployment's
/// instance (Synnefo ignores those), [`EventError::Malformed`] for bodies
/// that are not JSON, lack a key or carry a type nobody publishes, and
/// [`EventError::UnknownStatus`] for a job status Ganeti does not define.
pub fn decode_any(body: &[u8], prefix: &str) -> Result<Decoded, EventError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
    }
    let malformed = |e: serde_json::Error| EventError::Malformed(e.to_string());
    let probe: Probe = serde_json::from_slice(body).map_err(malformed)?;
    match probe.kind.as_str() {
        "ganeti-op-status" => {
            let m: OpStatusMessage = serde_json::from_slice(body).map_err(malformed)?;
            if m.operation.parse::<crate::state::OpCode>().is_err()
                && well_formed_opcode(&m.operation)
            {
                let name = InstanceName::parse(prefix, &m.instance)
                    .ok_or_else(|| EventError::ForeignInstance(bounded(&m.instance)))?;
                return Ok(Decoded::Record(Record::Op {
                    vm: name.vm_id(),
                    opcode: m.operation,
                    status: m.status.parse()?,
                }));
            }
            m.into_notification(prefix).map(Decoded::Apply)
        }
        "ganeti-net-status" => serde_json::from_slice::<NetStatusMessage>(body)
            .map_err(malformed)?
            .into_notification(prefix)
            .map(Decoded::Apply),
        "ganeti-network-status" => {
            #[derive(Deserialize)]
            struct Network {
                network: String,
                operation: String,
                status: String,
            }
            let m: Network = serde_json::from_slice(body).map_err(malformed)?;
            if !well_formed_opcode(&m.operation) {
                return Err(EventError::Malformed(format!(
                    "bad operation {:?}",
                    bounded(&m.operation)
                )));
            }
            Ok(Decoded::Record(Record::Network {
                network: bounded(&m.network),
                opcode: m.operation,
                status: m.status.parse()?,
            }))
        }
        "ganeti-cluster-status" | "eventd-heartbeat" => {
            #[derive(Deserialize)]
            struct Cluster {
                #[serde(default)]
                cluster: Option<String>,
            }
            let m: Cluster = serde_json::from_slice(body).map_err(malformed)?;
            Ok(Decoded::Record(Record::Cluster {
                cluster: m.cluster.as_deref().map(bounded),
            }))
        }
        t if t.starts_with("image-") && t.len() <= 64 => {
            let m: ProgressMessage = serde_json::from_slice(body).map_err(malformed)?;
            let kind = m.kind.clone();
            let instance = m.instance.clone();
            match m.into_note(prefix)? {
                Some(note) => Ok(Decoded::Progress(note)),
                None => {
                    let name = InstanceName::parse(prefix, &instance)
                        .ok_or_else(|| EventError::ForeignInstance(bounded(&instance)))?;
                    Ok(Decoded::Record(Record::Progress {
                        vm: name.vm_id(),
                        kind: bounded(&kind),
                    }))
                }
            }
        }
        other => Err(EventError::Malformed(format!(
            "unknown message type {:?}",
            bounded(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{OpCode, OperState};

    #[test]
    fn decodes_a_synnefo_op_status_message() {
        let body =
            br#"{"type":"ganeti-op-status","instance":"snf-42","operation":"OP_INSTANCE_STARTUP",
            "jobId":1234,"status":"success","logmsg":null,"result":null,"event_time":[1700000000,5],
            "cluster":"c1"}"#;
        let n = decode(body, "snf-").unwrap();
        match n {
            Notification::OpStatus {
                vm, event, nics, ..
            } => {
                assert_eq!(vm, VmId(42));
                assert_eq!(event.opcode, OpCode::InstanceStartup);
                assert_eq!(event.status, JobStatus::Success);
                assert_eq!(event.time_us, 1_700_000_000_000_005);
                assert_eq!(event.op_index, 0);
                assert!(nics.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    fn set_params(status: &str, job_fields: &str) -> Result<Notification, EventError> {
        let body = format!(
            r#"{{"type":"ganeti-op-status","instance":"snf-7","operation":"OP_INSTANCE_SET_PARAMS","jobId":3,"status":"{status}","event_time":[1,0],"job_fields":{job_fields}}}"#
        );
        decode(body.as_bytes(), "snf-")
    }

    fn beparams(n: Notification) -> Option<BeParams> {
        match n {
            Notification::OpStatus { beparams, .. } => beparams,
            other => panic!("{other:?}"),
        }
    }

    /// What Synnefo's eventd puts in `job_fields.beparams`, as numbers or
    /// as Ganeti's command line leaves them.
    #[test]
    fn reads_the_beparams_of_a_successful_set_params() {
        let be = |vcpus, ram_mib| {
            Some(BeParams {
                vcpus,
                ram_mib,
                requested: None,
            })
        };
        let cases = [
            (
                r#"{"beparams":{"vcpus":2,"maxmem":256}}"#,
                be(Some(2), Some(256)),
            ),
            (r#"{"beparams":{"vcpus":"4"}}"#, be(Some(4), None)),
            (r#"{"beparams":{"maxmem":"2G"}}"#, be(None, Some(2048))),
            (r#"{"beparams":{"memory":"512M"}}"#, be(None, Some(512))),
            (
                r#"{"beparams":{"maxmem":1024,"memory":512}}"#,
                be(None, Some(1024)),
            ),
            (r#"{"beparams":{},"nics":[]}"#, None),
            (r#"{"beparams":{"auto_balance":true}}"#, None),
            (r#"{"nics":[]}"#, None),
            ("null", None),
        ];
        for (fields, want) in cases {
            assert_eq!(
                beparams(set_params("success", fields).unwrap()),
                want,
                "{fields}"
            );
        }
        // only a success resizes
        for status in ["error", "running", "canceled"] {
            let n = set_params(status, r#"{"beparams":{"vcpus":2}}"#).unwrap();
            assert_eq!(beparams(n), None, "{status}");
        }
        // values no Ganeti sends: malformed, never a panic
        for bad in [
            r#"{"beparams":{"vcpus":"two"}}"#,
            r#"{"beparams":{"vcpus":-1}}"#,
            r#"{"beparams":{"vcpus":0}}"#,
            r#"{"beparams":{"maxmem":99999999999}}"#,
            r#"{"beparams":{"maxmem":"9999999999G"}}"#,
            r#"{"beparams":{"maxmem":[1]}}"#,
            r#"{"beparams":{"maxmem":"G"}}"#,
        ] {
            assert!(
                matches!(set_params("success", bad), Err(EventError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_bad_messages_with_a_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "malformed"),
            (br#"{"type":"what"}"#, "unknown message type"),
            (
                br#"{"type":"ganeti-op-status","instance":"other-1","operation":"OP_INSTANCE_STARTUP","jobId":1,"status":"success","event_time":[1,0]}"#,
                "not one of ours",
            ),
            (
                br#"{"type":"ganeti-op-status","instance":"snf-1","operation":"op foo","jobId":1,"status":"success","event_time":[1,0]}"#,
                "unknown opcode",
            ),
            (
                br#"{"type":"ganeti-op-status","instance":"snf-1","operation":"OP_INSTANCE_STARTUP","jobId":1,"status":"done","event_time":[1,0]}"#,
                "unknown job status",
            ),
            (
                br#"{"type":"ganeti-op-status","instance":"snf-1","operation":"OP_INSTANCE_STARTUP","jobId":1,"status":"success","event_time":[1,2000000]}"#,
                "bad event_time",
            ),
        ];
        for (body, want) in cases {
            let err = decode(body, "snf-").unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    /// The op of a job file Ganeti 3.0 wrote (the lab's recorded queue).
    fn recorded_op(file: &str) -> serde_json::Value {
        let path = format!(
            "{}/../synnefo-ganeti/tests/fixtures/ganeti-3.0/queue/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let job: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        job["ops"][0].clone()
    }

    fn failed_op(operation: &str, logmsg: Option<&str>, result: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": "ganeti-op-status", "instance": "snf-42", "operation": operation,
            "jobId": 12, "status": "error", "logmsg": logmsg, "result": result,
            "event_time": [1_795_644_193, 457_784],
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_op_carries_ganetis_error_with_its_code() {
        // job-12: Ganeti 3.0 failing an op on an instance it does not know
        // (a startup in the recording; a removal fails in the same
        // prerequisite, `_ExpandAndLockInstance`, with the same result).
        let unknown = recorded_op("job-12");
        assert_eq!(unknown["status"], "error");
        assert_eq!(unknown["log"], serde_json::json!([]), "no log at all");
        // Our eventd's logmsg (the error without its code), and Synnefo's
        // eventd's (the last log line: none here).
        for logmsg in [Some("OpPrereqError: Instance 'snf-nosuch' not known"), None] {
            let body = failed_op("OP_INSTANCE_REMOVE", logmsg, unknown["result"].clone());
            let Notification::OpStatus { event, .. } = decode(&body, "snf-").unwrap() else {
                panic!()
            };
            assert_eq!(
                event.log_msg.as_deref(),
                logmsg,
                "the producer's line stays"
            );
            assert_eq!(
                event.message().as_deref(),
                Some("OpPrereqError: Instance 'snf-nosuch' not known (unknown_entity)")
            );
            let err = event.error.clone().unwrap();
            assert_eq!(
                (err.class.as_str(), err.code),
                (
                    "OpPrereqError",
                    Some(crate::state::ErrorCode::UnknownEntity)
                )
            );
            assert!(event.removes_missing_instance());
            assert_eq!(event.determined_state(), Some(OperState::Destroyed));
        }
        // The same failure of a startup determines nothing.
        let body = failed_op("OP_INSTANCE_STARTUP", None, unknown["result"].clone());
        let Notification::OpStatus { event, .. } = decode(&body, "snf-").unwrap() else {
            panic!()
        };
        assert!(!event.removes_missing_instance());
        assert_eq!(event.determined_state(), None);

        // job-13: a create the instance policy rejected (`wrong_input`).
        let rejected = recorded_op("job-13");
        let body = failed_op("OP_INSTANCE_CREATE", None, rejected["result"].clone());
        let Notification::OpStatus { event, .. } = decode(&body, "snf-").unwrap() else {
            panic!()
        };
        let msg = event.message().unwrap();
        assert!(
            msg.starts_with("OpPrereqError: Instance allocation to group")
                && msg.ends_with("(wrong_input)"),
            "{msg}"
        );
        assert_eq!(event.determined_state(), Some(OperState::Error));
        // The same result on a removal is not "the instance is gone".
        let body = failed_op("OP_INSTANCE_REMOVE", None, rejected["result"].clone());
        let Notification::OpStatus { event, .. } = decode(&body, "snf-").unwrap() else {
            panic!()
        };
        assert!(!event.removes_missing_instance());

        // No error in the result: the producer's logmsg stays.
        let body = failed_op(
            "OP_INSTANCE_REMOVE",
            Some("disk busy"),
            serde_json::Value::Null,
        );
        let Notification::OpStatus { event, .. } = decode(&body, "snf-").unwrap() else {
            panic!()
        };
        assert_eq!(event.log_msg.as_deref(), Some("disk busy"));
        assert_eq!(event.determined_state(), None);
    }

    #[test]
    fn routing_keys_follow_synnefo() {
        assert_eq!(
            MessageKind::OpStatus.routing_key("snf-"),
            "ganeti.snf.event.op"
        );
        assert_eq!(
            MessageKind::NetStatus.routing_key("snf-"),
            "ganeti.snf.event.net"
        );
        let synnefo: Vec<String> = MessageKind::SYNNEFO
            .iter()
            .map(|k| k.routing_key("snf-"))
            .collect();
        assert_eq!(
            synnefo,
            [
                "ganeti.snf.event.network",
                "ganeti.snf.event.progress",
                "ganeti.event.cluster"
            ]
        );
    }

    #[test]
    fn what_changes_no_server_here_is_read_as_a_record() {
        let rec = |body: &[u8]| match decode_any(body, "snf-") {
            Ok(Decoded::Record(r)) => r,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
        };
        assert_eq!(
            rec(br#"{"type":"ganeti-op-status","instance":"snf-3","operation":"OP_TAGS_SET","jobId":1,"status":"success","event_time":[1,0]}"#),
            Record::Op {
                vm: VmId(3),
                opcode: "OP_TAGS_SET".into(),
                status: JobStatus::Success
            }
        );
        assert_eq!(
            decode_any(
                br#"{"type":"image-copy-progress","instance":"snf-3","progress":42.5,"event_time":[1,0]}"#,
                "snf-"
            )
            .unwrap(),
            Decoded::Progress(ProgressNote {
                vm: VmId(3),
                time_us: 1_000_000,
                report: BuildReport::Copy { percent: 42 }
            })
        );
        assert_eq!(
            rec(br#"{"type":"image-unheard-of","instance":"snf-3","event_time":[1,0]}"#),
            Record::Progress {
                vm: VmId(3),
                kind: "image-unheard-of".into()
            }
        );
        assert_eq!(
            rec(br#"{"type":"eventd-heartbeat","cluster":"c1"}"#),
            Record::Cluster {
                cluster: Some("c1".into())
            }
        );
        // What a tracked opcode says is applied, as before.
        assert!(matches!(
            decode_any(
                br#"{"type":"ganeti-op-status","instance":"snf-3","operation":"OP_INSTANCE_GROW_DISK","jobId":1,"status":"success","event_time":[1,0]}"#,
                "snf-"
            ),
            Ok(Decoded::Apply(Notification::OpStatus { .. }))
        ));
        // Bad parts are still errors with a reason.
        for (body, want) in [
            (
                &br#"{"type":"image-copy-progress","instance":"snf-3","progress":-4,"event_time":[1,0]}"#[..],
                "progress -4",
            ),
            (
                br#"{"type":"image-helper","instance":"x-3","event_time":[1,0]}"#,
                "not one of ours",
            ),
            (
                br#"{"type":"ganeti-network-status","network":"n","operation":"drop table","jobId":1,"status":"success"}"#,
                "bad operation",
            ),
            (
                br#"{"type":"ganeti-op-status","instance":"snf-3","operation":"OP_TAGS_SET","jobId":1,"status":"done","event_time":[1,0]}"#,
                "unknown job status",
            ),
        ] {
            let err = decode_any(body, "snf-").unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn net_status_round_trips() {
        let m = NetStatusMessage {
            kind: "ganeti-net-status".into(),
            instance: "snf-7".into(),
            nics: vec![WireNic {
                ip: Some("10.0.0.2".into()),
                mac: Some("aa:00:00:00:00:01".into()),
                link: Some("br0".into()),
                network: None,
                mode: Some("bridged".into()),
            }],
            event_time: Some((10, 0)),
            cluster: None,
        };
        let body = serde_json::to_vec(&m).unwrap();
        match decode(&body, "snf-").unwrap() {
            Notification::NetStatus { vm, nics, time_us } => {
                assert_eq!(vm, VmId(7));
                assert_eq!(nics[0].ip.as_deref(), Some("10.0.0.2"));
                assert_eq!(time_us, Some(10_000_000));
            }
            other => panic!("{other:?}"),
        }
    }
}
