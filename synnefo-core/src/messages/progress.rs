//! snf-image's build messages (Synnefo's `ganeti.<prefix>.event.progress`)
//! read the way Synnefo 0.20's dispatcher reads them
//! (`callbacks.update_build_progress`): an `image-copy-progress` sets the
//! server's build percentage; `image-info`, `image-warning`,
//! `image-error` and `image-helper` each become a diagnostic entry of the
//! server (level, source, message, details) as `create_instance_diagnostic`
//! stores them.

use serde::{Deserialize, Serialize};

use super::synnefo::ProgressMessage;
use super::{bounded, time_us};
use crate::error::EventError;
use crate::ids::{InstanceName, VmId};

/// Longest diagnostic message kept (Synnefo's `message` column is a
/// `CharField(max_length=255)`).
pub const MAX_DIAGNOSTIC_MESSAGE: usize = 255;
/// Longest diagnostic source kept (Synnefo's `CharField(max_length=100)`).
pub const MAX_DIAGNOSTIC_SOURCE: usize = 100;
/// Longest diagnostic details kept (snf-image sends the last lines of a
/// program's standard error; the bound keeps a runaway one small).
pub const MAX_DIAGNOSTIC_DETAILS: usize = 16 * 1024;

/// The level of a diagnostic entry (Synnefo's `VirtualMachineDiagnostic`
/// levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiagnosticLevel {
    /// `ERROR`.
    Error,
    /// `WARNING`.
    Warning,
    /// `INFO`.
    Info,
    /// `DEBUG`.
    Debug,
}

impl DiagnosticLevel {
    /// The stored and served name (`ERROR`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosticLevel::Error => "ERROR",
            DiagnosticLevel::Warning => "WARNING",
            DiagnosticLevel::Info => "INFO",
            DiagnosticLevel::Debug => "DEBUG",
        }
    }

    /// The level named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ERROR" => Some(DiagnosticLevel::Error),
            "WARNING" => Some(DiagnosticLevel::Warning),
            "INFO" => Some(DiagnosticLevel::Info),
            "DEBUG" => Some(DiagnosticLevel::Debug),
            _ => None,
        }
    }
}

/// A diagnostic entry to store for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDiagnostic {
    /// Its level.
    pub level: DiagnosticLevel,
    /// Where it came from (`image-info`, `image-helper-task-start`, ...).
    pub source: String,
    /// The message (never empty).
    pub message: String,
    /// Further details (a program's standard error), if any.
    pub details: Option<String>,
}

/// What one build message says about a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildReport {
    /// The image copy is this far (0-100).
    Copy {
        /// Percent copied.
        percent: u8,
    },
    /// An entry for the server's diagnostics.
    Diagnostic(NewDiagnostic),
}

/// A build message for one of our servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressNote {
    /// The server.
    pub vm: VmId,
    /// When the monitor read it (`event_time`), microseconds since the
    /// epoch.
    pub time_us: i64,
    /// What it says.
    pub report: BuildReport,
}

/// The types Synnefo's dispatcher acts on; others are acknowledged and
/// logged.
pub const KNOWN_TYPES: [&str; 5] = [
    "image-copy-progress",
    "image-error",
    "image-info",
    "image-warning",
    "image-helper",
];

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl ProgressMessage {
    /// Reads the message for `prefix`'s servers: `Ok(None)` for a type
    /// Synnefo's dispatcher does not act on (acknowledged), errors for
    /// another deployment's instance, a bad `event_time` or a percentage
    /// that is not a number at least 0.
    pub fn into_note(self, prefix: &str) -> Result<Option<ProgressNote>, EventError> {
        let name = InstanceName::parse(prefix, &self.instance)
            .ok_or_else(|| EventError::ForeignInstance(bounded(&self.instance)))?;
        let time_us = time_us(self.event_time)?;
        if !KNOWN_TYPES.contains(&self.kind.as_str()) {
            return Ok(None);
        }
        let report = if self.kind == "image-copy-progress" {
            // Synnefo: int(progress), at most 100 (snf-image may count
            // past the image's size), never negative.
            let p = self.progress.ok_or_else(|| {
                EventError::Malformed("image-copy-progress without progress".into())
            })?;
            if !p.is_finite() || p < 0.0 {
                return Err(EventError::Malformed(format!(
                    "image-copy-progress with progress {p}"
                )));
            }
            BuildReport::Copy {
                percent: p.min(100.0) as u8,
            }
        } else {
            BuildReport::Diagnostic(self.diagnostic())
        };
        Ok(Some(ProgressNote {
            vm: name.vm_id(),
            time_us,
            report,
        }))
    }

    /// The diagnostic entry of a non-copy message, by Synnefo's rules:
    /// source the type (helper tasks: `image-helper-task-start`/`-end`
    /// with the task as message), level `DEBUG` unless the type or helper
    /// subtype says otherwise, the message lines joined by spaces, or the
    /// source in words when there are none.
    fn diagnostic(&self) -> NewDiagnostic {
        let mut source = self.kind.clone();
        let mut level = DiagnosticLevel::Debug;
        let mut message = self.messages.as_deref().unwrap_or_default().join(" ");
        if self.kind == "image-helper" {
            match self.subtype.as_deref() {
                Some(sub @ ("task-start" | "task-end")) => {
                    if let Some(task) = &self.task {
                        message = task.clone();
                    }
                    source = format!("{source}-{sub}");
                }
                Some("warning") => level = DiagnosticLevel::Warning,
                Some("error") => level = DiagnosticLevel::Error,
                Some("info") => level = DiagnosticLevel::Info,
                _ => {}
            }
        }
        match self.kind.as_str() {
            "image-error" => level = DiagnosticLevel::Error,
            "image-warning" => level = DiagnosticLevel::Warning,
            _ => {}
        }
        if message.trim().is_empty() {
            // "image-helper-task-start" -> "Image helper task start"
            let words = source.replace('-', " ");
            let mut c = words.chars();
            message = match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect(),
                None => String::new(),
            };
        }
        NewDiagnostic {
            level,
            source: truncate(&source, MAX_DIAGNOSTIC_SOURCE),
            message: truncate(&message, MAX_DIAGNOSTIC_MESSAGE),
            details: self
                .stderr
                .as_deref()
                .map(|d| truncate(d, MAX_DIAGNOSTIC_DETAILS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn note(v: serde_json::Value) -> Result<Option<ProgressNote>, EventError> {
        serde_json::from_value::<ProgressMessage>(v)
            .unwrap()
            .into_note("snf-")
    }

    fn diag(v: serde_json::Value) -> NewDiagnostic {
        match note(v).unwrap().unwrap().report {
            BuildReport::Diagnostic(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn copy_progress_is_a_capped_whole_percentage() {
        for (p, want) in [
            (json!(0), 0),
            (json!(42.99), 42),
            (json!(100), 100),
            (json!(100.4), 100),
            (json!(170), 100),
        ] {
            let n = note(json!({"type": "image-copy-progress", "instance": "snf-7",
                "event_time": [10, 5], "progress": p, "position": 1, "total": 2}))
            .unwrap()
            .unwrap();
            assert_eq!(n.vm, VmId(7));
            assert_eq!(n.time_us, 10_000_005);
            assert_eq!(n.report, BuildReport::Copy { percent: want }, "{p}");
        }
        for bad in [json!(-1), json!(null)] {
            let r = note(json!({"type": "image-copy-progress", "instance": "snf-7",
                "event_time": [10, 5], "progress": bad}));
            assert!(matches!(r, Err(EventError::Malformed(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn diagnostics_follow_synnefos_dispatcher() {
        let base = |extra: serde_json::Value| {
            let mut m = json!({"instance": "snf-7", "event_time": [1, 0], "timestamp": 1.5});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            m
        };
        let d = diag(base(
            json!({"type": "image-info", "messages": ["Starting image copy..."]}),
        ));
        assert_eq!(
            (d.level, d.source.as_str(), d.message.as_str(), d.details),
            (
                DiagnosticLevel::Debug,
                "image-info",
                "Starting image copy...",
                None
            )
        );
        let d = diag(base(
            json!({"type": "image-helper", "subtype": "task-start", "task": "FixPartitionTable"}),
        ));
        assert_eq!(
            (d.level, d.source.as_str(), d.message.as_str()),
            (
                DiagnosticLevel::Debug,
                "image-helper-task-start",
                "FixPartitionTable"
            )
        );
        let d = diag(base(json!({"type": "image-helper", "subtype": "task-end"})));
        assert_eq!(
            (d.source.as_str(), d.message.as_str()),
            ("image-helper-task-end", "Image helper task end")
        );
        let d = diag(base(
            json!({"type": "image-helper", "subtype": "warning", "messages": ["No swap", "partition"]}),
        ));
        assert_eq!(
            (d.level, d.message.as_str()),
            (DiagnosticLevel::Warning, "No swap partition")
        );
        let d = diag(base(
            json!({"type": "image-helper", "subtype": "error", "stderr": "e2fsck: bad"}),
        ));
        assert_eq!(
            (
                d.level,
                d.source.as_str(),
                d.message.as_str(),
                d.details.as_deref()
            ),
            (
                DiagnosticLevel::Error,
                "image-helper",
                "Image helper",
                Some("e2fsck: bad")
            )
        );
        let d = diag(base(
            json!({"type": "image-error", "messages": ["Image customization failed."]}),
        ));
        assert_eq!(d.level, DiagnosticLevel::Error);
        let d = diag(base(json!({"type": "image-warning", "messages": ["w"]})));
        assert_eq!(d.level, DiagnosticLevel::Warning);
        let d = diag(base(json!({"type": "image-helper", "subtype": "info"})));
        assert_eq!(d.level, DiagnosticLevel::Info);
        // bounded like Synnefo's columns
        let d = diag(base(
            json!({"type": "image-info", "messages": ["é".repeat(300)]}),
        ));
        assert!(d.message.len() <= MAX_DIAGNOSTIC_MESSAGE && d.message.starts_with('é'));
    }

    #[test]
    fn unknown_types_foreign_instances_and_bad_times() {
        assert_eq!(
            note(json!({"type": "image-other", "instance": "snf-7", "event_time": [1, 0]}))
                .unwrap(),
            None
        );
        assert!(matches!(
            note(json!({"type": "image-info", "instance": "x-7", "event_time": [1, 0]})),
            Err(EventError::ForeignInstance(_))
        ));
        assert!(matches!(
            note(json!({"type": "image-info", "instance": "snf-7", "event_time": [1, -1]})),
            Err(EventError::Malformed(_))
        ));
    }

    #[test]
    fn the_wire_type_keeps_every_field() {
        let m = json!({"type": "image-helper", "instance": "snf-7", "event_time": [1, 2],
            "timestamp": 3.25, "subtype": "error", "messages": ["a"], "stderr": "b",
            "something": {"new": true}});
        let back =
            serde_json::to_value(serde_json::from_value::<ProgressMessage>(m.clone()).unwrap())
                .unwrap();
        assert_eq!(back, m);
    }
}
