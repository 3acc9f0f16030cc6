//! Settings: shipped defaults, the operator's override files, environment.
//!
//! The seed built `settings.py` by concatenating `settings.py.dist` with a
//! file of local changes. We keep the idea without the concatenation: the
//! defaults (`config/synnefo.dist.toml`, embedded in the binary) are merged
//! with each override file in order, then with `SYNNEFO_*` environment
//! variables (`SYNNEFO_DATABASE__URL` sets `database.url`). Unknown keys,
//! wrong types and missing values are errors that name the key and the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::error::SettingsError;

/// The shipped defaults.
pub const DIST_TOML: &str = include_str!("../config/synnefo.dist.toml");

/// The override file read when none is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/synnefo/synnefo.toml";

/// A secret string: never printed by `Debug` or `Serialize`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The actual value.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"********\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "********" })
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where embedded state lives.
    pub data_dir: PathBuf,
    /// Instance-name prefix (`BACKEND_PREFIX_ID`).
    pub backend_prefix_id: String,
    /// The database.
    pub database: DatabaseSettings,
    /// RabbitMQ.
    pub amqp: AmqpSettings,
    /// The compute API.
    pub api: ApiSettings,
    /// Ganeti clusters.
    pub ganeti: GanetiSettings,
    /// Networks, ports and floating IPs.
    pub network: NetworkSettings,
    /// Reconciliation.
    pub reconciliation: ReconciliationSettings,
    /// The console proxy.
    pub vncauthproxy: VncAuthProxySettings,
    /// The Ganeti job-queue watcher.
    pub eventd: EventdSettings,
    /// The dispatcher.
    pub dispatcher: DispatcherSettings,
    /// Logging.
    pub log: LogSettings,
    /// Bounds on what one client can consume (see `docs/security.md`).
    pub limits: LimitsSettings,
}

/// `[limits]`: every bound a hostile client runs into, with its default in
/// `config/synnefo.dist.toml` (documented in `docs/security.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// argon2id memory cost of new password hashes (KiB).
    pub argon2_memory_kib: u32,
    /// argon2id passes of new password hashes.
    pub argon2_iterations: u32,
    /// argon2id lanes of new password hashes.
    pub argon2_parallelism: u32,
    /// Password checks running at once per API process (0: one per CPU, at
    /// most 4); each keeps a buffer of `argon2_memory_kib`.
    pub password_checks: usize,
    /// Milliseconds a login waits for a free password-check slot before a
    /// 503 with `Retry-After`.
    pub password_check_wait_ms: u64,
    /// Password logins per source address per window (0: unlimited).
    pub login_attempts_per_address: u32,
    /// Failed logins per user name per window before that name is refused
    /// until the window ends (0: unlimited).
    pub login_failures_per_user: u32,
    /// The window of both login limits (seconds).
    pub login_window_secs: u64,
    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    pub http_header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub http_body_timeout_secs: u64,
    /// Open connections per HTTP listener; further clients wait in the
    /// kernel's backlog.
    pub http_max_connections: usize,
    /// Seconds a stopping process waits for requests in flight before it
    /// closes the remaining connections.
    pub shutdown_grace_secs: u64,
    /// Seconds between purges of expired tokens (0: never).
    pub token_purge_interval_secs: u64,
    /// Pending console forwardings per user.
    pub console_pending_per_user: usize,
    /// Pending console forwardings per project.
    pub console_pending_per_project: usize,
    /// Console connections not yet authenticated, per source address.
    pub console_unauthenticated_per_address: usize,
    /// Console connections not yet authenticated, in total.
    pub console_unauthenticated_total: usize,
}

/// `[database]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL (sqlite, postgres, mysql); may hold a password.
    #[serde(serialize_with = "serialize_masked_url")]
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Seconds to wait for a connection.
    pub connect_timeout_secs: u64,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &mask_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

/// `[amqp]` (the seed's `RABBIT_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Virtual host.
    pub vhost: String,
    /// Declare quorum queues (RabbitMQ HA).
    pub quorum_queues: bool,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// Reconnect backoff cap (seconds).
    pub max_reconnect_backoff_secs: u64,
    /// `[amqp.topology]`: exchange and queue names, what to do with
    /// queues that already exist (running next to Synnefo's own daemons).
    #[serde(default)]
    pub topology: AmqpTopologySettings,
}

/// What to do with an exchange or queue that already exists on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingQueues {
    /// Use it as it is, whatever arguments it was declared with (e.g. by
    /// Synnefo's dispatcher: `x-dead-letter-exchange=ganeti-dl`); declare
    /// only what is missing, with ours.
    #[default]
    Adopt,
    /// Declare everything with our arguments; a queue that exists with
    /// other ones is an error (`PRECONDITION_FAILED`) naming it.
    Declare,
}

/// `[amqp.topology]`: the bus objects' names and how existing ones are
/// treated. Empty queue names are derived from `backend_prefix_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpTopologySettings {
    /// The notifications exchange (topic).
    pub exchange: String,
    /// The dead-letter exchange (topic). Synnefo's is `ganeti-dl`.
    pub dead_letter_exchange: String,
    /// The op-status queue (empty: `<prefix>-events-op`).
    pub op_queue: String,
    /// The hook's net-status queue (empty: `<prefix>-events-net`).
    pub net_queue: String,
    /// Our dead-letter queue (empty: `<prefix>-events-dead`).
    pub dead_letter_queue: String,
    /// Existing exchanges and queues: `adopt` (default) or `declare`.
    pub existing: ExistingQueues,
    /// Also declare Synnefo 0.16-0.20's `<prefix>-events-network`,
    /// `-progress` and `-cluster` queues and bind its routing keys
    /// (`ganeti.<prefix>.event.network|progress`, `ganeti.event.cluster`),
    /// so no message Synnefo's eventd or snf-image publishes is unroutable.
    pub synnefo_queues: bool,
}

impl Default for AmqpTopologySettings {
    fn default() -> Self {
        Self {
            exchange: "ganeti".into(),
            dead_letter_exchange: "ganeti.dead".into(),
            op_queue: String::new(),
            net_queue: String::new(),
            dead_letter_queue: String::new(),
            existing: ExistingQueues::Adopt,
            synnefo_queues: true,
        }
    }
}

impl AmqpSettings {
    /// The `amqp://` URI for lapin.
    pub fn uri(&self) -> String {
        let vhost = if self.vhost == "/" {
            "%2f".to_string()
        } else {
            self.vhost.trim_start_matches('/').to_string()
        };
        format!(
            "amqp://{}:{}@{}:{}/{}",
            pct(&self.username),
            pct(self.password.expose()),
            self.host,
            self.port,
            vhost
        )
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Listen address.
    pub listen: String,
    /// Public base URL (catalog).
    pub public_url: String,
    /// Region name in the catalog.
    pub region: String,
    /// Token lifetime (seconds).
    pub token_ttl_secs: u64,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Memory for rendered server listings, MiB per API process (0: off).
    /// Pages are validated against the database on every request, so the
    /// cache never serves stale data.
    pub list_cache_mib: usize,
    /// Most servers one create request may ask for (`min_count`).
    pub max_servers_per_request: u32,
    /// Most key pairs one user may hold (Nova's `key_pairs` quota,
    /// `maxTotalKeypairs` in limits).
    #[serde(default = "default_max_keypairs")]
    pub max_keypairs_per_user: u32,
    /// Most personality files one create may inject (Synnefo's
    /// `MAX_PERSONALITY`, Nova's `maxPersonality`).
    #[serde(default = "default_max_personality")]
    pub max_personality: u32,
    /// Largest decoded size of one personality file, bytes (Synnefo's
    /// `MAX_PERSONALITY_SIZE`, Nova's `maxPersonalitySize`).
    #[serde(default = "default_max_personality_bytes")]
    pub max_personality_bytes: u32,
    /// How long (seconds) a new server's admin password is kept in the
    /// API process's memory for Synnefo's `servers/{id}/password` (0:
    /// never kept).
    #[serde(default = "default_server_password_ttl_secs")]
    pub server_password_ttl_secs: u64,
    /// Longest `user_data` a create may carry: characters of its base64
    /// text, as Nova's schema bounds it (`maxLength` 65535).
    #[serde(default = "default_max_user_data_bytes")]
    pub max_user_data_bytes: u32,
}

fn default_max_user_data_bytes() -> u32 {
    65535
}

fn default_max_keypairs() -> u32 {
    100
}

fn default_max_personality() -> u32 {
    5
}

fn default_server_password_ttl_secs() -> u64 {
    3600
}
fn default_max_personality_bytes() -> u32 {
    10240
}

/// `[network]`: networks, ports and floating IPs (`docs/networks.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// 3-byte prefix of the MACs allocated to ports (`aa:00:00`).
    pub mac_prefix: String,
    /// The flavor of networks users create (`MAC_FILTERED`, ...).
    pub private_flavor: String,
    /// Most networks a project may own (0: no limit).
    pub max_networks_per_project: u32,
    /// Most floating IPs a project may hold (0: no limit).
    pub max_floating_ips_per_project: u32,
    /// Most ports a project may hold (0: no limit): the bound on ports of
    /// networks without a subnet, whose ports no address pool limits.
    pub max_ports_per_project: u32,
    /// Largest page a Neutron list returns (Neutron's
    /// `pagination_max_limit`): a list without `limit`, or with a larger
    /// one, gets pages of this size and a `next` link.
    pub pagination_max_limit: u32,
    /// How long an API request waits for a Ganeti network or NIC job.
    pub job_timeout_secs: u64,
    /// Ganeti mode and link per flavor name.
    pub flavors: BTreeMap<String, NetworkFlavorSettings>,
}

/// `[network.flavors.<NAME>]`: how a network flavor is wired on the nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFlavorSettings {
    /// Ganeti NIC mode (`bridged`, `routed`, `openvswitch`).
    pub mode: String,
    /// Ganeti NIC link, shared by the flavor's networks (unless a link
    /// pool is on).
    #[serde(default)]
    pub link: String,
    /// Each network gets a link of its own, `<prefix>0` ..
    /// `<prefix><link_pool_size - 1>` (Synnefo's `PHYSICAL_VLAN` bridges).
    #[serde(default)]
    pub link_pool_prefix: String,
    /// Links in the pool (0: no pool, `link` is used).
    #[serde(default)]
    pub link_pool_size: u32,
    /// Each network gets a 3-byte MAC prefix of its own from
    /// `mac_prefix_pool`, `+1`, ... (Synnefo's `MAC_FILTERED` isolation).
    #[serde(default)]
    pub mac_prefix_pool: String,
    /// Prefixes in the pool (0: no pool, `[network] mac_prefix`).
    #[serde(default)]
    pub mac_prefix_pool_size: u32,
}

impl NetworkFlavorSettings {
    /// The pools this flavor's networks lease from, validated.
    pub fn pools(&self) -> Result<Vec<crate::network::ResourcePool>, crate::error::DomainError> {
        use crate::network::{LinkPool, MacPrefixPool, ResourcePool};
        let mut out = Vec::new();
        if self.link_pool_size > 0 {
            out.push(ResourcePool::Link(LinkPool::new(
                &self.link_pool_prefix,
                self.link_pool_size,
            )?));
        }
        if self.mac_prefix_pool_size > 0 {
            out.push(ResourcePool::MacPrefix(MacPrefixPool::new(
                &self.mac_prefix_pool,
                self.mac_prefix_pool_size,
            )?));
        }
        Ok(out)
    }
}

/// `[ganeti]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GanetiSettings {
    /// Disk template for flavors that do not name one.
    pub default_disk_template: String,
    /// NIC mode for new VMs.
    pub default_nic_mode: String,
    /// NIC link for new VMs.
    pub default_nic_link: String,
    /// Ganeti network for new VMs (empty: none, use mode/link).
    pub default_nic_network: String,
    /// How long Ganeti waits for a clean shutdown (seconds).
    pub shutdown_timeout_secs: u64,
    /// Hypervisor to request (empty: the cluster default).
    pub hypervisor: String,
    /// OS parameters sent as Ganeti's `osparams_secret`: handed to the OS
    /// create script but never written to Ganeti's configuration or job
    /// files (the admin password, `img_passwd`, by default).
    pub secret_osparams: Vec<String>,
    /// The rescue image a rescue boots (KVM's `cdrom_image_path`): an
    /// absolute path on the nodes or a URL (Synnefo keeps its rescue
    /// images under `/usr/share/synnefo/rescue-images`). Empty: rescue
    /// is refused.
    #[serde(default = "default_rescue_image")]
    pub rescue_image: String,
    /// Clusters by name.
    pub clusters: BTreeMap<String, ClusterSettings>,
}

/// Where a rescue image lives by default (Synnefo's `RESCUE_IMAGE_PATH`).
pub fn default_rescue_image() -> String {
    "/usr/share/synnefo/rescue-images/rescue.iso".into()
}

/// `[ganeti.clusters.<name>]` (the seed's `GANETI_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// RAPI host.
    pub host: String,
    /// RAPI port.
    #[serde(default = "default_rapi_port")]
    pub port: u16,
    /// RAPI user.
    pub username: String,
    /// RAPI password.
    pub password: Secret,
    /// Use HTTPS (Ganeti's RAPI always does; the simulator may not).
    #[serde(default = "default_true")]
    pub https: bool,
    /// PEM file of the CA (or the pinned self-signed certificate).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (labs only; logged loudly).
    #[serde(default)]
    pub insecure: bool,
    /// Request timeout (seconds).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_rapi_port() -> u16 {
    5080
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> u64 {
    30
}

/// `[reconciliation]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationSettings {
    /// `RECONCILIATION_MIN`: minutes a VM may stay unreconciled.
    pub reconciliation_min: u64,
    /// Default `--interval` (minutes).
    pub interval_min: u64,
}

/// `[vncauthproxy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VncAuthProxySettings {
    /// Control socket (the seed's `CTRL_SOCKET`).
    pub ctrl_socket: PathBuf,
    /// Its file mode.
    pub socket_mode: u32,
    /// Where forwardings listen.
    pub listen_address: String,
    /// Host name clients connect to.
    pub public_host: String,
    /// First port of the pool.
    pub port_min: u16,
    /// Last port of the pool.
    pub port_max: u16,
    /// Seconds a forwarding waits for its client.
    pub accept_timeout_secs: u64,
    /// Max concurrent sessions.
    pub max_sessions: usize,
    /// Serve noVNC over WebSocket.
    pub websocket: bool,
    /// WebSocket listen address.
    pub websocket_listen: String,
    /// Base URL browsers reach the WebSocket listener at (e.g.
    /// `https://console.example.org` behind a TLS proxy); empty:
    /// `http://{public_host}:{port of websocket_listen}`.
    pub websocket_public_url: String,
    /// Seconds a WebSocket-listener connection may take to upgrade.
    pub websocket_handshake_timeout_secs: u64,
    /// Largest WebSocket message accepted from a browser, in bytes.
    pub websocket_max_message_bytes: usize,
    /// Connections the WebSocket listener holds at once.
    pub websocket_max_connections: usize,
    /// Password of the nodes' VNC servers.
    pub backend_password: Secret,
}

/// `[eventd]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventdSettings {
    /// Ganeti's job queue directory.
    pub queue_dir: PathBuf,
    /// `ssconf_master_node`.
    pub master_node_file: PathBuf,
    /// This node's name (empty: host name).
    pub node_name: String,
    /// Cluster name (empty: from ssconf).
    pub cluster_name: String,
    /// Where unconfirmed messages wait for the broker.
    pub spool_dir: PathBuf,
}

/// `[dispatcher]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherSettings {
    /// Messages applied per DB transaction.
    pub batch_size: usize,
    /// A notification about a server this database does not have (another
    /// deployment sharing the prefix, a row removed by hand): `ack` (log
    /// and count it, as Synnefo's dispatcher does) or `dead-letter`.
    #[serde(default)]
    pub unknown_servers: Unusable,
    /// A body that is not JSON, lacks a key or has a type nobody publishes:
    /// `ack` (log and count, as Synnefo) or `dead-letter` (kept for
    /// `synnefo admin queue`).
    #[serde(default)]
    pub malformed_messages: Unusable,
    /// snf-image's build messages kept per server as its diagnostics
    /// (the oldest are removed beyond this).
    #[serde(default = "default_max_diagnostics")]
    pub max_diagnostics_per_server: u32,
}

fn default_max_diagnostics() -> u32 {
    100
}

/// What the dispatcher does with a message it cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unusable {
    /// Acknowledge it: logged at WARN with the reason and counted.
    #[default]
    Ack,
    /// Send it to the dead-letter queue with the reason.
    DeadLetter,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: String,
    /// Filter (`info`, `synnefo=debug,info`, ...).
    pub level: String,
}

fn serialize_masked_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url_password(url))
}

/// Replaces the password in `scheme://user:password@host` with asterisks.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:********@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Where settings come from.
#[derive(Debug, Clone, Default)]
pub struct SettingsSources {
    /// Override files, merged in order; each must exist.
    pub files: Vec<PathBuf>,
    /// Read `SYNNEFO_*` environment variables.
    pub env: bool,
    /// Extra inline TOML merged last (tests, `synnefo up`).
    pub inline: Option<String>,
}

impl SettingsSources {
    /// The usual sources: `SYNNEFO_CONFIG` (colon-separated files) or the
    /// default path if it exists, plus the environment.
    pub fn standard(explicit: &[PathBuf]) -> Self {
        let files = if !explicit.is_empty() {
            explicit.to_vec()
        } else if let Ok(v) = std::env::var("SYNNEFO_CONFIG") {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        } else if Path::new(DEFAULT_CONFIG_PATH).exists() {
            vec![PathBuf::from(DEFAULT_CONFIG_PATH)]
        } else {
            Vec::new()
        };
        Self {
            files,
            env: true,
            inline: None,
        }
    }
}

/// Variables under the prefix that are not settings.
fn is_reserved_env(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    // UP_*: options of `synnefo up` (SYNNEFO_UP_DEMO_PASSWORD), read by clap.
    k == "CONFIG" || k == "LOG" || k.starts_with("TEST_") || k.starts_with("UP_")
}

impl Settings {
    /// Loads and validates settings.
    pub fn load(sources: &SettingsSources) -> Result<Settings, SettingsError> {
        let mut fig = Figment::from(Toml::string(DIST_TOML));
        for f in &sources.files {
            let text = std::fs::read_to_string(f).map_err(|e| SettingsError::File {
                path: f.display().to_string(),
                reason: e.to_string(),
            })?;
            // Parse up front so a syntax error names the file.
            text.parse::<toml::Table>().map_err(|e| {
                SettingsError::Invalid(format!("{}: {}", f.display(), e.to_string().trim_end()))
            })?;
            fig = fig.merge(Toml::file_exact(f));
        }
        if sources.env {
            fig = fig.merge(
                Env::prefixed("SYNNEFO_")
                    .filter(|k| !is_reserved_env(k.as_str()))
                    .split("__"),
            );
        }
        if let Some(inline) = &sources.inline {
            fig = fig.merge(Toml::string(inline));
        }
        let settings: Settings = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(describe_figment_error).collect();
            SettingsError::Invalid(msgs.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// The shipped defaults alone (plus inline overrides), ignoring files and env.
    pub fn defaults_with(inline: &str) -> Result<Settings, SettingsError> {
        Self::load(&SettingsSources {
            files: vec![],
            env: false,
            inline: Some(inline.to_string()),
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, reason: &str| {
            Err(SettingsError::Validation {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let p = &self.backend_prefix_id;
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || !p.as_bytes()[0].is_ascii_alphabetic()
        {
            return bad(
                "backend_prefix_id",
                "must start with a letter and hold only letters, digits and '-'",
            );
        }
        if !["sqlite:", "postgres:", "postgresql:", "mysql:", "mariadb:"]
            .iter()
            .any(|s| self.database.url.starts_with(s))
        {
            return bad("database.url", "scheme must be sqlite, postgres or mysql");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if self.reconciliation.reconciliation_min == 0 {
            return bad(
                "reconciliation.reconciliation_min",
                "must be at least 1 minute",
            );
        }
        if self.reconciliation.interval_min == 0 {
            return bad("reconciliation.interval_min", "must be at least 1 minute");
        }
        if self.vncauthproxy.port_min > self.vncauthproxy.port_max
            || self.vncauthproxy.port_min == 0
        {
            return bad(
                "vncauthproxy.port_min",
                "must be non-zero and not above port_max",
            );
        }
        if self.amqp.prefetch == 0 {
            return bad("amqp.prefetch", "must be at least 1");
        }
        let t = &self.amqp.topology;
        for (key, name, may_be_empty) in [
            ("amqp.topology.exchange", &t.exchange, false),
            (
                "amqp.topology.dead_letter_exchange",
                &t.dead_letter_exchange,
                false,
            ),
            ("amqp.topology.op_queue", &t.op_queue, true),
            ("amqp.topology.net_queue", &t.net_queue, true),
            (
                "amqp.topology.dead_letter_queue",
                &t.dead_letter_queue,
                true,
            ),
        ] {
            if (name.is_empty() && !may_be_empty) || name.len() > 200 {
                return bad(key, "must be 1 to 200 bytes");
            }
            if name.starts_with("amq.") {
                return bad(
                    key,
                    "names starting with \"amq.\" are reserved by the broker",
                );
            }
        }
        if t.exchange == t.dead_letter_exchange {
            return bad(
                "amqp.topology.dead_letter_exchange",
                "must differ from amqp.topology.exchange",
            );
        }
        if self.dispatcher.batch_size == 0 {
            return bad("dispatcher.batch_size", "must be at least 1");
        }
        let n = &self.network;
        let mac_ok = n.mac_prefix.split(':').count() == 3
            && n.mac_prefix
                .split(':')
                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
        if !mac_ok {
            return bad(
                "network.mac_prefix",
                "must be three hex bytes, e.g. \"aa:00:00\"",
            );
        }
        if u8::from_str_radix(&n.mac_prefix[..2], 16).is_ok_and(|b| b & 1 == 1) {
            return bad(
                "network.mac_prefix",
                "must be a unicast prefix (first byte even)",
            );
        }
        if crate::network::NetworkFlavor::parse(&n.private_flavor).is_none() {
            return bad(
                "network.private_flavor",
                "must be MAC_FILTERED, PHYSICAL_VLAN, IP_LESS_ROUTED or CUSTOM",
            );
        }
        if !n
            .flavors
            .contains_key(&n.private_flavor.to_ascii_uppercase())
        {
            return bad(
                "network.private_flavor",
                "has no [network.flavors.<it>] wiring",
            );
        }
        for (name, f) in &n.flavors {
            if crate::network::NetworkFlavor::parse(name).is_none() {
                return bad("network.flavors", "keys must be Synnefo network flavors");
            }
            if !matches!(f.mode.as_str(), "bridged" | "routed" | "openvswitch")
                || (f.link.is_empty() && f.link_pool_size == 0)
            {
                return bad(
                    "network.flavors",
                    "mode must be bridged, routed or openvswitch, and link non-empty (or a link pool on)",
                );
            }
            let pools = f.pools().map_err(|e| SettingsError::Validation {
                key: format!("network.flavors.{name}"),
                reason: e.to_string(),
            })?;
            for p in pools {
                if let crate::network::ResourcePool::MacPrefix(m) = p
                    && m.contains(&n.mac_prefix)
                {
                    return Err(SettingsError::Validation {
                        key: format!("network.flavors.{name}.mac_prefix_pool"),
                        reason: format!(
                            "must not include network.mac_prefix {} (every other network's ports use it)",
                            n.mac_prefix
                        ),
                    });
                }
            }
        }
        if n.job_timeout_secs == 0 {
            return bad("network.job_timeout_secs", "must be at least 1");
        }
        if n.pagination_max_limit == 0 {
            return bad("network.pagination_max_limit", "must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return bad("log.format", "must be \"human\" or \"json\"");
        }
        let l = &self.limits;
        if argon2::Params::new(
            l.argon2_memory_kib,
            l.argon2_iterations,
            l.argon2_parallelism,
            None,
        )
        .is_err()
        {
            return bad(
                "limits.argon2_memory_kib",
                "argon2 parameters out of range (memory >= 8 * parallelism KiB, iterations >= 1, parallelism >= 1)",
            );
        }
        for (key, v) in [
            ("limits.login_window_secs", l.login_window_secs),
            (
                "limits.http_header_timeout_secs",
                l.http_header_timeout_secs,
            ),
            ("limits.http_body_timeout_secs", l.http_body_timeout_secs),
            ("limits.http_max_connections", l.http_max_connections as u64),
            (
                "limits.console_pending_per_user",
                l.console_pending_per_user as u64,
            ),
            (
                "limits.console_pending_per_project",
                l.console_pending_per_project as u64,
            ),
            (
                "limits.console_unauthenticated_per_address",
                l.console_unauthenticated_per_address as u64,
            ),
            (
                "limits.console_unauthenticated_total",
                l.console_unauthenticated_total as u64,
            ),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.api.token_ttl_secs == 0
            || self.api.token_ttl_secs > crate::service::identity::MAX_TOKEN_TTL_SECS
        {
            return bad("api.token_ttl_secs", "must be 1 second to 10 years");
        }
        for (name, c) in &self.ganeti.clusters {
            if c.host.is_empty() {
                return bad(&format!("ganeti.clusters.{name}.host"), "must not be empty");
            }
            if c.timeout_secs == 0 {
                return bad(
                    &format!("ganeti.clusters.{name}.timeout_secs"),
                    "must be at least 1",
                );
            }
        }
        Ok(())
    }

    /// The merged settings as TOML, secrets masked (`synnefo config show`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

fn describe_figment_error(e: figment::Error) -> String {
    let key = if e.path.is_empty() {
        String::new()
    } else {
        format!("key `{}`: ", e.path.join("."))
    };
    let source = match &e.metadata {
        Some(md) => match &md.source {
            Some(figment::Source::File(p)) => format!(" (in {})", p.display()),
            Some(src) => format!(" (from {src})"),
            None => format!(" (from {})", md.name),
        },
        None => String::new(),
    };
    let kind = match &e.kind {
        figment::error::Kind::UnknownField(f, _) => format!("unknown key `{f}`"),
        figment::error::Kind::MissingField(f) => format!("missing required key `{f}`"),
        other => other.to_string(),
    };
    format!("{key}{kind}{source}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(text: &str) -> Result<Settings, SettingsError> {
        let f = file(text);
        let loaded = Settings::load(&SettingsSources {
            files: vec![f.path().to_path_buf()],
            env: false,
            inline: None,
        });
        drop(f);
        loaded
    }

    /// Loads `text` as an override file; returns the error and the file's path.
    fn load_err(text: &str) -> (String, String) {
        let f = file(text);
        let path = f.path().display().to_string();
        let loaded = Settings::load(&SettingsSources {
            files: vec![f.path().to_path_buf()],
            env: false,
            inline: None,
        });
        match loaded {
            Ok(_) => panic!("settings {text:?} should not load"),
            Err(e) => (e.to_string(), path),
        }
    }

    #[test]
    fn defaults_load() {
        let s = Settings::defaults_with("").unwrap();
        assert_eq!(s.backend_prefix_id, "snf-");
        assert_eq!(s.reconciliation.reconciliation_min, 30);
        assert_eq!(s.reconciliation.interval_min, 1);
        assert_eq!(s.vncauthproxy.socket_mode, 0o660);
        assert!(s.ganeti.clusters.is_empty());
    }

    #[test]
    fn overrides_merge_field_by_field() {
        let s = load(
            r#"
backend_prefix_id = "vm-"
[database]
url = "postgres://synnefo:s3cret@db/synnefo"
[ganeti.clusters.c1]
host = "ganeti1"
username = "u"
password = "p"
"#,
        )
        .unwrap();
        assert_eq!(s.backend_prefix_id, "vm-");
        assert_eq!(
            s.database.max_connections, 16,
            "untouched keys keep their defaults"
        );
        let c1 = &s.ganeti.clusters["c1"];
        assert_eq!((c1.port, c1.https, c1.timeout_secs), (5080, true, 30));
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let (err, path) = load_err("[database]\nurll = \"x\"\n");
        assert!(err.contains("urll"), "{err}");
        assert!(err.contains(&path), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key_and_the_file() {
        let (err, path) = load_err("[amqp]\nport = \"five\"\n");
        assert!(err.contains("amqp.port"), "{err}");
        assert!(err.contains(&path), "{err}");
    }

    #[test]
    fn missing_required_values_are_named() {
        let (err, _path) = load_err("[ganeti.clusters.c1]\nhost = \"h\"\nusername = \"u\"\n");
        assert!(err.contains("password"), "{err}");
        assert!(err.contains("ganeti.clusters.c1"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let (err, path) = load_err("[database\n");
        assert!(err.contains(&path), "{err}");
    }

    #[test]
    fn missing_files_are_errors() {
        let err = Settings::load(&SettingsSources {
            files: vec!["/nonexistent/synnefo.toml".into()],
            env: false,
            inline: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/synnefo.toml"));
    }

    #[test]
    fn validation_names_the_key() {
        let err = Settings::defaults_with("backend_prefix_id = \"1x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend_prefix_id"), "{err}");
        let err = Settings::defaults_with("[vncauthproxy]\nport_min = 9\nport_max = 8")
            .unwrap_err()
            .to_string();
        assert!(err.contains("vncauthproxy.port_min"), "{err}");
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let s = Settings::defaults_with(
            r#"
[database]
url = "postgres://synnefo:dbpass@db/synnefo"
[amqp]
password = "rabbitpass"
[ganeti.clusters.c1]
host = "h"
username = "u"
password = "rapipass"
"#,
        )
        .unwrap();
        let shown = s.to_masked_toml();
        for secret in ["dbpass", "rabbitpass", "rapipass"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
            assert!(
                !format!("{s:?}").contains(secret),
                "{secret} leaked in Debug"
            );
        }
        assert!(shown.contains("postgres://synnefo:********@db/synnefo"));
        assert_eq!(s.amqp.password.expose(), "rabbitpass");
    }

    #[test]
    fn amqp_uri_encodes_credentials() {
        let s = Settings::defaults_with("[amqp]\nusername = \"okeanos\"\npassword = \"0k3@n0s\"")
            .unwrap();
        assert_eq!(s.amqp.uri(), "amqp://okeanos:0k3%40n0s@127.0.0.1:5672/%2f");
    }
}
