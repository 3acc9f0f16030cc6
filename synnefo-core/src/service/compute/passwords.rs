//! Server passwords, as Synnefo's `servers/{id}/password` hands them out:
//! the admin password a create generated (or was given) is kept in this
//! process's memory, never in the database or the logs, for
//! `server_password_ttl` (`[api] server_password_ttl_secs`; Synnefo keeps
//! it in its `VM_PASSWORD_CACHE` until evicted), so the owner can fetch it
//! once more after the create's answer; `DELETE` forgets it at once. An
//! API process keeps its own (Synnefo's default local-memory cache
//! behaves the same way): with several API processes, the password is
//! found only on the one that created the server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Caller, Compute};
use crate::error::ServiceError;
use crate::ids::VmId;

/// Passwords by server, each with the time it stops being handed out.
#[derive(Default)]
pub struct ServerPasswords {
    by_vm: Mutex<HashMap<VmId, (String, Instant)>>,
}

impl std::fmt::Debug for ServerPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the passwords themselves
        f.debug_struct("ServerPasswords").finish_non_exhaustive()
    }
}

impl ServerPasswords {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, (String, Instant)>> {
        // a panic while holding the lock cannot leave the map half written
        self.by_vm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `password` for `vm` until `ttl` has passed (a zero `ttl`
    /// remembers nothing). Expired entries are dropped on the way.
    pub fn remember(&self, vm: VmId, password: &str, ttl: Duration, now: Instant) {
        let mut map = self.map();
        map.retain(|_, (_, until)| *until > now);
        if !ttl.is_zero() {
            map.insert(vm, (password.to_string(), now + ttl));
        }
    }

    /// The password of `vm`, unless it expired or was forgotten.
    pub fn get(&self, vm: VmId, now: Instant) -> Option<String> {
        let mut map = self.map();
        match map.get(&vm) {
            Some((p, until)) if *until > now => Some(p.clone()),
            Some(_) => {
                map.remove(&vm);
                None
            }
            None => None,
        }
    }

    /// Forgets the password of `vm`.
    pub fn forget(&self, vm: VmId) {
        self.map().remove(&vm);
    }
}

impl Compute {
    /// The admin password of a server of the caller's, while this process
    /// still keeps it (see the module's documentation); `None` once it
    /// expired or was deleted.
    pub async fn server_password(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<String>, ServiceError> {
        let vm = self.server(caller, id).await?;
        Ok(self.passwords.get(vm.id, Instant::now()))
    }

    /// Forgets the admin password of a server of the caller's.
    pub async fn delete_server_password(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(), ServiceError> {
        let vm = self.server(caller, id).await?;
        self.passwords.forget(vm.id);
        tracing::info!(server = %vm.id, user = %caller.user_id, "server password forgotten");
        Ok(())
    }

    /// Keeps a new server's admin password for
    /// [`ComputeConfig::server_password_ttl`](super::ComputeConfig).
    pub(super) fn remember_password(&self, vm: VmId, password: &str) {
        self.passwords.remember(
            vm,
            password,
            self.config.server_password_ttl,
            Instant::now(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_expire_and_are_forgotten() {
        let p = ServerPasswords::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        p.remember(VmId(1), "s3cret", ttl, t0);
        p.remember(VmId(2), "other", ttl, t0);
        assert_eq!(
            p.get(VmId(1), t0 + Duration::from_secs(59)).as_deref(),
            Some("s3cret")
        );
        assert_eq!(p.get(VmId(1), t0 + ttl), None);
        p.forget(VmId(2));
        assert_eq!(p.get(VmId(2), t0), None);
        // a zero TTL keeps nothing
        p.remember(VmId(3), "x", Duration::ZERO, t0);
        assert_eq!(p.get(VmId(3), t0), None);
        // the debug form shows no password
        p.remember(VmId(4), "visible?", ttl, t0);
        assert!(!format!("{p:?}").contains("visible"));
    }
}
