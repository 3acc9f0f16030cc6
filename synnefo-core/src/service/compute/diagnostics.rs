//! What the API shows of a server's build (issue 16 item 7) and of its
//! `user_data` (item 2): Synnefo's diagnostics list, the newest entry in
//! Cyclades' server views, and Nova's operator-only user data.

use std::collections::HashMap;

use super::{Caller, Compute};
use crate::error::ServiceError;
use crate::ids::VmId;
use crate::model::{Diagnostic, Vm};

/// Most diagnostics one request lists (the dispatcher keeps at most
/// `dispatcher.max_diagnostics_per_server` per server anyway).
pub const MAX_DIAGNOSTICS_LISTED: u64 = 1000;

impl Compute {
    /// A server's diagnostics, newest first (Synnefo's
    /// `GET /servers/ID/diagnostics`); the server as [`Compute::server`]
    /// finds it.
    pub async fn server_diagnostics(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vec<Diagnostic>, ServiceError> {
        let vm = self.server(caller, id).await?;
        Ok(self
            .store
            .diagnostics(vm.id, MAX_DIAGNOSTICS_LISTED)
            .await?)
    }

    /// The newest diagnostic of each of `vms` that has one (Cyclades'
    /// server views show it).
    pub async fn latest_diagnostics_of(
        &self,
        vms: &[Vm],
    ) -> Result<HashMap<VmId, Diagnostic>, ServiceError> {
        if vms.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
        Ok(self.store.latest_diagnostics(&ids).await?)
    }

    /// The `user_data` given at create of each of `vms` that has one, for
    /// an operator (Nova's `OS-EXT-SRV-ATTR:user_data`); nothing for
    /// anyone else.
    pub async fn user_data_of(
        &self,
        caller: &Caller,
        vms: &[Vm],
    ) -> Result<HashMap<VmId, String>, ServiceError> {
        if !caller.is_admin || vms.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
        Ok(self.store.user_data_of(&ids).await?)
    }
}
