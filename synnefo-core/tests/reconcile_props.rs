//! Properties of reconciliation over an in-memory model of D and G:
//!
//! * convergence: applying the full fix plan and reconciling again leaves no
//!   discrepancy but the report-only (manual) ones already found;
//! * report-only changes nothing and is stable;
//! * the staggered batch size keeps the RECONCILIATION_MIN promise for a
//!   stable population, and equals the seed's formula when the interval
//!   divides RECONCILIATION_MIN.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{Flavor, Nic, Vm};
use synnefo_core::ports::{InstanceInfo, JobInfo};
use synnefo_core::reconcile::{
    BackendListing, Diff, FixAction, FixClass, FixFlags, FlavorSize, Guards, Input, JobObservation,
    Listing, VmSnapshot, apply_db_fixes, batch_size, diff, placement_fix, plan_fixes,
    record_orphan_removal, seed_batch_size,
};
use synnefo_core::state::{
    Action, BackendJob, JobStatus, OpCode, OperState, PendingAction, RebootKind, StoredVmState,
    VmState,
};

const B1: BackendId = BackendId(1);
const B2: BackendId = BackendId(2);
const FLAVOR: FlavorSize = FlavorSize {
    vcpus: 1,
    ram_mib: 512,
};

/// Flavor 1 is `FLAVOR`; flavor 2 has 4 vCPUs, what a drifted instance
/// runs unless it drifted to an odd size (6 vCPUs), which no flavor has.
fn catalogue() -> Vec<Flavor> {
    [(1, 1), (2, 4)]
        .into_iter()
        .map(|(id, vcpus)| Flavor {
            id: FlavorId(id),
            name: format!("f{id}"),
            vcpus,
            ram_mib: FLAVOR.ram_mib,
            disk_gib: 10,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        })
        .collect()
}

fn size_of(flavor: FlavorId) -> Option<FlavorSize> {
    catalogue()
        .into_iter()
        .find(|f| f.id == flavor)
        .map(|f| FlavorSize {
            vcpus: f.vcpus,
            ram_mib: f.ram_mib,
        })
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// One generated VM and what the clusters hold for it.
#[derive(Debug, Clone)]
struct VmGen {
    operstate: OperState,
    deleted: bool,
    backend: u8,
    action: Option<(Action, Option<u64>)>,
    recorded_job: Option<(u64, JobStatus, OpCode)>,
    old: bool,
    in_batch: bool,
    presence: u8,
    running: bool,
    nics_drift: bool,
    flavor_drift: bool,
    odd_size: bool,
    obs: u8,
}

fn operstate() -> impl Strategy<Value = OperState> {
    prop::sample::select(OperState::ALL.to_vec())
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![
        Action::Create,
        Action::Start,
        Action::Stop,
        Action::Reboot(RebootKind::Hard),
        Action::Destroy,
    ])
}

fn status() -> impl Strategy<Value = JobStatus> {
    prop::sample::select(JobStatus::ALL.to_vec())
}

fn opcode() -> impl Strategy<Value = OpCode> {
    prop::sample::select(vec![
        OpCode::InstanceCreate,
        OpCode::InstanceStartup,
        OpCode::InstanceShutdown,
        OpCode::InstanceRemove,
        OpCode::InstanceSetParams,
    ])
}

prop_compose! {
    fn vm_gen()(
        operstate in operstate(),
        deleted in prop::bool::weighted(0.2),
        backend in 0u8..3,
        action in prop::option::weighted(0.4, (action(), prop::option::of(1u64..50))),
        recorded_job in prop::option::of((1u64..50, status(), opcode())),
        old in prop::bool::weighted(0.7),
        in_batch in prop::bool::weighted(0.8),
        presence in 0u8..4,
        running: bool,
        nics_drift in prop::bool::weighted(0.3),
        flavor_drift in prop::bool::weighted(0.2),
        odd_size in prop::bool::weighted(0.3),
        obs in 0u8..5,
    ) -> VmGen {
        VmGen { operstate, deleted, backend, action, recorded_job, old, in_batch, presence, running, nics_drift, flavor_drift, odd_size, obs }
    }
}

#[derive(Debug, Clone)]
struct Model {
    vms: Vec<VmSnapshot>,
    others: Vec<Vm>,
    listings: Vec<BackendListing>,
    jobs: HashMap<VmId, JobObservation>,
}

fn nic(i: i64, drift: bool) -> Nic {
    Nic {
        index: 0,
        ip: Some(format!("10.0.{}.{}", u8::from(drift), i)),
        mac: Some(format!("aa:00:00:00:00:{i:02x}")),
        network: None,
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

fn build(gens: &[VmGen], unknown: usize, b2: u8) -> Model {
    let mut b1_insts: Vec<InstanceInfo> = vec![];
    let mut b2_insts: Vec<InstanceInfo> = vec![];
    let mut vms = vec![];
    let mut others = vec![];
    let mut jobs = HashMap::new();
    let age = |old: bool| {
        if old {
            TimeDelta::hours(2)
        } else {
            TimeDelta::minutes(1)
        }
    };
    for (k, g) in gens.iter().enumerate() {
        let id = k as i64 + 1;
        let recorded = match g.backend {
            0 => None,
            1 => Some(B1),
            _ => Some(B2),
        };
        let state = VmState::from_stored(StoredVmState {
            operstate: g.operstate,
            deleted: g.deleted,
            suspended: false,
            action: g.action.map(|(action, job)| PendingAction {
                action,
                job_id: job.map(JobId),
            }),
            job: g.recorded_job.map(|(job, status, opcode)| BackendJob {
                job_id: Some(JobId(job)),
                opcode,
                status,
                log_msg: None,
                error: None,
            }),
            last_event: None,
            state_event: None,
            nics_time_us: None,
            resize: None,
            rebuild: None,
            rescue: None,
        });
        let vm = Vm {
            id: VmId(id),
            user_id: "u".into(),
            project_id: "p".into(),
            name: format!("vm{id}"),
            flavor_id: FlavorId(1),
            image_id: "i".into(),
            backend_id: recorded,
            state,
            metadata: BTreeMap::new(),
            created: now() - age(g.old),
            updated: now() - age(g.old),
            last_reconciled: None,
            version: 1,
        };
        // The job a VM waits for, as Ganeti would report it.
        let waited = g
            .action
            .and_then(|(_, j)| j)
            .or(g.recorded_job.map(|(j, _, _)| j));
        if let Some(j) = waited {
            let obs = match g.obs {
                0 => None,
                1 => Some(JobObservation::Missing(JobId(j))),
                2 => Some(job_obs(j, JobStatus::Success)),
                3 => Some(job_obs(j, JobStatus::Error)),
                _ => Some(job_obs(j, JobStatus::Running)),
            };
            if let Some(o) = obs {
                jobs.insert(VmId(id), o);
            }
        }
        let inst = InstanceInfo {
            name: format!("snf-{id}"),
            admin_up: g.running,
            running: g.running,
            status: "x".into(),
            vcpus: Some(match (g.flavor_drift, g.odd_size) {
                (false, _) => FLAVOR.vcpus,
                (true, false) => 4,
                (true, true) => 6,
            }),
            ram_mib: Some(FLAVOR.ram_mib),
            nics: vec![nic(id, g.nics_drift)],
            nic_names: vec![],
            pnode: None,
            disk_template: None,
            tags: vec![],
            mtime: None,
        };
        let home = recorded.unwrap_or(B1);
        let away = if home == B1 { B2 } else { B1 };
        let mut place = |b: BackendId| {
            if b == B1 {
                b1_insts.push(inst.clone());
            } else {
                b2_insts.push(inst.clone());
            }
        };
        match g.presence {
            0 => {}
            1 => place(home),
            2 => place(away),
            _ => {
                place(home);
                place(away);
            }
        }
        if g.in_batch {
            vms.push(VmSnapshot {
                vm,
                nics: vec![nic(id, false)],
                flavor: Some(FLAVOR),
            });
        } else {
            others.push(vm);
        }
    }
    for u in 0..unknown {
        let id = 1000 + u as i64;
        let i = InstanceInfo {
            name: format!("snf-{id}"),
            admin_up: true,
            running: true,
            status: "running".into(),
            vcpus: None,
            ram_mib: None,
            nics: vec![],
            nic_names: vec![],
            pnode: None,
            disk_template: None,
            tags: vec![],
            mtime: None,
        };
        if u % 2 == 0 {
            b1_insts.push(i);
        } else {
            b2_insts.push(i);
        }
    }
    b1_insts.push(InstanceInfo {
        name: "not-ours".into(),
        ..b1_insts.first().cloned().unwrap_or_else(|| InstanceInfo {
            name: String::new(),
            admin_up: false,
            running: false,
            status: String::new(),
            vcpus: None,
            ram_mib: None,
            nics: vec![],
            nic_names: vec![],
            pnode: None,
            disk_template: None,
            tags: vec![],
            mtime: None,
        })
    });
    let b2_listing = match b2 {
        0 => Listing::Listed(b2_insts),
        1 => Listing::Offline,
        _ => Listing::Unreachable("down".into()),
    };
    Model {
        vms,
        others,
        listings: vec![
            BackendListing {
                backend: B1,
                listing: Listing::Listed(b1_insts),
            },
            BackendListing {
                backend: B2,
                listing: b2_listing,
            },
        ],
        jobs,
    }
}

fn job_obs(id: u64, status: JobStatus) -> JobObservation {
    JobObservation::Found(JobInfo {
        id: JobId(id),
        status,
        ops: vec![],
        end_time_us: None,
    })
}

impl Model {
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

    /// Applies a plan the way the executor does: DB fixes folded per VM,
    /// orphan removals on the cluster, and the removal job recorded on the
    /// row of a deleted or DESTROYED VM whose orphan was removed (the job
    /// has not ended when the next run looks).
    fn apply(&mut self, actions: &[FixAction]) {
        let removal = |vm: VmId| {
            actions.iter().find_map(|a| match a {
                FixAction::DestroyOrphan { vm: v, .. } if *v == vm => {
                    Some(JobId(10_000 + vm.0 as u64))
                }
                _ => None,
            })
        };
        let write = |vm: &Vm| -> Option<(VmState, Option<Vec<Nic>>)> {
            let change = apply_db_fixes(vm, actions);
            let (state, nics) = match change {
                Some(c) => (c.state, c.nics),
                None => (vm.state.clone(), None),
            };
            let state = match removal(vm.id) {
                Some(job) => record_orphan_removal(&state, job),
                None => state,
            };
            (state != vm.state || nics.is_some()).then_some((state, nics))
        };
        // As the executor: the state write first, then flavor and cluster
        // judged on the row it left.
        let place = |vm: &mut Vm| {
            let p = placement_fix(vm, actions)?;
            vm.flavor_id = p.flavor_id;
            vm.backend_id = p.backend_id;
            vm.version += 1;
            Some(p.flavor_id)
        };
        for snap in &mut self.vms {
            if let Some((state, nics)) = write(&snap.vm) {
                snap.vm.state = state;
                if let Some(n) = nics {
                    snap.nics = n;
                }
                snap.vm.version += 1;
            }
            if let Some(flavor) = place(&mut snap.vm) {
                snap.flavor = size_of(flavor);
            }
        }
        for vm in &mut self.others {
            if let Some((state, _)) = write(vm) {
                vm.state = state;
                vm.version += 1;
            }
            place(vm);
        }
        for a in actions {
            if let FixAction::DestroyOrphan {
                backend, instance, ..
            } = a
            {
                for l in &mut self.listings {
                    if l.backend == *backend
                        && let Listing::Listed(v) = &mut l.listing
                    {
                        v.retain(|i| &i.name != instance);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fix_all_then_reconcile_is_clean(gens in prop::collection::vec(vm_gen(), 0..24), unknown in 0usize..4, b2 in 0u8..3) {
        let mut model = build(&gens, unknown, b2);
        let first = model.diff();
        let plan = plan_fixes(&first.discrepancies, FixFlags::ALL);
        let actions: Vec<FixAction> = plan.fixes.iter().map(|f| f.action.clone()).collect();
        model.apply(&actions);
        let second = model.diff();
        for d in &second.discrepancies {
            prop_assert_eq!(d.fix_class(), FixClass::Manual, "left after fixing: {:?}\nfirst: {:?}", d, first.discrepancies);
            prop_assert!(first.discrepancies.contains(d), "new finding after fixing: {:?}", d);
        }
        // And fixing is idempotent: the second plan has nothing to do.
        prop_assert!(plan_fixes(&second.discrepancies, FixFlags::ALL).fixes.is_empty());
    }

    #[test]
    fn each_flag_alone_fixes_exactly_its_class(gens in prop::collection::vec(vm_gen(), 0..24), unknown in 0usize..4, which in 0u8..3) {
        let flags = match which {
            0 => FixFlags { stale: true, ..FixFlags::NONE },
            1 => FixFlags { orphans: true, ..FixFlags::NONE },
            _ => FixFlags { unsynced: true, ..FixFlags::NONE },
        };
        let mut model = build(&gens, unknown, 0);
        let first = model.diff();
        let plan = plan_fixes(&first.discrepancies, flags);
        for f in &plan.fixes {
            prop_assert!(flags.allows(first.discrepancies[f.discrepancy].fix_class()));
        }
        let actions: Vec<FixAction> = plan.fixes.iter().map(|f| f.action.clone()).collect();
        model.apply(&actions);
        let second = model.diff();
        prop_assert!(!second.discrepancies.iter().any(|d| flags.allows(d.fix_class()) && first.discrepancies.contains(d)),
            "a selected finding survived its fix: {:?}", second.discrepancies);
    }

    #[test]
    fn report_only_is_stable(gens in prop::collection::vec(vm_gen(), 0..24), unknown in 0usize..4, b2 in 0u8..3) {
        let model = build(&gens, unknown, b2);
        let first = model.diff();
        prop_assert!(plan_fixes(&first.discrepancies, FixFlags::NONE).fixes.is_empty());
        prop_assert_eq!(model.diff(), first);
    }

    #[test]
    fn staggered_batches_visit_every_vm_within_the_window(n in 0u64..400, r in 1u64..90, i in 1u64..40) {
        let k = batch_size(n, i, r);
        if r % i == 0 {
            prop_assert_eq!(k, seed_batch_size(n, i, r));
        }
        prop_assert!(k >= seed_batch_size(n, i, r));
        // LRU model: stamps per VM, a run at every multiple of i.
        let mut stamp: Vec<Option<u64>> = vec![None; n as usize];
        let mut last_seen: Vec<Option<u64>> = vec![None; n as usize];
        let horizon = 4 * r.max(i) + i;
        let mut t = 0;
        while t <= horizon {
            let mut order: Vec<usize> = (0..n as usize).collect();
            order.sort_by_key(|&v| (stamp[v].map_or(0, |s| s + 1), v));
            for &v in order.iter().take(k as usize) {
                if let Some(prev) = last_seen[v] {
                    prop_assert!(t - prev <= r.max(i), "vm {} waited {} min (R={}, interval={})", v, t - prev, r, i);
                }
                last_seen[v] = Some(t);
                stamp[v] = Some(t);
            }
            t += i;
        }
        // Everyone got visited in the first window.
        prop_assert!(last_seen.iter().all(Option::is_some));
    }
}

#[test]
fn the_seed_formula_is_short_when_the_interval_does_not_divide() {
    // 100 VMs, 30 min, every 7 min: the seed takes 24 per run, so a VM waits
    // 5 runs = 35 min; batch_size takes 25 (4 runs = 28 min).
    assert_eq!(seed_batch_size(100, 7, 30), 24);
    assert_eq!(batch_size(100, 7, 30), 25);
    assert_eq!(batch_size(1000, 1, 30), 34);
    assert_eq!(batch_size(0, 1, 30), 0);
    assert_eq!(batch_size(5, 60, 30), 5);
    assert_eq!(batch_size(u64::MAX, 1, 30), u64::MAX.div_ceil(30));
    assert_eq!(seed_batch_size(u64::MAX, 1, 30), u64::MAX.div_ceil(30));
}
