//! The console port of the compute service, implemented over the
//! vncauthproxy: through its control socket (separate processes) or its
//! in-process handle (`synnefo up`); and the browser console's URL.
//!
//! A `novnc` console is a URL of the noVNC page the proxy's WebSocket
//! listener serves, in Nova's form: `{page}?path=%3Ftoken%3D{token}`. The
//! token is the forwarding's one-time password (random, single use, void
//! after `accept_timeout`); the page opens `ws://HOST:PORT/?token={token}`
//! and the proxy lets that one WebSocket in without asking for a password.
//! The port number never appears in the URL.

use std::path::PathBuf;

use async_trait::async_trait;
use synnefo_core::error::{BackendError, ServiceError};
use synnefo_core::service::compute::{Caller, ConsoleForwarder, ProxyEndpoint};
use synnefo_core::settings::VncAuthProxySettings;

use crate::console::{CONSOLE_PAGE, ConsoleError, Forwarding, VncAuthProxyHandle, client};

/// The console page's URL from the settings: `websocket_public_url` (or
/// `http://{public_host}:{port of websocket_listen}`) + `/console.html`.
pub fn novnc_page_url(s: &VncAuthProxySettings) -> String {
    let base = if s.websocket_public_url.trim().is_empty() {
        let port = s
            .websocket_listen
            .rsplit_once(':')
            .map_or("6080", |(_, p)| p);
        let host = &s.public_host;
        if host.contains(':') && !host.starts_with('[') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        }
    } else {
        s.websocket_public_url.trim().to_string()
    };
    format!("{}{CONSOLE_PAGE}", base.trim_end_matches('/'))
}

/// A browser console URL: the page with the one-time token in Nova's
/// `path` parameter (`?path=%3Ftoken%3D...`).
pub fn novnc_console_url(page: &str, token: &str) -> String {
    let inner = serde_urlencoded::to_string([("token", token)]).unwrap_or_default();
    let query = serde_urlencoded::to_string([("path", format!("?{inner}"))]).unwrap_or_default();
    format!("{page}?{query}")
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_url_from_settings() {
        let mut s = synnefo_core::settings::Settings::defaults_with("")
            .unwrap()
            .vncauthproxy;
        s.public_host = "console.example.org".into();
        s.websocket_listen = "0.0.0.0:6081".into();
        assert_eq!(
            novnc_page_url(&s),
            "http://console.example.org:6081/console.html"
        );
        s.public_host = "2001:db8::1".into();
        assert_eq!(novnc_page_url(&s), "http://[2001:db8::1]:6081/console.html");
        s.websocket_public_url = "https://vnc.example.org/".into();
        assert_eq!(novnc_page_url(&s), "https://vnc.example.org/console.html");
    }

    #[test]
    fn console_url_carries_the_token_in_novas_form() {
        let url = novnc_console_url("http://h:6080/console.html", "Ab3xYz9KmN2p");
        assert_eq!(
            url,
            "http://h:6080/console.html?path=%3Ftoken%3DAb3xYz9KmN2p"
        );
        // Characters that need escaping survive both levels.
        let url = novnc_console_url("http://h/console.html", "a&b=c");
        assert_eq!(url, "http://h/console.html?path=%3Ftoken%3Da%2526b%253Dc");
    }
}
