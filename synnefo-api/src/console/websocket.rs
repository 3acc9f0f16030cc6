//! WebSocket mode: browser consoles (noVNC) speak RFB inside binary
//! WebSocket messages (subprotocol `binary`), and the listener serves the
//! console page itself, so page and WebSocket share one origin.
//!
//! Two ways in:
//! - **Token** (the console page, Nova's URL form): `GET /?token=T` (also
//!   `/websockify?token=T`, or `/websockify` with a `token=T` cookie, as old
//!   noVNC and tempest send it), where `T` is the forwarding's one-time
//!   password. A valid token is the authentication: the RFB handshake offers
//!   security type None. A bad, used or expired token gets the upgrade and
//!   then a Close frame with no RFB byte before it, and counts as an
//!   authentication failure for the address.
//! - **Port** (`GET /<source_port>` or `/?port=<source_port>`): the viewer
//!   authenticates to the proxy with RFB VNC authentication and the one-time
//!   password, exactly as a TCP viewer would.
//!
//! Either way the forwarding is consumed by whichever viewer logs in first.
//! Each WebSocket is bridged to an in-memory byte stream so the same
//! handshake and session code serves both transports.
//!
//! Bounds (each a [`ProxyConfig`](super::ProxyConfig) field): at most
//! `websocket_max_connections` connections at once (more are closed at
//! accept); `websocket_handshake_timeout` from accept to the upgrade; no
//! message or frame above `websocket_max_message`, before or after
//! authentication (tungstenite's own default would buffer 64 MiB).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::assets;
use super::metrics::inc;
use super::proxy::{Pending, Shared, Viewer, ViewerAuth};

/// Buffer between the WebSocket bridge and the RFB session.
const BRIDGE_BUFFER: usize = 64 * 1024;
/// tungstenite's read buffer per connection (its default is 128 KiB).
const READ_BUFFER: usize = 16 * 1024;

/// One connection's place under `websocket_max_connections`; held by the
/// HTTP connection and, after an upgrade, by the WebSocket session.
#[derive(Clone)]
struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(shared.config.websocket_max_connections));
    let app = router(shared.clone());
    loop {
        let (stream, peer) = tokio::select! {
            () = shared.token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "WebSocket listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            inc(&shared.metrics.rejected_connections);
            debug!(%peer, limit = shared.config.websocket_max_connections,
                "WebSocket listener: connection limit reached, closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = Slot {
            _permit: Arc::new(permit),
        };
        let app = app
            .clone()
            .layer(Extension(ConnectInfo(peer)))
            .layer(Extension(slot.clone()));
        shared
            .tracker
            .spawn(connection(shared.clone(), stream, app, slot));
    }
}

/// Serves one HTTP/1.1 connection until it upgrades, ends, or runs out of
/// `websocket_handshake_timeout`.
async fn connection(shared: Arc<Shared>, stream: TcpStream, app: Router, slot: Slot) {
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "WebSocket listener: connection error");
            }
        }
        () = tokio::time::sleep(shared.config.websocket_handshake_timeout) => {
            debug!("WebSocket listener: no upgrade within the handshake timeout, closing");
        }
        () = shared.token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn).await;
        }
    }
    drop(slot);
}

fn router(shared: Arc<Shared>) -> Router {
    let mut app = Router::new()
        .route("/", get(by_query))
        .route("/websockify", get(by_query))
        .route("/{port}", get(by_path))
        .route("/novnc/{*path}", get(asset));
    for path in assets::root_paths() {
        app = app.route(path, get(asset));
    }
    app.with_state(shared)
}

async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    assets::respond(uri.path(), &headers)
}

/// `/<source_port>`: RFB VNC authentication with the one-time password.
async fn by_path(
    State(shared): State<Arc<Shared>>,
    Extension(ConnectInfo(peer)): Extension<ConnectInfo<SocketAddr>>,
    Extension(slot): Extension<Slot>,
    Path(port): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match port.parse() {
        Ok(port) => by_port(shared, peer, slot, Some(port), ws),
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `/?token=T`, `/websockify?token=T`, a `token` cookie, or `/?port=P`.
async fn by_query(
    State(shared): State<Arc<Shared>>,
    Extension(ConnectInfo(peer)): Extension<ConnectInfo<SocketAddr>>,
    Extension(slot): Extension<Slot>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query: Vec<(String, String)> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let Some(port) = param("port") {
        return by_port(shared, peer, slot, port.parse().ok(), ws);
    }
    let token = param("token").or_else(|| cookie(&headers, "token"));
    by_token(shared, peer, slot, token, ws)
}

/// The value of cookie `name`, if sent.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn configure(ws: WebSocketUpgrade, shared: &Shared) -> WebSocketUpgrade {
    let limit = shared.config.websocket_max_message;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER.min(limit))
        .protocols(["binary"])
}

fn by_port(
    shared: Arc<Shared>,
    peer: SocketAddr,
    slot: Slot,
    port: Option<u16>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (StatusCode::BAD_REQUEST, "WebSocket upgrade required\n").into_response();
    };
    let Some(pending) = port.and_then(|p| shared.pending(p)) else {
        return (StatusCode::NOT_FOUND, "no such console forwarding\n").into_response();
    };
    configure(ws, &shared).on_upgrade(move |socket| {
        session(shared, socket, pending, peer, ViewerAuth::Password, slot)
    })
}

fn by_token(
    shared: Arc<Shared>,
    peer: SocketAddr,
    slot: Slot,
    token: Option<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (StatusCode::BAD_REQUEST, "WebSocket upgrade required\n").into_response();
    };
    let pending = if shared.is_blocked(peer) {
        inc(&shared.metrics.rejected_connections);
        warn!(%peer, "refused: too many authentication failures from this address");
        None
    } else {
        let found = token.as_deref().and_then(|t| shared.pending_by_token(t));
        if found.is_none() {
            shared.record_auth_failure(peer);
            warn!(%peer, token_given = token.is_some(), "console authentication failed: bad, used or expired token");
        }
        found
    };
    configure(ws, &shared).on_upgrade(move |mut socket| async move {
        match pending {
            Some(pending) => {
                session(shared, socket, pending, peer, ViewerAuth::Token, slot).await;
            }
            None => {
                // Close without a single RFB byte (and without a close
                // payload: a bare Close frame).
                let _ = tokio::time::timeout(
                    shared.config.handshake_timeout,
                    socket.send(Message::Close(None)),
                )
                .await;
                drop(slot);
            }
        }
    })
}

async fn session(
    shared: Arc<Shared>,
    socket: WebSocket,
    pending: Arc<Pending>,
    peer: SocketAddr,
    auth: ViewerAuth,
    slot: Slot,
) {
    let (session_end, bridge_end) = tokio::io::duplex(BRIDGE_BUFFER);
    shared.tracker.spawn(async move {
        bridge(socket, bridge_end).await;
        drop(slot);
    });
    shared
        .serve_viewer(pending, Viewer::WebSocket(session_end), peer, auth)
        .await;
}

/// Copies binary WebSocket messages to `io` and bytes from `io` back as
/// binary messages, until either side closes (or a message breaks the
/// size limit, which tungstenite reports as an error).
async fn bridge(mut ws: WebSocket, io: DuplexStream) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if wr.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    debug!("WebSocket viewer sent text; only the binary subprotocol is supported");
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "WebSocket viewer: protocol error or message too large");
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
            },
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let _ = ws.send(Message::Close(None)).await;
                    break;
                }
                Ok(n) => {
                    if ws.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; token=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "token").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(header::COOKIE, "path=%3Ftoken%3Dxyz".parse().unwrap());
        assert_eq!(cookie(&h, "token"), None);
    }
}
