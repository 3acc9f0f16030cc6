//! The console port of the compute service, implemented over the
//! vncauthproxy: through its control socket (separate processes) or its
//! in-process handle (`synnefo up`).

use std::path::PathBuf;

use async_trait::async_trait;
use synnefo_core::error::{BackendError, ServiceError};
use synnefo_core::service::compute::{Caller, ConsoleForwarder, ProxyEndpoint};

use crate::console::{ConsoleError, Forwarding, VncAuthProxyHandle, client};

/// Seconds a console request refused for lack of room should wait: the
/// one-time forwardings expire within the proxy's accept timeout (30 s by
/// default).
const CONSOLE_RETRY_SECS: u64 = 10;

fn to_service(e: ConsoleError) -> ServiceError {
    match e {
        ConsoleError::TooManyPending { scope, limit } => ServiceError::Busy {
            message: format!(
                "Too many console requests pending for this {scope} (limit {limit}); \
                 use or let expire the ones handed out, then try again."
            ),
            retry_after_secs: CONSOLE_RETRY_SECS,
            per_caller: true,
        },
        ConsoleError::PoolExhausted { .. } => ServiceError::Busy {
            message: "Every console port is in use; try again shortly.".into(),
            retry_after_secs: CONSOLE_RETRY_SECS,
            per_caller: false,
        },
        ConsoleError::Refused(m) | ConsoleError::BadRequest(m) => {
            BackendError::Rejected(format!("console proxy refused: {m}")).into()
        }
        other => {
            tracing::warn!(error = %other, "console proxy unavailable");
            BackendError::Unavailable(format!("console proxy: {other}")).into()
        }
    }
}

/// Asks a vncauthproxy over its control socket.
#[derive(Debug, Clone)]
pub struct SocketForwarder {
    /// The control socket.
    pub socket: PathBuf,
    /// Host name clients connect to.
    pub public_host: String,
}

#[async_trait]
impl ConsoleForwarder for SocketForwarder {
    async fn forward(
        &self,
        host: &str,
        port: u16,
        password: &str,
        label: &str,
    ) -> Result<ProxyEndpoint, ServiceError> {
        self.send(Forwarding::new(0, host, port, password).with_label(label))
            .await
    }

    async fn forward_for(
        &self,
        owner: &Caller,
        host: &str,
        port: u16,
        password: &str,
        label: &str,
    ) -> Result<ProxyEndpoint, ServiceError> {
        self.send(
            Forwarding::new(0, host, port, password)
                .with_label(label)
                .for_owner(&owner.user_id, &owner.project_id),
        )
        .await
    }
}

impl SocketForwarder {
    async fn send(&self, fwd: Forwarding) -> Result<ProxyEndpoint, ServiceError> {
        let port = client::request_forwarding(&self.socket, &fwd)
            .await
            .map_err(to_service)?;
        Ok(ProxyEndpoint {
            host: self.public_host.clone(),
            port,
        })
    }
}

/// Asks a vncauthproxy running in this process.
#[derive(Debug, Clone)]
pub struct InProcessForwarder {
    /// The proxy.
    pub handle: VncAuthProxyHandle,
    /// Host name clients connect to.
    pub public_host: String,
}

#[async_trait]
impl ConsoleForwarder for InProcessForwarder {
    async fn forward(
        &self,
        host: &str,
        port: u16,
        password: &str,
        label: &str,
    ) -> Result<ProxyEndpoint, ServiceError> {
        self.send(Forwarding::new(0, host, port, password).with_label(label))
            .await
    }

    async fn forward_for(
        &self,
        owner: &Caller,
        host: &str,
        port: u16,
        password: &str,
        label: &str,
    ) -> Result<ProxyEndpoint, ServiceError> {
        self.send(
            Forwarding::new(0, host, port, password)
                .with_label(label)
                .for_owner(&owner.user_id, &owner.project_id),
        )
        .await
    }
}

impl InProcessForwarder {
    async fn send(&self, fwd: Forwarding) -> Result<ProxyEndpoint, ServiceError> {
        let port = self
            .handle
            .request_forwarding(fwd)
            .await
            .map_err(to_service)?;
        Ok(ProxyEndpoint {
            host: self.public_host.clone(),
            port,
        })
    }
}
