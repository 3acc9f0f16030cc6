//! Serving a router on a TCP listener with every socket read bounded.
//!
//! `axum::serve` runs hyper without a timer, so hyper's header-read timeout
//! never fires, and it has no connection cap or shutdown deadline: a client
//! that sends half a header keeps its connection (and, at shutdown, the
//! process) forever. [`serve`] drives hyper's HTTP/1 connections itself:
//!
//! * **header timeout**: a request's headers must arrive within
//!   [`ServeConfig::header_timeout`] of the connection becoming ready for
//!   them, which also closes idle keep-alive connections after that long;
//! * **body timeout**: each request body must arrive within
//!   [`ServeConfig::body_timeout`] (tower-http's `RequestBodyTimeout`);
//!   handlers then answer 400;
//! * **connection cap**: at most [`ServeConfig::max_connections`] open
//!   connections; further clients wait in the kernel's listen backlog;
//! * **shutdown deadline**: on shutdown the listener closes, idle
//!   connections close at once, requests in flight get
//!   [`ServeConfig::shutdown_grace`] to finish, then every connection left
//!   (slow or stalled clients) is dropped.
//!
//! Each request carries the client's address as
//! [`ConnectInfo`]`<SocketAddr>` (the login
//! rate limits read it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::timeout::RequestBodyTimeout;

/// The bounds of one HTTP listener (the `[limits]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Time to send a request's headers; also the keep-alive idle limit.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Time requests in flight get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServeConfig {
    /// The listener bounds of the `[limits]` settings.
    pub fn from_settings(l: &synnefo_core::settings::LimitsSettings) -> Self {
        Self {
            header_timeout: Duration::from_secs(l.http_header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(l.http_body_timeout_secs.max(1)),
            max_connections: l.http_max_connections.max(1),
            shutdown_grace: Duration::from_secs(l.shutdown_grace_secs),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops
/// within [`ServeConfig::shutdown_grace`] (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = app.clone().map_request(move |mut req: Request<_>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let svc = TowerToHyperService::new(RequestBodyTimeout::new(svc, config.body_timeout));
        let closing = closing.clone();
        let header_timeout = config.header_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = closing.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    let open = connections.len();
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open,
            left = connections.len(),
            grace_secs = config.shutdown_grace.as_secs_f64(),
            "closing connections still open after the shutdown grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}
