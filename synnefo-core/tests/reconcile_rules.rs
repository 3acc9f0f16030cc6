//! Table tests: every reconciliation rule and every guard, one row each,
//! with the exact findings expected; plus the planner and the state fix.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{Flavor, Nic, Vm, VmPlacement};
use synnefo_core::ports::{InstanceInfo, JobInfo, JobOpInfo};
use synnefo_core::reconcile::{
    BackendListing, Diff, Discrepancy, FixAction, FixClass, FixFlags, FlavorSize, Guard, Guards,
    Held, Input, JobObservation, Listing, NicAddr, OrphanReason, Rule, StateFix, StuckReason,
    Unchecked, UncheckedReason, VmSnapshot, apply_db_fixes, diff, fixed_state, placement_fix,
    plan_fixes,
};
use synnefo_core::state::{
    Action, BackendJob, JobStatus, OpCode, OperState, PendingAction, VmState,
};

const B1: BackendId = BackendId(1);
const B2: BackendId = BackendId(2);
const B3: BackendId = BackendId(3);
const FLAVOR: FlavorSize = FlavorSize {
    vcpus: 2,
    ram_mib: 1024,
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn flavor(
    id: i64,
    vcpus: i32,
    ram_mib: i32,
    disk_gib: i32,
    template: &str,
    deleted: bool,
) -> Flavor {
    Flavor {
        id: FlavorId(id),
        name: format!("f{id}"),
        vcpus,
        ram_mib,
        disk_gib,
        disk_template: template.into(),
        is_public: true,
        deleted,
    }
}

/// Flavor 1 is `FLAVOR` (20 GiB, plain); the others exist to be matched,
/// or to be near misses (another disk size or template).
fn catalogue() -> Vec<Flavor> {
    vec![
        flavor(1, 2, 1024, 20, "plain", false),
        flavor(2, 4, 1024, 20, "plain", false),
        flavor(3, 2, 2048, 20, "plain", true),
        flavor(4, 2, 2048, 20, "plain", false),
        flavor(5, 8, 1024, 40, "plain", false),
        flavor(6, 8, 1024, 20, "drbd", false),
    ]
}

fn state(operstate: OperState) -> VmState {
    VmState {
        operstate,
        deleted: false,
        suspended: false,
        action: None,
        job: None,
        last_event: None,
        state_event: None,
    }
}

fn nic(index: i32, ip: &str, mac: &str) -> Nic {
    Nic {
        index,
        ip: Some(ip.into()),
        mac: Some(mac.into()),
        network: Some("net".into()),
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

fn default_nics(id: i64) -> Vec<Nic> {
    vec![nic(
        0,
        &format!("10.0.0.{id}"),
        &format!("aa:00:00:00:00:{id:02x}"),
    )]
}

/// A VM on B1, an hour old, with the default NIC.
fn vm(id: i64, operstate: OperState) -> VmSnapshot {
    VmSnapshot {
        vm: Vm {
            id: VmId(id),
            user_id: "u".into(),
            project_id: "p".into(),
            name: format!("vm{id}"),
            flavor_id: FlavorId(1),
            image_id: "img".into(),
            backend_id: Some(B1),
            state: state(operstate),
            metadata: BTreeMap::new(),
            created: now() - TimeDelta::hours(1),
            updated: now() - TimeDelta::hours(1),
            last_reconciled: None,
            version: 1,
        },
        nics: default_nics(id),
        flavor: Some(FLAVOR),
    }
}

/// The instance of VM `id` matching `vm(id, ..)`.
fn inst(id: i64, running: bool) -> InstanceInfo {
    named(&format!("snf-{id}"), running, default_nics(id))
}

fn named(name: &str, running: bool, nics: Vec<Nic>) -> InstanceInfo {
    InstanceInfo {
        name: name.into(),
        admin_up: running,
        running,
        status: if running { "running" } else { "ADMIN_down" }.into(),
        vcpus: Some(FLAVOR.vcpus),
        ram_mib: Some(FLAVOR.ram_mib),
        nics,
        pnode: Some("node1".into()),
        disk_template: Some("plain".into()),
        tags: vec![],
        mtime: None,
    }
}

fn job(id: u64, status: JobStatus, opcode: OpCode) -> JobObservation {
    JobObservation::Found(JobInfo {
        id: JobId(id),
        status,
        ops: vec![JobOpInfo {
            opcode: opcode.as_str().into(),
            status,
            error: if status == JobStatus::Error {
                synnefo_core::state::OpError::from_result(&serde_json::json!([
                    "OpExecError",
                    ["disk creation failed"]
                ]))
            } else {
                None
            },
            log: vec![],
        }],
        end_time_us: None,
    })
}

fn pending(s: &mut VmSnapshot, action: Action, job: Option<u64>) {
    s.vm.state.action = Some(PendingAction {
        action,
        job_id: job.map(JobId),
    });
}

/// One scenario.
struct World {
    vms: Vec<VmSnapshot>,
    others: Vec<Vm>,
    listings: Vec<BackendListing>,
    jobs: HashMap<VmId, JobObservation>,
}

impl World {
    fn new() -> Self {
        Self {
            vms: vec![],
            others: vec![],
            listings: vec![BackendListing {
                backend: B1,
                listing: Listing::Listed(vec![]),
            }],
            jobs: HashMap::new(),
        }
    }
    fn vm(mut self, v: VmSnapshot) -> Self {
        self.vms.push(v);
        self
    }
    fn other(mut self, v: Vm) -> Self {
        self.others.push(v);
        self
    }
    fn on(mut self, backend: BackendId, i: InstanceInfo) -> Self {
        match self.listings.iter_mut().find(|l| l.backend == backend) {
            Some(BackendListing {
                listing: Listing::Listed(v),
                ..
            }) => v.push(i),
            _ => self.listings.push(BackendListing {
                backend,
                listing: Listing::Listed(vec![i]),
            }),
        }
        self
    }
    fn listing(mut self, backend: BackendId, listing: Listing) -> Self {
        self.listings.retain(|l| l.backend != backend);
        self.listings.push(BackendListing { backend, listing });
        self
    }
    fn job(mut self, vm: i64, obs: JobObservation) -> Self {
        self.jobs.insert(VmId(vm), obs);
        self
    }
    fn diff(&self) -> Diff {
        diff(&Input {
            prefix: "snf-",
            now: now(),
            vms: &self.vms,
            others: &self.others,
            listings: &self.listings,
            jobs: &self.jobs,
            flavors: &catalogue(),
            guards: Guards::default(),
        })
    }
}

fn held(vm: i64, rule: Rule, guard: Guard) -> Held {
    Held {
        vm: VmId(vm),
        rule,
        guard,
    }
}

fn stale(vm: i64, operstate: OperState) -> Discrepancy {
    Discrepancy::Stale {
        vm: VmId(vm),
        backend: Some(B1),
        operstate,
    }
}

fn orphan(vm: i64, backend: BackendId, reason: OrphanReason) -> Discrepancy {
    Discrepancy::Orphan {
        vm: VmId(vm),
        backend,
        instance: format!("snf-{vm}"),
        reason,
    }
}

fn unsynced(vm: i64, db: OperState, running: bool, to: OperState) -> Discrepancy {
    Discrepancy::UnsyncedOperstate {
        vm: VmId(vm),
        backend: B1,
        db,
        ganeti_running: running,
        to,
    }
}

fn stuck(vm: i64, reason: StuckReason, job: Option<u64>, to: OperState) -> Discrepancy {
    Discrepancy::StuckBuild {
        vm: VmId(vm),
        backend: Some(B1),
        reason,
        create_job: job.map(JobId),
        message: None,
        to,
    }
}

struct Case {
    name: &'static str,
    world: World,
    found: Vec<Discrepancy>,
    held: Vec<Held>,
}

fn case(name: &'static str, world: World, found: Vec<Discrepancy>, held: Vec<Held>) -> Case {
    Case {
        name,
        world,
        found,
        held,
    }
}

fn with<F: FnOnce(&mut VmSnapshot)>(mut v: VmSnapshot, f: F) -> VmSnapshot {
    f(&mut v);
    v
}

fn running_job(s: &mut VmSnapshot, id: u64, opcode: OpCode) {
    s.vm.state.job = Some(BackendJob {
        job_id: JobId(id),
        opcode,
        status: JobStatus::Running,
        log_msg: None,
    });
}

fn deleted(mut v: Vm) -> Vm {
    v.state.deleted = true;
    v
}

fn young(v: &mut VmSnapshot) {
    v.vm.created = now() - TimeDelta::minutes(1);
    v.vm.updated = now() - TimeDelta::minutes(1);
}

fn cases() -> Vec<Case> {
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
                .vm(with(vm(1, Error), |v| v.vm.state.deleted = true))
                .vm(with(vm(2, Started), |v| v.vm.state.deleted = true))
                .vm(with(vm(3, Build), |v| v.vm.state.deleted = true)),
            vec![stale(1, Error), stale(2, Started), stale(3, Build)],
            vec![],
        ),
        case(
            "R1: deleted and DESTROYED without instance is settled",
            World::new().vm(with(vm(1, Destroyed), |v| v.vm.state.deleted = true)),
            vec![],
            vec![],
        ),
        case(
            "R1 guard: deleted, not DESTROYED, its remove job not yet ended",
            World::new().vm(with(vm(1, Error), |v| {
                v.vm.state.deleted = true;
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
                    v.vm.state.deleted = true;
                    pending(v, Action::Destroy, Some(9));
                }))
                .job(1, job(9, JobStatus::Error, OpCode::InstanceRemove)),
            vec![stale(1, Error)],
            vec![],
        ),
        case(
            "R1 guard: deleted, not DESTROYED, a cluster failed to list",
            World::new()
                .vm(with(vm(1, Error), |v| v.vm.state.deleted = true))
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
                .vm(with(vm(4, Started), |v| v.vm.state.deleted = true))
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

#[test]
fn every_rule_and_guard() {
    let mut failures = vec![];
    for c in cases() {
        let d = c.world.diff();
        if d.discrepancies != c.found || d.held != c.held {
            failures.push(format!(
                "{}\n  found: {:?}\n  want:  {:?}\n  held:  {:?}\n  want:  {:?}",
                c.name, d.discrepancies, c.found, d.held, c.held
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn vms_on_unlisted_clusters_are_unchecked() {
    use OperState::*;
    let rows = [
        (Listing::Offline, UncheckedReason::BackendOffline),
        (
            Listing::Unreachable("refused".into()),
            UncheckedReason::BackendUnreachable,
        ),
    ];
    for (listing, reason) in rows {
        let w = World::new()
            .vm(with(vm(1, Started), |v| v.vm.backend_id = Some(B2)))
            .listing(B2, listing)
            // Its instance on a listed cluster is not an orphan either.
            .on(B1, inst(1, true));
        let d = w.diff();
        assert_eq!(d.discrepancies, vec![], "{reason:?}");
        assert_eq!(
            d.unchecked,
            vec![Unchecked {
                vm: VmId(1),
                backend: Some(B2),
                reason
            }]
        );
    }
    let d = World::new()
        .vm(with(vm(1, Started), |v| v.vm.backend_id = Some(B3)))
        .diff();
    assert_eq!(d.unchecked[0].reason, UncheckedReason::BackendUnknown);
    assert!(d.discrepancies.is_empty());
    // A deleted VM not yet DESTROYED on an unlisted cluster: the same.
    let d = World::new()
        .vm(with(vm(1, Error), |v| {
            v.vm.state.deleted = true;
            v.vm.backend_id = Some(B2);
        }))
        .listing(B2, Listing::Offline)
        .diff();
    assert_eq!(d.unchecked[0].reason, UncheckedReason::BackendOffline);
    assert!(d.discrepancies.is_empty());
}

#[test]
fn stats_count_vms_instances_and_foreign_names() {
    let d = World::new()
        .vm(vm(1, OperState::Started))
        .on(B1, inst(1, true))
        .on(B1, named("web-1", true, vec![]))
        .on(B1, named("snf-x", true, vec![]))
        .diff();
    assert_eq!(d.stats.vms, 1);
    assert_eq!(d.stats.instances, 3);
    assert_eq!(d.stats.foreign_ignored, 2);
}

#[test]
fn the_report_serialises_with_stable_tags() {
    let d = World::new()
        .vm(vm(1, OperState::Started))
        .on(B1, inst(7, true))
        .diff();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["discrepancies"][0]["kind"], "stale");
    assert_eq!(json["discrepancies"][1]["kind"], "orphan");
    assert_eq!(json["discrepancies"][1]["reason"], "unknown");
    assert_eq!(json["discrepancies"][1]["instance"], "snf-7");
    let back: Diff = serde_json::from_value(json).unwrap();
    assert_eq!(back, d);
}

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
    deleted.state.deleted = true;
    assert_eq!(placement_fix(&deleted, [&set_flavor, &set_backend]), None);
    // State fixes do not touch placement, nor placement fixes the state.
    assert_eq!(apply_db_fixes(&v, [&set_flavor, &set_backend]), None);
}

// ---------------------------------------------------------------- state fix

#[test]
fn destroyed_sets_deleted_and_clears_the_action() {
    let mut s = state(OperState::Started);
    s.action = Some(PendingAction {
        action: Action::Stop,
        job_id: Some(JobId(3)),
    });
    let next = fixed_state(&s, StateFix::Destroyed).unwrap();
    assert_eq!(next.operstate, OperState::Destroyed);
    assert!(next.deleted);
    assert_eq!(next.action, None);
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
        gone.deleted = true;
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
    s.last_event = Some(synnefo_core::state::EventPosition {
        job_id: 5,
        op_index: 0,
        status_rank: 2,
        time_us: 9,
    });
    let next = fixed_state(&s, StateFix::OperState(OperState::Error)).unwrap();
    assert_eq!(next.operstate, OperState::Error);
    assert_eq!(next.action, None);
    assert_eq!(next.last_event, s.last_event);
    assert_eq!(next.state_event, s.state_event);
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
    assert_eq!(change.state.operstate, OperState::Stopped);
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
    assert!(change.state.deleted);
    assert_eq!(change.nics, None);
}
