//! Reconciliation: bring the DB in sync with what Ganeti knows.
//!
//! After a Ganeti or RabbitMQ failure the DB (`D`) and the clusters (`G`)
//! can disagree: a notification was lost, an operator ran `gnt-instance` by
//! hand, an instance was removed behind our back. This module decides *what*
//! disagrees and *what to do about it*, as pure functions over data that the
//! service layer ([`crate::service::reconcile`]) fetched; it does no I/O, so
//! every rule and guard is table-tested and the "fix, then reconcile again is
//! clean" property is property-tested over an in-memory model.
//!
//! * [`diff`]: DB snapshot + bulk listings + job observations -> typed
//!   [`Discrepancy`]s, the candidates a guard [`Held`] back, and the VMs left
//!   [`Unchecked`].
//! * [`plan_fixes`]: discrepancies -> [`FixAction`]s, gated by [`FixFlags`]
//!   (report-only by default).
//! * [`fixed_state`] / [`apply_db_fixes`]: the DB side of a fix as a pure
//!   change of [`VmState`](crate::state::VmState), which the executor writes
//!   through [`crate::service::modify_vm`], the one code path the dispatcher
//!   also uses; [`placement_fix`]: a VM's flavor or cluster as Ganeti
//!   shows them, written with the same optimistic concurrency.
//! * [`batch_size`]: the staggered schedule of the seed.
//! * [`networks`] and [`nics`]: the same for networks (missing, extra,
//!   disconnected from a node group) and for servers' NICs against their
//!   ports and floating IPs, run by `synnefo reconcile --networks`.
//!
//! # Rules
//!
//! `D` = VMs in the DB that are not deleted, and deleted VMs that are not
//! DESTROYED and have no instance (their removal ended but the DB never
//! counted it; checked for R1 only); `G` = instances named
//! `<prefix><vm id>` on the clusters that could be listed. Names that do not
//! parse as ours are other tenants of the cluster and are ignored (counted
//! in [`DiffStats::foreign_ignored`]).
//!
//! | rule | finding | guard (the finding is [`Held`] instead) |
//! |---|---|---|
//! | R1 [`Discrepancy::Stale`] | in D, not in G (a deleted VM: not DESTROYED, not in G) | a job is in flight for the VM (for a deleted VM: its removal, [`Guard::DestroyPending`]); the VM is in BUILD and its create job has not ended (or has no job yet and the VM is younger than [`Guards::stuck_after`]); a cluster failed to list (the instance may live there). Live VMs in ERROR without an instance are not stale: a failed create leaves none. |
//! | R2 [`Discrepancy::Orphan`] | in G, but deleted or unknown in D, or a second copy on a cluster the VM is not recorded on | the VM's removal is still in flight (the user deleted it, the remove job has not ended) |
//! | R3 [`Discrepancy::UnsyncedOperstate`] | G running but D not STARTED, or G stopped but D not BUILD/ERROR/STOPPED | a job is in flight for the VM |
//! | [`Discrepancy::UnsyncedFlavor`] | beparams vcpus/maxmem differ from the flavor (the fix records the flavor they match, if the catalogue has one) | a job is in flight |
//! | [`Discrepancy::UnsyncedNics`] | the NICs' IPs or MACs differ | a job is in flight |
//! | [`Discrepancy::StuckBuild`] | in BUILD, but the create job ended (success or error) and the DB never heard, or the VM has no create job and is older than [`Guards::stuck_after`] | the create job is in flight; no job and younger than the threshold |
//! | [`Discrepancy::WrongBackend`] | the live VM's instance lives on another cluster than recorded (a DESTROYED VM's copies are orphans) | a job is in flight (it went to the recorded cluster); a cluster was not listed (it may hold another copy). Never held, and left to an operator, when the instance is on several other clusters |
//!
//! "A job is in flight" ([`in_flight`]): the VM has a pending user action,
//! or its last recorded job status is not terminal, *unless* a job
//! observation ([`JobObservation`], fetched from Ganeti for exactly those
//! VMs) shows that job ended or that Ganeti no longer knows it (a lost
//! notification). A pending action with no job id yet (the API is between
//! storing the action and recording the submitted job) counts as in flight
//! for [`Guards::stuck_after`] after the VM's last change.
//!
//! Why no age guard on orphans of unknown VMs: the service lists the clusters
//! *before* it reads the DB, and the API commits a VM row before it submits
//! the create job, so every instance in a listing already has its row when
//! the DB is read. An instance with no row is not "a VM created moments
//! ago"; it is somebody else's (or a row that was lost).
//!
//! A VM recorded on a cluster that is offline, unreachable or unknown is not
//! checked at all ([`Unchecked`]); its instances elsewhere are not orphans.

mod diff;
pub mod networks;
pub mod nics;
mod plan;
mod schedule;

pub use crate::state::{StateFix, fixed_state, record_orphan_removal};
pub use diff::{
    BackendListing, Diff, DiffStats, Discrepancy, FlavorSize, Guard, Guards, Held, Input,
    JobObservation, Listing, NicAddr, OrphanReason, Rule, StuckReason, Unchecked, UncheckedReason,
    VmSnapshot, diff, in_flight,
};
pub use plan::{
    FixAction, FixClass, FixFlags, Plan, PlannedFix, apply_db_fixes, placement_fix, plan_fixes,
};
pub use schedule::{batch_size, seed_batch_size};
