//! The application layer: the one code path that changes a VM.
//!
//! The dispatcher (backend notifications), the API (user actions) and the
//! reconciler (fixes) all change VMs through [`modify_vm`]: load, compute the
//! new state with a pure function, write it guarded by the version it was
//! computed from, and on a conflict reload and recompute. Two dispatchers
//! (or a dispatcher and an API process) can therefore race on one VM and
//! neither overwrites the other's work.

pub mod account;
pub mod admin;
pub mod build;
pub mod compute;
pub mod identity;
pub mod network;
pub mod reconcile;

use std::collections::HashMap;

use crate::error::{ServiceError, StoreError};
use crate::ids::VmId;
use crate::messages::Notification;
use crate::model::Quota;
use crate::model::{ActionLog, BeParams, Nic, Vm};
use crate::ports::{VmStateUpdate, VmStore};
use crate::state::{Ignored, Transition, VmState, apply_op_status};

/// How often [`modify_vm`] recomputes after losing a race before giving up.
pub const MAX_CONFLICT_RETRIES: usize = 32;

/// A change computed from the current VM: the new state, and NICs to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmChange {
    /// The new state.
    pub state: VmState,
    /// Replace the NICs with these, if given.
    pub nics: Option<Vec<Nic>>,
    /// New backend parameters to take the flavor from (see
    /// [`VmStateUpdate::resize`]).
    pub resize: Option<BeParams>,
    /// The image the VM has now (see [`VmStateUpdate::image`]).
    pub image: Option<String>,
    /// The instance-action history entry of this write (see
    /// [`VmStateUpdate::action_log`]).
    pub action_log: Option<ActionLog>,
}

/// Loads a VM, computes a change with `f`, and writes it with optimistic
/// concurrency, retrying on conflicts. `f` returning `Ok(None)` means
/// "nothing to do" and writes nothing. Returns the stored VM, if changed.
pub async fn modify_vm<S, F>(store: &S, id: VmId, f: F) -> Result<Option<Vm>, ServiceError>
where
    S: VmStore + ?Sized,
    F: Fn(&Vm) -> Result<Option<VmChange>, ServiceError> + Send + Sync,
{
    modify(store, id, None, f).await
}

/// [`modify_vm`] for a change that may make the project use more (a
/// resize's reservation): written with
/// [`VmStore::update_vm_state_within`], so the project's usage is checked
/// against `quota` in the same transaction; over it, the change is not
/// written and the error is [`StoreError::QuotaExceeded`].
pub async fn modify_vm_within<S, F>(
    store: &S,
    id: VmId,
    quota: Quota,
    f: F,
) -> Result<Option<Vm>, ServiceError>
where
    S: VmStore + ?Sized,
    F: Fn(&Vm) -> Result<Option<VmChange>, ServiceError> + Send + Sync,
{
    modify(store, id, Some(quota), f).await
}

async fn modify<S, F>(
    store: &S,
    id: VmId,
    quota: Option<Quota>,
    f: F,
) -> Result<Option<Vm>, ServiceError>
where
    S: VmStore + ?Sized,
    F: Fn(&Vm) -> Result<Option<VmChange>, ServiceError> + Send + Sync,
{
    for _ in 0..MAX_CONFLICT_RETRIES {
        let vm = store
            .vm(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("server {id} not found")))?;
        let Some(change) = f(&vm)? else {
            return Ok(None);
        };
        let update = VmStateUpdate {
            id,
            expected_version: vm.version,
            state: change.state,
            nics: change.nics,
            resize: change.resize,
            action_log: change.action_log,
            image: change.image,
        };
        let written = match quota {
            Some(quota) => store.update_vm_state_within(&update, quota).await,
            None => store.update_vm_state(&update).await,
        };
        match written {
            Ok(stored) => return Ok(Some(stored)),
            Err(StoreError::Conflict(_)) => continue,
            Err(e @ StoreError::QuotaExceeded { .. }) => return Err(ServiceError::Store(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Store(StoreError::Conflict(format!(
        "server {id}: gave up after {MAX_CONFLICT_RETRIES} concurrent updates"
    ))))
}

/// What applying a notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The VM changed.
    Applied,
    /// Nothing changed (duplicate or stale).
    Ignored(Ignored),
}

/// Computes the change a notification makes to a VM (pure).
pub fn change_for(vm: &Vm, state: &VmState, n: &Notification) -> Option<VmChange> {
    let _ = vm;
    match n {
        Notification::OpStatus {
            event,
            nics,
            beparams,
            ..
        } => match apply_op_status(state, event) {
            Transition::Applied(mut next) => {
                // A server that is gone has no NICs (Synnefo deletes them
                // when the removal succeeds, or fails because Ganeti no
                // longer has the instance).
                let nics = if next.operstate() == crate::state::OperState::Destroyed
                    && state.operstate() != crate::state::OperState::Destroyed
                {
                    Some(Vec::new())
                } else if event.status == crate::state::JobStatus::Success
                    && let Some(reported) = nics
                {
                    // NICs reported with a successful op are the instance's
                    // NICs after that op; only from an event we applied, and
                    // only if no later NIC report is on record.
                    match crate::state::apply_nic_report(&next, Some(event.time_us)) {
                        Some(with_time) => {
                            next = with_time;
                            Some(reported.clone())
                        }
                        None => None,
                    }
                } else {
                    None
                };
                // Synnefo's dispatcher takes the new flavor from a resize's
                // parameters; only from the newest event on record, so a
                // stale one (applied because it settles a resize) never
                // undoes a later resize.
                // Of equal flavors, the one a running resize asked for.
                // A running resize's own set-params job counts even when
                // a later job was seen first (a running server's reboot
                // job, queued behind it): no later resize can exist while
                // it runs.
                let newest = next.last_event() == Some(event.position());
                let own = state.resize().is_some_and(|r| r.is_params_job(event));
                let resize = beparams
                    .filter(|_| event.status == crate::state::JobStatus::Success && (newest || own))
                    .map(|be| BeParams {
                        requested: crate::state::target_flavor(state),
                        ..be
                    });
                // A failed job shows in the history of the request it was
                // submitted for (Nova's failed action event).
                let failed = matches!(
                    event.status,
                    crate::state::JobStatus::Error | crate::state::JobStatus::Canceled
                )
                .then(|| ActionLog::JobsFailed(vec![(event.job_id, job_failure(event))]));
                // A rebuild's success gives the server its new image in
                // the same write.
                let image = crate::state::rebuilt_image(state, event).map(str::to_string);
                Some(VmChange {
                    state: next,
                    nics,
                    resize,
                    action_log: failed,
                    image,
                })
            }
            Transition::Ignored(_) => None,
        },
        // A hook's NIC report takes effect in event-time order, and never
        // brings NICs back to a removed server (it may arrive after the
        // removal's op-status).
        Notification::NetStatus { nics, time_us, .. } => {
            crate::state::apply_nic_report(state, *time_us).map(|next| VmChange {
                state: next,
                nics: Some(nics.clone()),
                resize: None,
                action_log: None,
                image: None,
            })
        }
    }
}

/// Why a job failed, for people: Ganeti's error, else its last log line.
pub fn job_failure(event: &crate::state::OpStatusEvent) -> String {
    event.message().unwrap_or_else(|| match event.status {
        crate::state::JobStatus::Canceled => format!("Ganeti job {} was canceled", event.job_id),
        _ => format!("Ganeti job {} failed", event.job_id),
    })
}

/// Applies one backend notification to its VM.
pub async fn apply_notification<S: VmStore + ?Sized>(
    store: &S,
    n: &Notification,
) -> Result<ApplyOutcome, ServiceError> {
    let changed = modify_vm(store, n.vm(), |vm| Ok(change_for(vm, &vm.state, n))).await?;
    Ok(match changed {
        Some(_) => ApplyOutcome::Applied,
        None => ApplyOutcome::Ignored(Ignored::Stale),
    })
}

/// Applies a batch of notifications with one read and one write
/// transaction in the common case; VMs that lose a race are retried one by
/// one through [`apply_notification`]. Returns one result per notification,
/// in order. Order within the batch does not matter for the outcome (the
/// state machine is order-independent), but it is preserved per VM.
pub async fn apply_notifications<S: VmStore + ?Sized>(
    store: &S,
    batch: &[Notification],
) -> Result<Vec<Result<ApplyOutcome, ServiceError>>, ServiceError> {
    let mut ids: Vec<VmId> = batch.iter().map(Notification::vm).collect();
    ids.sort_unstable();
    ids.dedup();
    let vms: HashMap<VmId, Vm> = store
        .vms(&ids)
        .await?
        .into_iter()
        .map(|v| (v.id, v))
        .collect();

    // Fold every notification of a VM into one pending change.
    let mut results: Vec<Option<Result<ApplyOutcome, ServiceError>>> =
        Vec::with_capacity(batch.len());
    // Per VM: the folded state, NICs to store, flavor parameters, the
    // failed jobs, and the batch indexes it covers.
    type Pending = (
        VmState,
        Option<Vec<Nic>>,
        Option<BeParams>,
        Vec<(crate::ids::JobId, String)>,
        Vec<usize>,
        Option<String>,
    );
    let mut pending: HashMap<VmId, Pending> = HashMap::new();
    for (i, n) in batch.iter().enumerate() {
        let Some(vm) = vms.get(&n.vm()) else {
            results.push(Some(Err(ServiceError::NotFound(format!(
                "server {} not found",
                n.vm()
            )))));
            continue;
        };
        let current = pending.get(&vm.id).map_or(&vm.state, |p| &p.0);
        match change_for(vm, current, n) {
            Some(change) => {
                let entry = pending.entry(vm.id).or_insert_with(|| {
                    (vm.state.clone(), None, None, Vec::new(), Vec::new(), None)
                });
                entry.0 = change.state;
                if change.nics.is_some() {
                    entry.1 = change.nics;
                }
                if let Some(later) = change.resize {
                    // two resizes of one VM in a batch: Ganeti holds both
                    entry.2 = Some(entry.2.map_or(later, |earlier| earlier.then(later)));
                }
                if let Some(ActionLog::JobsFailed(jobs)) = change.action_log {
                    entry.3.extend(jobs);
                }
                entry.4.push(i);
                if change.image.is_some() {
                    entry.5 = change.image;
                }
                results.push(None);
            }
            None => results.push(Some(Ok(ApplyOutcome::Ignored(Ignored::Stale)))),
        }
    }

    let mut order: Vec<VmId> = pending.keys().copied().collect();
    order.sort_unstable();
    let updates: Vec<VmStateUpdate> = order
        .iter()
        .map(|id| {
            let (state, nics, resize, failed, _, image) = &pending[id];
            VmStateUpdate {
                id: *id,
                expected_version: vms[id].version,
                state: state.clone(),
                nics: nics.clone(),
                resize: *resize,
                action_log: (!failed.is_empty()).then(|| ActionLog::JobsFailed(failed.clone())),
                image: image.clone(),
            }
        })
        .collect();
    let written = if updates.is_empty() {
        Vec::new()
    } else {
        store.update_vm_states(&updates).await?
    };

    for (id, outcome) in order.iter().zip(written) {
        let members = &pending[id].4;
        match outcome {
            Ok(()) => {
                for &i in members {
                    results[i] = Some(Ok(ApplyOutcome::Applied));
                }
            }
            Err(StoreError::Conflict(_)) => {
                // Lost a race: redo this VM's notifications one by one.
                for &i in members {
                    results[i] = Some(apply_notification(store, &batch[i]).await);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for &i in members {
                    results[i] = Some(Err(ServiceError::Store(StoreError::Database(msg.clone()))));
                }
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Ok(ApplyOutcome::Ignored(Ignored::Stale))))
        .collect())
}

#[cfg(test)]
mod tests;
