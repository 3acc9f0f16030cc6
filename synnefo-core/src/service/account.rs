//! Account use cases: what Astakos' account API (v1.0) answers for kamaki
//! and astakosclient — quotas per project and resource, the resource
//! list, the caller's projects, and the uuid ↔ name catalogs.
//!
//! Everything is read from the store; nothing here is invented:
//!
//! * A project's limits are its [`Quota`] (servers,
//!   vCPUs, RAM), enforced by the store when a server is created; `None`
//!   (unlimited) is shown as Astakos' "practically infinite"
//!   ([`PRACTICALLY_INFINITE`], 2⁶³−1).
//! * Usage is computed from the project's non-deleted servers and their
//!   flavors, the same rows the store counts when it enforces the quota.
//!   Synnefo's "active" resources (`cyclades.cpu`, `cyclades.ram`) count
//!   servers that are not stopped (BUILD, STARTED, ERROR), as Cyclades does.
//! * The quota is per project, shared by its members: a member's `limit` is
//!   the project's limit (there is no per-member cap), `usage` is what the
//!   member's own servers use, and `project_usage` what all of the
//!   project's servers use. The store reserves quota in the same
//!   transaction that stores the server, so there is never a pending
//!   commission: `pending` is always 0.
//! * Disk is accounted but not limited (there is no disk quota; flavors
//!   bound it per server).
//!
//! Tenant isolation holds as in the compute API: a user sees the projects
//! they are a member of (operators see all), and resolves the names of
//! users who share a project with them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::{ServiceError, StoreError};
use crate::ids::FlavorId;
use crate::model::{Flavor, Project, Quota, User, Vm};
use crate::ports::{Store, VmQuery};
use crate::state::OperState;

/// Astakos' "no limit" (`2**63 - 1`).
pub const PRACTICALLY_INFINITE: i64 = i64::MAX;

/// Most uuids or names one catalog request may ask about.
pub const MAX_CATALOG_NAMES: usize = 200;

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// What a resource measures (how usage and limit are computed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Servers.
    Servers,
    /// vCPUs of all servers.
    TotalCpu,
    /// vCPUs of servers that are not stopped.
    ActiveCpu,
    /// RAM (bytes) of all servers.
    TotalRam,
    /// RAM (bytes) of servers that are not stopped.
    ActiveRam,
    /// Disk (bytes) of all servers.
    Disk,
}

/// A resource as Astakos registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// Synnefo's name (`cyclades.vm`, ...).
    pub name: &'static str,
    /// Human description (Cyclades' own wording).
    pub description: &'static str,
    /// `bytes` or none (a count).
    pub unit: Option<&'static str>,
    /// The service type that offers it.
    pub service_type: &'static str,
    /// The service that registered it.
    pub service_origin: &'static str,
    /// How it is measured here.
    pub measure: Measure,
}

/// Every resource this cloud accounts, in Cyclades' order.
pub const RESOURCES: [Resource; 6] = [
    Resource {
        name: "cyclades.vm",
        description: "Number of virtual machines",
        unit: None,
        service_type: "compute",
        service_origin: "cyclades_compute",
        measure: Measure::Servers,
    },
    Resource {
        name: "cyclades.total_cpu",
        description: "Number of virtual machine processors",
        unit: None,
        service_type: "compute",
        service_origin: "cyclades_compute",
        measure: Measure::TotalCpu,
    },
    Resource {
        name: "cyclades.cpu",
        description: "Number of virtual machine processors of running servers",
        unit: None,
        service_type: "compute",
        service_origin: "cyclades_compute",
        measure: Measure::ActiveCpu,
    },
    Resource {
        name: "cyclades.total_ram",
        description: "Virtual machine memory size",
        unit: Some("bytes"),
        service_type: "compute",
        service_origin: "cyclades_compute",
        measure: Measure::TotalRam,
    },
    Resource {
        name: "cyclades.ram",
        description: "Virtual machine memory size of running servers",
        unit: Some("bytes"),
        service_type: "compute",
        service_origin: "cyclades_compute",
        measure: Measure::ActiveRam,
    },
    Resource {
        name: "cyclades.disk",
        description: "Virtual machine disk size",
        unit: Some("bytes"),
        service_type: "compute",
        service_origin: "cyclades_compute",
        measure: Measure::Disk,
    },
];

/// What some servers use, per measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Servers.
    pub servers: i64,
    /// vCPUs.
    pub total_cpu: i64,
    /// vCPUs of servers not stopped.
    pub active_cpu: i64,
    /// RAM in bytes.
    pub total_ram: i64,
    /// RAM in bytes of servers not stopped.
    pub active_ram: i64,
    /// Disk in bytes.
    pub disk: i64,
}

impl Tally {
    /// Adds one server of `flavor`.
    pub fn add(&mut self, vm: &Vm, flavor: &Flavor) {
        let cpu = i64::from(flavor.vcpus);
        let ram = i64::from(flavor.ram_mib).saturating_mul(MIB);
        self.servers += 1;
        self.total_cpu += cpu;
        self.total_ram = self.total_ram.saturating_add(ram);
        self.disk = self
            .disk
            .saturating_add(i64::from(flavor.disk_gib).saturating_mul(GIB));
        if is_active(vm) {
            self.active_cpu += cpu;
            self.active_ram = self.active_ram.saturating_add(ram);
        }
    }

    /// The amount of one measure.
    pub fn get(&self, m: Measure) -> i64 {
        match m {
            Measure::Servers => self.servers,
            Measure::TotalCpu => self.total_cpu,
            Measure::ActiveCpu => self.active_cpu,
            Measure::TotalRam => self.total_ram,
            Measure::ActiveRam => self.active_ram,
            Measure::Disk => self.disk,
        }
    }
}

/// Cyclades' "active": a server that holds its CPUs and RAM (not stopped).
pub fn is_active(vm: &Vm) -> bool {
    matches!(
        vm.state.operstate(),
        OperState::Build | OperState::Started | OperState::Error
    )
}

/// The limit of one measure under `quota` (the active measures are bounded
/// by the total ones, which are what the store enforces).
pub fn limit(quota: &Quota, m: Measure) -> i64 {
    let v = match m {
        Measure::Servers => quota.servers,
        Measure::TotalCpu | Measure::ActiveCpu => quota.vcpus,
        Measure::TotalRam | Measure::ActiveRam => quota.ram_mib.map(|r| r.saturating_mul(MIB)),
        Measure::Disk => None,
    };
    v.unwrap_or(PRACTICALLY_INFINITE)
}

/// One member's holding of one resource in one project (Astakos' shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holding {
    /// What the member may use (the project's limit: no per-member cap).
    pub limit: i64,
    /// What the member's own servers use.
    pub usage: i64,
    /// Reserved but not committed (always 0 here).
    pub pending: i64,
    /// The project's limit.
    pub project_limit: i64,
    /// What all of the project's servers use.
    pub project_usage: i64,
    /// Reserved project-wide but not committed (always 0 here).
    pub project_pending: i64,
}

/// A member's quotas in one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectQuotas {
    /// The project.
    pub project: Project,
    /// One holding per resource of [`RESOURCES`], in that order.
    pub holdings: Vec<(&'static Resource, Holding)>,
}

/// A project and its limits (what Astakos calls the project's resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    /// The project.
    pub project: Project,
    /// Its quota.
    pub quota: Quota,
}

impl ProjectInfo {
    /// Limit per resource, in [`RESOURCES`] order.
    pub fn limits(&self) -> Vec<(&'static Resource, i64)> {
        RESOURCES
            .iter()
            .map(|r| (r, limit(&self.quota, r.measure)))
            .collect()
    }
}

/// Astakos' project states; only `active` exists here (projects are
/// created and removed by an operator, never suspended or pending).
pub const PROJECT_STATES: [&str; 5] = [
    "uninitialized",
    "active",
    "suspended",
    "terminated",
    "deleted",
];

/// Which projects a listing covers (Astakos' `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectMode {
    /// The caller's projects; every project for operators.
    #[default]
    Default,
    /// Only projects the caller is a member of.
    Member,
}

/// Filters of a project listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Astakos state name (validated against [`PROJECT_STATES`]).
    pub state: Option<String>,
    /// Owner uuid (projects here have no owner, so any value matches none).
    pub owner: Option<String>,
    /// Which projects.
    pub mode: ProjectMode,
}

impl ProjectMode {
    /// Parses Astakos' `mode` parameter.
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        match s {
            "default" => Ok(Self::Default),
            "member" => Ok(Self::Member),
            other => Err(ServiceError::BadRequest(format!(
                "Unrecognized mode '{other}'."
            ))),
        }
    }
}

/// The account application service.
#[derive(Clone)]
pub struct Account {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").finish_non_exhaustive()
    }
}

fn project_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("Project {id} not found."))
}

impl Account {
    /// Over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The resources this cloud accounts.
    pub fn resources(&self) -> &'static [Resource] {
        &RESOURCES
    }

    async fn member_projects(&self, user: &User) -> Result<Vec<Project>, ServiceError> {
        let mut mine = self.store.user_projects(&user.id).await?;
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(mine)
    }

    async fn flavors(&self) -> Result<HashMap<FlavorId, Flavor>, ServiceError> {
        Ok(self
            .store
            .list_flavors()
            .await?
            .into_iter()
            .map(|f| (f.id, f))
            .collect())
    }

    /// What `user` and the whole project use in `project`.
    async fn tallies(
        &self,
        user: &User,
        project: &Project,
        flavors: &HashMap<FlavorId, Flavor>,
    ) -> Result<(Tally, Tally), ServiceError> {
        let vms = self
            .store
            .list_vms(&VmQuery {
                project_id: Some(project.id.clone()),
                ..VmQuery::default()
            })
            .await?;
        let (mut mine, mut all) = (Tally::default(), Tally::default());
        for vm in &vms {
            let flavor = flavors.get(&vm.flavor_id).ok_or_else(|| {
                ServiceError::Store(StoreError::Corrupt(format!(
                    "server {} has flavor {} which does not exist",
                    vm.id, vm.flavor_id
                )))
            })?;
            all.add(vm, flavor);
            if vm.user_id == user.id {
                mine.add(vm, flavor);
            }
        }
        Ok((mine, all))
    }

    /// The caller's quotas: one entry per project they are a member of.
    pub async fn quotas(&self, user: &User) -> Result<Vec<ProjectQuotas>, ServiceError> {
        let flavors = self.flavors().await?;
        let mut out = Vec::new();
        for project in self.member_projects(user).await? {
            let quota = self.store.quota(&project.id).await?;
            let (mine, all) = self.tallies(user, &project, &flavors).await?;
            let holdings = RESOURCES
                .iter()
                .map(|r| {
                    let l = limit(&quota, r.measure);
                    (
                        r,
                        Holding {
                            limit: l,
                            usage: mine.get(r.measure),
                            pending: 0,
                            project_limit: l,
                            project_usage: all.get(r.measure),
                            project_pending: 0,
                        },
                    )
                })
                .collect();
            out.push(ProjectQuotas { project, holdings });
        }
        Ok(out)
    }

    /// Projects visible to `user`, filtered.
    pub async fn projects(
        &self,
        user: &User,
        f: &ProjectFilter,
    ) -> Result<Vec<ProjectInfo>, ServiceError> {
        if let Some(s) = &f.state
            && !PROJECT_STATES.contains(&s.as_str())
        {
            return Err(ServiceError::BadRequest(format!("Unrecognized state {s}")));
        }
        let candidates = if user.is_admin && f.mode == ProjectMode::Default {
            let mut all = self.store.list_projects().await?;
            all.sort_by(|a, b| a.name.cmp(&b.name));
            all
        } else {
            self.member_projects(user).await?
        };
        let mut out = Vec::new();
        for project in candidates {
            if f.name.as_ref().is_some_and(|n| n != &project.name)
                || f.state.as_deref().is_some_and(|s| s != "active")
                || f.owner.is_some()
            {
                continue;
            }
            let quota = self.store.quota(&project.id).await?;
            out.push(ProjectInfo { project, quota });
        }
        Ok(out)
    }

    /// One project: one the caller is a member of (any, for operators);
    /// anything else is a 404.
    pub async fn project(&self, user: &User, id: &str) -> Result<ProjectInfo, ServiceError> {
        let project = if user.is_admin {
            self.store.project(id).await?
        } else {
            self.member_projects(user)
                .await?
                .into_iter()
                .find(|p| p.id == id)
        }
        .ok_or_else(|| project_not_found(id))?;
        let quota = self.store.quota(&project.id).await?;
        Ok(ProjectInfo { project, quota })
    }

    fn check_count(n: usize) -> Result<(), ServiceError> {
        if n > MAX_CATALOG_NAMES {
            return Err(ServiceError::BadRequest(format!(
                "At most {MAX_CATALOG_NAMES} uuids or names per request ({n} given)."
            )));
        }
        Ok(())
    }

    /// Whether `caller` may learn about `other`: themselves, someone who
    /// shares a project with them, or anyone for operators.
    async fn visible(
        &self,
        caller: &User,
        mine: &BTreeSet<String>,
        other: &User,
    ) -> Result<bool, ServiceError> {
        if caller.is_admin || caller.id == other.id {
            return Ok(true);
        }
        Ok(self
            .store
            .user_projects(&other.id)
            .await?
            .iter()
            .any(|p| mine.contains(&p.id)))
    }

    async fn my_project_ids(&self, caller: &User) -> Result<BTreeSet<String>, ServiceError> {
        Ok(self
            .member_projects(caller)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect())
    }

    /// uuid → name for the given user ids the caller may see; others are
    /// left out (Astakos' `uuid_catalog`).
    pub async fn usernames(
        &self,
        caller: &User,
        uuids: &[String],
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        Self::check_count(uuids.len())?;
        let mine = self.my_project_ids(caller).await?;
        let mut out = BTreeMap::new();
        for id in uuids.iter().collect::<BTreeSet<_>>() {
            if let Some(u) = self.store.user(id).await?
                && self.visible(caller, &mine, &u).await?
            {
                out.insert(u.id, u.name);
            }
        }
        Ok(out)
    }

    /// name → uuid for the given login names the caller may see; others
    /// are left out (Astakos' `displayname_catalog`).
    pub async fn user_ids(
        &self,
        caller: &User,
        names: &[String],
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        Self::check_count(names.len())?;
        let mine = self.my_project_ids(caller).await?;
        let mut out = BTreeMap::new();
        for name in names.iter().collect::<BTreeSet<_>>() {
            if let Some(u) = self.store.user_by_name(name).await?
                && self.visible(caller, &mine, &u).await?
            {
                out.insert(u.name, u.id);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VmId;
    use crate::state::{StoredVmState, VmState};

    fn vm(op: OperState) -> Vm {
        let state = VmState::from_stored(StoredVmState {
            operstate: op,
            ..VmState::new_build().to_stored()
        });
        Vm {
            id: VmId(1),
            user_id: "u".into(),
            project_id: "p".into(),
            name: "x".into(),
            flavor_id: FlavorId(1),
            image_id: "i".into(),
            backend_id: None,
            state,
            metadata: BTreeMap::new(),
            created: chrono::Utc::now(),
            updated: chrono::Utc::now(),
            last_reconciled: None,
            version: 0,
        }
    }

    fn flavor() -> Flavor {
        Flavor {
            id: FlavorId(1),
            name: "f".into(),
            vcpus: 2,
            ram_mib: 1024,
            disk_gib: 20,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        }
    }

    #[test]
    fn stopped_servers_hold_totals_but_not_active_resources() {
        let mut t = Tally::default();
        t.add(&vm(OperState::Started), &flavor());
        t.add(&vm(OperState::Stopped), &flavor());
        t.add(&vm(OperState::Build), &flavor());
        assert_eq!(t.servers, 3);
        assert_eq!(t.total_cpu, 6);
        assert_eq!(t.active_cpu, 4);
        assert_eq!(t.total_ram, 3 << 30);
        assert_eq!(t.active_ram, 2 << 30);
        assert_eq!(t.disk, 60 << 30);
    }

    #[test]
    fn limits_map_the_enforced_quota_and_unlimited_is_practically_infinite() {
        let q = Quota {
            servers: Some(5),
            vcpus: Some(8),
            ram_mib: Some(4096),
        };
        assert_eq!(limit(&q, Measure::Servers), 5);
        assert_eq!(limit(&q, Measure::TotalCpu), 8);
        assert_eq!(limit(&q, Measure::ActiveCpu), 8);
        assert_eq!(limit(&q, Measure::TotalRam), 4096 << 20);
        assert_eq!(limit(&q, Measure::ActiveRam), 4096 << 20);
        assert_eq!(limit(&q, Measure::Disk), PRACTICALLY_INFINITE);
        assert_eq!(
            limit(&Quota::default(), Measure::Servers),
            PRACTICALLY_INFINITE
        );
        let huge = Quota {
            ram_mib: Some(i64::MAX / 2),
            ..Quota::default()
        };
        assert_eq!(limit(&huge, Measure::TotalRam), i64::MAX, "saturates");
    }

    #[test]
    fn modes_parse_strictly() {
        assert_eq!(ProjectMode::parse("member").unwrap(), ProjectMode::Member);
        assert_eq!(ProjectMode::parse("default").unwrap(), ProjectMode::Default);
        assert!(matches!(
            ProjectMode::parse("all"),
            Err(ServiceError::BadRequest(_))
        ));
    }
}
