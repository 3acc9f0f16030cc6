//! Rebuilding a server: its disk written again from an image by the OS
//! definition (Nova's `rebuild`).
//!
//! A rebuild is one Ganeti job, `POST /2/instances/NAME/reinstall`, which
//! Ganeti 3.0 (`lib/rapi/rlib2.py`, `_ParseInstanceReinstallRequest`)
//! turns into `OP_INSTANCE_SHUTDOWN`, `OP_INSTANCE_REINSTALL` and, when
//! asked to start, `OP_INSTANCE_STARTUP`. A server that was running is
//! started again, one that was stopped stays stopped (Nova's rule: it ends
//! in the state it was in). While the job runs the server is `REBUILD`.
//!
//! The rebuild is decided by its own job's terminal notifications only
//! ([`Rebuild::outcome`]): the job's last opcode succeeding (the startup,
//! or the reinstall when there is no startup) is a success and the server
//! gets the new image; any opcode of the job failing or being canceled is a
//! failure (Ganeti fails every later opcode of the job with it) and the
//! image stays. The shutdown's and startup's successes move the operstate
//! through the usual rules. Until the API has recorded the job id, the
//! reinstall (the job's second opcode) and startup (its third) of a job
//! newer than every job the VM had seen when the rebuild started are taken
//! as its own, as for a resize ([`super::Resize`]); a reinstall job that
//! another client submitted in that same instant would be
//! indistinguishable, as it is for Synnefo.

use serde::{Deserialize, Serialize};

use super::{Action, JobStatus, OpCode, OpStatusEvent, OperState, PendingAction, VmState};
use crate::error::ActionError;
use crate::ids::JobId;

/// A rebuild in progress: part of [`VmState`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rebuild {
    /// The image being written (the server's image once the job succeeds).
    pub image: String,
    /// The job starts the server again (it was running).
    pub start: bool,
    /// The reinstall job, once the API has recorded it.
    pub job_id: Option<JobId>,
    /// The newest job the VM had seen when the rebuild started: no job at
    /// or below it is the rebuild's.
    pub floor: Option<JobId>,
}

/// How a notification ends a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildOutcome {
    /// The job's last opcode succeeded: the server has the new image.
    Succeeded,
    /// An opcode of the job failed or was canceled: the image stays.
    Failed,
}

impl Rebuild {
    /// The opcode that ends a successful reinstall job.
    pub fn last_opcode(&self) -> OpCode {
        if self.start {
            OpCode::InstanceStartup
        } else {
            OpCode::InstanceReinstall
        }
    }

    /// Whether `ev` belongs to this rebuild's job: its own when recorded,
    /// else, of a job above the floor, the reinstall as the job's second
    /// opcode (index 1) or, when the job starts the server, the startup as
    /// its third (index 2): where Ganeti's reinstall job has them, unlike
    /// a startup job of its own (index 0).
    fn owns(&self, ev: &OpStatusEvent) -> bool {
        match self.job_id {
            Some(job) => ev.job_id == job,
            None => {
                let in_place = match ev.opcode {
                    OpCode::InstanceReinstall => ev.op_index == 1,
                    OpCode::InstanceStartup => self.start && ev.op_index == 2,
                    _ => false,
                };
                in_place && self.floor.is_none_or(|floor| ev.job_id > floor)
            }
        }
    }

    /// What `ev` does to this rebuild: `None` while the job goes on (a
    /// non-terminal status, the shutdown's success, another job).
    pub fn outcome(&self, ev: &OpStatusEvent) -> Option<RebuildOutcome> {
        if !ev.status.is_terminal() || !self.owns(ev) {
            return None;
        }
        match ev.status {
            JobStatus::Success if ev.opcode == self.last_opcode() => {
                Some(RebuildOutcome::Succeeded)
            }
            JobStatus::Success => None,
            _ => Some(RebuildOutcome::Failed),
        }
    }
}

/// The newest job `vm` has seen: the floor of a rebuild starting now.
fn newest_job(vm: &VmState) -> Option<JobId> {
    vm.last_event.map(|p| JobId(p.job_id))
}

/// What settling a VM's rebuild by `ev` does to `next` (the state
/// [`apply_op_status`](super::apply_op_status) is building from `vm`): the
/// rebuild is over and so is the pending rebuild. A removal ends any
/// rebuild. Returns whether anything changed.
pub(super) fn settle(vm: &VmState, ev: &OpStatusEvent, next: &mut VmState) -> bool {
    let rebuild_pending = |n: &VmState| {
        matches!(
            n.action,
            Some(PendingAction {
                action: Action::Rebuild,
                ..
            })
        )
    };
    if next.operstate == OperState::Destroyed {
        let mut changed = false;
        if next.rebuild.is_some() {
            next.rebuild = None;
            changed = true;
        }
        if rebuild_pending(next) {
            next.action = None;
            changed = true;
        }
        return changed;
    }
    match &vm.rebuild {
        Some(r) if r.outcome(ev).is_some() => {
            next.rebuild = None;
            if rebuild_pending(next) {
                next.action = None;
            }
            true
        }
        _ => false,
    }
}

/// The image a notification gives the VM: the rebuild's, when `ev` is the
/// success of its job (pure; the dispatcher writes it with the state
/// [`apply_op_status`](super::apply_op_status) returns for the same
/// event).
pub fn rebuilt_image<'a>(vm: &'a VmState, ev: &OpStatusEvent) -> Option<&'a str> {
    if vm.operstate == OperState::Destroyed || vm.deleted {
        return None;
    }
    vm.rebuild
        .as_ref()
        .filter(|r| r.outcome(ev) == Some(RebuildOutcome::Succeeded))
        .map(|r| r.image.as_str())
}

/// Checks a rebuild of `vm` with `image` and starts it: a running or
/// stopped server with nothing pending, not suspended, no resize or
/// rebuild under way. A running server is started again by the job.
pub fn start_rebuild(vm: &VmState, image: &str) -> Result<VmState, ActionError> {
    if vm.deleted {
        return Err(ActionError::Deleted);
    }
    if vm.operstate == OperState::Build {
        return Err(ActionError::BuildInProgress);
    }
    if let Some(r) = vm.resize {
        return Err(ActionError::Resizing {
            action: Action::Rebuild,
            stage: r.stage,
        });
    }
    // A rescued server boots the rescue image: rebuilding its disk under
    // it is refused, as Nova refuses it (tempest's
    // `test_rescued_vm_rebuild`).
    if let Some(r) = vm.rescue {
        return Err(ActionError::Rescue {
            action: Action::Rebuild,
            stage: Some(r.stage),
        });
    }
    if let Some(p) = vm.action {
        return Err(ActionError::Pending {
            action: Action::Rebuild,
            pending: p.action,
        });
    }
    if !matches!(vm.operstate, OperState::Started | OperState::Stopped) {
        return Err(ActionError::InvalidState {
            action: Action::Rebuild,
            operstate: vm.operstate,
        });
    }
    if vm.suspended {
        return Err(ActionError::Suspended);
    }
    let mut next = vm.clone();
    next.job = None;
    next.action = Some(PendingAction {
        action: Action::Rebuild,
        job_id: None,
    });
    next.rebuild = Some(Rebuild {
        image: image.to_string(),
        start: vm.operstate == OperState::Started,
        job_id: None,
        floor: newest_job(vm),
    });
    Ok(next)
}
