//! The reconciliation diff over 10k and 100k VMs (goal: 100k < 0.5 s,
//! near-linear growth), against a baseline measured in the same run: just
//! indexing the listings by VM id (parse every name, one hash insert each),
//! the least any diff must do.
//!
//! The world: VMs on two clusters, 1 NIC each, ~2% drift spread over every
//! rule (stale, orphans, operstate, NICs, flavor, builds, pending jobs),
//! plus 1% foreign instance names. Inputs are built outside the timing.
//!
//! Peak memory of one diff (heap bytes above what was allocated before it)
//! is measured with a counting global allocator and printed before the
//! criterion runs, with the process's VmHWM for scale.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{TimeDelta, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group};
use synnefo_core::ids::{BackendId, FlavorId, InstanceName, JobId, VmId};
use synnefo_core::model::{Flavor, Nic, Vm};
use synnefo_core::ports::InstanceInfo;
use synnefo_core::reconcile::{
    BackendListing, FlavorSize, Guards, Input, JobObservation, Listing, VmSnapshot, diff,
};
use synnefo_core::state::{Action, OperState, PendingAction, StoredVmState, VmState};

// ---------------------------------------------------------------- allocator

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// A counting wrapper around the system allocator: the only way to see the
// heap high-water mark of one call without external tools.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------- world

const B1: BackendId = BackendId(1);
const B2: BackendId = BackendId(2);
const FLAVOR: FlavorSize = FlavorSize {
    vcpus: 2,
    ram_mib: 2048,
};

/// `FLAVOR`'s id in [`catalogue`] (2 vCPUs, 2 GiB, 20 GiB plain).
const FLAVOR_ID: FlavorId = FlavorId(21);

struct World {
    vms: Vec<VmSnapshot>,
    others: Vec<Vm>,
    listings: Vec<BackendListing>,
    jobs: HashMap<VmId, JobObservation>,
    flavors: Vec<Flavor>,
}

/// A catalogue of the size of a real one: every vCPU/RAM step, two disk
/// sizes, two templates.
fn catalogue() -> Vec<Flavor> {
    let mut out = Vec::new();
    for vcpus in [1, 2, 4, 8] {
        for ram_mib in [1024, 2048, 4096, 8192] {
            for disk_gib in [20, 40] {
                for disk_template in ["plain", "drbd"] {
                    out.push(Flavor {
                        id: FlavorId(out.len() as i64 + 1),
                        name: format!("c{vcpus}r{ram_mib}d{disk_gib}{disk_template}"),
                        vcpus,
                        ram_mib,
                        disk_gib,
                        disk_template: disk_template.into(),
                        is_public: true,
                        deleted: false,
                    });
                }
            }
        }
    }
    out
}

fn nic(id: i64, drift: bool) -> Nic {
    Nic {
        index: 0,
        ip: Some(format!(
            "10.{}.{}.{}",
            u8::from(drift),
            (id >> 8) & 0xff,
            id & 0xff
        )),
        mac: Some(format!(
            "aa:00:{:02x}:{:02x}:{:02x}:{:02x}",
            (id >> 24) & 0xff,
            (id >> 16) & 0xff,
            (id >> 8) & 0xff,
            id & 0xff
        )),
        network: None,
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

fn world(n: usize) -> World {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut vms = Vec::with_capacity(n);
    let mut others = Vec::new();
    let mut b1 = Vec::with_capacity(n / 2 + 16);
    let mut b2 = Vec::with_capacity(n / 2 + 16);
    for k in 0..n {
        let id = k as i64 + 1;
        let backend = if k % 2 == 0 { B1 } else { B2 };
        let drift = k % 50; // 2% of VMs drift, one rule each
        let mut state = StoredVmState::settled(OperState::Started);
        let mut running = true;
        let mut listed = true;
        let mut nic_drift = false;
        let mut vcpus = FLAVOR.vcpus;
        match (k / 50) % 8 {
            _ if drift != 0 => {}
            0 => listed = false,
            1 => running = false,
            2 => nic_drift = true,
            3 => vcpus = 4,
            4 => state.operstate = OperState::Build,
            5 => {
                state.action = Some(PendingAction {
                    action: Action::Stop,
                    job_id: Some(JobId(k as u64)),
                });
                running = false;
            }
            6 => state.deleted = true,
            _ => state.operstate = OperState::Stopped,
        }
        let state = VmState::from_stored(state);
        let vm = Vm {
            id: VmId(id),
            user_id: "u".into(),
            project_id: "p".into(),
            name: format!("vm{id}"),
            flavor_id: FLAVOR_ID,
            image_id: "img".into(),
            backend_id: Some(backend),
            state,
            metadata: BTreeMap::new(),
            created: now - TimeDelta::hours(2),
            updated: now - TimeDelta::hours(2),
            last_reconciled: None,
            version: 1,
        };
        if listed {
            let inst = InstanceInfo {
                name: InstanceName::new("snf-", vm.id).to_string(),
                admin_up: running,
                running,
                status: if running { "running" } else { "ADMIN_down" }.into(),
                vcpus: Some(vcpus),
                ram_mib: Some(FLAVOR.ram_mib),
                nics: vec![nic(id, nic_drift)],
                nic_names: vec![],
                pnode: Some("node1".into()),
                disk_template: Some("drbd".into()),
                tags: vec![],
                mtime: Some(1.0),
            };
            if backend == B1 {
                b1.push(inst)
            } else {
                b2.push(inst)
            }
        }
        if k % 100 == 99 {
            // Foreign tenants of the clusters.
            let mut f = b1.last().cloned().unwrap_or_else(|| panic!("nonempty"));
            f.name = format!("web{k}.example.org");
            b1.push(f);
        }
        if vm.state.deleted() {
            others.push(vm);
        } else {
            vms.push(VmSnapshot {
                vm,
                nics: vec![nic(id, false)],
                flavor: Some(FLAVOR),
            });
        }
    }
    World {
        vms,
        others,
        listings: vec![
            BackendListing {
                backend: B1,
                listing: Listing::Listed(b1),
            },
            BackendListing {
                backend: B2,
                listing: Listing::Listed(b2),
            },
        ],
        jobs: HashMap::new(),
        flavors: {
            let c = catalogue();
            let f = &c[FLAVOR_ID.0 as usize - 1];
            assert_eq!((f.vcpus, f.ram_mib), (FLAVOR.vcpus, FLAVOR.ram_mib));
            c
        },
    }
}

impl World {
    fn input(&self) -> Input<'_> {
        Input {
            prefix: "snf-",
            now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            vms: &self.vms,
            others: &self.others,
            listings: &self.listings,
            jobs: &self.jobs,
            flavors: &self.flavors,
            guards: Guards::default(),
        }
    }
}

/// The baseline: index the listings by VM id.
fn index_only(w: &World) -> usize {
    let mut index: HashMap<VmId, &InstanceInfo> = HashMap::new();
    for l in &w.listings {
        if let Listing::Listed(v) = &l.listing {
            index.reserve(v.len());
            for i in v {
                if let Some(n) = InstanceName::parse("snf-", &i.name) {
                    index.insert(n.vm_id(), i);
                }
            }
        }
    }
    index.len()
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn memory_report() {
    for n in [10_000usize, 100_000] {
        let w = world(n);
        let input = w.input();
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let d = diff(&input);
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let retained = CURRENT.load(Ordering::Relaxed) - before;
        eprintln!(
            "reconcile diff {n} VMs: {} discrepancies, {} held; peak heap during diff {:.1} MiB ({} B/VM), \
             result {:.1} MiB; world itself {:.1} MiB; process VmHWM {} MiB",
            d.discrepancies.len(),
            d.held.len(),
            peak as f64 / 1048576.0,
            peak / n,
            retained as f64 / 1048576.0,
            before as f64 / 1048576.0,
            vm_hwm_kib().map_or("?".into(), |k| (k / 1024).to_string()),
        );
        drop(d);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("reconcile");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let w = world(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("baseline_index_only", n), &w, |b, w| {
            b.iter(|| black_box(index_only(w)))
        });
        g.bench_with_input(BenchmarkId::new("diff", n), &w, |b, w| {
            b.iter(|| {
                let d = diff(black_box(&w.input()));
                black_box(d.discrepancies.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
