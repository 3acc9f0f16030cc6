//! Identity use cases: passwords, tokens, project scope.
//!
//! Both identity dialects (Keystone v3 for python-openstackclient and
//! openstacksdk, Astakos-style v2.0 for kamaki) call these functions, so the
//! rules are in one place:
//!
//! * Passwords are stored as argon2id PHC strings; verification runs on the
//!   blocking pool (it is deliberately slow) and a missing user costs the
//!   same as a wrong password.
//! * A token is 32 random bytes handed to the client once (hex); the store
//!   keeps only its SHA-256 digest, so a leaked database holds no usable
//!   token. Validation hashes the presented secret and looks the digest up.
//! * A token is scoped to one project the user is a member of; everything
//!   the compute API shows is limited to that project.
//! * Password checks are bounded ([`PasswordPolicy`]): at most
//!   `concurrency` argon2 computations run at once (each holds its memory
//!   cost, 19 MiB by default), a request waits at most `wait` for a slot and
//!   is then answered [`ServiceError::Busy`] (503 + `Retry-After`); login
//!   attempts per source address and failures per user name are counted in
//!   a fixed window and refused (429) past their limits.
//! * A rescoped token keeps its parent's expiry (as Keystone does), so a
//!   chain of rescopes never outlives the password login it started from;
//!   revoking a token revokes the tokens rescoped from it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::error::{ServiceError, StoreError};
use crate::model::{Project, Token, User};
use crate::ports::{Clock, Store, SystemClock};
use crate::service::compute::Caller;

/// Bytes of randomness in a token secret.
pub const TOKEN_BYTES: usize = 32;

/// The message for every authentication failure (no user enumeration).
pub const AUTH_FAILED: &str = "The request you have made requires authentication.";

/// How a request names the project to scope to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectSelector {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

/// How a request names the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSelector {
    /// By id.
    Id(String),
    /// By login name.
    Name(String),
}

/// A validated token and whom it speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The stored token (digest, expiry, ...).
    pub token: Token,
    /// Its user.
    pub user: User,
    /// Its project.
    pub project: Project,
}

impl Authenticated {
    /// The compute caller this token stands for.
    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.user.id.clone(),
            project_id: self.project.id.clone(),
            is_admin: self.user.is_admin,
            request_id: None,
        }
    }
}

/// A freshly issued token: the secret is shown to the client once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The secret the client sends as `X-Auth-Token`.
    pub secret: String,
    /// What was stored.
    pub auth: Authenticated,
}

/// Longest token lifetime accepted (ten years): longer ones are an
/// operator's typo and would overflow the timestamp arithmetic.
pub const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 86_400;

/// A token lifetime from seconds, refused (400) past
/// [`MAX_TOKEN_TTL_SECS`] or at zero instead of overflowing.
pub fn token_ttl_from_secs(secs: u64) -> Result<chrono::Duration, ServiceError> {
    if secs == 0 || secs > MAX_TOKEN_TTL_SECS {
        return Err(ServiceError::BadRequest(format!(
            "token lifetime must be 1..={MAX_TOKEN_TTL_SECS} seconds, not {secs}"
        )));
    }
    chrono::Duration::try_seconds(secs as i64)
        .ok_or_else(|| ServiceError::BadRequest(format!("token lifetime {secs} s is too long")))
}

/// Hashes a password with argon2id (random salt, argon2's default cost).
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    hash_password_with(password, &PasswordPolicy::default())
}

/// Hashes a password with argon2id at the policy's cost (random salt).
pub fn hash_password_with(password: &str, policy: &PasswordPolicy) -> Result<String, ServiceError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ServiceError::BadRequest(format!("cannot salt password: {e}")))?;
    let params = argon2::Params::new(
        policy.memory_kib,
        policy.iterations,
        policy.parallelism,
        None,
    )
    .map_err(|e| ServiceError::BadRequest(format!("invalid argon2 parameters: {e}")))?;
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::BadRequest(format!("cannot hash password: {e}")))
}

/// Checks a password against an argon2 PHC string (false for malformed hashes).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Largest argon2 memory cost a stored hash may ask a check for (1 GiB, in
/// 1 KiB blocks); a hash asking more fails closed.
const MAX_CHECK_BLOCKS: usize = 1024 * 1024;

/// [`verify_password`] with caller-owned argon2 memory, grown to the hash's
/// cost and kept for the next check (the password-check threads reuse one
/// buffer each, so checks allocate nothing).
pub fn verify_password_with_memory(
    hash: &str,
    password: &str,
    memory: &mut Vec<argon2::Block>,
) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version {
        Some(v) => argon2::Version::try_from(v),
        None => Ok(argon2::Version::default()),
    };
    let (Ok(version), Ok(params)) = (version, argon2::Params::try_from(&parsed)) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_CHECK_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let ok = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok();
    // constant time in the compared bytes
    ok && out.len() == expected.as_bytes().len()
        && out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A new random token secret (64 hex characters).
pub fn new_token_secret() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    to_hex(&bytes)
}

/// The digest stored for a token secret: SHA-256, lowercase hex.
pub fn token_digest(secret: &str) -> String {
    to_hex(&sha256(secret.as_bytes()))
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 (FIPS 180-4) of `data` (RustCrypto's `sha2`).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// How hard password logins may be pushed (see the module docs). Built
/// from the `[limits]` settings by the API; [`Default`] is what the shipped
/// settings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// argon2id memory cost of new hashes, KiB (verification uses the cost
    /// recorded in each hash).
    pub memory_kib: u32,
    /// argon2id time cost (passes) of new hashes.
    pub iterations: u32,
    /// argon2id lanes of new hashes.
    pub parallelism: u32,
    /// Password checks running at once (0: one per CPU, at most
    /// [`DEFAULT_MAX_PASSWORD_CHECKS`]). Each holds `memory_kib` of memory
    /// for good (one buffer per check thread), so this times `memory_kib`
    /// is what password checking can take.
    pub concurrency: usize,
    /// How long a login waits for a free slot before a 503.
    pub wait: Duration,
    /// Password logins per source address per window (0: unlimited).
    pub attempts_per_address: u32,
    /// Failed password logins per user name per window (0: unlimited);
    /// past it, logins of that name are refused until the window ends.
    pub failures_per_user: u32,
    /// The counting window of both limits.
    pub window: Duration,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
            concurrency: 0,
            wait: Duration::from_secs(2),
            attempts_per_address: 60,
            failures_per_user: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Most password checks at once when the policy leaves it to the machine
/// (`concurrency` 0): four argon2 buffers (76 MiB at the default cost),
/// however many CPUs there are.
pub const DEFAULT_MAX_PASSWORD_CHECKS: usize = 4;

impl PasswordPolicy {
    /// The policy of the `[limits]` settings.
    pub fn from_limits(l: &crate::settings::LimitsSettings) -> Self {
        Self {
            memory_kib: l.argon2_memory_kib,
            iterations: l.argon2_iterations,
            parallelism: l.argon2_parallelism,
            concurrency: l.password_checks,
            wait: Duration::from_millis(l.password_check_wait_ms),
            attempts_per_address: l.login_attempts_per_address,
            failures_per_user: l.login_failures_per_user,
            window: Duration::from_secs(l.login_window_secs.max(1)),
        }
    }

    /// The number of concurrent password checks this policy allows here.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency > 0 {
            self.concurrency
        } else {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(DEFAULT_MAX_PASSWORD_CHECKS)
        }
    }
}

/// Most keys a [`WindowCounter`] holds; past it, expired windows are
/// dropped, and if none expired the counter starts over.
const MAX_COUNTED_KEYS: usize = 65_536;

/// Fixed-window counters by key (address, user name), bounded in size.
#[derive(Debug)]
pub struct WindowCounter<K> {
    window: Duration,
    state: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: std::hash::Hash + Eq + Clone> WindowCounter<K> {
    /// Counts per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// The count of `key` in its current window.
    pub fn count(&self, key: &K, now: Instant) -> u32 {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.get(key)
            .filter(|(start, _)| now.duration_since(*start) < self.window)
            .map_or(0, |(_, n)| *n)
    }

    /// Adds one to `key`'s count; returns the new count.
    pub fn add(&self, key: &K, now: Instant) -> u32 {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.len() >= MAX_COUNTED_KEYS && !st.contains_key(key) {
            let window = self.window;
            st.retain(|_, (start, _)| now.duration_since(*start) < window);
            if st.len() >= MAX_COUNTED_KEYS {
                st.clear();
            }
        }
        let e = st.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1
    }

    /// Seconds until `key`'s window ends (at least 1).
    pub fn retry_after(&self, key: &K, now: Instant) -> u64 {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let left = st.get(key).map_or(self.window, |(start, _)| {
            self.window.saturating_sub(now.duration_since(*start))
        });
        left.as_secs().max(1)
    }
}

/// One password check: the stored hash (`None`: the user does not exist,
/// check against the dummy hash), the password, where to answer, and the
/// slot it holds until the worker is done with it.
struct CheckJob {
    hash: Option<String>,
    password: String,
    reply: tokio::sync::oneshot::Sender<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// A fixed set of OS threads that run password checks. Not tokio's
/// blocking pool: each argon2 computation needs its memory cost (19 MiB by
/// default), and a freed block stays in the allocator arena of the thread
/// that freed it, so checks spread over hundreds of pool threads keep
/// hundreds of such blocks. Here each of the `concurrency` threads owns one
/// buffer of the policy's cost, reused by every check it runs, so the
/// memory of password checking is `concurrency × argon2_memory_kib`,
/// whatever the load.
///
/// The semaphore slot travels with the job and is released by the worker
/// when the computation ends, not when the waiting request goes away: a
/// client that disconnects mid-check cannot queue more work than there are
/// slots.
#[derive(Debug)]
struct CheckWorkers {
    jobs: std::sync::mpsc::Sender<CheckJob>,
}

impl CheckWorkers {
    fn start(n: usize, policy: &PasswordPolicy) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<CheckJob>();
        let rx = Arc::new(Mutex::new(rx));
        // The hash checked when the user does not exist: made once, at the
        // policy's cost, so a missing user takes as long as a wrong password.
        let dummy = Arc::new(std::sync::OnceLock::<String>::new());
        let keep_blocks = policy_blocks(policy);
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let dummy = dummy.clone();
            let policy = policy.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else {
                            return;
                        };
                        let hash = match &job.hash {
                            Some(h) => h.as_str(),
                            None => dummy.get_or_init(|| {
                                hash_password_with("synnefo-dummy-password", &policy)
                                    .unwrap_or_default()
                            }),
                        };
                        let ok = verify_password_with_memory(hash, &job.password, &mut memory);
                        // A hash stored at a higher cost than the policy's
                        // (an older setting) is checked, but its larger
                        // buffer is not kept.
                        if memory.len() > keep_blocks {
                            memory = Vec::new();
                        }
                        drop(job.permit);
                        let _ = job.reply.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Self { jobs: tx }
    }

    /// Checks `password` against `hash` on a worker thread (false if the
    /// workers are gone); `permit` is released when the check ends.
    async fn verify(
        &self,
        hash: Option<String>,
        password: String,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> bool {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = CheckJob {
            hash,
            password,
            reply,
            permit,
        };
        if self.jobs.send(job).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// The argon2 blocks (1 KiB each) of a hash at the policy's cost.
fn policy_blocks(policy: &PasswordPolicy) -> usize {
    argon2::Params::new(
        policy.memory_kib,
        policy.iterations,
        policy.parallelism,
        None,
    )
    .map_or(argon2::Params::DEFAULT_M_COST as usize, |p| p.block_count())
}

/// The bounds around password checks: a semaphore, the worker threads and
/// two counters.
#[derive(Debug)]
struct LoginGuard {
    policy: PasswordPolicy,
    slots: Arc<tokio::sync::Semaphore>,
    workers: std::sync::OnceLock<CheckWorkers>,
    by_address: WindowCounter<IpAddr>,
    failures_by_user: WindowCounter<String>,
}

impl LoginGuard {
    fn new(policy: PasswordPolicy) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(policy.effective_concurrency())),
            workers: std::sync::OnceLock::new(),
            by_address: WindowCounter::new(policy.window),
            failures_by_user: WindowCounter::new(policy.window),
            policy,
        }
    }

    /// The worker threads, started at the first check.
    fn workers(&self) -> &CheckWorkers {
        self.workers
            .get_or_init(|| CheckWorkers::start(self.policy.effective_concurrency(), &self.policy))
    }
}

fn user_key(user: &UserSelector) -> String {
    match user {
        UserSelector::Id(id) => format!("id:{id}"),
        UserSelector::Name(n) => format!("name:{n}"),
    }
}

/// The identity application service.
#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl: chrono::Duration,
    guard: Arc<LoginGuard>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn unauthorized() -> ServiceError {
    ServiceError::Unauthorized(AUTH_FAILED.into())
}

impl Identity {
    /// Tokens live `ttl`.
    pub fn new(store: Arc<dyn Store>, ttl: std::time::Duration) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            ttl: chrono::Duration::from_std(ttl)
                .ok()
                .filter(|t| t.num_seconds() as u64 <= MAX_TOKEN_TTL_SECS)
                .unwrap_or(chrono::Duration::days(1)),
            guard: Arc::new(LoginGuard::new(PasswordPolicy::default())),
        }
    }

    /// Uses another password policy (bounds and argon2 cost).
    pub fn with_password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.guard = Arc::new(LoginGuard::new(policy));
        self
    }

    /// The password policy in force.
    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.guard.policy
    }

    /// Password checks running right now.
    pub fn password_checks_running(&self) -> usize {
        self.guard.policy.effective_concurrency() - self.guard.slots.available_permits()
    }

    /// Uses another clock (tests of expiry).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Token lifetime.
    pub fn ttl(&self) -> chrono::Duration {
        self.ttl
    }

    /// Password authentication, scoped to `project` (or the user's first
    /// project by name when `None`). Every failure is the same 401.
    pub async fn password_auth(
        &self,
        user: &UserSelector,
        password: &str,
        project: Option<&ProjectSelector>,
    ) -> Result<Issued, ServiceError> {
        self.password_auth_from(None, user, password, project).await
    }

    /// [`Identity::password_auth`] from a known source address, counted
    /// against the per-address limit. Refusals by a limit are
    /// [`ServiceError::Busy`]; they happen before any password is hashed.
    pub async fn password_auth_from(
        &self,
        source: Option<IpAddr>,
        user: &UserSelector,
        password: &str,
        project: Option<&ProjectSelector>,
    ) -> Result<Issued, ServiceError> {
        let g = &self.guard;
        let now = Instant::now();
        if let Some(ip) = source
            && g.policy.attempts_per_address > 0
            && g.by_address.add(&ip, now) > g.policy.attempts_per_address
        {
            return Err(ServiceError::Busy {
                message: "Too many login attempts from this address; try again later.".into(),
                retry_after_secs: g.by_address.retry_after(&ip, now),
                per_caller: true,
            });
        }
        let key = user_key(user);
        if g.policy.failures_per_user > 0
            && g.failures_by_user.count(&key, now) >= g.policy.failures_per_user
        {
            return Err(ServiceError::Busy {
                message: "Too many failed logins for this user; try again later.".into(),
                retry_after_secs: g.failures_by_user.retry_after(&key, now),
                per_caller: true,
            });
        }
        let permit =
            match tokio::time::timeout(g.policy.wait, g.slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(ServiceError::Busy {
                        message: "Too many logins in progress; try again shortly.".into(),
                        retry_after_secs: 1,
                        per_caller: false,
                    });
                }
            };
        let result = self.check_password(user, password, permit).await;
        if result.is_err() && g.policy.failures_per_user > 0 {
            g.failures_by_user.add(&key, Instant::now());
        }
        let user = result?;
        let project = self.scope(&user, project).await?;
        self.issue(user, project).await
    }

    /// The user, if `password` is theirs; holds `permit` while hashing.
    async fn check_password(
        &self,
        user: &UserSelector,
        password: &str,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<User, ServiceError> {
        let found = match user {
            UserSelector::Name(n) => self.store.user_by_name(n).await?,
            UserSelector::Id(id) => self.store.user(id).await?,
        };
        // Verify against a dummy hash when the user is missing, so both
        // failures take the same time.
        let hash = found.as_ref().map(|u| u.password_hash.clone());
        let ok = self
            .guard
            .workers()
            .verify(hash, password.to_string(), permit)
            .await;
        match found {
            Some(u) if ok && u.enabled => Ok(u),
            _ => Err(unauthorized()),
        }
    }

    /// Issues a token for `user` in `project` (membership already checked).
    pub async fn issue(&self, user: User, project: Project) -> Result<Issued, ServiceError> {
        self.issue_for(user, project, self.ttl).await
    }

    /// Issues a token with an explicit lifetime (`synnefo admin tokens`).
    pub async fn issue_for(
        &self,
        user: User,
        project: Project,
        ttl: chrono::Duration,
    ) -> Result<Issued, ServiceError> {
        let now = self.clock.now();
        let expires = now
            .checked_add_signed(ttl)
            .ok_or_else(|| ServiceError::BadRequest("token lifetime too long".into()))?;
        self.issue_until(user, project, expires).await
    }

    /// A token for another project of the same user, from a valid token:
    /// it expires when its parent does (never later), and revoking the
    /// parent revokes it ([`IdentityStore::revoke_token`](crate::ports::IdentityStore::revoke_token)).
    pub async fn rescope(
        &self,
        parent: &Authenticated,
        project: Option<&ProjectSelector>,
    ) -> Result<Issued, ServiceError> {
        let project = self.scope(&parent.user, project).await?;
        self.issue_until(parent.user.clone(), project, parent.token.expires)
            .await
    }

    async fn issue_until(
        &self,
        user: User,
        project: Project,
        expires: DateTime<Utc>,
    ) -> Result<Issued, ServiceError> {
        let secret = new_token_secret();
        let now = self.clock.now();
        let token = Token {
            digest: token_digest(&secret),
            user_id: user.id.clone(),
            project_id: project.id.clone(),
            issued: now,
            expires,
            revoked: false,
        };
        self.store.store_token(&token).await?;
        Ok(Issued {
            secret,
            auth: Authenticated {
                token,
                user,
                project,
            },
        })
    }

    /// Resolves the project to scope to; the user must be a member.
    pub async fn scope(
        &self,
        user: &User,
        project: Option<&ProjectSelector>,
    ) -> Result<Project, ServiceError> {
        let mut mine = self.store.user_projects(&user.id).await?;
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        let chosen = match project {
            None => mine.into_iter().next(),
            Some(ProjectSelector::Id(id)) => mine.into_iter().find(|p| &p.id == id),
            Some(ProjectSelector::Name(n)) => mine.into_iter().find(|p| &p.name == n),
        };
        chosen.ok_or_else(unauthorized)
    }

    /// Validates a presented token: known, not revoked, not expired, user
    /// still enabled and still a member of the project.
    pub async fn validate(&self, secret: &str) -> Result<Authenticated, ServiceError> {
        if secret.is_empty() || secret.len() > 1024 {
            return Err(unauthorized());
        }
        let token = self
            .store
            .token(&token_digest(secret))
            .await?
            .ok_or_else(unauthorized)?;
        if token.revoked || token.expires <= self.clock.now() {
            return Err(unauthorized());
        }
        let user = self
            .store
            .user(&token.user_id)
            .await?
            .ok_or_else(unauthorized)?;
        if !user.enabled {
            return Err(unauthorized());
        }
        let project = self
            .store
            .project(&token.project_id)
            .await?
            .ok_or_else(unauthorized)?;
        Ok(Authenticated {
            token,
            user,
            project,
        })
    }

    /// Validates a token and checks it is usable right now, returning its
    /// expiry too (Keystone's `GET /v3/auth/tokens`).
    pub async fn expires(&self, secret: &str) -> Result<DateTime<Utc>, ServiceError> {
        Ok(self.validate(secret).await?.token.expires)
    }

    /// Deletes tokens that expired more than `grace` ago; returns how many.
    pub async fn purge_expired(&self, grace: chrono::Duration) -> Result<u64, ServiceError> {
        let before = self.clock.now() - grace;
        Ok(self.store.purge_expired_tokens(before).await?)
    }

    /// Revokes a token (and the tokens rescoped from it); unknown tokens
    /// are a 404 (Keystone's answer).
    pub async fn revoke(&self, secret: &str) -> Result<(), ServiceError> {
        let digest = token_digest(secret);
        match self.store.token(&digest).await? {
            Some(t) if !t.revoked && t.expires > self.clock.now() => {
                self.store.revoke_token(&digest).await.map_err(|e| match e {
                    StoreError::NotFound(_) => {
                        ServiceError::NotFound("Could not find token".into())
                    }
                    other => other.into(),
                })
            }
            _ => Err(ServiceError::NotFound("Could not find token.".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_fips_vectors() {
        assert_eq!(
            to_hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            to_hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            to_hex(&sha256(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        // Lengths around the padding boundary.
        assert_ne!(sha256(&[b'x'; 55]), sha256(&[b'x'; 56]));
    }

    #[test]
    fn passwords_round_trip_and_fail_closed() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "S3cret"));
        assert!(!verify_password("not a hash", "s3cret"));
        assert_ne!(hash_password("s3cret").unwrap(), h, "salted");
        let mut memory = Vec::new();
        assert!(verify_password_with_memory(&h, "s3cret", &mut memory));
        assert!(!verify_password_with_memory(&h, "S3cret", &mut memory));
        assert!(!verify_password_with_memory(
            "not a hash",
            "s3cret",
            &mut memory
        ));
        assert_eq!(memory.len(), 19 * 1024, "one block per KiB of the cost");
        let cheap = PasswordPolicy {
            memory_kib: 64,
            iterations: 1,
            ..PasswordPolicy::default()
        };
        let h2 = hash_password_with("x", &cheap).unwrap();
        assert!(verify_password(&h2, "x"));
        assert!(verify_password_with_memory(&h2, "x", &mut memory));
        assert!(!verify_password_with_memory(&h2, "y", &mut memory));
    }

    #[test]
    fn token_lifetimes_are_bounded_not_overflowing() {
        assert!(token_ttl_from_secs(10_000_000_000_000_000).is_err());
        assert!(token_ttl_from_secs(0).is_err());
        assert_eq!(token_ttl_from_secs(60).unwrap().num_seconds(), 60);
    }

    #[test]
    fn window_counters_count_and_reset() {
        let c = WindowCounter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(c.add(&"a", t0), 1);
        assert_eq!(c.add(&"a", t0), 2);
        assert_eq!(c.count(&"a", t0), 2);
        assert_eq!(c.count(&"b", t0), 0);
        assert_eq!(c.count(&"a", t0 + Duration::from_secs(61)), 0);
        assert_eq!(c.add(&"a", t0 + Duration::from_secs(61)), 1);
        assert!(c.retry_after(&"a", t0 + Duration::from_secs(61)) >= 59);
    }

    #[test]
    fn token_secrets_are_random_and_digest_is_not_the_secret() {
        let a = new_token_secret();
        let b = new_token_secret();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(token_digest(&a), a);
        assert_eq!(token_digest(&a), token_digest(&a));
    }
}
