//! Rescue mode: Synnefo's rules (a stopped server, boot from a rescue
//! image through the instance's hypervisor parameters).
//!
//! A rescue is one `OP_INSTANCE_SET_PARAMS` job setting the KVM
//! `hvparams` `cdrom_image_path` (the rescue image) and `boot_order`
//! (`cdrom`); an unrescue is one setting them back (`""` and `disk`), as
//! Synnefo's `rescue_instance`/`unrescue_instance` do. Both need a stopped
//! server and leave its operstate alone: a rescued server is started,
//! stopped and rebooted as usual and boots the rescue image while it is
//! rescued (Nova's `RESCUE` status); unrescuing it (stopped again) makes
//! it boot from its disk.
//!
//! Like a resize ([`super::Resize`]), a rescue or unrescue is decided by
//! its own job's terminal notification, whatever else arrives and in
//! whatever order ([`Rescue::is_settled_by`]): the job the API recorded,
//! or, before that, the first terminal set-params of a job newer than
//! every job the VM had seen when it started (the floor).

use serde::{Deserialize, Serialize};

use super::{Action, JobStatus, OpCode, OpStatusEvent, OperState, PendingAction, VmState};
use crate::error::ActionError;
use crate::ids::JobId;

/// Where a rescue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescueStage {
    /// The job setting the rescue image is submitted or running.
    Rescuing,
    /// The instance boots the rescue image (Nova's `RESCUE`).
    Rescued,
    /// The job setting the boot from disk back is submitted or running.
    Unrescuing,
}

impl RescueStage {
    /// Every stage, for exhaustive tests.
    pub const ALL: [RescueStage; 3] = [
        RescueStage::Rescuing,
        RescueStage::Rescued,
        RescueStage::Unrescuing,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RescueStage::Rescuing => "rescuing",
            RescueStage::Rescued => "rescued",
            RescueStage::Unrescuing => "unrescuing",
        }
    }

    /// Inverse of [`RescueStage::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A server in (or going into or out of) rescue mode: part of
/// [`VmState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rescue {
    /// Where it stands.
    pub stage: RescueStage,
    /// The job of the running stage, once the API has recorded it.
    pub job_id: Option<JobId>,
    /// The newest job the VM had seen when the running stage started: no
    /// job at or below it is the stage's own.
    pub floor: Option<JobId>,
}

impl Rescue {
    /// A job of this rescue runs (or is being submitted).
    pub fn in_flight(&self) -> bool {
        matches!(self.stage, RescueStage::Rescuing | RescueStage::Unrescuing)
    }

    /// Whether `ev`, a terminal notification, is the end of the running
    /// stage's job: that job's own when recorded, else the first terminal
    /// set-params of a job above the floor.
    pub fn is_settled_by(&self, ev: &OpStatusEvent) -> bool {
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

    /// The rescue after its running stage's job ended (`succeeded`): a
    /// rescue that succeeded is in effect, one that failed is over (the
    /// instance boots from disk as before); an unrescue that succeeded is
    /// over, one that failed leaves the rescue in effect.
    fn settled(self, succeeded: bool) -> Option<Rescue> {
        let rescued = Rescue {
            stage: RescueStage::Rescued,
            job_id: None,
            floor: None,
        };
        match (self.stage, succeeded) {
            (RescueStage::Rescuing, true) | (RescueStage::Unrescuing, false) => Some(rescued),
            (RescueStage::Rescued, _) => Some(self),
            _ => None,
        }
    }
}

fn rescue_pending(vm: &VmState) -> bool {
    matches!(
        vm.action,
        Some(PendingAction {
            action: Action::Rescue | Action::Unrescue,
            ..
        })
    )
}

/// What settling a VM's running rescue stage by `ev` does to `next` (the
/// state [`apply_op_status`](super::apply_op_status) is building from
/// `vm`): the rescue moves on and the pending rescue or unrescue is over.
/// A removal ends any rescue. Returns whether anything changed.
pub(super) fn settle(vm: &VmState, ev: &OpStatusEvent, next: &mut VmState) -> bool {
    if next.operstate == OperState::Destroyed {
        let mut changed = false;
        if next.rescue.is_some() {
            next.rescue = None;
            changed = true;
        }
        if rescue_pending(next) {
            next.action = None;
            changed = true;
        }
        return changed;
    }
    match vm.rescue {
        Some(r) if r.is_settled_by(ev) => {
            next.rescue = r.settled(ev.status == JobStatus::Success);
            if rescue_pending(next) {
                next.action = None;
            }
            true
        }
        _ => false,
    }
}

/// Whether a pending rescue or unrescue still waits for its own job (no
/// other job's end completes it).
pub(super) fn holds_action(pending: PendingAction, rescue: Option<Rescue>) -> bool {
    matches!(pending.action, Action::Rescue | Action::Unrescue)
        && rescue.is_some_and(|r| r.in_flight())
}

/// The rules both stages share: not deleted, built, no resize, stopped,
/// nothing pending, not suspended.
fn check_stopped_and_idle(vm: &VmState, action: Action) -> Result<(), ActionError> {
    if vm.deleted {
        return Err(ActionError::Deleted);
    }
    if vm.operstate == OperState::Build {
        return Err(ActionError::BuildInProgress);
    }
    if let Some(r) = vm.resize {
        return Err(ActionError::Resizing {
            action,
            stage: r.stage,
        });
    }
    if let Some(p) = vm.action {
        return Err(ActionError::Pending {
            action,
            pending: p.action,
        });
    }
    if vm.operstate != OperState::Stopped {
        return Err(ActionError::InvalidState {
            action,
            operstate: vm.operstate,
        });
    }
    if vm.suspended {
        return Err(ActionError::Suspended);
    }
    Ok(())
}

/// Checks a rescue of `vm` and starts it: Synnefo's rules (a stopped
/// server with nothing pending, not suspended, no resize, not in rescue
/// mode already). The job sets the rescue image as the instance's CD-ROM
/// and boots from it.
pub fn start_rescue(vm: &VmState) -> Result<VmState, ActionError> {
    if let Some(r) = vm.rescue
        && !vm.deleted
    {
        return Err(ActionError::Rescue {
            action: Action::Rescue,
            stage: Some(r.stage),
        });
    }
    check_stopped_and_idle(vm, Action::Rescue)?;
    Ok(start_stage(vm, Action::Rescue, RescueStage::Rescuing))
}

/// Checks an unrescue of `vm` and starts it: a stopped server in rescue
/// mode with nothing pending. The job makes the instance boot from its
/// disk again.
pub fn start_unrescue(vm: &VmState) -> Result<VmState, ActionError> {
    match vm.rescue {
        Some(r) if r.stage == RescueStage::Rescued => {}
        other if !vm.deleted => {
            return Err(ActionError::Rescue {
                action: Action::Unrescue,
                stage: other.map(|r| r.stage),
            });
        }
        _ => {}
    }
    check_stopped_and_idle(vm, Action::Unrescue)?;
    Ok(start_stage(vm, Action::Unrescue, RescueStage::Unrescuing))
}

fn start_stage(vm: &VmState, action: Action, stage: RescueStage) -> VmState {
    let mut next = vm.clone();
    next.job = None;
    next.action = Some(PendingAction {
        action,
        job_id: None,
    });
    next.rescue = Some(Rescue {
        stage,
        job_id: None,
        floor: vm.last_event.map(|p| JobId(p.job_id)),
    });
    next
}
