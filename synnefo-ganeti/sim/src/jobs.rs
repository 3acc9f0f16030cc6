//! The job queue's engine: submitting one-op jobs, moving them through
//! queued -> waiting -> running (one more step per log line) ->
//! success/error, injected failures, cancellation and archiving.
//!
//! A job advances one status per [`SimState::advance`] call, like the
//! versions Ganeti writes. Jobs touching the same instance run in id order
//! (Ganeti's instance lock): a later job stays `waiting` until the earlier
//! ones end. What an op checks and does is in [`crate::ops`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use synnefo_core::state::JobStatus;
use synnefo_ganeti::rapi::types::{LogEntry, Timestamp};

use crate::model::{SimNic, SimState};
use crate::ops::input::{OpKind, OpParams};
use crate::ops::{self, common_params, opcode_defaults};

/// An injected failure: which jobs it hits, and the error they end with
/// (Ganeti's `[class, [message, ecode]]` result).
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
    /// The error text, as the failed op's result carries it.
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

/// One op of a job.
#[derive(Debug, Clone)]
pub(crate) struct OpState {
    /// `OP_INSTANCE_CREATE`, ...
    pub opcode: String,
    /// The op's input as Ganeti writes it (defaults filled in, secrets
    /// blanked, `instance_uuid` and generated MACs added when it starts).
    pub input: Map<String, Value>,
    /// The same input, typed: what the engine reads.
    pub params: OpParams,
    /// The op's status.
    pub status: JobStatus,
    /// `opresult`: the op's result, or its error.
    pub result: Value,
    /// The log lines written so far.
    pub log: Vec<LogEntry>,
    /// When it left the queue.
    pub start: Option<Timestamp>,
    /// When it started running.
    pub exec: Option<Timestamp>,
    /// When it ended.
    pub end: Option<Timestamp>,
    /// Log lines still to write while running, one per step.
    pub pending_logs: VecDeque<String>,
    /// snf-image monitor messages still to emit while the OS create
    /// scripts run, one per step (before the next log line).
    pub pending_progress: VecDeque<Value>,
    /// The failure injected into this op, if any.
    pub failure: Option<FailureRule>,
    /// NICs worked out in the prerequisites (a create's NICs, a modify's
    /// added NICs): network parameters inherited, pool addresses chosen.
    /// Their addresses stay reserved while the op runs.
    pub nics: Option<Vec<SimNic>>,
}

/// A job: one op as RAPI submits them, with the timestamps and the
/// scheduling state of the engine.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The job id.
    pub id: u64,
    /// Its ops (RAPI submits one).
    pub ops: Vec<OpState>,
    /// When it was submitted.
    pub received: Timestamp,
    /// When its first op left the queue.
    pub start: Option<Timestamp>,
    /// When it ended.
    pub end: Option<Timestamp>,
    /// The serial of its last log entry (entries of all ops count).
    pub log_serial: u64,
    /// When it moves next in timed mode; `None` while waiting for a lock
    /// or when finished.
    pub next_at: Option<Instant>,
    /// When it ended (for archiving after a delay).
    pub ended_at: Option<Instant>,
    /// Moved to `queue/archive/`.
    pub archived: bool,
    /// The job process (pid, livelock) once it started; luxid writes the
    /// file before that, the job process after.
    pub process: Option<(u32, String)>,
}

impl Job {
    /// The job's status from its ops' (Ganeti's `CalcStatus`).
    pub(crate) fn status(&self) -> JobStatus {
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
}

/// The answer of `DELETE /2/jobs/ID`.
pub(crate) type CancelAnswer = (bool, String);

impl SimState {
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
        let params = OpParams::parse(op_id, &input);
        let failure = self.take_failure(op_id, &params.instance);
        let op = OpState {
            opcode: op_id.into(),
            input,
            params,
            status: JobStatus::Queued,
            result: Value::Null,
            log: vec![],
            start: None,
            exec: None,
            end: None,
            pending_logs: VecDeque::new(),
            pending_progress: VecDeque::new(),
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

    /// True if an earlier unfinished job works on the same instance.
    fn blocked(&self, id: u64, instance: &str) -> bool {
        !instance.is_empty()
            && self.jobs.range(..id).rev().any(|(_, j)| {
                !j.status().is_terminal() && j.ops.iter().any(|o| o.params.instance == instance)
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
        let instance = job.ops[i].params.instance.clone();
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
                let need_mac = ops::modify::mac_networks(&self.jobs[&id].ops[i].input);
                let mut macs: VecDeque<String> = need_mac
                    .iter()
                    .map(|net| self.new_mac_on(net.as_deref()))
                    .collect();
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
                if matches!(op.params.kind, OpKind::Modify(_)) {
                    ops::modify::fill_macs(&mut op.input, &mut macs);
                    op.params = OpParams::parse(&op.opcode, &op.input);
                }
                if !matches!(op.params.kind, OpKind::Create(_)) && !instance.is_empty() {
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
                let progress = self.cfg.progress;
                let job = self.jobs.get_mut(&id).expect("job exists");
                if let Some(mut msg) = job.ops[i].pending_progress.pop_front() {
                    // snf-image's monitor message, stamped when written.
                    if let Value::Object(m) = &mut msg {
                        m.insert("timestamp".into(), json!(crate::model::now_f64()));
                    }
                    self.progress_out.push((instance.clone(), msg));
                    self.schedule(id, progress.interval_ms);
                } else if let Some(msg) = job.ops[i].pending_logs.pop_front() {
                    let op = &job.ops[i];
                    let os_scripts = match &op.params.kind {
                        OpKind::Create(c) => {
                            msg == ops::create::OS_SCRIPTS_LOG
                                || (progress.diskless
                                    && c.disk_sizes().next().is_none()
                                    && op.pending_logs.is_empty())
                        }
                        _ => false,
                    };
                    if os_scripts && progress.copy_steps > 0 {
                        job.ops[i].pending_progress =
                            ops::create::snf_image_messages(progress.copy_steps).into();
                    }
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
