//! The fix planner and the DB side of a fix, both pure.
//!
//! Report-only is the default: a discrepancy becomes an action only when the
//! operator selected its class ([`FixFlags`]). Two findings have no safe
//! automatic fix: beparams that match no flavor of the catalogue, and an
//! instance found on several clusters none of which is recorded. They are
//! reported as [`FixClass::Manual`].

use serde::{Deserialize, Serialize};

use super::diff::{Discrepancy, OrphanReason};
use crate::ids::{BackendId, FlavorId, VmId};
use crate::model::{Nic, Vm, VmPlacement};
use crate::service::VmChange;
use crate::state::{OperState, StateFix, fixed_state};

/// Which classes of fixes to apply (`--fix-stale`, `--fix-orphans`,
/// `--fix-unsynced`; `--fix-all` sets them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FixFlags {
    /// R1: mark stale VMs destroyed.
    pub stale: bool,
    /// R2: remove orphan instances from Ganeti.
    pub orphans: bool,
    /// R3, NICs, stuck builds, flavor, cluster: set the DB from Ganeti.
    pub unsynced: bool,
}

impl FixFlags {
    /// Report only.
    pub const NONE: FixFlags = FixFlags {
        stale: false,
        orphans: false,
        unsynced: false,
    };
    /// Every automatic fix.
    pub const ALL: FixFlags = FixFlags {
        stale: true,
        orphans: true,
        unsynced: true,
    };

    /// True if any fix is selected.
    pub fn any(self) -> bool {
        self.stale || self.orphans || self.unsynced
    }

    /// True if fixes of `class` are selected.
    pub fn allows(self, class: FixClass) -> bool {
        match class {
            FixClass::Stale => self.stale,
            FixClass::Orphans => self.orphans,
            FixClass::Unsynced => self.unsynced,
            FixClass::Manual => false,
        }
    }
}

/// The fix flag that governs a discrepancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixClass {
    /// `--fix-stale`.
    Stale,
    /// `--fix-orphans`.
    Orphans,
    /// `--fix-unsynced`.
    Unsynced,
    /// No automatic fix; an operator decides.
    Manual,
}

impl Discrepancy {
    /// Which flag fixes this discrepancy.
    pub fn fix_class(&self) -> FixClass {
        match self {
            Discrepancy::Stale { .. } => FixClass::Stale,
            Discrepancy::Orphan { .. } => FixClass::Orphans,
            Discrepancy::UnsyncedOperstate { .. }
            | Discrepancy::UnsyncedNics { .. }
            | Discrepancy::StuckBuild { .. }
            | Discrepancy::UnsyncedFlavor {
                matching: Some(_), ..
            } => FixClass::Unsynced,
            Discrepancy::WrongBackend { found_on, .. } if found_on.len() == 1 => FixClass::Unsynced,
            // No flavor has the instance's size, or copies on several
            // clusters: which one is the VM is an operator's call.
            Discrepancy::UnsyncedFlavor { matching: None, .. }
            | Discrepancy::WrongBackend { .. } => FixClass::Manual,
        }
    }
}

/// One thing to do about a discrepancy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum FixAction {
    /// Set the operstate from what Ganeti shows (clears a pending action
    /// whose job is over). Skipped if the VM is no longer in `from`.
    SetOperState {
        /// The VM.
        vm: VmId,
        /// The operstate the diff saw.
        from: OperState,
        /// The new operstate.
        to: OperState,
    },
    /// R1: the instance is gone; DESTROYED and deleted.
    MarkDestroyed {
        /// The VM.
        vm: VmId,
    },
    /// Store the NICs Ganeti reports.
    SetNics {
        /// The VM.
        vm: VmId,
        /// The NICs.
        nics: Vec<Nic>,
    },
    /// Record the flavor the instance's beparams match (Ganeti was resized
    /// behind our back). Skipped if the VM's flavor is no longer `from`.
    SetFlavor {
        /// The VM.
        vm: VmId,
        /// The flavor the diff saw.
        from: FlavorId,
        /// The flavor Ganeti runs.
        to: FlavorId,
    },
    /// Record the cluster the instance lives on. Skipped if the VM's
    /// recorded cluster is no longer `from`.
    SetBackend {
        /// The VM.
        vm: VmId,
        /// The cluster the diff saw recorded.
        from: Option<BackendId>,
        /// Where the instance is.
        to: BackendId,
    },
    /// R2: remove the instance from its cluster.
    DestroyOrphan {
        /// The VM id the name parses to.
        vm: VmId,
        /// The cluster.
        backend: BackendId,
        /// The instance name.
        instance: String,
    },
}

impl FixAction {
    /// The VM concerned.
    pub fn vm(&self) -> VmId {
        match self {
            FixAction::SetOperState { vm, .. }
            | FixAction::MarkDestroyed { vm }
            | FixAction::SetNics { vm, .. }
            | FixAction::SetFlavor { vm, .. }
            | FixAction::SetBackend { vm, .. }
            | FixAction::DestroyOrphan { vm, .. } => *vm,
        }
    }

    /// True for fixes written to the DB (through `modify_vm`, or for
    /// [placement](Self::is_placement) fixes `update_vm_placement`).
    pub fn is_db(&self) -> bool {
        !matches!(self, FixAction::DestroyOrphan { .. })
    }

    /// True for a VM's flavor or cluster fix ([`placement_fix`]).
    pub fn is_placement(&self) -> bool {
        matches!(
            self,
            FixAction::SetFlavor { .. } | FixAction::SetBackend { .. }
        )
    }
}

/// An action and the discrepancy (index) it fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFix {
    /// Index into the discrepancies.
    pub discrepancy: usize,
    /// What to do.
    pub action: FixAction,
}

/// The outcome of [`plan_fixes`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// What to do, in discrepancy order.
    pub fixes: Vec<PlannedFix>,
    /// Discrepancies whose class was not selected.
    pub not_selected: Vec<usize>,
    /// Discrepancies with no automatic fix.
    pub manual: Vec<usize>,
}

/// Maps each discrepancy to its fix(es), if its class is selected: one
/// action each, except an orphan of a DESTROYED-but-not-deleted VM, which
/// is removed and its row marked deleted.
pub fn plan_fixes(discrepancies: &[Discrepancy], flags: FixFlags) -> Plan {
    let mut plan = Plan::default();
    for (i, d) in discrepancies.iter().enumerate() {
        let class = d.fix_class();
        if class == FixClass::Manual {
            plan.manual.push(i);
            continue;
        }
        if !flags.allows(class) {
            plan.not_selected.push(i);
            continue;
        }
        let action = match d {
            Discrepancy::Stale { vm, .. } => FixAction::MarkDestroyed { vm: *vm },
            Discrepancy::Orphan {
                vm,
                backend,
                instance,
                ..
            } => FixAction::DestroyOrphan {
                vm: *vm,
                backend: *backend,
                instance: instance.clone(),
            },
            Discrepancy::UnsyncedOperstate { vm, db, to, .. } => FixAction::SetOperState {
                vm: *vm,
                from: *db,
                to: *to,
            },
            Discrepancy::StuckBuild { vm, to, .. } => FixAction::SetOperState {
                vm: *vm,
                from: OperState::Build,
                to: *to,
            },
            Discrepancy::UnsyncedNics { vm, ganeti, .. } => FixAction::SetNics {
                vm: *vm,
                nics: ganeti.clone(),
            },
            Discrepancy::UnsyncedFlavor {
                vm,
                flavor,
                matching: Some(to),
                ..
            } => FixAction::SetFlavor {
                vm: *vm,
                from: *flavor,
                to: *to,
            },
            Discrepancy::WrongBackend {
                vm,
                recorded,
                found_on,
            } if found_on.len() == 1 => FixAction::SetBackend {
                vm: *vm,
                from: *recorded,
                to: found_on[0],
            },
            // fix_class made these Manual above.
            Discrepancy::UnsyncedFlavor { .. } | Discrepancy::WrongBackend { .. } => continue,
        };
        let also_mark = matches!(
            d,
            Discrepancy::Orphan {
                reason: OrphanReason::Destroyed,
                ..
            }
        );
        let vm = action.vm();
        plan.fixes.push(PlannedFix {
            discrepancy: i,
            action,
        });
        if also_mark {
            // DESTROYED but not deleted: once the instance is gone the row
            // would be stale (R1); settle both in one run.
            plan.fixes.push(PlannedFix {
                discrepancy: i,
                action: FixAction::MarkDestroyed { vm },
            });
        }
    }
    plan
}

/// Folds the DB fixes of one VM into one change (one write through
/// `modify_vm`). Actions for other VMs and orphan removals are ignored; a
/// `SetOperState` whose `from` no longer matches is skipped.
pub fn apply_db_fixes<'a>(
    vm: &Vm,
    actions: impl IntoIterator<Item = &'a FixAction>,
) -> Option<VmChange> {
    let mut state = vm.state.clone();
    let mut nics = None;
    for action in actions {
        if action.vm() != vm.id {
            continue;
        }
        match action {
            FixAction::SetOperState { from, to, .. } if *from == state.operstate() => {
                if let Some(next) = fixed_state(&state, StateFix::OperState(*to)) {
                    state = next;
                }
            }
            FixAction::SetOperState { .. } | FixAction::DestroyOrphan { .. } => {}
            FixAction::MarkDestroyed { .. } => {
                if let Some(next) = fixed_state(&state, StateFix::Destroyed) {
                    state = next;
                }
            }
            FixAction::SetNics { nics: n, .. } if !state.deleted() => nics = Some(n.clone()),
            FixAction::SetNics { .. }
            | FixAction::SetFlavor { .. }
            | FixAction::SetBackend { .. } => {}
        }
    }
    (state != vm.state || nics.is_some()).then_some(VmChange {
        state,
        nics,
        resize: None,
        action_log: None,
        image: None,
    })
}

/// A VM's flavor and cluster after its [`FixAction::SetFlavor`] and
/// [`FixAction::SetBackend`] fixes, or `None` if they change nothing. An
/// action whose `from` no longer matches the VM is skipped (someone else
/// changed it since the diff), and a deleted VM is left alone.
pub fn placement_fix<'a>(
    vm: &Vm,
    actions: impl IntoIterator<Item = &'a FixAction>,
) -> Option<VmPlacement> {
    if vm.state.deleted() {
        return None;
    }
    let mut placement = VmPlacement {
        flavor_id: vm.flavor_id,
        backend_id: vm.backend_id,
    };
    for action in actions {
        match action {
            FixAction::SetFlavor { vm: v, from, to } if *v == vm.id && *from == vm.flavor_id => {
                placement.flavor_id = *to;
            }
            FixAction::SetBackend { vm: v, from, to } if *v == vm.id && *from == vm.backend_id => {
                placement.backend_id = Some(*to);
            }
            _ => {}
        }
    }
    (placement.flavor_id != vm.flavor_id || placement.backend_id != vm.backend_id)
        .then_some(placement)
}
