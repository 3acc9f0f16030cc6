//! The diff's inputs (snapshots, listings, guards) and outputs
//! (discrepancies, held and unchecked VMs, counters).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BackendId, FlavorId, JobId, VmId};
use crate::model::{Flavor, Nic, Vm};
use crate::ports::{InstanceInfo, JobInfo};
use crate::state::OperState;

/// What the DB knows about one VM that reconciliation checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSnapshot {
    /// The VM row.
    pub vm: Vm,
    /// Its NICs as stored.
    pub nics: Vec<Nic>,
    /// Its flavor's size, if the flavor is known.
    pub flavor: Option<FlavorSize>,
}

/// The part of a flavor Ganeti's beparams mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlavorSize {
    /// vCPUs.
    pub vcpus: i32,
    /// RAM (MiB), Ganeti's `maxmem`.
    pub ram_mib: i32,
}

/// One cluster's bulk listing, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    /// `GET /2/instances?bulk=1` answered.
    Listed(Vec<InstanceInfo>),
    /// Flagged offline by the operator; not asked.
    Offline,
    /// Asked, but the listing failed.
    Unreachable(String),
}

/// A cluster and its listing.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendListing {
    /// The cluster.
    pub backend: BackendId,
    /// What it listed.
    pub listing: Listing,
}

/// What Ganeti says about the job a VM is waiting for.
#[derive(Debug, Clone, PartialEq)]
pub enum JobObservation {
    /// The job as Ganeti reports it now.
    Found(JobInfo),
    /// Ganeti does not know this job (archived, or never submitted).
    Missing(JobId),
}

impl JobObservation {
    pub(super) fn job_id(&self) -> JobId {
        match self {
            JobObservation::Found(j) => j.id,
            JobObservation::Missing(id) => *id,
        }
    }
}

/// Thresholds of the time-based guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// How long a pending action may go without a job id, and a VM may stay
    /// in BUILD with no create job, before reconciliation stops waiting.
    pub stuck_after: TimeDelta,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            stuck_after: TimeDelta::minutes(15),
        }
    }
}

/// Everything [`diff`](super::diff) looks at. Borrowed, so a caller with 100k VMs does
/// not copy them.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// `BACKEND_PREFIX_ID`.
    pub prefix: &'a str,
    /// The time of the run (for the age guards).
    pub now: DateTime<Utc>,
    /// The VMs to check (all of them, or this run's staggered batch).
    pub vms: &'a [VmSnapshot],
    /// Every other DB row (deleted ones included) whose id appears in a
    /// listing; used only to tell orphans from VMs checked in another run.
    pub others: &'a [Vm],
    /// Each cluster's listing; a cluster absent here is "unknown".
    pub listings: &'a [BackendListing],
    /// Observations of the jobs some VMs wait for, by VM.
    pub jobs: &'a HashMap<VmId, JobObservation>,
    /// The flavor catalogue, deleted flavors included: where an instance's
    /// beparams differ from its VM's flavor, the flavor they do match.
    pub flavors: &'a [Flavor],
    /// Time-based guard thresholds.
    pub guards: Guards,
}

/// A NIC's identity as compared by reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAddr {
    /// IP address.
    pub ip: Option<String>,
    /// MAC address (lower case).
    pub mac: Option<String>,
}

/// Same IPs and MACs in index order, without allocating in the common
/// (already ordered) case.
pub(super) fn nics_equal(a: &[Nic], b: &[Nic]) -> bool {
    fn ordered(v: &[Nic]) -> std::borrow::Cow<'_, [Nic]> {
        if v.windows(2).all(|w| w[0].index <= w[1].index) {
            std::borrow::Cow::Borrowed(v)
        } else {
            let mut o = v.to_vec();
            o.sort_by_key(|n| n.index);
            std::borrow::Cow::Owned(o)
        }
    }
    fn opt(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    if a.len() != b.len() {
        return false;
    }
    let (a, b) = (ordered(a), ordered(b));
    a.iter().zip(b.iter()).all(|(x, y)| {
        opt(&x.ip) == opt(&y.ip)
            && match (opt(&x.mac), opt(&y.mac)) {
                (Some(m), Some(n)) => m.eq_ignore_ascii_case(n),
                (m, n) => m == n,
            }
    })
}

impl NicAddr {
    pub(super) fn of(nics: &[Nic]) -> Vec<NicAddr> {
        let mut sorted: Vec<&Nic> = nics.iter().collect();
        sorted.sort_by_key(|n| n.index);
        sorted
            .into_iter()
            .map(|n| NicAddr {
                ip: n.ip.clone().filter(|s| !s.is_empty()),
                mac: n
                    .mac
                    .as_ref()
                    .map(|m| m.to_ascii_lowercase())
                    .filter(|s| !s.is_empty()),
            })
            .collect()
    }
}

/// Why an instance is an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum OrphanReason {
    /// No VM with that id in the DB.
    Unknown,
    /// The VM is deleted in the DB.
    Deleted,
    /// The VM is DESTROYED (but not marked deleted) in the DB.
    Destroyed,
    /// A second copy: the VM lives on `recorded` and its instance is there too.
    Duplicate {
        /// Where the DB says the VM lives.
        recorded: BackendId,
    },
}

/// Why a VM is stuck in BUILD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckReason {
    /// The create job succeeded; the DB never heard.
    CreateSucceeded,
    /// The create job failed or was canceled; the DB never heard.
    CreateFailed,
    /// No create job was ever recorded and the VM is old.
    NoJob,
    /// Ganeti no longer knows the recorded create job.
    JobVanished,
}

/// One disagreement between D and G.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Discrepancy {
    /// R1: in D, not in G.
    Stale {
        /// The VM.
        vm: VmId,
        /// Its recorded cluster.
        backend: Option<BackendId>,
        /// Its operstate in D.
        operstate: OperState,
    },
    /// R2: in G, but deleted, unknown or duplicated in D.
    Orphan {
        /// The VM id the name parses to.
        vm: VmId,
        /// The cluster the instance is on.
        backend: BackendId,
        /// The instance name.
        instance: String,
        /// Why it is an orphan.
        #[serde(flatten)]
        reason: OrphanReason,
    },
    /// R3: running/stopped in G disagrees with the operstate in D.
    UnsyncedOperstate {
        /// The VM.
        vm: VmId,
        /// The cluster the instance is on.
        backend: BackendId,
        /// Operstate in D.
        db: OperState,
        /// Whether Ganeti runs it.
        ganeti_running: bool,
        /// The operstate Ganeti implies.
        to: OperState,
    },
    /// The instance's beparams differ from the VM's flavor.
    UnsyncedFlavor {
        /// The VM.
        vm: VmId,
        /// The cluster the instance is on.
        backend: BackendId,
        /// The recorded flavor.
        flavor: FlavorId,
        /// The flavor's size.
        db: FlavorSize,
        /// Ganeti's vcpus.
        ganeti_vcpus: Option<i32>,
        /// Ganeti's maxmem (MiB).
        ganeti_ram_mib: Option<i32>,
        /// The flavor with Ganeti's vcpus and RAM and the recorded flavor's
        /// disk and disk template (the fix records it); `None` if the
        /// catalogue has none, which leaves the finding to an operator.
        matching: Option<FlavorId>,
    },
    /// The NICs' IPs or MACs differ.
    UnsyncedNics {
        /// The VM.
        vm: VmId,
        /// The cluster the instance is on.
        backend: BackendId,
        /// NICs in D.
        db: Vec<NicAddr>,
        /// NICs in G (what a fix stores).
        ganeti: Vec<Nic>,
    },
    /// In BUILD though the create is over (or never happened).
    StuckBuild {
        /// The VM.
        vm: VmId,
        /// Its recorded cluster.
        backend: Option<BackendId>,
        /// Why it is stuck.
        reason: StuckReason,
        /// The create job, if known.
        create_job: Option<JobId>,
        /// Ganeti's error message for a failed create.
        message: Option<String>,
        /// The operstate it should have.
        to: OperState,
    },
    /// The instance lives on another cluster than recorded.
    WrongBackend {
        /// The VM.
        vm: VmId,
        /// The recorded cluster.
        recorded: Option<BackendId>,
        /// Where the instance is (more than one: ambiguous).
        found_on: Vec<BackendId>,
    },
}

/// The rule a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// R1.
    Stale,
    /// R2.
    Orphan,
    /// R3.
    UnsyncedOperstate,
    /// Flavor.
    UnsyncedFlavor,
    /// NICs.
    UnsyncedNics,
    /// Stuck BUILD.
    StuckBuild,
    /// Wrong cluster.
    WrongBackend,
}

impl Rule {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Stale => "stale",
            Rule::Orphan => "orphan",
            Rule::UnsyncedOperstate => "unsynced_operstate",
            Rule::UnsyncedFlavor => "unsynced_flavor",
            Rule::UnsyncedNics => "unsynced_nics",
            Rule::StuckBuild => "stuck_build",
            Rule::WrongBackend => "wrong_backend",
        }
    }
}

impl Discrepancy {
    /// The VM concerned.
    pub fn vm(&self) -> VmId {
        match self {
            Discrepancy::Stale { vm, .. }
            | Discrepancy::Orphan { vm, .. }
            | Discrepancy::UnsyncedOperstate { vm, .. }
            | Discrepancy::UnsyncedFlavor { vm, .. }
            | Discrepancy::UnsyncedNics { vm, .. }
            | Discrepancy::StuckBuild { vm, .. }
            | Discrepancy::WrongBackend { vm, .. } => *vm,
        }
    }

    /// Its rule.
    pub fn rule(&self) -> Rule {
        match self {
            Discrepancy::Stale { .. } => Rule::Stale,
            Discrepancy::Orphan { .. } => Rule::Orphan,
            Discrepancy::UnsyncedOperstate { .. } => Rule::UnsyncedOperstate,
            Discrepancy::UnsyncedFlavor { .. } => Rule::UnsyncedFlavor,
            Discrepancy::UnsyncedNics { .. } => Rule::UnsyncedNics,
            Discrepancy::StuckBuild { .. } => Rule::StuckBuild,
            Discrepancy::WrongBackend { .. } => Rule::WrongBackend,
        }
    }
}

/// Why a finding was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "guard")]
pub enum Guard {
    /// A job for the VM is still running (Ganeti may list the VM before or
    /// after the DB learns the outcome).
    JobInFlight {
        /// The job, if its id is known.
        job: Option<JobId>,
    },
    /// The VM is in BUILD and its create job has not ended.
    CreatePending {
        /// The job, if its id is known.
        job: Option<JobId>,
    },
    /// The VM was deleted and its remove job has not ended.
    DestroyPending {
        /// The job, if its id is known.
        job: Option<JobId>,
    },
    /// In BUILD with no create job, but younger than [`Guards::stuck_after`].
    TooYoung,
    /// A cluster failed to list (or, for a move to another cluster, is
    /// offline); the instance may live there.
    ClusterUnreachable,
}

/// A finding a guard held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The VM.
    pub vm: VmId,
    /// What would have been reported.
    pub rule: Rule,
    /// Why it was not.
    #[serde(flatten)]
    pub guard: Guard,
}

/// Why a VM was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncheckedReason {
    /// Its cluster is flagged offline.
    BackendOffline,
    /// Its cluster did not answer.
    BackendUnreachable,
    /// Its cluster is not among the listed ones.
    BackendUnknown,
}

/// A VM left unchecked this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unchecked {
    /// The VM.
    pub vm: VmId,
    /// Its recorded cluster.
    pub backend: Option<BackendId>,
    /// Why.
    pub reason: UncheckedReason,
}

/// Counters of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiffStats {
    /// DB VMs checked (or left unchecked).
    pub vms: usize,
    /// Instances listed, ours and foreign.
    pub instances: usize,
    /// Instances whose names are not ours.
    pub foreign_ignored: usize,
}

/// The outcome of [`diff`](super::diff).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Diff {
    /// What disagrees.
    pub discrepancies: Vec<Discrepancy>,
    /// What would disagree but a guard says wait.
    pub held: Vec<Held>,
    /// VMs not checked.
    pub unchecked: Vec<Unchecked>,
    /// Counters.
    pub stats: DiffStats,
}
