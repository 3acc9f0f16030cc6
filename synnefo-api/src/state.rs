//! What the router is built from ([`ApiState`]) and what handlers share
//! ([`App`]).
//!
//! The API is stateless: everything durable is in the store, so any number
//! of API processes can serve the same cloud. [`App`] only holds the
//! services, settings and in-memory metrics of this process.

use std::sync::Arc;
use std::time::Duration;

use synnefo_core::ports::{GanetiBackend, Store};
use synnefo_core::service::compute::{Compute, ComputeConfig, ConsoleForwarder, Placement};
use synnefo_core::service::identity::{Identity, PasswordPolicy};
use synnefo_core::settings::Settings;

use crate::metrics::Metrics;

/// Settings the API needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Public base URL (no trailing slash) advertised in links and the catalog.
    pub public_url: String,
    /// Region name in the catalog.
    pub region: String,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Compute rules (instance prefix, NIC defaults, ...).
    pub compute: ComputeConfig,
    /// URL of the noVNC console page (`http://HOST:PORT/console.html`,
    /// served by the vncauthproxy's WebSocket listener) for `novnc`
    /// consoles; `None` answers `novnc` requests with a `vnc://` URL.
    pub novnc_url: Option<String>,
    /// Memory budget of the cache of rendered server listings, in bytes
    /// (0: off). Pages are exact, not time-limited: see
    /// [`Listings`](crate::listing::Listings).
    pub list_cache_bytes: usize,
    /// Trust a validated token for this long without asking the database
    /// again (`None`: validate every request). Like keystonemiddleware's
    /// token cache: a token revoked through another API process keeps
    /// working here for at most this long; one revoked through this
    /// process stops at once.
    pub token_cache_ttl: Option<Duration>,
    /// Bounds on password logins and the argon2 cost of new hashes.
    pub password_policy: PasswordPolicy,
    /// How often this process deletes expired tokens (`None`: never).
    pub token_purge_interval: Option<Duration>,
}

impl ApiConfig {
    /// The API settings out of the merged settings.
    pub fn from_settings(s: &Settings) -> Self {
        let novnc_url = s
            .vncauthproxy
            .websocket
            .then(|| crate::consoles::novnc_page_url(&s.vncauthproxy));
        Self {
            public_url: s.api.public_url.trim_end_matches('/').to_string(),
            region: s.api.region.clone(),
            token_ttl: Duration::from_secs(s.api.token_ttl_secs),
            max_body_bytes: s.api.max_body_bytes,
            compute: ComputeConfig::from_settings(s),
            novnc_url,
            list_cache_bytes: s.api.list_cache_mib.saturating_mul(1024 * 1024),
            token_cache_ttl: Some(Duration::from_secs(5)),
            password_policy: password_policy(&s.limits),
            token_purge_interval: Some(Duration::from_secs(s.limits.token_purge_interval_secs))
                .filter(|d| !d.is_zero()),
        }
    }
}

/// The password policy of the `[limits]` settings.
pub fn password_policy(l: &synnefo_core::settings::LimitsSettings) -> PasswordPolicy {
    PasswordPolicy::from_limits(l)
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8774".into(),
            region: "RegionOne".into(),
            token_ttl: Duration::from_secs(86400),
            max_body_bytes: 1024 * 1024,
            compute: ComputeConfig::default(),
            novnc_url: None,
            list_cache_bytes: crate::listing::DEFAULT_LIST_CACHE_BYTES,
            token_cache_ttl: None,
            password_policy: PasswordPolicy::default(),
            token_purge_interval: None,
        }
    }
}

/// Everything [`crate::router`] needs: the ports and the settings.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The Ganeti clusters.
    pub ganeti: Arc<dyn GanetiBackend>,
    /// Settings.
    pub config: ApiConfig,
    /// The console proxy, if consoles are enabled.
    pub console: Option<Arc<dyn ConsoleForwarder>>,
    /// Placement policy (least-loaded by RAM when `None`).
    pub placement: Option<Arc<dyn Placement>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .field("console", &self.console.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State with default placement and no console.
    pub fn new(store: Arc<dyn Store>, ganeti: Arc<dyn GanetiBackend>, config: ApiConfig) -> Self {
        Self {
            store,
            ganeti,
            config,
            console: None,
            placement: None,
        }
    }

    /// Enables consoles.
    pub fn with_console(mut self, console: Arc<dyn ConsoleForwarder>) -> Self {
        self.console = Some(console);
        self
    }

    /// Uses a placement policy.
    pub fn with_placement(mut self, placement: Arc<dyn Placement>) -> Self {
        self.placement = Some(placement);
        self
    }
}

/// What handlers share (behind an `Arc`).
pub struct App {
    /// Compute use cases.
    pub compute: Compute,
    /// Identity use cases.
    pub identity: Identity,
    /// Settings.
    pub config: ApiConfig,
    /// Request metrics.
    pub metrics: Metrics,
    /// Rendered server listings and the generation reads that validate them.
    pub listings: crate::listing::Listings,
    /// Validated tokens (when enabled).
    pub token_cache: TokenCache,
}

impl App {
    /// Builds the services from the state.
    pub fn new(state: ApiState) -> Self {
        let mut compute = Compute::new(
            state.store.clone(),
            state.ganeti.clone(),
            state.config.compute.clone(),
        );
        if let Some(p) = state.placement {
            compute = compute.with_placement(p);
        }
        if let Some(c) = state.console {
            compute = compute.with_console(c);
        }
        let identity = Identity::new(state.store.clone(), state.config.token_ttl)
            .with_password_policy(state.config.password_policy.clone());
        Self {
            compute,
            identity,
            listings: crate::listing::Listings::new(
                state.store.clone(),
                state.config.list_cache_bytes,
            ),
            token_cache: TokenCache::new(state.config.token_cache_ttl),
            config: state.config,
            metrics: Metrics::default(),
        }
    }

    /// The public URL of a mount (`""`, `/compute`, ...).
    pub fn base(&self, mount: &str) -> String {
        format!("{}{}", self.config.public_url, mount)
    }
}

/// Shared handle.
pub type Shared = Arc<App>;

/// Expired tokens are deleted as soon as they expire: a deleted token and
/// an expired one get the same 401.
const PURGE_GRACE: chrono::Duration = chrono::Duration::zero();

/// Deletes expired tokens every `every` while `app` lives (a weak handle:
/// the task ends with the router). Counted in `/metrics`.
pub(crate) fn spawn_token_purger(app: &Shared, every: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(app);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { return };
            match app.identity.purge_expired(PURGE_GRACE).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(purged = n, "expired tokens deleted");
                    }
                    app.metrics.tokens_purged(Ok(n));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired tokens failed");
                    app.metrics.tokens_purged(Err(()));
                }
            }
        }
    });
}

/// Validated tokens by digest, for a short time (see
/// [`ApiConfig::token_cache_ttl`]). Emptied by every write this process
/// serves, token revocations included.
#[derive(Debug)]
pub struct TokenCache {
    ttl: Option<Duration>,
    /// Bumped by every [`TokenCache::clear`]: a validation that began
    /// before a clear must not be cached after it.
    epoch: std::sync::atomic::AtomicU64,
    entries: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (
                std::time::Instant,
                synnefo_core::service::identity::Authenticated,
            ),
        >,
    >,
}

/// Most tokens kept; the cache is emptied when full.
pub const TOKEN_CACHE_MAX: usize = 16384;

impl TokenCache {
    /// A cache with this TTL (`None`: disabled).
    pub fn new(ttl: Option<Duration>) -> Self {
        Self {
            ttl: ttl.filter(|t| !t.is_zero()),
            epoch: std::sync::atomic::AtomicU64::new(0),
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A cached validation still fresh and not past the token's expiry.
    pub fn get(&self, digest: &str) -> Option<synnefo_core::service::identity::Authenticated> {
        let ttl = self.ttl?;
        let entries = self.entries.lock().ok()?;
        let (at, auth) = entries.get(digest)?;
        (at.elapsed() < ttl && auth.token.expires > chrono::Utc::now()).then(|| auth.clone())
    }

    /// The current epoch: read it before validating, pass it to
    /// [`TokenCache::put`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Remembers a validation begun at `epoch`, unless the cache was
    /// cleared since (a revocation may have raced the validation).
    pub fn put(
        &self,
        digest: String,
        auth: synnefo_core::service::identity::Authenticated,
        epoch: u64,
    ) {
        if self.ttl.is_none() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if self.epoch() != epoch {
                return;
            }
            if entries.len() >= TOKEN_CACHE_MAX {
                entries.clear();
            }
            entries.insert(digest, (std::time::Instant::now(), auth));
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        if self.ttl.is_none() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synnefo_core::model::{Project, Token, User};
    use synnefo_core::service::identity::Authenticated;

    fn auth() -> Authenticated {
        let now = chrono::Utc::now();
        Authenticated {
            token: Token {
                digest: "d".into(),
                user_id: "u".into(),
                project_id: "p".into(),
                issued: now,
                expires: now + chrono::Duration::hours(1),
                revoked: false,
            },
            user: User {
                id: "u".into(),
                name: "user".into(),
                password_hash: String::new(),
                enabled: true,
                is_admin: false,
                created: now,
            },
            project: Project {
                id: "p".into(),
                name: "project".into(),
                created: now,
            },
        }
    }

    /// Issue 19: a validation that began before a revocation (a write that
    /// clears the cache) is not cached after it.
    #[test]
    fn a_validation_racing_a_clear_is_not_cached() {
        let cache = TokenCache::new(Some(Duration::from_secs(5)));
        let began = cache.epoch();
        cache.clear(); // the revocation lands while the validation runs
        cache.put("d".into(), auth(), began);
        assert!(cache.get("d").is_none(), "re-cached after a revocation");
        let began = cache.epoch();
        cache.put("d".into(), auth(), began);
        assert!(
            cache.get("d").is_some(),
            "a validation without a race is cached"
        );
    }
}
