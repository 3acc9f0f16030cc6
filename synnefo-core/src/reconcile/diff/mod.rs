//! The diff: DB snapshot vs. cluster listings, guards applied.
//!
//! One pass over the listings builds an index `vm id -> where its instance
//! is`; one pass over the DB VMs checks each against its instance; one pass
//! over the index finds orphans. Linear in VMs + instances, no per-VM
//! allocation beyond the index entry, so 100k VMs diff well within a
//! reconciliation interval (see `benches/reconcile.rs`).

mod types;

use types::nics_equal;
pub use types::*;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::ids::{BackendId, InstanceName, JobId, VmId};
use crate::model::{Flavor, Vm};
use crate::ports::InstanceInfo;
use crate::state::{Action, JobStatus, OpCode, OperState};

/// What is in flight for a VM, according to its recorded state and, when
/// given, the observation of the job it waits for. `None`: nothing is.
pub fn in_flight(
    vm: &Vm,
    job: Option<&JobObservation>,
    now: DateTime<Utc>,
    guards: Guards,
) -> Option<Option<JobId>> {
    let state = &vm.state;
    let recorded_running = state
        .job()
        .filter(|j| !j.status.is_terminal())
        .and_then(|j| j.job_id);
    let candidate = match state.action() {
        Some(p) => p.job_id.or(recorded_running),
        None => match recorded_running {
            Some(id) => Some(id),
            None => return None,
        },
    };
    match (candidate, job) {
        (Some(id), Some(obs)) if obs.job_id() == id => match obs {
            JobObservation::Found(info) if !info.status.is_terminal() => Some(Some(id)),
            // Ended, or unknown to Ganeti: the notification was lost.
            _ => None,
        },
        (Some(id), _) => Some(Some(id)),
        // Action stored, job not (yet) recorded: the API is submitting it.
        (None, _) if now - vm.updated < guards.stuck_after => Some(None),
        (None, _) => None,
    }
}

/// An ended job's status and error message.
type Ended = (JobStatus, Option<String>);

/// The create job's outcome, if anything tells: `(job, ended, vanished)`.
fn create_outcome(vm: &Vm, job: Option<&JobObservation>) -> (Option<JobId>, Option<Ended>, bool) {
    let state = &vm.state;
    let recorded_create = state.job().filter(|j| j.opcode == OpCode::InstanceCreate);
    let create_job = match state.action() {
        Some(p) if p.action == Action::Create => p.job_id,
        _ => None,
    }
    .or(recorded_create.and_then(|j| j.job_id));
    let mut vanished = false;
    if let (Some(id), Some(obs)) = (create_job, job)
        && obs.job_id() == id
    {
        match obs {
            JobObservation::Found(info) if info.status.is_terminal() => {
                let op = info
                    .ops
                    .iter()
                    .find(|o| o.opcode == OpCode::InstanceCreate.as_str());
                let status = op.map_or(info.status, |o| o.status);
                let status = if status.is_terminal() {
                    status
                } else {
                    info.status
                };
                let msg = (status != JobStatus::Success)
                    .then(|| info.error_message())
                    .flatten();
                return (create_job, Some((status, msg)), false);
            }
            JobObservation::Found(_) => {}
            JobObservation::Missing(_) => vanished = true,
        }
    }
    if let Some(j) = recorded_create.filter(|j| j.status.is_terminal()) {
        return (create_job, Some((j.status, j.message())), false);
    }
    (create_job, None, vanished)
}

/// Where a VM's instance was found: (cluster, instance).
type Found<'a> = (BackendId, &'a InstanceInfo);

enum Occ<'a> {
    One(Found<'a>),
    Many(Vec<Found<'a>>),
}

impl<'a> Occ<'a> {
    fn push(&mut self, f: Found<'a>) {
        match self {
            Occ::One(first) => *self = Occ::Many(vec![*first, f]),
            Occ::Many(v) => v.push(f),
        }
    }
    fn as_slice(&self) -> &[Found<'a>] {
        match self {
            Occ::One(f) => std::slice::from_ref(f),
            Occ::Many(v) => v,
        }
    }
}

/// Compares D and G; see the [module docs](super) for the rules and guards.
pub fn diff(input: &Input<'_>) -> Diff {
    let mut out = Diff::default();
    let guards = input.guards;

    // Index G by VM id.
    let mut listed: HashSet<BackendId> = HashSet::new();
    let mut offline: HashSet<BackendId> = HashSet::new();
    let mut any_unreachable = false;
    let mut index: HashMap<VmId, Occ<'_>> = HashMap::new();
    for bl in input.listings {
        match &bl.listing {
            Listing::Listed(instances) => {
                listed.insert(bl.backend);
                out.stats.instances += instances.len();
                index.reserve(instances.len());
                for inst in instances {
                    let Some(name) = InstanceName::parse(input.prefix, &inst.name) else {
                        out.stats.foreign_ignored += 1;
                        continue;
                    };
                    let f = (bl.backend, inst);
                    match index.get_mut(&name.vm_id()) {
                        Some(occ) => occ.push(f),
                        None => {
                            index.insert(name.vm_id(), Occ::One(f));
                        }
                    }
                }
            }
            Listing::Offline => {
                offline.insert(bl.backend);
            }
            Listing::Unreachable(_) => any_unreachable = true,
        }
    }

    let mut checked: HashSet<VmId> = HashSet::with_capacity(input.vms.len());
    for snap in input.vms {
        let vm = &snap.vm;
        if vm.state.deleted() {
            // Not in D: only its instances matter, as orphans; unless it
            // has none and never became DESTROYED.
            if vm.state.operstate() != OperState::Destroyed && !index.contains_key(&vm.id) {
                check_unremoved(input, vm, &listed, &offline, any_unreachable, &mut out);
            }
            continue;
        }
        checked.insert(vm.id);
        out.stats.vms += 1;
        check_vm(
            input,
            snap,
            &index,
            &listed,
            &offline,
            any_unreachable,
            &mut out,
        );
    }

    // R2 over the full listings.
    let others: HashMap<VmId, &Vm> = input
        .others
        .iter()
        .chain(
            input
                .vms
                .iter()
                .map(|s| &s.vm)
                .filter(|v| v.state.deleted()),
        )
        .map(|v| (v.id, v))
        .collect();
    let mut orphan_ids: Vec<(&VmId, &Occ<'_>)> = index
        .iter()
        .filter(|(id, _)| !checked.contains(id))
        .collect();
    orphan_ids.sort_unstable_by_key(|(id, _)| **id);
    for (id, occ) in orphan_ids {
        let reason = match others.get(id) {
            None => OrphanReason::Unknown,
            Some(vm) if vm.state.deleted() || vm.state.operstate() == OperState::Destroyed => {
                if let Some(job) = in_flight(vm, input.jobs.get(id), input.now, guards) {
                    out.held.push(Held {
                        vm: *id,
                        rule: Rule::Orphan,
                        guard: Guard::DestroyPending { job },
                    });
                    continue;
                }
                if vm.state.deleted() {
                    OrphanReason::Deleted
                } else {
                    OrphanReason::Destroyed
                }
            }
            // In D, checked in its own turn.
            Some(_) => continue,
        };
        for (backend, inst) in occ.as_slice() {
            out.discrepancies.push(Discrepancy::Orphan {
                vm: *id,
                backend: *backend,
                instance: inst.name.clone(),
                reason,
            });
        }
    }
    out
}

fn check_vm(
    input: &Input<'_>,
    snap: &VmSnapshot,
    index: &HashMap<VmId, Occ<'_>>,
    listed: &HashSet<BackendId>,
    offline: &HashSet<BackendId>,
    any_unreachable: bool,
    out: &mut Diff,
) {
    let vm = &snap.vm;
    let job_obs = input.jobs.get(&vm.id);
    let recorded = vm.backend_id;
    if let Some(u) = unchecked(vm, input, listed, offline) {
        out.unchecked.push(u);
        return;
    }
    let occurrences = index.get(&vm.id).map_or(&[][..], Occ::as_slice);
    let flight = in_flight(vm, job_obs, input.now, input.guards);
    let operstate = vm.state.operstate();
    let is_build = operstate == OperState::Build;
    let flight_guard = |job| {
        if is_build {
            Guard::CreatePending { job }
        } else {
            Guard::JobInFlight { job }
        }
    };

    // Pick the instance: on the recorded cluster, else the only other one.
    let on_recorded = occurrences.iter().find(|(b, _)| Some(*b) == recorded);
    let found = match (on_recorded, occurrences.len()) {
        (Some(f), _) => {
            for (b, inst) in occurrences.iter().filter(|(b, _)| Some(*b) != recorded) {
                let d = Discrepancy::Orphan {
                    vm: vm.id,
                    backend: *b,
                    instance: inst.name.clone(),
                    reason: OrphanReason::Duplicate {
                        recorded: recorded.unwrap_or(*b),
                    },
                };
                emit(out, d, flight.map(flight_guard));
            }
            Some(*f)
        }
        (None, 0) => None,
        (None, _) if operstate == OperState::Destroyed => {
            // Not a VM to re-home: every copy is an orphan.
            for (b, inst) in occurrences {
                let d = Discrepancy::Orphan {
                    vm: vm.id,
                    backend: *b,
                    instance: inst.name.clone(),
                    reason: OrphanReason::Destroyed,
                };
                emit(out, d, flight.map(flight_guard));
            }
            return;
        }
        (None, n) => {
            let d = Discrepancy::WrongBackend {
                vm: vm.id,
                recorded,
                found_on: occurrences.iter().map(|(b, _)| *b).collect(),
            };
            if n > 1 {
                // Ambiguous: an operator decides which copy is the VM.
                out.discrepancies.push(d);
                return;
            }
            // A job in flight went to the recorded cluster: moving the
            // record under it would send its lookups elsewhere. A cluster
            // that was not listed may hold another copy, which would make
            // this the ambiguous case.
            let guard = match flight {
                Some(job) if recorded.is_some() => Some(flight_guard(job)),
                _ if any_unreachable || !offline.is_empty() => Some(Guard::ClusterUnreachable),
                _ => None,
            };
            emit(out, d, guard);
            Some(occurrences[0])
        }
    };

    let Some((backend, inst)) = found else {
        // R1 and stuck builds without an instance.
        match operstate {
            OperState::Error => {}
            OperState::Build => {
                let (create_job, outcome, vanished) = create_outcome(vm, job_obs);
                if let Some(job) = flight {
                    out.held.push(Held {
                        vm: vm.id,
                        rule: Rule::StuckBuild,
                        guard: Guard::CreatePending { job },
                    });
                    return;
                }
                match outcome {
                    Some((JobStatus::Success, _)) => stale(out, vm, any_unreachable),
                    Some((_, message)) => out.discrepancies.push(Discrepancy::StuckBuild {
                        vm: vm.id,
                        backend: recorded,
                        reason: StuckReason::CreateFailed,
                        create_job,
                        message,
                        to: OperState::Error,
                    }),
                    None if !vanished && input.now - vm.created < input.guards.stuck_after => {
                        out.held.push(Held {
                            vm: vm.id,
                            rule: Rule::StuckBuild,
                            guard: Guard::TooYoung,
                        })
                    }
                    None => out.discrepancies.push(Discrepancy::StuckBuild {
                        vm: vm.id,
                        backend: recorded,
                        reason: if vanished {
                            StuckReason::JobVanished
                        } else {
                            StuckReason::NoJob
                        },
                        create_job,
                        message: None,
                        to: OperState::Error,
                    }),
                }
            }
            OperState::Destroyed => stale(out, vm, any_unreachable),
            OperState::Started | OperState::Stopped => match flight {
                Some(job) => out.held.push(Held {
                    vm: vm.id,
                    rule: Rule::Stale,
                    guard: Guard::JobInFlight { job },
                }),
                None => stale(out, vm, any_unreachable),
            },
        }
        return;
    };

    if operstate == OperState::Destroyed {
        let d = Discrepancy::Orphan {
            vm: vm.id,
            backend,
            instance: inst.name.clone(),
            reason: OrphanReason::Destroyed,
        };
        emit(out, d, flight.map(flight_guard));
        return;
    }

    let guard = flight.map(flight_guard);
    // Operstate (R3, or a stuck build whose instance exists).
    if is_build {
        if let Some(job) = flight {
            if inst.running {
                out.held.push(Held {
                    vm: vm.id,
                    rule: Rule::UnsyncedOperstate,
                    guard: Guard::CreatePending { job },
                });
            }
            // NICs and beparams are not meaningful before the build settles.
            return;
        } else {
            let (create_job, outcome, vanished) = create_outcome(vm, job_obs);
            let (reason, message) = match outcome {
                Some((JobStatus::Success, _)) => (Some(StuckReason::CreateSucceeded), None),
                Some((_, m)) => (Some(StuckReason::CreateFailed), m),
                None if vanished => (Some(StuckReason::JobVanished), None),
                None if input.now - vm.created >= input.guards.stuck_after => {
                    (Some(StuckReason::NoJob), None)
                }
                None => (None, None),
            };
            match reason {
                None => {
                    out.held.push(Held {
                        vm: vm.id,
                        rule: Rule::StuckBuild,
                        guard: Guard::TooYoung,
                    });
                    // Nothing else is meaningful before the build settles.
                    return;
                }
                Some(reason) => {
                    let to = if inst.running {
                        OperState::Started
                    } else if reason == StuckReason::CreateFailed {
                        OperState::Error
                    } else {
                        OperState::Stopped
                    };
                    out.discrepancies.push(Discrepancy::StuckBuild {
                        vm: vm.id,
                        backend: recorded,
                        reason,
                        create_job,
                        message,
                        to,
                    });
                }
            }
        }
    } else {
        let to = if inst.running && operstate != OperState::Started {
            Some(OperState::Started)
        } else if !inst.running && operstate == OperState::Started {
            Some(OperState::Stopped)
        } else {
            None
        };
        if let Some(to) = to {
            let d = Discrepancy::UnsyncedOperstate {
                vm: vm.id,
                backend,
                db: operstate,
                ganeti_running: inst.running,
                to,
            };
            emit(out, d, guard);
        }
    }

    if let Some(flavor) = snap.flavor {
        let vcpus_differ = inst.vcpus.is_some_and(|v| v != flavor.vcpus);
        let ram_differs = inst.ram_mib.is_some_and(|r| r != flavor.ram_mib);
        if vcpus_differ || ram_differs {
            let d = Discrepancy::UnsyncedFlavor {
                vm: vm.id,
                backend,
                flavor: vm.flavor_id,
                db: flavor,
                ganeti_vcpus: inst.vcpus,
                ganeti_ram_mib: inst.ram_mib,
                matching: Flavor::matching(
                    input.flavors,
                    vm.flavor_id,
                    inst.vcpus.unwrap_or(flavor.vcpus),
                    inst.ram_mib.unwrap_or(flavor.ram_mib),
                ),
            };
            emit(out, d, guard);
        }
    }

    if !nics_equal(&snap.nics, &inst.nics) {
        let db_nics = NicAddr::of(&snap.nics);
        let mut ganeti = inst.nics.clone();
        ganeti.sort_by_key(|n| n.index);
        let d = Discrepancy::UnsyncedNics {
            vm: vm.id,
            backend,
            db: db_nics,
            ganeti,
        };
        emit(out, d, guard);
    }
}

/// Why `vm` cannot be checked in this run, if it cannot: its recorded
/// cluster was not listed (offline, unreachable or unknown), or it has no
/// recorded cluster and not a single cluster answered.
fn unchecked(
    vm: &Vm,
    input: &Input<'_>,
    listed: &HashSet<BackendId>,
    offline: &HashSet<BackendId>,
) -> Option<Unchecked> {
    match vm.backend_id {
        Some(b) if !listed.contains(&b) => Some(Unchecked {
            vm: vm.id,
            backend: Some(b),
            reason: if offline.contains(&b) {
                UncheckedReason::BackendOffline
            } else if input.listings.iter().any(|l| l.backend == b) {
                UncheckedReason::BackendUnreachable
            } else {
                UncheckedReason::BackendUnknown
            },
        }),
        None if listed.is_empty() => Some(Unchecked {
            vm: vm.id,
            backend: None,
            reason: UncheckedReason::BackendUnknown,
        }),
        _ => None,
    }
}

/// A deleted VM that is not DESTROYED and whose instance no cluster lists:
/// its removal ended without the DB hearing that the instance is gone (a
/// lost notification, or a removal of an instance Ganeti did not have,
/// recorded as a failure before that counted as a removal). R1, unless its
/// removal is still in flight ([`Guard::DestroyPending`]).
fn check_unremoved(
    input: &Input<'_>,
    vm: &Vm,
    listed: &HashSet<BackendId>,
    offline: &HashSet<BackendId>,
    any_unreachable: bool,
    out: &mut Diff,
) {
    out.stats.vms += 1;
    if let Some(u) = unchecked(vm, input, listed, offline) {
        out.unchecked.push(u);
        return;
    }
    match in_flight(vm, input.jobs.get(&vm.id), input.now, input.guards) {
        Some(job) => out.held.push(Held {
            vm: vm.id,
            rule: Rule::Stale,
            guard: Guard::DestroyPending { job },
        }),
        None => stale(out, vm, any_unreachable),
    }
}

fn stale(out: &mut Diff, vm: &Vm, any_unreachable: bool) {
    if any_unreachable {
        out.held.push(Held {
            vm: vm.id,
            rule: Rule::Stale,
            guard: Guard::ClusterUnreachable,
        });
    } else {
        out.discrepancies.push(Discrepancy::Stale {
            vm: vm.id,
            backend: vm.backend_id,
            operstate: vm.state.operstate(),
        });
    }
}

fn emit(out: &mut Diff, d: Discrepancy, guard: Option<Guard>) {
    match guard {
        Some(guard) => out.held.push(Held {
            vm: d.vm(),
            rule: d.rule(),
            guard,
        }),
        None => out.discrepancies.push(d),
    }
}
