//! Resizing a server: Synnefo's rules in the state machine
//! ([`state::start_resize`]), the quota delta reserved in the same write
//! ([`crate::ports::VmStore::update_vm_state_within`]), one
//! `OP_INSTANCE_SET_PARAMS` job with the new flavor's CPUs and memory; and
//! Nova's confirmation step (`confirmResize` keeps the new flavor,
//! `revertResize` submits a job back to the old one).

use super::actions::Start;
use super::{Caller, Compute};
use crate::error::ServiceError;
use crate::model::{ActionLog, Flavor, InstanceAction, Vm};
use crate::service::{VmChange, modify_vm};
use crate::state::{self, Action, VmState};

/// Whether a successful resize waits for the owner's confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeConfirm {
    /// Nova's resize: `VERIFY_RESIZE` until `confirmResize` or
    /// `revertResize`.
    Owner,
    /// Synnefo's resize (the Cyclades API, operators): done when the job
    /// succeeds.
    Automatic,
}

impl Compute {
    /// Resizes a stopped server to the flavor `flavor_ref` (an id or a
    /// flavor link): same disk size and template, another flavor, the
    /// quota delta of vCPUs and RAM reserved atomically (403 over quota).
    /// Returns the server, `RESIZE` while its job runs.
    pub async fn resize(
        &self,
        caller: &Caller,
        id: &str,
        flavor_ref: &str,
        confirm: ResizeConfirm,
    ) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        let to = match self.resolve_flavor(flavor_ref).await? {
            Some(f) if !f.deleted && (f.is_public || caller.is_admin) => f,
            _ => {
                return Err(ServiceError::BadRequest(format!(
                    "Flavor {flavor_ref} could not be found."
                )));
            }
        };
        let from = self.current_flavor(&vm).await?;
        let quota = self.store.quota(&vm.project_id).await?;
        let owner = confirm == ResizeConfirm::Owner;
        let transition = |s: &VmState| state::start_resize(s, &from, &to, owner);
        let start = Start {
            action: Action::Resize,
            transition: &transition,
            quota: Some(quota),
            beparams: Some((to.vcpus, to.ram_mib)),
            reinstall: None,
        };
        let vm = self.run_action(caller, vm, start).await?;
        tracing::info!(server = %vm.id, user = %caller.user_id, from = %from.id, to = %to.id, "resize accepted");
        Ok(vm)
    }

    /// Keeps the new flavor of a resize awaiting confirmation (Nova's
    /// `confirmResize`): no Ganeti job (the instance has the new
    /// parameters already); recorded in the server's history.
    pub async fn confirm_resize(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        self.check_unlocked(caller, &vm).await?;
        let request = caller.request_id.clone();
        let confirmed = modify_vm(&*self.store, vm.id, |v| {
            let next = state::confirm_resize(&v.state)?;
            let action_log = request.as_ref().map(|request_id| {
                let now = chrono::Utc::now();
                ActionLog::Accepted(InstanceAction {
                    vm: v.id,
                    request_id: request_id.clone(),
                    action: "confirmResize".into(),
                    user_id: caller.user_id.clone(),
                    project_id: caller.project_id.clone(),
                    start_time: now,
                    updated: now,
                    message: None,
                    job_id: None,
                })
            });
            Ok(Some(VmChange {
                state: next,
                nics: None,
                resize: None,
                action_log,
                image: None,
            }))
        })
        .await?
        .unwrap_or(vm);
        tracing::info!(server = %confirmed.id, user = %caller.user_id, flavor = %confirmed.flavor_id, "resize confirmed");
        Ok(confirmed)
    }

    /// Goes back to the flavor before a resize awaiting confirmation
    /// (Nova's `revertResize`): a set-params job with the old flavor's CPUs
    /// and memory; `REVERT_RESIZE` while it runs. No quota check: the
    /// resize has held the larger of both flavors all along.
    pub async fn revert_resize(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        // The old flavor's parameters (a resize's `from` never changes; a
        // server without a resize awaiting confirmation is refused by the
        // transition below).
        let back = match vm.state.resize() {
            Some(r) => self.store.flavor(r.from).await?,
            None => None,
        };
        let transition = state::start_revert_resize;
        let start = Start {
            action: Action::RevertResize,
            transition: &transition,
            quota: None,
            beparams: back.as_ref().map(|f| (f.vcpus, f.ram_mib)),
            reinstall: None,
        };
        self.run_action(caller, vm, start).await
    }

    /// The flavor a server has now.
    async fn current_flavor(&self, vm: &Vm) -> Result<Flavor, ServiceError> {
        self.store.flavor(vm.flavor_id).await?.ok_or_else(|| {
            ServiceError::Store(crate::error::StoreError::Corrupt(format!(
                "server {} has flavor {}, which the catalogue does not have",
                vm.id, vm.flavor_id
            )))
        })
    }
}
