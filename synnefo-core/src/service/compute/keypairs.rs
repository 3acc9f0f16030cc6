//! Key pairs (Nova's `os-keypairs`): per user, a name unique per user, a
//! bound per user (`api.max_keypairs_per_user`), and their use on create
//! (the public keys go to snf-image as the `auth_keys` OS parameter).
//!
//! Parsing, generating and fingerprinting keys is the adapter's job (the
//! formats are Nova's wire formats); the rules are here.

use super::{Caller, Compute};
use crate::error::{ServiceError, StoreError};
use crate::model::{Keypair, KeypairType, NewKeypair};

/// Longest key pair name (Nova's limit).
pub const KEYPAIR_NAME_MAX: usize = 255;

/// Checks a key pair name as Nova does up to microversion 2.91: 1 to 255
/// characters, each a letter, digit, space, `_` or `-`.
pub fn validate_keypair_name(name: &str) -> Result<(), ServiceError> {
    let len = name.chars().count();
    if len == 0 || len > KEYPAIR_NAME_MAX {
        return Err(ServiceError::BadRequest(format!(
            "Keypair data is invalid: Keypair name must be string and between 1 and {KEYPAIR_NAME_MAX} characters long"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-'))
    {
        return Err(ServiceError::BadRequest(
            "Keypair data is invalid: Keypair name contains unsafe characters".into(),
        ));
    }
    Ok(())
}

fn not_found(name: &str, user_id: &str) -> ServiceError {
    ServiceError::NotFound(format!("Keypair {name} not found for user {user_id}"))
}

impl Compute {
    /// The user whose key pairs a request is about: the caller, or (for
    /// operators only, Nova's 2.10 `user_id`) another user.
    fn keypair_owner<'a>(
        &self,
        caller: &'a Caller,
        user_id: Option<&'a str>,
    ) -> Result<&'a str, ServiceError> {
        match user_id {
            Some(u) if u != caller.user_id => {
                if caller.is_admin {
                    Ok(u)
                } else {
                    Err(ServiceError::Forbidden(
                        "Policy doesn't allow os_compute_api:os-keypairs to be performed.".into(),
                    ))
                }
            }
            _ => Ok(&caller.user_id),
        }
    }

    /// Stores a key pair for the caller (or, for operators, `new.user_id`
    /// when it names another user): the name is checked, the user's bound
    /// enforced atomically; a name the user already has is a 409.
    pub async fn create_keypair(
        &self,
        caller: &Caller,
        new: NewKeypair,
    ) -> Result<Keypair, ServiceError> {
        validate_keypair_name(&new.name)?;
        let owner = self
            .keypair_owner(caller, Some(new.user_id.as_str()))?
            .to_string();
        let new = NewKeypair {
            user_id: owner,
            ..new
        };
        let limit = i64::from(self.config.max_keypairs_per_user);
        match self.store.create_keypair(&new, Some(limit)).await {
            Ok(k) => {
                tracing::info!(user = %new.user_id, keypair = %new.name, kind = new.kind.as_str(), "key pair created");
                Ok(k)
            }
            Err(StoreError::QuotaExceeded { .. }) => Err(ServiceError::OverLimit(
                "Quota exceeded, too many key pairs.".into(),
            )),
            Err(StoreError::NotFound(_)) => Err(ServiceError::BadRequest(format!(
                "User {} could not be found.",
                new.user_id
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The key pairs of the caller (or of `user_id`, operators only), by
    /// name, after `marker` (a name the caller saw; 400 if it has none of
    /// that name), at most `limit` (capped at [`super::MAX_PAGE`]).
    pub async fn keypairs(
        &self,
        caller: &Caller,
        user_id: Option<&str>,
        marker: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<Keypair>, ServiceError> {
        let owner = self.keypair_owner(caller, user_id)?;
        if let Some(m) = marker
            && self.store.keypair(owner, m).await?.is_none()
        {
            return Err(ServiceError::BadRequest(format!("marker [{m}] not found")));
        }
        let limit = Some(limit.unwrap_or(super::MAX_PAGE).min(super::MAX_PAGE));
        Ok(self
            .store
            .keypairs(owner, marker.map(str::to_string), limit)
            .await?)
    }

    /// One key pair of the caller (or of `user_id`, operators only); 404
    /// if there is none of that name.
    pub async fn keypair(
        &self,
        caller: &Caller,
        name: &str,
        user_id: Option<&str>,
    ) -> Result<Keypair, ServiceError> {
        let owner = self.keypair_owner(caller, user_id)?;
        self.store
            .keypair(owner, name)
            .await?
            .ok_or_else(|| not_found(name, owner))
    }

    /// Deletes one key pair of the caller (or of `user_id`, operators
    /// only); 404 if there is none of that name. Servers created with it
    /// keep its name and their injected key.
    pub async fn delete_keypair(
        &self,
        caller: &Caller,
        name: &str,
        user_id: Option<&str>,
    ) -> Result<(), ServiceError> {
        let owner = self.keypair_owner(caller, user_id)?;
        match self.store.delete_keypair(owner, name).await {
            Ok(()) => {
                tracing::info!(user = %owner, keypair = %name, "key pair deleted");
                Ok(())
            }
            Err(StoreError::NotFound(_)) => Err(not_found(name, owner)),
            Err(e) => Err(e.into()),
        }
    }

    /// The caller's key pairs named in a create (duplicates dropped, order
    /// kept); any unknown name is Nova's 400 "Invalid key_name provided.",
    /// an x509 one a 400 too (snf-image's `auth_keys` holds SSH keys only).
    pub(super) async fn resolve_key_names(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<Vec<Keypair>, ServiceError> {
        let mut out: Vec<Keypair> = Vec::with_capacity(names.len());
        for name in names {
            if out.iter().any(|k| &k.name == name) {
                continue;
            }
            match self.store.keypair(&caller.user_id, name).await? {
                Some(k) if k.kind == KeypairType::X509 => {
                    // snf-image takes OpenSSH authorized_keys lines only
                    return Err(ServiceError::BadRequest(format!(
                        "Key pair {name} is an x509 certificate; only SSH key pairs can be injected."
                    )));
                }
                Some(k) => out.push(k),
                None => {
                    return Err(ServiceError::BadRequest(
                        "Invalid key_name provided.".into(),
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_nova_allows_them() {
        for ok in ["a", "my key", "key_1-x", &"k".repeat(255)] {
            assert!(validate_keypair_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", r"key_/.\@:", "ключ", "a\tb", &"k".repeat(256)] {
            assert!(
                matches!(validate_keypair_name(bad), Err(ServiceError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
