//! Proxy configuration: what the operator's settings map onto.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConsoleError;

/// How authenticated sessions move bytes between client and backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// splice(2) through kernel pipes on Linux (no user-space copy, no
    /// buffer per idle session); `copy` elsewhere.
    #[default]
    Splice,
    /// tokio's `copy_bidirectional` (two 8 KiB user-space buffers per session).
    Copy,
}

/// Settings of the console proxy. Every field has a default (see
/// [`ProxyConfig::default`]); durations are seconds (fractions allowed) in
/// serialized form.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Control socket path; `None` disables the socket (in-process use only).
    /// Default `/run/synnefo/vncauthproxy.sock`.
    pub ctrl_socket: Option<PathBuf>,
    /// File mode set on the control socket after bind; only users allowed by
    /// it may request forwardings (connecting needs write permission).
    /// Default `0o660`.
    pub ctrl_socket_mode: u32,
    /// Group given to the control socket (e.g. the API's group). Default none.
    pub ctrl_socket_group: Option<String>,
    /// Address the forwarding ports listen on. Default `0.0.0.0`: console
    /// ports are meant to be reached by users.
    pub listen_address: IpAddr,
    /// First port of the pool used when a request asks for port 0.
    /// Default 25000 (as snf-vncauthproxy).
    pub port_min: u16,
    /// Last port of the pool (inclusive). Default 30000.
    pub port_max: u16,
    /// How long a forwarding waits for its client to connect and
    /// authenticate: the one-time password's lifetime. Default 30 s.
    #[serde(deserialize_with = "de_secs")]
    pub accept_timeout: Duration,
    /// Time allowed for one connection's RFB handshake with the client, and
    /// again for connecting to and handshaking with the backend. Default 10 s.
    #[serde(deserialize_with = "de_secs")]
    pub handshake_timeout: Duration,
    /// Maximum concurrent relaying sessions. Default 10 000.
    pub max_sessions: usize,
    /// Password of the backend VNC servers (Ganeti's VNC password file), if
    /// they require VNC authentication. Default none (security type None).
    pub backend_password: Option<String>,
    /// Wrong answers one source address may give on one forwarding; that
    /// address is then refused on it. The forwarding itself stays open for
    /// its owner (nobody else can cancel it). Default 3.
    pub max_failures_per_forwarding: u32,
    /// Pending (not yet used) forwardings per user. Default 8.
    pub pending_per_user: usize,
    /// Pending forwardings per project. Default 32.
    pub pending_per_project: usize,
    /// Connections from one source address that have not finished
    /// authenticating; more are closed at once. Default 16.
    pub unauthenticated_per_address: usize,
    /// Connections that have not finished authenticating, in total.
    /// Default 1024.
    pub unauthenticated_total: usize,
    /// Authentication failures allowed per source address within
    /// `auth_failure_window` before further connections from that address
    /// are refused. Default 10.
    pub auth_failure_limit: u32,
    /// Window of the per-address failure limit. Default 60 s.
    #[serde(deserialize_with = "de_secs")]
    pub auth_failure_window: Duration,
    /// Accept browser consoles (noVNC: RFB over WebSocket, subprotocol
    /// `binary`) on `websocket_listen`, and serve the console page there.
    /// Default false.
    pub websocket_enabled: bool,
    /// Address of the WebSocket listener. It serves the noVNC console page
    /// (`/console.html`) and the WebSockets: `ws://HOST:PORT/?token=<one-time
    /// password>` (the page's; security type None, the token already proved
    /// who it is) or `ws://HOST:PORT/<source_port>` (RFB VNC authentication
    /// with the one-time password, as a TCP viewer). Default `0.0.0.0:6080`.
    pub websocket_listen: SocketAddr,
    /// Time a connection to the WebSocket listener may take before its
    /// WebSocket upgrade: reading requests, fetching the page's files on the
    /// same connection. Slower connections are closed. Default 10 s.
    #[serde(deserialize_with = "de_secs")]
    pub websocket_handshake_timeout: Duration,
    /// Largest WebSocket message (and frame) accepted from a browser, before
    /// and after authentication; a larger one closes the connection. noVNC
    /// sends at most 10 KiB at a time. Default 64 KiB; at least 10 KiB.
    pub websocket_max_message: usize,
    /// Connections the WebSocket listener holds at once (page downloads,
    /// handshakes and console sessions); further ones are closed at once.
    /// Default 4096.
    pub websocket_max_connections: usize,
    /// Relay implementation. Default `splice`.
    pub relay: RelayMode,
    /// RLIMIT_NOFILE the proxy tries to reach at start (soft limit; the hard
    /// limit too when privileged). Each session needs 2 sockets and, while
    /// data flows, up to 4 pipe ends. Default 65 536.
    pub nofile_limit: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            ctrl_socket: Some(PathBuf::from("/run/synnefo/vncauthproxy.sock")),
            ctrl_socket_mode: 0o660,
            ctrl_socket_group: None,
            listen_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_min: 25000,
            port_max: 30000,
            accept_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_sessions: 10_000,
            backend_password: None,
            max_failures_per_forwarding: 3,
            pending_per_user: 8,
            pending_per_project: 32,
            unauthenticated_per_address: 16,
            unauthenticated_total: 1024,
            auth_failure_limit: 10,
            auth_failure_window: Duration::from_secs(60),
            websocket_enabled: false,
            websocket_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6080),
            websocket_handshake_timeout: Duration::from_secs(10),
            websocket_max_message: 64 * 1024,
            websocket_max_connections: 4096,
            relay: RelayMode::default(),
            nofile_limit: 65_536,
        }
    }
}

impl ProxyConfig {
    /// Checks the settings for contradictions.
    pub fn validate(&self) -> Result<(), ConsoleError> {
        let bad = |m: &str| Err(ConsoleError::Config(m.to_owned()));
        if self.port_min == 0 || self.port_min > self.port_max {
            return bad("port_min must be 1..=port_max");
        }
        if self.ctrl_socket_mode > 0o7777 {
            return bad("ctrl_socket_mode must be a file mode (<= 0o7777)");
        }
        if self.accept_timeout.is_zero()
            || self.handshake_timeout.is_zero()
            || self.websocket_handshake_timeout.is_zero()
        {
            return bad("timeouts must be positive");
        }
        if self.max_sessions == 0 || self.websocket_max_connections == 0 {
            return bad("max_sessions and websocket_max_connections must be positive");
        }
        if self.websocket_max_message < MIN_WEBSOCKET_MESSAGE {
            return bad("websocket_max_message must be at least 10240 (noVNC sends up to 10 KiB)");
        }
        if self.max_failures_per_forwarding == 0 || self.auth_failure_limit == 0 {
            return bad("failure limits must be positive");
        }
        if self.pending_per_user == 0
            || self.pending_per_project == 0
            || self.unauthenticated_per_address == 0
            || self.unauthenticated_total == 0
        {
            return bad("pending and unauthenticated-connection limits must be positive");
        }
        if matches!(&self.backend_password, Some(p) if p.is_empty()) {
            return bad("backend_password must not be empty (omit it instead)");
        }
        Ok(())
    }
}

/// Smallest `websocket_max_message` allowed: noVNC's send buffer.
const MIN_WEBSOCKET_MESSAGE: usize = 10 * 1024;

fn de_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ProxyConfig::default().validate().unwrap();
    }

    #[test]
    fn deserializes_seconds_and_rejects_unknown_keys() {
        let c: ProxyConfig = serde_json::from_str(
            r#"{"accept_timeout": 1.5, "port_min": 26000, "port_max": 26010,
                "relay": "copy", "ctrl_socket": "/tmp/x.sock"}"#,
        )
        .unwrap();
        assert_eq!(c.accept_timeout, Duration::from_millis(1500));
        assert_eq!(c.relay, RelayMode::Copy);
        assert_eq!(c.port_min, 26000);
        assert!(serde_json::from_str::<ProxyConfig>(r#"{"nope": 1}"#).is_err());
        assert!(serde_json::from_str::<ProxyConfig>(r#"{"accept_timeout": -1}"#).is_err());
    }

    #[test]
    fn validate_rejects_contradictions() {
        let c = ProxyConfig {
            port_min: 10,
            port_max: 9,
            ..ProxyConfig::default()
        };
        assert!(c.validate().is_err());
        let c = ProxyConfig {
            backend_password: Some(String::new()),
            ..ProxyConfig::default()
        };
        assert!(c.validate().is_err());
        for c in [
            ProxyConfig {
                websocket_max_message: 1024,
                ..ProxyConfig::default()
            },
            ProxyConfig {
                websocket_max_connections: 0,
                ..ProxyConfig::default()
            },
            ProxyConfig {
                websocket_handshake_timeout: Duration::ZERO,
                ..ProxyConfig::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
        let c: ProxyConfig = serde_json::from_str(
            r#"{"websocket_handshake_timeout": 2.5, "websocket_max_message": 20000,
                "websocket_max_connections": 7}"#,
        )
        .unwrap();
        assert_eq!(c.websocket_handshake_timeout, Duration::from_millis(2500));
        assert_eq!(
            (c.websocket_max_message, c.websocket_max_connections),
            (20000, 7)
        );
        c.validate().unwrap();
    }
}
