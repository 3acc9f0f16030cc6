//! The VM state machine: pure functions over [`VmState`], no I/O.
//!
//! Two inputs move a VM: a user action ([`start_action`]) and a backend
//! notification ([`apply_op_status`]). Notifications arrive over a queue with
//! at-least-once delivery and several competing dispatchers, so they can be
//! duplicated and reordered. Two generation guards make the outcome
//! independent of arrival order:
//!
//! * `last_event` guards the recorded backend job fields (job id, opcode,
//!   status, log message): only a newer event overwrites them.
//! * `state_event` guards `operstate`: only a *state-determining* event
//!   (a terminal status of an opcode that changes operstate) newer than the
//!   one that set the current operstate may change it.
//!
//! `DESTROYED` is absorbing: a removal always wins, whatever else arrives
//! before or after it. A removal is a successful `OP_INSTANCE_REMOVE`, or
//! one that failed because Ganeti does not know the instance (nothing is
//! left to remove; see [`OpStatusEvent::determined_state`]). With these
//! rules the final state equals the state reached by the in-order stream
//! (property-tested below).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::{ActionError, EventError};
use crate::ids::JobId;

mod op_error;
mod rebuild;
mod rescue;
mod resize;
mod status;
mod transitions;

pub use op_error::{ErrorCode, OpError, PREREQ_ERROR};
pub use rebuild::{Rebuild, RebuildOutcome, rebuilt_image, start_rebuild};
pub use rescue::{Rescue, RescueStage, start_rescue, start_unrescue};
pub use resize::{
    Resize, ResizeStage, Restart, RestartStep, confirm_resize, record_reboot_job, start_resize,
    start_revert_resize, target_flavor, without_restart,
};
pub use status::{ServerStatus, server_status, synnefo_status};
pub use transitions::{
    StateFix, create_refused, destroyed_without_ganeti, fixed_state, record_orphan_removal,
    rollback_submit,
};

/// Synnefo's operating state of a VM (v0.3 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OperState {
    /// Being created; the create job has not finished yet.
    Build,
    /// Creation failed.
    Error,
    /// Shut down.
    Stopped,
    /// Running.
    Started,
    /// Removed from Ganeti.
    Destroyed,
}

impl OperState {
    /// All states, for exhaustive tests.
    pub const ALL: [OperState; 5] = [
        OperState::Build,
        OperState::Error,
        OperState::Stopped,
        OperState::Started,
        OperState::Destroyed,
    ];

    /// The name stored in the DB and shown by Synnefo's own dialect.
    pub fn as_str(self) -> &'static str {
        match self {
            OperState::Build => "BUILD",
            OperState::Error => "ERROR",
            OperState::Stopped => "STOPPED",
            OperState::Started => "STARTED",
            OperState::Destroyed => "DESTROYED",
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperState {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OperState::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| EventError::UnknownOperState(s.to_string()))
    }
}

/// A Ganeti job (or opcode) status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Submitted, not yet picked up.
    Queued,
    /// Waiting for locks.
    Waiting,
    /// Cancel requested.
    Canceling,
    /// Executing.
    Running,
    /// Canceled (terminal).
    Canceled,
    /// Succeeded (terminal).
    Success,
    /// Failed (terminal).
    Error,
}

impl JobStatus {
    /// All statuses, for exhaustive tests.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Waiting,
        JobStatus::Canceling,
        JobStatus::Running,
        JobStatus::Canceled,
        JobStatus::Success,
        JobStatus::Error,
    ];

    /// Ganeti's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Waiting => "waiting",
            JobStatus::Canceling => "canceling",
            JobStatus::Running => "running",
            JobStatus::Canceled => "canceled",
            JobStatus::Success => "success",
            JobStatus::Error => "error",
        }
    }

    /// True for the statuses a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Canceled | JobStatus::Success | JobStatus::Error
        )
    }

    /// Progress rank within one opcode: a later status never has a lower rank.
    pub fn rank(self) -> u8 {
        match self {
            JobStatus::Queued => 0,
            JobStatus::Waiting => 1,
            JobStatus::Running => 2,
            JobStatus::Canceling => 3,
            JobStatus::Canceled | JobStatus::Success | JobStatus::Error => 4,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| EventError::UnknownStatus(s.to_string()))
    }
}

macro_rules! opcodes {
    ($($variant:ident => $wire:literal),* $(,)?) => {
        /// The Ganeti opcodes Synnefo understands.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpCode {
            $(
                #[doc = concat!("`", $wire, "`")]
                $variant,
            )*
        }

        impl OpCode {
            /// All known opcodes, for exhaustive tests.
            pub const ALL: &'static [OpCode] = &[$(OpCode::$variant),*];

            /// Ganeti's `OP_ID`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(OpCode::$variant => $wire,)*
                }
            }
        }

        impl FromStr for OpCode {
            type Err = EventError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(OpCode::$variant),)*
                    other => Err(EventError::UnknownOpCode(other.to_string())),
                }
            }
        }
    };
}

opcodes! {
    InstanceCreate => "OP_INSTANCE_CREATE",
    InstanceRemove => "OP_INSTANCE_REMOVE",
    InstanceStartup => "OP_INSTANCE_STARTUP",
    InstanceShutdown => "OP_INSTANCE_SHUTDOWN",
    InstanceReboot => "OP_INSTANCE_REBOOT",
    InstanceSetParams => "OP_INSTANCE_SET_PARAMS",
    InstanceQueryData => "OP_INSTANCE_QUERY_DATA",
    InstanceReinstall => "OP_INSTANCE_REINSTALL",
    InstanceActivateDisks => "OP_INSTANCE_ACTIVATE_DISKS",
    InstanceDeactivateDisks => "OP_INSTANCE_DEACTIVATE_DISKS",
    InstanceReplaceDisks => "OP_INSTANCE_REPLACE_DISKS",
    InstanceMigrate => "OP_INSTANCE_MIGRATE",
    InstanceConsole => "OP_INSTANCE_CONSOLE",
    InstanceRecreateDisks => "OP_INSTANCE_RECREATE_DISKS",
    InstanceFailover => "OP_INSTANCE_FAILOVER",
    InstanceGrowDisk => "OP_INSTANCE_GROW_DISK",
    InstanceSnapshot => "OP_INSTANCE_SNAPSHOT",
    InstanceRename => "OP_INSTANCE_RENAME",
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OpCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OpCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl OpCode {
    /// The operstate a *successful* run of this opcode leads to, if any.
    pub fn success_state(self) -> Option<OperState> {
        match self {
            OpCode::InstanceCreate | OpCode::InstanceStartup | OpCode::InstanceReboot => {
                Some(OperState::Started)
            }
            OpCode::InstanceRemove => Some(OperState::Destroyed),
            OpCode::InstanceShutdown => Some(OperState::Stopped),
            _ => None,
        }
    }
}

/// Soft or hard reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootKind {
    /// ACPI reboot inside the guest.
    Soft,
    /// Power-cycle.
    Hard,
}

/// A user (or operator) action on a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "kind")]
pub enum Action {
    /// Create the instance (set when the VM row is first stored).
    Create,
    /// Start a stopped VM.
    Start,
    /// Shut a running VM down.
    Stop,
    /// Reboot.
    Reboot(RebootKind),
    /// Delete the VM and remove its instance.
    Destroy,
    /// Administratively suspend (the owner can no longer start it).
    Suspend,
    /// Lift a suspension.
    Unsuspend,
    /// Resize to another flavor (started by [`start_resize`], which
    /// records the flavors).
    Resize,
    /// Go back to the flavor before a resize awaiting confirmation
    /// (started by [`start_revert_resize`]).
    RevertResize,
    /// Write the disk again from an image (started by [`start_rebuild`],
    /// which records the image).
    Rebuild,
    /// Boot from the rescue image (started by [`start_rescue`]).
    Rescue,
    /// Boot from disk again (started by [`start_unrescue`]).
    Unrescue,
}

impl Action {
    /// The opcode whose terminal status completes this action.
    pub fn opcode(self) -> Option<OpCode> {
        match self {
            Action::Create => Some(OpCode::InstanceCreate),
            Action::Start => Some(OpCode::InstanceStartup),
            Action::Stop | Action::Suspend => Some(OpCode::InstanceShutdown),
            Action::Reboot(_) => Some(OpCode::InstanceReboot),
            Action::Destroy => Some(OpCode::InstanceRemove),
            Action::Resize | Action::RevertResize => Some(OpCode::InstanceSetParams),
            Action::Rebuild => Some(OpCode::InstanceReinstall),
            Action::Rescue | Action::Unrescue => Some(OpCode::InstanceSetParams),
            Action::Unsuspend => None,
        }
    }

    /// A short stable name (DB column, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Start => "START",
            Action::Stop => "STOP",
            Action::Reboot(RebootKind::Soft) => "REBOOT",
            Action::Reboot(RebootKind::Hard) => "HARD_REBOOT",
            Action::Destroy => "DESTROY",
            Action::Suspend => "SUSPEND",
            Action::Unsuspend => "UNSUSPEND",
            Action::Resize => "RESIZE",
            Action::RevertResize => "REVERT_RESIZE",
            Action::Rebuild => "REBUILD",
            Action::Rescue => "RESCUE",
            Action::Unrescue => "UNRESCUE",
        }
    }

    /// Inverse of [`Action::as_str`].
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "CREATE" => Action::Create,
            "START" => Action::Start,
            "STOP" => Action::Stop,
            "REBOOT" => Action::Reboot(RebootKind::Soft),
            "HARD_REBOOT" => Action::Reboot(RebootKind::Hard),
            "DESTROY" => Action::Destroy,
            "SUSPEND" => Action::Suspend,
            "UNSUSPEND" => Action::Unsuspend,
            "RESIZE" => Action::Resize,
            "REVERT_RESIZE" => Action::RevertResize,
            "REBUILD" => Action::Rebuild,
            "RESCUE" => Action::Rescue,
            "UNRESCUE" => Action::Unrescue,
            _ => return None,
        })
    }
}

/// Where a notification sits in a VM's event history.
///
/// Ordered by Ganeti job id (ids grow per cluster), then the opcode's index
/// within the job, then the status rank within the opcode, then the event
/// timestamp (microseconds since the epoch) as the last tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventPosition {
    /// Ganeti job id.
    pub job_id: u64,
    /// Index of the opcode within the job.
    pub op_index: u32,
    /// [`JobStatus::rank`] of the reported status.
    pub status_rank: u8,
    /// Event time, microseconds since the Unix epoch.
    pub time_us: i64,
}

/// The backend job last reported for a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendJob {
    /// Ganeti job id; `None` for a create Ganeti refused before queueing a
    /// job (Synnefo's `backendjobid` is NULL then too).
    pub job_id: Option<JobId>,
    /// The opcode reported.
    pub opcode: OpCode,
    /// Its status.
    pub status: JobStatus,
    /// The last log line the producer reported (Synnefo's eventd: the
    /// op's last progress line; ours: the error's text for a failure).
    pub log_msg: Option<String>,
    /// Ganeti's error, for a failed opcode whose result carried one; kept
    /// beside the log line, as Synnefo keeps both.
    #[serde(default)]
    pub error: Option<OpError>,
}

impl BackendJob {
    /// What to show people: Ganeti's error of a failed opcode (its text
    /// form), else the log line.
    pub fn message(&self) -> Option<String> {
        match (&self.error, self.status) {
            (Some(e), JobStatus::Error) => Some(e.to_string()),
            _ => self.log_msg.clone(),
        }
    }
}

/// A user action waiting for its backend job to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAction {
    /// What the user asked for.
    pub action: Action,
    /// The Ganeti job submitted for it, once known.
    pub job_id: Option<JobId>,
}

/// The part of a VM the state machine reads and writes.
///
/// Its fields are private: every change is one of this module's pure
/// transitions ([`apply_op_status`], [`apply_nic_report`],
/// [`start_action`], [`start_resize`], [`confirm_resize`],
/// [`start_revert_resize`], [`start_rebuild`], [`start_rescue`], [`start_unrescue`],
/// [`record_submitted_job`], [`rollback_submit`],
/// [`create_refused`], [`destroyed_without_ganeti`], [`fixed_state`],
/// [`record_orphan_removal`]), so the ordering guarantees the property tests
/// prove hold for every write. Stores persist it through
/// [`StoredVmState`] ([`VmState::to_stored`], [`VmState::from_stored`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    operstate: OperState,
    deleted: bool,
    suspended: bool,
    action: Option<PendingAction>,
    job: Option<BackendJob>,
    last_event: Option<EventPosition>,
    state_event: Option<EventPosition>,
    #[serde(default)]
    nics_time_us: Option<i64>,
    #[serde(default)]
    resize: Option<Resize>,
    #[serde(default)]
    rebuild: Option<Rebuild>,
    rescue: Option<Rescue>,
}

/// [`VmState`] field by field, as a store keeps it: what a store writes
/// ([`VmState::to_stored`]) and reads back ([`VmState::from_stored`]).
///
/// Not a way to change a VM's state: code that moves a VM calls the state
/// machine's transitions and stores what they return. Tests use it to build
/// fixtures in a given state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVmState {
    /// Operating state.
    pub operstate: OperState,
    /// Soft-deleted (hidden from users).
    pub deleted: bool,
    /// Suspended by an administrator.
    pub suspended: bool,
    /// The pending user action, if any.
    pub action: Option<PendingAction>,
    /// The backend job last reported (or the refusal of a create that got
    /// no job).
    pub job: Option<BackendJob>,
    /// Guard of `job`: the newest notification recorded.
    pub last_event: Option<EventPosition>,
    /// Guard of `operstate`: the notification that set it.
    pub state_event: Option<EventPosition>,
    /// Guard of the NICs: the event time (µs) of the NIC report on record.
    pub nics_time_us: Option<i64>,
    /// A resize under way or awaiting confirmation.
    pub resize: Option<Resize>,
    /// A rebuild under way.
    pub rebuild: Option<Rebuild>,
    /// Rescue mode (in effect, or a rescue or unrescue under way).
    pub rescue: Option<Rescue>,
}

impl StoredVmState {
    /// A VM in `operstate` with nothing pending and no recorded job or
    /// notification: a fixture's starting point.
    pub fn settled(operstate: OperState) -> Self {
        Self {
            operstate,
            deleted: operstate == OperState::Destroyed,
            suspended: false,
            action: None,
            job: None,
            last_event: None,
            state_event: None,
            nics_time_us: None,
            resize: None,
            rebuild: None,
            rescue: None,
        }
    }
}

impl VmState {
    /// A freshly stored VM: BUILD, with a pending create.
    pub fn new_build() -> Self {
        Self {
            operstate: OperState::Build,
            deleted: false,
            suspended: false,
            action: Some(PendingAction {
                action: Action::Create,
                job_id: None,
            }),
            job: None,
            last_event: None,
            state_event: None,
            nics_time_us: None,
            resize: None,
            rebuild: None,
            rescue: None,
        }
    }

    /// Restores a state exactly as a store persisted it.
    pub fn from_stored(s: StoredVmState) -> Self {
        Self {
            operstate: s.operstate,
            deleted: s.deleted,
            suspended: s.suspended,
            action: s.action,
            job: s.job,
            last_event: s.last_event,
            state_event: s.state_event,
            nics_time_us: s.nics_time_us,
            resize: s.resize,
            rebuild: s.rebuild,
            rescue: s.rescue,
        }
    }

    /// The state field by field, for a store to write.
    pub fn to_stored(&self) -> StoredVmState {
        StoredVmState {
            operstate: self.operstate,
            deleted: self.deleted,
            suspended: self.suspended,
            action: self.action,
            job: self.job.clone(),
            last_event: self.last_event,
            state_event: self.state_event,
            nics_time_us: self.nics_time_us,
            resize: self.resize,
            rebuild: self.rebuild.clone(),
            rescue: self.rescue,
        }
    }

    /// Operating state.
    pub fn operstate(&self) -> OperState {
        self.operstate
    }

    /// Soft-deleted: hidden from its users; set by a delete request (before
    /// Ganeti has removed anything) and by every removal.
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// Suspended by an administrator: its owner cannot start it.
    pub fn suspended(&self) -> bool {
        self.suspended
    }

    /// The user action waiting for its backend job, if any.
    pub fn action(&self) -> Option<PendingAction> {
        self.action
    }

    /// The backend job last reported (or a create's refusal, which has no
    /// job id).
    pub fn job(&self) -> Option<&BackendJob> {
        self.job.as_ref()
    }

    /// Guard of [`job`](Self::job): the newest notification recorded.
    pub fn last_event(&self) -> Option<EventPosition> {
        self.last_event
    }

    /// Guard of [`operstate`](Self::operstate): the notification that set it.
    pub fn state_event(&self) -> Option<EventPosition> {
        self.state_event
    }

    /// Guard of the NICs: the event time (µs) of the report (a hook's NIC
    /// report, or a successful op that carried the NICs) now on record;
    /// Synnefo's `backendtime` check for `ganeti-net-status`.
    pub fn nics_time_us(&self) -> Option<i64> {
        self.nics_time_us
    }

    /// The resize under way or awaiting confirmation, if any.
    pub fn resize(&self) -> Option<Resize> {
        self.resize
    }

    /// The rebuild under way, if any.
    pub fn rebuild(&self) -> Option<&Rebuild> {
        self.rebuild.as_ref()
    }

    /// Rescue mode: in effect, or a rescue or unrescue under way.
    pub fn rescue(&self) -> Option<Rescue> {
        self.rescue
    }
}

/// One op-status notification, already parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStatusEvent {
    /// Ganeti job id.
    pub job_id: JobId,
    /// Index of the opcode within its job.
    pub op_index: u32,
    /// The opcode.
    pub opcode: OpCode,
    /// Its new status.
    pub status: JobStatus,
    /// The last log line the producer reported.
    pub log_msg: Option<String>,
    /// Ganeti's error, for a failed opcode whose result carries one (read
    /// from the result by [`OpError::from_result`] where the message came
    /// in).
    #[serde(default)]
    pub error: Option<OpError>,
    /// Event time, microseconds since the epoch.
    pub time_us: i64,
}

impl OpStatusEvent {
    /// This event's position in the VM's history.
    pub fn position(&self) -> EventPosition {
        EventPosition {
            job_id: self.job_id.0,
            op_index: self.op_index,
            status_rank: self.status.rank(),
            time_us: self.time_us,
        }
    }

    /// The operstate this event determines, if it determines one.
    ///
    /// A failed `OP_INSTANCE_REMOVE` of an instance Ganeti does not have
    /// ([`OpError::is_unknown_entity`]) counts as a removal: there is
    /// nothing left to remove (the seed's `process_op_status`, its ticket
    /// #799). Ganeti accepts `DELETE /2/instances/NAME` for any name and
    /// fails the job in its prerequisites, so this is how the removal of a
    /// VM whose create was rejected, or never submitted, ends.
    pub fn determined_state(&self) -> Option<OperState> {
        match self.status {
            JobStatus::Success => self.opcode.success_state(),
            JobStatus::Error | JobStatus::Canceled if self.opcode == OpCode::InstanceCreate => {
                Some(OperState::Error)
            }
            JobStatus::Error if self.removes_missing_instance() => Some(OperState::Destroyed),
            _ => None,
        }
    }

    /// What to show as the job's message: Ganeti's error of a failed
    /// opcode (its text form, for people), else the producer's log line
    /// (both are kept in [`BackendJob`]).
    pub fn message(&self) -> Option<String> {
        match (&self.error, self.status) {
            (Some(e), JobStatus::Error) => Some(e.to_string()),
            _ => self.log_msg.clone(),
        }
    }

    /// A failed removal of an instance Ganeti does not know.
    pub fn removes_missing_instance(&self) -> bool {
        self.opcode == OpCode::InstanceRemove
            && self.status == JobStatus::Error
            && self.error.as_ref().is_some_and(OpError::is_unknown_entity)
    }
}

/// Why a notification changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ignored {
    /// The exact event was already applied.
    Duplicate,
    /// An older event than what is already applied.
    Stale,
}

/// Outcome of [`apply_op_status`].
// `Applied` carries the whole state by value: it is returned once per event
// and stored at once; boxing it would add an allocation per event to the
// dispatcher's hot path for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The new state to store.
    Applied(VmState),
    /// Nothing to store.
    Ignored(Ignored),
}

/// Applies one op-status notification to a VM.
///
/// Returns [`Transition::Ignored`] for duplicates and stale events; never
/// moves a VM backwards. Unknown opcodes and statuses never get here: they
/// fail to parse into an [`OpStatusEvent`] ([`EventError`]).
pub fn apply_op_status(vm: &VmState, ev: &OpStatusEvent) -> Transition {
    let pos = ev.position();
    if vm.last_event == Some(pos) || vm.state_event == Some(pos) {
        return Transition::Ignored(Ignored::Duplicate);
    }
    let mut next = vm.clone();
    let mut changed = false;

    if vm.last_event.is_none_or(|last| pos > last) {
        next.job = Some(BackendJob {
            job_id: Some(ev.job_id),
            opcode: ev.opcode,
            status: ev.status,
            log_msg: ev.log_msg.clone(),
            error: match ev.status {
                JobStatus::Error => ev.error.clone(),
                _ => None,
            },
        });
        next.last_event = Some(pos);
        changed = true;
    }

    if let Some(target) = ev.determined_state() {
        let newer = vm.state_event.is_none_or(|s| pos > s);
        let absorbing = vm.operstate == OperState::Destroyed;
        if target == OperState::Destroyed {
            // A removal (successful, or of an instance Ganeti does not
            // have) always wins, in any order; the earliest removal is the
            // one on record.
            if !absorbing || vm.state_event.is_none_or(|s| pos < s) {
                next.operstate = OperState::Destroyed;
                next.deleted = true;
                next.state_event = Some(pos);
                changed = true;
            }
        } else if newer && !absorbing {
            next.operstate = target;
            next.state_event = Some(pos);
            changed = true;
        }
    }

    // A resize is settled by its own job's end, a removal ends it.
    if resize::settle(vm, ev, &mut next) {
        changed = true;
    }
    // So is a rebuild, by its own job's end.
    if rebuild::settle(vm, ev, &mut next) {
        changed = true;
    }
    // So is a rescue or unrescue.
    if rescue::settle(vm, ev, &mut next) {
        changed = true;
    }
    if ev.status.is_terminal()
        && let Some(pending) = next.action
        && !rescue::holds_action(pending, next.rescue)
        && completes(pending, ev, next.resize, next.rebuild.is_some())
    {
        next.action = None;
        changed = true;
    }

    if changed {
        Transition::Applied(next)
    } else {
        Transition::Ignored(Ignored::Stale)
    }
}

/// Takes a NIC report into a VM's state: the NICs Ganeti reported at
/// `time_us` (a hook's `ganeti-net-status`, or a successful op that carried
/// the instance's NICs). Returns the state to store with the new NICs, or
/// `None` when the report must not replace the NICs on record: the server
/// is removed (its NICs are gone for good), or a report at the same or a
/// later time is already on record (Synnefo's `event_time <= backendtime`
/// rule), so NIC reports take effect in event-time order whatever order
/// they arrive in. A report without a time (an old hook) cannot be ordered
/// and is taken as it comes.
pub fn apply_nic_report(vm: &VmState, time_us: Option<i64>) -> Option<VmState> {
    if vm.operstate == OperState::Destroyed {
        return None;
    }
    if let (Some(t), Some(on_record)) = (time_us, vm.nics_time_us)
        && t <= on_record
    {
        return None;
    }
    let mut next = vm.clone();
    if time_us.is_some() {
        next.nics_time_us = time_us;
    }
    Some(next)
}

/// Does this terminal event finish the pending action?
///
/// Checked for every terminal event, stale or not, so that the outcome does
/// not depend on arrival order. A pending resize or revert whose stage
/// still runs is finished only by its own job ([`Resize::is_settled_by`],
/// applied before this); so is a pending rebuild while its rebuild is on
/// record ([`Rebuild::outcome`]).
fn completes(
    pending: PendingAction,
    ev: &OpStatusEvent,
    resize: Option<Resize>,
    rebuilding: bool,
) -> bool {
    if matches!(pending.action, Action::Resize | Action::RevertResize)
        && resize.is_some_and(|r| r.in_flight())
    {
        return false;
    }
    if pending.action == Action::Rebuild && rebuilding {
        return false;
    }
    match pending.job_id {
        // A job at or after the action's own job settles it: the backend's
        // view of the VM is at least as new as the user's request.
        Some(job) => ev.job_id >= job,
        None => Some(ev.opcode) == pending.action.opcode() || ev.determined_state().is_some(),
    }
}

/// Validates and starts a user action; returns the state to store.
///
/// v0.3 rules: nothing on a deleted VM; only destroy while in BUILD; destroy
/// marks the VM deleted at once; suspend/unsuspend toggle `suspended`;
/// starting an action clears the recorded backend job. Beyond v0.3, actions
/// that make no sense in the current state are refused (Nova's 409s); while
/// a resize runs or awaits confirmation, or a rebuild runs, only destroy,
/// suspend and unsuspend are. A resize and its revert carry flavors:
/// [`start_resize`], [`start_revert_resize`]; a rebuild its image:
/// [`start_rebuild`].
pub fn start_action(vm: &VmState, action: Action) -> Result<VmState, ActionError> {
    if vm.deleted {
        return Err(ActionError::Deleted);
    }
    if vm.operstate == OperState::Build
        && !matches!(
            action,
            Action::Destroy | Action::Suspend | Action::Unsuspend
        )
    {
        return Err(ActionError::BuildInProgress);
    }
    let refuse = || {
        Err(ActionError::InvalidState {
            action,
            operstate: vm.operstate,
        })
    };
    match action {
        Action::Create
        | Action::Resize
        | Action::RevertResize
        | Action::Rebuild
        | Action::Rescue
        | Action::Unrescue => return refuse(),
        Action::Start | Action::Stop | Action::Reboot(_) if vm.rebuild.is_some() => {
            return Err(ActionError::Pending {
                action,
                pending: Action::Rebuild,
            });
        }
        Action::Start | Action::Stop | Action::Reboot(_) if vm.resize.is_some() => {
            return Err(ActionError::Resizing {
                action,
                stage: vm.resize.map_or(ResizeStage::Verifying, |r| r.stage),
            });
        }
        Action::Start | Action::Stop | Action::Reboot(_)
            if vm.rescue.is_some_and(|r| r.in_flight()) =>
        {
            return Err(ActionError::Rescue {
                action,
                stage: vm.rescue.map(|r| r.stage),
            });
        }
        Action::Start if vm.operstate != OperState::Stopped => return refuse(),
        Action::Start if vm.suspended => return Err(ActionError::Suspended),
        Action::Stop if vm.operstate != OperState::Started => return refuse(),
        Action::Reboot(RebootKind::Soft) if vm.operstate != OperState::Started => return refuse(),
        Action::Reboot(RebootKind::Hard)
            if !matches!(vm.operstate, OperState::Started | OperState::Stopped) =>
        {
            return refuse();
        }
        Action::Destroy if vm.operstate == OperState::Destroyed => {
            return Err(ActionError::Deleted);
        }
        _ => {}
    }
    let mut next = vm.clone();
    match action {
        Action::Destroy => next.deleted = true,
        Action::Suspend => next.suspended = true,
        Action::Unsuspend => next.suspended = false,
        _ => {}
    }
    next.job = None;
    next.action = Some(PendingAction {
        action,
        job_id: None,
    });
    Ok(next)
}

/// Records the Ganeti job submitted for the pending action (for a resize
/// or revert, also as the running stage's job; for a rebuild, as the
/// rebuild's job).
pub fn record_submitted_job(vm: &VmState, job: JobId) -> VmState {
    let mut next = vm.clone();
    if let Some(p) = next.action.as_mut() {
        p.job_id = Some(job);
        if matches!(p.action, Action::Resize | Action::RevertResize)
            && let Some(r) = next.resize.as_mut()
            && r.in_flight()
            && r.job_id.is_none()
        {
            r.job_id = Some(job);
        }
        if p.action == Action::Rebuild
            && let Some(r) = next.rebuild.as_mut()
            && r.job_id.is_none()
        {
            r.job_id = Some(job);
        }
        if matches!(p.action, Action::Rescue | Action::Unrescue)
            && let Some(r) = next.rescue.as_mut()
            && r.in_flight()
            && r.job_id.is_none()
        {
            r.job_id = Some(job);
        }
    }
    next
}

#[cfg(test)]
mod tests;
