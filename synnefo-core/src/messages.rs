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
use crate::model::Nic;
use crate::state::{JobStatus, OpError, OpStatusEvent};

/// The exchange all notifications go to (topic, durable).
pub const EXCHANGE: &str = "ganeti";

/// The kind of a notification, which picks its queue and handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    /// `ganeti-op-status`.
    OpStatus,
    /// `ganeti-net-status`.
    NetStatus,
}

impl MessageKind {
    /// Both kinds.
    pub const ALL: [MessageKind; 2] = [MessageKind::OpStatus, MessageKind::NetStatus];

    /// The routing key for this kind under an instance-name prefix.
    pub fn routing_key(self, prefix: &str) -> String {
        let p = prefix.trim_end_matches('-');
        match self {
            MessageKind::OpStatus => format!("ganeti.{p}.event.op"),
            MessageKind::NetStatus => format!("ganeti.{p}.event.net"),
        }
    }

    /// The `type` field value.
    pub fn type_name(self) -> &'static str {
        match self {
            MessageKind::OpStatus => "ganeti-op-status",
            MessageKind::NetStatus => "ganeti-net-status",
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
    /// Opcode inputs that matter (nics, disks, beparams, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_fields: Option<Value>,
    /// The instance's NICs after a successful op that changes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_nics: Option<Vec<WireNic>>,
    /// The instance's disks after such an op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_disks: Option<Value>,
    /// Hypervisor parameters after such an op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_hvparams: Option<Value>,
    /// Index of the opcode within its job (ours; absent from Synnefo's
    /// messages, where jobs have one opcode, hence the default 0).
    #[serde(default)]
    pub op_index: u32,
}

/// A NIC on the wire (hook and eventd).
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
        .map(|(i, n)| Nic {
            index: i as i32,
            ip: n.ip.clone().filter(|s| !s.is_empty()),
            mac: n.mac.clone().filter(|s| !s.is_empty()),
            network: n.network.clone().filter(|s| !s.is_empty()),
            link: n.link.clone().filter(|s| !s.is_empty()),
            mode: n.mode.clone().filter(|s| !s.is_empty()),
        })
        .collect()
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
        Ok(Notification::OpStatus {
            vm: name.vm_id(),
            event,
            nics: self.instance_nics.as_deref().map(to_nics),
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

/// Decodes a message body of either kind (dispatching on its `type`).
pub fn decode(body: &[u8], prefix: &str) -> Result<Notification, EventError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
    match probe.kind.as_str() {
        "ganeti-op-status" => serde_json::from_slice::<OpStatusMessage>(body)
            .map_err(|e| EventError::Malformed(e.to_string()))?
            .into_notification(prefix),
        "ganeti-net-status" => serde_json::from_slice::<NetStatusMessage>(body)
            .map_err(|e| EventError::Malformed(e.to_string()))?
            .into_notification(prefix),
        other => Err(EventError::Malformed(format!(
            "unknown message type {other:?}"
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
            Notification::OpStatus { vm, event, nics } => {
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
                br#"{"type":"ganeti-op-status","instance":"snf-1","operation":"OP_FOO","jobId":1,"status":"success","event_time":[1,0]}"#,
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
