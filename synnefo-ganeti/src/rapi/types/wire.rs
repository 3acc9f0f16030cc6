//! Ids, timestamps and job log entries as Ganeti writes them.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use synnefo_core::ids::JobId;

/// A job id as Ganeti sends it: a JSON number (3.0) or a numeric string
/// (older releases and some documentation). Serialises as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireJobId(pub u64);

impl From<WireJobId> for JobId {
    fn from(id: WireJobId) -> JobId {
        JobId(id.0)
    }
}

impl Serialize for WireJobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for WireJobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireJobId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job id (number or numeric string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireJobId, E> {
                Ok(WireJobId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireJobId, E> {
                u64::try_from(v)
                    .map(WireJobId)
                    .map_err(|_| E::custom(format!("negative job id {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireJobId, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < 1e15 {
                    Ok(WireJobId(v as u64))
                } else {
                    Err(E::custom(format!("invalid job id {v}")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireJobId, E> {
                v.trim()
                    .parse::<u64>()
                    .map(WireJobId)
                    .map_err(|_| E::custom(format!("invalid job id {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Ganeti's `[seconds, microseconds]` timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Microseconds within the second.
    pub usecs: i64,
}

impl Timestamp {
    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.secs
            .saturating_mul(1_000_000)
            .saturating_add(self.usecs)
    }

    /// The current time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            usecs: i64::from(d.subsec_micros()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&self.secs)?;
        seq.serialize_element(&self.usecs)?;
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Ganeti writes integers; accept floats too (older job files).
        let (secs, usecs): (f64, f64) = Deserialize::deserialize(d)?;
        Ok(Timestamp {
            secs: secs as i64,
            usecs: usecs as i64,
        })
    }
}

/// One job log entry: `[serial, [sec, usec], type, message]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Job-wide serial number (grows by one per entry).
    pub serial: u64,
    /// When it was logged.
    pub time: Timestamp,
    /// `message`, `remote-import`, ...
    pub kind: String,
    /// Usually a string; some kinds carry structured data.
    pub message: Value,
}

impl LogEntry {
    /// The message as text (JSON for structured messages).
    pub fn text(&self) -> String {
        match &self.message {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.serial, self.time, &self.kind, &self.message).serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LogEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a log entry [serial, [sec, usec], type, message]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LogEntry, A::Error> {
                let serial: u64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let time: Timestamp = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let kind: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let message: Value = seq.next_element()?.unwrap_or(Value::Null);
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(LogEntry {
                    serial,
                    time,
                    kind,
                    message,
                })
            }
        }
        d.deserialize_seq(V)
    }
}
