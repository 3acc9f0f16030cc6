//! Locking a server (Nova's `lock`/`unlock` actions): a locked server
//! refuses its owner's mutating requests (start, stop, reboot, delete,
//! metadata changes) with 409 "Instance N is locked"; operators may still
//! act, as with Nova's default policy. A lock an operator set on another
//! project's server (`locked_by` admin) can only be lifted by an operator.

use super::{Caller, Compute};
use crate::error::{ActionError, ServiceError};
use crate::model::{InstanceAction, LockedBy, ServerAttrs, Vm, VmLock};

/// Longest `locked_reason` (Nova's limit).
pub const LOCKED_REASON_MAX: usize = 255;

impl Compute {
    /// What views show besides the VM row (access addresses, key names,
    /// lock) of one server.
    pub async fn server_attrs(&self, vm: &Vm) -> Result<ServerAttrs, ServiceError> {
        Ok(self
            .store
            .server_attrs_of(std::slice::from_ref(&vm.id))
            .await?
            .remove(&vm.id)
            .unwrap_or_default())
    }

    /// [`Compute::server_attrs`] of many servers (absent: default).
    pub async fn server_attrs_of(
        &self,
        vms: &[Vm],
    ) -> Result<std::collections::HashMap<crate::ids::VmId, ServerAttrs>, ServiceError> {
        if vms.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<_> = vms.iter().map(|v| v.id).collect();
        Ok(self.store.server_attrs_of(&ids).await?)
    }

    /// Refuses a mutating request of a non-operator on a locked server.
    pub(super) async fn check_unlocked(
        &self,
        caller: &Caller,
        vm: &Vm,
    ) -> Result<(), ServiceError> {
        if caller.is_admin {
            return Ok(());
        }
        if self.server_attrs(vm).await?.lock.is_some() {
            return Err(ActionError::Locked(vm.id).into());
        }
        Ok(())
    }

    /// Locks a server (`reason`: Nova 2.73's `locked_reason`, at most
    /// 255 characters). Locking a locked server keeps
    /// the first lock; an owner cannot take over an operator's lock.
    pub async fn lock(
        &self,
        caller: &Caller,
        id: &str,
        reason: Option<String>,
    ) -> Result<Vm, ServiceError> {
        if let Some(r) = &reason
            && r.chars().count() > LOCKED_REASON_MAX
        {
            return Err(ServiceError::BadRequest(format!(
                "Invalid input for field/attribute locked_reason. The reason is longer than {LOCKED_REASON_MAX} characters."
            )));
        }
        let vm = self.server(caller, id).await?;
        if self.server_attrs(&vm).await?.lock.is_some() {
            return Ok(vm);
        }
        let by = if caller.is_admin && caller.project_id != vm.project_id {
            LockedBy::Admin
        } else {
            LockedBy::Owner
        };
        let action = history_entry(caller, &vm, "lock");
        self.store
            .set_vm_lock(vm.id, Some(VmLock { by, reason }), action)
            .await?;
        tracing::info!(vm = %vm.id, user = %caller.user_id, locked_by = by.as_str(), "server locked");
        self.server(caller, id).await
    }

    /// Unlocks a server (unlocking an unlocked one is a no-op). A lock set
    /// by an operator can only be lifted by an operator (403 otherwise).
    pub async fn unlock(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        let Some(lock) = self.server_attrs(&vm).await?.lock else {
            return Ok(vm);
        };
        if lock.by == LockedBy::Admin && !caller.is_admin {
            return Err(ServiceError::Forbidden(
                "Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override to be performed."
                    .into(),
            ));
        }
        let action = history_entry(caller, &vm, "unlock");
        self.store.set_vm_lock(vm.id, None, action).await?;
        tracing::info!(vm = %vm.id, user = %caller.user_id, "server unlocked");
        self.server(caller, id).await
    }
}

/// The instance-action history entry of a lock or unlock request (none
/// without a request id), as Nova records them.
fn history_entry(caller: &Caller, vm: &Vm, action: &str) -> Option<InstanceAction> {
    let request_id = caller.request_id.clone()?;
    let now = chrono::Utc::now();
    Some(InstanceAction {
        vm: vm.id,
        request_id,
        action: action.to_string(),
        user_id: caller.user_id.clone(),
        project_id: caller.project_id.clone(),
        start_time: now,
        updated: now,
        message: None,
        job_id: None,
    })
}
