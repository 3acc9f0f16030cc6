//! Table tests: every reconciliation rule and every guard, one row each,
//! with the exact findings expected; plus the planner and the state fix.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{Flavor, Nic, Vm};
use synnefo_core::ports::InstanceInfo;
use synnefo_core::reconcile::{
    BackendListing, Diff, Discrepancy, FlavorSize, Guard, Guards, Held, Input, JobObservation,
    Listing, OrphanReason, Rule, StuckReason, Unchecked, UncheckedReason, VmSnapshot, diff,
};
use synnefo_core::state::{
    Action, BackendJob, JobStatus, OpCode, OperState, PendingAction, StoredVmState, VmState,
};
use synnefo_test_support::builders::job_info;

mod cases;
mod planner;

use cases::cases;

pub(crate) const B1: BackendId = BackendId(1);
pub(crate) const B2: BackendId = BackendId(2);
pub(crate) const B3: BackendId = BackendId(3);
pub(crate) const FLAVOR: FlavorSize = FlavorSize {
    vcpus: 2,
    ram_mib: 1024,
};

pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

pub(crate) fn flavor(
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
pub(crate) fn catalogue() -> Vec<Flavor> {
    vec![
        flavor(1, 2, 1024, 20, "plain", false),
        flavor(2, 4, 1024, 20, "plain", false),
        flavor(3, 2, 2048, 20, "plain", true),
        flavor(4, 2, 2048, 20, "plain", false),
        flavor(5, 8, 1024, 40, "plain", false),
        flavor(6, 8, 1024, 20, "drbd", false),
    ]
}

pub(crate) fn state(operstate: OperState) -> VmState {
    let mut s = StoredVmState::settled(operstate);
    // a fixture's DESTROYED is not necessarily deleted: cases set that
    s.deleted = false;
    VmState::from_stored(s)
}

/// Changes a fixture's state field by field (a fixture, not a transition).
pub(crate) fn edit_state(s: &mut VmState, f: impl FnOnce(&mut StoredVmState)) {
    *s = synnefo_test_support::builders::edited(s, f);
}

/// Marks a fixture deleted.
pub(crate) fn set_deleted(s: &mut VmState) {
    *s = synnefo_test_support::builders::marked_deleted(s);
}

pub(crate) fn nic(index: i32, ip: &str, mac: &str) -> Nic {
    Nic {
        index,
        ip: Some(ip.into()),
        mac: Some(mac.into()),
        network: Some("net".into()),
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

pub(crate) fn default_nics(id: i64) -> Vec<Nic> {
    vec![nic(
        0,
        &format!("10.0.0.{id}"),
        &format!("aa:00:00:00:00:{id:02x}"),
    )]
}

/// A VM on B1, an hour old, with the default NIC.
pub(crate) fn vm(id: i64, operstate: OperState) -> VmSnapshot {
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
pub(crate) fn inst(id: i64, running: bool) -> InstanceInfo {
    named(&format!("snf-{id}"), running, default_nics(id))
}

pub(crate) fn named(name: &str, running: bool, nics: Vec<Nic>) -> InstanceInfo {
    InstanceInfo {
        name: name.into(),
        admin_up: running,
        running,
        status: if running { "running" } else { "ADMIN_down" }.into(),
        vcpus: Some(FLAVOR.vcpus),
        ram_mib: Some(FLAVOR.ram_mib),
        nics,
        nic_names: vec![],
        pnode: Some("node1".into()),
        disk_template: Some("plain".into()),
        tags: vec![],
        mtime: None,
    }
}

pub(crate) fn job(id: u64, status: JobStatus, opcode: OpCode) -> JobObservation {
    JobObservation::Found(job_info(id, status, opcode, "disk creation failed"))
}

pub(crate) fn pending(s: &mut VmSnapshot, action: Action, job: Option<u64>) {
    edit_state(&mut s.vm.state, |st| {
        st.action = Some(PendingAction {
            action,
            job_id: job.map(JobId),
        })
    });
}

/// One scenario.
pub(crate) struct World {
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

pub(crate) fn held(vm: i64, rule: Rule, guard: Guard) -> Held {
    Held {
        vm: VmId(vm),
        rule,
        guard,
    }
}

pub(crate) fn stale(vm: i64, operstate: OperState) -> Discrepancy {
    Discrepancy::Stale {
        vm: VmId(vm),
        backend: Some(B1),
        operstate,
    }
}

pub(crate) fn orphan(vm: i64, backend: BackendId, reason: OrphanReason) -> Discrepancy {
    Discrepancy::Orphan {
        vm: VmId(vm),
        backend,
        instance: format!("snf-{vm}"),
        reason,
    }
}

pub(crate) fn unsynced(vm: i64, db: OperState, running: bool, to: OperState) -> Discrepancy {
    Discrepancy::UnsyncedOperstate {
        vm: VmId(vm),
        backend: B1,
        db,
        ganeti_running: running,
        to,
    }
}

pub(crate) fn stuck(vm: i64, reason: StuckReason, job: Option<u64>, to: OperState) -> Discrepancy {
    Discrepancy::StuckBuild {
        vm: VmId(vm),
        backend: Some(B1),
        reason,
        create_job: job.map(JobId),
        message: None,
        to,
    }
}

pub(crate) struct Case {
    name: &'static str,
    world: World,
    found: Vec<Discrepancy>,
    held: Vec<Held>,
}

pub(crate) fn case(
    name: &'static str,
    world: World,
    found: Vec<Discrepancy>,
    held: Vec<Held>,
) -> Case {
    Case {
        name,
        world,
        found,
        held,
    }
}

pub(crate) fn with<F: FnOnce(&mut VmSnapshot)>(mut v: VmSnapshot, f: F) -> VmSnapshot {
    f(&mut v);
    v
}

pub(crate) fn running_job(s: &mut VmSnapshot, id: u64, opcode: OpCode) {
    edit_state(&mut s.vm.state, |st| {
        st.job = Some(BackendJob {
            job_id: Some(JobId(id)),
            opcode,
            status: JobStatus::Running,
            log_msg: None,
            error: None,
        })
    });
}

pub(crate) fn deleted(mut v: Vm) -> Vm {
    set_deleted(&mut v.state);
    v
}

pub(crate) fn young(v: &mut VmSnapshot) {
    v.vm.created = now() - TimeDelta::minutes(1);
    v.vm.updated = now() - TimeDelta::minutes(1);
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
            set_deleted(&mut v.vm.state);
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
