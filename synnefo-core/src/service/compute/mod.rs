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
//! ([`state::start_action`](crate::state::start_action)) via [`modify_vm`](crate::service::modify_vm), then Ganeti, then record the
//! job id; the dispatcher later applies the job's notifications through the
//! same [`modify_vm`](crate::service::modify_vm). A resize takes the same path with its own
//! transition ([`state::start_resize`](crate::state::start_resize)) and the quota delta checked in
//! the same write ([`modify_vm_within`](crate::service::modify_vm_within)).
//!
//! Failure policy when talking to Ganeti (documented in `docs/api.md`):
//!
//! * **Create, Ganeti refuses** (a [`BackendError::Rejected`](crate::error::BackendError::Rejected),
//!   [`BackendError::JobFailed`](crate::error::BackendError::JobFailed), ...): the VM goes to ERROR with Ganeti's
//!   message as its fault, and the caller gets the server back (202), as
//!   Nova does for a failed build.
//! * **Create, Ganeti unreachable** ([`BackendError::Unavailable`](crate::error::BackendError::Unavailable)): the VM
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
//!   VM ([`state::OpStatusEvent::determined_state`](crate::state::OpStatusEvent::determined_state)).
//!
//! The core stays free of I/O of its own: placement and console forwarding
//! are ports ([`Placement`], [`ConsoleForwarder`]).

mod actions;
mod batch;
mod catalog;
mod create;
mod diagnostics;
mod keypairs;
mod locks;
mod passwords;
mod ports;
mod rebuild;
mod rescue;
mod resize;
mod servers;
mod types;
mod userdata;

pub use diagnostics::MAX_DIAGNOSTICS_LISTED;
pub use userdata::USER_DATA_OSPARAM;

pub use actions::action_name;
pub use batch::{CreateCount, CreatedBatch};
pub use keypairs::{KEYPAIR_NAME_MAX, validate_keypair_name};
pub use passwords::ServerPasswords;
pub use ports::{
    ConsoleAccess, ConsoleForwarder, LeastLoaded, PlaceWith, Placement, PlacementFuture,
    ProxyEndpoint,
};
pub use rebuild::{RebuildServer, RebuiltServer};
pub use resize::ResizeConfirm;
pub use servers::HISTORY_MAX;
pub use types::{
    CreateServer, CreatedServer, Fault, FlavorFilter, ImageFilter, Limits, PersonalityFile,
    ServerFilter, fault, generate_password, image_visible, ref_id, validate_metadata,
    validate_server_name,
};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::ServiceError;
use crate::ports::{Clock, GanetiBackend, NicSpec, Store};

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
/// The OS parameter that carries the key pairs' public keys to snf-image
/// (one per line), as Synnefo's `logic/servers.py` passes them.
pub const AUTH_KEYS_OSPARAM: &str = "auth_keys";

/// snf-image's OS parameter for the files to inject at create (a JSON list
/// of `{path, contents, owner, group, mode}`, contents base64), as
/// Synnefo's backend sends it.
pub const PERSONALITY_OSPARAM: &str = "img_personality";

/// Who is calling: the identity behind a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: String,
    /// The project the token is scoped to; the caller sees only its servers.
    pub project_id: String,
    /// Operators.
    pub is_admin: bool,
    /// The API request this call serves (`req-<uuid>`): the key of the
    /// instance-action history entry a mutating call records (`None`: no
    /// entry, e.g. an operator's own tools).
    pub request_id: Option<String>,
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
    /// Most servers one create request may ask for.
    pub max_servers_per_request: u32,
    /// Most key pairs one user may hold.
    pub max_keypairs_per_user: u32,
    /// Most personality files per create.
    pub max_personality: u32,
    /// Largest decoded personality file, bytes.
    pub max_personality_bytes: u32,
    /// Longest `user_data` (its base64 text), characters.
    pub max_user_data_bytes: u32,
    /// The network service's settings.
    pub network: crate::service::network::NetworkConfig,
    /// The rescue image a rescue boots (`[ganeti] rescue_image`).
    pub rescue_image: String,
    /// How long a new server's admin password is handed out again
    /// (`[api] server_password_ttl_secs`; zero: never).
    pub server_password_ttl: Duration,
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
                ..NicSpec::default()
            }
        } else {
            NicSpec {
                network: Some(g.default_nic_network.clone()),
                mode: None,
                link: None,
                ip: Some("pool".into()),
                ..NicSpec::default()
            }
        };
        Self {
            prefix: s.backend_prefix_id.clone(),
            default_disk_template: g.default_disk_template.clone(),
            nic,
            shutdown_timeout: Duration::from_secs(g.shutdown_timeout_secs),
            max_servers_per_request: s.api.max_servers_per_request,
            max_keypairs_per_user: s.api.max_keypairs_per_user,
            max_personality: s.api.max_personality,
            max_personality_bytes: s.api.max_personality_bytes,
            max_user_data_bytes: s.api.max_user_data_bytes,
            network: network_config(&s.network),
            rescue_image: g.rescue_image.clone(),
            server_password_ttl: Duration::from_secs(s.api.server_password_ttl_secs),
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
                ..NicSpec::default()
            },
            shutdown_timeout: Duration::from_secs(120),
            max_servers_per_request: 100,
            max_keypairs_per_user: 100,
            max_personality: 5,
            max_personality_bytes: 10240,
            max_user_data_bytes: 65535,
            network: crate::service::network::NetworkConfig::default(),
            rescue_image: crate::settings::default_rescue_image(),
            server_password_ttl: Duration::from_secs(3600),
        }
    }
}

/// The network service's settings out of `[network]` (validated).
fn network_config(n: &crate::settings::NetworkSettings) -> crate::service::network::NetworkConfig {
    use crate::network::NetworkFlavor;
    use crate::service::network::{FlavorRecipe, NetworkConfig};
    let limit = |v: u32| (v > 0).then_some(i64::from(v));
    NetworkConfig {
        mac_prefix: n.mac_prefix.to_ascii_lowercase(),
        private_flavor: NetworkFlavor::parse(&n.private_flavor)
            .unwrap_or(NetworkFlavor::MacFiltered),
        flavors: n
            .flavors
            .iter()
            .filter_map(|(k, f)| {
                NetworkFlavor::parse(k).map(|fl| {
                    (
                        fl,
                        FlavorRecipe {
                            mode: f.mode.clone(),
                            link: f.link.clone(),
                        },
                    )
                })
            })
            .collect(),
        pools: n
            .flavors
            .iter()
            .filter_map(|(k, f)| {
                // Validated with the settings: a pool that does not build
                // here was refused at load time.
                Some((NetworkFlavor::parse(k)?, f.pools().ok()?))
            })
            .collect(),
        max_networks_per_project: limit(n.max_networks_per_project),
        max_floating_ips_per_project: limit(n.max_floating_ips_per_project),
        max_ports_per_project: limit(n.max_ports_per_project),
        pagination_max_limit: u64::from(n.pagination_max_limit.max(1)),
        job_timeout: Duration::from_secs(n.job_timeout_secs),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
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
    passwords: Arc<passwords::ServerPasswords>,
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
            passwords: Arc::default(),
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

    /// The network service over the same store and clusters.
    pub fn networking(&self) -> crate::service::network::Networking {
        crate::service::network::Networking::new(
            self.store.clone(),
            self.ganeti.clone(),
            self.config.network.clone(),
            self.config.prefix.clone(),
        )
    }

    /// True when consoles can be handed out.
    pub fn has_console(&self) -> bool {
        self.console.is_some()
    }

    // ------------------------------------------------------------ limits

    /// The caller's project quota and usage.
    pub async fn limits(&self, caller: &Caller) -> Result<Limits, ServiceError> {
        Ok(Limits {
            quota: self.store.quota(&caller.project_id).await?,
            usage: self.store.usage(&caller.project_id).await?,
            max_keypairs: i64::from(self.config.max_keypairs_per_user),
            max_personality: i64::from(self.config.max_personality),
            max_personality_bytes: i64::from(self.config.max_personality_bytes),
        })
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
