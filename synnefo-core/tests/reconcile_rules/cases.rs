//! The table of cases: one per rule and guard, each a world and the discrepancies it must give.

use chrono::TimeDelta;
use synnefo_core::ids::{FlavorId, JobId, VmId};
use synnefo_core::reconcile::{
    Discrepancy, Guard, JobObservation, Listing, NicAddr, OrphanReason, Rule, StuckReason,
};
use synnefo_core::state::{Action, JobStatus, OpCode, OperState, VmState};

use crate::*;

pub(crate) fn cases() -> Vec<Case> {
    use OperState::*;
    vec![
        // ------------------------------------------------------------ clean
        case(
            "in sync: started+running, stopped+stopped, error+stopped",
            World::new()
                .vm(vm(1, Started))
                .on(B1, inst(1, true))
                .vm(vm(2, Stopped))
                .on(B1, inst(2, false))
                .vm(vm(3, Error))
                .on(B1, inst(3, false)),
            vec![],
            vec![],
        ),
        // ------------------------------------------------------------ R1
        case(
            "R1: started VM without instance is stale",
            World::new().vm(vm(1, Started)),
            vec![stale(1, Started)],
            vec![],
        ),
        case(
            "R1: stopped VM without instance is stale",
            World::new().vm(vm(1, Stopped)),
            vec![stale(1, Stopped)],
            vec![],
        ),
        case(
            "R1: destroyed-but-not-deleted VM without instance is stale",
            World::new().vm(vm(1, Destroyed)),
            vec![stale(1, Destroyed)],
            vec![],
        ),
        case(
            "R1: an ERROR VM (failed create) has no instance; not stale",
            World::new().vm(vm(1, Error)),
            vec![],
            vec![],
        ),
        case(
            "R1 guard: a pending action with a job not yet ended",
            World::new().vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(7)))),
            vec![],
            vec![held(
                1,
                Rule::Stale,
                Guard::JobInFlight {
                    job: Some(JobId(7)),
                },
            )],
        ),
        case(
            "R1 guard: Ganeti says the job still runs",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(7))))
                .job(1, job(7, JobStatus::Running, OpCode::InstanceShutdown)),
            vec![],
            vec![held(
                1,
                Rule::Stale,
                Guard::JobInFlight {
                    job: Some(JobId(7)),
                },
            )],
        ),
        case(
            "R1: the job ended (notification lost): no longer guarded",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(7))))
                .job(1, job(7, JobStatus::Success, OpCode::InstanceShutdown)),
            vec![stale(1, Started)],
            vec![],
        ),
        case(
            "R1: Ganeti no longer knows the job: no longer guarded",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(7))))
                .job(1, JobObservation::Missing(JobId(7))),
            vec![stale(1, Started)],
            vec![],
        ),
        case(
            "R1 guard: an observation of another job does not lift it",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(7))))
                .job(1, JobObservation::Missing(JobId(6))),
            vec![],
            vec![held(
                1,
                Rule::Stale,
                Guard::JobInFlight {
                    job: Some(JobId(7)),
                },
            )],
        ),
        case(
            "R1 guard: the recorded job status is not terminal",
            World::new().vm(with(vm(1, Started), |v| {
                running_job(v, 8, OpCode::InstanceReboot)
            })),
            vec![],
            vec![held(
                1,
                Rule::Stale,
                Guard::JobInFlight {
                    job: Some(JobId(8)),
                },
            )],
        ),
        case(
            "R1 guard: action stored moments ago, job id not yet recorded",
            World::new().vm(with(vm(1, Started), |v| {
                pending(v, Action::Stop, None);
                v.vm.updated = now() - TimeDelta::minutes(2);
            })),
            vec![],
            vec![held(1, Rule::Stale, Guard::JobInFlight { job: None })],
        ),
        case(
            "R1: action stored long ago and no job ever recorded",
            World::new().vm(with(vm(1, Started), |v| pending(v, Action::Stop, None))),
            vec![stale(1, Started)],
            vec![],
        ),
        case(
            "R1 guard: another cluster failed to list",
            World::new()
                .vm(vm(1, Started))
                .listing(B2, Listing::Unreachable("timeout".into())),
            vec![],
            vec![held(1, Rule::Stale, Guard::ClusterUnreachable)],
        ),
        case(
            "R1: an operator-offlined cluster elsewhere does not hold it",
            World::new()
                .vm(vm(1, Started))
                .listing(B2, Listing::Offline),
            vec![stale(1, Started)],
            vec![],
        ),
        // ------------------------------------------------------------ BUILD
        case(
            "R1 guard: BUILD with a create job not yet ended",
            World::new().vm(with(vm(1, Build), |v| pending(v, Action::Create, Some(5)))),
            vec![],
            vec![held(
                1,
                Rule::StuckBuild,
                Guard::CreatePending {
                    job: Some(JobId(5)),
                },
            )],
        ),
        case(
            "R1 guard: BUILD just stored, create not yet submitted",
            World::new().vm(with(vm(1, Build), |v| {
                v.vm.state = VmState::new_build();
                young(v);
            })),
            vec![],
            vec![held(
                1,
                Rule::StuckBuild,
                Guard::CreatePending { job: None },
            )],
        ),
        case(
            "stuck build guard: BUILD, no action, no job, young",
            World::new().vm(with(vm(1, Build), young)),
            vec![],
            vec![held(1, Rule::StuckBuild, Guard::TooYoung)],
        ),
        case(
            "stuck build: BUILD, never got a create job, old",
            World::new().vm(with(vm(1, Build), |v| v.vm.state = VmState::new_build())),
            vec![stuck(1, StuckReason::NoJob, None, Error)],
            vec![],
        ),
        case(
            "stuck build: create failed, DB never heard",
            World::new()
                .vm(with(vm(1, Build), |v| pending(v, Action::Create, Some(5))))
                .job(1, job(5, JobStatus::Error, OpCode::InstanceCreate)),
            vec![Discrepancy::StuckBuild {
                vm: VmId(1),
                backend: Some(B1),
                reason: StuckReason::CreateFailed,
                create_job: Some(JobId(5)),
                message: Some("OpExecError: disk creation failed".into()),
                to: Error,
            }],
            vec![],
        ),
        case(
            "stuck build: create job vanished from Ganeti",
            World::new()
                .vm(with(vm(1, Build), |v| pending(v, Action::Create, Some(5))))
                .job(1, JobObservation::Missing(JobId(5))),
            vec![stuck(1, StuckReason::JobVanished, Some(5), Error)],
            vec![],
        ),
        case(
            "R1: create succeeded but the instance is gone",
            World::new()
                .vm(with(vm(1, Build), |v| pending(v, Action::Create, Some(5))))
                .job(1, job(5, JobStatus::Success, OpCode::InstanceCreate)),
            vec![stale(1, Build)],
            vec![],
        ),
        case(
            "stuck build: create succeeded, instance running",
            World::new()
                .vm(with(vm(1, Build), |v| pending(v, Action::Create, Some(5))))
                .job(1, job(5, JobStatus::Success, OpCode::InstanceCreate))
                .on(B1, inst(1, true)),
            vec![stuck(1, StuckReason::CreateSucceeded, Some(5), Started)],
            vec![],
        ),
        case(
            "stuck build: create succeeded, instance stopped",
            World::new()
                .vm(with(vm(1, Build), |v| pending(v, Action::Create, Some(5))))
                .job(1, job(5, JobStatus::Success, OpCode::InstanceCreate))
                .on(B1, inst(1, false)),
            vec![stuck(1, StuckReason::CreateSucceeded, Some(5), Stopped)],
            vec![],
        ),
        case(
            "stuck build: no job, old, instance running (by hand)",
            World::new().vm(vm(1, Build)).on(B1, inst(1, true)),
            vec![stuck(1, StuckReason::NoJob, None, Started)],
            vec![],
        ),
        case(
            "R3 guard: BUILD listed running while its create job runs",
            World::new()
                .vm(with(vm(1, Build), |v| {
                    pending(v, Action::Create, Some(5));
                    v.nics.clear();
                }))
                .on(B1, inst(1, true)),
            vec![],
            vec![held(
                1,
                Rule::UnsyncedOperstate,
                Guard::CreatePending {
                    job: Some(JobId(5)),
                },
            )],
        ),
        case(
            "BUILD listed (not yet running) while creating: nothing to say, not even NICs",
            World::new()
                .vm(with(vm(1, Build), |v| {
                    pending(v, Action::Create, Some(5));
                    v.nics.clear();
                }))
                .on(B1, inst(1, false)),
            vec![],
            vec![],
        ),
        case(
            "stuck build guard: listed, no job, young",
            World::new()
                .vm(with(vm(1, Build), young))
                .on(B1, inst(1, true)),
            vec![],
            vec![held(1, Rule::StuckBuild, Guard::TooYoung)],
        ),
        case(
            "R1: deleted, not DESTROYED, no instance (its removal never counted) is stale",
            World::new()
                .vm(with(vm(1, Error), |v| set_deleted(&mut v.vm.state)))
                .vm(with(vm(2, Started), |v| set_deleted(&mut v.vm.state)))
                .vm(with(vm(3, Build), |v| set_deleted(&mut v.vm.state))),
            vec![stale(1, Error), stale(2, Started), stale(3, Build)],
            vec![],
        ),
        case(
            "R1: deleted and DESTROYED without instance is settled",
            World::new().vm(with(vm(1, Destroyed), |v| set_deleted(&mut v.vm.state))),
            vec![],
            vec![],
        ),
        case(
            "R1 guard: deleted, not DESTROYED, its remove job not yet ended",
            World::new().vm(with(vm(1, Error), |v| {
                set_deleted(&mut v.vm.state);
                pending(v, Action::Destroy, Some(9));
            })),
            vec![],
            vec![held(
                1,
                Rule::Stale,
                Guard::DestroyPending {
                    job: Some(JobId(9)),
                },
            )],
        ),
        case(
            "R1: deleted, not DESTROYED, its remove job ended (notification lost)",
            World::new()
                .vm(with(vm(1, Error), |v| {
                    set_deleted(&mut v.vm.state);
                    pending(v, Action::Destroy, Some(9));
                }))
                .job(1, job(9, JobStatus::Error, OpCode::InstanceRemove)),
            vec![stale(1, Error)],
            vec![],
        ),
        case(
            "R1 guard: deleted, not DESTROYED, a cluster failed to list",
            World::new()
                .vm(with(vm(1, Error), |v| set_deleted(&mut v.vm.state)))
                .listing(B2, Listing::Unreachable("refused".into())),
            vec![],
            vec![held(1, Rule::Stale, Guard::ClusterUnreachable)],
        ),
        // ------------------------------------------------------------ R2
        case(
            "R2: an instance with no VM row",
            World::new().on(B1, inst(99, true)),
            vec![orphan(99, B1, OrphanReason::Unknown)],
            vec![],
        ),
        case(
            "R2: the VM is deleted",
            World::new()
                .other(deleted(vm(4, Started).vm))
                .on(B1, inst(4, true)),
            vec![orphan(4, B1, OrphanReason::Deleted)],
            vec![],
        ),
        case(
            "R2: a deleted VM passed among the checked ones is still an orphan",
            World::new()
                .vm(with(vm(4, Started), |v| set_deleted(&mut v.vm.state)))
                .on(B1, inst(4, false)),
            vec![orphan(4, B1, OrphanReason::Deleted)],
            vec![],
        ),
        case(
            "R2 guard: deleted, remove job not yet ended",
            World::new()
                .other(deleted(
                    with(vm(4, Started), |v| pending(v, Action::Destroy, Some(9))).vm,
                ))
                .on(B1, inst(4, true)),
            vec![],
            vec![held(
                4,
                Rule::Orphan,
                Guard::DestroyPending {
                    job: Some(JobId(9)),
                },
            )],
        ),
        case(
            "R2 guard: deleted moments ago, remove not yet submitted",
            World::new()
                .other(deleted(
                    with(vm(4, Started), |v| {
                        pending(v, Action::Destroy, None);
                        v.vm.updated = now() - TimeDelta::seconds(5);
                    })
                    .vm,
                ))
                .on(B1, inst(4, true)),
            vec![],
            vec![held(4, Rule::Orphan, Guard::DestroyPending { job: None })],
        ),
        case(
            "R2: deleted, the remove job failed and the DB heard nothing",
            World::new()
                .other(deleted(
                    with(vm(4, Started), |v| pending(v, Action::Destroy, Some(9))).vm,
                ))
                .job(4, job(9, JobStatus::Error, OpCode::InstanceRemove))
                .on(B1, inst(4, true)),
            vec![orphan(4, B1, OrphanReason::Deleted)],
            vec![],
        ),
        case(
            "R2: DESTROYED but not deleted, listed",
            World::new()
                .other(vm(4, Destroyed).vm)
                .on(B1, inst(4, false)),
            vec![orphan(4, B1, OrphanReason::Destroyed)],
            vec![],
        ),
        case(
            "R2: DESTROYED (checked) but listed",
            World::new().vm(vm(4, Destroyed)).on(B1, inst(4, false)),
            vec![orphan(4, B1, OrphanReason::Destroyed)],
            vec![],
        ),
        case(
            "R2: a live VM outside this run's batch is not an orphan",
            World::new().other(vm(5, Started).vm).on(B1, inst(5, true)),
            vec![],
            vec![],
        ),
        case(
            "R2: a second copy on another cluster",
            World::new()
                .vm(vm(1, Started))
                .on(B1, inst(1, true))
                .on(B2, inst(1, true)),
            vec![orphan(1, B2, OrphanReason::Duplicate { recorded: B1 })],
            vec![],
        ),
        case(
            "foreign names are ignored",
            World::new()
                .on(B1, named("web-1", true, vec![]))
                .on(B1, named("snf-abc", true, vec![]))
                .on(B1, named("snf-007", true, vec![]))
                .on(B1, named("snf-", true, vec![])),
            vec![],
            vec![],
        ),
        // ------------------------------------------------------------ R3
        case(
            "R3: stopped in D, running in G",
            World::new().vm(vm(1, Stopped)).on(B1, inst(1, true)),
            vec![unsynced(1, Stopped, true, Started)],
            vec![],
        ),
        case(
            "R3: error in D, running in G",
            World::new().vm(vm(1, Error)).on(B1, inst(1, true)),
            vec![unsynced(1, Error, true, Started)],
            vec![],
        ),
        case(
            "R3: started in D, stopped in G",
            World::new().vm(vm(1, Started)).on(B1, inst(1, false)),
            vec![unsynced(1, Started, false, Stopped)],
            vec![],
        ),
        case(
            "R3 guard: a shutdown job is running",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(12))))
                .on(B1, inst(1, false)),
            vec![],
            vec![held(
                1,
                Rule::UnsyncedOperstate,
                Guard::JobInFlight {
                    job: Some(JobId(12)),
                },
            )],
        ),
        case(
            "R3: the shutdown job ended, notification lost",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(12))))
                .job(1, job(12, JobStatus::Success, OpCode::InstanceShutdown))
                .on(B1, inst(1, false)),
            vec![unsynced(1, Started, false, Stopped)],
            vec![],
        ),
        // ------------------------------------------------------------ flavor
        case(
            "flavor: vcpus differ",
            World::new().vm(vm(1, Started)).on(B1, {
                let mut i = inst(1, true);
                i.vcpus = Some(4);
                i
            }),
            vec![Discrepancy::UnsyncedFlavor {
                vm: VmId(1),
                backend: B1,
                flavor: FlavorId(1),
                db: FLAVOR,
                ganeti_vcpus: Some(4),
                ganeti_ram_mib: Some(1024),
                matching: Some(FlavorId(2)),
            }],
            vec![],
        ),
        case(
            "flavor: maxmem differs; a live flavor matches before a deleted one",
            World::new().vm(vm(1, Started)).on(B1, {
                let mut i = inst(1, true);
                i.ram_mib = Some(2048);
                i
            }),
            vec![Discrepancy::UnsyncedFlavor {
                vm: VmId(1),
                backend: B1,
                flavor: FlavorId(1),
                db: FLAVOR,
                ganeti_vcpus: Some(2),
                ganeti_ram_mib: Some(2048),
                matching: Some(FlavorId(4)),
            }],
            vec![],
        ),
        case(
            "flavor: only flavors of another disk size or template have that size",
            World::new().vm(vm(1, Started)).on(B1, {
                let mut i = inst(1, true);
                i.vcpus = Some(8);
                i
            }),
            vec![Discrepancy::UnsyncedFlavor {
                vm: VmId(1),
                backend: B1,
                flavor: FlavorId(1),
                db: FLAVOR,
                ganeti_vcpus: Some(8),
                ganeti_ram_mib: Some(1024),
                matching: None,
            }],
            vec![],
        ),
        case(
            "flavor: Ganeti does not report beparams; nothing to compare",
            World::new().vm(vm(1, Started)).on(B1, {
                let mut i = inst(1, true);
                i.vcpus = None;
                i.ram_mib = None;
                i
            }),
            vec![],
            vec![],
        ),
        case(
            "flavor guard: a job (resize) is running",
            World::new()
                .vm(with(vm(1, Started), |v| {
                    running_job(v, 3, OpCode::InstanceSetParams)
                }))
                .on(B1, {
                    let mut i = inst(1, true);
                    i.vcpus = Some(4);
                    i
                }),
            vec![],
            vec![held(
                1,
                Rule::UnsyncedFlavor,
                Guard::JobInFlight {
                    job: Some(JobId(3)),
                },
            )],
        ),
        // ------------------------------------------------------------ NICs
        case(
            "NICs: the IP differs",
            World::new().vm(vm(1, Started)).on(
                B1,
                named("snf-1", true, vec![nic(0, "10.9.9.9", "aa:00:00:00:00:01")]),
            ),
            vec![Discrepancy::UnsyncedNics {
                vm: VmId(1),
                backend: B1,
                db: vec![NicAddr {
                    ip: Some("10.0.0.1".into()),
                    mac: Some("aa:00:00:00:00:01".into()),
                }],
                ganeti: vec![nic(0, "10.9.9.9", "aa:00:00:00:00:01")],
            }],
            vec![],
        ),
        case(
            "NICs: MAC case and list order do not matter",
            World::new()
                .vm(with(vm(1, Started), |v| {
                    v.nics = vec![
                        nic(1, "10.0.1.1", "bb:00:00:00:00:01"),
                        nic(0, "10.0.0.1", "aa:00:00:00:00:01"),
                    ]
                }))
                .on(
                    B1,
                    named(
                        "snf-1",
                        true,
                        vec![
                            nic(0, "10.0.0.1", "AA:00:00:00:00:01"),
                            nic(1, "10.0.1.1", "BB:00:00:00:00:01"),
                        ],
                    ),
                ),
            vec![],
            vec![],
        ),
        case(
            "NICs: the DB never got them (net-status lost)",
            World::new()
                .vm(with(vm(1, Started), |v| v.nics.clear()))
                .on(B1, inst(1, true)),
            vec![Discrepancy::UnsyncedNics {
                vm: VmId(1),
                backend: B1,
                db: vec![],
                ganeti: default_nics(1),
            }],
            vec![],
        ),
        case(
            "NICs guard: a job is running",
            World::new()
                .vm(with(vm(1, Started), |v| {
                    v.nics.clear();
                    pending(
                        v,
                        Action::Reboot(synnefo_core::state::RebootKind::Hard),
                        Some(4),
                    );
                }))
                .on(B1, inst(1, true)),
            vec![],
            vec![held(
                1,
                Rule::UnsyncedNics,
                Guard::JobInFlight {
                    job: Some(JobId(4)),
                },
            )],
        ),
        // ------------------------------------------------------------ clusters
        case(
            "wrong backend: recorded on B1, lives on B2 (and is checked there)",
            World::new().vm(vm(1, Started)).on(B2, inst(1, false)),
            vec![
                Discrepancy::WrongBackend {
                    vm: VmId(1),
                    recorded: Some(B1),
                    found_on: vec![B2],
                },
                Discrepancy::UnsyncedOperstate {
                    vm: VmId(1),
                    backend: B2,
                    db: Started,
                    ganeti_running: false,
                    to: Stopped,
                },
            ],
            vec![],
        ),
        case(
            "wrong backend: no cluster recorded",
            World::new()
                .vm(with(vm(1, Started), |v| v.vm.backend_id = None))
                .on(B1, inst(1, true)),
            vec![Discrepancy::WrongBackend {
                vm: VmId(1),
                recorded: None,
                found_on: vec![B1],
            }],
            vec![],
        ),
        case(
            "R2: DESTROYED (checked), its copies on two other clusters are orphans, not a move",
            World::new()
                .vm(vm(4, Destroyed))
                .on(B2, inst(4, false))
                .on(B3, inst(4, false)),
            vec![
                orphan(4, B2, OrphanReason::Destroyed),
                orphan(4, B3, OrphanReason::Destroyed),
            ],
            vec![],
        ),
        case(
            "wrong backend guard: a cluster failed to list (it may hold another copy)",
            World::new()
                .vm(vm(1, Started))
                .on(B2, inst(1, true))
                .listing(B3, Listing::Unreachable("timeout".into())),
            vec![],
            vec![held(1, Rule::WrongBackend, Guard::ClusterUnreachable)],
        ),
        case(
            "wrong backend guard: a cluster is offline (not listed)",
            World::new()
                .vm(vm(1, Started))
                .on(B2, inst(1, true))
                .listing(B3, Listing::Offline),
            vec![],
            vec![held(1, Rule::WrongBackend, Guard::ClusterUnreachable)],
        ),
        case(
            "wrong backend: no cluster recorded and a job pending; nothing to look the job up on, so reported",
            World::new()
                .vm(with(vm(1, Started), |v| {
                    v.vm.backend_id = None;
                    pending(v, Action::Stop, Some(21));
                }))
                .on(B1, inst(1, true)),
            vec![Discrepancy::WrongBackend {
                vm: VmId(1),
                recorded: None,
                found_on: vec![B1],
            }],
            vec![],
        ),
        case(
            "wrong backend guard: a job is in flight on the recorded cluster",
            World::new()
                .vm(with(vm(1, Started), |v| pending(v, Action::Stop, Some(21))))
                .on(B2, inst(1, true)),
            vec![],
            vec![held(
                1,
                Rule::WrongBackend,
                Guard::JobInFlight {
                    job: Some(JobId(21)),
                },
            )],
        ),
        case(
            "wrong backend: on two other clusters, ambiguous, nothing else checked",
            World::new()
                .vm(vm(1, Started))
                .on(B2, inst(1, false))
                .on(B3, inst(1, true)),
            vec![Discrepancy::WrongBackend {
                vm: VmId(1),
                recorded: Some(B1),
                found_on: vec![B2, B3],
            }],
            vec![],
        ),
    ]
}
