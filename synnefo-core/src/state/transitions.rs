//! The transitions that do not come from a Ganeti notification: the
//! outcomes of submitting (or failing to submit) a user action, and the
//! reconciler's fixes. Like [`apply_op_status`](super::apply_op_status)
//! and [`start_action`](super::start_action) they are pure functions from
//! the current state; the services only store what they return.

use serde::{Deserialize, Serialize};

use super::{Action, BackendJob, JobStatus, OpCode, OperState, PendingAction, VmState};
use crate::ids::JobId;

/// The VM is gone without a Ganeti job: deleted, DESTROYED, nothing
/// pending, no resize. For a delete of a VM that has no instance (never placed, or
/// its create failed) and for a create rolled back because Ganeti was
/// unreachable.
pub fn destroyed_without_ganeti(vm: &VmState) -> VmState {
    let mut next = vm.clone();
    next.deleted = true;
    next.operstate = OperState::Destroyed;
    next.action = None;
    next.resize = None;
    next.rebuild = None;
    next.rescue = None;
    next
}

/// Ganeti refused a create request outright (no job was queued): the VM
/// goes to ERROR with `message` as its fault, recorded as a failed create
/// without a job id (there is no job to ask Ganeti about). `None` unless
/// the VM is still building (a notification got there first).
pub fn create_refused(vm: &VmState, message: String) -> Option<VmState> {
    if vm.operstate != OperState::Build {
        return None;
    }
    let mut next = vm.clone();
    next.operstate = OperState::Error;
    next.action = None;
    next.job = Some(BackendJob {
        job_id: None,
        opcode: OpCode::InstanceCreate,
        status: JobStatus::Error,
        log_msg: Some(message),
        error: None,
    });
    Some(next)
}

/// Undoes `action`, started from `before`, that Ganeti did not take: the
/// pending action and the deleted/suspended flags go back to what they
/// were, and so does the recorded job unless a notification recorded a
/// newer one meanwhile (starting the action cleared it; a notification's
/// job is never replaced by an older one). A resize or revert also gets
/// its resize back as it was (nothing but its own job's end, which would
/// have finished the action, changes a running stage). `None` if the
/// pending action is no longer that unsubmitted action (someone else moved
/// the VM on since).
pub fn rollback_submit(vm: &VmState, action: Action, before: &VmState) -> Option<VmState> {
    match vm.action {
        Some(PendingAction {
            action: a,
            job_id: None,
        }) if a == action => {
            let mut next = vm.clone();
            next.action = before.action;
            if vm.job.is_none() {
                next.job = before.job.clone();
            }
            next.deleted = before.deleted;
            next.suspended = before.suspended;
            if matches!(action, Action::Resize | Action::RevertResize) {
                next.resize = before.resize;
            }
            if action == Action::Rebuild {
                next.rebuild = before.rebuild.clone();
            }
            if matches!(action, Action::Rescue | Action::Unrescue) {
                next.rescue = before.rescue;
            }
            // A rescue or unrescue pending before is over if its job ended
            // meanwhile (nothing else would finish it).
            if next.action.is_some_and(|p| {
                matches!(p.action, Action::Rescue | Action::Unrescue)
                    && !next.rescue.is_some_and(|r| r.in_flight())
            }) {
                next.action = None;
            }
            Some(next)
        }
        _ => None,
    }
}

/// The DB side of a reconciliation fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateFix {
    /// The instance is gone: DESTROYED, deleted.
    Destroyed,
    /// Ganeti shows this operstate.
    OperState(OperState),
}

/// The state a VM should have after a reconciliation fix, or `None` if the
/// fix changes nothing (or must not apply).
///
/// The state machine's invariants hold: a deleted or DESTROYED VM is never
/// brought back; DESTROYED always comes with `deleted`; a pending action is
/// cleared (the reconciler only fixes VMs whose job is over, so nothing will
/// complete it). A resize is left to its own job's notification (it says
/// which flavor Ganeti has), except that a removal ends it. The generation guards (`last_event`, `state_event`) are
/// left alone: a reconciliation observation has no position in the job
/// history, and a later notification from Ganeti is newer truth anyway.
pub fn fixed_state(state: &VmState, fix: StateFix) -> Option<VmState> {
    let to = match fix {
        StateFix::Destroyed | StateFix::OperState(OperState::Destroyed) => {
            if state.deleted && state.operstate == OperState::Destroyed && state.action.is_none() {
                return None;
            }
            return Some(destroyed_without_ganeti(state));
        }
        StateFix::OperState(to) => to,
    };
    if state.deleted || state.operstate == OperState::Destroyed || state.operstate == to {
        return None;
    }
    let mut next = state.clone();
    next.operstate = to;
    next.action = None;
    Some(next)
}

/// Records on a deleted (or DESTROYED) row the removal job the reconciler
/// submitted for its orphan instance, so the next run holds the orphan
/// while the job runs instead of removing it twice; the job's notification
/// completes the action as usual. Rows of live VMs are returned unchanged.
pub fn record_orphan_removal(state: &VmState, job: JobId) -> VmState {
    let mut next = state.clone();
    if state.deleted || state.operstate == OperState::Destroyed {
        next.action = Some(PendingAction {
            action: Action::Destroy,
            job_id: Some(job),
        });
    }
    next
}
