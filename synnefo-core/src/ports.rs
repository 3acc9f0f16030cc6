//! The ports: what the core asks of the outside world.
//!
//! * [`GanetiBackend`]: drive Ganeti clusters (the RAPI client, the
//!   simulator and mocks implement it).
//! * [`Store`]: the single source of truth (the sea-orm store and mocks).
//! * [`EventBus`]: backend notifications with at-least-once delivery
//!   (RabbitMQ, the in-process bus).
//! * [`Clock`]: time, injectable for tests.
//!
//! With the `mocks` feature (or in this crate's tests) each trait has a
//! mockall mock: `MockGanetiBackend`, `MockVmStore`, `MockEventBus`, ...

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{BackendError, BusError, StoreError};
use crate::ids::{BackendId, FlavorId, JobId, VmId};
use crate::messages::MessageKind;
use crate::model::{
    AccessIps, ActionLog, Backend, BeParams, Flavor, Image, InstanceAction, Keypair, NewKeypair,
    NewVm, NewVmAttrs, Nic, Project, Quota, ServerAttrs, Token, Usage, User, Vm, VmLock,
    VmPlacement,
};
use crate::network::{
    FloatingIp, IpHistoryEntry, Network, NetworkStatus, NetworkUpdate, NewNetwork, NewPort,
    NewSubnet, PoolCheck, PoolKind, PoolLease, PoolUsage, Port, PortUpdate, Subnet, SubnetUpdate,
};
use crate::state::{JobStatus, OpError, OperState, RebootKind, VmState};

// ---------------------------------------------------------------- Ganeti

/// What to create on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Target cluster.
    pub backend: BackendId,
    /// Instance name (`<prefix><vm id>`).
    pub name: String,
    /// vCPUs.
    pub vcpus: i32,
    /// RAM in MiB.
    pub ram_mib: i32,
    /// Root disk in GiB.
    pub disk_gib: i32,
    /// Ganeti disk template.
    pub disk_template: String,
    /// Ganeti OS.
    pub os_type: String,
    /// OS parameters (the image's, plus e.g. the admin password).
    pub osparams: BTreeMap<String, String>,
    /// NICs to attach.
    pub nics: Vec<NicSpec>,
    /// Hypervisor parameters.
    pub hvparams: BTreeMap<String, Value>,
    /// Start after creation.
    pub start: bool,
}

/// A NIC to create.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NicSpec {
    /// Ganeti network name.
    pub network: Option<String>,
    /// Mode (`bridged`, `routed`).
    pub mode: Option<String>,
    /// Link.
    pub link: Option<String>,
    /// Fixed IP, or `pool` to let Ganeti pick from the network.
    pub ip: Option<String>,
    /// MAC address (`None`: Ganeti generates one).
    pub mac: Option<String>,
    /// Ganeti NIC name (`snf-nic-<port id>` for a port's NIC), by which a
    /// later modify finds it.
    pub name: Option<String>,
}

/// A Ganeti network to create (`gnt-network add`, RAPI `POST /2/networks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Target cluster.
    pub backend: BackendId,
    /// Network name (`snf-net-<network id>`).
    pub name: String,
    /// IPv4 subnet in CIDR notation (Ganeti requires one).
    pub network: String,
    /// IPv4 gateway.
    pub gateway: Option<String>,
    /// IPv6 subnet.
    pub network6: Option<String>,
    /// IPv6 gateway.
    pub gateway6: Option<String>,
    /// MAC prefix (`aa:00:01`) for NICs Ganeti generates on it.
    pub mac_prefix: Option<String>,
    /// Tags (Synnefo tags its networks with their flavor's recipe).
    pub tags: Vec<String>,
}

/// How a network joins a cluster's node groups (`gnt-network connect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLink {
    /// `bridged`, `routed` or `openvswitch`.
    pub mode: String,
    /// Bridge, routing table or switch.
    pub link: String,
    /// VLAN (openvswitch), if any.
    pub vlan: Option<String>,
}

/// A Ganeti network as a cluster lists it (`GET /2/networks?bulk=1`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// IPv4 subnet.
    pub network: Option<String>,
    /// IPv4 gateway.
    pub gateway: Option<String>,
    /// IPv6 subnet.
    pub network6: Option<String>,
    /// MAC prefix.
    pub mac_prefix: Option<String>,
    /// Free addresses in Ganeti's pool.
    pub free_count: Option<u64>,
    /// Node groups it is connected to: `(group, mode, link)`.
    pub groups: Vec<(String, String, String)>,
    /// Instances with a NIC on it.
    pub instances: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// An instance as a cluster lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Instance name.
    pub name: String,
    /// `admin_state == "up"`.
    pub admin_up: bool,
    /// `oper_state`: actually running.
    pub running: bool,
    /// Ganeti's status string (`running`, `ADMIN_down`, `ERROR_down`, ...).
    pub status: String,
    /// vCPUs (beparams).
    pub vcpus: Option<i32>,
    /// RAM in MiB (beparams maxmem).
    pub ram_mib: Option<i32>,
    /// NICs.
    pub nics: Vec<Nic>,
    /// NIC names by index (`nic.names`; `None`: unnamed); empty when the
    /// listing carried none.
    #[serde(default)]
    pub nic_names: Vec<Option<String>>,
    /// Primary node.
    pub pnode: Option<String>,
    /// Disk template.
    pub disk_template: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Last modification time (seconds since the epoch).
    pub mtime: Option<f64>,
}

/// Where to reach an instance's console on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleInfo {
    /// `vnc`, `spice`, `ssh`, `msg`.
    pub kind: String,
    /// Node host.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Message for `msg` consoles.
    pub message: Option<String>,
}

/// One opcode of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOpInfo {
    /// `OP_ID`.
    pub opcode: String,
    /// Opcode status.
    pub status: JobStatus,
    /// Ganeti's error, for a failed op (read from its result by
    /// [`OpError::from_result`] where the RAPI answer came in).
    pub error: Option<OpError>,
    /// Log messages.
    pub log: Vec<String>,
}

/// A Ganeti job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Id.
    pub id: JobId,
    /// Overall status.
    pub status: JobStatus,
    /// Opcodes.
    pub ops: Vec<JobOpInfo>,
    /// When it finished, microseconds since the epoch.
    pub end_time_us: Option<i64>,
}

impl JobInfo {
    /// The error of a failed job: the first failing op's.
    pub fn error(&self) -> Option<&OpError> {
        self.ops
            .iter()
            .find(|o| o.status == JobStatus::Error)
            .and_then(|o| o.error.as_ref())
    }

    /// What to tell people about a failed job: its error, else the
    /// failing op's last log line.
    pub fn error_message(&self) -> Option<String> {
        let op = self.ops.iter().find(|o| o.status == JobStatus::Error)?;
        Some(match (&op.error, op.log.last()) {
            (Some(e), _) => e.to_string(),
            (None, Some(line)) => line.clone(),
            (None, None) => "job failed".into(),
        })
    }
}

/// Capacity and load of a cluster, for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterLoad {
    /// Instances on the cluster.
    pub instances: u64,
    /// Total node memory (MiB).
    pub mem_total_mib: u64,
    /// Free node memory (MiB).
    pub mem_free_mib: u64,
}

/// What the control plane asks of Ganeti clusters.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait GanetiBackend: Send + Sync {
    /// Submits an instance creation; returns the job id.
    async fn create_instance(&self, spec: &InstanceSpec) -> Result<JobId, BackendError>;
    /// Starts an instance.
    async fn startup(&self, backend: BackendId, instance: &str) -> Result<JobId, BackendError>;
    /// Shuts an instance down (`timeout`: how long Ganeti waits for ACPI).
    async fn shutdown(
        &self,
        backend: BackendId,
        instance: &str,
        timeout: Option<Duration>,
    ) -> Result<JobId, BackendError>;
    /// Reboots an instance.
    async fn reboot(
        &self,
        backend: BackendId,
        instance: &str,
        kind: RebootKind,
    ) -> Result<JobId, BackendError>;
    /// Removes an instance.
    async fn remove(&self, backend: BackendId, instance: &str) -> Result<JobId, BackendError>;
    /// Lists every instance of a cluster in one bulk call.
    async fn list_instances(&self, backend: BackendId) -> Result<Vec<InstanceInfo>, BackendError>;
    /// One instance, or `None` if the cluster does not have it.
    async fn instance_info(
        &self,
        backend: BackendId,
        instance: &str,
    ) -> Result<Option<InstanceInfo>, BackendError>;
    /// Console location of an instance.
    async fn console(
        &self,
        backend: BackendId,
        instance: &str,
    ) -> Result<ConsoleInfo, BackendError>;
    /// A job's current state.
    async fn job_status(&self, backend: BackendId, job: JobId) -> Result<JobInfo, BackendError>;
    /// Waits (long-polls) until the job ends or `timeout` passes; returns its state.
    async fn wait_for_job(
        &self,
        backend: BackendId,
        job: JobId,
        timeout: Duration,
    ) -> Result<JobInfo, BackendError>;
    /// Capacity and load of a cluster.
    async fn cluster_load(&self, backend: BackendId) -> Result<ClusterLoad, BackendError>;
    /// Submits a network creation (`OP_NETWORK_ADD`).
    async fn create_network(&self, spec: &NetworkSpec) -> Result<JobId, BackendError>;
    /// Connects a network to every node group of the cluster with `link`
    /// (`OP_NETWORK_CONNECT`, one job per group).
    async fn connect_network(
        &self,
        backend: BackendId,
        network: &str,
        link: &NetworkLink,
    ) -> Result<Vec<JobId>, BackendError>;
    /// Disconnects a network from every node group it is connected to
    /// (`OP_NETWORK_DISCONNECT`, one job per group).
    async fn disconnect_network(
        &self,
        backend: BackendId,
        network: &str,
    ) -> Result<Vec<JobId>, BackendError>;
    /// Submits a network removal (`OP_NETWORK_REMOVE`).
    async fn remove_network(
        &self,
        backend: BackendId,
        network: &str,
    ) -> Result<JobId, BackendError>;
    /// Every network of a cluster in one bulk call.
    async fn list_networks(&self, backend: BackendId) -> Result<Vec<NetworkInfo>, BackendError>;
    /// The names of a cluster's node groups (a network is connected to
    /// each).
    async fn node_groups(&self, backend: BackendId) -> Result<Vec<String>, BackendError>;
    /// Adds a NIC to an instance (`OP_INSTANCE_SET_PARAMS` with
    /// `nics: [["add", -1, ...]]`), hot-plugged where the hypervisor can,
    /// else on its next reboot.
    async fn add_nic(
        &self,
        backend: BackendId,
        instance: &str,
        nic: &NicSpec,
    ) -> Result<JobId, BackendError>;
    /// Removes an instance's NIC by its Ganeti name
    /// (`nics: [["remove", name, {}]]`), hot-unplugged where possible.
    async fn remove_nic(
        &self,
        backend: BackendId,
        instance: &str,
        nic_name: &str,
    ) -> Result<JobId, BackendError>;
    /// Gives an instance a flavor's CPUs and memory
    /// (`OP_INSTANCE_SET_PARAMS` with `beparams: {vcpus, maxmem, minmem}`,
    /// minimum and maximum memory both the flavor's RAM, as Synnefo's
    /// resize sets them); takes effect at the instance's next start.
    async fn resize(
        &self,
        backend: BackendId,
        instance: &str,
        vcpus: i32,
        ram_mib: i32,
    ) -> Result<JobId, BackendError>;
    /// Writes an instance's disk again from an image
    /// (`POST /2/instances/NAME/reinstall`: one job of
    /// `OP_INSTANCE_SHUTDOWN`, `OP_INSTANCE_REINSTALL` and, with
    /// `spec.start`, `OP_INSTANCE_STARTUP`).
    async fn reinstall(
        &self,
        backend: BackendId,
        instance: &str,
        spec: &ReinstallSpec,
    ) -> Result<JobId, BackendError>;
    /// Sets what an instance boots (`OP_INSTANCE_SET_PARAMS` with KVM
    /// `hvparams`, as Synnefo's `rescue_instance`/`unrescue_instance`):
    /// the rescue image as its CD-ROM (`cdrom_image_path`,
    /// `boot_order: cdrom`), or its disk again (`cdrom_image_path: ""`,
    /// `boot_order: disk`); takes effect at the instance's next start.
    async fn set_boot(
        &self,
        backend: BackendId,
        instance: &str,
        boot: BootFrom,
    ) -> Result<JobId, BackendError>;
}

/// What a rebuild asks Ganeti to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReinstallSpec {
    /// The Ganeti OS (`os_type`, e.g. `snf-image+default`).
    pub os_type: String,
    /// The OS parameters, as a create builds them (image, password, keys,
    /// files); the backend decides how the secret ones travel.
    pub osparams: BTreeMap<String, String>,
    /// Start the instance once reinstalled.
    pub start: bool,
}

/// What an instance boots ([`GanetiBackend::set_boot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFrom {
    /// The rescue image at this path (or URL) on the nodes.
    Rescue(String),
    /// Its own disk.
    Disk,
}

// ---------------------------------------------------------------- Store

/// Users, projects, memberships, tokens and quotas.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Creates a user (`password_hash` already argon2-hashed).
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<User, StoreError>;
    /// A user by login name.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// A user by id.
    async fn user(&self, id: &str) -> Result<Option<User>, StoreError>;
    /// All users.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Changes a user's password hash or enabled flag; a new password
    /// revokes every token of the user.
    async fn update_user(
        &self,
        id: &str,
        password_hash: Option<String>,
        enabled: Option<bool>,
    ) -> Result<User, StoreError>;
    /// Creates a project.
    async fn create_project(&self, name: &str) -> Result<Project, StoreError>;
    /// A project by name.
    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError>;
    /// A project by id.
    async fn project(&self, id: &str) -> Result<Option<Project>, StoreError>;
    /// All projects.
    async fn list_projects(&self) -> Result<Vec<Project>, StoreError>;
    /// Makes `user` a member of `project` (idempotent).
    async fn add_member(&self, user_id: &str, project_id: &str) -> Result<(), StoreError>;
    /// The projects a user belongs to.
    async fn user_projects(&self, user_id: &str) -> Result<Vec<Project>, StoreError>;
    /// Stores an issued token.
    async fn store_token(&self, token: &Token) -> Result<(), StoreError>;
    /// A token by digest.
    async fn token(&self, digest: &str) -> Result<Option<Token>, StoreError>;
    /// Revokes a token and the tokens rescoped from it (tokens of the same
    /// user with the same expiry, issued no earlier); idempotent.
    async fn revoke_token(&self, digest: &str) -> Result<(), StoreError>;
    /// Deletes tokens that expired before `before`; returns how many.
    async fn purge_expired_tokens(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Sets a project's quota.
    async fn set_quota(&self, project_id: &str, quota: Quota) -> Result<(), StoreError>;
    /// A project's quota (unlimited if never set).
    async fn quota(&self, project_id: &str) -> Result<Quota, StoreError>;
    /// A project's current usage (non-deleted servers; a server whose
    /// resize is on record counts the larger of its flavors, per resource).
    async fn usage(&self, project_id: &str) -> Result<Usage, StoreError>;
}

/// Flavors and images.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Creates a flavor (`flavor.id` is ignored and assigned).
    async fn create_flavor(&self, flavor: &Flavor) -> Result<Flavor, StoreError>;
    /// All flavors, deleted ones included.
    async fn list_flavors(&self) -> Result<Vec<Flavor>, StoreError>;
    /// One flavor.
    async fn flavor(&self, id: FlavorId) -> Result<Option<Flavor>, StoreError>;
    /// Creates or replaces an image (by id).
    async fn put_image(&self, image: &Image) -> Result<Image, StoreError>;
    /// All images.
    async fn list_images(&self) -> Result<Vec<Image>, StoreError>;
    /// One image.
    async fn image(&self, id: &str) -> Result<Option<Image>, StoreError>;
}

/// Ganeti clusters known to the control plane.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BackendStore: Send + Sync {
    /// Creates a backend, or updates host/port of the one with that name.
    async fn upsert_backend(
        &self,
        name: &str,
        host: &str,
        port: u16,
    ) -> Result<Backend, StoreError>;
    /// All backends.
    async fn list_backends(&self) -> Result<Vec<Backend>, StoreError>;
    /// One backend.
    async fn backend(&self, id: BackendId) -> Result<Option<Backend>, StoreError>;
    /// Sets the drained/offline flags (`None` leaves a flag alone).
    async fn set_backend_flags(
        &self,
        id: BackendId,
        drained: Option<bool>,
        offline: Option<bool>,
    ) -> Result<Backend, StoreError>;
    /// Per backend: non-deleted VMs and their summed RAM (MiB).
    async fn backend_usage(&self) -> Result<HashMap<BackendId, Usage>, StoreError>;
}

/// A filter for listing VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmQuery {
    /// Only this project's VMs (`None`: all; operators only).
    pub project_id: Option<String>,
    /// Include soft-deleted VMs.
    pub include_deleted: bool,
    /// Name contains this (case-sensitive substring).
    pub name_contains: Option<String>,
    /// Exact name.
    pub name_exact: Option<String>,
    /// Name matches this regular expression (searched anywhere in the
    /// name, as Nova's `name` filter). Applied in the store process, not in
    /// SQL (the three backends' regex dialects differ), before `limit`.
    pub name_regex: Option<crate::model::NameRegex>,
    /// Only these operstates.
    pub operstates: Option<Vec<OperState>>,
    /// Only this flavor.
    pub flavor_id: Option<FlavorId>,
    /// Only this image.
    pub image_id: Option<String>,
    /// Only this backend.
    pub backend_id: Option<BackendId>,
    /// Changed at or after this time.
    pub changes_since: Option<DateTime<Utc>>,
    /// Newest first (by id) when true, else oldest first.
    pub newest_first: bool,
    /// Page marker: only ids after this one in the chosen order.
    pub marker: Option<VmId>,
    /// Page size.
    pub limit: Option<u64>,
}

/// One state change to write, guarded by the version it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStateUpdate {
    /// The VM.
    pub id: VmId,
    /// The version the new state was derived from.
    pub expected_version: i64,
    /// The new state.
    pub state: VmState,
    /// Replace the VM's NICs with these, if given.
    pub nics: Option<Vec<Nic>>,
    /// Backend parameters Ganeti reported set (a successful
    /// `OP_INSTANCE_SET_PARAMS` or create): the store gives the VM the flavor they
    /// match ([`BeParams::new_flavor`]) in the same transaction, or keeps
    /// its flavor when none does (reconciliation then reports it).
    pub resize: Option<BeParams>,
    /// The image the VM has from now on (a rebuild that succeeded), set in
    /// the same transaction.
    pub image: Option<String>,
    /// The instance-action history entry this write makes (a request
    /// accepted, its job submitted, or its failure), in the same
    /// transaction as the state.
    pub action_log: Option<ActionLog>,
}

/// Virtual machines, their metadata and NICs.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait VmStore: Send + Sync {
    /// Stores a new VM in BUILD, checking `quota` against the project's
    /// usage in the same transaction (no over-commit under concurrency).
    async fn create_vm(&self, vm: &NewVm, quota: Quota) -> Result<Vm, StoreError>;
    /// One VM (deleted ones included).
    async fn vm(&self, id: VmId) -> Result<Option<Vm>, StoreError>;
    /// Several VMs by id (missing ids are simply absent).
    async fn vms(&self, ids: &[VmId]) -> Result<Vec<Vm>, StoreError>;
    /// VMs matching a filter.
    async fn list_vms(&self, query: &VmQuery) -> Result<Vec<Vm>, StoreError>;
    /// Number of VMs (non-deleted).
    async fn count_vms(&self) -> Result<u64, StoreError>;
    /// Writes a new state if the VM is still at `expected_version`;
    /// [`StoreError::Conflict`] otherwise. Returns the stored VM.
    async fn update_vm_state(&self, update: &VmStateUpdate) -> Result<Vm, StoreError>;
    /// [`VmStore::update_vm_state`] for a write that may make the project
    /// use more (a resize's reservation): under the project's lock, in the
    /// same transaction, the project's usage after the write (resizes
    /// count the larger of their flavors, see
    /// [`IdentityStore::usage`]) must stay within `quota` for every
    /// resource the write increases; `QuotaExceeded` (what was in use, what
    /// the write adds) otherwise, and nothing is written. A resource the
    /// write does not increase is not checked, so a project already over a
    /// lowered limit can still shrink.
    async fn update_vm_state_within(
        &self,
        update: &VmStateUpdate,
        quota: Quota,
    ) -> Result<Vm, StoreError>;
    /// Writes many state updates in one transaction; per update, `Ok` or the
    /// error (typically `Conflict`) that made that one alone not apply.
    async fn update_vm_states(
        &self,
        updates: &[VmStateUpdate],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;
    /// Sets a VM's flavor and cluster if it is still at `expected_version`
    /// (`Conflict` otherwise, `NotFound` for an unknown VM, `Integrity` for
    /// an unknown flavor or cluster); bumps the version like a state update.
    async fn update_vm_placement(
        &self,
        id: VmId,
        expected_version: i64,
        placement: &VmPlacement,
    ) -> Result<Vm, StoreError>;
    /// A server's instance-action history, newest first, at most `limit`
    /// entries (deleted servers included: the history outlives them).
    async fn instance_actions(
        &self,
        id: VmId,
        limit: u64,
    ) -> Result<Vec<InstanceAction>, StoreError>;
    /// Stores several new VMs of one project in one transaction, with the
    /// quota checked once for the whole batch (all or nothing: a batch that
    /// does not fit stores none and is `QuotaExceeded` for its total). The
    /// VMs get `access_ips`. In input order.
    async fn create_vms(
        &self,
        new: &[NewVm],
        access_ips: &AccessIps,
        quota: Quota,
    ) -> Result<Vec<Vm>, StoreError> {
        let attrs = NewVmAttrs {
            access: *access_ips,
            ..NewVmAttrs::default()
        };
        self.create_vms_with(new, &attrs, quota).await
    }
    /// [`VmStore::create_vms`] with everything a create may store besides
    /// the VM rows (access addresses, key pair names), in the same
    /// transaction.
    async fn create_vms_with(
        &self,
        new: &[NewVm],
        attrs: &NewVmAttrs,
        quota: Quota,
    ) -> Result<Vec<Vm>, StoreError>;
    /// What server views show besides the VM rows (access addresses, key
    /// names, lock) of existing VMs; a VM with none of them set may be
    /// absent (its attributes are the default).
    async fn server_attrs_of(&self, ids: &[VmId])
    -> Result<HashMap<VmId, ServerAttrs>, StoreError>;
    /// Locks (`Some`) or unlocks (`None`) a VM, and records `action` (the
    /// request's history entry) in the same transaction; bumps its version
    /// like any change. `NotFound` for an unknown VM.
    async fn set_vm_lock(
        &self,
        id: VmId,
        lock: Option<VmLock>,
        action: Option<InstanceAction>,
    ) -> Result<(), StoreError>;
    /// `accessIPv4`/`accessIPv6` of VMs (a VM with neither set is absent).
    async fn access_ips_of(&self, ids: &[VmId]) -> Result<HashMap<VmId, AccessIps>, StoreError>;
    /// Sets a VM's access addresses (bumps its version like any change).
    async fn set_access_ips(&self, id: VmId, ips: &AccessIps) -> Result<(), StoreError>;
    /// Renames a VM.
    async fn rename_vm(&self, id: VmId, name: &str) -> Result<Vm, StoreError>;
    /// Replaces (`replace = true`) or merges a VM's metadata; returns the result.
    async fn set_vm_metadata(
        &self,
        id: VmId,
        items: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<BTreeMap<String, String>, StoreError>;
    /// Deletes one metadata key; `NotFound` if absent.
    async fn delete_vm_metadata(&self, id: VmId, key: &str) -> Result<(), StoreError>;
    /// A VM's NICs in index order.
    async fn nics(&self, id: VmId) -> Result<Vec<Nic>, StoreError>;
    /// NICs of many VMs at once (no N+1 for `servers/detail`).
    async fn nics_of(&self, ids: &[VmId]) -> Result<HashMap<VmId, Vec<Nic>>, StoreError>;
    /// Replaces a VM's NICs.
    async fn set_nics(&self, id: VmId, nics: &[Nic]) -> Result<(), StoreError>;
    /// The project's VM generation: a counter that every committed change
    /// to one of the project's VMs (creation, state, name, metadata, NICs)
    /// increases in the same transaction. Read it before reading VMs: equal
    /// generations mean equal VM data, whichever process wrote. `NotFound`
    /// for an unknown project.
    async fn vm_generation(&self, project_id: &str) -> Result<i64, StoreError>;
    /// [`VmStore::vm_generation`] of several projects in one read; unknown
    /// projects are absent from the map.
    async fn vm_generations(
        &self,
        project_ids: &[String],
    ) -> Result<HashMap<String, i64>, StoreError>;
    /// The `limit` non-deleted VMs reconciled longest ago (never first).
    async fn least_recently_reconciled(&self, limit: u64) -> Result<Vec<Vm>, StoreError>;
    /// Stamps `ids` as reconciled at `at`.
    async fn mark_reconciled(&self, ids: &[VmId], at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Raises a building server's image-copy progress to `percent`
    /// (snf-image's `image-copy-progress`): only while the server is in
    /// BUILD and not deleted, only upwards, so duplicates and reordered
    /// messages never lower it and a message read after the create
    /// succeeded changes nothing (`Ignored`). Neither the state nor the
    /// version changes; the project's VM generation does when the value
    /// does. `NotFound` for an unknown server.
    async fn record_build_progress(
        &self,
        id: VmId,
        percent: u8,
    ) -> Result<crate::model::BuildWrite, StoreError>;
    /// Stores a diagnostic entry of a server (an snf-image message read at
    /// `time_us`), keeping the newest `keep` entries of that server; a
    /// redelivered message (same server, time, source and message) and a
    /// deleted server's are `Ignored`. `NotFound` for an unknown server.
    async fn record_diagnostic(
        &self,
        id: VmId,
        time_us: i64,
        diagnostic: &crate::messages::NewDiagnostic,
        keep: u32,
    ) -> Result<crate::model::BuildWrite, StoreError>;
    /// A server's diagnostics, newest first, at most `limit`.
    async fn diagnostics(
        &self,
        id: VmId,
        limit: u64,
    ) -> Result<Vec<crate::model::Diagnostic>, StoreError>;
    /// The newest diagnostic of each of `ids` that has one.
    async fn latest_diagnostics(
        &self,
        ids: &[VmId],
    ) -> Result<HashMap<VmId, crate::model::Diagnostic>, StoreError>;
    /// The `user_data` given at create of each of `ids` that has one.
    async fn user_data_of(&self, ids: &[VmId]) -> Result<HashMap<VmId, String>, StoreError>;
}

/// Users' key pairs (Nova's `os-keypairs`): per user, names unique per
/// user.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait KeypairStore: Send + Sync {
    /// Stores a key pair if the user has fewer than `limit` (`None`:
    /// unlimited), checked in the same transaction as the insert.
    /// `Integrity` if the user already has one of that name,
    /// `QuotaExceeded` (resource `keypairs`) over the limit, `NotFound`
    /// for an unknown user.
    async fn create_keypair(
        &self,
        new: &NewKeypair,
        limit: Option<i64>,
    ) -> Result<Keypair, StoreError>;
    /// A user's key pairs by name, after `marker` (a name) if given, at
    /// most `limit`.
    async fn keypairs(
        &self,
        user_id: &str,
        marker: Option<String>,
        limit: Option<u64>,
    ) -> Result<Vec<Keypair>, StoreError>;
    /// One of a user's key pairs.
    async fn keypair(&self, user_id: &str, name: &str) -> Result<Option<Keypair>, StoreError>;
    /// Deletes one of a user's key pairs; `NotFound` if there is none.
    async fn delete_keypair(&self, user_id: &str, name: &str) -> Result<(), StoreError>;
}

/// A filter for listing networks, subnets, ports or floating IPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetQuery {
    /// Only what this project may see (its own, plus shared and external
    /// networks and their subnets); `None`: everything (operators).
    pub project_id: Option<String>,
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Exact name.
    pub name: Option<String>,
    /// Only on this network.
    pub network_id: Option<String>,
    /// Subnets: only on one of these networks.
    pub network_ids: Option<Vec<String>>,
    /// Ports: only bound to this device.
    pub device_id: Option<String>,
    /// Only external (`router:external`) networks, or only others.
    pub external: Option<bool>,
    /// Only shared networks, or only others.
    pub shared: Option<bool>,
    /// Ports: this MAC; floating IPs: not used.
    pub mac: Option<String>,
    /// Ports: holding this address; floating IPs: this address.
    pub address: Option<std::net::IpAddr>,
    /// Floating IPs: associated with this port.
    pub port_id: Option<String>,
    /// Floating IPs: associated with one of these ports.
    pub port_ids: Option<Vec<String>>,
    /// Page marker: ids after this one (ids ascending).
    pub marker: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
}

/// Networks, subnets, ports (a server's NICs), floating IPs and the
/// address pools behind them. Addresses are allocated under the subnet's
/// row lock, so no two holders ever share one, across any number of
/// processes (see [`crate::network`]).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait NetworkStore: Send + Sync {
    /// Stores a network, checking the owner's count against `limit` in the
    /// same transaction (`QuotaExceeded`, resource `networks`), and leasing
    /// its link and MAC prefix from [`NewNetwork::pools`] there too (the
    /// lowest value no network holds, under the kind's lock; `Exhausted`
    /// when none is left). Deleting the network releases them.
    async fn create_network(
        &self,
        new: &NewNetwork,
        limit: Option<i64>,
    ) -> Result<Network, StoreError>;
    /// One network.
    async fn network(&self, id: &str) -> Result<Option<Network>, StoreError>;
    /// Networks matching a filter, by id.
    async fn list_networks(&self, query: &NetQuery) -> Result<Vec<Network>, StoreError>;
    /// Changes a network.
    async fn update_network(&self, id: &str, update: &NetworkUpdate)
    -> Result<Network, StoreError>;
    /// Sets a network's status.
    async fn set_network_status(&self, id: &str, status: NetworkStatus) -> Result<(), StoreError>;
    /// Deletes a network and its subnets; `Integrity` ("in use") while it
    /// has ports or floating IPs.
    async fn delete_network(&self, id: &str) -> Result<(), StoreError>;
    /// The clusters a network has been created on (Ganeti name made and
    /// connected).
    async fn network_backends(&self, id: &str) -> Result<Vec<BackendId>, StoreError>;
    /// Records that a network exists on a cluster (idempotent), or that it
    /// no longer does (`present = false`).
    async fn set_network_backend(
        &self,
        id: &str,
        backend: BackendId,
        present: bool,
    ) -> Result<(), StoreError>;
    /// Stores a subnet and its pool; `Integrity` if the network already has
    /// a subnet of that IP version (Synnefo's rule: one of each).
    async fn create_subnet(&self, new: &NewSubnet) -> Result<Subnet, StoreError>;
    /// One subnet.
    async fn subnet(&self, id: &str) -> Result<Option<Subnet>, StoreError>;
    /// Subnets matching a filter (`project_id`: those of visible networks).
    async fn list_subnets(&self, query: &NetQuery) -> Result<Vec<Subnet>, StoreError>;
    /// Changes a subnet.
    async fn update_subnet(&self, id: &str, update: &SubnetUpdate) -> Result<Subnet, StoreError>;
    /// Deletes a subnet; `Integrity` while addresses of it are held.
    async fn delete_subnet(&self, id: &str) -> Result<(), StoreError>;
    /// Stores a port with a new MAC and its addresses, allocated in the same
    /// transaction: `Integrity` for an address already held,
    /// `Exhausted` when a pool is empty, `QuotaExceeded` (resource
    /// `ports`) when the project holds [`NewPort::port_limit`] ports
    /// already. Opens the address history.
    async fn create_port(&self, new: &NewPort) -> Result<Port, StoreError>;
    /// One port.
    async fn port(&self, id: &str) -> Result<Option<Port>, StoreError>;
    /// Ports matching a filter, by id.
    async fn list_ports(&self, query: &NetQuery) -> Result<Vec<Port>, StoreError>;
    /// The ports bound to these servers, per server in creation order (no
    /// N+1 for `servers/detail`).
    async fn ports_of(&self, servers: &[VmId]) -> Result<HashMap<VmId, Vec<Port>>, StoreError>;
    /// Changes a port.
    async fn update_port(&self, id: &str, update: &PortUpdate) -> Result<Port, StoreError>;
    /// Deletes a port: its addresses go back to their pools, floating IPs
    /// associated with it are disassociated, the history is closed.
    async fn delete_port(&self, id: &str) -> Result<(), StoreError>;
    /// Allocates a floating IP on an external network (`address`: this
    /// one, else any free), checking the project's count against `limit`
    /// in the same transaction (`QuotaExceeded`, resource `floating_ips`).
    async fn create_floating_ip(
        &self,
        project_id: &str,
        user_id: Option<String>,
        network_id: &str,
        address: Option<std::net::IpAddr>,
        description: &str,
        limit: Option<i64>,
    ) -> Result<FloatingIp, StoreError>;
    /// One floating IP.
    async fn floating_ip(&self, id: &str) -> Result<Option<FloatingIp>, StoreError>;
    /// Floating IPs matching a filter, by id.
    async fn list_floating_ips(&self, query: &NetQuery) -> Result<Vec<FloatingIp>, StoreError>;
    /// Associates a floating IP with a port and one of its addresses, with a
    /// new MAC for the NIC that will carry it (`Some`), or disassociates it
    /// (`None`); `Integrity` if it is associated elsewhere already.
    async fn associate_floating_ip(
        &self,
        id: &str,
        port: Option<(String, std::net::IpAddr)>,
        mac_prefix: &str,
    ) -> Result<FloatingIp, StoreError>;
    /// Releases a floating IP (its address back to the pool).
    async fn delete_floating_ip(&self, id: &str) -> Result<(), StoreError>;
    /// Who held an address when, newest first.
    async fn ip_history(
        &self,
        address: std::net::IpAddr,
        limit: u64,
    ) -> Result<Vec<IpHistoryEntry>, StoreError>;
    /// The links or MAC prefixes networks hold from their flavors' pools.
    async fn pool_leases(&self, kind: PoolKind) -> Result<Vec<PoolLease>, StoreError>;
    /// A subnet's pool: its size and the addresses held.
    async fn pool_usage(&self, subnet_id: &str) -> Result<PoolUsage, StoreError>;
    /// Checks a subnet's free list against the addresses held (under the
    /// subnet's lock); with `fix`, rebuilds the free list from them.
    async fn check_pool(&self, subnet_id: &str, fix: bool) -> Result<PoolCheck, StoreError>;
}

/// The whole store: one database, the single source of truth.
pub trait Store:
    IdentityStore + CatalogStore + BackendStore + VmStore + KeypairStore + NetworkStore
{
}

impl<T: IdentityStore + CatalogStore + BackendStore + VmStore + KeypairStore + NetworkStore> Store
    for T
{
}

// ---------------------------------------------------------------- Bus

/// A message handed to a consumer; ack it only after its effects commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Consumer-local delivery tag (acks refer to it).
    pub tag: u64,
    /// Which queue it came from.
    pub kind: MessageKind,
    /// The raw body.
    pub body: Vec<u8>,
    /// True if the broker delivered it before (possibly already applied).
    pub redelivered: bool,
}

/// A consumer on one message kind.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Subscription: Send {
    /// Waits for at least one message, then returns up to `max` that are
    /// ready. `Err(BusError::Closed)` once the bus shuts down.
    async fn recv_batch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError>;
    /// Acknowledges deliveries (their effects are committed).
    async fn ack(&mut self, tags: &[u64]) -> Result<(), BusError>;
    /// Moves a delivery to the dead-letter queue with a reason.
    async fn dead_letter(&mut self, tag: u64, reason: &str) -> Result<(), BusError>;
    /// Returns a delivery to the queue for another try.
    async fn requeue(&mut self, tag: u64) -> Result<(), BusError>;
}

/// Backend notifications: publish with confirmation, consume with ack.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes a persistent message and waits for the broker's confirm.
    async fn publish(&self, kind: MessageKind, body: Vec<u8>) -> Result<(), BusError>;
    /// Starts consuming one kind (competing consumers share the queue).
    async fn subscribe(&self, kind: MessageKind) -> Result<Box<dyn Subscription>, BusError>;
}

// ---------------------------------------------------------------- Clock

/// Wall-clock time, injectable.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
