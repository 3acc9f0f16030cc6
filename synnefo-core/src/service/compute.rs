//! Compute use cases: what both API dialects (OpenStack Nova v2.1 and
//! Synnefo's own Cyclades v2.0) call.
//!
//! Why it lives here and not in the API crate: the HTTP adapters differ in
//! paths, JSON shapes and status names, but the rules must not. Creating a
//! server validates the request against the catalog *before* storing
//! anything (a bad flavor or image is a 400 at request time, never a server
//! that later goes to ERROR), reserves quota atomically in the store
//! ([`VmStore::create_vm`](crate::ports::VmStore::create_vm)), places the VM on a Ganeti backend and submits
//! the RAPI job. Actions go through the state machine
//! ([`state::start_action`]) via [`modify_vm`], then Ganeti, then record the
//! job id; the dispatcher later applies the job's notifications through the
//! same [`modify_vm`].
//!
//! Failure policy when talking to Ganeti (documented in `docs/api.md`):
//!
//! * **Create, Ganeti refuses** (a [`BackendError::Rejected`],
//!   [`BackendError::JobFailed`], ...): the VM goes to ERROR with Ganeti's
//!   message as its fault, and the caller gets the server back (202), as
//!   Nova does for a failed build.
//! * **Create, Ganeti unreachable** ([`BackendError::Unavailable`]): the VM
//!   is rolled back (marked deleted and destroyed, so it stops counting
//!   against quota) and the caller gets a 503. Should the job have reached
//!   Ganeti after all, reconciliation finds an instance whose VM is deleted
//!   and removes it.
//! * **Action, Ganeti unreachable or refusing**: the state change is rolled
//!   back (the pending action and the previous backend job are restored), so
//!   the user can simply retry; the caller gets a 503 (unreachable) or a 409
//!   (refused).
//! * **Delete of an instance Ganeti does not have**: the VM is destroyed at
//!   once; there is nothing left to remove. For a VM in ERROR (its create
//!   failed) the instance is looked up first ([`GanetiBackend::instance_info`]).
//!   Otherwise Ganeti takes the removal job whatever the name and fails it
//!   (`OpPrereqError`, `unknown_entity`); the dispatcher then destroys the
//!   VM ([`state::OpStatusEvent::determined_state`]).
//!
//! The core stays free of I/O of its own: placement and console forwarding
//! are ports ([`Placement`], [`ConsoleForwarder`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;

use crate::error::{BackendError, ServiceError, StoreError};
use crate::ids::{BackendId, FlavorId, InstanceName, JobId, VmId};
use crate::model::{Backend, Flavor, Image, NewVm, Nic, Quota, Usage, Vm};
use crate::ports::{Clock, GanetiBackend, InstanceSpec, NicSpec, Store, VmQuery};
use crate::service::{VmChange, modify_vm};
use crate::state::{
    self, Action, BackendJob, JobStatus, OpCode, OperState, PendingAction, RebootKind,
    ServerStatus, VmState,
};

/// Longest server name accepted (Nova's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Most metadata items a server may carry (Nova's `maxServerMeta`).
pub const MAX_SERVER_META: usize = 128;
/// Longest metadata key or value.
pub const MAX_META_LEN: usize = 255;
/// Largest page a list returns (Nova's `[api] max_limit`).
pub const MAX_PAGE: u64 = 1000;
/// Length of generated admin passwords.
pub const ADMIN_PASS_LEN: usize = 12;
/// The OS parameter that carries the admin password to snf-image.
pub const PASSWORD_OSPARAM: &str = "img_passwd";

/// Who is calling: the identity behind a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: String,
    /// The project the token is scoped to; the caller sees only its servers.
    pub project_id: String,
    /// Operators.
    pub is_admin: bool,
}

/// Settings the compute service needs (from `Settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeConfig {
    /// Instance-name prefix (`snf-`).
    pub prefix: String,
    /// Disk template for flavors that do not name one.
    pub default_disk_template: String,
    /// NIC for new VMs.
    pub nic: NicSpec,
    /// How long Ganeti waits for a clean shutdown.
    pub shutdown_timeout: Duration,
}

impl ComputeConfig {
    /// The compute settings out of the merged settings.
    pub fn from_settings(s: &crate::settings::Settings) -> Self {
        let g = &s.ganeti;
        let nic = if g.default_nic_network.is_empty() {
            NicSpec {
                network: None,
                mode: non_empty(&g.default_nic_mode),
                link: non_empty(&g.default_nic_link),
                ip: None,
            }
        } else {
            NicSpec {
                network: Some(g.default_nic_network.clone()),
                mode: None,
                link: None,
                ip: Some("pool".into()),
            }
        };
        Self {
            prefix: s.backend_prefix_id.clone(),
            default_disk_template: g.default_disk_template.clone(),
            nic,
            shutdown_timeout: Duration::from_secs(g.shutdown_timeout_secs),
        }
    }
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            prefix: "snf-".into(),
            default_disk_template: "plain".into(),
            nic: NicSpec {
                network: None,
                mode: Some("bridged".into()),
                link: Some("br0".into()),
                ip: None,
            },
            shutdown_timeout: Duration::from_secs(120),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

// ---------------------------------------------------------------- ports

/// Chooses the Ganeti backend for a new VM.
#[async_trait]
pub trait Placement: Send + Sync {
    /// Picks one of `candidates` (never empty; drained and offline backends
    /// already removed) for a VM of `flavor`. `usage` is the VMs and RAM
    /// each backend already holds according to the DB.
    async fn place(
        &self,
        candidates: &[Backend],
        usage: &HashMap<BackendId, Usage>,
        flavor: &Flavor,
    ) -> Result<BackendId, ServiceError>;
}

/// Default placement: the backend with the least RAM allocated in the DB,
/// then the fewest VMs, then the lowest id (deterministic).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

#[async_trait]
impl Placement for LeastLoaded {
    async fn place(
        &self,
        candidates: &[Backend],
        usage: &HashMap<BackendId, Usage>,
        _flavor: &Flavor,
    ) -> Result<BackendId, ServiceError> {
        candidates
            .iter()
            .min_by_key(|b| {
                let u = usage.get(&b.id).copied().unwrap_or_default();
                (u.ram_mib, u.servers, b.id)
            })
            .map(|b| b.id)
            .ok_or_else(|| BackendError::NoBackend("no backend accepts new servers".into()).into())
    }
}

/// A boxed placement future (see [`PlaceWith`]).
pub type PlacementFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<BackendId, ServiceError>> + Send>>;

/// Placement by a closure over owned candidates and flavor, for callers
/// that would rather not implement an async trait (e.g. to plug in
/// synnefo-ganeti's allocator, which reads cluster loads over RAPI).
pub struct PlaceWith<F>(pub F);

impl<F> std::fmt::Debug for PlaceWith<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaceWith(..)")
    }
}

#[async_trait]
impl<F> Placement for PlaceWith<F>
where
    F: Fn(Vec<Backend>, Flavor) -> PlacementFuture + Send + Sync,
{
    async fn place(
        &self,
        candidates: &[Backend],
        _usage: &HashMap<BackendId, Usage>,
        flavor: &Flavor,
    ) -> Result<BackendId, ServiceError> {
        (self.0)(candidates.to_vec(), flavor.clone()).await
    }
}

/// Asks the console proxy (vncauthproxy) for a one-time forwarding.
#[async_trait]
pub trait ConsoleForwarder: Send + Sync {
    /// Forwards a new proxy port to `host:port` guarded by `password`;
    /// returns where clients connect. `label` names the session in logs.
    async fn forward(
        &self,
        host: &str,
        port: u16,
        password: &str,
        label: &str,
    ) -> Result<ProxyEndpoint, ServiceError>;
}

/// Where a console client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// Public host of the proxy.
    pub host: String,
    /// Allocated port.
    pub port: u16,
}

/// A console ready for a client: connect to host:port with the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleAccess {
    /// Always `vnc` for now.
    pub protocol: String,
    /// Proxy host.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// One-time password.
    pub password: String,
}

// ---------------------------------------------------------------- requests

/// A validated-on-use create request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateServer {
    /// Display name.
    pub name: String,
    /// Flavor reference (`flavorRef`: an id, or a URL ending in one).
    pub flavor_ref: String,
    /// Image reference (`imageRef`: an id, or a URL ending in one).
    pub image_ref: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Admin password chosen by the caller (generated when `None`).
    pub admin_pass: Option<String>,
    /// Create without a NIC (Nova's `networks: "none"`).
    pub no_nic: bool,
}

/// A created server and the admin password it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedServer {
    /// The stored VM (BUILD, or ERROR if Ganeti refused it).
    pub vm: Vm,
    /// The admin password (shown once).
    pub admin_pass: String,
}

/// Server list filters (already parsed by the adapter).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerFilter {
    /// Name contains this.
    pub name: Option<String>,
    /// Only these statuses.
    pub statuses: Option<Vec<ServerStatus>>,
    /// Only this image id.
    pub image: Option<String>,
    /// Only this flavor id.
    pub flavor: Option<FlavorId>,
    /// Changed at or after (includes deleted servers, as in Nova).
    pub changes_since: Option<DateTime<Utc>>,
    /// Page marker (a server id the caller saw).
    pub marker: Option<VmId>,
    /// Page size.
    pub limit: Option<u64>,
}

/// Flavor list filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlavorFilter {
    /// At least this much disk (GiB).
    pub min_disk: Option<i32>,
    /// At least this much RAM (MiB).
    pub min_ram: Option<i32>,
    /// `Some(true)`: public only; `Some(false)`: private only; `None`: both
    /// (private ones for operators only).
    pub is_public: Option<bool>,
    /// Page marker (a flavor id).
    pub marker: Option<FlavorId>,
    /// Page size.
    pub limit: Option<u64>,
}

/// Image list filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Only this status (case-insensitive).
    pub status: Option<String>,
    /// Page marker (an image id).
    pub marker: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
}

/// A project's limits and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The quota.
    pub quota: Quota,
    /// Current usage.
    pub usage: Usage,
}

/// The error recorded on a VM whose create failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Ganeti's message.
    pub message: String,
    /// When it was recorded.
    pub created: DateTime<Utc>,
}

/// The fault of an ERROR VM, if any.
pub fn fault(vm: &Vm) -> Option<Fault> {
    if vm.state.operstate != OperState::Error {
        return None;
    }
    let message = match &vm.state.job {
        Some(job) if matches!(job.status, JobStatus::Error | JobStatus::Canceled) => job
            .log_msg
            .clone()
            .unwrap_or_else(|| format!("Ganeti job {} failed", job.job_id)),
        _ => "the server failed to build".to_string(),
    };
    Some(Fault {
        message,
        created: vm.updated,
    })
}

// ---------------------------------------------------------------- validation

/// Checks a server name: 1..=255 characters, no control characters, no
/// leading or trailing whitespace.
pub fn validate_server_name(name: &str) -> Result<(), ServiceError> {
    let bad = |why: &str| {
        Err(ServiceError::BadRequest(format!(
            "Invalid input for field/attribute name. {why}"
        )))
    };
    if name.is_empty() {
        return bad("The name must not be empty.");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return bad(&format!(
            "The name is longer than {MAX_NAME_LEN} characters."
        ));
    }
    if name.chars().any(char::is_control) {
        return bad("The name contains control characters.");
    }
    if name.trim() != name {
        return bad("The name has leading or trailing whitespace.");
    }
    Ok(())
}

/// Checks metadata sizes (Nova: 403 for too many items, 400 for bad keys).
pub fn validate_metadata(items: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if items.len() > MAX_SERVER_META {
        return Err(ServiceError::OverLimit(format!(
            "Quota exceeded for metadata items: {} requested, limit {MAX_SERVER_META}",
            items.len()
        )));
    }
    for (k, v) in items {
        if k.is_empty() || k.chars().count() > MAX_META_LEN {
            return Err(ServiceError::BadRequest(format!(
                "Invalid metadata key {k:?}: must be 1 to {MAX_META_LEN} characters"
            )));
        }
        if k.chars().any(char::is_control) {
            return Err(ServiceError::BadRequest(format!(
                "Invalid metadata key {k:?}: control characters"
            )));
        }
        if v.chars().count() > MAX_META_LEN {
            return Err(ServiceError::BadRequest(format!(
                "Invalid metadata value for {k:?}: longer than {MAX_META_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// The last path segment of a reference (`flavorRef` may be a URL).
pub fn ref_id(reference: &str) -> &str {
    reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(reference)
}

/// A random password of [`ADMIN_PASS_LEN`] letters and digits.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..ADMIN_PASS_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Is `image` visible to `caller`?
pub fn image_visible(image: &Image, caller: &Caller) -> bool {
    image.is_public || caller.is_admin || image.owner.as_deref() == Some(caller.project_id.as_str())
}

fn operstates_for(statuses: &[ServerStatus]) -> Vec<OperState> {
    let mut out = Vec::new();
    for s in statuses {
        let states: &[OperState] = match s {
            ServerStatus::Active | ServerStatus::Reboot | ServerStatus::HardReboot => {
                &[OperState::Started]
            }
            ServerStatus::Shutoff => &[OperState::Stopped],
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

// ---------------------------------------------------------------- service

/// The compute application service.
#[derive(Clone)]
pub struct Compute {
    store: Arc<dyn Store>,
    ganeti: Arc<dyn GanetiBackend>,
    placement: Arc<dyn Placement>,
    console: Option<Arc<dyn ConsoleForwarder>>,
    clock: Arc<dyn Clock>,
    config: ComputeConfig,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Compute {
    /// A service over `store` and `ganeti`, placing VMs with [`LeastLoaded`]
    /// and without a console proxy.
    pub fn new(
        store: Arc<dyn Store>,
        ganeti: Arc<dyn GanetiBackend>,
        config: ComputeConfig,
    ) -> Self {
        Self {
            store,
            ganeti,
            placement: Arc::new(LeastLoaded),
            console: None,
            clock: Arc::new(crate::ports::SystemClock),
            config,
        }
    }

    /// Uses another placement policy.
    pub fn with_placement(mut self, placement: Arc<dyn Placement>) -> Self {
        self.placement = placement;
        self
    }

    /// Enables consoles through `forwarder`.
    pub fn with_console(mut self, forwarder: Arc<dyn ConsoleForwarder>) -> Self {
        self.console = Some(forwarder);
        self
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ComputeConfig {
        &self.config
    }

    /// True when consoles can be handed out.
    pub fn has_console(&self) -> bool {
        self.console.is_some()
    }

    // ------------------------------------------------------------ catalog

    /// A flavor by reference, or 400 (`for_create`) / 404.
    async fn resolve_flavor(&self, reference: &str) -> Result<Option<Flavor>, ServiceError> {
        let Ok(id) = ref_id(reference).parse::<FlavorId>() else {
            return Ok(None);
        };
        Ok(self.store.flavor(id).await?)
    }

    /// A flavor visible to the caller, by id string; 404 otherwise.
    pub async fn flavor(&self, caller: &Caller, id: &str) -> Result<Flavor, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("Flavor {id} could not be found."));
        let flavor = self.resolve_flavor(id).await?.ok_or_else(not_found)?;
        if !flavor.is_public && !caller.is_admin {
            return Err(not_found());
        }
        Ok(flavor)
    }

    /// Flavors (not deleted), by id, filtered and paged.
    pub async fn list_flavors(
        &self,
        caller: &Caller,
        f: &FlavorFilter,
    ) -> Result<Vec<Flavor>, ServiceError> {
        let mut all: Vec<Flavor> = self
            .store
            .list_flavors()
            .await?
            .into_iter()
            .filter(|fl| !fl.deleted)
            .collect();
        all.sort_by_key(|fl| fl.id);
        let public = match (f.is_public, caller.is_admin) {
            (_, false) => Some(true),
            (p, true) => p,
        };
        let mut out: Vec<Flavor> = all
            .into_iter()
            .filter(|fl| public.is_none_or(|p| fl.is_public == p))
            .filter(|fl| f.min_disk.is_none_or(|d| fl.disk_gib >= d))
            .filter(|fl| f.min_ram.is_none_or(|r| fl.ram_mib >= r))
            .collect();
        if let Some(marker) = f.marker {
            let pos = out
                .iter()
                .position(|fl| fl.id == marker)
                .ok_or_else(|| ServiceError::BadRequest(format!("marker [{marker}] not found")))?;
            out.drain(..=pos);
        }
        out.truncate(f.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE) as usize);
        Ok(out)
    }

    /// An image visible to the caller; 404 otherwise.
    pub async fn image(&self, caller: &Caller, id: &str) -> Result<Image, ServiceError> {
        match self.store.image(id).await? {
            Some(img)
                if image_visible(&img, caller) && !img.status.eq_ignore_ascii_case("deleted") =>
            {
                Ok(img)
            }
            _ => Err(ServiceError::NotFound(format!(
                "Image {id} could not be found."
            ))),
        }
    }

    /// Images visible to the caller, by name then id, filtered and paged.
    pub async fn list_images(
        &self,
        caller: &Caller,
        f: &ImageFilter,
    ) -> Result<Vec<Image>, ServiceError> {
        let mut out: Vec<Image> = self
            .store
            .list_images()
            .await?
            .into_iter()
            .filter(|i| image_visible(i, caller) && !i.status.eq_ignore_ascii_case("deleted"))
            .filter(|i| f.name.as_ref().is_none_or(|n| &i.name == n))
            .filter(|i| f.ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
            .filter(|i| {
                f.status
                    .as_ref()
                    .is_none_or(|s| i.status.eq_ignore_ascii_case(s))
            })
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        if let Some(marker) = &f.marker {
            let pos = out
                .iter()
                .position(|i| &i.id == marker)
                .ok_or_else(|| ServiceError::BadRequest(format!("marker [{marker}] not found")))?;
            out.drain(..=pos);
        }
        out.truncate(f.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE) as usize);
        Ok(out)
    }

    /// All flavors by id, deleted ones included (to render servers).
    pub async fn flavor_map(&self) -> Result<HashMap<FlavorId, Flavor>, ServiceError> {
        Ok(self
            .store
            .list_flavors()
            .await?
            .into_iter()
            .map(|f| (f.id, f))
            .collect())
    }

    // ------------------------------------------------------------ servers

    /// A server of the caller's project (not deleted); 404 otherwise.
    pub async fn server(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("Instance {id} could not be found."));
        let vm_id: VmId = id.parse().map_err(|_| not_found())?;
        match self.store.vm(vm_id).await? {
            Some(vm) if vm.project_id == caller.project_id && !vm.state.deleted => Ok(vm),
            _ => Err(not_found()),
        }
    }

    /// A server with its NICs.
    pub async fn server_with_nics(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(Vm, Vec<Nic>), ServiceError> {
        let vm = self.server(caller, id).await?;
        let nics = self.store.nics(vm.id).await?;
        Ok((vm, nics))
    }

    /// The caller's servers, newest first, filtered and paged.
    pub async fn list_servers(
        &self,
        caller: &Caller,
        f: &ServerFilter,
    ) -> Result<Vec<Vm>, ServiceError> {
        if let Some(marker) = f.marker {
            match self.store.vm(marker).await? {
                Some(vm) if vm.project_id == caller.project_id => {}
                _ => {
                    return Err(ServiceError::BadRequest(format!(
                        "marker [{marker}] not found"
                    )));
                }
            }
        }
        let limit = f.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        // REBOOT / HARD_REBOOT are a pending action on a STARTED VM: the
        // store filters by operstate, the exact status is checked here, so
        // page after filtering in that case.
        let exact_status = f.statuses.as_ref().is_some_and(|s| {
            s.iter().any(|st| {
                matches!(
                    st,
                    ServerStatus::Reboot | ServerStatus::HardReboot | ServerStatus::Active
                )
            })
        });
        let query = VmQuery {
            project_id: Some(caller.project_id.clone()),
            include_deleted: f.changes_since.is_some()
                || f.statuses
                    .as_ref()
                    .is_some_and(|s| s.contains(&ServerStatus::Deleted)),
            name_contains: f.name.clone(),
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

    /// NICs of several servers.
    pub async fn nics_of(&self, vms: &[Vm]) -> Result<HashMap<VmId, Vec<Nic>>, ServiceError> {
        if vms.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
        Ok(self.store.nics_of(&ids).await?)
    }

    /// Creates a server: validate, reserve quota, place, submit to Ganeti.
    pub async fn create_server(
        &self,
        caller: &Caller,
        req: CreateServer,
    ) -> Result<CreatedServer, ServiceError> {
        validate_server_name(&req.name)?;
        validate_metadata(&req.metadata)?;
        let flavor = match self.resolve_flavor(&req.flavor_ref).await? {
            Some(f) if !f.deleted && (f.is_public || caller.is_admin) => f,
            _ => {
                return Err(ServiceError::BadRequest(format!(
                    "Flavor {} could not be found.",
                    req.flavor_ref
                )));
            }
        };
        let image_id = ref_id(&req.image_ref).to_string();
        let image = match self.store.image(&image_id).await? {
            Some(img) if image_visible(&img, caller) => img,
            _ => {
                return Err(ServiceError::BadRequest(format!(
                    "Image {} could not be found.",
                    req.image_ref
                )));
            }
        };
        if !image.status.eq_ignore_ascii_case("active") {
            return Err(ServiceError::BadRequest(format!(
                "Image {} is not active.",
                image.id
            )));
        }
        if flavor.disk_gib < image.min_disk_gib {
            return Err(ServiceError::BadRequest(format!(
                "Flavor's disk is too small for requested image. Flavor disk is {} GiB, minimum is {} GiB.",
                flavor.disk_gib, image.min_disk_gib
            )));
        }
        if flavor.ram_mib < image.min_ram_mib {
            return Err(ServiceError::BadRequest(format!(
                "Flavor's memory is too small for requested image. Flavor RAM is {} MiB, minimum is {} MiB.",
                flavor.ram_mib, image.min_ram_mib
            )));
        }
        let admin_pass = match req.admin_pass {
            Some(p) if !p.is_empty() => p,
            _ => generate_password(),
        };
        let backend = self.place(&flavor).await?;

        let quota = self.store.quota(&caller.project_id).await?;
        let new = NewVm {
            user_id: caller.user_id.clone(),
            project_id: caller.project_id.clone(),
            name: req.name,
            flavor: flavor.clone(),
            image_id: image.id.clone(),
            backend_id: Some(backend),
            metadata: req.metadata,
        };
        let vm = self.store.create_vm(&new, quota).await.map_err(|e| match e {
            StoreError::QuotaExceeded { resource, limit, in_use, requested } => ServiceError::OverLimit(format!(
                "Quota exceeded for {}: Requested {requested}, but already used {in_use} of {limit} {}",
                quota_resource_name(resource),
                quota_resource_name(resource)
            )),
            other => other.into(),
        })?;

        let mut osparams = image.osparams.clone();
        osparams.insert(PASSWORD_OSPARAM.into(), admin_pass.clone());
        let spec = InstanceSpec {
            backend,
            name: InstanceName::new(&self.config.prefix, vm.id).to_string(),
            vcpus: flavor.vcpus,
            ram_mib: flavor.ram_mib,
            disk_gib: flavor.disk_gib,
            disk_template: if flavor.disk_template.is_empty() {
                self.config.default_disk_template.clone()
            } else {
                flavor.disk_template.clone()
            },
            os_type: image.os_type.clone(),
            osparams,
            nics: if req.no_nic {
                Vec::new()
            } else {
                vec![self.config.nic.clone()]
            },
            hvparams: BTreeMap::new(),
            start: true,
        };
        match self.ganeti.create_instance(&spec).await {
            Ok(job) => {
                let stored = modify_vm(&*self.store, vm.id, |v| {
                    Ok(record_job(v, Action::Create, job))
                })
                .await?;
                Ok(CreatedServer {
                    vm: stored.unwrap_or(vm),
                    admin_pass,
                })
            }
            Err(BackendError::Unavailable(msg)) => {
                tracing::warn!(vm = %vm.id, error = %msg, "Ganeti unreachable on create; rolling the server back");
                modify_vm(&*self.store, vm.id, |v| {
                    let mut next = v.state.clone();
                    next.deleted = true;
                    next.operstate = OperState::Destroyed;
                    next.action = None;
                    Ok(Some(VmChange {
                        state: next,
                        nics: None,
                    }))
                })
                .await?;
                Err(BackendError::Unavailable(msg).into())
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(vm = %vm.id, error = %message, "Ganeti refused the create; server goes to ERROR");
                let stored = modify_vm(&*self.store, vm.id, |v| {
                    if v.state.operstate != OperState::Build {
                        return Ok(None);
                    }
                    let mut next = v.state.clone();
                    next.operstate = OperState::Error;
                    next.action = None;
                    next.job = Some(BackendJob {
                        job_id: JobId(0),
                        opcode: OpCode::InstanceCreate,
                        status: JobStatus::Error,
                        log_msg: Some(message.clone()),
                    });
                    Ok(Some(VmChange {
                        state: next,
                        nics: None,
                    }))
                })
                .await?;
                Ok(CreatedServer {
                    vm: stored.unwrap_or(vm),
                    admin_pass,
                })
            }
        }
    }

    async fn place(&self, flavor: &Flavor) -> Result<BackendId, ServiceError> {
        let candidates: Vec<Backend> = self
            .store
            .list_backends()
            .await?
            .into_iter()
            .filter(|b| !b.drained && !b.offline)
            .collect();
        if candidates.is_empty() {
            return Err(
                BackendError::NoBackend("no Ganeti backend accepts new servers".into()).into(),
            );
        }
        let usage = self.store.backend_usage().await?;
        let chosen = self.placement.place(&candidates, &usage, flavor).await?;
        if !candidates.iter().any(|b| b.id == chosen) {
            return Err(BackendError::NoBackend(format!(
                "placement chose unusable backend {chosen}"
            ))
            .into());
        }
        Ok(chosen)
    }

    /// Renames a server.
    pub async fn rename_server(
        &self,
        caller: &Caller,
        id: &str,
        name: &str,
    ) -> Result<Vm, ServiceError> {
        validate_server_name(name)?;
        let vm = self.server(caller, id).await?;
        Ok(self.store.rename_vm(vm.id, name).await?)
    }

    /// Starts a stopped server.
    pub async fn start(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Start).await
    }

    /// Shuts a running server down.
    pub async fn stop(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Stop).await
    }

    /// Reboots a server.
    pub async fn reboot(
        &self,
        caller: &Caller,
        id: &str,
        kind: RebootKind,
    ) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Reboot(kind)).await
    }

    /// Deletes a server (it disappears from listings at once).
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Destroy).await
    }

    /// Runs a user action: state machine, Ganeti, record the job.
    pub async fn act(&self, caller: &Caller, id: &str, action: Action) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        let before = vm.state.clone();
        let started = modify_vm(&*self.store, vm.id, |v| {
            let next = state::start_action(&v.state, action)?;
            Ok(Some(VmChange {
                state: next,
                nics: None,
            }))
        })
        .await?
        .unwrap_or(vm);
        let Some(backend) = started.backend_id else {
            // Never placed: nothing exists in Ganeti.
            return self.finish_without_ganeti(started, action).await;
        };
        let instance = InstanceName::new(&self.config.prefix, started.id).to_string();
        if action == Action::Destroy
            && started.state.operstate == OperState::Error
            && self.instance_absent(backend, &instance).await
        {
            // Its create failed: there is no instance, hence nothing for a
            // removal job to do (Ganeti would accept the job and fail it).
            return self.finish_without_ganeti(started, action).await;
        }
        let submitted = match action {
            Action::Start => self.ganeti.startup(backend, &instance).await,
            Action::Stop | Action::Suspend => {
                self.ganeti
                    .shutdown(backend, &instance, Some(self.config.shutdown_timeout))
                    .await
            }
            Action::Reboot(kind) => self.ganeti.reboot(backend, &instance, kind).await,
            Action::Destroy => self.ganeti.remove(backend, &instance).await,
            Action::Create | Action::Unsuspend => {
                return Ok(started);
            }
        };
        match submitted {
            Ok(job) => Ok(
                modify_vm(&*self.store, started.id, |v| Ok(record_job(v, action, job)))
                    .await?
                    .unwrap_or(started),
            ),
            Err(BackendError::NotFound(_)) if action == Action::Destroy => {
                self.finish_without_ganeti(started, action).await
            }
            Err(e) => {
                tracing::warn!(vm = %started.id, action = action.as_str(), error = %e, "Ganeti did not take the action; rolling back");
                modify_vm(&*self.store, started.id, |v| {
                    Ok(rollback(v, action, &before))
                })
                .await?;
                Err(match e {
                    BackendError::Unavailable(_)
                    | BackendError::NoBackend(_)
                    | BackendError::Rejected(_) => e.into(),
                    other => BackendError::Rejected(other.to_string()).into(),
                })
            }
        }
    }

    /// True only if Ganeti answers that it does not have `instance`; an
    /// unreachable cluster is not an answer (the caller then submits the
    /// removal as usual, whose outcome settles the VM).
    async fn instance_absent(&self, backend: BackendId, instance: &str) -> bool {
        match self.ganeti.instance_info(backend, instance).await {
            Ok(found) => found.is_none(),
            Err(e) => {
                tracing::warn!(%instance, error = %e, "cannot tell whether the instance exists; submitting its removal");
                false
            }
        }
    }

    /// Completes a destroy that needs no Ganeti job.
    async fn finish_without_ganeti(&self, vm: Vm, action: Action) -> Result<Vm, ServiceError> {
        if action != Action::Destroy {
            return Err(
                BackendError::Rejected(format!("server {} has no Ganeti instance", vm.id)).into(),
            );
        }
        Ok(modify_vm(&*self.store, vm.id, |v| {
            let mut next = v.state.clone();
            next.deleted = true;
            next.operstate = OperState::Destroyed;
            next.action = None;
            Ok(Some(VmChange {
                state: next,
                nics: None,
            }))
        })
        .await?
        .unwrap_or(vm))
    }

    /// Hands out a console: Ganeti's console location, forwarded through
    /// the proxy with a fresh one-time password.
    pub async fn console(&self, caller: &Caller, id: &str) -> Result<ConsoleAccess, ServiceError> {
        let vm = self.server(caller, id).await?;
        if vm.state.operstate != OperState::Started {
            return Err(BackendError::Rejected(format!(
                "Instance {} is not ready for a console (status {}).",
                vm.id,
                state::server_status(&vm.state).as_str()
            ))
            .into());
        }
        let Some(forwarder) = &self.console else {
            return Err(BackendError::Unavailable("no console proxy is configured".into()).into());
        };
        let backend = vm.backend_id.ok_or_else(|| {
            BackendError::Rejected(format!("server {} has no Ganeti instance", vm.id))
        })?;
        let instance = InstanceName::new(&self.config.prefix, vm.id).to_string();
        let info = self.ganeti.console(backend, &instance).await?;
        if info.kind != "vnc" {
            return Err(ServiceError::BadRequest(format!(
                "Unsupported console type {:?} for instance {}",
                info.kind, vm.id
            )));
        }
        let (Some(host), Some(port)) = (info.host, info.port) else {
            return Err(BackendError::Protocol(format!(
                "Ganeti gave no VNC host/port for {instance}"
            ))
            .into());
        };
        let password = generate_password();
        let label = format!("vm {} user {}", vm.id, caller.user_id);
        let endpoint = forwarder.forward(&host, port, &password, &label).await?;
        Ok(ConsoleAccess {
            protocol: "vnc".into(),
            host: endpoint.host,
            port: endpoint.port,
            password,
        })
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

    /// Replaces (`replace`) or merges metadata.
    pub async fn set_metadata(
        &self,
        caller: &Caller,
        id: &str,
        items: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        validate_metadata(items)?;
        let vm = self.server(caller, id).await?;
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

    /// Deletes one metadata item; 404 if absent.
    pub async fn delete_metadata_item(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> Result<(), ServiceError> {
        let vm = self.server(caller, id).await?;
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

    // ------------------------------------------------------------ limits

    /// The caller's project quota and usage.
    pub async fn limits(&self, caller: &Caller) -> Result<Limits, ServiceError> {
        Ok(Limits {
            quota: self.store.quota(&caller.project_id).await?,
            usage: self.store.usage(&caller.project_id).await?,
        })
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

fn quota_resource_name(resource: &str) -> &'static str {
    match resource {
        "servers" => "instances",
        "vcpus" => "cores",
        _ => "ram",
    }
}

/// Records the job submitted for `action`, if that action is still pending.
fn record_job(vm: &Vm, action: Action, job: JobId) -> Option<VmChange> {
    match vm.state.action {
        Some(PendingAction {
            action: a,
            job_id: None,
        }) if a == action => Some(VmChange {
            state: state::record_submitted_job(&vm.state, job),
            nics: None,
        }),
        _ => None,
    }
}

/// Undoes a started action that Ganeti did not take, if it is still ours.
fn rollback(vm: &Vm, action: Action, before: &VmState) -> Option<VmChange> {
    match vm.state.action {
        Some(PendingAction {
            action: a,
            job_id: None,
        }) if a == action => {
            let mut next = vm.state.clone();
            next.action = before.action;
            next.job = before.job.clone();
            next.deleted = before.deleted;
            next.suspended = before.suspended;
            Some(VmChange {
                state: next,
                nics: None,
            })
        }
        _ => None,
    }
}
