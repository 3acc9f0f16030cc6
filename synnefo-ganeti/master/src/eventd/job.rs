//! Ganeti job files, parsed (pure: bytes in, typed job out).
//!
//! Ganeti keeps one JSON file per job, `queue/job-<id>`, and never writes
//! it in place: it writes `job-<id>-<pid>-<n>.tmp` (or `job-<id><random>.new`),
//! closes it and renames it over `job-<id>`. Only exact `job-<digits>`
//! names are jobs ([`job_id_from_file_name`]); everything else is a temp
//! file that must never be read, because its content may be half-written
//! or superseded (the original eventd published 8-35% of updates twice for
//! exactly that reason).
//!
//! The shape (Ganeti 2.x/3.x, see `ganeti-lab/samples/job-*.json`):
//! `{"id", "ops": [{"input": {"OP_ID", "instance_name", ...}, "status",
//! "result", "log": [[serial, [sec, usec], type, msg]], "start_timestamp",
//! "exec_timestamp", "end_timestamp"}], "received_timestamp",
//! "start_timestamp", "end_timestamp", ...}`. Unknown keys are ignored;
//! anything we rely on that is missing or of the wrong type is a
//! [`JobParseError`] naming the reason, and the file publishes nothing.

use serde::Deserialize;
use serde_json::{Map, Value};
use synnefo_core::state::JobStatus;

/// `[seconds, microseconds]`, Ganeti's timestamp format (and the wire's).
pub type Timestamp = (i64, i64);

/// Now as `[sec, usec]`.
pub fn now_timestamp() -> Timestamp {
    let us = super::master::system_time_us(std::time::SystemTime::now());
    (us / 1_000_000, us % 1_000_000)
}

/// Largest job file we read (Ganeti's are KiBs; a long import log is MiBs).
pub const MAX_JOB_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Ganeti spreads archived jobs over directories of this many ids
/// (`constants.JOBS_PER_ARCHIVE_DIRECTORY`).
pub const JOBS_PER_ARCHIVE_DIRECTORY: u64 = 10_000;

/// The job id of a job file name (`job-42` -> 42); `None` for temp files
/// (`job-42-1234-1.tmp`, `job-42abc.new`), `job-0042`-like oddities are
/// accepted as Ganeti would format them never, and anything else.
pub fn job_id_from_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("job-")?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where Ganeti archives job `id`, relative to the queue directory.
pub fn archive_relative_path(id: u64) -> std::path::PathBuf {
    std::path::PathBuf::from("archive")
        .join((id / JOBS_PER_ARCHIVE_DIRECTORY).to_string())
        .join(format!("job-{id}"))
}

/// Why a job file publishes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobParseError {
    /// Not JSON, or not the job shape (serde names the field).
    #[error("not a Ganeti job file: {0}")]
    Shape(String),
    /// The `id` inside differs from the file name.
    #[error("job id {found} inside does not match the file name job-{expected}")]
    IdMismatch {
        /// From the file name.
        expected: u64,
        /// From the content.
        found: u64,
    },
    /// The `id` is not a non-negative integer (or a string of one).
    #[error("bad job id {0}")]
    BadId(String),
    /// One opcode is unusable (no `OP_ID`, unknown status, bad timestamp).
    #[error("op {index}: {reason}")]
    Op {
        /// Index of the opcode in the job.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A job-level timestamp is not `[sec, usec]`.
    #[error("bad {field}: {value}")]
    Timestamp {
        /// Which field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
}

/// One opcode of a job, as much of it as eventd needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OpEntry {
    /// `input.OP_ID` (`OP_INSTANCE_STARTUP`).
    pub op_id: String,
    /// `input.instance_name`, or the one name of `input.instances`.
    pub instance_name: Option<String>,
    /// The whole `input` (for `job_fields`).
    pub input: Map<String, Value>,
    /// The opcode's status.
    pub status: JobStatus,
    /// The opcode's result (an error tuple for failed ops).
    pub result: Value,
    /// The message of the last log entry, if any.
    pub last_log: Option<String>,
    /// When the opcode was started (waiting for locks).
    pub start: Option<Timestamp>,
    /// When it began executing.
    pub exec: Option<Timestamp>,
    /// When it ended.
    pub end: Option<Timestamp>,
}

/// A parsed job file.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFile {
    /// The job id.
    pub id: u64,
    /// Its opcodes, in order.
    pub ops: Vec<OpEntry>,
    /// When Ganeti accepted the job.
    pub received: Option<Timestamp>,
    /// When it started.
    pub start: Option<Timestamp>,
    /// When it ended.
    pub end: Option<Timestamp>,
}

impl JobFile {
    /// True when every opcode is in a terminal status.
    pub fn is_finished(&self) -> bool {
        self.ops.iter().all(|o| o.status.is_terminal())
    }
}

#[derive(Deserialize)]
struct RawJob {
    id: Value,
    ops: Vec<RawOp>,
    #[serde(default)]
    received_timestamp: Value,
    #[serde(default)]
    start_timestamp: Value,
    #[serde(default)]
    end_timestamp: Value,
}

#[derive(Deserialize)]
struct RawOp {
    input: Map<String, Value>,
    status: String,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    log: Vec<Value>,
    #[serde(default)]
    start_timestamp: Value,
    #[serde(default)]
    exec_timestamp: Value,
    #[serde(default)]
    end_timestamp: Value,
}

/// Parses `[sec, usec]` (or null); `Err` holds the offending value.
pub fn parse_timestamp(v: &Value) -> Result<Option<Timestamp>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) if a.len() == 2 => {
            let sec = a[0].as_i64().filter(|s| *s >= 0);
            let usec = a[1].as_i64().filter(|u| (0..1_000_000).contains(u));
            match (sec, usec) {
                (Some(s), Some(u)) => Ok(Some((s, u))),
                _ => Err(v.to_string()),
            }
        }
        other => Err(other.to_string()),
    }
}

fn job_ts(field: &'static str, v: &Value) -> Result<Option<Timestamp>, JobParseError> {
    parse_timestamp(v).map_err(|value| JobParseError::Timestamp { field, value })
}

/// The message of a log entry `[serial, [sec, usec], type, msg]`: strings
/// as they are, other JSON (Ganeti logs dicts for some types) serialised.
fn log_message(entry: &Value) -> Option<String> {
    match entry.as_array()?.get(3)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn parse_op(index: usize, raw: RawOp) -> Result<OpEntry, JobParseError> {
    let op_err = |reason: String| JobParseError::Op { index, reason };
    let op_id = match raw.input.get("OP_ID") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => return Err(op_err(format!("OP_ID is not a string: {other}"))),
        None => return Err(op_err("input has no OP_ID".into())),
    };
    let status: JobStatus = raw
        .status
        .parse()
        .map_err(|_| op_err(format!("unknown status {:?}", raw.status)))?;
    // `instance_name`, else an `instances` list of exactly one (what
    // Synnefo's eventd accepts too).
    let instance_name = match raw.input.get("instance_name") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => match raw.input.get("instances") {
            Some(Value::Array(a)) if a.len() == 1 => a[0].as_str().map(str::to_string),
            _ => None,
        },
    };
    let ts = |name: &str, v: &Value| {
        parse_timestamp(v).map_err(|value| op_err(format!("bad {name}: {value}")))
    };
    Ok(OpEntry {
        start: ts("start_timestamp", &raw.start_timestamp)?,
        exec: ts("exec_timestamp", &raw.exec_timestamp)?,
        end: ts("end_timestamp", &raw.end_timestamp)?,
        last_log: raw.log.last().and_then(log_message),
        op_id,
        instance_name,
        input: raw.input,
        status,
        result: raw.result,
    })
}

/// Parses a job file. `expected_id` (from the file name) must match the
/// `id` inside when given.
pub fn parse_job(bytes: &[u8], expected_id: Option<u64>) -> Result<JobFile, JobParseError> {
    let raw: RawJob =
        serde_json::from_slice(bytes).map_err(|e| JobParseError::Shape(e.to_string()))?;
    let id = match &raw.id {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| JobParseError::BadId(raw.id.to_string()))?;
    if let Some(expected) = expected_id
        && expected != id
    {
        return Err(JobParseError::IdMismatch {
            expected,
            found: id,
        });
    }
    let received = job_ts("received_timestamp", &raw.received_timestamp)?;
    let start = job_ts("start_timestamp", &raw.start_timestamp)?;
    let end = job_ts("end_timestamp", &raw.end_timestamp)?;
    let ops = raw
        .ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| parse_op(i, op))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobFile {
        id,
        ops,
        received,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_job_names_are_jobs() {
        let cases = [
            ("job-1", Some(1)),
            ("job-1234", Some(1234)),
            ("job-1234-5678-1.tmp", None),
            ("job-12abcdef.new", None),
            ("job-", None),
            ("job-12.tmp", None),
            ("job-+1", None),
            ("job--1", None),
            ("xjob-1", None),
            ("serial", None),
            ("lock", None),
            ("version", None),
            ("archive", None),
            ("job-99999999999999999999999", None),
        ];
        for (name, want) in cases {
            assert_eq!(job_id_from_file_name(name), want, "{name}");
        }
    }

    #[test]
    fn archive_path_follows_ganeti() {
        assert_eq!(
            archive_relative_path(4),
            std::path::PathBuf::from("archive/0/job-4")
        );
        assert_eq!(
            archive_relative_path(123_456),
            std::path::PathBuf::from("archive/12/job-123456")
        );
    }

    #[test]
    fn parses_the_real_create_job() {
        let job = parse_job(include_bytes!("testdata/job-2.json"), Some(2)).unwrap();
        assert_eq!(job.id, 2);
        assert_eq!(job.received, Some((1795555492, 758051)));
        assert_eq!(job.ops.len(), 1);
        let op = &job.ops[0];
        assert_eq!(op.op_id, "OP_INSTANCE_CREATE");
        assert_eq!(op.instance_name.as_deref(), Some("snf-1"));
        assert_eq!(op.status, JobStatus::Success);
        assert_eq!(op.last_log.as_deref(), Some("* starting instance..."));
        assert_eq!(op.end, Some((1795555493, 356477)));
        assert_eq!(op.result, serde_json::json!(["node1.lab.test"]));
        assert!(job.is_finished());
    }

    #[test]
    fn malformed_files_say_why() {
        let cases: [(&[u8], Option<u64>, &str); 9] = [
            (b"", None, "not a Ganeti job file"),
            (b"{\"id\": 1, \"ops\": [", None, "not a Ganeti job file"),
            (b"[1,2]", None, "not a Ganeti job file"),
            (br#"{"id": 1}"#, None, "missing field `ops`"),
            (br#"{"id": -1, "ops": []}"#, None, "bad job id"),
            (br#"{"id": 1, "ops": []}"#, Some(2), "does not match"),
            (br#"{"id": 1, "ops": [{"input": {}, "status": "success"}]}"#, None, "no OP_ID"),
            (
                br#"{"id": 1, "ops": [{"input": {"OP_ID": "OP_INSTANCE_STARTUP"}, "status": "done"}]}"#,
                None,
                "unknown status",
            ),
            (
                br#"{"id": 1, "ops": [{"input": {"OP_ID": "X"}, "status": "success", "end_timestamp": [1, 1000000]}]}"#,
                None,
                "bad end_timestamp",
            ),
        ];
        for (bytes, expected, want) in cases {
            let err = parse_job(bytes, expected).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn string_ids_and_non_string_log_messages_are_accepted() {
        let job = parse_job(
            br#"{"id": "7", "ops": [{"input": {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "snf-1"},
                 "status": "running", "log": [[1, [1, 2], "remote-import", {"x": 1}]]}]}"#,
            Some(7),
        )
        .unwrap();
        assert_eq!(job.id, 7);
        assert_eq!(job.ops[0].last_log.as_deref(), Some(r#"{"x":1}"#));
        assert!(!job.is_finished());
    }
}
