//! `synnefo reconcile --networks`: lists, diffs (the pure rules of
//! [`crate::reconcile::networks`] and [`crate::reconcile::nics`]), fixes
//! what the flags select, and reports.
//!
//! Per cluster: its networks and node groups (networks missing, extra,
//! disconnected from a group, wired differently), then its instances
//! against the ports and floating IPs of their servers (NICs missing,
//! extra, different). Network fixes run before NIC fixes, so a NIC added
//! back finds its network. Then every IPv4 pool is checked.
//!
//! A NIC fix acts only on what is still true: the server's instance, row,
//! ports and floating IPs are read again just before, the server diffed
//! again, and only findings the fresh diff repeats are acted on (removals
//! first, then additions, each job awaited).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Networking, not_found};
use crate::error::{BackendError, ServiceError};
use crate::ids::{BackendId, InstanceName, VmId};
use crate::model::Vm;
use crate::network::{FloatingIp, Port};
use crate::ports::{InstanceInfo, NetQuery, NetworkLink, NicSpec};
use crate::reconcile::networks::{NetworkDiscrepancy, RecordedNetwork, diff_backend};
use crate::reconcile::nics::{
    HeldNic, NicFinding, NicInput, NicOwner, NicStats, NicWiring, ServerNics, diff_nics,
    wanted_nics,
};
use crate::reconcile::{FixClass, Guards};

/// Which network fixes a reconciliation run may make.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkFixes {
    /// `--fix-stale`: make again networks removed behind our back,
    /// connect networks to the node groups they left, add back NICs of
    /// ports and floating IPs.
    pub missing: bool,
    /// `--fix-orphans`: adopt networks of ours the DB does not record on
    /// a cluster, remove unknown ones no instance uses, remove NICs of
    /// ours no port or floating IP accounts for.
    pub extra: bool,
    /// `--fix-unsynced`: rebuild pools' free lists.
    pub pools: bool,
}

impl NetworkFixes {
    fn allows(self, class: FixClass) -> bool {
        match class {
            FixClass::Stale => self.missing,
            FixClass::Orphans => self.extra,
            FixClass::Unsynced => self.pools,
            FixClass::Manual => false,
        }
    }
}

/// How a network reconciliation run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkRunOptions {
    /// Which fixes.
    pub fix: NetworkFixes,
    /// Guard thresholds (a port or floating IP changed within
    /// `stuck_after` is held).
    pub guards: Guards,
    /// The time of the run.
    pub now: DateTime<Utc>,
}

/// What a network reconciliation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkReport {
    /// Everything found.
    pub discrepancies: Vec<NetworkDiscrepancy>,
    /// Fixed, by index in `discrepancies`.
    pub fixed: Vec<usize>,
    /// Fixes that failed: index and why.
    pub failed: Vec<(usize, String)>,
    /// Fixes not made because the finding was gone when re-checked, by
    /// index, and why.
    pub skipped: Vec<(usize, String)>,
    /// NIC findings a guard held back.
    pub held: Vec<HeldNic>,
    /// Counters of the NIC rule.
    pub nic_stats: NicStats,
    /// Clusters (or parts of them) that could not be listed, and why.
    pub unlisted: Vec<(BackendId, String)>,
}

impl NetworkReport {
    /// Found and not fixed (not selected, no automatic fix, skipped, or
    /// failed).
    pub fn unfixed(&self) -> usize {
        self.discrepancies.len() - self.fixed.len()
    }

    fn push(&mut self, d: NetworkDiscrepancy) -> usize {
        self.discrepancies.push(d);
        self.discrepancies.len() - 1
    }

    fn outcome(&mut self, i: usize, r: Result<(), ServiceError>) {
        match r {
            Ok(()) => self.fixed.push(i),
            Err(e) => self.failed.push((i, e.to_string())),
        }
    }
}

/// How the NICs of each network are wired, by network id (filled as the
/// run meets networks).
type Wiring = HashMap<String, NicWiring>;

/// One server's DB side and instance, as the NIC diff takes them.
struct ServerData {
    vm: Vm,
    instance: InstanceInfo,
    ports: Vec<Port>,
    floating: HashMap<String, Vec<FloatingIp>>,
}

impl Networking {
    /// Reconciles networks, NICs and pools with `backends`; fixes what
    /// `opts.fix` selects.
    ///
    /// Per cluster: its networks and node groups (networks missing, extra,
    /// disconnected from a group, wired differently; the rules of
    /// [`crate::reconcile::networks`]), then its instances against the
    /// ports and floating IPs of their servers ([`crate::reconcile::nics`]).
    /// Network fixes run before NIC fixes, so a NIC added back finds its
    /// network; then every IPv4 pool is checked. A NIC fix acts only on
    /// what is still true: the server is read and diffed again just
    /// before, and a finding the fresh diff does not repeat is skipped;
    /// removals run before additions, each job awaited.
    pub async fn reconcile(
        &self,
        backends: &[BackendId],
        opts: NetworkRunOptions,
    ) -> Result<NetworkReport, ServiceError> {
        let mut report = NetworkReport::default();
        let nets = self.store.list_networks(&NetQuery::default()).await?;
        let subnets = self.store.list_subnets(&NetQuery::default()).await?;
        let mut recorded = Vec::with_capacity(nets.len());
        for n in &nets {
            recorded.push(RecordedNetwork {
                id: n.id.clone(),
                on: self.store.network_backends(&n.id).await?,
                mode: n.mode.clone(),
                link: n.link.clone(),
            });
        }
        let v4: HashSet<&str> = subnets
            .iter()
            .filter(|s| s.cidr.version() == 4)
            .map(|s| s.network_id.as_str())
            .collect();
        let mut wiring: Wiring = nets
            .iter()
            .map(|n| (n.id.clone(), NicWiring::of(n, v4.contains(n.id.as_str()))))
            .collect();
        for &b in backends {
            let listed = match self.ganeti.list_networks(b).await {
                Ok(l) => l,
                Err(e) => {
                    report.unlisted.push((b, e.to_string()));
                    continue;
                }
            };
            let groups = match self.ganeti.node_groups(b).await {
                Ok(g) => Some(g),
                Err(e) => {
                    report
                        .unlisted
                        .push((b, format!("node groups (connections not checked): {e}")));
                    None
                }
            };
            for d in diff_backend(&recorded, b, &listed, groups.as_deref()) {
                let selected = opts.fix.allows(d.fix_class());
                let i = report.push(d.clone());
                if selected {
                    let r = self.fix_network(&d).await;
                    report.outcome(i, r);
                }
            }
            if let Err(e) = self
                .reconcile_nics(b, &opts, &mut wiring, &mut report)
                .await
            {
                report.unlisted.push((b, format!("instances: {e}")));
            }
        }
        for s in &subnets {
            if s.cidr.version() != 4 {
                continue;
            }
            let check = self.store.check_pool(&s.id, opts.fix.pools).await?;
            if !check.is_clean() {
                let fixed = check.fixed;
                let i = report.push(NetworkDiscrepancy::Pool(check));
                if fixed {
                    report.fixed.push(i);
                }
            }
        }
        Ok(report)
    }

    async fn fix_network(&self, d: &NetworkDiscrepancy) -> Result<(), ServiceError> {
        match d {
            NetworkDiscrepancy::Missing {
                network_id,
                backend,
            } => self.remake(network_id, *backend).await,
            NetworkDiscrepancy::Disconnected {
                network_id,
                backend,
                ..
            } => self.reconnect(network_id, *backend).await,
            NetworkDiscrepancy::Extra {
                network_id: Some(id),
                backend,
                ..
            } => Ok(self.store.set_network_backend(id, *backend, true).await?),
            NetworkDiscrepancy::Extra {
                name,
                network_id: None,
                backend,
                instances,
            } if instances.is_empty() => self.remove_unknown(name, *backend).await,
            other => Err(ServiceError::BadRequest(format!(
                "no automatic fix for {other:?}"
            ))),
        }
    }

    async fn remake(&self, network_id: &str, backend: BackendId) -> Result<(), ServiceError> {
        let n = self
            .store
            .network(network_id)
            .await?
            .ok_or_else(|| not_found("Network", network_id))?;
        self.store
            .set_network_backend(network_id, backend, false)
            .await?;
        self.ensure_on_backend(&n, backend).await.map(|_| ())
    }

    /// Connects a network to every node group with its mode and link
    /// (Ganeti skips, with a warning, the groups it is connected to).
    async fn reconnect(&self, network_id: &str, backend: BackendId) -> Result<(), ServiceError> {
        let n = self
            .store
            .network(network_id)
            .await?
            .ok_or_else(|| not_found("Network", network_id))?;
        let link = NetworkLink {
            mode: n.mode.clone(),
            link: n.link.clone(),
            vlan: None,
        };
        for j in self
            .ganeti
            .connect_network(backend, &n.ganeti_name(), &link)
            .await?
        {
            self.await_job(backend, j).await?;
        }
        Ok(())
    }

    async fn remove_unknown(&self, name: &str, backend: BackendId) -> Result<(), ServiceError> {
        for j in self.ganeti.disconnect_network(backend, name).await? {
            self.await_job(backend, j).await?;
        }
        self.run(backend, |g| {
            let name = name.to_string();
            async move { g.remove_network(backend, &name).await }
        })
        .await
    }

    // ------------------------------------------------------------ NICs

    /// The NIC rule on one cluster: list, diff, fix.
    async fn reconcile_nics(
        &self,
        backend: BackendId,
        opts: &NetworkRunOptions,
        wiring: &mut Wiring,
        report: &mut NetworkReport,
    ) -> Result<(), ServiceError> {
        let instances = self.ganeti.list_instances(backend).await?;
        let mut by_vm: BTreeMap<VmId, InstanceInfo> = BTreeMap::new();
        for i in instances {
            if let Some(n) = InstanceName::parse(&self.prefix, &i.name) {
                by_vm.insert(n.vm_id(), i);
            }
        }
        if by_vm.is_empty() {
            return Ok(());
        }
        let ids: Vec<VmId> = by_vm.keys().copied().collect();
        let vms = self.store.vms(&ids).await?;
        let mut ports = self.store.ports_of(&ids).await?;
        let all: Vec<&Port> = ports.values().flatten().collect();
        let floating = self.floating_ips_of(&all).await?;
        let mut servers = Vec::with_capacity(vms.len());
        for vm in vms {
            let Some(instance) = by_vm.remove(&vm.id) else {
                continue;
            };
            let ports = ports.remove(&vm.id).unwrap_or_default();
            let floating = ports
                .iter()
                .filter_map(|p| floating.get(&p.id).map(|f| (p.id.clone(), f.clone())))
                .collect();
            servers.push(ServerData {
                vm,
                instance,
                ports,
                floating,
            });
        }
        let findings = self
            .diff_servers(backend, opts, &servers, wiring, report)
            .await?;

        // Fixes, per server, on a fresh look.
        let mut selected: BTreeMap<VmId, Vec<(usize, NicFinding)>> = BTreeMap::new();
        for f in findings {
            let d = NetworkDiscrepancy::from(f.clone());
            let class = d.fix_class();
            let i = report.push(d);
            if opts.fix.allows(class) {
                selected.entry(f.vm()).or_default().push((i, f));
            }
        }
        for (vm, wanted) in selected {
            self.fix_server(backend, vm, opts, wiring, &wanted, report)
                .await;
        }
        Ok(())
    }

    /// Diffs `servers`, recording held findings and counters in `report`.
    async fn diff_servers(
        &self,
        backend: BackendId,
        opts: &NetworkRunOptions,
        servers: &[ServerData],
        wiring: &mut Wiring,
        report: &mut NetworkReport,
    ) -> Result<Vec<NicFinding>, ServiceError> {
        // Every network a port or floating IP is on has its wiring (a
        // network made after the run's listing is read now), so no NIC of
        // a port of the server is ever taken for an extra one.
        let mut missing: Vec<String> = servers
            .iter()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .map(|p| p.network_id.clone())
                    .chain(s.floating.values().flatten().map(|f| f.network_id.clone()))
            })
            .filter(|n| !wiring.contains_key(n))
            .collect();
        missing.sort();
        missing.dedup();
        for id in missing {
            let Some(n) = self.store.network(&id).await? else {
                continue;
            };
            let has_v4 = self
                .store
                .list_subnets(&NetQuery {
                    network_id: Some(id.clone()),
                    ..NetQuery::default()
                })
                .await?
                .iter()
                .any(|s| s.cidr.version() == 4);
            wiring.insert(id, NicWiring::of(&n, has_v4));
        }
        let checks: Vec<ServerNics<'_>> = servers
            .iter()
            .map(|s| ServerNics {
                vm: &s.vm,
                backend,
                instance: &s.instance,
                wanted: wanted_nics(&s.ports, &s.floating, wiring),
            })
            .collect();
        // When the ports and floating IPs that extra NICs' names point at
        // last changed.
        let mut owners_changed: HashMap<String, DateTime<Utc>> = HashMap::new();
        for c in &checks {
            let wanted: HashSet<&str> = c.wanted.iter().map(|w| w.owner.id()).collect();
            for n in crate::reconcile::nics::GanetiNic::of(c.instance) {
                let Some(id) = n.owner_id() else { continue };
                if wanted.contains(id) || owners_changed.contains_key(id) {
                    continue;
                }
                if let Some(p) = self.store.port(id).await? {
                    owners_changed.insert(id.to_string(), p.updated);
                } else if let Some(f) = self.store.floating_ip(id).await? {
                    owners_changed.insert(id.to_string(), f.updated);
                }
            }
        }
        let diff = diff_nics(&NicInput {
            now: opts.now,
            guards: opts.guards,
            servers: &checks,
            owners_changed: &owners_changed,
        });
        report.held.extend(diff.held);
        report.nic_stats.servers += diff.stats.servers;
        report.nic_stats.unchecked += diff.stats.unchecked;
        report.nic_stats.foreign_ignored += diff.stats.foreign_ignored;
        Ok(diff.findings)
    }

    /// Re-reads one server, diffs it again, and fixes the findings in
    /// `wanted` the fresh diff repeats: removals first, then additions.
    async fn fix_server(
        &self,
        backend: BackendId,
        vm: VmId,
        opts: &NetworkRunOptions,
        wiring: &mut Wiring,
        wanted: &[(usize, NicFinding)],
        report: &mut NetworkReport,
    ) {
        let fresh = match self.fresh_findings(backend, vm, opts, wiring).await {
            Ok(f) => f,
            Err(e) => {
                for (i, _) in wanted {
                    report.failed.push((*i, format!("re-check failed: {e}")));
                }
                return;
            }
        };
        let mut todo: Vec<(usize, NicFinding)> = Vec::new();
        for (i, f) in wanted {
            match fresh
                .iter()
                .find(|g| g.kind() == f.kind() && g.nic() == f.nic())
            {
                Some(g) => todo.push((*i, g.clone())),
                None => report.skipped.push((
                    *i,
                    "gone or held when re-checked; left for the next run".into(),
                )),
            }
        }
        todo.sort_by_key(|(_, f)| !matches!(f, NicFinding::Extra(_)));
        for (i, f) in todo {
            let r = match &f {
                NicFinding::Extra(e) => {
                    let instance = e.instance.clone();
                    let id = e.identifier();
                    tracing::info!(%vm, %backend, nic = %id, "reconcile: removing a NIC no port accounts for");
                    self.run(backend, |g| async move {
                        g.remove_nic(backend, &instance, &id).await
                    })
                    .await
                    .or_else(ignore_missing_nic)
                }
                NicFinding::Missing(m) => {
                    tracing::info!(%vm, %backend, nic = %m.nic.name, "reconcile: adding a port's NIC back");
                    self.add_back(backend, &m.instance, &m.nic.owner).await
                }
                NicFinding::Differs(_) => Err(ServiceError::BadRequest(
                    "a NIC that differs has no automatic fix".into(),
                )),
            };
            report.outcome(i, r);
        }
    }

    async fn fresh_findings(
        &self,
        backend: BackendId,
        vm: VmId,
        opts: &NetworkRunOptions,
        wiring: &mut Wiring,
    ) -> Result<Vec<NicFinding>, ServiceError> {
        let name = InstanceName::new(&self.prefix, vm).to_string();
        let Some(instance) = self.ganeti.instance_info(backend, &name).await? else {
            return Ok(vec![]);
        };
        let Some(row) = self.store.vm(vm).await? else {
            return Ok(vec![]);
        };
        let ports = self
            .store
            .ports_of(&[vm])
            .await?
            .remove(&vm)
            .unwrap_or_default();
        let all: Vec<&Port> = ports.iter().collect();
        let floating = self.floating_ips_of(&all).await?;
        let server = ServerData {
            vm: row,
            instance,
            ports,
            floating,
        };
        let mut scratch = NetworkReport::default();
        self.diff_servers(backend, opts, &[server], wiring, &mut scratch)
            .await
    }

    /// Adds a port's (or floating IP's) NIC to `instance` again, from the
    /// DB, and awaits the job.
    async fn add_back(
        &self,
        backend: BackendId,
        instance: &str,
        owner: &NicOwner,
    ) -> Result<(), ServiceError> {
        let spec = match owner {
            NicOwner::Port(id) => {
                let p = self
                    .store
                    .port(id)
                    .await?
                    .ok_or_else(|| not_found("Port", id))?;
                self.nic_spec(backend, &p).await?
            }
            NicOwner::FloatingIp(id) => {
                let f = self
                    .store
                    .floating_ip(id)
                    .await?
                    .ok_or_else(|| not_found("Floating IP", id))?;
                let n = self
                    .store
                    .network(&f.network_id)
                    .await?
                    .ok_or_else(|| not_found("Network", &f.network_id))?;
                let on_ganeti = self.ensure_on_backend(&n, backend).await?;
                NicSpec {
                    network: on_ganeti.then(|| n.ganeti_name()),
                    mode: (!on_ganeti).then(|| n.mode.clone()),
                    link: (!on_ganeti).then(|| n.link.clone()),
                    ip: Some(f.address.to_string()),
                    mac: f.mac.clone(),
                    name: Some(f.ganeti_nic_name()),
                }
            }
        };
        let instance = instance.to_string();
        self.run(backend, |g| async move {
            g.add_nic(backend, &instance, &spec).await
        })
        .await
    }
}

/// A NIC Ganeti does not have is already detached: Ganeti classifies the
/// failed lookup of a NIC (or of the instance) `unknown_entity`, and RAPI
/// answers 404 for an instance it does not know. Decided on the typed
/// error, never on its text.
pub(super) fn ignore_missing_nic(e: ServiceError) -> Result<(), ServiceError> {
    match &e {
        ServiceError::Backend(BackendError::JobFailed {
            error: Some(op), ..
        }) if op.is_unknown_entity() => Ok(()),
        ServiceError::Backend(BackendError::NotFound(_)) => Ok(()),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ErrorCode, OpError};

    fn failed(class: &str, message: &str, code: Option<ErrorCode>) -> ServiceError {
        ServiceError::Backend(BackendError::JobFailed {
            job_id: 7,
            message: message.into(),
            error: Some(OpError {
                class: class.into(),
                message: message.into(),
                code,
            }),
        })
    }

    #[test]
    fn a_missing_nic_is_told_by_its_error_code_not_its_text() {
        // Ganeti's wording for a NIC it cannot find, classified.
        assert!(
            ignore_missing_nic(failed(
                "OpPrereqError",
                "Cannot find NIC with identifier snf-nic-1",
                Some(ErrorCode::UnknownEntity)
            ))
            .is_ok()
        );
        // Any wording, as long as Ganeti classified it so.
        assert!(
            ignore_missing_nic(failed(
                "OpPrereqError",
                "Instance 'snf-9' not known",
                Some(ErrorCode::UnknownEntity)
            ))
            .is_ok()
        );
        // "not found" in a message of another class is a real failure.
        for e in [
            failed(
                "OpPrereqError",
                "Network 'snf-net-1' not found on the node group",
                Some(ErrorCode::WrongState),
            ),
            failed("OpExecError", "Hotplug device does not exist", None),
            ServiceError::Backend(BackendError::JobFailed {
                job_id: 8,
                message: "NIC not found".into(),
                error: None,
            }),
        ] {
            assert!(ignore_missing_nic(e).is_err());
        }
        assert!(
            ignore_missing_nic(ServiceError::Backend(BackendError::NotFound(
                "instance snf-1".into()
            )))
            .is_ok()
        );
    }
}
