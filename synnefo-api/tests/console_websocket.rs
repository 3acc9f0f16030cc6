//! The vncauthproxy's WebSocket listener, in process: the browser console's
//! token mode spoken byte for byte as tempest's `test_novnc` speaks it, bad
//! and reused tokens, the page and its files, and the listener's bounds
//! (connection cap, handshake timeout, message size before authentication).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use synnefo_api::console::{Forwarding, ProxyConfig, VncAuthProxy, VncAuthProxyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const NAME: &[u8] = b"snf-test";

/// A VNC server with security None (3.8) that counts its connections:
/// handshake, ServerInit after ClientInit, then echo.
async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                s.write_all(b"RFB 003.008\n").await?;
                let mut v = [0u8; 12];
                s.read_exact(&mut v).await?;
                s.write_all(&[1, 1]).await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                s.write_all(&0u32.to_be_bytes()).await?;
                s.read_exact(&mut b).await?;
                let mut init = vec![
                    1, 64, 0, 200, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0,
                ];
                init.extend_from_slice(&[0, 0, 0]);
                init.extend_from_slice(&(NAME.len() as u32).to_be_bytes());
                init.extend_from_slice(NAME);
                s.write_all(&init).await?;
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (addr, count)
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ctrl_socket: None,
        listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port_min: 33000,
        port_max: 33999,
        accept_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(5),
        websocket_enabled: true,
        websocket_listen: "127.0.0.1:0".parse().unwrap(),
        ..ProxyConfig::default()
    }
}

async fn start(config: ProxyConfig) -> (VncAuthProxyHandle, SocketAddr) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let proxy = VncAuthProxy::start(config, CancellationToken::new())
        .await
        .unwrap();
    let ws = proxy.websocket_addr().unwrap();
    (proxy, ws)
}

const TOKEN: &str = "Tk3nAbcdEfgh7Xyz";

async fn forward(proxy: &VncAuthProxyHandle, backend: SocketAddr, password: &str) -> u16 {
    proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), password))
        .await
        .unwrap()
}

/// Opens a WebSocket the way tempest's `create_websocket` does: a
/// hand-written upgrade request, the URL's query as a Cookie, subprotocol
/// `binary`. Returns the stream and the response head.
async fn tempest_upgrade(addr: SocketAddr, path: &str, cookie: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Cookie: {cookie}\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = s.read_u8().await.expect("response head");
        head.push(b);
    }
    (s, String::from_utf8(head).unwrap())
}

/// One server frame: (opcode, payload). Server frames are unmasked.
async fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
        .await
        .expect("frame in time")
        .ok()?;
    let len = match h[1] & 0x7f {
        126 => usize::from(s.read_u16().await.ok()?),
        127 => s.read_u64().await.ok()? as usize,
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((h[0] & 0x0f, payload))
}

/// A masked binary frame, as tempest's `send_frame` builds it.
fn client_frame(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 126);
    let mask = [7u8, 2, 1, 9];
    let mut f = vec![130, data.len() as u8 | 128];
    f.extend_from_slice(&mask);
    f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// tempest's `validate_websocket_upgrade` + `validate_rfb_negotiation`,
/// with its assumption that each RFB message comes in a frame of its own,
/// shorter than 126 bytes.
async fn tempest_negotiation(mut s: TcpStream, head: &str) -> TcpStream {
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols"),
        "{head}"
    );
    assert!(head.to_lowercase().contains("upgrade: websocket"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("sec-websocket-protocol: binary"),
        "{head}"
    );
    let (op, version) = read_frame(&mut s).await.expect("version frame");
    assert_eq!((op, version.as_slice()), (2, &b"RFB 003.008\n"[..]));
    s.write_all(&client_frame(&version)).await.unwrap();
    let (_, types) = read_frame(&mut s).await.expect("security types frame");
    assert!(types.len() >= 2);
    assert!(
        types[1..=usize::from(types[0])].contains(&1),
        "None offered: {types:?}"
    );
    s.write_all(&client_frame(&[1])).await.unwrap();
    let (_, result) = read_frame(&mut s).await.expect("security result frame");
    assert_eq!(result, [0, 0, 0, 0]);
    s.write_all(&client_frame(&[1])).await.unwrap();
    let (_, init) = read_frame(&mut s).await.expect("ServerInit frame");
    assert!(init.len() > 24 && init.len() < 126, "{}", init.len());
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    assert_eq!(init.len(), name_len + 24);
    assert_eq!(&init[24..], NAME);
    s
}

/// The next thing the server sends is a bare Close frame, then EOF: no RFB
/// byte (tempest's bad-token check reads "no data").
async fn closed_without_rfb(mut s: TcpStream, head: &str) {
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let frame = read_frame(&mut s).await;
    assert_eq!(frame, Some((8, vec![])), "expected a bare Close frame");
    assert_eq!(read_frame(&mut s).await, None, "expected EOF after Close");
}

#[tokio::test]
async fn token_in_the_query_speaks_what_tempest_checks() {
    let (proxy, ws) = start(config()).await;
    let (backend, _) = backend().await;
    forward(&proxy, backend, TOKEN).await;
    // Nova's URL: console.html?path=%3Ftoken%3DT -> tempest GETs /?token=T.
    let (s, head) = tempest_upgrade(ws, &format!("?token={TOKEN}"), "path=%3Ftoken%3Dx").await;
    let mut s = tempest_negotiation(s, &head).await;
    // The session relays: the backend echoes.
    s.write_all(&client_frame(b"ping")).await.unwrap();
    let (_, echo) = read_frame(&mut s).await.unwrap();
    assert_eq!(echo, b"ping");
    assert_eq!(proxy.metrics().total_sessions, 1);

    // Reused: upgraded, then closed without RFB data.
    let (s, head) = tempest_upgrade(ws, &format!("?token={TOKEN}"), "").await;
    closed_without_rfb(s, &head).await;
    // tempest's bad token ("token=bad..."), and none at all.
    let (s, head) = tempest_upgrade(ws, &format!("?token=bad{TOKEN}"), "").await;
    closed_without_rfb(s, &head).await;
    let (s, head) = tempest_upgrade(ws, "websockify", "").await;
    closed_without_rfb(s, &head).await;
    assert_eq!(proxy.metrics().auth_failures, 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn token_in_a_cookie_on_websockify_as_old_novnc_sends_it() {
    let (proxy, ws) = start(config()).await;
    let (backend, _) = backend().await;
    forward(&proxy, backend, TOKEN).await;
    let (s, head) = tempest_upgrade(ws, "websockify", &format!("token={TOKEN}")).await;
    tempest_negotiation(s, &head).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn expired_and_short_tokens_are_refused_and_failures_are_rate_limited() {
    let (proxy, ws) = start(ProxyConfig {
        accept_timeout: Duration::from_millis(300),
        auth_failure_limit: 4,
        ..config()
    })
    .await;
    let (backend, count) = backend().await;
    // A password too short to serve as a token still works over RFB auth,
    // never as a token.
    forward(&proxy, backend, "short123").await;
    let (s, head) = tempest_upgrade(ws, "?token=short123", "").await;
    closed_without_rfb(s, &head).await;
    forward(&proxy, backend, TOKEN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, head) = tempest_upgrade(ws, &format!("?token={TOKEN}"), "").await;
    closed_without_rfb(s, &head).await;
    assert_eq!(count.load(Ordering::SeqCst), 0, "no backend connection");
    // Two more failures reach the limit of 4; then even a good token from
    // this address is refused.
    for _ in 0..2 {
        let (s, head) = tempest_upgrade(ws, "?token=nope-nope-nope", "").await;
        closed_without_rfb(s, &head).await;
    }
    let good = "GoodTokenAfterLimit";
    forward(&proxy, backend, good).await;
    let (s, head) = tempest_upgrade(ws, &format!("?token={good}"), "").await;
    closed_without_rfb(s, &head).await;
    assert_eq!(count.load(Ordering::SeqCst), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_page_and_novnc_are_served_with_types_and_caching() {
    let (proxy, ws) = start(config()).await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("http://{ws}/console.html?path=%3Ftoken%3Dabc"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let body = page.text().await.unwrap();
    for needle in ["<html", "</html>", "noVNC", "<script"] {
        assert!(body.contains(needle), "{needle}");
    }
    let js = http
        .get(format!("http://{ws}/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let js = js.text().await.unwrap();
    let rfb_path = js
        .split('\'')
        .find(|p| p.ends_with("/core/rfb.js"))
        .expect("console.js imports rfb.js")
        .trim_start_matches('.');
    let rfb = http
        .get(format!("http://{ws}{rfb_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rfb.status(), 200);
    assert_eq!(
        rfb.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        rfb.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = rfb.headers()["etag"].clone();
    let again = http
        .get(format!("http://{ws}{rfb_path}"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let head = http
        .head(format!("http://{ws}/console.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // Raw paths, as sent (no client-side normalisation).
    for path in [
        "/novnc/../Cargo.toml",
        "/novnc/1.7.0/../../../Cargo.toml",
        "/novnc/%2e%2e/%2e%2e/Cargo.toml",
        "/novnc/1.7.0/core/",
        "/favicon.ico",
        "/..%2fCargo.toml",
    ] {
        let mut s = TcpStream::connect(ws).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 404"), "{path}: {resp}");
    }
    // Not a WebSocket request where one is expected.
    let plain = http
        .get(format!("http://{ws}/?token=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    proxy.shutdown().await;
}

#[tokio::test]
async fn connection_cap_closes_extra_connections_at_once() {
    let (proxy, ws) = start(ProxyConfig {
        websocket_max_connections: 2,
        ..config()
    })
    .await;
    let a = TcpStream::connect(ws).await.unwrap();
    let _b = TcpStream::connect(ws).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(ws).await.unwrap();
    c.write_all(b"GET /console.html HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "over the cap, no answer");
    assert!(proxy.metrics().rejected_connections >= 1);
    // A place frees up when a connection ends.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = reqwest::get(format!("http://{ws}/console.html"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_handshakes_are_cut_but_sessions_are_not() {
    let (proxy, ws) = start(ProxyConfig {
        websocket_handshake_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    // Half a request, then silence: closed after the timeout.
    let mut s = TcpStream::connect(ws).await.unwrap();
    s.write_all(b"GET /?token=abc HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed after the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // An upgraded console session outlives it.
    let (backend, _) = backend().await;
    forward(&proxy, backend, TOKEN).await;
    let (s, head) = tempest_upgrade(ws, &format!("?token={TOKEN}"), "").await;
    let mut s = tempest_negotiation(s, &head).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(&client_frame(b"still here")).await.unwrap();
    let (_, echo) = read_frame(&mut s).await.expect("session alive");
    assert_eq!(echo, b"still here");
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_before_authentication_close_the_connection() {
    let limit = 16 * 1024;
    let (proxy, ws) = start(ProxyConfig {
        websocket_max_message: limit,
        ..config()
    })
    .await;
    let (backend, count) = backend().await;
    forward(&proxy, backend, TOKEN).await;
    let url = format!("ws://{ws}/?token={TOKEN}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let first = socket.next().await.unwrap().unwrap();
    assert_eq!(first, Message::binary(b"RFB 003.008\n".to_vec()));
    // One byte over the limit instead of the ProtocolVersion.
    let _ = socket.send(Message::binary(vec![0u8; limit + 1])).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(b))) => {
                    panic!("RFB data after an oversized message: {b:?}")
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "connection not closed");
    assert_eq!(count.load(Ordering::SeqCst), 0, "backend never contacted");
    assert_eq!(proxy.metrics().total_sessions, 0);
    // The failed handshake did not consume the token: it still opens the
    // console (once).
    let (s, head) = tempest_upgrade(ws, &format!("?token={TOKEN}"), "").await;
    tempest_negotiation(s, &head).await;
    proxy.shutdown().await;
}
