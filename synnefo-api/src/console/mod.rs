//! vncauthproxy: out-of-band VNC consoles with one-time credentials.
//!
//! Users must reach their VM's console without reaching the Ganeti node that
//! runs it. The API asks this proxy for a *forwarding*: "listen on a port,
//! let one VNC client in that knows this one-time password, and relay it to
//! `destination_address:destination_port`". The API then hands the user the
//! proxy's host, the allocated port and the password.
//!
//! Why it is built the way it is:
//! - **Two transports to request a forwarding.** Separate processes use the
//!   control socket (a Unix socket whose file mode says who may ask; JSON
//!   lines, or the Synnefo v0.3 line form `sport:daddr:dport:password`), see
//!   [`control`] and [`client`]. `synnefo up` runs everything in one process
//!   and calls [`VncAuthProxyHandle::request_forwarding`] directly.
//! - **The proxy terminates RFB authentication on both sides.** The client
//!   authenticates to the proxy with RFB VNC authentication (DES
//!   challenge/response) and the one-time password; the proxy then performs
//!   the client side of the handshake with the backend (security type None,
//!   or VNC authentication with the operator's backend password) and only
//!   then tells the client it is in. From there on the bytes are relayed
//!   untouched: the client's ClientInit and the server's ServerInit pass
//!   through, so every RFB extension keeps working.
//! - **Sans-IO handshakes.** [`rfb`] holds the handshake logic as pure state
//!   machines over byte slices, driven by small async loops; the same code is
//!   unit-tested, fuzzed and used by the proxy.
//! - **Single use, short lived, not cancellable by others.** A forwarding's
//!   password is void after the first successful login or after
//!   `accept_timeout`. Wrong answers are counted per source address: an
//!   address that gave `max_failures_per_forwarding` of them is refused on
//!   that forwarding (and after `auth_failure_limit` on every forwarding),
//!   but the forwarding stays open for its owner. Ports are picked at random
//!   within the pool.
//! - **Fair.** Pending forwardings are capped per user and per project, and
//!   connections that have not authenticated yet per source address and in
//!   total, so one tenant cannot take the pool or the descriptors from all.
//! - **Cheap sessions.** On Linux the relay moves bytes with splice(2)
//!   through lazily created pipes (no user-space buffer per idle session);
//!   elsewhere, or when configured, tokio's `copy_bidirectional`.
//!
//! ```no_run
//! use synnefo_api::console::{Forwarding, ProxyConfig, VncAuthProxy};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), synnefo_api::console::ConsoleError> {
//! let config = ProxyConfig {
//!     ctrl_socket: None, // in-process only
//!     listen_address: "127.0.0.1".parse().unwrap(),
//!     ..ProxyConfig::default()
//! };
//! let proxy = VncAuthProxy::start(config, CancellationToken::new()).await?;
//! let port = proxy
//!     .request_forwarding(Forwarding::new(0, "node1.example.org", 11000, "s3cr3t!"))
//!     .await?;
//! println!("vnc://proxy-host:{port} password s3cr3t!");
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod assets;
pub mod client;
mod config;
pub mod control;
mod error;
mod limits;
mod metrics;
mod proxy;
mod relay;
pub mod rfb;
mod websocket;

pub use assets::CONSOLE_PAGE;
pub use config::{ProxyConfig, RelayMode};
pub use error::ConsoleError;
pub use limits::raise_nofile_limit;
pub use metrics::MetricsSnapshot;
pub use proxy::{VncAuthProxy, VncAuthProxyHandle};

use serde::{Deserialize, Serialize};

/// One console forwarding request: "accept one VNC client on `source_port`
/// that knows `password`, and relay it to the backend VNC server".
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Forwarding {
    /// Port to listen on; 0 picks a free port from the configured pool.
    #[serde(default)]
    pub source_port: u16,
    /// Backend VNC server host (IP address or host name), e.g. a Ganeti node.
    pub destination_address: String,
    /// Backend VNC server port.
    pub destination_port: u16,
    /// The one-time password the VNC client must present. RFB VNC
    /// authentication uses only its first 8 bytes.
    pub password: String,
    /// Free-form label for the session log line (e.g. `vm 42 user alice`);
    /// optional, not part of the v0.3 protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The user the forwarding is for: the proxy caps each user's pending
    /// forwardings (`pending_per_user`). Optional, not part of the v0.3
    /// protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The project the forwarding is for (`pending_per_project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl Forwarding {
    /// A forwarding without a label.
    pub fn new(
        source_port: u16,
        destination_address: impl Into<String>,
        destination_port: u16,
        password: impl Into<String>,
    ) -> Self {
        Self {
            source_port,
            destination_address: destination_address.into(),
            destination_port,
            password: password.into(),
            label: None,
            user: None,
            project: None,
        }
    }

    /// The same forwarding on behalf of `user` in `project`.
    pub fn for_owner(mut self, user: impl Into<String>, project: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.project = Some(project.into());
        self
    }

    /// The same forwarding with a label for the session log line.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("source_port", &self.source_port)
            .field("destination_address", &self.destination_address)
            .field("destination_port", &self.destination_port)
            .field("password", &"***")
            .field("label", &self.label)
            .field("user", &self.user)
            .field("project", &self.project)
            .finish()
    }
}
