//! From a job file to the `ganeti-op-status` messages it calls for (pure).
//!
//! Ganeti rewrites a job file many times per opcode (every log line, every
//! lock acquired), so "the file changed" is not "something happened". What
//! the dispatcher needs is one message per opcode *status change*. We keep,
//! per job, the status of each opcode as last handled (a [`JobMark`]) and
//! compare each new read of the file against it: a rewrite that changes no
//! status produces nothing, a status that differs produces exactly one
//! message, and every opcode of a multi-op job counts (v0.3 only looked at
//! the first).
//!
//! Master migration is decided here too, as a pure rule: a change belongs to
//! the node that was master *when it happened* (its event time), so two
//! eventd processes watching the same queue split the stream without
//! talking to each other. The caller passes that rule in as `owns`; a change
//! it does not own is remembered as [`Origin::Observed`] (someone else
//! published it), and re-examined if the ownership answer changes later
//! (takeover with a slack window).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use synnefo_core::ids::InstanceName;
use synnefo_core::messages::{MessageKind, OpStatusMessage, WireNic};
use synnefo_core::state::JobStatus;

use super::job::{JobFile, OpEntry, Timestamp};

/// Who handled the last status of an opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// This eventd published it (or spooled it for publication).
    Published,
    /// Seen while another node was master: that node's to publish.
    Observed,
}

/// The last handled status of one opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpMark {
    /// The status.
    pub status: JobStatus,
    /// Published here, or observed.
    pub origin: Origin,
}

/// What we remember of a job between reads of its file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobMark {
    /// The job's `received_timestamp`: tells a re-initialised cluster's new
    /// job 1 from the old one.
    pub received: Option<Timestamp>,
    /// Per opcode index; `None` for opcodes we do not publish.
    pub ops: Vec<Option<OpMark>>,
}

impl JobMark {
    /// True when every tracked opcode reached a terminal status.
    pub fn is_finished(&self) -> bool {
        self.ops.iter().flatten().all(|m| m.status.is_terminal())
    }
}

/// What every message of one eventd shares.
#[derive(Debug, Clone, Copy)]
pub struct DiffContext<'a> {
    /// Instance-name prefix (`snf-`).
    pub prefix: &'a str,
    /// Cluster name for the `cluster` field.
    pub cluster: Option<&'a str>,
    /// Fallback event time when the file has no timestamp for a status.
    pub now: Timestamp,
}

/// Why an opcode of a job is not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not an `OP_INSTANCE_*` opcode (cluster, node, group, ... ops).
    NotInstanceOp(String),
    /// An instance opcode without a usable `instance_name` (multi-alloc, ...).
    NoInstanceName(String),
    /// The instance is not named `<prefix><id>` (not one of ours).
    ForeignInstance(String),
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The opcode's index in its job.
    pub op_index: u32,
    /// The message.
    pub message: OpStatusMessage,
}

impl Change {
    /// The message kind (always op status).
    pub fn kind(&self) -> MessageKind {
        MessageKind::OpStatus
    }
}

/// The outcome of comparing one read of a job file with its mark.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDiff {
    /// Messages to publish, in opcode order.
    pub changes: Vec<Change>,
    /// The mark to remember once `changes` are handed off.
    pub mark: JobMark,
    /// Tracked opcodes whose status did not change (rewrites).
    pub unchanged: u32,
    /// Status changes that belong to another master.
    pub not_owned: u32,
    /// Opcodes not published, with the reason.
    pub skipped: Vec<(u32, Skip)>,
}

impl JobDiff {
    /// True when the read changed nothing we track (a plain rewrite).
    pub fn is_rewrite(&self) -> bool {
        self.changes.is_empty() && self.not_owned == 0 && self.unchanged > 0
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

/// Opcodes whose inputs the dispatcher wants as `job_fields`.
fn carries_job_fields(op_id: &str) -> bool {
    matches!(op_id, "OP_INSTANCE_CREATE" | "OP_INSTANCE_SET_PARAMS")
}

/// The opcode inputs that matter for create/modify (`nics`, `disks`,
/// `beparams`, as Synnefo's eventd sends them). OS parameters are left
/// out on purpose: `osparams_secret` holds passwords.
pub fn job_fields(op: &OpEntry) -> Option<Value> {
    if !carries_job_fields(&op.op_id) {
        return None;
    }
    let mut fields = Map::new();
    for key in ["nics", "disks", "beparams"] {
        if let Some(v) = op.input.get(key) {
            fields.insert(key.to_string(), v.clone());
        }
    }
    Some(Value::Object(fields))
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

/// The NICs a successful create (or a modify given a full NIC list)
/// leaves the instance with, from the opcode input — only when the input
/// spells each NIC out completely (a literal IP and MAC). A request's
/// `"ip": "pool"` or missing MAC is not the instance's state: publishing
/// it would overwrite the real NICs that the instance-add-post hook
/// reports (the hook runs before the job is marked successful, so its
/// message usually arrives first). `None` as well for a modify's
/// `[[op, index, params]]` edits.
pub fn instance_nics(op: &OpEntry) -> Option<Vec<WireNic>> {
    if op.status != JobStatus::Success || !carries_job_fields(&op.op_id) {
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
            Some(WireNic {
                ip: Some(ip),
                mac: Some(mac),
                link: str_field(o, "link"),
                network: str_field(o, "network"),
                mode: str_field(o, "mode"),
            })
        })
        .collect()
}

/// The readable error of a failed opcode's result: the text form of the
/// [`OpError`](synnefo_core::state::OpError) Ganeti stores
/// (`["OpPrereqError", [message, ecode]]`, or `[class, message]`), else the
/// result as it is. The typed error travels in the message's `result`.
pub fn result_error_message(result: &Value) -> Option<String> {
    match result {
        Value::Null => None,
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        other => Some(
            synnefo_core::state::OpError::from_result(other)
                .map_or_else(|| other.to_string(), |e| e.to_string()),
        ),
    }
}

/// `logmsg`: the opcode's last log line; for a failed opcode, Ganeti's
/// error from its result (what the user needs to see: a rejected create
/// has no log at all, and otherwise its last line is only progress).
pub fn log_message(op: &OpEntry) -> Option<String> {
    match op.status {
        JobStatus::Error => result_error_message(&op.result).or_else(|| op.last_log.clone()),
        JobStatus::Canceled => op
            .last_log
            .clone()
            .or_else(|| result_error_message(&op.result)),
        _ => op.last_log.clone(),
    }
}

/// Why opcode `op` is not one we publish, if it is not.
pub fn skip_reason(op: &OpEntry, prefix: &str) -> Option<Skip> {
    if !op.op_id.starts_with("OP_INSTANCE_") {
        return Some(Skip::NotInstanceOp(op.op_id.clone()));
    }
    let Some(name) = op.instance_name.as_deref() else {
        return Some(Skip::NoInstanceName(op.op_id.clone()));
    };
    if InstanceName::parse(prefix, name).is_none() {
        return Some(Skip::ForeignInstance(name.to_string()));
    }
    None
}

/// The message for opcode `index` of `job` in its current status.
pub fn op_message(
    job: &JobFile,
    index: usize,
    op: &OpEntry,
    ctx: &DiffContext<'_>,
) -> OpStatusMessage {
    OpStatusMessage {
        kind: MessageKind::OpStatus.type_name().to_string(),
        instance: op.instance_name.clone().unwrap_or_default(),
        operation: op.op_id.clone(),
        job_id: job.id,
        status: op.status.as_str().to_string(),
        logmsg: log_message(op),
        result: op.result.clone(),
        event_time: event_time(job, op, ctx.now),
        cluster: ctx.cluster.map(str::to_string),
        job_fields: job_fields(op),
        instance_nics: instance_nics(op),
        instance_disks: None,
        instance_hvparams: None,
        op_index: u32::try_from(index).unwrap_or(u32::MAX),
    }
}

/// Compares a read of `job` with what we remember (`previous`) and returns
/// the messages to publish and the mark to remember. `owns(event_time)`
/// tells whether this node was master when a change happened.
pub fn diff_job(
    job: &JobFile,
    previous: Option<&JobMark>,
    ctx: &DiffContext<'_>,
    owns: &dyn Fn(Timestamp) -> bool,
) -> JobDiff {
    // A mark with another received time belongs to an older job with the
    // same id (the cluster was re-initialised): start afresh.
    let previous = previous.filter(|m| m.received.is_none() || m.received == job.received);
    let mut out = JobDiff {
        changes: Vec::new(),
        mark: JobMark {
            received: job.received,
            ops: Vec::with_capacity(job.ops.len()),
        },
        unchanged: 0,
        not_owned: 0,
        skipped: Vec::new(),
    };
    for (index, op) in job.ops.iter().enumerate() {
        let idx = u32::try_from(index).unwrap_or(u32::MAX);
        if let Some(why) = skip_reason(op, ctx.prefix) {
            out.skipped.push((idx, why));
            out.mark.ops.push(None);
            continue;
        }
        let before = previous.and_then(|m| m.ops.get(index).copied().flatten());
        let t = event_time(job, op, ctx.now);
        let mark = match before {
            Some(m) if m.status == op.status && (m.origin == Origin::Published || !owns(t)) => {
                out.unchanged += 1;
                m
            }
            _ if owns(t) => {
                out.changes.push(Change {
                    op_index: idx,
                    message: op_message(job, index, op, ctx),
                });
                OpMark {
                    status: op.status,
                    origin: Origin::Published,
                }
            }
            _ => {
                out.not_owned += 1;
                OpMark {
                    status: op.status,
                    origin: Origin::Observed,
                }
            }
        };
        out.mark.ops.push(Some(mark));
    }
    out
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
    };

    fn mine(_: Timestamp) -> bool {
        true
    }

    fn sample(name: &str) -> JobFile {
        let bytes: &[u8] = match name {
            "job-2" => include_bytes!("testdata/job-2.json"),
            "job-3" => include_bytes!("testdata/job-3.json"),
            _ => include_bytes!("testdata/job-4.json"),
        };
        parse_job(bytes, None).unwrap()
    }

    /// A job file as Ganeti writes it while it progresses.
    fn job(id: u64, ops: &[(&str, &str, &str)]) -> JobFile {
        let ops: Vec<Value> = ops
            .iter()
            .enumerate()
            .map(|(i, (op_id, name, status))| {
                let i = i as i64;
                let (start, exec, end) = match *status {
                    "queued" => (Value::Null, Value::Null, Value::Null),
                    "waiting" => (json!([100 + i, 1]), Value::Null, Value::Null),
                    "running" | "canceling" => (json!([100 + i, 1]), json!([100 + i, 2]), Value::Null),
                    _ => (json!([100 + i, 1]), json!([100 + i, 2]), json!([100 + i, 3])),
                };
                json!({"input": {"OP_ID": op_id, "instance_name": name, "nics": [{"ip": "10.0.0.1", "link": "br0"}],
                       "osparams_secret": {"password": "x"}},
                       "status": status, "result": null, "log": [[1, [100, 0], "message", format!("{op_id} {status}")]],
                       "start_timestamp": start, "exec_timestamp": exec, "end_timestamp": end})
            })
            .collect();
        let body = json!({"id": id, "ops": ops, "received_timestamp": [99, 5]});
        parse_job(body.to_string().as_bytes(), Some(id)).unwrap()
    }

    fn statuses(d: &JobDiff) -> Vec<(u32, String)> {
        d.changes
            .iter()
            .map(|c| (c.op_index, c.message.status.clone()))
            .collect()
    }

    #[test]
    fn each_real_sample_publishes_its_final_status_once() {
        for (name, op, time, logmsg) in [
            (
                "job-2",
                "OP_INSTANCE_CREATE",
                (1795555493, 356477),
                Some("* starting instance..."),
            ),
            ("job-3", "OP_INSTANCE_SHUTDOWN", (1795555506, 326783), None),
            ("job-4", "OP_INSTANCE_STARTUP", (1795555506, 819207), None),
        ] {
            let job = sample(name);
            let d = diff_job(&job, None, &CTX, &mine);
            assert_eq!(d.changes.len(), 1, "{name}");
            let m = &d.changes[0].message;
            assert_eq!(m.kind, "ganeti-op-status");
            assert_eq!(
                (m.instance.as_str(), m.operation.as_str(), m.status.as_str()),
                ("snf-1", op, "success")
            );
            assert_eq!(m.job_id, job.id);
            assert_eq!(
                m.event_time, time,
                "{name}: terminal status -> op end_timestamp"
            );
            assert_eq!(m.logmsg.as_deref(), logmsg);
            assert_eq!(m.cluster.as_deref(), Some("cluster1.lab.test"));
            assert_eq!(m.op_index, 0);
            // The same file read again is a rewrite: nothing.
            let again = diff_job(&job, Some(&d.mark), &CTX, &mine);
            assert!(again.changes.is_empty() && again.is_rewrite(), "{name}");
            // The message is what the dispatcher decodes.
            let body = serde_json::to_vec(m).unwrap();
            synnefo_core::messages::decode(&body, "snf-").unwrap();
        }
    }

    #[test]
    fn create_carries_job_fields_and_nics_but_no_secrets() {
        let d = diff_job(&sample("job-2"), None, &CTX, &mine);
        let m = &d.changes[0].message;
        let f = m.job_fields.as_ref().unwrap();
        assert_eq!(
            f["nics"],
            json!([{"ip": "192.0.2.51", "mode": "routed", "link": "100"}])
        );
        assert_eq!(
            f["beparams"],
            json!({"vcpus": 1, "maxmem": 128, "minmem": 128})
        );
        assert_eq!(f["disks"], json!([]));
        assert!(f.get("osparams_secret").is_none());
        // The real create names no MAC (Ganeti generates it): its NICs are
        // a request, left to the hook to report.
        assert!(m.instance_nics.is_none());
        let mut full = sample("job-2");
        full.ops[0].input.insert("nics".into(), json!([{"ip": "192.0.2.51", "mac": "aa:00:00:c6:c6:59", "mode": "routed", "link": "100"}]));
        let d = diff_job(&full, None, &CTX, &mine);
        let nics = d.changes[0].message.instance_nics.as_ref().unwrap();
        assert_eq!(nics.len(), 1);
        assert_eq!(nics[0].ip.as_deref(), Some("192.0.2.51"));
        assert_eq!(nics[0].mac.as_deref(), Some("aa:00:00:c6:c6:59"));
        assert_eq!(nics[0].link.as_deref(), Some("100"));
        assert_eq!(nics[0].mode.as_deref(), Some("routed"));
        for (ip, mac) in [
            ("pool", "aa:00:00:c6:c6:59"),
            ("192.0.2.51", "generate"),
            ("192.0.2.51", ""),
        ] {
            full.ops[0]
                .input
                .insert("nics".into(), json!([{"ip": ip, "mac": mac}]));
            let d = diff_job(&full, None, &CTX, &mine);
            assert!(d.changes[0].message.instance_nics.is_none(), "{ip} {mac}");
        }
        // Startup carries neither.
        let s = diff_job(&sample("job-4"), None, &CTX, &mine);
        assert!(
            s.changes[0].message.job_fields.is_none()
                && s.changes[0].message.instance_nics.is_none()
        );
    }

    #[test]
    fn a_job_through_every_status_publishes_each_change_once() {
        // (file content, expected new statuses) in the order Ganeti writes them,
        // including rewrites that only add log lines or take locks.
        let steps: &[(&str, &[&str])] = &[
            ("queued", &["queued"]),
            ("queued", &[]),
            ("waiting", &["waiting"]),
            ("waiting", &[]),
            ("running", &["running"]),
            ("running", &[]),
            ("running", &[]),
            ("success", &["success"]),
            ("success", &[]),
        ];
        let mut mark: Option<JobMark> = None;
        let mut times = Vec::new();
        for (status, want) in steps {
            let j = job(5, &[("OP_INSTANCE_REBOOT", "snf-9", status)]);
            let d = diff_job(&j, mark.as_ref(), &CTX, &mine);
            let got: Vec<String> = d.changes.iter().map(|c| c.message.status.clone()).collect();
            assert_eq!(got, *want, "at {status}");
            times.extend(d.changes.iter().map(|c| c.message.event_time));
            mark = Some(d.mark);
        }
        assert_eq!(
            times,
            vec![(99, 5), (100, 1), (100, 2), (100, 3)],
            "received, start, exec, end"
        );
    }

    #[test]
    fn every_op_of_a_multi_op_job_is_published_in_order() {
        let ops = |a, b, c| {
            job(
                6,
                &[
                    ("OP_INSTANCE_SHUTDOWN", "snf-1", a),
                    ("OP_INSTANCE_SET_PARAMS", "snf-1", b),
                    ("OP_INSTANCE_STARTUP", "snf-1", c),
                ],
            )
        };
        let table: &[(JobFile, Vec<(u32, &str)>)] = &[
            (
                ops("queued", "queued", "queued"),
                vec![(0, "queued"), (1, "queued"), (2, "queued")],
            ),
            (ops("running", "queued", "queued"), vec![(0, "running")]),
            (
                ops("success", "running", "queued"),
                vec![(0, "success"), (1, "running")],
            ),
            (ops("success", "running", "queued"), vec![]),
            (
                ops("success", "success", "running"),
                vec![(1, "success"), (2, "running")],
            ),
            (ops("success", "success", "success"), vec![(2, "success")]),
        ];
        let mut mark = None;
        for (j, want) in table {
            let d = diff_job(j, mark.as_ref(), &CTX, &mine);
            let want: Vec<(u32, String)> = want.iter().map(|(i, s)| (*i, s.to_string())).collect();
            assert_eq!(statuses(&d), want);
            assert!(d.changes.iter().all(|c| c.message.op_index == c.op_index));
            mark = Some(d.mark);
        }
        assert!(mark.unwrap().is_finished());
    }

    #[test]
    fn failed_and_canceled_ops_carry_their_result_and_log() {
        let mut j = job(
            7,
            &[
                ("OP_INSTANCE_CREATE", "snf-3", "error"),
                ("OP_INSTANCE_STARTUP", "snf-3", "canceled"),
            ],
        );
        j.ops[0].result = json!(["OpPrereqError", ["no space", "insufficient_resources"]]);
        let d = diff_job(&j, None, &CTX, &mine);
        assert_eq!(
            statuses(&d),
            vec![(0, "error".into()), (1, "canceled".into())]
        );
        assert_eq!(d.changes[0].message.result, j.ops[0].result);
        assert_eq!(
            d.changes[0].message.logmsg.as_deref(),
            Some("OpPrereqError: no space (insufficient_resources)"),
            "the typed error with its code, not the progress log"
        );
        assert_eq!(
            d.changes[1].message.logmsg.as_deref(),
            Some("OP_INSTANCE_STARTUP canceled")
        );
        for (result, want) in [
            (
                json!(["OpExecError", "disk full"]),
                Some("OpExecError: disk full"),
            ),
            (
                json!("Job canceled by request"),
                Some("Job canceled by request"),
            ),
            (json!(null), None),
        ] {
            assert_eq!(result_error_message(&result).as_deref(), want);
        }
        assert!(
            d.changes[0].message.instance_nics.is_none(),
            "no NICs from a failed create"
        );
    }

    #[test]
    fn other_ops_and_foreign_instances_are_skipped_with_a_reason() {
        let mut j = job(
            8,
            &[
                ("OP_CLUSTER_VERIFY", "", "success"),
                ("OP_INSTANCE_STARTUP", "web-1", "success"),
                ("OP_INSTANCE_STARTUP", "snf-01", "success"),
                ("OP_INSTANCE_MULTI_ALLOC", "", "success"),
                ("OP_INSTANCE_STARTUP", "snf-12", "success"),
            ],
        );
        j.ops[3].instance_name = None;
        let d = diff_job(&j, None, &CTX, &mine);
        assert_eq!(statuses(&d), vec![(4, "success".into())]);
        assert_eq!(
            d.skipped,
            vec![
                (0, Skip::NotInstanceOp("OP_CLUSTER_VERIFY".into())),
                (1, Skip::ForeignInstance("web-1".into())),
                (2, Skip::ForeignInstance("snf-01".into())),
                (3, Skip::NoInstanceName("OP_INSTANCE_MULTI_ALLOC".into())),
            ]
        );
        let again = diff_job(&j, Some(&d.mark), &CTX, &mine);
        assert!(again.changes.is_empty());
    }

    #[test]
    fn changes_owned_by_another_master_are_observed_then_taken_over() {
        // This node became master at t=100.000002 (exclusive of earlier changes).
        let owns = |t: Timestamp| timestamp_us(t) >= 100_000_002;
        let a = job(9, &[("OP_INSTANCE_STARTUP", "snf-4", "waiting")]); // t = 100.000001
        let d1 = diff_job(&a, None, &CTX, &owns);
        assert!(d1.changes.is_empty());
        assert_eq!(d1.not_owned, 1);
        assert_eq!(d1.mark.ops[0].unwrap().origin, Origin::Observed);
        // The same status again: still not ours, not counted as a change.
        let d2 = diff_job(&a, Some(&d1.mark), &CTX, &owns);
        assert!(d2.changes.is_empty());
        // Running at t = 100.000002 is ours.
        let b = job(9, &[("OP_INSTANCE_STARTUP", "snf-4", "running")]);
        let d3 = diff_job(&b, Some(&d2.mark), &CTX, &owns);
        assert_eq!(statuses(&d3), vec![(0, "running".into())]);
        // A takeover whose slack window covers an observed change publishes it.
        let wide = |_: Timestamp| true;
        let d4 = diff_job(&a, Some(&d1.mark), &CTX, &wide);
        assert_eq!(statuses(&d4), vec![(0, "waiting".into())]);
    }

    #[test]
    fn a_reinitialised_cluster_reusing_a_job_id_is_a_new_job() {
        let old = job(1, &[("OP_INSTANCE_STARTUP", "snf-4", "success")]);
        let d = diff_job(&old, None, &CTX, &mine);
        let mut new = old.clone();
        new.received = Some((500, 0));
        let d2 = diff_job(&new, Some(&d.mark), &CTX, &mine);
        assert_eq!(statuses(&d2), vec![(0, "success".into())]);
    }

    #[test]
    fn event_time_falls_back_when_ganeti_left_a_timestamp_out() {
        let mut j = job(10, &[("OP_INSTANCE_STARTUP", "snf-4", "canceled")]);
        j.ops[0].end = None;
        j.end = Some((120, 0));
        assert_eq!(event_time(&j, &j.ops[0], CTX.now), (120, 0));
        j.end = None;
        assert_eq!(event_time(&j, &j.ops[0], CTX.now), (100, 2));
        let mut q = job(11, &[("OP_INSTANCE_STARTUP", "snf-4", "queued")]);
        q.received = None;
        assert_eq!(event_time(&q, &q.ops[0], CTX.now), CTX.now);
    }
}
