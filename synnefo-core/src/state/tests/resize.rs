//! The resize transitions: the rules of a request, the exhaustive table of
//! what each notification does to a resize, confirm and revert, rollbacks
//! and the statuses shown.

use super::*;
use crate::ids::FlavorId;
use crate::model::Flavor;

pub(super) fn flavor(id: i64, vcpus: i32, ram: i32, disk: i32, template: &str) -> Flavor {
    Flavor {
        id: FlavorId(id),
        name: format!("f{id}"),
        vcpus,
        ram_mib: ram,
        disk_gib: disk,
        disk_template: template.into(),
        is_public: true,
        deleted: false,
    }
}

/// The flavors of these tests: 1 → 2 is a valid resize; 3 has another
/// disk, 4 another disk template.
pub(super) fn flavors() -> [Flavor; 4] {
    [
        flavor(1, 1, 512, 10, "plain"),
        flavor(2, 2, 1024, 10, "plain"),
        flavor(3, 2, 1024, 20, "plain"),
        flavor(4, 2, 1024, 10, "drbd"),
    ]
}

/// A stopped VM whose newest notification was job 5's.
fn stopped_at_job_5() -> VmState {
    let mut vm = vm_in(OperState::Stopped);
    vm.last_event = Some(ev(5, OpCode::InstanceShutdown, JobStatus::Success, 50).position());
    vm.state_event = vm.last_event;
    vm
}

#[test]
fn a_resize_request_follows_synnefos_rules() {
    let [f1, f2, f3, f4] = flavors();
    let vm = stopped_at_job_5();
    let started = start_resize(&vm, &f1, &f2, true).unwrap();
    assert_eq!(
        started.action,
        Some(PendingAction {
            action: Action::Resize,
            job_id: None
        })
    );
    assert_eq!(
        started.resize,
        Some(Resize {
            from: FlavorId(1),
            to: FlavorId(2),
            stage: ResizeStage::Resizing,
            confirm: true,
            job_id: None,
            floor: Some(JobId(5)),
            restart: None,
        })
    );
    assert_eq!(server_status(&started), ServerStatus::Resize);
    assert_eq!(synnefo_status(&started), "RESIZE");
    assert_eq!(target_flavor(&started), Some(FlavorId(2)));

    // Refusals, each with its own error (what the APIs word).
    let running = vm_in(OperState::Started);
    let mut pending = vm.clone();
    pending.action = Some(PendingAction {
        action: Action::Start,
        job_id: Some(JobId(9)),
    });
    let mut suspended = vm.clone();
    suspended.suspended = true;
    let deleted = start_action(&vm, Action::Destroy).unwrap();
    // Synnefo's resize wants a stopped server; Nova's takes a running one
    // too, with a restart after the set-params job.
    assert_eq!(
        start_resize(&running, &f1, &f2, false),
        Err(ActionError::InvalidState {
            action: Action::Resize,
            operstate: OperState::Started,
        })
    );
    let restarting = start_resize(&running, &f1, &f2, true).unwrap();
    assert_eq!(restarting.resize.unwrap().restart, Some(Restart::WAITING));
    assert_eq!(server_status(&restarting), ServerStatus::Resize);
    assert_eq!(
        started.resize.unwrap().restart,
        None,
        "a stopped server has no restart"
    );
    let cases: Vec<(&str, VmState, &Flavor, ActionError)> = vec![
        (
            "building",
            VmState::new_build(),
            &f2,
            ActionError::BuildInProgress,
        ),
        (
            "error",
            vm_in(OperState::Error),
            &f2,
            ActionError::InvalidState {
                action: Action::Resize,
                operstate: OperState::Error,
            },
        ),
        ("deleted", deleted, &f2, ActionError::Deleted),
        (
            "pending start",
            pending,
            &f2,
            ActionError::Pending {
                action: Action::Resize,
                pending: Action::Start,
            },
        ),
        ("suspended", suspended, &f2, ActionError::Suspended),
        (
            "resize under way",
            started.clone(),
            &f2,
            ActionError::Resizing {
                action: Action::Resize,
                stage: ResizeStage::Resizing,
            },
        ),
        ("same flavor", vm.clone(), &f1, ActionError::SameFlavor),
        (
            "other disk",
            vm.clone(),
            &f3,
            ActionError::DiskSize {
                from_gib: 10,
                to_gib: 20,
            },
        ),
        (
            "other template",
            vm.clone(),
            &f4,
            ActionError::DiskTemplate {
                from: "plain".into(),
                to: "drbd".into(),
            },
        ),
    ];
    for (name, state, to, want) in cases {
        assert_eq!(start_resize(&state, &f1, to, true), Err(want), "{name}");
    }
    assert!(ActionError::SameFlavor.is_bad_request());
    assert!(!ActionError::Suspended.is_bad_request());
}

/// What a terminal notification does to a resize, written out from the
/// rules in `state/resize.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Not the resize's: it stays as it is.
    Keep,
    /// A restarting stage records a step and goes on.
    Step(RestartStep),
    /// The stage is over: awaiting confirmation (`Some(Verifying)`) or
    /// no resize at all.
    Settle(Option<ResizeStage>),
}

/// The oracle: `recorded` is the stage's set-params job (floor job 5),
/// `restart` the restart on record with its reboot job.
fn settles_to(
    stage: ResizeStage,
    recorded: Option<u64>,
    confirm: bool,
    restart: Option<Restart>,
    e: &OpStatusEvent,
) -> Want {
    let removal = e.opcode == OpCode::InstanceRemove
        && (e.status == JobStatus::Success || e.removes_missing_instance());
    if removal {
        return Want::Settle(None);
    }
    if !e.status.is_terminal() || stage == ResizeStage::Verifying {
        return Want::Keep;
    }
    let params = match recorded {
        Some(job) => e.job_id.0 == job,
        // the floor is job 5
        None => e.opcode == OpCode::InstanceSetParams && e.job_id.0 > 5,
    };
    let reboot = !params
        && restart.is_some_and(|x| match x.job_id {
            Some(job) => e.job_id == job,
            None => {
                e.opcode == OpCode::InstanceReboot
                    && e.job_id.0 > 5
                    && recorded.is_none_or(|p| e.job_id.0 > p)
            }
        });
    let settle = |ok: bool| {
        Want::Settle(match (stage, ok) {
            (ResizeStage::Resizing, true) if confirm => Some(ResizeStage::Verifying),
            (ResizeStage::Resizing, _) => None,
            (ResizeStage::Reverting, true) => None,
            (ResizeStage::Reverting, false) => Some(ResizeStage::Verifying),
            (ResizeStage::Verifying, _) => unreachable!(),
        })
    };
    let ok = e.status == JobStatus::Success;
    match (restart.map(|x| x.step), params, reboot) {
        (_, false, false) => Want::Keep,
        (None, true, _) => settle(ok),
        (None, false, true) => unreachable!("no reboot without a restart"),
        (Some(_), true, _) if !ok => settle(false),
        (Some(RestartStep::Waiting), true, _) => Want::Step(RestartStep::ParamsSet),
        (Some(RestartStep::Rebooted), true, _) => settle(true),
        (Some(RestartStep::ParamsSet), true, _) => Want::Keep,
        (Some(RestartStep::Waiting), false, true) => Want::Step(RestartStep::Rebooted),
        (Some(RestartStep::ParamsSet), false, true) => settle(true),
        (Some(RestartStep::Rebooted), false, true) => Want::Keep,
    }
}

/// The restarts a stage can have on record: none (a stopped server), or
/// each step with its reboot job (12) recorded or not.
fn restarts() -> Vec<Option<Restart>> {
    let mut all = vec![None];
    for step in RestartStep::ALL {
        for job_id in [None, Some(JobId(12))] {
            all.push(Some(Restart { job_id, step }));
        }
    }
    all
}

#[test]
fn every_resize_stage_opcode_status_and_job_combination() {
    let mut checked = 0;
    for stage in ResizeStage::ALL {
        for restart in restarts() {
            if stage == ResizeStage::Verifying && restart.is_some() {
                continue; // awaiting confirmation, nothing restarts
            }
            for recorded in [None, Some(10)] {
                for confirm in [false, true] {
                    for &opcode in OpCode::ALL {
                        for status in JobStatus::ALL {
                            for (job, unknown) in
                                [(4, false), (5, false), (10, false), (12, false), (10, true)]
                            {
                                let case = format!(
                                    "{stage:?} {restart:?} job {recorded:?} confirm {confirm} + job {job} {opcode} {status} unknown {unknown}"
                                );
                                one_combination(
                                    stage, restart, recorded, confirm, opcode, status, job,
                                    unknown, &case,
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    // 3 stages without a restart, 2 running stages x 6 restarts.
    assert_eq!(checked, (3 + 2 * 6) * 2 * 2 * 18 * 7 * 5);
}

#[allow(clippy::too_many_arguments)]
fn one_combination(
    stage: ResizeStage,
    restart: Option<Restart>,
    recorded: Option<u64>,
    confirm: bool,
    opcode: OpCode,
    status: JobStatus,
    job: u64,
    unknown: bool,
    case: &str,
) {
    let mut vm = stopped_at_job_5();
    let pending = match stage {
        ResizeStage::Resizing => Some(Action::Resize),
        ResizeStage::Reverting => Some(Action::RevertResize),
        ResizeStage::Verifying => None,
    };
    vm.action = pending.map(|action| PendingAction {
        action,
        job_id: recorded.map(JobId),
    });
    vm.resize = Some(Resize {
        from: FlavorId(1),
        to: FlavorId(2),
        stage,
        confirm,
        job_id: recorded.filter(|_| pending.is_some()).map(JobId),
        floor: Some(JobId(5)),
        restart,
    });
    let mut e = ev(job, opcode, status, 100 + job as i64);
    if unknown && status == JobStatus::Error {
        e.error = Some(unknown_instance());
    }
    let next = match apply_op_status(&vm, &e) {
        Transition::Applied(n) => n,
        Transition::Ignored(_) => vm.clone(),
    };
    let want = settles_to(
        stage,
        vm.resize.unwrap().job_id.map(|j| j.0),
        confirm,
        restart,
        &e,
    );
    let still_pending = |next: &VmState| {
        if pending.is_some() {
            assert_eq!(next.action, vm.action, "{case}: still pending");
        }
    };
    match want {
        Want::Keep => {
            assert_eq!(next.resize, vm.resize, "{case}: resize kept");
            // the pending resize waits for its own jobs
            still_pending(&next);
        }
        Want::Step(step) => {
            let mut r = vm.resize.unwrap();
            r.restart = r.restart.map(|x| Restart { step, ..x });
            assert_eq!(next.resize, Some(r), "{case}: step");
            still_pending(&next);
        }
        Want::Settle(to) => {
            assert_eq!(next.resize.map(|r| r.stage), to, "{case}");
            if let Some(r) = next.resize {
                // awaiting confirmation: no job, no floor, no restart, same flavors
                assert_eq!(
                    (r.from, r.to, r.job_id, r.floor, r.restart),
                    (FlavorId(1), FlavorId(2), None, None, None),
                    "{case}"
                );
            }
            assert!(
                !matches!(
                    next.action.map(|p| p.action),
                    Some(Action::Resize | Action::RevertResize)
                ),
                "{case}: the pending resize is over"
            );
        }
    }
    // The operstate follows the opcode as for any VM.
    let plain = match apply_op_status(&stopped_at_job_5(), &e) {
        Transition::Applied(n) => n.operstate,
        Transition::Ignored(_) => OperState::Stopped,
    };
    assert_eq!(next.operstate, plain, "{case}: operstate");
}

/// A resize through its job: `confirm` decides whether it waits.
fn resized(confirm: bool, end: JobStatus) -> VmState {
    let [f1, f2, ..] = flavors();
    let started = start_resize(&stopped_at_job_5(), &f1, &f2, confirm).unwrap();
    let submitted = record_submitted_job(&started, JobId(7));
    assert_eq!(submitted.resize.unwrap().job_id, Some(JobId(7)));
    let Transition::Applied(n) =
        apply_op_status(&submitted, &ev(7, OpCode::InstanceSetParams, end, 70))
    else {
        panic!()
    };
    n
}

#[test]
fn confirm_and_revert() {
    // Nova's resize waits; Synnefo's does not.
    let verifying = resized(true, JobStatus::Success);
    assert_eq!(verifying.action, None);
    assert_eq!(server_status(&verifying), ServerStatus::VerifyResize);
    assert_eq!(synnefo_status(&verifying), "STOPPED");
    assert_eq!(target_flavor(&verifying), None);
    let done = resized(false, JobStatus::Success);
    assert_eq!((done.resize, done.action), (None, None));
    assert_eq!(server_status(&done), ServerStatus::Shutoff);
    // A failed resize is over either way; the flavor never changed.
    for confirm in [false, true] {
        let failed = resized(confirm, JobStatus::Error);
        assert_eq!((failed.resize, failed.action), (None, None));
        assert_eq!(server_status(&failed), ServerStatus::Shutoff);
    }

    // While it awaits confirmation, only delete (and confirm, revert) go.
    for action in [
        Action::Start,
        Action::Stop,
        Action::Reboot(RebootKind::Hard),
    ] {
        assert_eq!(
            start_action(&verifying, action),
            Err(ActionError::Resizing {
                action,
                stage: ResizeStage::Verifying
            })
        );
    }
    assert!(start_action(&verifying, Action::Destroy).is_ok());

    // Confirm: the resize is over, SHUTOFF with the new flavor.
    let confirmed = confirm_resize(&verifying).unwrap();
    assert_eq!(confirmed.resize, None);
    assert_eq!(server_status(&confirmed), ServerStatus::Shutoff);
    assert!(start_action(&confirmed, Action::Start).is_ok());

    // Revert: a job back to the old flavor; REVERT_RESIZE while it runs.
    let reverting = start_revert_resize(&verifying).unwrap();
    assert_eq!(server_status(&reverting), ServerStatus::RevertResize);
    assert_eq!(target_flavor(&reverting), Some(FlavorId(1)));
    let r = reverting.resize.unwrap();
    assert_eq!((r.stage, r.floor), (ResizeStage::Reverting, Some(JobId(7))));
    let reverted = record_submitted_job(&reverting, JobId(8));
    let Transition::Applied(back) = apply_op_status(
        &reverted,
        &ev(8, OpCode::InstanceSetParams, JobStatus::Success, 80),
    ) else {
        panic!()
    };
    assert_eq!((back.resize, back.action), (None, None));
    assert_eq!(server_status(&back), ServerStatus::Shutoff);
    // A failed revert awaits confirmation again.
    let Transition::Applied(again) = apply_op_status(
        &reverted,
        &ev(8, OpCode::InstanceSetParams, JobStatus::Error, 80),
    ) else {
        panic!()
    };
    assert_eq!(again.resize.map(|r| r.stage), Some(ResizeStage::Verifying));
    assert_eq!(again.action, None);

    // Neither confirm nor revert without a resize awaiting confirmation.
    let plain = stopped_at_job_5();
    let started = start_revert_resize(&verifying).unwrap();
    for (vm, stage) in [(&plain, None), (&started, Some(ResizeStage::Reverting))] {
        assert_eq!(
            confirm_resize(vm),
            Err(ActionError::NotResized {
                action: "confirmResize",
                stage
            })
        );
        assert_eq!(
            start_revert_resize(vm),
            Err(ActionError::NotResized {
                action: "revertResize",
                stage
            })
        );
    }
    let gone = start_action(&verifying, Action::Destroy).unwrap();
    assert_eq!(confirm_resize(&gone), Err(ActionError::Deleted));
}

#[test]
fn a_stale_set_params_never_settles_a_resize() {
    // Job 4 (an earlier resize) redelivered while the new one waits for
    // its job id: below the floor, so it settles nothing.
    let [f1, f2, ..] = flavors();
    let started = start_resize(&stopped_at_job_5(), &f1, &f2, true).unwrap();
    let old = ev(4, OpCode::InstanceSetParams, JobStatus::Success, 40);
    assert_eq!(
        apply_op_status(&started, &old),
        Transition::Ignored(Ignored::Stale)
    );
    // Its own job's end, before the API recorded the id, does.
    let Transition::Applied(n) = apply_op_status(
        &started,
        &ev(6, OpCode::InstanceSetParams, JobStatus::Success, 60),
    ) else {
        panic!()
    };
    assert_eq!(n.resize.map(|r| r.stage), Some(ResizeStage::Verifying));
    assert_eq!(n.action, None);
    // A later job of another kind does not, recorded or not.
    let later = ev(9, OpCode::InstanceStartup, JobStatus::Success, 90);
    for vm in [started.clone(), record_submitted_job(&started, JobId(6))] {
        let Transition::Applied(n) = apply_op_status(&vm, &later) else {
            panic!()
        };
        assert_eq!(n.resize, vm.resize);
        assert_eq!(n.action, vm.action);
    }
}

#[test]
fn a_refused_resize_or_revert_rolls_back_exactly() {
    let [f1, f2, ..] = flavors();
    let before = stopped_at_job_5();
    let started = start_resize(&before, &f1, &f2, true).unwrap();
    assert_eq!(
        rollback_submit(&started, Action::Resize, &before),
        Some(before.clone())
    );
    let taken = record_submitted_job(&started, JobId(9));
    assert_eq!(rollback_submit(&taken, Action::Resize, &before), None);

    let verifying = resized(true, JobStatus::Success);
    let reverting = start_revert_resize(&verifying).unwrap();
    assert_eq!(
        rollback_submit(&reverting, Action::RevertResize, &verifying),
        Some(verifying.clone())
    );
    // A delete without Ganeti, or a removal, ends any resize.
    assert_eq!(destroyed_without_ganeti(&reverting).resize, None);
    let Transition::Applied(removed) = apply_op_status(
        &reverting,
        &ev(12, OpCode::InstanceRemove, JobStatus::Success, 120),
    ) else {
        panic!()
    };
    assert_eq!((removed.resize, removed.action), (None, None));
    assert_eq!(server_status(&removed), ServerStatus::Deleted);
}

#[test]
fn resize_statuses_parse_and_show() {
    for s in ServerStatus::ALL {
        assert_eq!(ServerStatus::parse(s.as_str()), Some(s));
        assert_eq!(ServerStatus::parse(&s.as_str().to_lowercase()), Some(s));
    }
    assert_eq!(
        ServerStatus::parse("verify_resize"),
        Some(ServerStatus::VerifyResize)
    );
    for stage in ResizeStage::ALL {
        assert_eq!(ResizeStage::parse(stage.as_str()), Some(stage));
    }
    for a in [Action::Resize, Action::RevertResize] {
        assert_eq!(Action::parse(a.as_str()), Some(a));
        assert_eq!(a.opcode(), Some(OpCode::InstanceSetParams));
    }
}
