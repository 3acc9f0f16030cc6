//! The proxy: control server, forwardings, sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::config::{ProxyConfig, RelayMode};
use super::control::{self, MAX_REQUEST_LEN};
use super::limits::{
    FailureLimiter, OwnerCounts, OwnerSlot, PortLease, PortPool, Unauthenticated,
    raise_nofile_limit,
};
use super::metrics::{Metrics, MetricsSnapshot, dec, inc};
use super::relay::{Count, relay_copy};
use super::rfb::{self, ServerHandshake};
use super::{ConsoleError, Forwarding, websocket};

/// Entry point: `VncAuthProxy::start(config, token)`.
#[derive(Debug)]
pub struct VncAuthProxy;

impl VncAuthProxy {
    /// Starts the proxy: raises RLIMIT_NOFILE, binds the control socket (if
    /// configured) and the WebSocket listener (if enabled). Runs until
    /// `token` is cancelled or [`VncAuthProxyHandle::shutdown`] is called.
    pub async fn start(
        config: ProxyConfig,
        token: CancellationToken,
    ) -> Result<VncAuthProxyHandle, ConsoleError> {
        config.validate()?;
        match raise_nofile_limit(config.nofile_limit) {
            Ok((before, after)) if after > before => {
                info!(before, after, "vncauthproxy: raised RLIMIT_NOFILE")
            }
            Ok((_, after)) => info!(limit = after, "vncauthproxy: RLIMIT_NOFILE unchanged"),
            Err(e) => warn!(error = %e, "vncauthproxy: could not raise RLIMIT_NOFILE"),
        }
        let token = token.child_token();
        let shared = Arc::new(Shared {
            pool: PortPool::new(config.listen_address, config.port_min, config.port_max),
            limiter: FailureLimiter::new(config.auth_failure_limit, config.auth_failure_window),
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            owners: OwnerCounts::new(config.pending_per_user, config.pending_per_project),
            unauthenticated: Unauthenticated::new(
                config.unauthenticated_per_address,
                config.unauthenticated_total,
            ),
            backend_password: config
                .backend_password
                .as_ref()
                .map(|p| p.as_bytes().to_vec()),
            pending: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            tracker: TaskTracker::new(),
            token: token.clone(),
            config,
        });

        let socket_path = match shared.config.ctrl_socket.clone() {
            Some(path) => {
                let listener = bind_control_socket(&shared.config, &path)?;
                shared
                    .tracker
                    .spawn(control_server(shared.clone(), listener, path.clone()));
                info!(path = %path.display(), "vncauthproxy: control socket ready");
                Some(path)
            }
            None => None,
        };
        let websocket_addr = if shared.config.websocket_enabled {
            let listener = TcpListener::bind(shared.config.websocket_listen).await?;
            let addr = listener.local_addr()?;
            shared
                .tracker
                .spawn(websocket::serve(shared.clone(), listener));
            info!(%addr, "vncauthproxy: WebSocket listener ready");
            Some(addr)
        } else {
            None
        };
        {
            let (token, tracker) = (token.clone(), shared.tracker.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                tracker.close();
            });
        }
        info!(
            listen = %shared.config.listen_address,
            pool = %format!("{}..={}", shared.config.port_min, shared.config.port_max),
            relay = ?shared.config.relay,
            "vncauthproxy started"
        );
        Ok(VncAuthProxyHandle {
            shared,
            socket_path,
            websocket_addr,
        })
    }
}

/// A running proxy. Cloning gives another handle to the same proxy.
#[derive(Clone)]
pub struct VncAuthProxyHandle {
    shared: Arc<Shared>,
    socket_path: Option<PathBuf>,
    websocket_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for VncAuthProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VncAuthProxyHandle")
            .field("socket_path", &self.socket_path)
            .field("websocket_addr", &self.websocket_addr)
            .finish_non_exhaustive()
    }
}

impl VncAuthProxyHandle {
    /// The control socket's path, if one was configured.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// The bound WebSocket address, if WebSocket mode is enabled.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Sets up a forwarding in-process (no control socket involved) and
    /// returns the port it listens on.
    pub async fn request_forwarding(&self, forwarding: Forwarding) -> Result<u16, ConsoleError> {
        self.shared
            .request_forwarding(forwarding, "in-process".into())
    }

    /// Current counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The token that stops this proxy (a child of the one given to start).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.token.clone()
    }

    /// Stops accepting, closes pending forwardings and running sessions
    /// (each logs its session line), removes the control socket, and waits
    /// for all of it.
    pub async fn shutdown(&self) {
        self.shared.token.cancel();
        self.wait().await;
    }

    /// Waits until the proxy has stopped (after its token was cancelled).
    pub async fn wait(&self) {
        self.shared.token.cancelled().await;
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        info!("vncauthproxy stopped");
    }
}

pub(crate) struct Shared {
    pub config: ProxyConfig,
    pool: PortPool,
    pending: Mutex<HashMap<u16, Arc<Pending>>>,
    pub metrics: Metrics,
    limiter: FailureLimiter,
    sessions: Arc<Semaphore>,
    owners: Arc<OwnerCounts>,
    unauthenticated: Arc<Unauthenticated>,
    backend_password: Option<Vec<u8>>,
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

/// A forwarding waiting for its viewer.
pub(crate) struct Pending {
    fwd: Forwarding,
    port: u16,
    requester: String,
    claimed: AtomicBool,
    /// Wrong answers by source address (bounded: addresses past
    /// [`MAX_FAILING_ADDRESSES`] are left to the global limiter).
    failures: Mutex<HashMap<IpAddr, u32>>,
    done: CancellationToken,
    deadline: tokio::time::Instant,
}

/// Most failing addresses remembered per forwarding.
const MAX_FAILING_ADDRESSES: usize = 1024;

impl Pending {
    /// Wrong answers `ip` gave on this forwarding.
    fn failures_of(&self, ip: IpAddr) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    /// Counts a wrong answer of `ip`; returns its count.
    fn record_failure(&self, ip: IpAddr) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= MAX_FAILING_ADDRESSES && !f.contains_key(&ip) {
            return 1;
        }
        let n = f.entry(ip).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// Still waiting for its viewer: not used, cancelled or expired.
    fn is_open(&self) -> bool {
        !self.claimed.load(Relaxed)
            && !self.done.is_cancelled()
            && tokio::time::Instant::now() < self.deadline
    }

    /// Consumes the one-time password: true for exactly one caller, and
    /// only before expiry.
    fn try_claim(&self) -> bool {
        !self.done.is_cancelled()
            && tokio::time::Instant::now() < self.deadline
            && self
                .claimed
                .compare_exchange(false, true, Relaxed, Relaxed)
                .is_ok()
    }
}

impl Shared {
    fn request_forwarding(
        self: &Arc<Self>,
        fwd: Forwarding,
        requester: String,
    ) -> Result<u16, ConsoleError> {
        if self.token.is_cancelled() {
            return Err(ConsoleError::ShuttingDown);
        }
        control::validate(&fwd)?;
        let owner = self
            .owners
            .take(fwd.user.as_deref(), fwd.project.as_deref())
            .inspect_err(|_| inc(&self.metrics.rejected_forwardings))?;
        let (lease, listener) = self
            .pool
            .acquire(fwd.source_port)
            .inspect_err(|_| inc(&self.metrics.rejected_forwardings))?;
        let port = lease.port();
        let pending = Arc::new(Pending {
            fwd,
            port,
            requester,
            claimed: AtomicBool::new(false),
            failures: Mutex::new(HashMap::new()),
            done: self.token.child_token(),
            deadline: tokio::time::Instant::now() + self.config.accept_timeout,
        });
        self.lock_pending().insert(port, pending.clone());
        inc(&self.metrics.total_forwardings);
        inc(&self.metrics.pending_forwardings);
        debug!(
            port,
            destination = %format!("{}:{}", pending.fwd.destination_address, pending.fwd.destination_port),
            label = pending.fwd.label.as_deref().unwrap_or("-"),
            requester = %pending.requester,
            "forwarding set up"
        );
        self.tracker.spawn(forwarding_task(
            self.clone(),
            pending,
            (lease, owner),
            listener,
        ));
        Ok(port)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Arc<Pending>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pending forwarding on `port` (WebSocket mode looks them up).
    pub fn pending(&self, port: u16) -> Option<Arc<Pending>> {
        self.lock_pending().get(&port).cloned()
    }

    /// The forwarding whose one-time password is `token` and that still
    /// waits for its viewer (browser consoles). Passwords shorter than
    /// [`MIN_TOKEN_LEN`] never match: they only work with RFB VNC
    /// authentication, which is rate limited per forwarding too.
    pub fn pending_by_token(&self, token: &str) -> Option<Arc<Pending>> {
        if token.len() < MIN_TOKEN_LEN {
            return None;
        }
        self.lock_pending()
            .values()
            .find(|p| p.is_open() && constant_time_eq(p.fwd.password.as_bytes(), token.as_bytes()))
            .cloned()
    }

    /// Is `peer` refused for too many recent authentication failures?
    pub fn is_blocked(&self, peer: SocketAddr) -> bool {
        self.limiter.is_blocked(peer.ip(), Instant::now())
    }

    /// Counts a failed authentication by `peer` (a bad or used token).
    pub fn record_auth_failure(&self, peer: SocketAddr) {
        inc(&self.metrics.auth_failures);
        self.limiter.record_failure(peer.ip(), Instant::now());
    }

    /// Serves one viewer connection against `pending`.
    pub async fn serve_viewer(
        self: Arc<Self>,
        pending: Arc<Pending>,
        viewer: Viewer,
        peer: SocketAddr,
        auth: ViewerAuth,
    ) {
        let transport = viewer.transport();
        tokio::select! {
            () = self.token.cancelled() => {}
            () = self.serve_viewer_inner(&pending, viewer, peer, auth) => {}
        }
        debug!(port = pending.port, %peer, transport, "viewer connection closed");
    }

    async fn serve_viewer_inner(
        &self,
        pending: &Pending,
        mut viewer: Viewer,
        peer: SocketAddr,
        auth: ViewerAuth,
    ) {
        let hs_timeout = self.config.handshake_timeout;
        let port = pending.port;
        let transport = viewer.transport();
        // Until it has authenticated, a connection holds one of a bounded
        // number of slots (per address and in total); past them it is
        // closed at once, so one address cannot hold the descriptors.
        let Some(unauthenticated) = self.unauthenticated.take(peer.ip()) else {
            inc(&self.metrics.rejected_connections);
            debug!(port, %peer, transport, "refused: too many unauthenticated connections");
            return;
        };
        if self.limiter.is_blocked(peer.ip(), Instant::now())
            || pending.failures_of(peer.ip()) >= self.config.max_failures_per_forwarding
        {
            inc(&self.metrics.rejected_connections);
            warn!(port, %peer, transport, "refused: too many authentication failures from this address");
            let mut hs = ServerHandshake::rejecting("too many authentication failures");
            let _ = tokio::time::timeout(hs_timeout, rfb::drive(&mut hs, &mut viewer)).await;
            return;
        }

        // 1. The viewer authenticates with the one-time password (or
        // already did, with the token in its WebSocket URL).
        let mut hs = match auth {
            ViewerAuth::Password => ServerHandshake::new(rand::random()),
            ViewerAuth::Token => ServerHandshake::without_authentication(),
        };
        let viewer_rest =
            match tokio::time::timeout(hs_timeout, rfb::drive(&mut hs, &mut viewer)).await {
                Ok(Ok(rest)) => rest,
                Ok(Err(e)) => {
                    debug!(port, %peer, transport, error = %e, "viewer handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(port, %peer, transport, "viewer handshake timed out");
                    return;
                }
            };
        let Some(version) = hs.version() else {
            return;
        };
        let security = hs.security_type();
        let reply = |r: Result<(), &str>| rfb::encode_security_result_for(version, security, r);
        let password_ok = match (auth, hs.response()) {
            (ViewerAuth::Token, _) => true,
            (ViewerAuth::Password, Some(response)) => {
                rfb::verify_vnc_auth(pending.fwd.password.as_bytes(), hs.challenge(), &response)
            }
            (ViewerAuth::Password, None) => return,
        };
        if !password_ok {
            inc(&self.metrics.auth_failures);
            self.limiter.record_failure(peer.ip(), Instant::now());
            // Counted against the address, not the forwarding: a third
            // party's wrong answers never cancel the owner's console.
            let failures = pending.record_failure(peer.ip());
            warn!(port, %peer, transport, failures, "console authentication failed: wrong password");
            send_best_effort(&mut viewer, hs_timeout, reply(Err("authentication failed"))).await;
            return;
        }

        // 2. Limits and the single use of the password.
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            inc(&self.metrics.rejected_connections);
            warn!(port, %peer, transport, limit = self.config.max_sessions, "refused: too many sessions");
            send_best_effort(
                &mut viewer,
                hs_timeout,
                reply(Err("too many console sessions, try again later")),
            )
            .await;
            return;
        };
        if !pending.try_claim() {
            inc(&self.metrics.auth_failures);
            warn!(port, %peer, transport, "console authentication failed: password already used or expired");
            send_best_effort(
                &mut viewer,
                hs_timeout,
                reply(Err("password already used or expired")),
            )
            .await;
            return;
        }
        // Frees the port for new forwardings; this session keeps its socket.
        pending.done.cancel();
        drop(unauthenticated);

        // 3. The backend.
        let destination = format!(
            "{}:{}",
            pending.fwd.destination_address, pending.fwd.destination_port
        );
        let backend = tokio::time::timeout(hs_timeout, async {
            let mut s = TcpStream::connect((
                pending.fwd.destination_address.as_str(),
                pending.fwd.destination_port,
            ))
            .await?;
            s.set_nodelay(true)?;
            let (_, rest) = rfb::client_handshake(&mut s, self.backend_password.as_deref()).await?;
            Ok::<_, ConsoleError>((s, rest))
        })
        .await
        .unwrap_or(Err(ConsoleError::Timeout("backend connect and handshake")));
        let (mut backend, backend_rest) = match backend {
            Ok(b) => b,
            Err(e) => {
                inc(&self.metrics.backend_failures);
                warn!(port, %peer, transport, destination, error = %e, "console backend unavailable");
                send_best_effort(
                    &mut viewer,
                    hs_timeout,
                    reply(Err("console backend unavailable")),
                )
                .await;
                return;
            }
        };
        if tokio::time::timeout(hs_timeout, async {
            viewer.write_all(&reply(Ok(()))).await?;
            viewer.write_all(&backend_rest).await?;
            viewer.flush().await?;
            backend.write_all(&viewer_rest).await
        })
        .await
        .map_or(true, |r| r.is_err())
        {
            return;
        }

        // 4. Relay.
        inc(&self.metrics.total_sessions);
        inc(&self.metrics.active_sessions);
        let start = Instant::now();
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let up_count = Count {
            session: &up,
            global: &self.metrics.bytes_client_to_server,
        };
        let down_count = Count {
            session: &down,
            global: &self.metrics.bytes_server_to_client,
        };
        let relay = async {
            match (&mut viewer, self.config.relay) {
                #[cfg(target_os = "linux")]
                (Viewer::Tcp(v), RelayMode::Splice) => {
                    super::relay::relay_splice(v, &backend, up_count, down_count).await
                }
                (v, _) => relay_copy(v, &mut backend, up_count, down_count).await,
            }
        };
        let end = tokio::select! {
            r = relay => match r {
                Ok(()) => "closed".to_owned(),
                Err(e) => format!("error: {e}"),
            },
            () = self.token.cancelled() => "proxy shutdown".to_owned(),
        };
        dec(&self.metrics.active_sessions);
        drop(permit);
        info!(
            port,
            viewer = %peer,
            transport,
            rfb = %version,
            label = pending.fwd.label.as_deref().unwrap_or("-"),
            requester = %pending.requester,
            destination,
            duration_ms = start.elapsed().as_millis() as u64,
            bytes_from_viewer = up.load(Relaxed),
            bytes_to_viewer = down.load(Relaxed),
            end,
            "console session ended"
        );
    }
}

/// Writes `msg` unless the viewer is gone or stalls past `limit`.
async fn send_best_effort(viewer: &mut Viewer, limit: Duration, msg: Vec<u8>) {
    let _ = tokio::time::timeout(limit, viewer.write_all(&msg)).await;
}

/// Shortest one-time password that may serve as a browser console's token.
pub(crate) const MIN_TOKEN_LEN: usize = 12;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a viewer proves it may use a forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewerAuth {
    /// RFB VNC authentication with the one-time password.
    Password,
    /// The one-time token in the WebSocket URL was checked before the
    /// upgrade; the RFB handshake offers security type None.
    Token,
}

/// A viewer's transport.
pub(crate) enum Viewer {
    Tcp(TcpStream),
    WebSocket(tokio::io::DuplexStream),
}

impl Viewer {
    fn transport(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::WebSocket(_) => "websocket",
        }
    }
}

impl AsyncRead for Viewer {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::WebSocket(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Viewer {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::WebSocket(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::WebSocket(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::WebSocket(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

async fn forwarding_task(
    shared: Arc<Shared>,
    pending: Arc<Pending>,
    held: (PortLease, OwnerSlot),
    listener: TcpListener,
) {
    let expiry = tokio::time::sleep_until(pending.deadline);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            () = pending.done.cancelled() => break,
            () = &mut expiry => {
                if !pending.claimed.load(Relaxed) {
                    inc(&shared.metrics.expired_forwardings);
                    info!(
                        port = pending.port,
                        label = pending.fwd.label.as_deref().unwrap_or("-"),
                        "forwarding expired unused"
                    );
                }
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.tracker.spawn(shared.clone().serve_viewer(pending.clone(), Viewer::Tcp(stream), peer, ViewerAuth::Password));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(port = pending.port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    pending.done.cancel();
    {
        let mut map = shared.lock_pending();
        if map
            .get(&pending.port)
            .is_some_and(|p| Arc::ptr_eq(p, &pending))
        {
            map.remove(&pending.port);
        }
    }
    dec(&shared.metrics.pending_forwardings);
    drop(listener);
    drop(held);
}

fn bind_control_socket(config: &ProxyConfig, path: &Path) -> Result<UnixListener, ConsoleError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ConsoleError::Config(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ConsoleError::Config(format!(
                "another vncauthproxy is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(config.ctrl_socket_mode),
    )?;
    if let Some(group) = &config.ctrl_socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .map_err(std::io::Error::from)?
            .ok_or_else(|| ConsoleError::Config(format!("unknown group {group:?}")))?
            .gid;
        std::os::unix::fs::chown(path, None, Some(gid.as_raw()))?;
    }
    Ok(listener)
}

async fn control_server(shared: Arc<Shared>, listener: UnixListener, path: PathBuf) {
    loop {
        tokio::select! {
            () = shared.token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.tracker.spawn(control_connection(shared.clone(), stream));
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

/// Idle time allowed on a control connection between requests.
const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

async fn control_connection(shared: Arc<Shared>, stream: UnixStream) {
    let requester = match stream.peer_cred() {
        Ok(c) => format!(
            "uid={} pid={}",
            c.uid(),
            c.pid().map_or("?".into(), |p| p.to_string())
        ),
        Err(_) => "unknown".into(),
    };
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(MAX_REQUEST_LEN as u64 + 1);
        let read = tokio::select! {
            () = shared.token.cancelled() => return,
            r = tokio::time::timeout(CONTROL_IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)) => r,
        };
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        let too_long = line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_LEN;
        let form = control::request_form(&line);
        let result = if too_long {
            Err(ConsoleError::BadRequest("request too long".into()))
        } else {
            control::parse_request(&line)
                .and_then(|(fwd, _)| shared.request_forwarding(fwd, requester.clone()))
        };
        if let Err(e) = &result {
            warn!(requester, error = %e, "control request refused");
        }
        if wr
            .write_all(&control::encode_response(form, &result))
            .await
            .is_err()
            || too_long
        {
            return;
        }
    }
}
