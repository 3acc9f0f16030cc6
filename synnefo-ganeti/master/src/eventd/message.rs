//! One opcode of a job file in its current status -> the message Synnefo's
//! eventd publishes for it (pure).
//!
//! The rules are Synnefo 0.16-0.20's (`snf-cyclades-gtools/synnefo/ganeti/
//! eventd.py`, restated in `docs/eventd.md`, "What Synnefo's producers
//! publish"), so that Synnefo's own dispatcher can be fed by this eventd:
//!
//! | opcode | message | routing key |
//! |---|---|---|
//! | `OP_INSTANCE_*` naming one instance (`instance_name`, or `instances` with one) | `ganeti-op-status` | `ganeti.<prefix>.event.op` |
//! | `OP_NETWORK_*` with a `network_name` | `ganeti-network-status` | `ganeti.<prefix>.event.network` |
//! | `OP_CLUSTER_SET_PARAMS` | `ganeti-cluster-status` | `ganeti.event.cluster` |
//! | anything else (tags, nodes, groups, other cluster ops) | none | |
//!
//! Every message carries `event_time`, `operation`, `status`, `cluster`,
//! `logmsg` (the op's last log line), `result` and `jobId`. An op-status
//! message carries `job_fields` (`{nics, disks, hvparams, beparams}` for a
//! create or a modify, the whole input of a failed create, `{disks}` with
//! the snapshot's reason for a snapshot, `{}` otherwise) and, with a
//! successful create or startup and a finished modify or disk grow, what
//! Ganeti has of the instance (`instance_nics`, `instance_disks`,
//! `instance_hvparams`, from [`InstanceInfo`]).
//!
//! Where we differ, on purpose: one message per opcode *status change*,
//! not one per file version ([`super::diff`]); an `event_time` that falls
//! back further instead of being `null`; an `op_index`; OS secret and
//! private parameters blanked in a failed create's input (Ganeti already
//! writes them as `null` in its job files); network and cluster messages
//! only while their queues are declared (`amqp.topology.synnefo_queues`,
//! since this eventd publishes with `mandatory` and an unroutable message
//! would stop the stream), and network messages only for networks whose
//! name routes to this deployment (`<prefix>...`: Synnefo's key for any
//! other network is one nobody here binds). The eventd heartbeat (a
//! dry-run cluster `OP_TAGS_SET` of `snf:eventd:heartbeat:*`, answered on
//! `eventd.heartbeat`) is not sent: that key is bound only while a
//! `snf-dispatcher --status-check` waits, and an unroutable publish here is
//! an error, not a silent drop.

use serde::Serialize;
use serde_json::{Map, Value};
use synnefo_core::messages::{
    ClusterStatusMessage, InstanceNic, MessageKind, NetworkJobFields, NetworkStatusMessage,
    OpStatusMessage,
};
use synnefo_core::state::JobStatus;

use super::ganeti_config::InstanceInfo;
use super::job::{JobFile, OpEntry, Timestamp};

/// Looks up what Ganeti has of an instance (by name).
pub type InstanceLookup<'a> = &'a (dyn Fn(&str) -> Option<InstanceInfo> + Sync);

/// What every message of one eventd shares.
#[derive(Clone, Copy)]
pub struct DiffContext<'a> {
    /// Instance-name prefix (`snf-`).
    pub prefix: &'a str,
    /// Cluster name for the `cluster` field.
    pub cluster: Option<&'a str>,
    /// Fallback event time when the file has no timestamp for a status.
    pub now: Timestamp,
    /// Publish network and cluster messages (their queues are declared).
    pub synnefo_kinds: bool,
    /// Where the instance's NICs, disks and boot parameters come from
    /// (Ganeti's `config.data`). `None`: no Ganeti configuration to read
    /// (the simulator); a successful create or modify then reports the NICs
    /// its input spells out completely (literal IP and MAC), and nothing
    /// else.
    pub instance_info: Option<InstanceLookup<'a>>,
}

impl std::fmt::Debug for DiffContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffContext")
            .field("prefix", &self.prefix)
            .field("cluster", &self.cluster)
            .field("now", &self.now)
            .field("synnefo_kinds", &self.synnefo_kinds)
            .field("instance_info", &self.instance_info.is_some())
            .finish()
    }
}

/// Why an opcode of a job is not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// An opcode Synnefo's eventd publishes nothing for (tags, nodes,
    /// groups, cluster ops other than `OP_CLUSTER_SET_PARAMS`, ...).
    NotPublished(String),
    /// An instance opcode without exactly one instance (multi-alloc, ...).
    NoInstanceName(String),
    /// The instance is another deployment's (not named `<prefix>...`).
    ForeignInstance(String),
    /// A network opcode without a `network_name`.
    NoNetworkName(String),
    /// A network of another deployment (not named `<prefix>...`).
    ForeignNetwork(String),
    /// A network or cluster message while their queues are not declared
    /// (`amqp.topology.synnefo_queues = false`).
    QueuesNotDeclared(String),
}

/// What an opcode is published as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ganeti-op-status` about this instance.
    Instance(String),
    /// `ganeti-network-status` about this Ganeti network.
    Network(String),
    /// `ganeti-cluster-status`.
    Cluster,
}

/// A message eventd publishes, of one of three kinds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventMessage {
    /// `ganeti-op-status`.
    Op(OpStatusMessage),
    /// `ganeti-network-status`.
    Network(NetworkStatusMessage),
    /// `ganeti-cluster-status`.
    Cluster(ClusterStatusMessage),
}

impl EventMessage {
    /// Its kind, which picks the routing key.
    pub fn kind(&self) -> MessageKind {
        match self {
            EventMessage::Op(_) => MessageKind::OpStatus,
            EventMessage::Network(_) => MessageKind::NetworkStatus,
            EventMessage::Cluster(_) => MessageKind::ClusterStatus,
        }
    }

    /// The opcode's status as sent.
    pub fn status(&self) -> &str {
        match self {
            EventMessage::Op(m) => &m.status,
            EventMessage::Network(m) => &m.status,
            EventMessage::Cluster(m) => &m.status,
        }
    }

    /// The op-status message, if it is one.
    pub fn as_op(&self) -> Option<&OpStatusMessage> {
        match self {
            EventMessage::Op(m) => Some(m),
            _ => None,
        }
    }
}

/// The time of an opcode's current status: received for queued, start for
/// waiting, exec (or start) for running, end for terminal statuses, each
/// falling back to the next best known timestamp, then to `now`.
pub fn event_time(job: &JobFile, op: &OpEntry, now: Timestamp) -> Timestamp {
    let chain: [Option<Timestamp>; 5] = match op.status {
        JobStatus::Queued => [job.received, None, None, None, None],
        JobStatus::Waiting => [op.start, job.received, None, None, None],
        JobStatus::Running | JobStatus::Canceling => [op.exec, op.start, job.received, None, None],
        JobStatus::Success | JobStatus::Error | JobStatus::Canceled => {
            [op.end, job.end, op.exec, op.start, job.received]
        }
    };
    chain.into_iter().flatten().next().unwrap_or(now)
}

/// Microseconds since the epoch of a timestamp.
pub fn timestamp_us((sec, usec): Timestamp) -> i64 {
    sec.saturating_mul(1_000_000).saturating_add(usec)
}

/// True when an instance or network named `name` is this deployment's
/// (`<prefix>...`): its messages go on `ganeti.<prefix>.event.*`. With a
/// prefix ending in `-` (Synnefo's `snf-`) that is also the key Synnefo's
/// eventd picks (`ganeti.<name up to its first '-'>.event.*`); any other
/// name would be published where nobody here listens.
fn routes_here(name: &str, prefix: &str) -> bool {
    name.len() > prefix.len() && name.starts_with(prefix)
}

/// What opcode `op` is published as, or why it is not.
pub fn classify(op: &OpEntry, ctx: &DiffContext<'_>) -> Result<Target, Skip> {
    let op_id = op.op_id.as_str();
    match op_id.split('_').nth(1) {
        Some("INSTANCE") => {
            let name = op
                .instance_name
                .as_deref()
                .ok_or_else(|| Skip::NoInstanceName(op_id.to_string()))?;
            // What is named `<prefix>...` is published (a dispatcher ignores
            // names that are not `<prefix><id>`, as Synnefo's does); the rest
            // is another deployment's.
            if !routes_here(name, ctx.prefix) {
                return Err(Skip::ForeignInstance(name.to_string()));
            }
            Ok(Target::Instance(name.to_string()))
        }
        Some("NETWORK") => {
            let name = match op.input.get("network_name") {
                Some(Value::String(s)) if !s.is_empty() => s.as_str(),
                _ => return Err(Skip::NoNetworkName(op_id.to_string())),
            };
            if !ctx.synnefo_kinds {
                return Err(Skip::QueuesNotDeclared(op_id.to_string()));
            }
            if !routes_here(name, ctx.prefix) {
                return Err(Skip::ForeignNetwork(name.to_string()));
            }
            Ok(Target::Network(name.to_string()))
        }
        Some("CLUSTER") if op_id == "OP_CLUSTER_SET_PARAMS" => {
            if !ctx.synnefo_kinds {
                return Err(Skip::QueuesNotDeclared(op_id.to_string()));
            }
            Ok(Target::Cluster)
        }
        _ => Err(Skip::NotPublished(op_id.to_string())),
    }
}

/// `job_fields` of a create or modify: these four inputs, each `null`
/// when the op has none.
#[derive(Serialize)]
struct InstanceJobFields<'a> {
    nics: Option<&'a Value>,
    disks: Option<&'a Value>,
    hvparams: Option<&'a Value>,
    beparams: Option<&'a Value>,
}

/// `job_fields` of a snapshot.
#[derive(Serialize)]
struct SnapshotJobFields {
    disks: Value,
}

/// OS parameters that hold secrets: blanked (each value `null`, as Ganeti
/// writes them to its job files) wherever eventd sends an op's input.
const SECRET_INPUTS: [&str; 2] = ["osparams_secret", "osparams_private"];

/// The op's whole input, secrets blanked.
fn whole_input(input: &Map<String, Value>) -> Value {
    let mut input = input.clone();
    for key in SECRET_INPUTS {
        if let Some(Value::Object(params)) = input.get_mut(key) {
            for v in params.values_mut() {
                *v = Value::Null;
            }
        }
    }
    Value::Object(input)
}

/// A snapshot's disks with Cyclades' `snapshot_info` (the `gnt:user`
/// reason's text, where Cyclades puts `{"snapshot_id": ...}`) on the
/// first disk; the disks as given when the reason is not that.
fn snapshot_disks(input: &Map<String, Value>) -> Option<Value> {
    let mut disks = input
        .get("disks")
        .filter(|d| match d {
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            _ => true,
        })?
        .clone();
    let reason = input
        .get("reason")
        .and_then(|r| r.get(0))
        .and_then(Value::as_array);
    if let Some([Value::String(source), info, ..]) = reason.map(Vec::as_slice)
        && source == "gnt:user"
        && let Some(Value::Object(params)) = disks.get_mut(0).and_then(|d| d.get_mut(1))
    {
        params.insert("snapshot_info".into(), info.clone());
    }
    Some(disks)
}

/// `job_fields` for an op-status message.
pub fn job_fields(op: &OpEntry) -> Value {
    let fields = match op.op_id.as_str() {
        "OP_INSTANCE_CREATE" if op.status == JobStatus::Error => {
            // Synnefo's dispatcher re-submits a create that failed for want
            // of opportunistically locked nodes from exactly this.
            return whole_input(&op.input);
        }
        "OP_INSTANCE_CREATE" | "OP_INSTANCE_SET_PARAMS" => {
            serde_json::to_value(InstanceJobFields {
                nics: op.input.get("nics"),
                disks: op.input.get("disks"),
                hvparams: op.input.get("hvparams"),
                beparams: op.input.get("beparams"),
            })
        }
        "OP_INSTANCE_SNAPSHOT" => match snapshot_disks(&op.input) {
            Some(disks) => serde_json::to_value(SnapshotJobFields { disks }),
            None => Ok(Value::Object(Map::new())),
        },
        _ => Ok(Value::Object(Map::new())),
    };
    fields.unwrap_or_else(|_| Value::Object(Map::new()))
}

/// True when Synnefo's eventd asks Ganeti for the instance's NICs, disks
/// and boot parameters: a successful create or startup, a modify or disk
/// grow that succeeded or failed (its code also names `"cancelled"`, a
/// status Ganeti never writes: a canceled one carries none).
pub fn carries_instance_info(op: &OpEntry) -> bool {
    match op.op_id.as_str() {
        "OP_INSTANCE_CREATE" | "OP_INSTANCE_STARTUP" => op.status == JobStatus::Success,
        "OP_INSTANCE_SET_PARAMS" | "OP_INSTANCE_GROW_DISK" => {
            matches!(op.status, JobStatus::Success | JobStatus::Error)
        }
        _ => false,
    }
}

/// True for `aa:00:00:c6:c6:59`-like addresses (Ganeti also accepts
/// `generate`/`auto` in requests, which are not addresses).
fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Without Ganeti's configuration to read: the NICs a successful create
/// (or a modify given a full NIC list) leaves the instance with, from the
/// opcode input, only when the input spells each NIC out completely (a
/// literal IP and MAC). A request's `"ip": "pool"` or missing MAC is not
/// the instance's state: publishing it would overwrite the real NICs the
/// instance-add-post hook reports. `None` for a modify's `[[op, index,
/// params]]` edits.
pub fn literal_nics(op: &OpEntry) -> Option<Vec<InstanceNic>> {
    if op.status != JobStatus::Success
        || !matches!(
            op.op_id.as_str(),
            "OP_INSTANCE_CREATE" | "OP_INSTANCE_SET_PARAMS"
        )
    {
        return None;
    }
    let list = op.input.get("nics")?.as_array()?;
    let str_field = |o: &Map<String, Value>, k: &str| match o.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    list.iter()
        .map(|nic| {
            let o = nic.as_object()?;
            let ip = str_field(o, "ip").filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())?;
            let mac = str_field(o, "mac").filter(|m| is_mac(m))?;
            Some(InstanceNic {
                name: str_field(o, "name"),
                network: str_field(o, "network"),
                ip: Some(ip),
                mac: Some(mac),
                mode: str_field(o, "mode"),
                link: str_field(o, "link"),
                ..InstanceNic::default()
            })
        })
        .collect()
}

/// A string input, if the op has it as a string.
fn input_str(op: &OpEntry, key: &str) -> Option<String> {
    op.input
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A list-of-strings input (`add_reserved_ips`).
fn input_list(op: &OpEntry, key: &str) -> Option<Vec<String>> {
    op.input.get(key)?.as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
}

/// The message for opcode `index` of `job` in its current status, or why
/// there is none.
pub fn message_for(
    job: &JobFile,
    index: usize,
    op: &OpEntry,
    ctx: &DiffContext<'_>,
) -> Result<EventMessage, Skip> {
    let target = classify(op, ctx)?;
    let op_index = u32::try_from(index).unwrap_or(u32::MAX);
    let event_time = event_time(job, op, ctx.now);
    let cluster = ctx.cluster.map(str::to_string);
    let logmsg = op.last_log.clone();
    Ok(match target {
        Target::Instance(instance) => {
            let mut m = OpStatusMessage {
                kind: MessageKind::OpStatus.type_name().to_string(),
                instance,
                operation: op.op_id.clone(),
                job_id: job.id,
                status: op.status.as_str().to_string(),
                logmsg,
                result: op.result.clone(),
                event_time,
                cluster,
                job_fields: Some(job_fields(op)),
                instance_nics: None,
                instance_disks: None,
                instance_hvparams: None,
                op_index,
            };
            match ctx.instance_info {
                Some(lookup) if carries_instance_info(op) => {
                    if let Some(info) = lookup(&m.instance) {
                        m.instance_nics = Some(info.nics);
                        m.instance_disks = Some(info.disks);
                        m.instance_hvparams = Some(info.hvparams);
                    }
                }
                Some(_) => {}
                None => m.instance_nics = literal_nics(op),
            }
            EventMessage::Op(m)
        }
        Target::Network(network) => EventMessage::Network(NetworkStatusMessage {
            kind: MessageKind::NetworkStatus.type_name().to_string(),
            network,
            operation: op.op_id.clone(),
            job_id: job.id,
            status: op.status.as_str().to_string(),
            logmsg,
            result: op.result.clone(),
            event_time,
            cluster,
            job_fields: NetworkJobFields {
                subnet: input_str(op, "network"),
                gateway: input_str(op, "gateway"),
                add_reserved_ips: input_list(op, "add_reserved_ips"),
                remove_reserved_ips: input_list(op, "remove_reserved_ips"),
                group_name: input_str(op, "group_name"),
            },
            op_index,
        }),
        Target::Cluster => EventMessage::Cluster(ClusterStatusMessage {
            kind: MessageKind::ClusterStatus.type_name().to_string(),
            operation: op.op_id.clone(),
            job_id: job.id,
            status: op.status.as_str().to_string(),
            logmsg,
            result: op.result.clone(),
            event_time,
            cluster,
            op_index,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventd::job::parse_job;
    use serde_json::json;

    const CTX: DiffContext<'static> = DiffContext {
        prefix: "snf-",
        cluster: Some("cluster1.lab.test"),
        now: (9_999_999_999, 0),
        synnefo_kinds: true,
        instance_info: None,
    };

    /// A one-op job in `status` with `input` (OP_ID included).
    fn job(input: Value, status: &str) -> JobFile {
        let body = json!({"id": 40, "received_timestamp": [100, 1], "ops": [{
            "input": input, "status": status, "result": null,
            "log": [[1, [101, 0], "message", "first"], [2, [102, 0], "message", " - INFO: last line"]],
            "start_timestamp": [101, 0], "exec_timestamp": [101, 5], "end_timestamp": [103, 0]}]});
        parse_job(body.to_string().as_bytes(), Some(40)).unwrap()
    }

    fn op_message(job: &JobFile, ctx: &DiffContext<'_>) -> OpStatusMessage {
        match message_for(job, 0, &job.ops[0], ctx).unwrap() {
            EventMessage::Op(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn sample_create() -> JobFile {
        parse_job(include_bytes!("testdata/job-2.json"), Some(2)).unwrap()
    }

    #[test]
    fn a_create_carries_its_four_inputs_and_no_secrets() {
        let mut j = sample_create();
        j.ops[0]
            .input
            .insert("osparams_secret".into(), json!({"img_passwd": "hunter2"}));
        let m = op_message(&j, &CTX);
        assert_eq!(
            m.job_fields,
            Some(json!({
                "nics": [{"ip": "192.0.2.51", "mode": "routed", "link": "100"}],
                "disks": [],
                "hvparams": j.ops[0].input["hvparams"],
                "beparams": {"vcpus": 1, "maxmem": 128, "minmem": 128},
            }))
        );
        assert_eq!(m.logmsg.as_deref(), Some("* starting instance..."));
        // The real create names no MAC (Ganeti generates it) and there is
        // no Ganeti configuration to read: no NICs.
        assert!(m.instance_nics.is_none() && m.instance_disks.is_none());
        let body = serde_json::to_string(&m).unwrap();
        assert!(!body.contains("hunter2") && !body.contains("osparams"));
    }

    #[test]
    fn without_a_ganeti_configuration_only_literal_nics_are_reported() {
        let mut full = sample_create();
        full.ops[0].input.insert(
            "nics".into(),
            json!([{"ip": "192.0.2.51", "mac": "aa:00:00:c6:c6:59", "mode": "routed", "link": "100", "name": "snf-nic-4"}]),
        );
        let nics = op_message(&full, &CTX).instance_nics.unwrap();
        assert_eq!(
            serde_json::to_value(&nics).unwrap(),
            json!([{"name": "snf-nic-4", "network": null, "ip": "192.0.2.51", "mac": "aa:00:00:c6:c6:59",
                    "mode": "routed", "link": "100", "uuid": null}])
        );
        for (ip, mac) in [
            ("pool", "aa:00:00:c6:c6:59"),
            ("192.0.2.51", "generate"),
            ("192.0.2.51", ""),
        ] {
            full.ops[0]
                .input
                .insert("nics".into(), json!([{"ip": ip, "mac": mac}]));
            assert!(
                op_message(&full, &CTX).instance_nics.is_none(),
                "{ip} {mac}"
            );
        }
    }

    #[test]
    fn ganetis_view_of_the_instance_goes_with_the_ops_synnefo_sends_it_with() {
        let info = InstanceInfo {
            nics: vec![InstanceNic {
                name: Some("snf-nic-1".into()),
                ip: Some("10.0.0.2".into()),
                ..InstanceNic::default()
            }],
            disks: vec![],
            hvparams: synnefo_core::messages::InstanceHvParams::default(),
        };
        let asked = std::sync::Mutex::new(Vec::new());
        let lookup = |name: &str| {
            asked.lock().unwrap().push(name.to_string());
            (name == "snf-7").then(|| info.clone())
        };
        let ctx = DiffContext {
            instance_info: Some(&lookup),
            ..CTX
        };
        let cases = [
            ("OP_INSTANCE_CREATE", "success", true),
            ("OP_INSTANCE_CREATE", "error", false),
            ("OP_INSTANCE_CREATE", "running", false),
            ("OP_INSTANCE_STARTUP", "success", true),
            ("OP_INSTANCE_STARTUP", "error", false),
            ("OP_INSTANCE_SET_PARAMS", "success", true),
            ("OP_INSTANCE_SET_PARAMS", "error", true),
            ("OP_INSTANCE_SET_PARAMS", "canceled", false),
            ("OP_INSTANCE_GROW_DISK", "success", true),
            ("OP_INSTANCE_GROW_DISK", "error", true),
            ("OP_INSTANCE_GROW_DISK", "waiting", false),
            ("OP_INSTANCE_REBOOT", "success", false),
            ("OP_INSTANCE_SHUTDOWN", "success", false),
            ("OP_INSTANCE_REMOVE", "success", false),
        ];
        for (opcode, status, carries) in cases {
            let j = job(json!({"OP_ID": opcode, "instance_name": "snf-7"}), status);
            let m = op_message(&j, &ctx);
            assert_eq!(m.instance_nics.is_some(), carries, "{opcode} {status}");
            assert_eq!(m.instance_disks.is_some(), carries, "{opcode} {status}");
            assert_eq!(m.instance_hvparams.is_some(), carries, "{opcode} {status}");
            if carries {
                assert_eq!(m.instance_nics.unwrap(), info.nics);
            }
        }
        // An instance Ganeti no longer has: nothing, not a guess.
        let gone = job(
            json!({"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "snf-8"}),
            "success",
        );
        let m = op_message(&gone, &ctx);
        assert!(m.instance_nics.is_none() && m.instance_hvparams.is_none());
        assert_eq!(asked.lock().unwrap().len(), 7, "asked only when due");
    }

    #[test]
    fn a_failed_create_sends_its_whole_input_secrets_blanked_and_its_last_log_line() {
        let mut j = sample_create();
        let op = &mut j.ops[0];
        op.status = JobStatus::Error;
        op.result = json!([
            "OpPrereqError",
            ["Insufficient nodes", "temp_insufficient_resources"]
        ]);
        op.input.insert("opportunistic_locking".into(), json!(true));
        op.input
            .insert("osparams_secret".into(), json!({"img_passwd": "hunter2"}));
        op.input
            .insert("osparams_private".into(), json!({"img_properties": "{}"}));
        let m = op_message(&j, &CTX);
        let f = m.job_fields.unwrap();
        let mut want = j.ops[0].input.clone();
        want.insert("osparams_secret".into(), json!({"img_passwd": null}));
        want.insert("osparams_private".into(), json!({"img_properties": null}));
        assert_eq!(f, Value::Object(want));
        assert_eq!(f["OP_ID"], "OP_INSTANCE_CREATE");
        assert_eq!(f["opportunistic_locking"], true);
        assert_eq!(m.result, j.ops[0].result, "the error travels in result");
        assert_eq!(
            m.logmsg.as_deref(),
            Some("* starting instance..."),
            "the last log line, as Synnefo"
        );
        // A failed op without any log line: null.
        let mut bare = job(
            json!({"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "snf-7"}),
            "error",
        );
        bare.ops[0].last_log = None;
        assert_eq!(op_message(&bare, &CTX).logmsg, None);
    }

    #[test]
    fn other_instance_ops_send_empty_job_fields_and_a_snapshot_its_disks() {
        let reboot = job(
            json!({"OP_ID": "OP_INSTANCE_REBOOT", "instance_name": "snf-7", "reboot_type": "hard"}),
            "success",
        );
        assert_eq!(op_message(&reboot, &CTX).job_fields, Some(json!({})));
        let info = r#"{"snapshot_id": "b1c2"}"#;
        let snap = |reason: Value, disks: Value| {
            job(
                json!({"OP_ID": "OP_INSTANCE_SNAPSHOT", "instance_name": "snf-7", "disks": disks, "reason": reason}),
                "success",
            )
        };
        let disks = json!([[0, {"snapshot_name": "snf-snap-1"}]]);
        let m = op_message(&snap(json!([["gnt:user", info, 1]]), disks.clone()), &CTX);
        assert_eq!(
            m.job_fields,
            Some(json!({"disks": [[0, {"snapshot_name": "snf-snap-1", "snapshot_info": info}]]}))
        );
        // Another reason: the disks as they are.
        let m = op_message(
            &snap(json!([["gnt:opcode:x", "y", 1]]), disks.clone()),
            &CTX,
        );
        assert_eq!(m.job_fields, Some(json!({"disks": disks})));
        let m = op_message(&snap(json!("garbage"), disks.clone()), &CTX);
        assert_eq!(m.job_fields, Some(json!({"disks": disks})));
        // No disks: nothing to say.
        let m = op_message(&snap(json!([["gnt:user", info, 1]]), json!([])), &CTX);
        assert_eq!(m.job_fields, Some(json!({})));
    }

    #[test]
    fn network_ops_become_network_status_messages() {
        let add = job(
            json!({"OP_ID": "OP_NETWORK_ADD", "network_name": "snf-net-7", "network": "10.0.0.0/24",
                   "gateway": "10.0.0.1", "add_reserved_ips": ["10.0.0.5"], "tags": []}),
            "success",
        );
        let m = message_for(&add, 0, &add.ops[0], &CTX).unwrap();
        assert_eq!(m.kind(), MessageKind::NetworkStatus);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "ganeti-network-status", "network": "snf-net-7", "operation": "OP_NETWORK_ADD",
                   "jobId": 40, "status": "success", "logmsg": " - INFO: last line", "result": null,
                   "event_time": [103, 0], "cluster": "cluster1.lab.test", "op_index": 0,
                   "job_fields": {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "add_reserved_ips": ["10.0.0.5"],
                                  "remove_reserved_ips": null, "group_name": null}})
        );
        let connect = job(
            json!({"OP_ID": "OP_NETWORK_CONNECT", "network_name": "snf-net-7", "group_name": "default",
                   "network_mode": "routed", "network_link": "100"}),
            "running",
        );
        let EventMessage::Network(n) = message_for(&connect, 0, &connect.ops[0], &CTX).unwrap()
        else {
            panic!()
        };
        assert_eq!(n.job_fields.group_name.as_deref(), Some("default"));
        assert_eq!(n.event_time, (101, 5));
        // Not published: another deployment's network, no name, queues off.
        let other = job(
            json!({"OP_ID": "OP_NETWORK_ADD", "network_name": "synnefo-lab"}),
            "success",
        );
        assert_eq!(
            classify(&other.ops[0], &CTX),
            Err(Skip::ForeignNetwork("synnefo-lab".into()))
        );
        let unnamed = job(json!({"OP_ID": "OP_NETWORK_QUERY"}), "success");
        assert_eq!(
            classify(&unnamed.ops[0], &CTX),
            Err(Skip::NoNetworkName("OP_NETWORK_QUERY".into()))
        );
        let off = DiffContext {
            synnefo_kinds: false,
            ..CTX
        };
        assert_eq!(
            classify(&add.ops[0], &off),
            Err(Skip::QueuesNotDeclared("OP_NETWORK_ADD".into()))
        );
    }

    #[test]
    fn only_a_cluster_modify_becomes_a_cluster_status_message() {
        let modify = job(
            json!({"OP_ID": "OP_CLUSTER_SET_PARAMS", "candidate_pool_size": 10}),
            "success",
        );
        let m = message_for(&modify, 0, &modify.ops[0], &CTX).unwrap();
        assert_eq!(m.kind(), MessageKind::ClusterStatus);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "ganeti-cluster-status", "operation": "OP_CLUSTER_SET_PARAMS", "jobId": 40,
                   "status": "success", "logmsg": " - INFO: last line", "result": null,
                   "event_time": [103, 0], "cluster": "cluster1.lab.test", "op_index": 0})
        );
        for op in [
            "OP_CLUSTER_VERIFY",
            "OP_CLUSTER_REDIST_CONF",
            "OP_NODE_ADD",
            "OP_GROUP_ADD",
            "OP_BACKUP_EXPORT",
        ] {
            let j = job(json!({"OP_ID": op}), "success");
            assert_eq!(
                classify(&j.ops[0], &CTX),
                Err(Skip::NotPublished(op.into()))
            );
        }
        let off = DiffContext {
            synnefo_kinds: false,
            ..CTX
        };
        assert_eq!(
            classify(&modify.ops[0], &off),
            Err(Skip::QueuesNotDeclared("OP_CLUSTER_SET_PARAMS".into()))
        );
    }

    #[test]
    fn tags_and_the_heartbeat_are_not_published() {
        for input in [
            json!({"OP_ID": "OP_TAGS_SET", "kind": "instance", "name": "snf-7", "tags": ["a"]}),
            json!({"OP_ID": "OP_TAGS_DEL", "kind": "instance", "name": "snf-7", "tags": ["a"]}),
            json!({"OP_ID": "OP_TAGS_SET", "kind": "cluster", "dry_run": true, "tags": ["snf:eventd:heartbeat:h:1"]}),
        ] {
            let j = job(input, "waiting");
            assert!(matches!(
                classify(&j.ops[0], &CTX),
                Err(Skip::NotPublished(_))
            ));
        }
    }

    #[test]
    fn an_instance_op_names_its_instance_once() {
        let one = job(
            json!({"OP_ID": "OP_INSTANCE_STARTUP", "instances": ["snf-7"]}),
            "success",
        );
        assert_eq!(
            classify(&one.ops[0], &CTX),
            Ok(Target::Instance("snf-7".into()))
        );
        let two = job(
            json!({"OP_ID": "OP_INSTANCE_STARTUP", "instances": ["snf-7", "snf-8"]}),
            "success",
        );
        assert_eq!(
            classify(&two.ops[0], &CTX),
            Err(Skip::NoInstanceName("OP_INSTANCE_STARTUP".into()))
        );
        for name in ["web-1", "snfx-1", "snf1", "snf-"] {
            let foreign = job(
                json!({"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": name}),
                "success",
            );
            assert_eq!(
                classify(&foreign.ops[0], &CTX),
                Err(Skip::ForeignInstance(name.into()))
            );
        }
        // Named like ours though not `<prefix><id>` (`snf-nosuch`, `snf-01`):
        // sent, as Synnefo sends them; the dispatcher ignores them.
        for name in ["snf-nosuch", "snf-01"] {
            let ours = job(
                json!({"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": name}),
                "error",
            );
            assert_eq!(
                classify(&ours.ops[0], &CTX),
                Ok(Target::Instance(name.into()))
            );
        }
        // A prefix without a '-' (the pipeline tests' `p<hex>`): its names
        // have none either.
        let bare = DiffContext {
            prefix: "pab12",
            ..CTX
        };
        let j = job(
            json!({"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "pab1242"}),
            "success",
        );
        assert_eq!(
            classify(&j.ops[0], &bare),
            Ok(Target::Instance("pab1242".into()))
        );
    }
}
