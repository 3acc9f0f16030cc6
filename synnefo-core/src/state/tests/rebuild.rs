//! Rebuild: the reinstall job's opcodes in a table (written out, not
//! derived from the code), the refusals, and the order properties.

use super::*;
use proptest::prelude::*;

/// The notifications of reinstall job `job`: shutdown, reinstall and (when
/// `start`) startup, each queued, running and then its end; `fail_at`: the
/// opcode that fails (Ganeti fails every later opcode of the job too).
fn reinstall_job(job: u64, start: bool, fail_at: Option<usize>) -> Vec<OpStatusEvent> {
    let mut ops = vec![OpCode::InstanceShutdown, OpCode::InstanceReinstall];
    if start {
        ops.push(OpCode::InstanceStartup);
    }
    let mut out = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let end = match fail_at {
            Some(f) if i >= f => JobStatus::Error,
            _ => JobStatus::Success,
        };
        let ran = fail_at.is_none_or(|f| i <= f);
        let statuses: Vec<JobStatus> = if ran {
            vec![JobStatus::Queued, JobStatus::Running, end]
        } else {
            vec![JobStatus::Queued, end]
        };
        for s in statuses {
            let mut e = ev(
                job,
                op,
                s,
                job as i64 * 1_000 + i as i64 * 10 + i64::from(s.rank()),
            );
            e.op_index = i as u32;
            out.push(e);
        }
    }
    out
}

/// Applies `events` and collects the image each applied event gives the
/// server (what the dispatcher writes with the state).
fn run_images(init: VmState, events: &[OpStatusEvent]) -> (VmState, Option<String>) {
    let mut vm = init;
    let mut image = None;
    for e in events {
        let given = rebuilt_image(&vm, e).map(str::to_string);
        if let Transition::Applied(next) = apply_op_status(&vm, e) {
            vm = next;
            if given.is_some() {
                image = given;
            }
        }
    }
    (vm, image)
}

fn settled_vm(op: OperState) -> VmState {
    let mut vm = vm_in(op);
    // an earlier job on record (the create, job 7)
    vm.last_event = Some(EventPosition {
        job_id: 7,
        op_index: 0,
        status_rank: 4,
        time_us: 7_004,
    });
    vm.state_event = vm.last_event;
    vm
}

/// (state before, failing opcode, final operstate, image changes,
/// status while running) — written out from Ganeti's reinstall job.
const TABLE: &[(OperState, Option<usize>, OperState, bool)] = &[
    (OperState::Started, None, OperState::Started, true),
    (OperState::Started, Some(0), OperState::Started, false),
    (OperState::Started, Some(1), OperState::Stopped, false),
    (OperState::Started, Some(2), OperState::Stopped, false),
    (OperState::Stopped, None, OperState::Stopped, true),
    (OperState::Stopped, Some(0), OperState::Stopped, false),
    (OperState::Stopped, Some(1), OperState::Stopped, false),
];

#[test]
fn the_reinstall_job_table() {
    for &(from, fail_at, to, changes) in TABLE {
        for record in [true, false] {
            let vm = settled_vm(from);
            let started = start_rebuild(&vm, "img-2").unwrap();
            assert_eq!(server_status(&started), ServerStatus::Rebuild);
            assert_eq!(started.rebuild().unwrap().start, from == OperState::Started);
            let started = if record {
                record_submitted_job(&started, JobId(21))
            } else {
                started
            };
            let events = reinstall_job(21, from == OperState::Started, fail_at);
            let (end, image) = run_images(started, &events);
            let row = format!("{from:?} fail_at {fail_at:?} recorded {record}");
            assert_eq!(end.operstate(), to, "{row}");
            assert_eq!(end.rebuild(), None, "{row}");
            assert_eq!(end.action(), None, "{row}");
            assert_eq!(image.as_deref(), changes.then_some("img-2"), "{row}");
            let status = if to == OperState::Started {
                ServerStatus::Active
            } else {
                ServerStatus::Shutoff
            };
            assert_eq!(server_status(&end), status, "{row}");
            if fail_at.is_some() {
                assert_eq!(end.job().map(|j| j.status), Some(JobStatus::Error), "{row}");
            }
        }
    }
}

#[test]
fn the_shutdown_alone_does_not_end_a_rebuild() {
    let started = record_submitted_job(
        &start_rebuild(&settled_vm(OperState::Started), "img-2").unwrap(),
        JobId(21),
    );
    let events = reinstall_job(21, true, None);
    // shutdown and reinstall done, startup still to come
    let (mid, image) = run_images(started, &events[..6]);
    assert_eq!(mid.operstate(), OperState::Stopped);
    assert!(mid.rebuild().is_some());
    assert_eq!(server_status(&mid), ServerStatus::Rebuild);
    assert_eq!(image, None);
    // older jobs and other opcodes do not end it either
    let stale = ev(7, OpCode::InstanceReinstall, JobStatus::Success, 7_100);
    let (still, _) = run_images(mid.clone(), &[stale]);
    assert!(still.rebuild().is_some());
}

#[test]
fn a_removal_ends_a_rebuild() {
    let started = record_submitted_job(
        &start_rebuild(&settled_vm(OperState::Stopped), "img-2").unwrap(),
        JobId(21),
    );
    let removed = ev(30, OpCode::InstanceRemove, JobStatus::Success, 30_004);
    let (end, image) = run_images(started, &[removed]);
    assert_eq!(end.operstate(), OperState::Destroyed);
    assert_eq!(end.rebuild(), None);
    assert_eq!(image, None);
}

#[test]
fn refusals() {
    let ok = settled_vm(OperState::Started);
    let mut suspended = ok.clone();
    suspended.suspended = true;
    let mut deleted = ok.clone();
    deleted.deleted = true;
    let pending = start_action(&ok, Action::Stop).unwrap();
    let rebuilding = start_rebuild(&ok, "img-2").unwrap();
    let [f1, f2, ..] = super::resize::flavors();
    let resizing = start_resize(&settled_vm(OperState::Stopped), &f1, &f2, true).unwrap();
    let mut rescued = settled_vm(OperState::Stopped);
    rescued.rescue = Some(Rescue {
        stage: RescueStage::Rescued,
        job_id: None,
        floor: None,
    });
    let cases: Vec<(VmState, ActionError)> = vec![
        (
            rescued,
            ActionError::Rescue {
                action: Action::Rebuild,
                stage: Some(RescueStage::Rescued),
            },
        ),
        (vm_in(OperState::Build), ActionError::BuildInProgress),
        (
            vm_in(OperState::Error),
            ActionError::InvalidState {
                action: Action::Rebuild,
                operstate: OperState::Error,
            },
        ),
        (vm_in(OperState::Destroyed), ActionError::Deleted),
        (deleted, ActionError::Deleted),
        (suspended, ActionError::Suspended),
        (
            pending,
            ActionError::Pending {
                action: Action::Rebuild,
                pending: Action::Stop,
            },
        ),
        (
            rebuilding.clone(),
            ActionError::Pending {
                action: Action::Rebuild,
                pending: Action::Rebuild,
            },
        ),
        (
            resizing,
            ActionError::Resizing {
                action: Action::Rebuild,
                stage: ResizeStage::Resizing,
            },
        ),
    ];
    for (vm, want) in cases {
        assert_eq!(start_rebuild(&vm, "img-2"), Err(want));
    }
    // while a rebuild runs: no start, stop or reboot; delete is allowed
    for a in [
        Action::Start,
        Action::Stop,
        Action::Reboot(RebootKind::Soft),
        Action::Reboot(RebootKind::Hard),
    ] {
        assert_eq!(
            start_action(&rebuilding, a),
            Err(ActionError::Pending {
                action: a,
                pending: Action::Rebuild
            })
        );
    }
    assert!(start_action(&rebuilding, Action::Destroy).is_ok());
    assert_eq!(
        start_action(&ok, Action::Rebuild).unwrap_err(),
        ActionError::InvalidState {
            action: Action::Rebuild,
            operstate: OperState::Started,
        }
    );
}

#[test]
fn a_refused_submission_rolls_back() {
    let before = settled_vm(OperState::Started);
    let started = start_rebuild(&before, "img-2").unwrap();
    let back = rollback_submit(&started, Action::Rebuild, &before).unwrap();
    assert_eq!(back, before);
    assert_eq!(Action::parse("REBUILD"), Some(Action::Rebuild));
    assert_eq!(ServerStatus::parse("REBUILD"), Some(ServerStatus::Rebuild));
    assert_eq!(synnefo_status(&started), "REBUILD");
}

/// `events` in order, job `own` recorded after the first `record_at`.
fn run_recorded(
    started: VmState,
    events: &[OpStatusEvent],
    record_at: usize,
    own: u64,
) -> (VmState, Option<String>) {
    let cut = record_at.min(events.len());
    let (vm, first) = run_images(started, &events[..cut]);
    let vm = match vm.action() {
        Some(PendingAction {
            action: Action::Rebuild,
            job_id: None,
        }) => record_submitted_job(&vm, JobId(own)),
        _ => vm,
    };
    let (vm, second) = run_images(vm, &events[cut..]);
    (vm, second.or(first))
}

fn shuffle(events: &[OpStatusEvent], seed: u64) -> Vec<OpStatusEvent> {
    let mut v = events.to_vec();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_rebuild_ends_as_in_order(
        running in any::<bool>(),
        fail_at in prop::option::of(0usize..3),
        later in prop::collection::vec(
            (prop_oneof![
                Just(OpCode::InstanceStartup),
                Just(OpCode::InstanceShutdown),
                Just(OpCode::InstanceReboot),
                Just(OpCode::InstanceRemove),
            ], any::<bool>()),
            0..3,
        ),
        seed in any::<u64>(),
        record_at in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        // The reinstall job (21) and later jobs of other kinds arrive in
        // any order, duplicated, with the create's notifications (job 7)
        // redelivered, and the API records job 21 at any point: the VM ends
        // as when everything came in order, with the same image.
        let from = if running { OperState::Started } else { OperState::Stopped };
        let fail_at = fail_at.filter(|f| running || *f < 2);
        let started = start_rebuild(&settled_vm(from), "img-2").unwrap();
        let mut after = reinstall_job(21, running, fail_at);
        for (i, (op, ok)) in later.into_iter().enumerate() {
            let job = 28 + 7 * i as u64;
            let end = if ok { JobStatus::Success } else { JobStatus::Error };
            after.push(ev(job, op, JobStatus::Running, job as i64 * 1_000 + 2));
            after.push(ev(job, op, end, job as i64 * 1_000 + 4));
        }
        let (in_order, image_in_order) = run_recorded(started.clone(), &after, 0, 21);
        let mut all = after.clone();
        all.extend(dups.iter().map(|d| after[d.index(after.len())].clone()));
        all.push(ev(7, OpCode::InstanceCreate, JobStatus::Success, 7_004));
        let shuffled = shuffle(&all, seed);
        let (vm, image) = run_recorded(started, &shuffled, record_at.index(shuffled.len() + 1), 21);
        prop_assert_eq!(vm.operstate(), in_order.operstate());
        prop_assert_eq!(vm.rebuild(), in_order.rebuild());
        prop_assert_eq!(vm.action(), in_order.action());
        prop_assert_eq!(vm.job(), in_order.job());
        // the rebuild is over, and its job's end decided the image (a
        // removed server's image no longer matters: a removal that
        // arrives first absorbs everything after it)
        prop_assert_eq!(in_order.rebuild(), None);
        if in_order.operstate() != OperState::Destroyed {
            prop_assert_eq!(&image, &image_in_order);
            prop_assert_eq!(image_in_order.as_deref(), fail_at.is_none().then_some("img-2"));
        }
    }
}
