//! Property tests: the ordering guarantee for every transition that writes
//! a [`VmState`].
//!
//! Notifications arrive duplicated and in any order; local transitions (a
//! user action, a resize, its confirm or revert, a submission or rollback,
//! a refused create, a delete without Ganeti, a reconciliation fix, an
//! orphan removal, a NIC report) land anywhere in between. The properties:
//! the notifications alone end in the in-order state; a resize (and a
//! revert) ends as in order whenever its job id is recorded and whatever
//! else arrives; a failed submission leaves no trace; a reconciliation fix
//! that says what Ganeti shows converges to the same state as the
//! notifications; and along any interleaving of all of them the invariants
//! hold (DESTROYED is absorbing and deleted, with no resize; a pending
//! resize or revert has its stage running; the guards never move back, a
//! notification applied once is a no-op the second time).

use super::resize::flavors;
use super::*;
use proptest::prelude::*;

/// A realistic event history of one VM: a create job, then random jobs,
/// each op walking queued -> (waiting) -> running -> a terminal status.
fn history() -> impl Strategy<Value = Vec<OpStatusEvent>> {
    let op = prop_oneof![
        Just(OpCode::InstanceStartup),
        Just(OpCode::InstanceShutdown),
        Just(OpCode::InstanceReboot),
        Just(OpCode::InstanceSetParams),
        Just(OpCode::InstanceMigrate),
        Just(OpCode::InstanceRemove),
        Just(OpCode::InstanceCreate),
    ];
    // (final status, the error says Ganeti does not know the instance)
    let end = prop_oneof![
        6 => Just((JobStatus::Success, false)),
        2 => Just((JobStatus::Error, false)),
        1 => Just((JobStatus::Error, true)),
        1 => Just((JobStatus::Canceled, false)),
    ];
    let job = (op, end, any::<bool>(), 1u32..3);
    (
        prop::collection::vec(job, 0..8),
        prop_oneof![
            Just((JobStatus::Success, false)),
            Just((JobStatus::Error, false))
        ],
    )
        .prop_map(|(jobs, create_end)| {
            let mut out = Vec::new();
            let mut t = 1_000_000i64;
            let all = std::iter::once((OpCode::InstanceCreate, create_end, true, 1)).chain(jobs);
            for (i, (op, (end, unknown), waits, nops)) in all.enumerate() {
                let job_id = (i as u64 + 1) * 7;
                for op_index in 0..nops {
                    let mut statuses = vec![JobStatus::Queued];
                    if waits {
                        statuses.push(JobStatus::Waiting);
                    }
                    statuses.push(JobStatus::Running);
                    statuses.push(end);
                    for s in statuses {
                        t += 13;
                        let mut e = ev(job_id, op, s, t);
                        e.op_index = op_index;
                        if unknown && s == JobStatus::Error {
                            e.error = Some(unknown_instance());
                        }
                        out.push(e);
                    }
                }
            }
            out
        })
}

fn run(events: &[OpStatusEvent]) -> VmState {
    run_from(VmState::new_build(), events)
}

fn run_from(init: VmState, events: &[OpStatusEvent]) -> VmState {
    events.iter().fold(init, step)
}

fn step(vm: VmState, e: &OpStatusEvent) -> VmState {
    match apply_op_status(&vm, e) {
        Transition::Applied(n) => n,
        Transition::Ignored(_) => vm,
    }
}

/// `events` in an arrival order picked by `seed` (Fisher-Yates with a tiny
/// LCG, so the shrinker keeps a stable seed).
fn shuffle(events: &[OpStatusEvent], seed: u64) -> Vec<OpStatusEvent> {
    let mut shuffled = events.to_vec();
    let mut x = seed | 1;
    for i in (1..shuffled.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (x >> 33) as usize % (i + 1);
        shuffled.swap(i, j);
    }
    shuffled
}

/// What a state means once settled. Once DESTROYED, `state_event` guards
/// nothing (no notification changes the state any more) and records only
/// which removal was seen first, which a local delete or fix cannot know;
/// everything else must be equal.
fn settled(s: &VmState) -> VmState {
    let mut s = s.clone();
    if s.operstate == OperState::Destroyed {
        s.state_event = None;
    }
    s
}

/// Actions whose Ganeti job submission can fail and be rolled back.
fn submitted_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Start),
        Just(Action::Stop),
        Just(Action::Reboot(RebootKind::Soft)),
        Just(Action::Reboot(RebootKind::Hard)),
        Just(Action::Destroy),
    ]
}

fn any_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        submitted_action(),
        Just(Action::Suspend),
        Just(Action::Unsuspend),
        Just(Action::Create),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_permutation_with_duplicates_ends_in_the_in_order_state(
        events in history(),
        seed in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let in_order = run(&events);
        let mut all = events.clone();
        for d in &dups {
            all.push(events[d.index(events.len())].clone());
        }
        prop_assert_eq!(run(&shuffle(&all, seed)), in_order);
    }

    #[test]
    fn a_delete_without_ganeti_at_any_point_stays_deleted(
        events in history(),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        // The local delete (no instance to remove) lands at any point of
        // any arrival order: the VM ends deleted and DESTROYED, as in order.
        let shuffled = shuffle(&events, seed);
        let cut = at.index(shuffled.len() + 1);
        let vm = run_from(destroyed_without_ganeti(&run(&shuffled[..cut])), &shuffled[cut..]);
        let in_order = destroyed_without_ganeti(&run(&events));
        prop_assert_eq!(settled(&vm), settled(&in_order));
        prop_assert_eq!(server_status(&vm), ServerStatus::Deleted);
    }

    #[test]
    fn duplicates_are_no_ops(events in history()) {
        let mut vm = VmState::new_build();
        for e in &events {
            if let Transition::Applied(n) = apply_op_status(&vm, e) {
                vm = n;
            }
            prop_assert!(matches!(apply_op_status(&vm, e), Transition::Ignored(_)));
        }
    }
    #[test]
    fn a_failed_submission_at_any_point_leaves_no_trace(
        events in history(),
        seed in any::<u64>(),
        create_submitted in any::<bool>(),
        at in any::<prop::sample::Index>(),
        during in 0usize..4,
        action in submitted_action(),
    ) {
        // A user action starts at any point of any arrival order, some
        // notifications are applied while its job is being submitted, and
        // Ganeti refuses it: the rollback either applies, and the VM ends
        // exactly where the notifications alone take it, or it finds the
        // action already settled by a notification (nothing to undo).
        let init = if create_submitted {
            record_submitted_job(&VmState::new_build(), JobId(7))
        } else {
            VmState::new_build()
        };
        let in_order = run_from(init.clone(), &events);
        let shuffled = shuffle(&events, seed);
        let cut = at.index(shuffled.len() + 1);
        let before = run_from(init, &shuffled[..cut]);
        let Ok(started) = start_action(&before, action) else {
            return Ok(());
        };
        let mid = (cut + during).min(shuffled.len());
        let submitting = run_from(started, &shuffled[cut..mid]);
        match rollback_submit(&submitting, action, &before) {
            Some(back) => {
                let vm = run_from(back, &shuffled[mid..]);
                prop_assert_eq!(settled(&vm), settled(&in_order));
            }
            None => {
                // Only a notification that settles the action takes it.
                prop_assert!(submitting.action.is_none());
            }
        }
    }

    #[test]
    fn a_reconciliation_fix_at_any_point_converges(
        events in history(),
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        ahead in 0usize..6,
    ) {
        // The reconciler looks at Ganeti at any point of any arrival
        // order. Ganeti has run at least every job whose notification has
        // arrived (a notification follows its job), maybe more; the fix
        // sets what Ganeti shows. Whatever arrives afterwards, the VM ends
        // in the in-order state.
        let in_order = run(&events);
        let shuffled = shuffle(&events, seed);
        let cut = at.index(shuffled.len() + 1);
        let seen = shuffled[..cut]
            .iter()
            .filter_map(|a| events.iter().position(|e| e == a))
            .max()
            .map_or(0, |i| i + 1);
        let ganeti = run(&events[..(seen + ahead).min(events.len())]).operstate;
        let fix = match ganeti {
            OperState::Started | OperState::Stopped => StateFix::OperState(ganeti),
            OperState::Destroyed => StateFix::Destroyed,
            // the reconciler fixes no VM into BUILD or ERROR
            OperState::Build | OperState::Error => return Ok(()),
        };
        let now = run(&shuffled[..cut]);
        let fixed = fixed_state(&now, fix).unwrap_or(now);
        let vm = run_from(fixed, &shuffled[cut..]);
        prop_assert_eq!(settled(&vm), settled(&in_order));
    }

    #[test]
    fn every_transition_keeps_the_invariants(
        events in history(),
        seed in any::<u64>(),
        steps in prop::collection::vec(local_step(), 0..12),
        positions in prop::collection::vec(any::<prop::sample::Index>(), 12),
    ) {
        // Any interleaving of notifications (with duplicates) and every
        // local transition, in any order.
        let shuffled = shuffle(&events, seed);
        let mut script: Vec<Option<LocalStep>> = shuffled.iter().map(|_| None).collect();
        for (s, p) in steps.into_iter().zip(&positions) {
            script.insert(p.index(script.len() + 1), Some(s));
        }
        let mut arrivals = shuffled.iter();
        let mut vm = VmState::new_build();
        let mut applied: Vec<OpStatusEvent> = Vec::new();
        let mut started: Option<(Action, VmState)> = None;
        for item in script {
            let prev = vm.clone();
            let mut rolled_back = false;
            match item {
                None => {
                    let e = arrivals.next().expect("one arrival per slot");
                    vm = step(vm, e);
                    applied.push(e.clone());
                }
                Some(LocalStep::Start(a)) => {
                    if let Ok(n) = start_action(&vm, a) {
                        started = Some((a, prev.clone()));
                        vm = n;
                    }
                }
                Some(LocalStep::Resize(confirm)) => {
                    let [f1, f2, ..] = flavors();
                    if let Ok(n) = start_resize(&vm, &f1, &f2, confirm) {
                        started = Some((Action::Resize, prev.clone()));
                        vm = n;
                    }
                }
                Some(LocalStep::Confirm) => {
                    if let Ok(n) = confirm_resize(&vm) {
                        vm = n;
                    }
                }
                Some(LocalStep::Revert) => {
                    if let Ok(n) = start_revert_resize(&vm) {
                        started = Some((Action::RevertResize, prev.clone()));
                        vm = n;
                    }
                }
                Some(LocalStep::Submitted(job)) => vm = record_submitted_job(&vm, JobId(job)),
                Some(LocalStep::Rollback) => {
                    if let Some((a, before)) = &started
                        && let Some(n) = rollback_submit(&vm, *a, before)
                    {
                        vm = n;
                        rolled_back = true;
                    }
                }
                Some(LocalStep::Refused) => {
                    if let Some(n) = create_refused(&vm, "refused".into()) {
                        vm = n;
                    }
                }
                Some(LocalStep::DeleteWithoutGaneti) => vm = destroyed_without_ganeti(&vm),
                Some(LocalStep::Fix(f)) => {
                    if let Some(n) = fixed_state(&vm, f) {
                        vm = n;
                    }
                }
                Some(LocalStep::OrphanRemoval(job)) => vm = record_orphan_removal(&vm, JobId(job)),
                Some(LocalStep::NicReport(t)) => {
                    if let Some(n) = apply_nic_report(&vm, t) {
                        vm = n;
                    }
                }
                Some(LocalStep::Duplicate(i)) => {
                    if !applied.is_empty() {
                        // A notification applied before changes nothing,
                        // except that a terminal one settles a pending
                        // action whose job is not recorded yet (it may be
                        // that action's job: see `completes`).
                        let e = applied[i.index(applied.len())].clone();
                        if let Transition::Applied(n) = apply_op_status(&vm, &e) {
                            let mut settled_only = vm.clone();
                            settled_only.action = None;
                            prop_assert!(
                                vm.action.is_some_and(|p| p.job_id.is_none()),
                                "a duplicate changed a VM with no unsubmitted action: {:?}", e
                            );
                            prop_assert_eq!(&n, &settled_only);
                            vm = n;
                        }
                    }
                }
            }
            prop_assert!(vm.operstate != OperState::Destroyed || vm.deleted, "DESTROYED is deleted");
            prop_assert!(vm.operstate != OperState::Destroyed || vm.resize.is_none(), "no resize once DESTROYED");
            match vm.action.map(|p| p.action) {
                Some(Action::Resize) => prop_assert_eq!(vm.resize.map(|r| r.stage), Some(ResizeStage::Resizing)),
                Some(Action::RevertResize) => prop_assert_eq!(vm.resize.map(|r| r.stage), Some(ResizeStage::Reverting)),
                _ => {}
            }
            if prev.operstate == OperState::Destroyed {
                prop_assert_eq!(vm.operstate, OperState::Destroyed, "DESTROYED is absorbing");
            }
            if prev.deleted && !rolled_back {
                prop_assert!(vm.deleted, "only a rollback undoes a delete request");
            }
            prop_assert!(vm.last_event >= prev.last_event, "last_event never moves back");
            prop_assert!(
                vm.state_event >= prev.state_event || vm.operstate == OperState::Destroyed,
                "state_event never moves back"
            );
            prop_assert!(vm.nics_time_us >= prev.nics_time_us, "NIC reports stay ordered");
            if vm.last_event != prev.last_event {
                prop_assert!(vm.job.as_ref().and_then(|j| j.job_id).is_some());
            }
        }
    }
}

/// A transition that does not come from a notification.
#[derive(Debug, Clone)]
enum LocalStep {
    Start(Action),
    /// A resize from flavor 1 to 2 (`true`: Nova's, awaiting confirmation).
    Resize(bool),
    Confirm,
    Revert,
    Submitted(u64),
    Rollback,
    Refused,
    DeleteWithoutGaneti,
    Fix(StateFix),
    OrphanRemoval(u64),
    NicReport(Option<i64>),
    /// Re-deliver an already applied notification.
    Duplicate(prop::sample::Index),
}

fn local_step() -> impl Strategy<Value = LocalStep> {
    let fix = prop_oneof![
        Just(StateFix::Destroyed),
        Just(StateFix::OperState(OperState::Started)),
        Just(StateFix::OperState(OperState::Stopped)),
        Just(StateFix::OperState(OperState::Error)),
    ];
    prop_oneof![
        3 => any_action().prop_map(LocalStep::Start),
        2 => any::<bool>().prop_map(LocalStep::Resize),
        1 => Just(LocalStep::Confirm),
        1 => Just(LocalStep::Revert),
        // Ganeti numbers jobs upwards: a job submitted now is newer than
        // every job the history has notified (ids 7, 14, ...).
        2 => (1000u64..1100).prop_map(LocalStep::Submitted),
        2 => Just(LocalStep::Rollback),
        1 => Just(LocalStep::Refused),
        1 => Just(LocalStep::DeleteWithoutGaneti),
        2 => fix.prop_map(LocalStep::Fix),
        1 => (1000u64..1100).prop_map(LocalStep::OrphanRemoval),
        2 => prop::option::of(1_000_000i64..1_001_000).prop_map(LocalStep::NicReport),
        3 => any::<prop::sample::Index>().prop_map(LocalStep::Duplicate),
    ]
}

/// One job's notifications: queued, (waiting), running, then `end`
/// (`unknown`: a failure saying Ganeti does not know the instance).
fn job_events(
    job: u64,
    op: OpCode,
    end: JobStatus,
    unknown: bool,
    waits: bool,
) -> Vec<OpStatusEvent> {
    let mut statuses = vec![JobStatus::Queued];
    if waits {
        statuses.push(JobStatus::Waiting);
    }
    statuses.extend([JobStatus::Running, end]);
    statuses
        .into_iter()
        .map(|s| {
            let mut e = ev(job, op, s, job as i64 * 1_000 + i64::from(s.rank()));
            if unknown && s == JobStatus::Error {
                e.error = Some(unknown_instance());
            }
            e
        })
        .collect()
}

/// A stopped VM with history: its create (job 7), an earlier resize's
/// set-params (job 10) and its shutdown (job 14), all applied in order.
fn stopped_with_history() -> (VmState, Vec<OpStatusEvent>) {
    let mut events = job_events(7, OpCode::InstanceCreate, JobStatus::Success, false, false);
    events.extend(job_events(
        10,
        OpCode::InstanceSetParams,
        JobStatus::Success,
        false,
        true,
    ));
    events.extend(job_events(
        14,
        OpCode::InstanceShutdown,
        JobStatus::Success,
        false,
        false,
    ));
    (run(&events), events)
}

/// What happens after a resize stage starts: its own set-params job (`own`,
/// ending in `end`), then later jobs of other kinds (numbered upwards from
/// `own + 7`), none of them set-params.
fn after_stage(own: u64) -> impl Strategy<Value = Vec<OpStatusEvent>> {
    let end = prop_oneof![
        Just(JobStatus::Success),
        Just(JobStatus::Error),
        Just(JobStatus::Canceled)
    ];
    let other = (
        prop_oneof![
            Just(OpCode::InstanceStartup),
            Just(OpCode::InstanceShutdown),
            Just(OpCode::InstanceReboot),
            Just(OpCode::InstanceMigrate),
            Just(OpCode::InstanceRemove),
        ],
        prop_oneof![
            4 => Just((JobStatus::Success, false)),
            1 => Just((JobStatus::Error, false)),
            1 => Just((JobStatus::Error, true)),
        ],
        any::<bool>(),
    );
    (end, any::<bool>(), prop::collection::vec(other, 0..4)).prop_map(
        move |(end, waits, others)| {
            let mut events = job_events(own, OpCode::InstanceSetParams, end, false, waits);
            for (i, (op, (e, unknown), w)) in others.into_iter().enumerate() {
                events.extend(job_events(own + 7 * (i as u64 + 1), op, e, unknown, w));
            }
            events
        },
    )
}

/// Runs a started stage: `events` in the given order, the API recording
/// job `own` (as its `record_job` does: only on the action still waiting
/// for its job) after the first `record_at` of them.
fn run_stage(started: VmState, events: &[OpStatusEvent], record_at: usize, own: u64) -> VmState {
    let record = |vm: VmState| match vm.action {
        Some(PendingAction {
            action: Action::Resize | Action::RevertResize,
            job_id: None,
        }) => record_submitted_job(&vm, JobId(own)),
        _ => vm,
    };
    let cut = record_at.min(events.len());
    let vm = run_from(started, &events[..cut]);
    run_from(record(vm), &events[cut..])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_resize_ends_as_in_order(
        confirm in any::<bool>(),
        after in after_stage(21),
        seed in any::<u64>(),
        record_at in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        redelivered in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // The resize (job 21) and whatever follows arrive in any order,
        // duplicated, with the earlier history redelivered (job 10, an
        // earlier set-params, among it), and the API records job 21 at any
        // point: the VM ends as when everything came in order.
        let (stopped, history) = stopped_with_history();
        let [f1, f2, ..] = flavors();
        let started = start_resize(&stopped, &f1, &f2, confirm).unwrap();
        let in_order = run_stage(started.clone(), &after, 0, 21);
        let mut all = after.clone();
        all.extend(dups.iter().map(|d| after[d.index(after.len())].clone()));
        all.extend(redelivered.iter().map(|d| history[d.index(history.len())].clone()));
        let shuffled = shuffle(&all, seed);
        let vm = run_stage(started, &shuffled, record_at.index(shuffled.len() + 1), 21);
        prop_assert_eq!(settled(&vm), settled(&in_order));
        // and that state is the one the resize job's end decides
        let removed = in_order.operstate == OperState::Destroyed;
        let succeeded = after.iter().any(|e| e.job_id == JobId(21) && e.status == JobStatus::Success);
        let want = (succeeded && confirm && !removed).then_some(ResizeStage::Verifying);
        prop_assert_eq!(in_order.resize.map(|r| r.stage), want);
        prop_assert_eq!(in_order.action, None);
    }

    #[test]
    fn a_revert_ends_as_in_order(
        after in after_stage(28),
        seed in any::<u64>(),
        record_at in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        redelivered in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // A resize (job 21) succeeded and awaits confirmation; the revert
        // (job 28) and what follows arrive in any order, with the resize's
        // own notifications (set-params, below the revert's floor)
        // redelivered.
        let (stopped, mut history) = stopped_with_history();
        let [f1, f2, ..] = flavors();
        let resizing = record_submitted_job(&start_resize(&stopped, &f1, &f2, true).unwrap(), JobId(21));
        let resize_job = job_events(21, OpCode::InstanceSetParams, JobStatus::Success, false, false);
        let verifying = run_from(resizing, &resize_job);
        prop_assert_eq!(verifying.resize.map(|r| r.stage), Some(ResizeStage::Verifying));
        history.extend(resize_job);
        let started = start_revert_resize(&verifying).unwrap();
        let in_order = run_stage(started.clone(), &after, 0, 28);
        let mut all = after.clone();
        all.extend(dups.iter().map(|d| after[d.index(after.len())].clone()));
        all.extend(redelivered.iter().map(|d| history[d.index(history.len())].clone()));
        let shuffled = shuffle(&all, seed);
        let vm = run_stage(started, &shuffled, record_at.index(shuffled.len() + 1), 28);
        prop_assert_eq!(settled(&vm), settled(&in_order));
        let removed = in_order.operstate == OperState::Destroyed;
        let succeeded = after.iter().any(|e| e.job_id == JobId(28) && e.status == JobStatus::Success);
        let want = (!succeeded && !removed).then_some(ResizeStage::Verifying);
        prop_assert_eq!(in_order.resize.map(|r| r.stage), want);
    }

    #[test]
    fn a_running_resize_or_revert_ends_as_in_order(
        revert in any::<bool>(),
        after in after_stage(21),
        reboot_end in prop_oneof![Just(JobStatus::Success), Just(JobStatus::Error)],
        seed in any::<u64>(),
        record_at in any::<prop::sample::Index>(),
        reboot_at in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        redelivered in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // A running server's resize (or the revert of one awaiting
        // confirmation): its set-params job 21 and the reboot job 22
        // submitted after it, with whatever follows, arrive in any order,
        // duplicated, with earlier history redelivered; the API records
        // job 21 at any point and job 22 at any point after that. The VM
        // ends as when everything came in order.
        let (stopped, mut history) = stopped_with_history();
        let startup = job_events(16, OpCode::InstanceStartup, JobStatus::Success, false, false);
        let running = run_from(stopped, &startup);
        history.extend(startup);
        let [f1, f2, ..] = flavors();
        let started = if revert {
            let resizing = record_reboot_job(
                &record_submitted_job(&start_resize(&running, &f1, &f2, true).unwrap(), JobId(17)),
                JobId(18),
            );
            let mut first = job_events(17, OpCode::InstanceSetParams, JobStatus::Success, false, false);
            first.extend(job_events(18, OpCode::InstanceReboot, JobStatus::Success, false, false));
            let verifying = run_from(resizing, &first);
            prop_assert_eq!(verifying.resize.map(|r| (r.stage, r.restart)), Some((ResizeStage::Verifying, None)));
            history.extend(first);
            start_revert_resize(&verifying).unwrap()
        } else {
            start_resize(&running, &f1, &f2, true).unwrap()
        };
        prop_assert_eq!(started.resize.and_then(|r| r.restart), Some(Restart::WAITING));
        let mut after = after;
        after.extend(job_events(22, OpCode::InstanceReboot, reboot_end, false, false));
        after.sort_by_key(|e| e.job_id); // in order: by job, each job's own in its order
        let record = |vm: VmState, reboot: bool| {
            let vm = match vm.action {
                Some(PendingAction { action: Action::Resize | Action::RevertResize, job_id: None }) => {
                    record_submitted_job(&vm, JobId(21))
                }
                _ => vm,
            };
            if reboot { record_reboot_job(&vm, JobId(22)) } else { vm }
        };
        let in_order = run_from(record(started.clone(), true), &after);
        let mut all = after.clone();
        all.extend(dups.iter().map(|d| after[d.index(after.len())].clone()));
        all.extend(redelivered.iter().map(|d| history[d.index(history.len())].clone()));
        let shuffled = shuffle(&all, seed);
        let cut1 = record_at.index(shuffled.len() + 1);
        let cut2 = cut1 + reboot_at.index(shuffled.len() + 1 - cut1);
        let mut vm = run_from(started, &shuffled[..cut1]);
        vm = run_from(record(vm, false), &shuffled[cut1..cut2]);
        vm = run_from(record(vm, true), &shuffled[cut2..]);
        prop_assert_eq!(settled(&vm), settled(&in_order));
        // and the outcome is the set-params job's
        let removed = in_order.operstate == OperState::Destroyed;
        let succeeded = after.iter().any(|e| e.job_id == JobId(21) && e.status == JobStatus::Success);
        let want = match (revert, succeeded) {
            _ if removed => None,
            (false, true) | (true, false) => Some(ResizeStage::Verifying),
            _ => None,
        };
        prop_assert_eq!(in_order.resize.map(|r| r.stage), want);
        prop_assert_eq!(in_order.action, None);
    }
}
