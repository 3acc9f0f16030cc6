//! The rescue transitions: the rules of a request, the exhaustive table of
//! what each notification does to a rescue and an unrescue, rollbacks,
//! the actions a rescued server allows, the statuses shown, and the order
//! properties (any permutation and duplication of the events ends in the
//! in-order state).

use super::*;
use proptest::prelude::*;

/// A stopped VM whose newest notification was job 5's.
fn stopped_at_job_5() -> VmState {
    let mut vm = vm_in(OperState::Stopped);
    vm.last_event = Some(ev(5, OpCode::InstanceShutdown, JobStatus::Success, 50).position());
    vm.state_event = vm.last_event;
    vm
}

/// A rescue through its job `job`, ending in `end`.
fn rescued_by(vm: &VmState, job: u64, end: JobStatus) -> VmState {
    let started = start_rescue(vm).unwrap();
    let submitted = record_submitted_job(&started, JobId(job));
    assert_eq!(submitted.rescue.unwrap().job_id, Some(JobId(job)));
    match apply_op_status(
        &submitted,
        &ev(job, OpCode::InstanceSetParams, end, job as i64 * 10),
    ) {
        Transition::Applied(n) => n,
        Transition::Ignored(_) => panic!("the rescue's own job is applied"),
    }
}

#[test]
fn a_rescue_request_follows_synnefos_rules() {
    let vm = stopped_at_job_5();
    let started = start_rescue(&vm).unwrap();
    assert_eq!(
        started.action,
        Some(PendingAction {
            action: Action::Rescue,
            job_id: None
        })
    );
    assert_eq!(
        started.rescue,
        Some(Rescue {
            stage: RescueStage::Rescuing,
            job_id: None,
            floor: Some(JobId(5)),
        })
    );
    assert_eq!(server_status(&started), ServerStatus::Shutoff);
    assert_eq!(synnefo_status(&started), "STOPPED");

    let rescued = rescued_by(&vm, 7, JobStatus::Success);
    let mut pending = vm.clone();
    pending.action = Some(PendingAction {
        action: Action::Start,
        job_id: Some(JobId(9)),
    });
    let mut suspended = vm.clone();
    suspended.suspended = true;
    let deleted = start_action(&vm, Action::Destroy).unwrap();
    let [f1, f2, ..] = super::resize::flavors();
    let resizing = start_resize(&vm, &f1, &f2, true).unwrap();
    let cases: Vec<(&str, VmState, ActionError)> = vec![
        (
            "running",
            vm_in(OperState::Started),
            ActionError::InvalidState {
                action: Action::Rescue,
                operstate: OperState::Started,
            },
        ),
        (
            "error",
            vm_in(OperState::Error),
            ActionError::InvalidState {
                action: Action::Rescue,
                operstate: OperState::Error,
            },
        ),
        (
            "building",
            VmState::new_build(),
            ActionError::BuildInProgress,
        ),
        ("deleted", deleted, ActionError::Deleted),
        (
            "pending start",
            pending,
            ActionError::Pending {
                action: Action::Rescue,
                pending: Action::Start,
            },
        ),
        ("suspended", suspended, ActionError::Suspended),
        (
            "resizing",
            resizing,
            ActionError::Resizing {
                action: Action::Rescue,
                stage: ResizeStage::Resizing,
            },
        ),
        (
            "rescue under way",
            started.clone(),
            ActionError::Rescue {
                action: Action::Rescue,
                stage: Some(RescueStage::Rescuing),
            },
        ),
        (
            "rescued",
            rescued.clone(),
            ActionError::Rescue {
                action: Action::Rescue,
                stage: Some(RescueStage::Rescued),
            },
        ),
    ];
    for (name, state, want) in cases {
        assert_eq!(start_rescue(&state), Err(want), "{name}");
    }
    // start_action never starts one: they need their own transitions.
    for a in [Action::Rescue, Action::Unrescue] {
        assert!(start_action(&vm, a).is_err(), "{a:?}");
    }
}

#[test]
fn an_unrescue_request_needs_a_stopped_rescued_server() {
    let vm = stopped_at_job_5();
    assert_eq!(
        start_unrescue(&vm),
        Err(ActionError::Rescue {
            action: Action::Unrescue,
            stage: None
        })
    );
    let rescuing = start_rescue(&vm).unwrap();
    assert_eq!(
        start_unrescue(&rescuing),
        Err(ActionError::Rescue {
            action: Action::Unrescue,
            stage: Some(RescueStage::Rescuing)
        })
    );
    let rescued = rescued_by(&vm, 7, JobStatus::Success);
    assert_eq!(rescued.action, None);
    assert_eq!(server_status(&rescued), ServerStatus::Rescue);
    assert_eq!(synnefo_status(&rescued), "STOPPED");
    // Started, it boots the rescue image: still RESCUE; unrescue wants it
    // stopped.
    let booted = match apply_op_status(
        &start_action(&rescued, Action::Start).unwrap(),
        &ev(8, OpCode::InstanceStartup, JobStatus::Success, 80),
    ) {
        Transition::Applied(n) => n,
        Transition::Ignored(_) => panic!(),
    };
    assert_eq!(booted.operstate, OperState::Started);
    assert_eq!(server_status(&booted), ServerStatus::Rescue);
    assert_eq!(synnefo_status(&booted), "ACTIVE");
    assert_eq!(
        start_unrescue(&booted),
        Err(ActionError::InvalidState {
            action: Action::Unrescue,
            operstate: OperState::Started
        })
    );
    // A rescued server is not resized.
    let [f1, f2, ..] = super::resize::flavors();
    assert_eq!(
        start_resize(&rescued, &f1, &f2, false),
        Err(ActionError::Rescue {
            action: Action::Resize,
            stage: Some(RescueStage::Rescued)
        })
    );
    let unrescuing = start_unrescue(&rescued).unwrap();
    assert_eq!(
        unrescuing.rescue.map(|r| (r.stage, r.floor)),
        Some((RescueStage::Unrescuing, Some(JobId(7))))
    );
    assert_eq!(server_status(&unrescuing), ServerStatus::Rescue);
    // While a rescue or unrescue runs, no start, stop or reboot.
    for s in [&rescuing, &unrescuing] {
        for a in [
            Action::Start,
            Action::Stop,
            Action::Reboot(RebootKind::Hard),
        ] {
            assert!(
                matches!(start_action(s, a), Err(ActionError::Rescue { .. })),
                "{a:?}"
            );
        }
        // delete is always allowed
        assert!(start_action(s, Action::Destroy).is_ok());
    }
    let done = record_submitted_job(&unrescuing, JobId(9));
    let Transition::Applied(done) = apply_op_status(
        &done,
        &ev(9, OpCode::InstanceSetParams, JobStatus::Success, 90),
    ) else {
        panic!()
    };
    assert_eq!((done.rescue, done.action), (None, None));
    assert_eq!(server_status(&done), ServerStatus::Shutoff);
}

#[test]
fn a_failed_submission_rolls_the_rescue_back() {
    let vm = stopped_at_job_5();
    let started = start_rescue(&vm).unwrap();
    assert_eq!(
        rollback_submit(&started, Action::Rescue, &vm),
        Some(vm.clone())
    );
    let rescued = rescued_by(&vm, 7, JobStatus::Success);
    let unrescuing = start_unrescue(&rescued).unwrap();
    assert_eq!(
        rollback_submit(&unrescuing, Action::Unrescue, &rescued),
        Some(rescued.clone())
    );
    // A delete without Ganeti ends rescue mode.
    assert_eq!(destroyed_without_ganeti(&rescued).rescue, None);
}

/// What a terminal notification does to a rescue, written out from the
/// rules in `state/rescue.rs`: `None` leaves it, `Some(stage)` moves it
/// (`Some(None)`: over).
fn settles_to(
    stage: RescueStage,
    recorded: Option<u64>,
    e: &OpStatusEvent,
) -> Option<Option<RescueStage>> {
    let removal = e.opcode == OpCode::InstanceRemove
        && (e.status == JobStatus::Success || e.removes_missing_instance());
    if removal {
        return Some(None);
    }
    if !e.status.is_terminal() || stage == RescueStage::Rescued {
        return None;
    }
    let own = match recorded {
        Some(job) => e.job_id.0 == job,
        // the floor is job 5
        None => e.opcode == OpCode::InstanceSetParams && e.job_id.0 > 5,
    };
    if !own {
        return None;
    }
    let ok = e.status == JobStatus::Success;
    Some(match (stage, ok) {
        (RescueStage::Rescuing, true) | (RescueStage::Unrescuing, false) => {
            Some(RescueStage::Rescued)
        }
        (RescueStage::Rescuing, false) | (RescueStage::Unrescuing, true) => None,
        (RescueStage::Rescued, _) => unreachable!(),
    })
}

#[test]
fn every_rescue_stage_opcode_status_and_job_combination() {
    let mut checked = 0;
    for stage in RescueStage::ALL {
        for recorded in [None, Some(10)] {
            for &opcode in OpCode::ALL {
                for status in JobStatus::ALL {
                    for (job, unknown) in
                        [(4, false), (5, false), (10, false), (12, false), (10, true)]
                    {
                        let mut vm = stopped_at_job_5();
                        let pending = match stage {
                            RescueStage::Rescuing => Some(Action::Rescue),
                            RescueStage::Unrescuing => Some(Action::Unrescue),
                            RescueStage::Rescued => None,
                        };
                        vm.action = pending.map(|action| PendingAction {
                            action,
                            job_id: recorded.map(JobId),
                        });
                        vm.rescue = Some(Rescue {
                            stage,
                            job_id: recorded.filter(|_| pending.is_some()).map(JobId),
                            floor: Some(JobId(5)),
                        });
                        let mut e = ev(job, opcode, status, 100 + job as i64);
                        if unknown && status == JobStatus::Error {
                            e.error = Some(unknown_instance());
                        }
                        let case = format!(
                            "{stage:?} job {recorded:?} + job {job} {opcode} {status} unknown {unknown}"
                        );
                        let next = match apply_op_status(&vm, &e) {
                            Transition::Applied(n) => n,
                            Transition::Ignored(_) => vm.clone(),
                        };
                        match settles_to(stage, vm.rescue.unwrap().job_id.map(|j| j.0), &e) {
                            None => {
                                assert_eq!(next.rescue, vm.rescue, "{case}: rescue kept");
                                if pending.is_some() {
                                    assert_eq!(next.action, vm.action, "{case}: still pending");
                                }
                            }
                            Some(to) => {
                                assert_eq!(next.rescue.map(|r| r.stage), to, "{case}");
                                if let Some(r) = next.rescue {
                                    assert_eq!((r.job_id, r.floor), (None, None), "{case}");
                                }
                                assert!(
                                    !matches!(
                                        next.action.map(|p| p.action),
                                        Some(Action::Rescue | Action::Unrescue)
                                    ),
                                    "{case}: the pending rescue is over"
                                );
                            }
                        }
                        // The operstate follows the opcode as for any VM.
                        let plain = match apply_op_status(&stopped_at_job_5(), &e) {
                            Transition::Applied(n) => n.operstate,
                            Transition::Ignored(_) => OperState::Stopped,
                        };
                        assert_eq!(next.operstate, plain, "{case}: operstate");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * OpCode::ALL.len() * 7 * 5);
}

#[test]
fn rescue_actions_round_trip_their_names() {
    for a in [Action::Rescue, Action::Unrescue] {
        assert_eq!(Action::parse(a.as_str()), Some(a));
        assert_eq!(a.opcode(), Some(OpCode::InstanceSetParams));
    }
    for s in RescueStage::ALL {
        assert_eq!(RescueStage::parse(s.as_str()), Some(s));
    }
    assert_eq!(ServerStatus::parse("rescue"), Some(ServerStatus::Rescue));
}

// ------------------------------------------------------------ properties

fn run_from(init: VmState, events: &[OpStatusEvent]) -> VmState {
    events
        .iter()
        .fold(init, |vm, e| match apply_op_status(&vm, e) {
            Transition::Applied(n) => n,
            Transition::Ignored(_) => vm,
        })
}

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

fn settled(s: &VmState) -> VmState {
    let mut s = s.clone();
    if s.operstate == OperState::Destroyed {
        s.state_event = None;
    }
    s
}

fn job_events(job: u64, op: OpCode, end: JobStatus, unknown: bool) -> Vec<OpStatusEvent> {
    [JobStatus::Queued, JobStatus::Running, end]
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

/// A stopped VM with history: create (7), an earlier set-params (10) and
/// a shutdown (14), applied in order.
fn stopped_with_history() -> (VmState, Vec<OpStatusEvent>) {
    let mut events = job_events(7, OpCode::InstanceCreate, JobStatus::Success, false);
    events.extend(job_events(
        10,
        OpCode::InstanceSetParams,
        JobStatus::Success,
        false,
    ));
    events.extend(job_events(
        14,
        OpCode::InstanceShutdown,
        JobStatus::Success,
        false,
    ));
    (run_from(VmState::new_build(), &events), events)
}

/// The stage's own set-params job (`own`, ending in any way) and later
/// jobs of other kinds (a boot of the rescue image, a stop, a removal...).
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
            Just(OpCode::InstanceRemove),
        ],
        prop_oneof![
            4 => Just((JobStatus::Success, false)),
            1 => Just((JobStatus::Error, false)),
            1 => Just((JobStatus::Error, true)),
        ],
    );
    (end, prop::collection::vec(other, 0..4)).prop_map(move |(end, others)| {
        let mut events = job_events(own, OpCode::InstanceSetParams, end, false);
        for (i, (op, (e, unknown))) in others.into_iter().enumerate() {
            events.extend(job_events(own + 7 * (i as u64 + 1), op, e, unknown));
        }
        events
    })
}

/// `events` in the given order, the API recording job `own` (only on the
/// action still waiting for its job, as `record_job` does) after the
/// first `record_at` of them.
fn run_stage(started: VmState, events: &[OpStatusEvent], record_at: usize, own: u64) -> VmState {
    let record = |vm: VmState| match vm.action {
        Some(PendingAction {
            action: Action::Rescue | Action::Unrescue,
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
    fn a_rescue_ends_as_in_order(
        after in after_stage(21),
        seed in any::<u64>(),
        record_at in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        redelivered in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // The rescue (job 21) and what follows arrive in any order,
        // duplicated, with the earlier history (an earlier set-params, job
        // 10, among it) redelivered, and the API records job 21 at any
        // point: the VM ends as when everything came in order.
        let (stopped, history) = stopped_with_history();
        let started = start_rescue(&stopped).unwrap();
        let in_order = run_stage(started.clone(), &after, 0, 21);
        let mut all = after.clone();
        all.extend(dups.iter().map(|d| after[d.index(after.len())].clone()));
        all.extend(redelivered.iter().map(|d| history[d.index(history.len())].clone()));
        let shuffled = shuffle(&all, seed);
        let vm = run_stage(started, &shuffled, record_at.index(shuffled.len() + 1), 21);
        prop_assert_eq!(settled(&vm), settled(&in_order));
        // and that state is the one the rescue job's end decides
        let removed = in_order.operstate == OperState::Destroyed;
        let succeeded = after.iter().any(|e| e.job_id == JobId(21) && e.status == JobStatus::Success);
        let want = (succeeded && !removed).then_some(RescueStage::Rescued);
        prop_assert_eq!(in_order.rescue.map(|r| r.stage), want);
        prop_assert_eq!(in_order.action, None);
    }

    #[test]
    fn an_unrescue_ends_as_in_order(
        after in after_stage(28),
        seed in any::<u64>(),
        record_at in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        redelivered in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // A rescue (job 21) succeeded; the unrescue (job 28) and what
        // follows arrive in any order, with the rescue's own notifications
        // (set-params, below the unrescue's floor) redelivered.
        let (stopped, mut history) = stopped_with_history();
        let rescuing = record_submitted_job(&start_rescue(&stopped).unwrap(), JobId(21));
        let rescue_job = job_events(21, OpCode::InstanceSetParams, JobStatus::Success, false);
        let rescued = run_from(rescuing, &rescue_job);
        prop_assert_eq!(rescued.rescue.map(|r| r.stage), Some(RescueStage::Rescued));
        history.extend(rescue_job);
        let started = start_unrescue(&rescued).unwrap();
        let in_order = run_stage(started.clone(), &after, 0, 28);
        let mut all = after.clone();
        all.extend(dups.iter().map(|d| after[d.index(after.len())].clone()));
        all.extend(redelivered.iter().map(|d| history[d.index(history.len())].clone()));
        let shuffled = shuffle(&all, seed);
        let vm = run_stage(started, &shuffled, record_at.index(shuffled.len() + 1), 28);
        prop_assert_eq!(settled(&vm), settled(&in_order));
        let removed = in_order.operstate == OperState::Destroyed;
        let succeeded = after.iter().any(|e| e.job_id == JobId(28) && e.status == JobStatus::Success);
        let want = (!succeeded && !removed).then_some(RescueStage::Rescued);
        prop_assert_eq!(in_order.rescue.map(|r| r.stage), want);
        prop_assert_eq!(in_order.action, None);
    }

    #[test]
    fn interleaved_local_steps_keep_the_rescue_invariants(
        steps in prop::collection::vec(rescue_step(), 0..24),
    ) {
        // Rescues, unrescues, starts, stops, deletes, submissions,
        // rollbacks, reconciliation fixes and set-params/boot
        // notifications in any interleaving: a pending rescue or unrescue
        // always has its stage running, DESTROYED never keeps a rescue,
        // and a rescued server is never resizable.
        let (mut vm, _) = stopped_with_history();
        let mut started: Option<(Action, VmState)> = None;
        let mut next_job = 100u64;
        for s in steps {
            match s {
                RescueStep::Rescue => if let Ok(n) = start_rescue(&vm) {
                    started = Some((Action::Rescue, vm.clone()));
                    vm = n;
                },
                RescueStep::Unrescue => if let Ok(n) = start_unrescue(&vm) {
                    started = Some((Action::Unrescue, vm.clone()));
                    vm = n;
                },
                RescueStep::Act(a) => if let Ok(n) = start_action(&vm, a) {
                    started = Some((a, vm.clone()));
                    vm = n;
                },
                RescueStep::Submitted => {
                    next_job += 7;
                    vm = record_submitted_job(&vm, JobId(next_job));
                }
                RescueStep::Rollback => if let Some((a, before)) = &started
                    && let Some(n) = rollback_submit(&vm, *a, before)
                {
                    vm = n;
                },
                RescueStep::Fix(f) => if let Some(n) = fixed_state(&vm, f) {
                    vm = n;
                },
                RescueStep::Event(op, status) => {
                    next_job += 7;
                    vm = run_from(vm, &[ev(next_job, op, status, next_job as i64 * 10)]);
                }
            }
            prop_assert!(vm.operstate != OperState::Destroyed || vm.rescue.is_none());
            match vm.action.map(|p| p.action) {
                Some(Action::Rescue) => prop_assert_eq!(vm.rescue.map(|r| r.stage), Some(RescueStage::Rescuing)),
                Some(Action::Unrescue) => prop_assert_eq!(vm.rescue.map(|r| r.stage), Some(RescueStage::Unrescuing)),
                _ => {}
            }
            if vm.rescue.is_some() {
                prop_assert!(vm.resize.is_none());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum RescueStep {
    Rescue,
    Unrescue,
    Act(Action),
    Submitted,
    Rollback,
    Fix(StateFix),
    Event(OpCode, JobStatus),
}

fn rescue_step() -> impl Strategy<Value = RescueStep> {
    prop_oneof![
        3 => Just(RescueStep::Rescue),
        3 => Just(RescueStep::Unrescue),
        3 => prop_oneof![
            Just(Action::Start),
            Just(Action::Stop),
            Just(Action::Reboot(RebootKind::Hard)),
            Just(Action::Destroy),
            Just(Action::Suspend),
        ].prop_map(RescueStep::Act),
        3 => Just(RescueStep::Submitted),
        2 => Just(RescueStep::Rollback),
        1 => prop_oneof![
            Just(StateFix::Destroyed),
            Just(StateFix::OperState(OperState::Started)),
            Just(StateFix::OperState(OperState::Stopped)),
        ].prop_map(RescueStep::Fix),
        4 => (
            prop_oneof![
                Just(OpCode::InstanceSetParams),
                Just(OpCode::InstanceStartup),
                Just(OpCode::InstanceShutdown),
                Just(OpCode::InstanceRemove),
            ],
            prop_oneof![Just(JobStatus::Success), Just(JobStatus::Error)],
        ).prop_map(|(o, s)| RescueStep::Event(o, s)),
    ]
}
