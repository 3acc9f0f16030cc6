//! Reading servers (one, a filtered page, their NICs) and their metadata.

use std::collections::{BTreeMap, HashMap};

use super::{Caller, Compute, MAX_PAGE, ServerFilter, validate_metadata};
use crate::error::{ServiceError, StoreError};
use crate::ids::VmId;
use crate::model::{InstanceAction, Nic, Vm};
use crate::ports::VmQuery;
use crate::service::network::ServerAddress;
use crate::state::{self, OperState, ServerStatus};

/// Most history entries one request reads (the newest).
pub const HISTORY_MAX: u64 = 1000;

impl Compute {
    /// A server of the caller's project, or of any project for an
    /// operator (Nova's default policy), not deleted; 404 otherwise.
    pub async fn server(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("Instance {id} could not be found."));
        let vm_id: VmId = id.parse().map_err(|_| not_found())?;
        match self.store.vm(vm_id).await? {
            Some(vm)
                if (vm.project_id == caller.project_id || caller.is_admin)
                    && !vm.state.deleted() =>
            {
                Ok(vm)
            }
            _ => Err(not_found()),
        }
    }

    /// A server's instance-action history (Nova's `os-instance-actions`),
    /// newest first, its newest [`HISTORY_MAX`] entries (a server rebooted
    /// a million times must not make one request load a million rows). A
    /// deleted server's history too when `deleted` (Nova from microversion
    /// 2.21); operators see any project's servers.
    pub async fn instance_actions(
        &self,
        caller: &Caller,
        id: &str,
        deleted: bool,
    ) -> Result<Vec<InstanceAction>, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("Instance {id} could not be found."));
        let vm_id: VmId = id.parse().map_err(|_| not_found())?;
        match self.store.vm(vm_id).await? {
            Some(vm)
                if (vm.project_id == caller.project_id || caller.is_admin)
                    && (deleted || !vm.state.deleted()) =>
            {
                Ok(self.store.instance_actions(vm.id, HISTORY_MAX).await?)
            }
            _ => Err(not_found()),
        }
    }

    /// One entry of a server's history, by request id (404 for another
    /// server's request or none).
    pub async fn instance_action(
        &self,
        caller: &Caller,
        id: &str,
        request_id: &str,
        deleted: bool,
    ) -> Result<InstanceAction, ServiceError> {
        self.instance_actions(caller, id, deleted)
            .await?
            .into_iter()
            .find(|a| a.request_id == request_id)
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "Action {request_id} could not be found for instance {id}."
                ))
            })
    }

    /// A server with its NICs.
    pub async fn server_with_nics(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(Vm, Vec<ServerAddress>), ServiceError> {
        let vm = self.server(caller, id).await?;
        let mut all = self.nics_of(std::slice::from_ref(&vm)).await?;
        let nics = all.remove(&vm.id).unwrap_or_default();
        Ok((vm, nics))
    }

    /// Which project a listing covers: the caller's, or every project
    /// (`None`) for an operator's `all_tenants` (403 for anyone else, as
    /// Nova's default policy).
    fn listing_scope(
        &self,
        caller: &Caller,
        f: &ServerFilter,
    ) -> Result<Option<String>, ServiceError> {
        match (f.all_tenants, caller.is_admin) {
            (false, _) => Ok(Some(caller.project_id.clone())),
            (true, true) => Ok(None),
            (true, false) => Err(ServiceError::Forbidden(
                "Policy doesn't allow os_compute_api:servers:index:get_all_tenants to be performed."
                    .into(),
            )),
        }
    }

    /// The caller's servers (every project's with `all_tenants`), newest
    /// first, filtered and paged.
    pub async fn list_servers(
        &self,
        caller: &Caller,
        f: &ServerFilter,
    ) -> Result<Vec<Vm>, ServiceError> {
        let project = self.listing_scope(caller, f)?;
        if let Some(marker) = f.marker {
            match self.store.vm(marker).await? {
                Some(vm) if project.as_ref().is_none_or(|p| *p == vm.project_id) => {}
                _ => {
                    return Err(ServiceError::BadRequest(format!(
                        "marker [{marker}] not found"
                    )));
                }
            }
        }
        let limit = f.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        // REBOOT / HARD_REBOOT are a pending action on a STARTED VM, the
        // resize statuses a resize on a STARTED or STOPPED one: the store
        // filters by operstate, the exact status is checked here, so page
        // after filtering in that case.
        let exact_status = f.statuses.as_ref().is_some_and(|s| {
            s.iter().any(|st| {
                matches!(
                    st,
                    ServerStatus::Reboot
                        | ServerStatus::HardReboot
                        | ServerStatus::Active
                        | ServerStatus::Shutoff
                        | ServerStatus::Resize
                        | ServerStatus::VerifyResize
                        | ServerStatus::RevertResize
                        | ServerStatus::Rebuild
                )
            })
        });
        let query = VmQuery {
            project_id: project,
            include_deleted: f.changes_since.is_some()
                || f.statuses
                    .as_ref()
                    .is_some_and(|s| s.contains(&ServerStatus::Deleted)),
            name_regex: f.name.clone(),
            operstates: f.statuses.as_deref().map(operstates_for),
            flavor_id: f.flavor,
            image_id: f.image.clone(),
            changes_since: f.changes_since,
            newest_first: true,
            marker: f.marker,
            limit: if exact_status { None } else { Some(limit) },
            ..VmQuery::default()
        };
        let mut vms = self.store.list_vms(&query).await?;
        if let Some(statuses) = &f.statuses {
            vms.retain(|vm| statuses.contains(&state::server_status(&vm.state)));
        }
        vms.truncate(limit as usize);
        Ok(vms)
    }

    /// Addresses of several servers: from their ports (and the floating
    /// IPs on them); a server without ports (made before networks, or with
    /// the configured default NIC) shows what Ganeti reported of its NICs.
    pub async fn nics_of(
        &self,
        vms: &[Vm],
    ) -> Result<HashMap<VmId, Vec<ServerAddress>>, ServiceError> {
        if vms.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
        let mut out = self.networking().addresses_of(&ids).await?;
        let rest: Vec<VmId> = ids.into_iter().filter(|i| !out.contains_key(i)).collect();
        if !rest.is_empty() {
            for (vm, nics) in self.store.nics_of(&rest).await? {
                out.insert(vm, legacy_addresses(&nics));
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------ metadata

    /// A server's metadata.
    pub async fn metadata(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        Ok(self.server(caller, id).await?.metadata)
    }

    /// Replaces (`replace`) or merges metadata (409 on a locked server).
    pub async fn set_metadata(
        &self,
        caller: &Caller,
        id: &str,
        items: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        validate_metadata(items)?;
        let vm = self.server(caller, id).await?;
        self.check_unlocked(caller, &vm).await?;
        if !replace {
            let mut merged = vm.metadata.clone();
            merged.extend(items.iter().map(|(k, v)| (k.clone(), v.clone())));
            validate_metadata(&merged)?;
        }
        Ok(self.store.set_vm_metadata(vm.id, items, replace).await?)
    }

    /// One metadata item; 404 if absent.
    pub async fn metadata_item(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> Result<String, ServiceError> {
        let meta = self.metadata(caller, id).await?;
        meta.get(key)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound("Metadata item was not found".into()))
    }

    /// Sets one metadata item.
    pub async fn set_metadata_item(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ServiceError> {
        let item: BTreeMap<String, String> = [(key.to_string(), value.to_string())].into();
        self.set_metadata(caller, id, &item, false)
            .await
            .map(|_| ())
    }

    /// Deletes one metadata item; 404 if absent, 409 on a locked server.
    pub async fn delete_metadata_item(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        let vm = self.server(caller, id).await?;
        self.check_unlocked(caller, &vm).await?;
        if !vm.metadata.contains_key(key) {
            return Err(ServiceError::NotFound("Metadata item was not found".into()));
        }
        match self.store.delete_vm_metadata(vm.id, key).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound(_)) => {
                Err(ServiceError::NotFound("Metadata item was not found".into()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn operstates_for(statuses: &[ServerStatus]) -> Vec<OperState> {
    let mut out = Vec::new();
    for s in statuses {
        let states: &[OperState] = match s {
            ServerStatus::Active | ServerStatus::Reboot | ServerStatus::HardReboot => {
                &[OperState::Started]
            }
            ServerStatus::Shutoff => &[OperState::Stopped],
            ServerStatus::Resize
            | ServerStatus::VerifyResize
            | ServerStatus::RevertResize
            | ServerStatus::Rebuild
            | ServerStatus::Rescue => &[OperState::Stopped, OperState::Started],
            ServerStatus::Build => &[OperState::Build],
            ServerStatus::Error => &[OperState::Error],
            ServerStatus::Deleted => &[OperState::Destroyed],
        };
        for st in states {
            if !out.contains(st) {
                out.push(*st);
            }
        }
    }
    out
}

/// Addresses from the NICs Ganeti reported (servers without ports): under
/// the Ganeti network's name, else the link.
fn legacy_addresses(nics: &[Nic]) -> Vec<ServerAddress> {
    nics.iter()
        .filter_map(|n| {
            let ip = n.ip.as_deref()?.parse().ok()?;
            let network = n
                .network
                .clone()
                .or_else(|| n.link.clone())
                .unwrap_or_else(|| "public".into());
            Some(ServerAddress {
                network_id: network.clone(),
                network,
                port_id: format!("nic-{}", n.index),
                ip,
                mac: n.mac.clone().unwrap_or_default(),
                floating: false,
            })
        })
        .collect()
}
