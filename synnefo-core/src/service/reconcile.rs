//! Reconciliation runs: fetch, diff, plan, execute.
//!
//! One run ([`Reconciler::run_once`]):
//!
//! 1. **List the clusters first**, each once, all in parallel
//!    ([`GanetiBackend::list_instances`]); clusters flagged offline are
//!    skipped, failures are recorded and the run goes on. Listing *before*
//!    reading the DB is what makes an instance without a row a real orphan:
//!    the API commits a VM's row before it submits the create job.
//! 2. **Read the DB**: all VMs (`--all`, in pages: every VM not DESTROYED,
//!    deleted ones included, and the DESTROYED ones not deleted) or the
//!    staggered batch ([`batch_size`] of the least recently reconciled), their NICs and
//!    flavors, and the rows of every other VM id the listings mention
//!    (deleted ones included), so orphans are found over the full listings.
//! 3. **Diff** ([`diff`]). VMs held back by a job believed in flight get that
//!    job looked up in Ganeti (bounded per run) and are diffed again: a job
//!    that ended or vanished means a lost notification, not a running job.
//! 4. **Plan** ([`plan_fixes`]) with the selected [`FixFlags`]; report-only
//!    by default.
//! 5. **Execute**, infallibly per item: orphans are removed through
//!    [`GanetiBackend::remove`] after re-checking their row; state and NIC
//!    fixes go through [`modify_vm`] (the dispatcher's code path), one write
//!    per VM, and only if the VM is still at the version the diff saw (else
//!    it is left for the next run); flavor and cluster fixes follow in a
//!    second versioned write
//!    ([`VmStore::update_vm_placement`](crate::ports::VmStore::update_vm_placement)). Each item
//!    records its own outcome.
//! 6. **Stamp** the VMs of this run as reconciled at the run's time.
//!
//! [`Reconciler::run_periodically`] is the reconciler task: no input per
//! activation, one run per interval until cancelled; a failed run is logged
//! and the next activation is the retry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{BackendError, ServiceError, StoreError};
use crate::ids::{BackendId, FlavorId, InstanceName, JobId, VmId};
use crate::model::Vm;
use crate::ports::{Clock, GanetiBackend, Store, VmQuery};
use crate::reconcile::{
    BackendListing, DiffStats, Discrepancy, FixAction, FixFlags, FlavorSize, Guard, Guards, Held,
    Input, JobObservation, Listing, OrphanReason, Unchecked, VmSnapshot, apply_db_fixes,
    batch_size, diff, placement_fix, plan_fixes, record_orphan_removal,
};
use crate::service::{VmChange, modify_vm};
use crate::state::OperState;

/// Errors that stop a whole run (per-item failures are in the report).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The DB could not be read.
    #[error("reconciliation could not read the database: {0}")]
    Store(#[from] StoreError),
}

/// Which VMs a run looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Scope {
    /// Every VM (`--all`).
    All,
    /// The seed's staggered batch.
    Staggered {
        /// Minutes between runs (`--interval`).
        interval_min: u64,
        /// `RECONCILIATION_MIN`.
        reconciliation_min: u64,
    },
}

/// How a run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Which VMs.
    pub scope: Scope,
    /// Which fixes to apply.
    pub fix: FixFlags,
    /// Guard thresholds.
    pub guards: Guards,
    /// Most job lookups per run (each is one RAPI call).
    pub max_job_lookups: usize,
    /// RAPI calls and DB writes in flight at once.
    pub concurrency: usize,
    /// VMs per DB page in `--all` mode.
    pub page_size: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            scope: Scope::All,
            fix: FixFlags::NONE,
            guards: Guards::default(),
            max_job_lookups: 256,
            concurrency: 8,
            page_size: 5000,
        }
    }
}

/// A step of a run, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Listing the clusters (units: clusters).
    Listing,
    /// Reading VMs (units: VMs).
    Loading,
    /// Looking up jobs of held VMs (units: jobs).
    Jobs,
    /// Applying fixes (units: actions).
    Fixing,
}

/// Progress of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A phase starts with this many units.
    Phase(Phase, u64),
    /// Units done.
    Advance(u64),
}

/// A progress callback.
pub type ProgressFn = dyn Fn(ProgressEvent) + Send + Sync;

/// What a cluster listing gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum BackendStatus {
    /// Listed.
    Listed {
        /// Instances listed (ours and foreign).
        instances: usize,
    },
    /// Flagged offline; skipped.
    Offline,
    /// The listing failed.
    Unreachable {
        /// Why.
        error: String,
    },
}

/// One cluster in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Id.
    pub id: BackendId,
    /// Name.
    pub name: String,
    /// Listing outcome.
    #[serde(flatten)]
    pub status: BackendStatus,
}

/// How one fix went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum FixResult {
    /// Applied (`job`: the Ganeti job of an orphan removal).
    Done {
        /// The removal job.
        #[serde(skip_serializing_if = "Option::is_none")]
        job: Option<JobId>,
    },
    /// Not applied, on purpose (the VM changed since the diff, ...).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Failed; the next run will see the discrepancy again.
    Failed {
        /// The error.
        error: String,
    },
}

/// A fix and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixOutcome {
    /// Index into [`RunReport::discrepancies`].
    pub discrepancy: usize,
    /// What was done.
    #[serde(flatten)]
    pub action: FixAction,
    /// How it went.
    #[serde(flatten)]
    pub result: FixResult,
}

/// The outcome of a run (the `--json` report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// When the run started (its `now`).
    pub at: DateTime<Utc>,
    /// Which VMs.
    pub scope: Scope,
    /// VMs reconciliation covers: the non-deleted ones, plus (in `--all`
    /// runs) deleted ones not yet DESTROYED that this run read.
    pub total_vms: u64,
    /// VMs this run looked at.
    pub batch: u64,
    /// The fixes selected.
    pub fix: FixFlags,
    /// The clusters.
    pub backends: Vec<BackendReport>,
    /// Counters of the diff.
    pub stats: DiffStats,
    /// What disagrees.
    pub discrepancies: Vec<Discrepancy>,
    /// What a guard held back.
    pub held: Vec<Held>,
    /// VMs not checked.
    pub unchecked: Vec<Unchecked>,
    /// Jobs looked up in Ganeti.
    pub job_lookups: usize,
    /// Fixes tried.
    pub fixes: Vec<FixOutcome>,
    /// Discrepancies with no successful fix (not selected, manual, skipped,
    /// failed), as indexes.
    pub unfixed: Vec<usize>,
    /// Wall time of the run (ms).
    pub duration_ms: u64,
}

impl RunReport {
    /// No discrepancy found.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }

    /// Fixes that failed.
    pub fn failed_fixes(&self) -> usize {
        self.fixes
            .iter()
            .filter(|f| matches!(f.result, FixResult::Failed { .. }))
            .count()
    }

    /// Some cluster could not be listed.
    pub fn incomplete(&self) -> bool {
        self.backends
            .iter()
            .any(|b| matches!(b.status, BackendStatus::Unreachable { .. }))
    }
}

/// The reconciler: what a run needs, held for repeated activations.
#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    ganeti: Arc<dyn GanetiBackend>,
    clock: Arc<dyn Clock>,
    prefix: String,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn noop(_: ProgressEvent) {}

/// Why a fix was skipped: the row moved on since the diff.
const MOVED: &str = "the VM changed since the diff; left for the next run";
/// Why a fix was skipped: the row already says so.
const NOTHING_TO_CHANGE: &str = "nothing to change";

/// How the state-and-NICs write of one VM went.
enum StateWrite {
    /// Written; the stored row.
    Written(Box<Vm>),
    /// The fixes change nothing on the row.
    NothingToChange,
    /// The row changed since the diff.
    Moved,
    /// The VM is gone.
    NotFound(String),
    /// The write failed.
    Failed(String),
}

impl StateWrite {
    fn result(&self) -> FixResult {
        match self {
            StateWrite::Written(_) => FixResult::Done { job: None },
            StateWrite::NothingToChange => FixResult::Skipped {
                reason: NOTHING_TO_CHANGE.into(),
            },
            StateWrite::Moved => FixResult::Skipped {
                reason: MOVED.into(),
            },
            StateWrite::NotFound(m) => FixResult::Skipped { reason: m.clone() },
            StateWrite::Failed(e) => FixResult::Failed { error: e.clone() },
        }
    }
}

/// The results of one VM's two DB writes.
struct VmWriteResults {
    /// Of its state and NIC fixes.
    state: FixResult,
    /// Of its flavor and cluster fixes.
    placement: FixResult,
}

/// An orphan removal's outcome: (fix index, result, job to record on its row).
type Removal = (usize, FixResult, Option<(VmId, JobId)>);

impl Reconciler {
    /// A reconciler over a store, the clusters and a clock, for instance
    /// names `<prefix><vm id>`.
    pub fn new(
        store: Arc<dyn Store>,
        ganeti: Arc<dyn GanetiBackend>,
        clock: Arc<dyn Clock>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            store,
            ganeti,
            clock,
            prefix: prefix.into(),
        }
    }

    /// One run without progress reporting.
    pub async fn run(&self, opts: &RunOptions) -> Result<RunReport, ReconcileError> {
        self.run_once(opts, &noop).await
    }

    /// One run; see the [module docs](self).
    pub async fn run_once(
        &self,
        opts: &RunOptions,
        progress: &ProgressFn,
    ) -> Result<RunReport, ReconcileError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();

        // 1. The clusters, before the DB.
        let backends = self.store.list_backends().await?;
        progress(ProgressEvent::Phase(Phase::Listing, backends.len() as u64));
        let listings: Vec<BackendListing> = futures::future::join_all(backends.iter().map(|b| async move {
            let listing = if b.offline {
                Listing::Offline
            } else {
                match self.ganeti.list_instances(b.id).await {
                    Ok(v) => Listing::Listed(v),
                    Err(e) => {
                        tracing::warn!(backend = %b.name, error = %e, "reconcile: cluster listing failed");
                        Listing::Unreachable(e.to_string())
                    }
                }
            };
            progress(ProgressEvent::Advance(1));
            BackendListing { backend: b.id, listing }
        }))
        .await;
        let backend_reports = backends
            .iter()
            .zip(&listings)
            .map(|(b, l)| BackendReport {
                id: b.id,
                name: b.name.clone(),
                status: match &l.listing {
                    Listing::Listed(v) => BackendStatus::Listed { instances: v.len() },
                    Listing::Offline => BackendStatus::Offline,
                    Listing::Unreachable(e) => BackendStatus::Unreachable { error: e.clone() },
                },
            })
            .collect();

        // 2. The DB.
        let total_vms = self.store.count_vms().await?;
        let vms = self.load_vms(opts, total_vms, progress).await?;
        let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
        let total_vms = total_vms.max(ids.len() as u64);
        let mut nics = self.store.nics_of(&ids).await?;
        let catalogue = self.store.list_flavors().await?;
        let flavors: HashMap<FlavorId, FlavorSize> = catalogue
            .iter()
            .map(|f| {
                (
                    f.id,
                    FlavorSize {
                        vcpus: f.vcpus,
                        ram_mib: f.ram_mib,
                    },
                )
            })
            .collect();
        let snapshots: Vec<VmSnapshot> = vms
            .into_iter()
            .map(|vm| VmSnapshot {
                nics: nics.remove(&vm.id).unwrap_or_default(),
                flavor: flavors.get(&vm.flavor_id).copied(),
                vm,
            })
            .collect();
        let considered: HashSet<VmId> = ids.iter().copied().collect();
        let mut mentioned: Vec<VmId> = listings
            .iter()
            .filter_map(|l| match &l.listing {
                Listing::Listed(v) => Some(v),
                _ => None,
            })
            .flatten()
            .filter_map(|i| InstanceName::parse(&self.prefix, &i.name).map(|n| n.vm_id()))
            .filter(|id| !considered.contains(id))
            .collect();
        mentioned.sort_unstable();
        mentioned.dedup();
        let others = if mentioned.is_empty() {
            Vec::new()
        } else {
            self.store.vms(&mentioned).await?
        };

        // 3. Diff; look up the jobs of held VMs; diff again.
        let no_jobs: HashMap<VmId, JobObservation> = HashMap::new();
        let mut input = Input {
            prefix: &self.prefix,
            now,
            vms: &snapshots,
            others: &others,
            listings: &listings,
            jobs: &no_jobs,
            flavors: &catalogue,
            guards: opts.guards,
        };
        let mut found = diff(&input);
        let mut observed: HashMap<VmId, JobObservation> = HashMap::new();
        let job_lookups = self
            .lookup_jobs(
                opts,
                &found.held,
                &snapshots,
                &others,
                &mut observed,
                progress,
            )
            .await;
        if !observed.is_empty() {
            input.jobs = &observed;
            found = diff(&input);
        }

        // 4. Plan, 5. execute.
        let plan = plan_fixes(&found.discrepancies, opts.fix);
        let versions: HashMap<VmId, i64> = snapshots
            .iter()
            .map(|s| (s.vm.id, s.vm.version))
            .chain(others.iter().map(|v| (v.id, v.version)))
            .collect();
        let fixes = self
            .execute(opts, &plan.fixes, &found.discrepancies, &versions, progress)
            .await;
        let fixed: HashSet<usize> = fixes
            .iter()
            .filter(|f| matches!(f.result, FixResult::Done { .. }))
            .map(|f| f.discrepancy)
            .collect();
        let failed: HashSet<usize> = fixes
            .iter()
            .filter(|f| !matches!(f.result, FixResult::Done { .. }))
            .map(|f| f.discrepancy)
            .collect();
        let unfixed = (0..found.discrepancies.len())
            .filter(|i| !fixed.contains(i) || failed.contains(i))
            .collect();

        // 6. Stamp.
        if !ids.is_empty() {
            self.store.mark_reconciled(&ids, now).await?;
        }
        Ok(RunReport {
            at: now,
            scope: opts.scope,
            total_vms,
            batch: ids.len() as u64,
            fix: opts.fix,
            backends: backend_reports,
            stats: found.stats,
            discrepancies: found.discrepancies,
            held: found.held,
            unchecked: found.unchecked,
            job_lookups,
            fixes,
            unfixed,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn load_vms(
        &self,
        opts: &RunOptions,
        total: u64,
        progress: &ProgressFn,
    ) -> Result<Vec<Vm>, StoreError> {
        match opts.scope {
            Scope::Staggered {
                interval_min,
                reconciliation_min,
            } => {
                let k = batch_size(total, interval_min, reconciliation_min);
                progress(ProgressEvent::Phase(Phase::Loading, k));
                let vms = if k == 0 {
                    Vec::new()
                } else {
                    self.store.least_recently_reconciled(k).await?
                };
                progress(ProgressEvent::Advance(vms.len() as u64));
                Ok(vms)
            }
            Scope::All => {
                progress(ProgressEvent::Phase(Phase::Loading, total));
                let mut out: Vec<Vm> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
                // Every VM that is not DESTROYED, deleted ones included (a
                // deleted VM whose removal never counted is checked for R1),
                // then the live ones that are DESTROYED; never the deleted
                // and DESTROYED rows, the whole history.
                let not_destroyed = VmQuery {
                    include_deleted: true,
                    operstates: Some(
                        OperState::ALL
                            .into_iter()
                            .filter(|o| *o != OperState::Destroyed)
                            .collect(),
                    ),
                    ..VmQuery::default()
                };
                let live_destroyed = VmQuery {
                    operstates: Some(vec![OperState::Destroyed]),
                    ..VmQuery::default()
                };
                let page = opts.page_size.max(1);
                for query in [not_destroyed, live_destroyed] {
                    let mut marker = None;
                    loop {
                        let q = VmQuery {
                            marker,
                            limit: Some(page),
                            ..query.clone()
                        };
                        let batch = self.store.list_vms(&q).await?;
                        let n = batch.len() as u64;
                        progress(ProgressEvent::Advance(n));
                        marker = batch.last().map(|v| v.id);
                        out.extend(batch);
                        if n < page {
                            break;
                        }
                    }
                }
                out.sort_unstable_by_key(|v| v.id);
                Ok(out)
            }
        }
    }

    /// Looks up the jobs that hold VMs back; returns how many were asked.
    async fn lookup_jobs(
        &self,
        opts: &RunOptions,
        held: &[Held],
        snapshots: &[VmSnapshot],
        others: &[Vm],
        jobs: &mut HashMap<VmId, JobObservation>,
        progress: &ProgressFn,
    ) -> usize {
        let backend_of: HashMap<VmId, Option<BackendId>> = snapshots
            .iter()
            .map(|s| &s.vm)
            .chain(others)
            .map(|v| (v.id, v.backend_id))
            .collect();
        let mut wanted: BTreeMap<VmId, (BackendId, JobId)> = BTreeMap::new();
        for h in held {
            let job = match h.guard {
                Guard::JobInFlight { job }
                | Guard::CreatePending { job }
                | Guard::DestroyPending { job } => job,
                Guard::TooYoung | Guard::ClusterUnreachable => None,
            };
            if let (Some(job), Some(Some(backend))) = (job, backend_of.get(&h.vm)) {
                wanted.insert(h.vm, (*backend, job));
            }
        }
        let asked: Vec<(VmId, (BackendId, JobId))> =
            wanted.into_iter().take(opts.max_job_lookups).collect();
        if asked.is_empty() {
            return 0;
        }
        progress(ProgressEvent::Phase(Phase::Jobs, asked.len() as u64));
        let n = asked.len();
        let results: Vec<(VmId, Option<JobObservation>)> = futures::stream::iter(asked)
            .map(|(vm, (backend, job))| async move {
                let obs = match self.ganeti.job_status(backend, job).await {
                    Ok(info) => Some(JobObservation::Found(info)),
                    Err(BackendError::NotFound(_)) => Some(JobObservation::Missing(job)),
                    Err(e) => {
                        tracing::warn!(%vm, %job, error = %e, "reconcile: job lookup failed; VM stays held");
                        None
                    }
                };
                progress(ProgressEvent::Advance(1));
                (vm, obs)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        jobs.extend(results.into_iter().filter_map(|(vm, o)| o.map(|o| (vm, o))));
        n
    }

    async fn execute(
        &self,
        opts: &RunOptions,
        fixes: &[crate::reconcile::PlannedFix],
        discrepancies: &[Discrepancy],
        versions: &HashMap<VmId, i64>,
        progress: &ProgressFn,
    ) -> Vec<FixOutcome> {
        if fixes.is_empty() {
            return Vec::new();
        }
        progress(ProgressEvent::Phase(Phase::Fixing, fixes.len() as u64));
        let mut outcomes: Vec<Option<FixResult>> = vec![None; fixes.len()];

        // Orphans first: their re-check compares the row with the diff's.
        let orphan_fixes: Vec<usize> = (0..fixes.len())
            .filter(|&i| !fixes[i].action.is_db())
            .collect();
        let removals: Vec<Removal> = futures::stream::iter(orphan_fixes)
            .map(|i| async move {
                let (result, record) = self
                    .remove_orphan(
                        &fixes[i].action,
                        &discrepancies[fixes[i].discrepancy],
                        versions,
                    )
                    .await;
                progress(ProgressEvent::Advance(1));
                (i, result, record)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut removal_jobs: HashMap<VmId, JobId> = HashMap::new();
        for (i, result, record) in removals {
            outcomes[i] = Some(result);
            if let Some((vm, job)) = record {
                removal_jobs.insert(vm, job);
            }
        }

        // DB fixes: one modify_vm per VM.
        let mut by_vm: BTreeMap<VmId, Vec<usize>> = BTreeMap::new();
        for (i, f) in fixes.iter().enumerate() {
            if f.action.is_db() {
                by_vm.entry(f.action.vm()).or_default().push(i);
            }
        }
        for vm in removal_jobs.keys() {
            by_vm.entry(*vm).or_default();
        }
        let removal_jobs = &removal_jobs;
        let writes: Vec<(Vec<usize>, VmWriteResults)> = futures::stream::iter(by_vm)
            .map(|(vm, members)| async move {
                let actions: Vec<&FixAction> = members.iter().map(|&i| &fixes[i].action).collect();
                let result = self
                    .write_fixes(
                        vm,
                        &actions,
                        versions.get(&vm).copied(),
                        removal_jobs.get(&vm).copied(),
                    )
                    .await;
                progress(ProgressEvent::Advance(members.len() as u64));
                (members, result)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        for (members, results) in writes {
            for i in members {
                outcomes[i] = Some(if fixes[i].action.is_placement() {
                    results.placement.clone()
                } else {
                    results.state.clone()
                });
            }
        }

        fixes
            .iter()
            .zip(outcomes)
            .map(|(f, r)| FixOutcome {
                discrepancy: f.discrepancy,
                action: f.action.clone(),
                result: r.unwrap_or(FixResult::Skipped {
                    reason: "not executed".into(),
                }),
            })
            .collect()
    }

    /// Removes one orphan after checking its row is still what the diff saw.
    /// Returns the outcome and, for a deleted row, the job to record on it.
    async fn remove_orphan(
        &self,
        action: &FixAction,
        discrepancy: &Discrepancy,
        versions: &HashMap<VmId, i64>,
    ) -> (FixResult, Option<(VmId, JobId)>) {
        let FixAction::DestroyOrphan {
            vm,
            backend,
            instance,
        } = action
        else {
            return (
                FixResult::Skipped {
                    reason: "not an orphan removal".into(),
                },
                None,
            );
        };
        let row = match self.store.vm(*vm).await {
            Ok(row) => row,
            Err(e) => {
                return (
                    FixResult::Failed {
                        error: e.to_string(),
                    },
                    None,
                );
            }
        };
        let unchanged = match (&row, versions.get(vm)) {
            (None, None) => true,
            (Some(r), Some(v)) => r.version == *v,
            _ => false,
        };
        if !unchanged {
            return (
                FixResult::Skipped {
                    reason: "the VM's row changed since the diff; left for the next run".into(),
                },
                None,
            );
        }
        match self.ganeti.remove(*backend, instance).await {
            Ok(job) => {
                tracing::info!(%vm, %backend, %instance, %job, "reconcile: removing orphan instance");
                let record = match discrepancy {
                    Discrepancy::Orphan {
                        reason: OrphanReason::Deleted | OrphanReason::Destroyed,
                        ..
                    } if row.is_some() => Some((*vm, job)),
                    _ => None,
                };
                (FixResult::Done { job: Some(job) }, record)
            }
            Err(e) => (
                FixResult::Failed {
                    error: e.to_string(),
                },
                None,
            ),
        }
    }

    /// Writes one VM's DB fixes: its state and NIC fixes (and a removal job
    /// to record) in one `modify_vm`, only if the VM is still at `expected`
    /// version; then its flavor and cluster fixes, only if nobody wrote in
    /// between. Each write has its own result. If the process dies between
    /// the two, the next run finds the placement finding again.
    async fn write_fixes(
        &self,
        vm: VmId,
        actions: &[&FixAction],
        expected: Option<i64>,
        removal: Option<JobId>,
    ) -> VmWriteResults {
        let state_write = self.write_state_fixes(vm, actions, expected, removal).await;
        let state = state_write.result();
        if !actions.iter().any(|a| a.is_placement()) {
            return VmWriteResults {
                placement: state.clone(),
                state,
            };
        }
        let base = match state_write {
            StateWrite::Written(row) => *row,
            StateWrite::NothingToChange => match self.store.vm(vm).await {
                Ok(Some(row)) if Some(row.version) == expected => row,
                Ok(Some(_)) => {
                    return VmWriteResults {
                        state,
                        placement: FixResult::Skipped {
                            reason: MOVED.into(),
                        },
                    };
                }
                Ok(None) => {
                    return VmWriteResults {
                        state,
                        placement: FixResult::Skipped {
                            reason: format!("server {vm} not found"),
                        },
                    };
                }
                Err(e) => {
                    return VmWriteResults {
                        state,
                        placement: FixResult::Failed {
                            error: e.to_string(),
                        },
                    };
                }
            },
            // The row moved on, is gone or cannot be written: same for both.
            StateWrite::Moved | StateWrite::NotFound(_) | StateWrite::Failed(_) => {
                return VmWriteResults {
                    placement: state.clone(),
                    state,
                };
            }
        };
        let placement = match placement_fix(&base, actions.iter().copied()) {
            None => FixResult::Skipped {
                reason: NOTHING_TO_CHANGE.into(),
            },
            Some(p) => match self.store.update_vm_placement(vm, base.version, &p).await {
                Ok(_) => FixResult::Done { job: None },
                Err(StoreError::Conflict(_)) => FixResult::Skipped {
                    reason: MOVED.into(),
                },
                Err(StoreError::NotFound(m)) => FixResult::Skipped { reason: m },
                Err(e) => FixResult::Failed {
                    error: e.to_string(),
                },
            },
        };
        VmWriteResults { state, placement }
    }

    /// State and NIC fixes (and a removal job to record) in one `modify_vm`.
    async fn write_state_fixes(
        &self,
        vm: VmId,
        actions: &[&FixAction],
        expected: Option<i64>,
        removal: Option<JobId>,
    ) -> StateWrite {
        let moved = AtomicBool::new(false);
        let result = modify_vm(&*self.store, vm, |current| {
            if Some(current.version) != expected {
                moved.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            let change = apply_db_fixes(current, actions.iter().copied());
            Ok(match removal {
                None => change,
                Some(job) => {
                    let (state, nics) = match change {
                        Some(c) => (c.state, c.nics),
                        None => (current.state.clone(), None),
                    };
                    let state = record_orphan_removal(&state, job);
                    (state != current.state || nics.is_some()).then_some(VmChange {
                        state,
                        nics,
                        resize: None,
                        action_log: None,
                        image: None,
                    })
                }
            })
        })
        .await;
        match result {
            Ok(Some(stored)) => StateWrite::Written(Box::new(stored)),
            Ok(None) if moved.load(Ordering::Relaxed) => StateWrite::Moved,
            Ok(None) => StateWrite::NothingToChange,
            Err(ServiceError::NotFound(m)) => StateWrite::NotFound(m),
            Err(e) => StateWrite::Failed(e.to_string()),
        }
    }
    /// The reconciler task: a run every `period` until `cancel`; each
    /// report (or error) goes to `on_report`. A failed run is not retried
    /// early: the next activation is the retry.
    pub async fn run_periodically<F>(
        &self,
        opts: RunOptions,
        period: Duration,
        cancel: CancellationToken,
        mut on_report: F,
    ) where
        F: FnMut(Result<RunReport, ReconcileError>) + Send,
    {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // A run in progress finishes (its fixes are not cut in half).
            let report = self.run(&opts).await;
            if let Err(e) = &report {
                tracing::warn!(error = %e, "reconcile: run failed; retrying at the next interval");
            }
            on_report(report);
        }
    }
}
