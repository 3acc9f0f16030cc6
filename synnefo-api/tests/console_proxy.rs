//! vncauthproxy end to end, in process: a tiny fake RFB server as the
//! backend, the library's own RFB client as the viewer, the control socket
//! as the API would use it. (Real QEMU + vncdotool: `console_qemu.rs`.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use synnefo_api::console::rfb::{self, RfbVersion};
use synnefo_api::console::{
    ConsoleError, Forwarding, ProxyConfig, RelayMode, VncAuthProxy, VncAuthProxyHandle, client,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SERVER_INIT: &[u8] = b"\x02\x80\x01\xe0\x20\x18\x00\x01\x00\xff\x00\xff\x00\xff\x10\x08\x00\x00\x00\x00\x00\x00\x00\x04fake";

#[derive(Clone, Copy)]
enum BackendAuth {
    None(RfbVersion),
    Vnc(&'static [u8]),
}

/// A fake VNC server: handshake, ServerInit after ClientInit, then echo.
async fn fake_backend(auth: BackendAuth) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let ok = match auth {
                    BackendAuth::Vnc(pw) => rfb::server_handshake(&mut s, pw).await.is_ok(),
                    BackendAuth::None(v) => none_handshake(&mut s, v).await.is_ok(),
                };
                if !ok {
                    return;
                }
                let mut client_init = [0u8; 1];
                if s.read_exact(&mut client_init).await.is_err() {
                    return;
                }
                if s.write_all(SERVER_INIT).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn none_handshake(s: &mut TcpStream, v: RfbVersion) -> std::io::Result<()> {
    s.write_all(v.as_bytes()).await?;
    let mut theirs = [0u8; 12];
    s.read_exact(&mut theirs).await?;
    match v {
        RfbVersion::V3_3 => s.write_all(&1u32.to_be_bytes()).await,
        _ => {
            s.write_all(&[1, 1]).await?;
            let mut choice = [0u8; 1];
            s.read_exact(&mut choice).await?;
            if v == RfbVersion::V3_8 {
                s.write_all(&0u32.to_be_bytes()).await?;
            }
            Ok(())
        }
    }
}

fn config(dir: &tempfile::TempDir) -> ProxyConfig {
    ProxyConfig {
        ctrl_socket: Some(dir.path().join("ctrl.sock")),
        listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        // Let the kernel-free pool scan find free ports among many.
        port_min: 31000,
        port_max: 31999,
        accept_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    }
}

async fn start(config: ProxyConfig) -> VncAuthProxyHandle {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    VncAuthProxy::start(config, CancellationToken::new())
        .await
        .unwrap()
}

/// Logs in through the proxy, exchanges ClientInit/ServerInit and checks
/// that bytes come back (the fake backend echoes).
async fn viewer_session(port: u16, password: &str) -> Result<TcpStream, ConsoleError> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    rfb::client_handshake(&mut s, Some(password.as_bytes())).await?;
    s.write_all(&[1]).await?;
    let mut init = vec![0u8; SERVER_INIT.len()];
    s.read_exact(&mut init).await?;
    assert_eq!(init, SERVER_INIT);
    s.write_all(b"hello through the proxy").await?;
    let mut echo = [0u8; 23];
    s.read_exact(&mut echo).await?;
    assert_eq!(&echo, b"hello through the proxy");
    Ok(s)
}

async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn json_control_request_then_session_then_port_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(config(&dir)).await;
    let sock = proxy.socket_path().unwrap().to_owned();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660);

    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    let fwd = Forwarding::new(0, "127.0.0.1", backend.port(), "0neTime!").with_label("vm 42");
    let port = client::request_forwarding(&sock, &fwd).await.unwrap();
    assert!((31000..=31999).contains(&port));
    assert_eq!(proxy.metrics().pending_forwardings, 1);

    let mut s = viewer_session(port, "0neTime!").await.unwrap();
    let m = proxy.metrics();
    assert_eq!(
        (m.active_sessions, m.total_sessions, m.pending_forwardings),
        (1, 1, 0)
    );
    assert_eq!(m.bytes_client_to_server, 1 + 23);
    assert_eq!(m.bytes_server_to_client, SERVER_INIT.len() as u64 + 23);

    // Single use: the port no longer accepts (or refuses the login).
    assert!(viewer_session(port, "0neTime!").await.is_err());

    // The port went back to the pool and can be asked for explicitly.
    let again = client::request_forwarding(
        &sock,
        &Forwarding::new(port, "127.0.0.1", backend.port(), "x"),
    )
    .await
    .unwrap();
    assert_eq!(again, port);

    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    eventually(|| proxy.metrics().active_sessions == 0).await;
    proxy.shutdown().await;
    assert!(!sock.exists(), "control socket removed at shutdown");
}

#[tokio::test]
async fn legacy_line_protocol_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(config(&dir)).await;
    let sock = proxy.socket_path().unwrap().to_owned();
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_3)).await;

    // An explicit source port outside the pool is refused (issue 19: the
    // control socket may not take ports the pool does not own) ...
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outside = free.local_addr().unwrap().port();
    drop(free);
    assert_eq!(
        client::request_raw(
            &sock,
            format!("{outside}:127.0.0.1:{}:legacyPw", backend.port()).as_bytes(),
        )
        .await
        .unwrap(),
        b"FAILED"
    );
    // ... one inside it is taken (a free one: other tests share the pool).
    let mut sport = 0;
    for p in (31500..=31999).rev() {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            sport = p;
            break;
        }
    }
    assert_ne!(sport, 0, "no free port in the pool");
    let answer = client::request_raw(
        &sock,
        format!("{sport}:127.0.0.1:{}:legacyPw", backend.port()).as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer, b"OK");
    viewer_session(sport, "legacyPw").await.unwrap();

    assert_eq!(
        client::request_raw(&sock, b"nonsense").await.unwrap(),
        b"FAILED"
    );
    let json = client::request_raw(&sock, br#"{"destination_port": 1}"#)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&json).contains("\"FAILED\""));
    let err = client::request_forwarding(&sock, &Forwarding::new(0, "127.0.0.1", 5900, "")).await;
    assert!(matches!(err, Err(ConsoleError::BadRequest(_))));
    proxy.shutdown().await;
}

/// A viewer connection to `port` from another loopback address.
async fn viewer_from(source: [u8; 4], port: u16, password: &str) -> Result<(), ConsoleError> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((Ipv4Addr::from(source), 0).into())?;
    let mut s = socket.connect((Ipv4Addr::LOCALHOST, port).into()).await?;
    rfb::client_handshake(&mut s, Some(password.as_bytes()))
        .await
        .map(drop)
}

#[tokio::test]
async fn wrong_passwords_refuse_the_address_not_the_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(ProxyConfig {
        max_failures_per_forwarding: 2,
        ..config(&dir)
    })
    .await;
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "right"))
        .await
        .unwrap();
    // a third party (127.0.0.2) answers wrong twice ...
    let err = viewer_from([127, 0, 0, 2], port, "wrong")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsoleError::AuthFailed(ref r) if r.contains("authentication failed")),
        "{err}"
    );
    assert!(viewer_from([127, 0, 0, 2], port, "wrong2").await.is_err());
    // ... and is refused from then on, even with the right password
    let err = viewer_from([127, 0, 0, 2], port, "right")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsoleError::AuthFailed(ref r) if r.contains("too many")),
        "{err}"
    );
    // but the forwarding stays open for its owner (issue 19 item 6: before,
    // the two wrong answers cancelled it)
    assert_eq!(proxy.metrics().pending_forwardings, 1);
    let s = viewer_session(port, "right").await.unwrap();
    let m = proxy.metrics();
    assert_eq!(m.auth_failures, 2);
    assert_eq!(m.total_sessions, 1);
    drop(s);
    proxy.shutdown().await;
}

#[tokio::test]
async fn failing_addresses_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(ProxyConfig {
        auth_failure_limit: 2,
        ..config(&dir)
    })
    .await;
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    for _ in 0..2 {
        let port = proxy
            .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "right"))
            .await
            .unwrap();
        assert!(viewer_session(port, "wrong").await.is_err());
    }
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "right"))
        .await
        .unwrap();
    let err = viewer_session(port, "right").await.unwrap_err();
    assert!(
        matches!(err, ConsoleError::AuthFailed(ref r) if r.contains("too many")),
        "{err}"
    );
    assert_eq!(proxy.metrics().rejected_connections, 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn expired_forwarding_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(ProxyConfig {
        accept_timeout: Duration::from_millis(200),
        ..config(&dir)
    })
    .await;
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "pw"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(viewer_session(port, "pw").await.is_err());
    let m = proxy.metrics();
    assert_eq!((m.expired_forwardings, m.pending_forwardings), (1, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn session_limit_refuses_the_extra_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(ProxyConfig {
        max_sessions: 1,
        ..config(&dir)
    })
    .await;
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    let p1 = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "one"))
        .await
        .unwrap();
    let p2 = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "two"))
        .await
        .unwrap();
    let first = viewer_session(p1, "one").await.unwrap();
    let err = viewer_session(p2, "two").await.unwrap_err();
    assert!(
        matches!(err, ConsoleError::AuthFailed(ref r) if r.contains("too many console sessions")),
        "{err}"
    );
    drop(first);
    eventually(|| proxy.metrics().active_sessions == 0).await;
    // The refused forwarding was not consumed.
    viewer_session(p2, "two").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_vnc_password_and_backend_failures() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(ProxyConfig {
        backend_password: Some("ganetiPw".into()),
        relay: RelayMode::Copy,
        ..config(&dir)
    })
    .await;
    let backend = fake_backend(BackendAuth::Vnc(b"ganetiPw")).await;
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "user-otp"))
        .await
        .unwrap();
    viewer_session(port, "user-otp").await.unwrap();

    // Backend with another password: the viewer is told, cleanly.
    let wrong = fake_backend(BackendAuth::Vnc(b"other")).await;
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", wrong.port(), "otp2"))
        .await
        .unwrap();
    let err = viewer_session(port, "otp2").await.unwrap_err();
    assert!(
        matches!(err, ConsoleError::AuthFailed(ref r) if r.contains("backend unavailable")),
        "{err}"
    );

    // Backend down.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_port = gone.local_addr().unwrap().port();
    drop(gone);
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", gone_port, "otp3"))
        .await
        .unwrap();
    assert!(viewer_session(port, "otp3").await.is_err());
    assert_eq!(proxy.metrics().backend_failures, 2);
    proxy.shutdown().await;
}

/// Viewers speaking 3.3 and 3.7 (hand-rolled: the library's client always
/// answers with the server's version).
#[tokio::test]
async fn viewers_speaking_3_3_and_3_7() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(config(&dir)).await;
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_7)).await;
    for version in [RfbVersion::V3_3, RfbVersion::V3_7] {
        let port = proxy
            .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "pw-pw"))
            .await
            .unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut server_version = [0u8; 12];
        s.read_exact(&mut server_version).await.unwrap();
        assert_eq!(&server_version, b"RFB 003.008\n");
        s.write_all(version.as_bytes()).await.unwrap();
        if version == RfbVersion::V3_3 {
            let mut t = [0u8; 4];
            s.read_exact(&mut t).await.unwrap();
            assert_eq!(u32::from_be_bytes(t), 2);
        } else {
            let mut types = [0u8; 2];
            s.read_exact(&mut types).await.unwrap();
            assert_eq!(types, [1, 2]);
            s.write_all(&[2]).await.unwrap();
        }
        let mut challenge = [0u8; 16];
        s.read_exact(&mut challenge).await.unwrap();
        s.write_all(&rfb::vnc_auth_response(b"pw-pw", &challenge))
            .await
            .unwrap();
        let mut result = [0u8; 4];
        s.read_exact(&mut result).await.unwrap();
        assert_eq!(result, [0, 0, 0, 0]);
        s.write_all(&[1]).await.unwrap();
        let mut init = vec![0u8; SERVER_INIT.len()];
        s.read_exact(&mut init).await.unwrap();
        assert_eq!(init, SERVER_INIT);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_viewer_with_the_same_one_time_password() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(ProxyConfig {
        websocket_enabled: true,
        websocket_listen: "127.0.0.1:0".parse().unwrap(),
        ..config(&dir)
    })
    .await;
    let ws_addr = proxy.websocket_addr().unwrap();
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "browser1"))
        .await
        .unwrap();

    // Unknown forwarding: plain 404, no upgrade.
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{ws_addr}/1"),
    )
    .unwrap();
    assert!(tokio_tungstenite::connect_async(req).await.is_err());

    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{ws_addr}/{port}"),
    )
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "binary".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "binary"
    );

    // Bridge the WebSocket to a byte stream for the RFB client.
    let (mut ours, theirs) = tokio::io::duplex(65536);
    tokio::spawn(async move {
        use tokio_tungstenite::tungstenite::Message;
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let up = async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = rd.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                sink.send(Message::binary(buf[..n].to_vec())).await.unwrap();
            }
        };
        let down = async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Binary(b) = msg {
                    wr.write_all(&b).await.unwrap();
                }
            }
        };
        tokio::join!(up, down);
    });
    rfb::client_handshake(&mut ours, Some(b"browser1"))
        .await
        .unwrap();
    ours.write_all(&[1]).await.unwrap();
    let mut init = vec![0u8; SERVER_INIT.len()];
    ours.read_exact(&mut init).await.unwrap();
    assert_eq!(init, SERVER_INIT);
    ours.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    ours.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    assert_eq!(proxy.metrics().total_sessions, 1);
    // The TCP port of the same forwarding is closed now: single use.
    assert!(viewer_session(port, "browser1").await.is_err());
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_sessions_and_refuses_requests() {
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let proxy = VncAuthProxy::start(config(&dir), token.clone())
        .await
        .unwrap();
    let backend = fake_backend(BackendAuth::None(RfbVersion::V3_8)).await;
    let port = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "pw"))
        .await
        .unwrap();
    let mut s = viewer_session(port, "pw").await.unwrap();
    let pending = proxy
        .request_forwarding(Forwarding::new(0, "127.0.0.1", backend.port(), "pw2"))
        .await
        .unwrap();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), proxy.wait())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(TcpStream::connect(("127.0.0.1", pending)).await.is_err());
    assert!(matches!(
        proxy
            .request_forwarding(Forwarding::new(0, "127.0.0.1", 1, "x"))
            .await,
        Err(ConsoleError::ShuttingDown)
    ));
    assert!(!dir.path().join("ctrl.sock").exists());
}

#[tokio::test]
async fn second_proxy_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(config(&dir)).await;
    let err = VncAuthProxy::start(config(&dir), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsoleError::Config(ref m) if m.contains("another vncauthproxy")),
        "{err}"
    );
    proxy.shutdown().await;
    // A stale socket file (no listener) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("ctrl.sock")).unwrap();
    drop(stale);
    let proxy = start(config(&dir)).await;
    proxy.shutdown().await;
}
