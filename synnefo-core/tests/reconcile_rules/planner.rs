//! The planner (which fixes a run applies) and the state fixes.

use synnefo_core::ids::{FlavorId, JobId, VmId};
use synnefo_core::model::VmPlacement;
use synnefo_core::reconcile::{
    Discrepancy, FixAction, FixClass, FixFlags, OrphanReason, StateFix, StuckReason,
    apply_db_fixes, fixed_state, placement_fix, plan_fixes,
};
use synnefo_core::state::{Action, OperState, PendingAction, VmState};

use crate::*;

// ---------------------------------------------------------------- planner

fn one_of_each() -> Vec<Discrepancy> {
    use OperState::*;
    vec![
        stale(1, Started),
        orphan(2, B1, OrphanReason::Unknown),
        unsynced(3, Stopped, true, Started),
        stuck(4, StuckReason::CreateFailed, Some(1), Error),
        Discrepancy::UnsyncedNics {
            vm: VmId(5),
            backend: B1,
            db: vec![],
            ganeti: default_nics(5),
        },
        Discrepancy::UnsyncedFlavor {
            vm: VmId(6),
            backend: B1,
            flavor: FlavorId(1),
            db: FLAVOR,
            ganeti_vcpus: Some(4),
            ganeti_ram_mib: None,
            matching: Some(FlavorId(2)),
        },
        Discrepancy::WrongBackend {
            vm: VmId(7),
            recorded: Some(B1),
            found_on: vec![B2],
        },
        Discrepancy::UnsyncedFlavor {
            vm: VmId(8),
            backend: B1,
            flavor: FlavorId(1),
            db: FLAVOR,
            ganeti_vcpus: Some(16),
            ganeti_ram_mib: None,
            matching: None,
        },
        Discrepancy::WrongBackend {
            vm: VmId(9),
            recorded: Some(B1),
            found_on: vec![B2, B3],
        },
    ]
}

#[test]
fn report_only_by_default() {
    let plan = plan_fixes(&one_of_each(), FixFlags::default());
    assert!(plan.fixes.is_empty());
    assert_eq!(plan.not_selected, vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(plan.manual, vec![7, 8]);
}

#[test]
fn each_flag_selects_its_class_only() {
    let ds = one_of_each();
    let rows = [
        (
            FixFlags {
                stale: true,
                ..FixFlags::NONE
            },
            vec![0],
        ),
        (
            FixFlags {
                orphans: true,
                ..FixFlags::NONE
            },
            vec![1],
        ),
        (
            FixFlags {
                unsynced: true,
                ..FixFlags::NONE
            },
            vec![2, 3, 4, 5, 6],
        ),
        (FixFlags::ALL, vec![0, 1, 2, 3, 4, 5, 6]),
    ];
    for (flags, want) in rows {
        let plan = plan_fixes(&ds, flags);
        let got: Vec<usize> = plan.fixes.iter().map(|f| f.discrepancy).collect();
        assert_eq!(got, want, "{flags:?}");
        assert_eq!(plan.manual, vec![7, 8]);
    }
}

#[test]
fn each_discrepancy_maps_to_its_action() {
    use OperState::*;
    let plan = plan_fixes(&one_of_each(), FixFlags::ALL);
    let actions: Vec<FixAction> = plan.fixes.into_iter().map(|f| f.action).collect();
    assert_eq!(
        actions,
        vec![
            FixAction::MarkDestroyed { vm: VmId(1) },
            FixAction::DestroyOrphan {
                vm: VmId(2),
                backend: B1,
                instance: "snf-2".into()
            },
            FixAction::SetOperState {
                vm: VmId(3),
                from: Stopped,
                to: Started
            },
            FixAction::SetOperState {
                vm: VmId(4),
                from: Build,
                to: Error
            },
            FixAction::SetNics {
                vm: VmId(5),
                nics: default_nics(5)
            },
            FixAction::SetFlavor {
                vm: VmId(6),
                from: FlavorId(1),
                to: FlavorId(2)
            },
            FixAction::SetBackend {
                vm: VmId(7),
                from: Some(B1),
                to: B2
            },
        ]
    );
    assert_eq!(one_of_each()[7].fix_class(), FixClass::Manual);
    assert_eq!(one_of_each()[8].fix_class(), FixClass::Manual);
}

#[test]
fn placement_fixes_apply_only_over_what_the_diff_saw() {
    let v = vm(6, OperState::Started).vm;
    let set_flavor = FixAction::SetFlavor {
        vm: VmId(6),
        from: FlavorId(1),
        to: FlavorId(2),
    };
    let set_backend = FixAction::SetBackend {
        vm: VmId(6),
        from: Some(B1),
        to: B2,
    };
    assert_eq!(
        placement_fix(&v, [&set_flavor, &set_backend]),
        Some(VmPlacement {
            flavor_id: FlavorId(2),
            backend_id: Some(B2),
        })
    );
    // Another VM's fix, or one computed from another flavor, changes nothing.
    let other_vm = FixAction::SetFlavor {
        vm: VmId(7),
        from: FlavorId(1),
        to: FlavorId(2),
    };
    let moved_on = FixAction::SetFlavor {
        vm: VmId(6),
        from: FlavorId(3),
        to: FlavorId(2),
    };
    assert_eq!(placement_fix(&v, [&other_vm, &moved_on]), None);
    // Only the cluster.
    assert_eq!(
        placement_fix(&v, [&set_backend]),
        Some(VmPlacement {
            flavor_id: FlavorId(1),
            backend_id: Some(B2),
        })
    );
    // A deleted VM is left alone.
    let mut deleted = v.clone();
    set_deleted(&mut deleted.state);
    assert_eq!(placement_fix(&deleted, [&set_flavor, &set_backend]), None);
    // State fixes do not touch placement, nor placement fixes the state.
    assert_eq!(apply_db_fixes(&v, [&set_flavor, &set_backend]), None);
}

// ---------------------------------------------------------------- state fix

#[test]
fn destroyed_sets_deleted_and_clears_the_action() {
    let mut s = state(OperState::Started);
    edit_state(&mut s, |s| {
        s.action = Some(PendingAction {
            action: Action::Stop,
            job_id: Some(JobId(3)),
        })
    });
    let next = fixed_state(&s, StateFix::Destroyed).unwrap();
    assert_eq!(next.operstate(), OperState::Destroyed);
    assert!(next.deleted());
    assert_eq!(next.action(), None);
    assert_eq!(fixed_state(&next, StateFix::Destroyed), None, "idempotent");
    // OperState(Destroyed) is the same fix.
    assert_eq!(
        fixed_state(&s, StateFix::OperState(OperState::Destroyed)),
        Some(next)
    );
}

#[test]
fn a_fix_never_resurrects_a_deleted_or_destroyed_vm() {
    for to in OperState::ALL
        .into_iter()
        .filter(|o| *o != OperState::Destroyed)
    {
        let mut gone = state(OperState::Started);
        set_deleted(&mut gone);
        assert_eq!(fixed_state(&gone, StateFix::OperState(to)), None, "{to}");
        let destroyed = state(OperState::Destroyed);
        assert_eq!(
            fixed_state(&destroyed, StateFix::OperState(to)),
            None,
            "{to}"
        );
    }
}

#[test]
fn set_operstate_clears_the_settled_action_and_keeps_the_guards() {
    let mut s = VmState::new_build();
    edit_state(&mut s, |s| {
        s.last_event = Some(synnefo_core::state::EventPosition {
            job_id: 5,
            op_index: 0,
            status_rank: 2,
            time_us: 9,
        })
    });
    let next = fixed_state(&s, StateFix::OperState(OperState::Error)).unwrap();
    assert_eq!(next.operstate(), OperState::Error);
    assert_eq!(next.action(), None);
    assert_eq!(next.last_event(), s.last_event());
    assert_eq!(next.state_event(), s.state_event());
    assert_eq!(
        fixed_state(&next, StateFix::OperState(OperState::Error)),
        None
    );
}

#[test]
fn db_fixes_fold_into_one_change_and_respect_from() {
    let v = vm(1, OperState::Started).vm;
    let set = FixAction::SetOperState {
        vm: VmId(1),
        from: OperState::Started,
        to: OperState::Stopped,
    };
    let nics = FixAction::SetNics {
        vm: VmId(1),
        nics: default_nics(9),
    };
    let other_vm = FixAction::MarkDestroyed { vm: VmId(2) };
    let change = apply_db_fixes(&v, [&set, &nics, &other_vm]).unwrap();
    assert_eq!(change.state.operstate(), OperState::Stopped);
    assert_eq!(change.nics, Some(default_nics(9)));

    // The VM moved since the diff: the operstate fix is skipped.
    let moved = FixAction::SetOperState {
        vm: VmId(1),
        from: OperState::Stopped,
        to: OperState::Started,
    };
    assert_eq!(apply_db_fixes(&v, [&moved]), None);
    // NICs of a VM destroyed by the same plan are not written.
    let gone = FixAction::MarkDestroyed { vm: VmId(1) };
    let change = apply_db_fixes(&v, [&gone, &nics]).unwrap();
    assert!(change.state.deleted());
    assert_eq!(change.nics, None);
}
