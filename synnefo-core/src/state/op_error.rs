//! Ganeti's failure of an opcode, typed: its exception class, message and
//! classification code ([`ErrorCode`]).
//!
//! Ganeti stores a failed opcode's result as
//! `["OpPrereqError", ["Instance 'snf-1' not known", "unknown_entity"]]`
//! (or `[class, [message]]`, `[class, message]`). [`OpError::from_result`]
//! is the one reader of that tuple; it runs where the JSON comes in (the
//! bus decoder, the RAPI client, eventd), and everything after that works
//! on the typed value. The text form ([`fmt::Display`],
//! `OpPrereqError: Instance 'snf-1' not known (unknown_entity)`) is for
//! people (a server's fault, logs) and is never parsed back.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! error_codes {
    ($($variant:ident => $wire:literal, $ganeti:literal;)*) => {
        /// Ganeti's error classification (`errors.ECODE_*`), the second
        /// argument of an `OpPrereqError`.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = concat!("`", $wire, "` (`errors.", $ganeti, "`).")]
                $variant,
            )*
            /// A code this build does not know (a newer Ganeti's), kept verbatim.
            Other(String),
        }

        impl ErrorCode {
            /// Every code Ganeti defines, for exhaustive tests.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// Ganeti's wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                    ErrorCode::Other(s) => s,
                }
            }

            /// The code for a wire name; unknown names become [`ErrorCode::Other`].
            pub fn from_wire(s: &str) -> ErrorCode {
                match s {
                    $($wire => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_string()),
                }
            }
        }
    };
}

error_codes! {
    Resolver => "resolver_error", "ECODE_RESOLVER";
    NoResources => "insufficient_resources", "ECODE_NORES";
    TempNoResources => "temp_insufficient_resources", "ECODE_TEMP_NORES";
    Invalid => "wrong_input", "ECODE_INVAL";
    WrongState => "wrong_state", "ECODE_STATE";
    UnknownEntity => "unknown_entity", "ECODE_NOENT";
    AlreadyExists => "already_exists", "ECODE_EXISTS";
    NotUnique => "resource_not_unique", "ECODE_NOTUNIQUE";
    Fault => "internal_error", "ECODE_FAULT";
    Environment => "environment_error", "ECODE_ENVIRON";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ErrorCode::from_wire(&String::deserialize(d)?))
    }
}

/// Ganeti's `OpPrereqError`: the opcode's prerequisites failed (nothing
/// was changed).
pub const PREREQ_ERROR: &str = "OpPrereqError";

/// The error of a failed Ganeti opcode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpError {
    /// `OpPrereqError`, `OpExecError`, ...
    pub class: String,
    /// The message.
    pub message: String,
    /// The classification code, when Ganeti gave one.
    pub code: Option<ErrorCode>,
}

impl OpError {
    /// Reads an opcode's result; `None` unless it is an error
    /// `[class, [message, code]]`, `[class, [message]]` or `[class, message]`.
    pub fn from_result(result: &Value) -> Option<OpError> {
        let [Value::String(class), detail] = result.as_array()?.as_slice() else {
            return None;
        };
        if !is_error_class(class) {
            return None;
        }
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let (message, code) = match detail {
            Value::Array(args) if !args.is_empty() => (
                text(&args[0]),
                args.get(1)
                    .and_then(Value::as_str)
                    .map(ErrorCode::from_wire),
            ),
            other => (text(other), None),
        };
        Some(OpError {
            class: class.clone(),
            message,
            code,
        })
    }

    /// Ganeti does not know the entity the opcode names (for an instance
    /// opcode: the instance): an `OpPrereqError` classified
    /// `unknown_entity` (`errors.ECODE_NOENT`).
    pub fn is_unknown_entity(&self) -> bool {
        self.class == PREREQ_ERROR && self.code == Some(ErrorCode::UnknownEntity)
    }
}

/// A Ganeti exception class name (`OpPrereqError`, `errors.OpExecError`).
fn is_error_class(s: &str) -> bool {
    s.ends_with("Error")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}
