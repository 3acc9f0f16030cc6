//! The compute service's own ports: placement and console forwarding.

use std::collections::HashMap;

use async_trait::async_trait;

use super::Caller;
use crate::error::{BackendError, ServiceError};
use crate::ids::BackendId;
use crate::model::{Backend, Flavor, Usage};

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

    /// [`forward`](Self::forward) on behalf of `owner`, so the proxy can
    /// cap each user's and project's pending forwardings. The default
    /// ignores the owner.
    async fn forward_for(
        &self,
        owner: &Caller,
        host: &str,
        port: u16,
        password: &str,
        label: &str,
    ) -> Result<ProxyEndpoint, ServiceError> {
        let _ = owner;
        self.forward(host, port, password, label).await
    }
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
