//! `synnefo vncauthproxy`: the WEBSERVER's console proxy.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use synnefo_api::console::{ProxyConfig, VncAuthProxy};
use synnefo_core::settings::{LimitsSettings, VncAuthProxySettings};

use crate::common::{ConfigError, Context, shutdown_token};

/// Options of `synnefo vncauthproxy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Control socket path (overrides vncauthproxy.ctrl_socket)
    #[arg(long, value_name = "PATH")]
    pub ctrl_socket: Option<std::path::PathBuf>,
}

/// The `[limits]` console caps applied to a proxy configuration.
pub fn with_limits(mut c: ProxyConfig, l: &LimitsSettings) -> ProxyConfig {
    c.pending_per_user = l.console_pending_per_user;
    c.pending_per_project = l.console_pending_per_project;
    c.unauthenticated_per_address = l.console_unauthenticated_per_address;
    c.unauthenticated_total = l.console_unauthenticated_total;
    c
}

/// Maps the operator's settings onto the proxy's configuration.
pub fn proxy_config(s: &VncAuthProxySettings) -> Result<ProxyConfig, ConfigError> {
    let listen: IpAddr = s
        .listen_address
        .parse()
        .map_err(|e| ConfigError(format!("setting vncauthproxy.listen_address: {e}")))?;
    let ws: SocketAddr = s
        .websocket_listen
        .parse()
        .map_err(|e| ConfigError(format!("setting vncauthproxy.websocket_listen: {e}")))?;
    Ok(ProxyConfig {
        ctrl_socket: Some(s.ctrl_socket.clone()),
        ctrl_socket_mode: s.socket_mode,
        listen_address: listen,
        port_min: s.port_min,
        port_max: s.port_max,
        accept_timeout: Duration::from_secs(s.accept_timeout_secs),
        max_sessions: s.max_sessions,
        backend_password: (!s.backend_password.is_empty())
            .then(|| s.backend_password.expose().to_string()),
        websocket_enabled: s.websocket,
        websocket_listen: ws,
        websocket_handshake_timeout: Duration::from_secs(s.websocket_handshake_timeout_secs),
        websocket_max_message: s.websocket_max_message_bytes,
        websocket_max_connections: s.websocket_max_connections,
        ..ProxyConfig::default()
    })
}

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let mut config = with_limits(
        proxy_config(&ctx.settings.vncauthproxy)?,
        &ctx.settings.limits,
    );
    if let Some(p) = args.ctrl_socket {
        config.ctrl_socket = Some(p);
    }
    config
        .validate()
        .map_err(|e| ConfigError(format!("vncauthproxy: {e}")))?;
    if let Some(dir) = config.ctrl_socket.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = shutdown_token();
    let proxy = VncAuthProxy::start(config, token.clone()).await?;
    tracing::info!(socket = ?proxy.socket_path(), "vncauthproxy ready");
    token.cancelled().await;
    proxy.shutdown().await;
    let m = proxy.metrics();
    tracing::info!(?m, "vncauthproxy stopped");
    Ok(ExitCode::SUCCESS)
}
