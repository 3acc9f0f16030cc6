//! From a job file to the messages it calls for (pure).
//!
//! Ganeti rewrites a job file many times per opcode (every log line, every
//! lock acquired), so "the file changed" is not "something happened". What
//! the dispatcher needs is one message per opcode *status change*. We keep,
//! per job, the status of each opcode as last handled (a [`JobMark`]) and
//! compare each new read of the file against it: a rewrite that changes no
//! status produces nothing, a status that differs produces exactly one
//! message ([`super::message::message_for`]), and every opcode of a
//! multi-op job counts (v0.3 only looked at the first).
//!
//! Master migration is decided here too, as a pure rule: a change belongs to
//! the node that was master *when it happened* (its event time), so two
//! eventd processes watching the same queue split the stream without
//! talking to each other. The caller passes that rule in as `owns`; a change
//! it does not own is remembered as [`Origin::Observed`] (someone else
//! published it), and re-examined if the ownership answer changes later
//! (takeover with a slack window).

use serde::{Deserialize, Serialize};
use synnefo_core::messages::MessageKind;
use synnefo_core::state::JobStatus;

use super::job::{JobFile, Timestamp};
pub use super::message::{
    DiffContext, EventMessage, Skip, classify, event_time, message_for, timestamp_us,
};

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

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The opcode's index in its job.
    pub op_index: u32,
    /// The message.
    pub message: EventMessage,
}

impl Change {
    /// The message kind (its routing key).
    pub fn kind(&self) -> MessageKind {
        self.message.kind()
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
        if let Err(why) = classify(op, ctx) {
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
            _ if owns(t) => match message_for(job, index, op, ctx) {
                Ok(message) => {
                    out.changes.push(Change {
                        op_index: idx,
                        message,
                    });
                    OpMark {
                        status: op.status,
                        origin: Origin::Published,
                    }
                }
                // `classify` said yes above; kept total all the same.
                Err(why) => {
                    out.skipped.push((idx, why));
                    out.mark.ops.push(None);
                    continue;
                }
            },
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
    use serde_json::{Value, json};

    const CTX: DiffContext<'static> = DiffContext {
        prefix: "snf-",
        cluster: Some("cluster1.lab.test"),
        now: (9_999_999_999, 0),
        synnefo_kinds: false,
        instance_info: None,
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
            .map(|c| (c.op_index, c.message.status().to_string()))
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
            let m = d.changes[0].message.as_op().unwrap();
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
            let got: Vec<String> = d
                .changes
                .iter()
                .map(|c| c.message.status().to_string())
                .collect();
            assert_eq!(got, *want, "at {status}");
            times.extend(
                d.changes
                    .iter()
                    .map(|c| c.message.as_op().unwrap().event_time),
            );
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
            assert!(
                d.changes
                    .iter()
                    .all(|c| c.message.as_op().unwrap().op_index == c.op_index)
            );
            mark = Some(d.mark);
        }
        assert!(mark.unwrap().is_finished());
    }

    #[test]
    fn other_ops_and_foreign_instances_are_skipped_with_a_reason() {
        let mut j = job(
            8,
            &[
                ("OP_CLUSTER_VERIFY", "", "success"),
                ("OP_INSTANCE_STARTUP", "web-1", "success"),
                ("OP_INSTANCE_STARTUP", "snfx-01", "success"),
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
                (0, Skip::NotPublished("OP_CLUSTER_VERIFY".into())),
                (1, Skip::ForeignInstance("web-1".into())),
                (2, Skip::ForeignInstance("snfx-01".into())),
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
