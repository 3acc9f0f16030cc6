//! Jobs (`GET /2/jobs/ID`, its `/wait` answer, `DELETE /2/jobs/ID`) and
//! Ganeti's error body.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use synnefo_core::ports::{JobInfo, JobOpInfo};
use synnefo_core::state::{JobStatus, OpError};

use super::*;
use crate::error::RapiError;

/// `GET /2/jobs/ID` (Ganeti's `J_FIELDS`). For an unknown job Ganeti 3.0
/// answers 200 with `id` echoed and every other field `null`; the client turns that into
/// [`RapiError::NotFound`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RapiJob {
    /// The job's id (echoed even for an unknown job).
    pub id: Option<WireJobId>,
    /// The opcodes' inputs (each with `OP_ID`).
    pub ops: Option<Vec<Value>>,
    /// `queued`, `waiting`, `running`, `success`, `error`, `canceling` or `canceled`.
    pub status: Option<String>,
    /// One summary per op (`INSTANCE_STARTUP(snf-1)`).
    pub summary: Option<Vec<String>>,
    /// One status per op.
    pub opstatus: Option<Vec<String>>,
    /// When the job was submitted.
    pub received_ts: Option<Timestamp>,
    /// When its first op left the queue.
    pub start_ts: Option<Timestamp>,
    /// When its last op ended.
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
    /// The HTTP reason phrase (`Not Found`, `Bad Request`, ...).
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
