//! WebSocket mode: browser consoles (noVNC) speak RFB inside binary
//! WebSocket messages (subprotocol `binary`).
//!
//! The browser opens `ws://HOST:PORT/<source_port>` (or `/?port=<source_port>`)
//! naming the forwarding the API handed out, then authenticates to the proxy
//! with the same one-time password over RFB VNC authentication, exactly as a
//! TCP viewer would; the forwarding is consumed by whichever viewer logs in
//! first. Each WebSocket is bridged to an in-memory byte stream so the same
//! handshake and session code serves both transports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::proxy::{Shared, Viewer};

/// Buffer between the WebSocket bridge and the RFB session.
const BRIDGE_BUFFER: usize = 64 * 1024;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let token = shared.token.clone();
    let app = Router::new()
        .route("/", get(by_query))
        .route("/{port}", get(by_path))
        .with_state(shared);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { token.cancelled().await })
    .await;
    if let Err(e) = result {
        warn!(error = %e, "WebSocket listener failed");
    }
}

async fn by_path(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(port): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(shared, peer, port.parse().ok(), ws)
}

async fn by_query(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let port = q
        .get("port")
        .or_else(|| q.get("token"))
        .and_then(|p| p.parse().ok());
    upgrade(shared, peer, port, ws)
}

fn upgrade(
    shared: Arc<Shared>,
    peer: SocketAddr,
    port: Option<u16>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (StatusCode::BAD_REQUEST, "WebSocket upgrade required\n").into_response();
    };
    let Some(pending) = port.and_then(|p| shared.pending(p)) else {
        return (StatusCode::NOT_FOUND, "no such console forwarding\n").into_response();
    };
    ws.protocols(["binary"])
        .on_upgrade(move |socket| async move {
            let (session_end, bridge_end) = tokio::io::duplex(BRIDGE_BUFFER);
            let tracker = shared.tracker.clone();
            tracker.spawn(bridge(socket, bridge_end));
            shared
                .serve_viewer(pending, Viewer::WebSocket(session_end), peer)
                .await;
        })
}

/// Copies binary WebSocket messages to `io` and bytes from `io` back as
/// binary messages, until either side closes.
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
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
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
