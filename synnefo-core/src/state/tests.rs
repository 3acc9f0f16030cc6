use super::*;

mod props;
mod rebuild;
mod rescue;
mod resize;

fn ev(job: u64, op: OpCode, status: JobStatus, t: i64) -> OpStatusEvent {
    OpStatusEvent {
        job_id: JobId(job),
        op_index: 0,
        opcode: op,
        status,
        log_msg: Some(format!("{op} {status}")),
        error: None,
        time_us: t,
    }
}

fn vm_in(state: OperState) -> VmState {
    VmState {
        operstate: state,
        deleted: state == OperState::Destroyed,
        suspended: false,
        action: None,
        job: None,
        last_event: None,
        state_event: None,
        nics_time_us: None,
        resize: None,
        rebuild: None,
        rescue: None,
    }
}

/// The expected outcome of a successful opcode, written out from
/// architecture.md rather than derived from the code under test.
const SUCCESS_TABLE: &[(&str, Option<&str>)] = &[
    ("OP_INSTANCE_CREATE", Some("STARTED")),
    ("OP_INSTANCE_REMOVE", Some("DESTROYED")),
    ("OP_INSTANCE_STARTUP", Some("STARTED")),
    ("OP_INSTANCE_SHUTDOWN", Some("STOPPED")),
    ("OP_INSTANCE_REBOOT", Some("STARTED")),
    ("OP_INSTANCE_SET_PARAMS", None),
    ("OP_INSTANCE_QUERY_DATA", None),
    ("OP_INSTANCE_REINSTALL", None),
    ("OP_INSTANCE_ACTIVATE_DISKS", None),
    ("OP_INSTANCE_DEACTIVATE_DISKS", None),
    ("OP_INSTANCE_REPLACE_DISKS", None),
    ("OP_INSTANCE_MIGRATE", None),
    ("OP_INSTANCE_CONSOLE", None),
    ("OP_INSTANCE_RECREATE_DISKS", None),
    ("OP_INSTANCE_FAILOVER", None),
    ("OP_INSTANCE_GROW_DISK", None),
    ("OP_INSTANCE_SNAPSHOT", None),
    ("OP_INSTANCE_RENAME", None),
];

/// What Ganeti may report as a failed op's result, and whether it says
/// that Ganeti does not know the instance (written out, not derived from
/// `OpError`). `None`: no error in the result.
const RESULTS: &[(Option<&str>, bool)] = &[
    (None, false),
    (
        Some(r#"["OpPrereqError", ["Instance 'snf-1' not known", "unknown_entity"]]"#),
        true,
    ),
    // Without the code it is not classified: the message is not parsed.
    (
        Some(r#"["OpPrereqError", ["Instance 'snf-1' not known"]]"#),
        false,
    ),
    (
        Some(r#"["OpPrereqError", ["Instance 'snf-1' is locked", "wrong_state"]]"#),
        false,
    ),
    (
        Some(r#"["OpExecError", ["Could not remove instance", "unknown_entity"]]"#),
        false,
    ),
    (
        Some(r#"["OpPrereqError", ["x", "some_future_code"]]"#),
        false,
    ),
    (
        Some(r#"["OpPrereqError", ["Instance allocation violates policy", "wrong_input"]]"#),
        false,
    ),
];

fn expected(from: &str, opcode: &str, status: &str, instance_unknown: bool) -> &'static str {
    let from: &'static str = OperState::ALL
        .iter()
        .find(|o| o.as_str() == from)
        .unwrap()
        .as_str();
    if from == "DESTROYED" {
        return "DESTROYED";
    }
    match status {
        "success" => SUCCESS_TABLE
            .iter()
            .find(|(o, _)| *o == opcode)
            .unwrap()
            .1
            .unwrap_or(from),
        "error" | "canceled" if opcode == "OP_INSTANCE_CREATE" => "ERROR",
        // Nothing left to remove (the seed's ticket #799).
        "error" if opcode == "OP_INSTANCE_REMOVE" && instance_unknown => "DESTROYED",
        _ => from,
    }
}

#[test]
fn every_operstate_opcode_status_log_message_combination() {
    assert_eq!(
        SUCCESS_TABLE.len(),
        OpCode::ALL.len(),
        "table covers every opcode"
    );
    let mut checked = 0;
    for from in OperState::ALL {
        for &opcode in OpCode::ALL {
            for status in JobStatus::ALL {
                for &(result, unknown) in RESULTS {
                    let vm = vm_in(from);
                    let mut e = ev(10, opcode, status, 1_000);
                    if status == JobStatus::Error {
                        e.error = result
                            .and_then(|r| OpError::from_result(&serde_json::from_str(r).unwrap()));
                    }
                    let msg = result;
                    let want = expected(from.as_str(), opcode.as_str(), status.as_str(), unknown);
                    let case = format!("{from} + {opcode} {status} {msg:?}");
                    let next = match apply_op_status(&vm, &e) {
                        Transition::Applied(n) => n,
                        Transition::Ignored(why) => panic!("{case} ignored: {why:?}"),
                    };
                    assert_eq!(next.operstate.as_str(), want, "{case}");
                    // The job is always recorded, with its log message.
                    let job = next.job.as_ref().unwrap();
                    assert_eq!(
                        (job.job_id, job.opcode, job.status),
                        (Some(JobId(10)), opcode, status)
                    );
                    // Both kept: the producer's log line as it came, and
                    // Ganeti's error of a failure; people see the error.
                    assert_eq!(job.log_msg, e.log_msg, "{case}");
                    let want_error = match status {
                        JobStatus::Error => e.error.clone(),
                        _ => None,
                    };
                    assert_eq!(job.error, want_error, "{case}");
                    let want_msg = match (&e.error, status) {
                        (Some(err), JobStatus::Error) => Some(err.to_string()),
                        _ => e.log_msg.clone(),
                    };
                    assert_eq!(job.message(), want_msg, "{case}");
                    assert_eq!(next.deleted, want == "DESTROYED", "{case}: deleted flag");
                    // Applying the same event again is a no-op.
                    assert_eq!(
                        apply_op_status(&next, &e),
                        Transition::Ignored(Ignored::Duplicate)
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 5 * 18 * 7 * RESULTS.len());
}

#[test]
fn op_errors_parse_from_results() {
    use serde_json::json;
    let cases = [
        (
            json!([
                "OpPrereqError",
                ["Instance 'snf-1' not known", "unknown_entity"]
            ]),
            (
                "OpPrereqError",
                "Instance 'snf-1' not known",
                Some(ErrorCode::UnknownEntity),
            ),
            "OpPrereqError: Instance 'snf-1' not known (unknown_entity)",
        ),
        (
            json!(["OpExecError", ["Could not start instance"]]),
            ("OpExecError", "Could not start instance", None),
            "OpExecError: Could not start instance",
        ),
        (
            json!(["OpExecError", "disk full"]),
            ("OpExecError", "disk full", None),
            "OpExecError: disk full",
        ),
        // A code this build does not know is kept as it came.
        (
            json!(["OpPrereqError", ["x", "no_such_code"]]),
            (
                "OpPrereqError",
                "x",
                Some(ErrorCode::Other("no_such_code".into())),
            ),
            "OpPrereqError: x (no_such_code)",
        ),
    ];
    for (result, want, text) in cases.clone() {
        let e = OpError::from_result(&result).unwrap();
        assert_eq!(
            (e.class.as_str(), e.message.as_str(), e.code.clone()),
            (want.0, want.1, want.2),
            "{result}"
        );
        assert_eq!(e.to_string(), text);
    }
    // Every code Ganeti defines, by its wire name (errors.py).
    let wire = [
        "resolver_error",
        "insufficient_resources",
        "temp_insufficient_resources",
        "wrong_input",
        "wrong_state",
        "unknown_entity",
        "already_exists",
        "resource_not_unique",
        "internal_error",
        "environment_error",
    ];
    assert_eq!(ErrorCode::KNOWN.len(), wire.len());
    for (code, name) in ErrorCode::KNOWN.iter().zip(wire) {
        assert_eq!(code.as_str(), name);
        assert_eq!(&ErrorCode::from_wire(name), code);
        assert_eq!(serde_json::to_value(code).unwrap(), json!(name));
    }
    for not_an_error in [
        json!(null),
        json!("Job canceled by request"),
        json!(["node1"]),
        json!([["node1.lab.test"]]),
        json!(["node1", "node2"]),
    ] {
        assert_eq!(OpError::from_result(&not_an_error), None, "{not_an_error}");
    }
    // Only a failed removal with the code is "the instance is gone".
    let unknown = OpError::from_result(&cases[0].0).unwrap();
    let mut ok = ev(1, OpCode::InstanceRemove, JobStatus::Success, 1);
    ok.error = Some(unknown.clone());
    assert!(!ok.removes_missing_instance());
    ok.status = JobStatus::Error;
    assert!(ok.removes_missing_instance());
    ok.opcode = OpCode::InstanceStartup;
    assert!(!ok.removes_missing_instance());
}

fn unknown_instance() -> OpError {
    OpError {
        class: PREREQ_ERROR.into(),
        message: "Instance 'snf-1' not known".into(),
        code: Some(ErrorCode::UnknownEntity),
    }
}

#[test]
fn a_removal_of_an_unknown_instance_destroys_in_any_order() {
    // A VM whose create Ganeti rejected, then deleted: the removal fails
    // because there is no instance.
    let create = ev(3, OpCode::InstanceCreate, JobStatus::Error, 30);
    let mut remove = ev(9, OpCode::InstanceRemove, JobStatus::Error, 90);
    remove.error = Some(unknown_instance());
    let deleted = |vm: VmState| {
        let mut d = start_action(&vm, Action::Destroy).unwrap();
        d = record_submitted_job(&d, JobId(9));
        d
    };
    let Transition::Applied(error) = apply_op_status(&VmState::new_build(), &create) else {
        panic!()
    };
    assert_eq!(error.operstate, OperState::Error);
    let Transition::Applied(done) = apply_op_status(&deleted(error), &remove) else {
        panic!()
    };
    assert_eq!(done.operstate, OperState::Destroyed);
    assert!(done.deleted);
    assert_eq!(done.action, None, "the removal settles the delete");
    assert_eq!(server_status(&done), ServerStatus::Deleted);
    // The create's failure arriving late changes nothing.
    assert_eq!(
        apply_op_status(&done, &create),
        Transition::Ignored(Ignored::Stale)
    );
    // A removal that failed for another reason leaves the VM as it was.
    let mut busy = remove.clone();
    busy.error = Some(OpError {
        class: "OpExecError".into(),
        message: "Could not remove disks".into(),
        code: None,
    });
    let Transition::Applied(kept) = apply_op_status(&deleted(vm_in(OperState::Started)), &busy)
    else {
        panic!()
    };
    assert_eq!(kept.operstate, OperState::Started);
    assert!(kept.deleted);
}

#[test]
fn unknown_opcodes_and_statuses_are_typed_errors() {
    assert_eq!(
        "OP_NODE_ADD".parse::<OpCode>(),
        Err(EventError::UnknownOpCode("OP_NODE_ADD".into()))
    );
    assert_eq!(
        "done".parse::<JobStatus>(),
        Err(EventError::UnknownStatus("done".into()))
    );
    for op in OpCode::ALL {
        assert_eq!(op.as_str().parse::<OpCode>().unwrap(), *op);
    }
}

#[test]
fn stale_events_never_regress_state() {
    let vm = VmState::new_build();
    let Transition::Applied(vm) =
        apply_op_status(&vm, &ev(1, OpCode::InstanceCreate, JobStatus::Success, 10))
    else {
        panic!()
    };
    let Transition::Applied(vm) = apply_op_status(
        &vm,
        &ev(3, OpCode::InstanceShutdown, JobStatus::Success, 30),
    ) else {
        panic!()
    };
    assert_eq!(vm.operstate, OperState::Stopped);
    // A startup from an older job arrives late: ignored entirely.
    let late = ev(2, OpCode::InstanceStartup, JobStatus::Success, 20);
    assert_eq!(
        apply_op_status(&vm, &late),
        Transition::Ignored(Ignored::Stale)
    );
    // And an older status of the same op too.
    let older = ev(3, OpCode::InstanceShutdown, JobStatus::Running, 25);
    assert_eq!(
        apply_op_status(&vm, &older),
        Transition::Ignored(Ignored::Stale)
    );
}

#[test]
fn removal_is_absorbing() {
    let vm = vm_in(OperState::Started);
    let Transition::Applied(vm) =
        apply_op_status(&vm, &ev(5, OpCode::InstanceRemove, JobStatus::Success, 50))
    else {
        panic!()
    };
    assert!(vm.deleted);
    let Transition::Applied(after) =
        apply_op_status(&vm, &ev(6, OpCode::InstanceStartup, JobStatus::Success, 60))
    else {
        panic!()
    };
    assert_eq!(after.operstate, OperState::Destroyed);
}

#[test]
fn failures_keep_state_and_log() {
    let vm = vm_in(OperState::Started);
    let mut e = ev(7, OpCode::InstanceShutdown, JobStatus::Error, 70);
    e.log_msg = Some("OpPrereqError: instance is locked".into());
    let Transition::Applied(next) = apply_op_status(&vm, &e) else {
        panic!()
    };
    assert_eq!(next.operstate, OperState::Started);
    assert_eq!(
        next.job.unwrap().log_msg.as_deref(),
        Some("OpPrereqError: instance is locked")
    );
}

#[test]
fn start_action_rules() {
    let build = VmState::new_build();
    assert_eq!(
        start_action(&build, Action::Stop),
        Err(ActionError::BuildInProgress)
    );
    let d = start_action(&build, Action::Destroy).unwrap();
    assert!(d.deleted, "destroy marks deleted at once");
    assert_eq!(start_action(&d, Action::Start), Err(ActionError::Deleted));

    let mut running = vm_in(OperState::Started);
    running.job = Some(BackendJob {
        job_id: Some(JobId(3)),
        opcode: OpCode::InstanceStartup,
        status: JobStatus::Success,
        log_msg: None,
        error: None,
    });
    let stopping = start_action(&running, Action::Stop).unwrap();
    assert_eq!(
        stopping.job, None,
        "starting an action clears the backend job"
    );
    assert!(matches!(
        start_action(&running, Action::Start),
        Err(ActionError::InvalidState { .. })
    ));

    let s = start_action(&running, Action::Suspend).unwrap();
    assert!(s.suspended);
    let mut stopped = s.clone();
    stopped.operstate = OperState::Stopped;
    assert_eq!(
        start_action(&stopped, Action::Start),
        Err(ActionError::Suspended)
    );
    let u = start_action(&stopped, Action::Unsuspend).unwrap();
    assert!(!u.suspended);
    assert!(start_action(&u, Action::Start).is_ok());
    assert!(start_action(&stopped, Action::Reboot(RebootKind::Hard)).is_ok());
    assert!(start_action(&stopped, Action::Reboot(RebootKind::Soft)).is_err());
}

#[test]
fn openstack_status_mapping() {
    let cases = [
        (OperState::Build, "BUILD"),
        (OperState::Started, "ACTIVE"),
        (OperState::Stopped, "SHUTOFF"),
        (OperState::Error, "ERROR"),
        (OperState::Destroyed, "DELETED"),
    ];
    for (op, want) in cases {
        assert_eq!(server_status(&vm_in(op)).as_str(), want);
    }
    let vm = vm_in(OperState::Started);
    let soft = record_submitted_job(
        &start_action(&vm, Action::Reboot(RebootKind::Soft)).unwrap(),
        JobId(9),
    );
    assert_eq!(server_status(&soft), ServerStatus::Reboot);
    let hard = start_action(&vm, Action::Reboot(RebootKind::Hard)).unwrap();
    assert_eq!(server_status(&hard), ServerStatus::HardReboot);
    assert_eq!(synnefo_status(&vm_in(OperState::Stopped)), "STOPPED");
    // The reboot job finishing ends the REBOOT status.
    let Transition::Applied(done) =
        apply_op_status(&soft, &ev(9, OpCode::InstanceReboot, JobStatus::Success, 5))
    else {
        panic!()
    };
    assert_eq!(server_status(&done), ServerStatus::Active);
    // A failed reboot also ends it.
    let Transition::Applied(failed) =
        apply_op_status(&soft, &ev(9, OpCode::InstanceReboot, JobStatus::Error, 5))
    else {
        panic!()
    };
    assert_eq!(server_status(&failed), ServerStatus::Active);
}

#[test]
fn local_transitions_table() {
    let actions = [
        Action::Start,
        Action::Stop,
        Action::Reboot(RebootKind::Soft),
        Action::Reboot(RebootKind::Hard),
        Action::Destroy,
        Action::Suspend,
        Action::Unsuspend,
    ];
    for from in OperState::ALL {
        for suspended in [false, true] {
            let mut before = vm_in(from);
            before.suspended = suspended;
            before.job = Some(BackendJob {
                job_id: Some(JobId(4)),
                opcode: OpCode::InstanceStartup,
                status: JobStatus::Success,
                log_msg: None,
                error: None,
            });
            // Destroyed without a job: whatever the state, gone for good.
            let gone = destroyed_without_ganeti(&before);
            assert!(
                gone.deleted && gone.operstate == OperState::Destroyed && gone.action.is_none()
            );
            assert_eq!(server_status(&gone), ServerStatus::Deleted);
            // A refused create: only from BUILD, to ERROR with the message.
            match create_refused(&before, "no".into()) {
                Some(n) => {
                    assert_eq!(from, OperState::Build);
                    assert_eq!(n.operstate, OperState::Error);
                    assert_eq!(n.job.unwrap().log_msg.as_deref(), Some("no"));
                }
                None => assert_ne!(from, OperState::Build),
            }
            // Rolling back a submitted-but-refused action restores the
            // user-visible state exactly.
            for action in actions {
                let Ok(started) = start_action(&before, action) else {
                    continue;
                };
                let back = rollback_submit(&started, action, &before).unwrap();
                assert_eq!(back, before, "{from} {action:?} suspended={suspended}");
                // Once the job is recorded (Ganeti took it) it is not ours
                // to roll back; nor is another action.
                let taken = record_submitted_job(&started, JobId(9));
                assert_eq!(rollback_submit(&taken, action, &before), None);
                let other = if action == Action::Start {
                    Action::Stop
                } else {
                    Action::Start
                };
                assert_eq!(rollback_submit(&started, other, &before), None);
            }
        }
    }
}
