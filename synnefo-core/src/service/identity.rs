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

use std::sync::Arc;

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

/// Hashes a password with argon2id (random salt).
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ServiceError::BadRequest(format!("cannot salt password: {e}")))?;
    Argon2::default()
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

/// The identity application service.
#[derive(Clone)]
pub struct Identity {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl: chrono::Duration,
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
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1)),
        }
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
        let found = match user {
            UserSelector::Name(n) => self.store.user_by_name(n).await?,
            UserSelector::Id(id) => self.store.user(id).await?,
        };
        // Verify against a dummy hash when the user is missing, so both
        // failures take the same time.
        let hash = found
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(dummy_hash);
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
            .await
            .unwrap_or(false);
        let user = match found {
            Some(u) if ok && u.enabled => u,
            _ => return Err(unauthorized()),
        };
        let project = self.scope(&user, project).await?;
        self.issue(user, project).await
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
        let secret = new_token_secret();
        let now = self.clock.now();
        let token = Token {
            digest: token_digest(&secret),
            user_id: user.id.clone(),
            project_id: project.id.clone(),
            issued: now,
            expires: now + ttl,
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

    /// Revokes a token; unknown tokens are a 404 (Keystone's answer).
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

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("synnefo-dummy-password").unwrap_or_default())
        .clone()
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
