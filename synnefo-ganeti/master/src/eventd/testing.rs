//! Test doubles for eventd's users: a bus that records (and can fail on
//! demand) and a job writer that writes job files the way Ganeti does
//! (temp file, close, rename over `job-N`), used by our tests, the latency
//! bench and anyone embedding eventd.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use synnefo_core::BusError;
use synnefo_core::messages::{MessageKind, OpStatusMessage};
use synnefo_core::ports::{EventBus, Subscription};
use synnefo_core::state::JobStatus;

use super::job::Timestamp;

/// An [`EventBus`] that records what is published and can be switched to
/// fail (like a broker that is down).
#[derive(Debug, Default)]
pub struct RecordingBus {
    log: Mutex<Vec<(MessageKind, Vec<u8>)>>,
    failing: AtomicBool,
    attempts: AtomicU64,
    changed: tokio::sync::Notify,
}

impl RecordingBus {
    /// An empty, working bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every publish fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Publish calls so far, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Messages accepted so far.
    pub fn len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// True when nothing was accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The accepted messages, raw.
    pub fn bodies(&self) -> Vec<(MessageKind, Vec<u8>)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The accepted op-status messages, decoded (others skipped).
    pub fn op_messages(&self) -> Vec<OpStatusMessage> {
        self.bodies()
            .into_iter()
            .filter(|(k, _)| *k == MessageKind::OpStatus)
            .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Waits until at least `n` messages were accepted, or `timeout`;
    /// returns whether they were.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.len() >= n;
            }
        }
    }
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, kind: MessageKind, body: Vec<u8>) -> Result<(), BusError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable(
                "RecordingBus is failing on purpose".into(),
            ));
        }
        if let Ok(mut l) = self.log.lock() {
            l.push((kind, body));
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, _kind: MessageKind) -> Result<Box<dyn Subscription>, BusError> {
        Err(BusError::Other(
            "RecordingBus only records publications".into(),
        ))
    }
}

pub use super::job::now_timestamp;

/// One opcode of a [`FakeJob`].
#[derive(Debug, Clone)]
pub struct FakeOp {
    /// The opcode input (`OP_ID`, `instance_name`, ...).
    pub input: Map<String, Value>,
    /// Its status.
    pub status: JobStatus,
    /// Its result.
    pub result: Value,
    /// Its log messages.
    pub log: Vec<String>,
    /// Timestamps as Ganeti sets them.
    pub start: Option<Timestamp>,
    /// Execution start.
    pub exec: Option<Timestamp>,
    /// End.
    pub end: Option<Timestamp>,
}

/// A job as Ganeti would write it, advanced step by step.
#[derive(Debug, Clone)]
pub struct FakeJob {
    /// The id.
    pub id: u64,
    /// The opcodes.
    pub ops: Vec<FakeOp>,
    /// When received.
    pub received: Timestamp,
    /// When ended.
    pub end: Option<Timestamp>,
}

impl FakeJob {
    /// A queued job of `(OP_ID, instance_name)` opcodes, received now.
    pub fn new(id: u64, ops: &[(&str, &str)]) -> Self {
        Self {
            id,
            received: now_timestamp(),
            end: None,
            ops: ops
                .iter()
                .map(|(op_id, name)| {
                    let mut input = Map::new();
                    input.insert("OP_ID".into(), json!(op_id));
                    input.insert("instance_name".into(), json!(name));
                    FakeOp {
                        input,
                        status: JobStatus::Queued,
                        result: Value::Null,
                        log: Vec::new(),
                        start: None,
                        exec: None,
                        end: None,
                    }
                })
                .collect(),
        }
    }

    /// Moves opcode `op` to `status`, stamping the time as Ganeti does
    /// (start for waiting, exec for running, end for terminal statuses).
    pub fn set_status(&mut self, op: usize, status: JobStatus) {
        let now = now_timestamp();
        let all_done;
        {
            let Some(o) = self.ops.get_mut(op) else {
                return;
            };
            o.status = status;
            match status {
                JobStatus::Waiting => o.start = Some(now),
                JobStatus::Running => {
                    o.start.get_or_insert(now);
                    o.exec = Some(now);
                }
                s if s.is_terminal() => o.end = Some(now),
                _ => {}
            }
            all_done = self.ops.iter().all(|o| o.status.is_terminal());
        }
        if all_done {
            self.end = Some(now);
        }
    }

    /// Appends a log line to opcode `op` (a rewrite without status change).
    pub fn log(&mut self, op: usize, msg: &str) {
        if let Some(o) = self.ops.get_mut(op) {
            o.log.push(msg.to_string());
        }
    }

    /// The job file's JSON.
    pub fn to_json(&self) -> Value {
        let ts = |t: Option<Timestamp>| t.map_or(Value::Null, |(s, u)| json!([s, u]));
        let ops: Vec<Value> = self
            .ops
            .iter()
            .map(|o| {
                let log: Vec<Value> = o
                    .log
                    .iter()
                    .enumerate()
                    .map(|(i, m)| json!([i + 1, [self.received.0, self.received.1], "message", m]))
                    .collect();
                json!({"input": o.input, "status": o.status.as_str(), "result": o.result, "log": log,
                       "start_timestamp": ts(o.start), "exec_timestamp": ts(o.exec), "end_timestamp": ts(o.end),
                       "priority": 0})
            })
            .collect();
        let start = self.ops.iter().filter_map(|o| o.start).min();
        json!({"id": self.id, "ops": ops, "received_timestamp": ts(Some(self.received)),
               "start_timestamp": ts(start), "end_timestamp": ts(self.end)})
    }
}

/// Writes job files like Ganeti: `job-N-<pid>-<n>.tmp`, then rename.
#[derive(Debug)]
pub struct JobWriter {
    dir: PathBuf,
    counter: AtomicU64,
}

impl JobWriter {
    /// A writer into queue directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            counter: AtomicU64::new(0),
        }
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `job-<id>` atomically (temp file + rename).
    pub fn write_bytes(&self, id: u64, bytes: &[u8]) -> std::io::Result<()> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("job-{id}-{}-{n}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, self.dir.join(format!("job-{id}")))
    }

    /// Writes a [`FakeJob`].
    pub fn write(&self, job: &FakeJob) -> std::io::Result<()> {
        self.write_bytes(job.id, job.to_json().to_string().as_bytes())
    }

    /// Moves a job to `archive/<id / 10000>/job-<id>` as Ganeti does.
    pub fn archive(&self, id: u64) -> std::io::Result<()> {
        let dest = self.dir.join(super::job::archive_relative_path(id));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(self.dir.join(format!("job-{id}")), dest)
    }
}

/// Writes `name` into `path` like Ganeti writes ssconf files (temp + rename).
pub fn write_master_file(path: &Path, name: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{name}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventd::job::parse_job;

    #[test]
    fn fake_jobs_parse_like_real_ones() {
        let mut j = FakeJob::new(
            3,
            &[
                ("OP_INSTANCE_STARTUP", "snf-1"),
                ("OP_INSTANCE_REBOOT", "snf-1"),
            ],
        );
        j.set_status(0, JobStatus::Running);
        j.log(0, "starting");
        j.set_status(0, JobStatus::Success);
        j.set_status(1, JobStatus::Error);
        let parsed = parse_job(j.to_json().to_string().as_bytes(), Some(3)).unwrap();
        assert_eq!(parsed.ops[0].status, JobStatus::Success);
        assert_eq!(parsed.ops[0].last_log.as_deref(), Some("starting"));
        assert!(parsed.is_finished() && parsed.end.is_some());
    }

    #[tokio::test]
    async fn the_recording_bus_fails_on_demand() {
        let bus = RecordingBus::new();
        bus.set_failing(true);
        assert!(
            bus.publish(MessageKind::OpStatus, b"{}".to_vec())
                .await
                .is_err()
        );
        bus.set_failing(false);
        bus.publish(MessageKind::OpStatus, b"{}".to_vec())
            .await
            .unwrap();
        assert!(bus.wait_for(1, Duration::from_millis(10)).await);
        assert_eq!((bus.len(), bus.attempts()), (1, 2));
    }
}
