//! Reconciliation runs against the real `SeaStore` (SQLite) and a scripted
//! in-memory Ganeti, with an injectable clock: the staggered schedule, the
//! fix execution through `modify_vm`, cluster listing (once per run, in
//! parallel, offline skipped, failures reported), job lookups, and the
//! "changed since the diff" guard.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{Flavor, Nic, Vm};
use synnefo_core::ports::{
    BackendStore, CatalogStore, Clock, IdentityStore, InstanceInfo, VmQuery, VmStore,
};
use synnefo_core::reconcile::{
    Discrepancy, FixAction, FixFlags, Guard, OrphanReason, Rule, StuckReason, batch_size,
    seed_batch_size,
};
use synnefo_core::service::reconcile::{BackendStatus, FixResult, Reconciler, RunOptions, Scope};
use synnefo_core::state::{
    Action, BackendJob, JobStatus, OpCode, OperState, PendingAction, StoredVmState, VmState,
};
use synnefo_core::store::SeaStore;

mod fakes;

use fakes::*;

// ---------------------------------------------------------------- fixtures

struct World {
    store: Arc<SeaStore>,
    ganeti: Arc<FakeGaneti>,
    clock: Arc<FakeClock>,
    reconciler: Reconciler,
    flavor: Flavor,
    user: String,
    project: String,
    b1: BackendId,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

async fn world() -> World {
    let store = Arc::new(
        SeaStore::connect("sqlite::memory:", 1)
            .await
            .expect("sqlite"),
    );
    store.migrate().await.expect("migrate");
    let synnefo_test_support::builders::Tenant {
        user,
        project,
        flavor,
    } = synnefo_test_support::builders::tenant_with(
        &*store,
        true,
        synnefo_test_support::builders::flavor_of(1, 512, 5, "plain"),
    )
    .await;
    let b1 = store
        .upsert_backend("cluster1", "g1.example.org", 5080)
        .await
        .unwrap()
        .id;
    let ganeti = Arc::new(FakeGaneti::default());
    let clock = FakeClock::at(t0());
    let reconciler = Reconciler::new(store.clone(), ganeti.clone(), clock.clone(), "snf-");
    World {
        store,
        ganeti,
        clock,
        reconciler,
        flavor,
        user: user.id,
        project: project.id,
        b1,
    }
}

fn nic(vm: i64, ip: &str) -> Nic {
    Nic {
        index: 0,
        ip: Some(ip.into()),
        mac: Some(format!("aa:00:00:00:00:{vm:02x}")),
        network: None,
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

fn instance(vm: VmId, running: bool, ip: &str) -> InstanceInfo {
    InstanceInfo {
        name: format!("snf-{vm}"),
        admin_up: running,
        running,
        status: if running { "running" } else { "ADMIN_down" }.into(),
        vcpus: Some(1),
        ram_mib: Some(512),
        nics: vec![nic(vm.0, ip)],
        nic_names: vec![],
        pnode: None,
        disk_template: Some("plain".into()),
        tags: vec![],
        mtime: None,
    }
}

impl World {
    /// A VM on cluster 1 in `operstate` with one NIC `10.0.0.<id>`.
    async fn vm(&self, operstate: OperState, edit: impl FnOnce(&mut StoredVmState)) -> Vm {
        let mut state = StoredVmState::settled(operstate);
        edit(&mut state);
        synnefo_test_support::builders::stored_vm(
            &*self.store,
            (&self.user, &self.project),
            &self.flavor,
            self.b1,
            VmState::from_stored(state),
            |id| Some(vec![nic(id.0, &format!("10.0.0.{}", id.0))]),
        )
        .await
    }

    async fn get(&self, id: VmId) -> Vm {
        self.store.vm(id).await.unwrap().unwrap()
    }
}

fn all(fix: FixFlags) -> RunOptions {
    RunOptions {
        scope: Scope::All,
        fix,
        ..RunOptions::default()
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn report_then_fix_then_clean() {
    let w = world().await;
    let stale = w.vm(OperState::Started, |_| {}).await;
    let stopped_but_running = w.vm(OperState::Stopped, |_| {}).await;
    let gone = w.vm(OperState::Started, |s| s.deleted = true).await;
    let nics = w.vm(OperState::Started, |_| {}).await;
    let stuck = w
        .vm(OperState::Build, |s| {
            s.action = Some(PendingAction {
                action: Action::Create,
                job_id: Some(JobId(77)),
            })
        })
        .await;
    let vanished = w
        .vm(OperState::Build, |s| {
            s.action = Some(PendingAction {
                action: Action::Create,
                job_id: Some(JobId(78)),
            })
        })
        .await;
    let busy = w
        .vm(OperState::Started, |s| {
            s.action = Some(PendingAction {
                action: Action::Stop,
                job_id: Some(JobId(88)),
            })
        })
        .await;
    let fine = w.vm(OperState::Started, |_| {}).await;

    let g = &w.ganeti;
    g.put(
        w.b1,
        instance(
            stopped_but_running.id,
            true,
            &format!("10.0.0.{}", stopped_but_running.id),
        ),
    );
    g.put(w.b1, instance(gone.id, true, "10.0.0.250"));
    g.put(w.b1, instance(VmId(999), true, "10.0.9.9"));
    g.put(w.b1, instance(nics.id, true, "10.9.9.9"));
    g.put(
        w.b1,
        instance(busy.id, false, &format!("10.0.0.{}", busy.id)),
    );
    g.put(
        w.b1,
        instance(fine.id, true, &format!("10.0.0.{}", fine.id)),
    );
    let mut foreign = instance(VmId(1), true, "192.0.2.1");
    foreign.name = "mail.example.org".into();
    g.put(w.b1, foreign);
    g.job(77, JobStatus::Error, OpCode::InstanceCreate);
    g.job(88, JobStatus::Running, OpCode::InstanceShutdown);

    // Report only.
    let before: Vec<Vm> = w.store.list_vms(&VmQuery::default()).await.unwrap();
    let report = w.reconciler.run(&all(FixFlags::NONE)).await.unwrap();
    let mut kinds: Vec<(Rule, VmId)> = report
        .discrepancies
        .iter()
        .map(|d| (d.rule(), d.vm()))
        .collect();
    kinds.sort();
    let mut want = vec![
        (Rule::Stale, stale.id),
        (Rule::UnsyncedOperstate, stopped_but_running.id),
        (Rule::Orphan, gone.id),
        (Rule::Orphan, VmId(999)),
        (Rule::UnsyncedNics, nics.id),
        (Rule::StuckBuild, stuck.id),
        (Rule::StuckBuild, vanished.id),
    ];
    want.sort();
    assert_eq!(kinds, want, "{:#?}", report.discrepancies);
    assert!(report.discrepancies.contains(&Discrepancy::StuckBuild {
        vm: stuck.id,
        backend: Some(w.b1),
        reason: StuckReason::CreateFailed,
        create_job: Some(JobId(77)),
        message: Some("OpExecError: no space left".into()),
        to: OperState::Error,
    }));
    assert!(report.discrepancies.iter().any(|d| matches!(d,
        Discrepancy::StuckBuild { vm, reason: StuckReason::JobVanished, .. } if *vm == vanished.id)));
    assert_eq!(
        report
            .held
            .iter()
            .map(|h| (h.vm, h.rule, h.guard))
            .collect::<Vec<_>>(),
        vec![(
            busy.id,
            Rule::UnsyncedOperstate,
            Guard::JobInFlight {
                job: Some(JobId(88))
            }
        )]
    );
    assert_eq!(report.job_lookups, 3, "jobs 77, 78, 88 looked up once each");
    assert_eq!(report.stats.foreign_ignored, 1);
    assert_eq!(report.unfixed.len(), report.discrepancies.len());
    assert!(report.fixes.is_empty());
    assert!(
        g.removed.lock().unwrap().is_empty(),
        "report-only removes nothing"
    );
    let after: Vec<Vm> = w.store.list_vms(&VmQuery::default()).await.unwrap();
    let versions = |v: &[Vm]| v.iter().map(|v| (v.id, v.version)).collect::<Vec<_>>();
    assert_eq!(
        versions(&before),
        versions(&after),
        "report-only writes no VM state"
    );
    assert!(
        after.iter().all(|v| v.last_reconciled == Some(t0())),
        "but stamps them"
    );

    // Fix everything.
    w.clock.advance(TimeDelta::minutes(1));
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    assert_eq!(report.discrepancies.len(), 7);
    for f in &report.fixes {
        assert!(matches!(f.result, FixResult::Done { .. }), "{f:?}");
    }
    assert!(report.unfixed.is_empty());
    let mut removed = g.removed.lock().unwrap().clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![(w.b1, format!("snf-{}", gone.id)), (w.b1, "snf-999".into())]
    );

    let s = w.get(stale.id).await;
    assert!(s.state.deleted() && s.state.operstate() == OperState::Destroyed);
    assert_eq!(
        w.get(stopped_but_running.id).await.state.operstate(),
        OperState::Started
    );
    assert_eq!(
        w.store.nics(nics.id).await.unwrap()[0].ip.as_deref(),
        Some("10.9.9.9")
    );
    let s = w.get(stuck.id).await;
    assert_eq!(
        (s.state.operstate(), s.state.action()),
        (OperState::Error, None)
    );
    assert_eq!(w.get(vanished.id).await.state.operstate(), OperState::Error);
    let g_row = w.get(gone.id).await;
    assert!(
        matches!(
            g_row.state.action(),
            Some(PendingAction {
                action: Action::Destroy,
                job_id: Some(JobId(5000 | 5001))
            })
        ),
        "the removal job is recorded on the deleted row: {:?}",
        g_row.state.action()
    );
    assert_eq!(
        w.get(busy.id).await.state.operstate(),
        OperState::Started,
        "held VMs are not touched"
    );

    // Clean: the orphan's removal job still runs, so its row waits.
    w.clock.advance(TimeDelta::minutes(1));
    let report = w.reconciler.run(&all(FixFlags::NONE)).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.discrepancies);
    assert!(
        report.held.iter().any(|h| h.vm == gone.id
            && h.rule == Rule::Stale
            && matches!(h.guard, Guard::DestroyPending { job: Some(_) })),
        "{:#?}",
        report.held
    );
}

/// A deleted VM whose removal ended without the DB counting it (here: rows
/// left deleted but in ERROR by a removal of an instance Ganeti did not
/// have, before such a failure counted as a removal) is found by `--all`
/// and fixed by `--fix-stale`; a deleted VM whose removal job still runs is
/// held, and settles once Ganeti reports that job ended.
#[tokio::test]
async fn deleted_vms_whose_removal_never_counted_are_destroyed() {
    let w = world().await;
    let failed_remove = BackendJob {
        job_id: Some(JobId(40)),
        opcode: OpCode::InstanceRemove,
        status: JobStatus::Error,
        log_msg: Some("OpPrereqError: Instance 'snf-1' not known".into()),
        error: None,
    };
    let zombie = w
        .vm(OperState::Error, |s| {
            s.deleted = true;
            s.job = Some(failed_remove.clone());
        })
        .await;
    let removing = w
        .vm(OperState::Started, |s| {
            s.deleted = true;
            s.action = Some(PendingAction {
                action: Action::Destroy,
                job_id: Some(JobId(41)),
            });
        })
        .await;
    w.ganeti.job(41, JobStatus::Running, OpCode::InstanceRemove);
    let done = w.vm(OperState::Destroyed, |s| s.deleted = true).await;

    let report = w.reconciler.run(&all(FixFlags::NONE)).await.unwrap();
    assert_eq!(
        report.discrepancies,
        vec![Discrepancy::Stale {
            vm: zombie.id,
            backend: Some(w.b1),
            operstate: OperState::Error,
        }]
    );
    assert_eq!(
        report
            .held
            .iter()
            .map(|h| (h.vm, h.rule, h.guard))
            .collect::<Vec<_>>(),
        vec![(
            removing.id,
            Rule::Stale,
            Guard::DestroyPending {
                job: Some(JobId(41))
            }
        )]
    );
    assert_eq!(
        report.stats.vms, 2,
        "the deleted and DESTROYED row is not read"
    );
    let _ = done;

    let report = w
        .reconciler
        .run(&all(FixFlags {
            stale: true,
            ..FixFlags::NONE
        }))
        .await
        .unwrap();
    assert!(report.unfixed.is_empty(), "{report:#?}");
    let z = w.get(zombie.id).await;
    assert!(z.state.deleted() && z.state.operstate() == OperState::Destroyed);
    assert_eq!(
        z.state.job(),
        Some(&failed_remove),
        "the job on record stays"
    );

    // The running removal ends and its notification is lost.
    w.ganeti.job(41, JobStatus::Success, OpCode::InstanceRemove);
    w.clock.advance(TimeDelta::minutes(1));
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    assert_eq!(report.fixes.len(), 1, "{report:#?}");
    let r = w.get(removing.id).await;
    assert!(r.state.deleted() && r.state.operstate() == OperState::Destroyed);
    assert_eq!(r.state.action(), None);
    let report = w.reconciler.run(&all(FixFlags::NONE)).await.unwrap();
    assert!(report.is_clean() && report.held.is_empty(), "{report:#?}");
}

#[tokio::test]
async fn each_cluster_is_listed_once_per_run_in_parallel() {
    let w = world().await;
    let b2 = w
        .store
        .upsert_backend("cluster2", "g2", 5080)
        .await
        .unwrap()
        .id;
    let b3 = w
        .store
        .upsert_backend("cluster3", "g3", 5080)
        .await
        .unwrap()
        .id;
    let b4 = w
        .store
        .upsert_backend("cluster4", "g4", 5080)
        .await
        .unwrap()
        .id;
    w.store
        .set_backend_flags(b3, None, Some(true))
        .await
        .unwrap();
    w.ganeti.unreachable.lock().unwrap().insert(b4);
    *w.ganeti.list_delay.lock().unwrap() = Duration::from_millis(100);
    let vm = w.vm(OperState::Started, |_| {}).await;
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();

    assert_eq!(
        [
            w.ganeti.listed(w.b1),
            w.ganeti.listed(b2),
            w.ganeti.listed(b3),
            w.ganeti.listed(b4)
        ],
        [1, 1, 0, 1]
    );
    assert!(
        w.ganeti.max_in_flight.load(Ordering::SeqCst) >= 2,
        "listings overlap"
    );
    let statuses: Vec<&BackendStatus> = report.backends.iter().map(|b| &b.status).collect();
    assert_eq!(statuses[0], &BackendStatus::Listed { instances: 0 });
    assert_eq!(statuses[2], &BackendStatus::Offline);
    assert!(
        matches!(statuses[3], BackendStatus::Unreachable { error } if error.contains("refused"))
    );
    assert!(report.incomplete());
    // The VM is missing from cluster 1, but cluster 4 did not answer: held.
    assert!(report.discrepancies.is_empty());
    assert_eq!(report.held[0].vm, vm.id);
    assert_eq!(report.held[0].guard, Guard::ClusterUnreachable);
    assert!(!w.get(vm.id).await.state.deleted());
}

#[tokio::test]
async fn a_vm_that_changes_after_the_diff_is_left_for_the_next_run() {
    let w = world().await;
    let moving = w.vm(OperState::Stopped, |_| {}).await;
    w.ganeti.put(
        w.b1,
        instance(moving.id, true, &format!("10.0.0.{}", moving.id)),
    );
    w.ganeti.put(w.b1, instance(VmId(4242), true, "10.4.4.4"));
    // Orphans are removed before DB fixes; the removal renames the VM.
    *w.ganeti.bump_on_remove.lock().unwrap() = Some((w.store.clone(), moving.id));
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    let outcome = report
        .fixes
        .iter()
        .find(|f| matches!(f.action, FixAction::SetOperState { .. }))
        .unwrap();
    assert!(
        matches!(&outcome.result, FixResult::Skipped { reason } if reason.contains("changed since the diff")),
        "{outcome:?}"
    );
    assert_eq!(w.get(moving.id).await.state.operstate(), OperState::Stopped);
    assert_eq!(report.unfixed.len(), 1);
    // The next activation is the retry.
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    assert!(
        report
            .fixes
            .iter()
            .all(|f| matches!(f.result, FixResult::Done { .. }))
    );
    assert_eq!(w.get(moving.id).await.state.operstate(), OperState::Started);
}

#[tokio::test]
async fn orphans_of_live_vms_in_another_batch_are_not_orphans() {
    let w = world().await;
    let mut ids = vec![];
    for _ in 0..10 {
        let v = w.vm(OperState::Started, |_| {}).await;
        w.ganeti
            .put(w.b1, instance(v.id, true, &format!("10.0.0.{}", v.id)));
        ids.push(v.id);
    }
    let opts = RunOptions {
        scope: Scope::Staggered {
            interval_min: 1,
            reconciliation_min: 5,
        },
        fix: FixFlags::ALL,
        ..RunOptions::default()
    };
    let report = w.reconciler.run(&opts).await.unwrap();
    assert_eq!(report.batch, 2);
    assert!(report.is_clean(), "{:?}", report.discrepancies);
    assert!(w.ganeti.removed.lock().unwrap().is_empty());
}

/// Runs the staggered reconciler every `interval` minutes for two windows
/// and checks the per-run count and that no VM waits longer than
/// RECONCILIATION_MIN.
async fn staggered(n: u64, interval: u64, window: u64) {
    let w = world().await;
    for _ in 0..n {
        let v = w.vm(OperState::Started, |_| {}).await;
        w.ganeti
            .put(w.b1, instance(v.id, true, &format!("10.0.0.{}", v.id)));
    }
    let opts = RunOptions {
        scope: Scope::Staggered {
            interval_min: interval,
            reconciliation_min: window,
        },
        ..RunOptions::default()
    };
    let k = batch_size(n, interval, window);
    if window.is_multiple_of(interval) {
        assert_eq!(
            k,
            seed_batch_size(n, interval, window),
            "the seed's formula"
        );
    }
    let mut last: HashMap<VmId, DateTime<Utc>> = HashMap::new();
    let mut minute = 0;
    while minute <= 2 * window {
        let report = w.reconciler.run(&opts).await.unwrap();
        assert_eq!(report.batch, k, "per-run count at minute {minute}");
        assert_eq!(report.total_vms, n);
        assert!(report.is_clean());
        let now = w.clock.now();
        let vms = w.store.list_vms(&VmQuery::default()).await.unwrap();
        let visited: Vec<&Vm> = vms
            .iter()
            .filter(|v| v.last_reconciled == Some(now))
            .collect();
        assert_eq!(visited.len() as u64, k);
        for v in visited {
            if let Some(prev) = last.insert(v.id, now) {
                let gap = (now - prev).num_minutes();
                assert!(
                    gap as u64 <= window,
                    "VM {} waited {gap} min (RECONCILIATION_MIN {window})",
                    v.id
                );
            }
        }
        if minute + interval > window && minute < window {
            // End of the first window: everybody has been visited.
            assert_eq!(
                last.len() as u64,
                n,
                "all VMs visited within the first window"
            );
        }
        w.clock.advance(TimeDelta::minutes(interval as i64));
        minute += interval;
    }
    assert_eq!(last.len() as u64, n);
}

#[tokio::test]
async fn staggered_defaults_visit_every_vm_within_reconciliation_min() {
    // RECONCILIATION_MIN 30, interval 1: ceil(95 / 30) = 4 VMs per run.
    staggered(95, 1, 30).await;
}

#[tokio::test]
async fn staggered_with_a_coarser_interval() {
    // 30 min, every 5 min: ceil(95 * 5 / 30) = 16 per run.
    staggered(95, 5, 30).await;
}

#[tokio::test]
async fn staggered_when_the_interval_does_not_divide_the_window() {
    // 30 min, every 7 min: the seed's 23 would leave a VM waiting 35 min;
    // batch_size takes ceil(95 / 4) = 24.
    assert_eq!(seed_batch_size(95, 7, 30), 23);
    staggered(95, 7, 30).await;
}

#[tokio::test]
async fn orphan_removal_is_held_while_its_job_runs() {
    let w = world().await;
    let gone = w.vm(OperState::Started, |s| s.deleted = true).await;
    w.ganeti.put(w.b1, instance(gone.id, true, "10.0.0.1"));
    // A removal that takes a while: the fake keeps the instance.
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    assert_eq!(report.discrepancies.len(), 1);
    let job = match &report.fixes[0].result {
        FixResult::Done { job: Some(j) } => *j,
        other => panic!("{other:?}"),
    };
    w.ganeti.put(w.b1, instance(gone.id, true, "10.0.0.1"));
    w.ganeti
        .job(job.0, JobStatus::Running, OpCode::InstanceRemove);
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    assert!(
        report.discrepancies.is_empty(),
        "{:?}",
        report.discrepancies
    );
    assert_eq!(
        report.held[0].guard,
        Guard::DestroyPending { job: Some(job) }
    );
    assert_eq!(
        w.ganeti.removed.lock().unwrap().len(),
        1,
        "not removed twice"
    );
    // The job failed and the notification was lost: an orphan again.
    w.ganeti
        .job(job.0, JobStatus::Error, OpCode::InstanceRemove);
    let report = w.reconciler.run(&all(FixFlags::NONE)).await.unwrap();
    assert!(matches!(
        report.discrepancies[..],
        [Discrepancy::Orphan {
            reason: OrphanReason::Deleted,
            ..
        }]
    ));
}

/// Instances resized or moved behind our back: `--fix-unsynced` records the
/// flavor Ganeti runs (when the catalogue has one) and the cluster the
/// instance lives on, together with any state fix of the same VM; an odd
/// size no flavor has stays in the report for an operator.
#[tokio::test]
async fn resized_and_moved_instances_are_recorded() {
    let w = world().await;
    let medium = w
        .store
        .create_flavor(&Flavor {
            id: FlavorId(0),
            name: "medium".into(),
            vcpus: 2,
            ram_mib: 1024,
            disk_gib: w.flavor.disk_gib,
            disk_template: w.flavor.disk_template.clone(),
            is_public: true,
            deleted: false,
        })
        .await
        .unwrap();
    let b2 = w
        .store
        .upsert_backend("cluster2", "g2.example.org", 5080)
        .await
        .unwrap()
        .id;
    let resized = w.vm(OperState::Started, |_| {}).await;
    let moved = w.vm(OperState::Started, |_| {}).await;
    let resized_and_stopped = w.vm(OperState::Started, |_| {}).await;
    let odd = w.vm(OperState::Started, |_| {}).await;
    let at = |vm: &Vm, running: bool, vcpus: i32, ram_mib: i32| {
        let mut i = instance(vm.id, running, &format!("10.0.0.{}", vm.id));
        i.vcpus = Some(vcpus);
        i.ram_mib = Some(ram_mib);
        i
    };
    let g = &w.ganeti;
    g.put(w.b1, at(&resized, true, 2, 1024));
    g.put(b2, at(&moved, true, 1, 512));
    g.put(w.b1, at(&resized_and_stopped, false, 2, 1024));
    g.put(w.b1, at(&odd, true, 3, 512));

    let report = w.reconciler.run(&all(FixFlags::NONE)).await.unwrap();
    let mut kinds: Vec<(Rule, VmId)> = report
        .discrepancies
        .iter()
        .map(|d| (d.rule(), d.vm()))
        .collect();
    kinds.sort();
    let mut want = vec![
        (Rule::UnsyncedFlavor, resized.id),
        (Rule::WrongBackend, moved.id),
        (Rule::UnsyncedOperstate, resized_and_stopped.id),
        (Rule::UnsyncedFlavor, resized_and_stopped.id),
        (Rule::UnsyncedFlavor, odd.id),
    ];
    want.sort();
    assert_eq!(kinds, want, "{:#?}", report.discrepancies);
    assert!(report.discrepancies.iter().any(|d| matches!(d,
        Discrepancy::UnsyncedFlavor { vm, matching: None, .. } if *vm == odd.id)));
    let usage = w.store.usage(&w.project).await.unwrap();
    assert_eq!((usage.vcpus, usage.ram_mib), (4, 2048), "four small VMs");

    w.clock.advance(TimeDelta::minutes(1));
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    let done: Vec<&FixAction> = report
        .fixes
        .iter()
        .filter(|f| matches!(f.result, FixResult::Done { .. }))
        .map(|f| &f.action)
        .collect();
    assert_eq!(done.len(), 4, "{:#?}", report.fixes);
    assert_eq!(report.unfixed.len(), 1, "only the odd size is left");
    assert_eq!(report.discrepancies[report.unfixed[0]].vm(), odd.id);

    let r = w.get(resized.id).await;
    assert_eq!((r.flavor_id, r.backend_id), (medium.id, Some(w.b1)));
    let m = w.get(moved.id).await;
    assert_eq!((m.flavor_id, m.backend_id), (w.flavor.id, Some(b2)));
    let rs = w.get(resized_and_stopped.id).await;
    assert_eq!(
        (rs.flavor_id, rs.state.operstate()),
        (medium.id, OperState::Stopped)
    );
    assert_eq!(w.get(odd.id).await.flavor_id, w.flavor.id);
    let usage = w.store.usage(&w.project).await.unwrap();
    assert_eq!(
        (usage.vcpus, usage.ram_mib),
        (2 + 1 + 2 + 1, 1024 + 512 + 1024 + 512),
        "usage follows the recorded flavors"
    );

    w.clock.advance(TimeDelta::minutes(1));
    let report = w.reconciler.run(&all(FixFlags::ALL)).await.unwrap();
    assert_eq!(
        report
            .discrepancies
            .iter()
            .map(|d| (d.rule(), d.vm()))
            .collect::<Vec<_>>(),
        vec![(Rule::UnsyncedFlavor, odd.id)]
    );
    assert!(report.fixes.is_empty());
}
