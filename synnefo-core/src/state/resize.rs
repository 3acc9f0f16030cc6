//! Resizing a server: Synnefo's rules (a stopped server, another flavor
//! with the same disk and disk template) and Nova's confirmation step.
//!
//! A resize is one `OP_INSTANCE_SET_PARAMS` job setting the new flavor's
//! `vcpus`/`maxmem`/`minmem`. While it runs the server is `RESIZE`.
//! Synnefo resizes stopped servers only; Nova resizes running ones too
//! (tempest's `test_resize_server_confirm`), and Ganeti applies new
//! beparams to a running instance only when it next starts, so the
//! resize of a running server is the set-params job followed by a hard
//! reboot job ([`Restart`]): the stage ends when both have ended (or
//! at once when the set-params job fails), in whichever order their
//! notifications arrive. When
//! it succeeds, a Nova resize waits for the owner ([`ResizeStage::Verifying`],
//! `VERIFY_RESIZE`): [`confirm_resize`] keeps the new flavor,
//! [`start_revert_resize`] submits a second job back to the old one
//! ([`ResizeStage::Reverting`], `REVERT_RESIZE`). A Synnefo (Cyclades or
//! operator) resize has no such step. A failed resize leaves the old
//! flavor; a failed revert leaves the resize awaiting confirmation again.
//!
//! The resize is decided by its own job's terminal notification, whatever
//! else arrives and in whatever order ([`Resize::is_settled_by`]). Until the
//! API has recorded the job id (the notification may come first), the
//! first terminal `OP_INSTANCE_SET_PARAMS` of a job newer than every job
//! the VM had seen when the stage started is taken as its job: Ganeti
//! numbers jobs upwards, so a stale or redelivered notification of an
//! earlier job can never settle it. (Another client's set-params job
//! submitted in that same instant would be indistinguishable; Synnefo has
//! the same window.) The flavor itself follows Ganeti: the dispatcher takes
//! it from the successful job's `beparams`
//! ([`crate::model::BeParams::new_flavor`]), in the same write.

use serde::{Deserialize, Serialize};

use super::{Action, JobStatus, OpCode, OpStatusEvent, OperState, PendingAction, VmState};
use crate::error::ActionError;
use crate::ids::{FlavorId, JobId};
use crate::model::Flavor;

/// Where a resize stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeStage {
    /// The job to the new flavor is submitted or running (`RESIZE`).
    Resizing,
    /// It succeeded; the owner confirms or reverts (`VERIFY_RESIZE`).
    Verifying,
    /// The job back to the old flavor is submitted or running
    /// (`REVERT_RESIZE`).
    Reverting,
}

impl ResizeStage {
    /// Every stage, for exhaustive tests.
    pub const ALL: [ResizeStage; 3] = [
        ResizeStage::Resizing,
        ResizeStage::Verifying,
        ResizeStage::Reverting,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeStage::Resizing => "resizing",
            ResizeStage::Verifying => "verifying",
            ResizeStage::Reverting => "reverting",
        }
    }

    /// Inverse of [`ResizeStage::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A resize in progress or awaiting confirmation: part of [`VmState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resize {
    /// The flavor before the resize: what a revert goes back to.
    pub from: FlavorId,
    /// The flavor asked for.
    pub to: FlavorId,
    /// Where it stands.
    pub stage: ResizeStage,
    /// Wait for the owner's confirmation once the job succeeds (Nova's
    /// resize); `false`: done at once (Synnefo's).
    pub confirm: bool,
    /// The job of the running stage (to `to` while resizing, back to
    /// `from` while reverting), once the API has recorded it.
    pub job_id: Option<JobId>,
    /// The newest job the VM had seen when the running stage started:
    /// no job at or below it is the stage's own.
    pub floor: Option<JobId>,
    /// The server was running when the stage started: a hard reboot job
    /// follows the set-params job, and this records how far both are.
    /// `None` for a stopped server (and while awaiting confirmation).
    pub restart: Option<Restart>,
}

/// The reboot that makes a running server take its new parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Restart {
    /// The reboot job, once the API has recorded it.
    pub job_id: Option<JobId>,
    /// Which of the two jobs has ended so far.
    pub step: RestartStep,
}

/// Which of a restarting stage's two jobs (set-params, then reboot) has
/// ended. The stage ends when both have (a failed set-params ends it at
/// once), so the notifications may arrive in either order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartStep {
    /// Neither has ended.
    Waiting,
    /// The set-params job succeeded; the reboot has not ended.
    ParamsSet,
    /// The reboot ended; the set-params job has not.
    Rebooted,
}

impl RestartStep {
    /// Every step, for exhaustive tests.
    pub const ALL: [RestartStep; 3] = [
        RestartStep::Waiting,
        RestartStep::ParamsSet,
        RestartStep::Rebooted,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartStep::Waiting => "waiting",
            RestartStep::ParamsSet => "params_set",
            RestartStep::Rebooted => "rebooted",
        }
    }

    /// Inverse of [`RestartStep::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a terminal notification means to a running stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageEvent {
    /// The stage's set-params job ended (`true`: succeeded).
    Params(bool),
    /// The reboot job of a restarting stage ended.
    Reboot,
}

impl Resize {
    /// A job of this resize runs (or is being submitted).
    pub fn in_flight(&self) -> bool {
        matches!(self.stage, ResizeStage::Resizing | ResizeStage::Reverting)
    }

    /// Whether `ev`, a terminal notification, is the end of the running
    /// stage's set-params job: that job's own when recorded, else the
    /// first terminal set-params of a job above the floor. (A restarting
    /// stage also waits for its reboot: [`Resize::is_settled_by`].)
    pub fn is_params_job(&self, ev: &OpStatusEvent) -> bool {
        if !self.in_flight() || !ev.status.is_terminal() {
            return false;
        }
        match self.job_id {
            Some(job) => ev.job_id == job,
            None => {
                ev.opcode == OpCode::InstanceSetParams
                    && self.floor.is_none_or(|floor| ev.job_id > floor)
            }
        }
    }

    /// Whether `ev`, a terminal notification, is the end of a restarting
    /// stage's reboot job: that job's own when recorded, else the first
    /// terminal reboot of a job above the floor and above the set-params
    /// job (submitted after it).
    fn is_reboot_job(&self, ev: &OpStatusEvent) -> bool {
        let Some(restart) = self.restart else {
            return false;
        };
        if !self.in_flight() || !ev.status.is_terminal() {
            return false;
        }
        match restart.job_id {
            Some(job) => ev.job_id == job,
            None => {
                ev.opcode == OpCode::InstanceReboot
                    && self.floor.is_none_or(|floor| ev.job_id > floor)
                    && self.job_id.is_none_or(|params| ev.job_id > params)
            }
        }
    }

    /// What `ev` is to the running stage, if anything.
    fn stage_event(&self, ev: &OpStatusEvent) -> Option<StageEvent> {
        if self.is_params_job(ev) {
            Some(StageEvent::Params(ev.status == JobStatus::Success))
        } else if self.is_reboot_job(ev) {
            Some(StageEvent::Reboot)
        } else {
            None
        }
    }

    /// Whether `ev` ends the running stage: its set-params job's end (for
    /// a restarting stage: its failure, or the later of its success and
    /// the reboot's end).
    pub fn is_settled_by(&self, ev: &OpStatusEvent) -> bool {
        matches!(self.advanced_by(ev), Some(None))
    }

    /// The stage after `ev`: `None` when `ev` is not the stage's;
    /// `Some(None)` when it ends the stage; `Some(Some(r))` when the
    /// restarting stage records a step and goes on.
    fn advanced_by(&self, ev: &OpStatusEvent) -> Option<Option<Resize>> {
        let event = self.stage_event(ev)?;
        let Some(restart) = self.restart else {
            return matches!(event, StageEvent::Params(_)).then_some(None);
        };
        let step = |step| {
            Some(Some(Resize {
                restart: Some(Restart { step, ..restart }),
                ..*self
            }))
        };
        match (event, restart.step) {
            (StageEvent::Params(false), _) => Some(None),
            (StageEvent::Params(true), RestartStep::Waiting) => step(RestartStep::ParamsSet),
            (StageEvent::Params(true), RestartStep::Rebooted) => Some(None),
            (StageEvent::Reboot, RestartStep::Waiting) => step(RestartStep::Rebooted),
            (StageEvent::Reboot, RestartStep::ParamsSet) => Some(None),
            // A duplicate of a step already recorded.
            (StageEvent::Params(true), RestartStep::ParamsSet)
            | (StageEvent::Reboot, RestartStep::Rebooted) => None,
        }
    }

    /// Whether the stage's set-params job succeeded, as far as the
    /// notifications so far tell: the outcome a stage ended by `ev`
    /// settles with.
    fn succeeded_with(&self, ev: &OpStatusEvent) -> bool {
        match self.stage_event(ev) {
            Some(StageEvent::Params(ok)) => ok,
            // The reboot ends a stage only after a successful set-params.
            Some(StageEvent::Reboot) => true,
            None => false,
        }
    }

    /// The resize after its running stage's job ended (`succeeded`):
    /// resizing → awaiting confirmation (or done, without one); a failed
    /// resize is over (the old flavor stays); a revert is over either way,
    /// except that a failed one awaits confirmation again.
    fn settled(self, succeeded: bool) -> Option<Resize> {
        let verifying = Resize {
            stage: ResizeStage::Verifying,
            job_id: None,
            floor: None,
            restart: None,
            ..self
        };
        match (self.stage, succeeded) {
            (ResizeStage::Resizing, true) if self.confirm => Some(verifying),
            (ResizeStage::Reverting, false) => Some(verifying),
            (ResizeStage::Verifying, _) => Some(self),
            _ => None,
        }
    }
}

/// The newest job `vm` has seen: the floor of a stage starting now.
fn newest_job(vm: &VmState) -> Option<JobId> {
    vm.last_event.map(|p| JobId(p.job_id))
}

/// What settling a VM's running resize stage by `ev` does to `next` (the
/// state [`apply_op_status`](super::apply_op_status) is building from
/// `vm`): the resize moves on, and the pending resize or revert it was
/// waiting for is over. A removal ends any resize. Returns whether
/// anything changed.
pub(super) fn settle(vm: &VmState, ev: &OpStatusEvent, next: &mut VmState) -> bool {
    let resize_pending = |n: &VmState| {
        matches!(
            n.action,
            Some(PendingAction {
                action: Action::Resize | Action::RevertResize,
                ..
            })
        )
    };
    if next.operstate == OperState::Destroyed {
        let mut changed = false;
        if next.resize.is_some() {
            next.resize = None;
            changed = true;
        }
        if resize_pending(next) {
            next.action = None;
            changed = true;
        }
        return changed;
    }
    let Some(r) = vm.resize else {
        return false;
    };
    match r.advanced_by(ev) {
        None => false,
        Some(Some(stepped)) => {
            next.resize = Some(stepped);
            true
        }
        Some(None) => {
            next.resize = r.settled(r.succeeded_with(ev));
            if resize_pending(next) {
                next.action = None;
            }
            true
        }
    }
}

/// Checks a resize of `vm` from flavor `from` to flavor `to` and starts
/// it: Synnefo's rules (a stopped server with nothing pending, not
/// suspended, no resize already under way, another flavor with the same
/// disk size and disk template). `confirm`: wait for the owner's
/// confirmation once the job succeeds (Nova's resize), which also takes a
/// running server (its set-params job is followed by a reboot:
/// [`Restart`]).
pub fn start_resize(
    vm: &VmState,
    from: &Flavor,
    to: &Flavor,
    confirm: bool,
) -> Result<VmState, ActionError> {
    if vm.deleted {
        return Err(ActionError::Deleted);
    }
    if vm.operstate == OperState::Build {
        return Err(ActionError::BuildInProgress);
    }
    if let Some(r) = vm.resize {
        return Err(ActionError::Resizing {
            action: Action::Resize,
            stage: r.stage,
        });
    }
    if let Some(r) = vm.rescue {
        return Err(ActionError::Rescue {
            action: Action::Resize,
            stage: Some(r.stage),
        });
    }
    let running = confirm && vm.operstate == OperState::Started;
    if vm.operstate != OperState::Stopped && !running {
        return Err(ActionError::InvalidState {
            action: Action::Resize,
            operstate: vm.operstate,
        });
    }
    if let Some(p) = vm.action {
        return Err(ActionError::Pending {
            action: Action::Resize,
            pending: p.action,
        });
    }
    if vm.suspended {
        return Err(ActionError::Suspended);
    }
    if from.id == to.id {
        return Err(ActionError::SameFlavor);
    }
    if from.disk_gib != to.disk_gib {
        return Err(ActionError::DiskSize {
            from_gib: from.disk_gib,
            to_gib: to.disk_gib,
        });
    }
    if from.disk_template != to.disk_template {
        return Err(ActionError::DiskTemplate {
            from: from.disk_template.clone(),
            to: to.disk_template.clone(),
        });
    }
    let mut next = vm.clone();
    next.job = None;
    next.action = Some(PendingAction {
        action: Action::Resize,
        job_id: None,
    });
    next.resize = Some(Resize {
        from: from.id,
        to: to.id,
        stage: ResizeStage::Resizing,
        confirm,
        job_id: None,
        floor: newest_job(vm),
        restart: running.then_some(Restart::WAITING),
    });
    Ok(next)
}

/// Keeps the new flavor of a resize awaiting confirmation (Nova's
/// `confirmResize`): the resize is over. No Ganeti job: the instance
/// already has the new parameters.
pub fn confirm_resize(vm: &VmState) -> Result<VmState, ActionError> {
    if vm.deleted {
        return Err(ActionError::Deleted);
    }
    match vm.resize {
        Some(r) if r.stage == ResizeStage::Verifying => {
            let mut next = vm.clone();
            next.resize = None;
            Ok(next)
        }
        other => Err(ActionError::NotResized {
            action: "confirmResize",
            stage: other.map(|r| r.stage),
        }),
    }
}

/// Starts going back to the old flavor of a resize awaiting confirmation
/// (Nova's `revertResize`): a second set-params job (and a reboot when the
/// server runs), pending as [`Action::RevertResize`].
pub fn start_revert_resize(vm: &VmState) -> Result<VmState, ActionError> {
    if vm.deleted {
        return Err(ActionError::Deleted);
    }
    match vm.resize {
        Some(r) if r.stage == ResizeStage::Verifying => {
            let mut next = vm.clone();
            next.job = None;
            next.action = Some(PendingAction {
                action: Action::RevertResize,
                job_id: None,
            });
            next.resize = Some(Resize {
                stage: ResizeStage::Reverting,
                job_id: None,
                floor: newest_job(vm),
                restart: (vm.operstate == OperState::Started).then_some(Restart::WAITING),
                ..r
            });
            Ok(next)
        }
        other => Err(ActionError::NotResized {
            action: "revertResize",
            stage: other.map(|r| r.stage),
        }),
    }
}

/// The flavor whose parameters the running stage's job sets: the new one
/// while resizing, the old one while reverting.
pub fn target_flavor(vm: &VmState) -> Option<FlavorId> {
    vm.resize.and_then(|r| match r.stage {
        ResizeStage::Resizing => Some(r.to),
        ResizeStage::Reverting => Some(r.from),
        ResizeStage::Verifying => None,
    })
}

impl Restart {
    /// A restart whose jobs have not ended (nor the reboot been recorded).
    pub const WAITING: Restart = Restart {
        job_id: None,
        step: RestartStep::Waiting,
    };
}

/// The running stage's reboot job, submitted after its set-params job:
/// recorded so that only its own end counts. Unchanged when no restarting
/// stage runs (it ended first, or the VM moved on).
pub fn record_reboot_job(vm: &VmState, job: JobId) -> VmState {
    let mut next = vm.clone();
    if let Some(r) = next.resize.as_mut()
        && r.in_flight()
        && let Some(restart) = r.restart.as_mut()
        && restart.job_id.is_none()
    {
        restart.job_id = Some(job);
    }
    next
}

/// Ganeti did not take the running stage's reboot job: the stage ends with
/// its set-params job alone (the instance takes the new parameters when it
/// next starts, as Ganeti has it). A restart that already saw the
/// set-params job succeed ends the stage now.
pub fn without_restart(vm: &VmState) -> VmState {
    let mut next = vm.clone();
    let Some(r) = vm.resize.filter(|r| r.in_flight()) else {
        return next;
    };
    match r.restart.map(|x| x.step) {
        None => {}
        Some(RestartStep::ParamsSet) => {
            next.resize = r.settled(true);
            if matches!(
                next.action,
                Some(PendingAction {
                    action: Action::Resize | Action::RevertResize,
                    ..
                })
            ) {
                next.action = None;
            }
        }
        Some(_) => {
            next.resize = Some(Resize { restart: None, ..r });
        }
    }
    next
}
