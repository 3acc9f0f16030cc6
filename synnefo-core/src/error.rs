//! Errors of the core crate: one enum per concern, all `thiserror`.

use crate::state::{Action, OperState, RescueStage, ResizeStage};

/// Invalid domain values (ids, names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not a positive integer id.
    #[error("invalid id {0:?}")]
    InvalidId(String),
    /// A value outside its allowed range or form.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A request that breaks a rule, worded for the caller as is (e.g.
    /// Neutron's "Invalid input for cidr. Reason: ...").
    #[error("{0}")]
    InvalidRequest(String),
}

/// A backend notification that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// An opcode Synnefo does not know.
    #[error("unknown opcode {0:?}")]
    UnknownOpCode(String),
    /// A job status Ganeti does not define.
    #[error("unknown job status {0:?}")]
    UnknownStatus(String),
    /// An operstate name not in the model.
    #[error("unknown operstate {0:?}")]
    UnknownOperState(String),
    /// The message body is not a valid notification.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The instance name is not `<prefix><vm id>`.
    #[error("instance {0:?} is not one of ours")]
    ForeignInstance(String),
}

/// A user action refused by the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The VM is deleted.
    #[error("the server is deleted")]
    Deleted,
    /// Only delete is allowed while building.
    #[error("the server is still being built")]
    BuildInProgress,
    /// A suspended VM cannot be started by its owner.
    #[error("the server is suspended")]
    Suspended,
    /// The server is locked (Nova's `lock`) and the caller may not act on
    /// it.
    #[error("Instance {0} is locked")]
    Locked(crate::ids::VmId),
    /// The action makes no sense in the current state.
    #[error("cannot {} a server in state {operstate}", action.as_str().to_lowercase())]
    InvalidState {
        /// The refused action.
        action: Action,
        /// The current operstate.
        operstate: OperState,
    },
    /// Another action is still pending (its job has not ended).
    #[error("cannot {} a server while its {} is pending", action.as_str().to_lowercase(), pending.as_str().to_lowercase())]
    Pending {
        /// The refused action.
        action: Action,
        /// The one pending.
        pending: Action,
    },
    /// A resize runs or awaits confirmation: only delete, or its confirm or
    /// revert, may follow.
    #[error("cannot {} a server whose resize is {}", action.as_str().to_lowercase(), resize_stage_words(*stage))]
    Resizing {
        /// The refused action.
        action: Action,
        /// Where the resize stands.
        stage: ResizeStage,
    },
    /// A confirm or revert of a server with no resize awaiting
    /// confirmation.
    #[error("cannot {action} a server {}", match stage { Some(s) => format!("whose resize is {}", resize_stage_words(*s)), None => "that has not been resized".to_string() })]
    NotResized {
        /// Nova's name of the refused request (`confirmResize`,
        /// `revertResize`).
        action: &'static str,
        /// Where its resize stands, if it has one.
        stage: Option<ResizeStage>,
    },
    /// A rescue or unrescue the server's rescue mode does not allow, or
    /// another action while a rescue or unrescue job runs.
    #[error("{}", rescue_words(*action, *stage))]
    Rescue {
        /// The refused action.
        action: Action,
        /// Where the server's rescue stands (`None`: not in rescue mode).
        stage: Option<RescueStage>,
    },
    /// A resize to the flavor the server has.
    #[error("When resizing, instances must change flavor!")]
    SameFlavor,
    /// A resize to a flavor with another disk size (Synnefo resizes CPUs
    /// and RAM only).
    #[error(
        "Server disk was unable to be resized because: the flavor's disk is {to_gib} GiB and the server's {from_gib} GiB; a resize keeps the disk"
    )]
    DiskSize {
        /// The server's disk (GiB).
        from_gib: i32,
        /// The flavor's disk (GiB).
        to_gib: i32,
    },
    /// A resize to a flavor with another disk template.
    #[error(
        "Server disk was unable to be resized because: the flavor's disk template is {to} and the server's {from}; a resize keeps the disk"
    )]
    DiskTemplate {
        /// The server's disk template.
        from: String,
        /// The flavor's.
        to: String,
    },
}

impl ActionError {
    /// Bad input rather than a conflict with the server's state (a 400 in
    /// both API dialects): a resize to the same flavor or to another disk.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            ActionError::SameFlavor
                | ActionError::DiskSize { .. }
                | ActionError::DiskTemplate { .. }
        )
    }
}

fn rescue_words(action: Action, stage: Option<RescueStage>) -> String {
    let verb = action.as_str().to_lowercase();
    match stage {
        None => format!("cannot {verb} a server that is not in rescue mode"),
        Some(RescueStage::Rescued) => format!("cannot {verb} a server in rescue mode"),
        Some(RescueStage::Rescuing) => {
            format!("cannot {verb} a server while it is being rescued")
        }
        Some(RescueStage::Unrescuing) => {
            format!("cannot {verb} a server while it is being unrescued")
        }
    }
}

fn resize_stage_words(stage: ResizeStage) -> &'static str {
    match stage {
        ResizeStage::Resizing => "in progress",
        ResizeStage::Verifying => "awaiting confirmation",
        ResizeStage::Reverting => "being reverted",
    }
}

/// Errors of the [`crate::ports::Store`] port.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No such row (or not visible to the caller).
    #[error("{0} not found")]
    NotFound(String),
    /// Another writer changed the row first (optimistic concurrency).
    #[error("concurrent update of {0}; retry")]
    Conflict(String),
    /// A uniqueness or integrity rule was broken.
    #[error("{0}")]
    Integrity(String),
    /// Quota would be exceeded.
    #[error("quota exceeded for {resource}: limit {limit}, in use {in_use}, requested {requested}")]
    QuotaExceeded {
        /// `servers`, `vcpus` or `ram`.
        resource: &'static str,
        /// The project's limit.
        limit: i64,
        /// Current usage.
        in_use: i64,
        /// What the request needs.
        requested: i64,
    },
    /// A pool has nothing left to hand out (IP addresses, MACs).
    #[error("{0}")]
    Exhausted(String),
    /// The database is unreachable or failed.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value that does not decode (corrupt row).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// Errors of the [`crate::ports::GanetiBackend`] port.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No such instance / job.
    #[error("not found: {0}")]
    NotFound(String),
    /// Ganeti refused the request (conflict, wrong state, bad input).
    #[error("rejected by Ganeti: {0}")]
    Rejected(String),
    /// Credentials refused.
    #[error("authentication with Ganeti failed: {0}")]
    Auth(String),
    /// A Ganeti job failed.
    #[error("job {job_id} failed: {message}")]
    JobFailed {
        /// The job.
        job_id: u64,
        /// A readable message (the error's text form, or the op's log).
        message: String,
        /// Ganeti's error, typed, when the failing op's result carried one.
        error: Option<crate::state::OpError>,
    },
    /// No cluster can take the request.
    #[error("no Ganeti backend available: {0}")]
    NoBackend(String),
    /// Network, TLS or timeout trouble; may work on retry.
    #[error("Ganeti unreachable: {0}")]
    Unavailable(String),
    /// Anything else (decoding, protocol).
    #[error("Ganeti protocol error: {0}")]
    Protocol(String),
}

/// Errors of the [`crate::ports::EventBus`] port.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The broker is unreachable; the caller may spool and retry.
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
    /// The bus is closed (shutdown).
    #[error("message bus closed")]
    Closed,
    /// Anything else.
    #[error("message bus error: {0}")]
    Other(String),
}

/// Settings that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A parse, type or unknown-key error, naming the key and the file.
    #[error("{0}")]
    Invalid(String),
    /// A value that parses but is not acceptable.
    #[error("setting {key}: {reason}")]
    Validation {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An override file that cannot be read.
    #[error("cannot read settings file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Errors of the application services (what the API and dispatcher call).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad user input.
    #[error("{0}")]
    BadRequest(String),
    /// Missing (or not visible to this tenant).
    #[error("{0}")]
    NotFound(String),
    /// Refused in the current state.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// Quota exceeded.
    #[error("{0}")]
    OverLimit(String),
    /// Authentication failed.
    #[error("{0}")]
    Unauthorized(String),
    /// Not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
    /// Ganeti failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A notification was invalid.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A bounded resource (password checks, login attempts, console
    /// forwardings) is used up for now; the request may be retried.
    #[error("{message}")]
    Busy {
        /// What is busy, for the client.
        message: String,
        /// Seconds after which a retry may succeed (`Retry-After`).
        retry_after_secs: u64,
        /// True when one caller (address, user, project) used up its own
        /// share (429), false when the whole service is busy (503).
        per_caller: bool,
    },
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ServiceError::NotFound(format!("{what} not found")),
            StoreError::QuotaExceeded { .. } => ServiceError::OverLimit(e.to_string()),
            other => ServiceError::Store(other),
        }
    }
}
