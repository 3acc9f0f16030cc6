//! The browser console end to end, in a real headless Chromium.
//!
//! `synnefo up` (noVNC page and WebSocket on by default, every simulated
//! instance's VNC port serving a generated screen); a server created
//! through the Compute API; its console URL from `remote-consoles` (2.6),
//! `os-getVNCConsole` (2.1) and `openstack console url show --novnc`;
//! each opened in Chromium, driven over the DevTools protocol. The page's
//! canvas must equal the simulator's framebuffer pixel for pixel
//! (`render_console` of the instance name). Opening a used URL again must
//! show no screen.
//!
//! Chromium: `SYNNEFO_CHROMIUM`, else `chromium` (Debian), `chromium-browser`,
//! `google-chrome` on PATH; the openstack CLI: `SYNNEFO_OSC_VENV/bin/openstack`
//! (default `/opt/synnefo-venvs/osc`), else `openstack` on PATH.
//! `scripts/browser-test-deps` installs both. Missing: SKIPPED, except
//! under CI=true, where the test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use synnefo_ganeti_sim::{BACKGROUND, FB_HEIGHT, FB_WIDTH, FOREGROUND, render_console};
use tokio_tungstenite::tungstenite::Message;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Straight to fd 2: the test harness captures `eprintln!` of a passing test.
fn loud(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "\n********** {msg} **********\n");
}

fn skip_or_fail(what: &str) {
    if ci() {
        panic!("{what} (required under CI=true; scripts/browser-test-deps installs it)");
    }
    loud(&format!("SKIPPED console_browser: {what}"));
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYNNEFO_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find_map(|n| on_path(n))
}

fn find_openstack() -> Option<PathBuf> {
    let venv = std::env::var_os("SYNNEFO_OSC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/synnefo-venvs/osc"));
    let p = venv.join("bin/openstack");
    if p.is_file() {
        return Some(p);
    }
    on_path("openstack")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (by its own pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PASSWORD: &str = "browser-console-test";

fn start_up(data: &Path, api_port: u16, vnc_base: u16) -> Proc {
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_synnefo"))
        .args(["up", "--data-dir"])
        .arg(data)
        .args([
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--console-listen",
            "127.0.0.1:0",
            "--vnc-port-base",
            &vnc_base.to_string(),
            "--clusters",
            "1",
            "--job-latency-ms",
            "5",
            "--demo-password",
            PASSWORD,
        ])
        .env("SYNNEFO_CONFIG", "/dev/null")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning synnefo up");
    Proc(child)
}

fn up_log(data: &Path) -> String {
    std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
}

/// The Compute API as the demo user.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(base: String, data: &Path) -> Api {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "synnefo up did not become healthy:\n{}",
                up_log(data)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}});
        let r = http
            .post(format!("{base}/identity/v3/auth/tokens"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
        Api { http, base, token }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        version: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/compute/v2.1{path}", self.base))
            .header("x-auth-token", &self.token)
            .header("openstack-api-version", format!("compute {version}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn id_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A minimal DevTools-protocol client over the browser's WebSocket, in
/// flat session mode.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("CDP send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("CDP answer in time")
                .expect("CDP connection open")
                .expect("CDP message");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).expect("CDP JSON");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab; returns its session id.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )
        .await["sessionId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }
}

struct Browser {
    _proc: Proc,
    cdp: Cdp,
}

async fn start_browser(chromium: &Path, profile: &Path) -> Browser {
    let proc = Proc(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning chromium"),
    );
    // Chromium writes its DevTools port into the profile.
    let port_file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not start its DevTools endpoint"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let version: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    eprintln!("browser: {}", version["Browser"]);
    let url = version["webSocketDebuggerUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(64 << 20);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
        .await
        .expect("DevTools WebSocket");
    Browser {
        _proc: proc,
        cdp: Cdp { ws, next: 0 },
    }
}

const STATE_JS: &str = "({state: document.body ? document.body.dataset.state : null, \
    status: (document.getElementById('status') || {}).textContent || null})";

const PIXELS_JS: &str = "(() => { const c = document.querySelector('#screen canvas'); \
    if (!c || c.width === 0 || c.height === 0) return null; \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
    return {w: c.width, h: c.height, rgba: Array.from(d)}; })()";

/// Canvas pixels compared with the expected screen.
#[derive(Debug, Default)]
struct PixelCheck {
    width: u64,
    height: u64,
    matching: usize,
    background: usize,
    foreground: usize,
}

fn check_pixels(v: &Value, expected: &[[u8; 3]]) -> Option<PixelCheck> {
    let w = v["w"].as_u64()?;
    let h = v["h"].as_u64()?;
    let rgba = v["rgba"].as_array()?;
    let px: Vec<[u8; 3]> = rgba
        .chunks(4)
        .map(|c| {
            let b = |i: usize| c.get(i).and_then(Value::as_u64).unwrap_or(0) as u8;
            [b(0), b(1), b(2)]
        })
        .collect();
    let mut check = PixelCheck {
        width: w,
        height: h,
        ..PixelCheck::default()
    };
    check.background = px.iter().filter(|p| **p == BACKGROUND).count();
    check.foreground = px.iter().filter(|p| **p == FOREGROUND).count();
    if (w, h) == (u64::from(FB_WIDTH), u64::from(FB_HEIGHT)) {
        check.matching = px.iter().zip(expected).filter(|(a, b)| a == b).count();
    }
    Some(check)
}

/// Opens `url`; waits until the canvas equals the instance's screen.
async fn expect_screen(b: &mut Browser, url: &str, expected: &[[u8; 3]], what: &str) -> PixelCheck {
    let started = Instant::now();
    let session = b.cdp.open(url).await;
    let total = expected.len();
    let mut last = (Value::Null, None);
    while started.elapsed() < Duration::from_secs(30) {
        let state = b.cdp.eval(&session, STATE_JS).await;
        if state["state"] == "connected" {
            let pixels = b.cdp.eval(&session, PIXELS_JS).await;
            let check = check_pixels(&pixels, expected);
            if let Some(c) = &check
                && c.matching == total
            {
                eprintln!(
                    "{what}: canvas {}x{} equals the simulator's screen: {}/{total} pixels match \
                     ({} background #{:02x}{:02x}{:02x}, {} text #ffffff), {:?} after opening; status {:?}",
                    c.width,
                    c.height,
                    c.matching,
                    c.background,
                    BACKGROUND[0],
                    BACKGROUND[1],
                    BACKGROUND[2],
                    c.foreground,
                    started.elapsed(),
                    state["status"]
                );
                return check.unwrap();
            }
            last = (state, check);
        } else {
            last = (state, None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: the canvas never showed the screen; last state {:?}, pixels {:?}",
        last.0, last.1
    );
}

/// Opens a used `url`: the page must end in `failed` and show no screen.
async fn expect_no_screen(b: &mut Browser, url: &str) -> (Value, Option<PixelCheck>) {
    let session = b.cdp.open(url).await;
    let started = Instant::now();
    loop {
        let state = b.cdp.eval(&session, STATE_JS).await;
        if state["state"] == "failed" || state["state"] == "disconnected" {
            let pixels = b.cdp.eval(&session, PIXELS_JS).await;
            let check = check_pixels(&pixels, &[]);
            return (state, check);
        }
        assert!(
            state["state"] != "connected",
            "a used console URL connected: {state}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the page with a used URL never gave up: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_console_url(url: &str, console_port: &mut Option<String>) -> String {
    let prefix = "http://127.0.0.1:";
    assert!(url.starts_with(prefix), "{url}");
    let (hostport, rest) = url["http://".len()..].split_once('/').unwrap();
    assert!(rest.starts_with("console.html?path=%3Ftoken%3D"), "{url}");
    let token = &rest["console.html?path=%3Ftoken%3D".len()..];
    assert!(
        token.len() >= 12 && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{url}"
    );
    assert!(
        token.parse::<u32>().is_err(),
        "the token must not be a port number: {url}"
    );
    assert!(!url.contains("password"), "{url}");
    match console_port {
        Some(p) => assert_eq!(p, hostport),
        None => *console_port = Some(hostport.to_string()),
    }
    token.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn novnc_console_opens_the_vm_screen_in_chromium() {
    let started = Instant::now();
    let Some(chromium) = find_chromium() else {
        skip_or_fail("no Chromium (chromium, chromium-browser, google-chrome) found");
        return;
    };
    let openstack = find_openstack();
    if openstack.is_none() && ci() {
        panic!(
            "the openstack CLI is required under CI=true (scripts/browser-test-deps installs it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api_port = free_port();
    let vnc_base = free_port();
    let _up = start_up(&data, api_port, vnc_base);
    let api = Api::login(format!("http://127.0.0.1:{api_port}"), &data).await;

    // A server, ACTIVE.
    let (_, flavors) = api
        .call(reqwest::Method::GET, "/flavors", "2.1", None)
        .await;
    let flavor = flavors["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "m1.tiny")
        .map(|f| id_of(&f["id"]))
        .unwrap();
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/servers",
            "2.1",
            Some(
                json!({"server": {"name": "console-browser", "flavorRef": flavor,
                "imageRef": "0e5a2c6e-8c1b-4b7e-9f3e-6f1d2a0d0002"}}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = id_of(&created["server"]["id"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = api
            .call(reqwest::Method::GET, &format!("/servers/{id}"), "2.1", None)
            .await;
        match s["server"]["status"].as_str() {
            Some("ACTIVE") => break,
            Some("ERROR") => panic!("server went to ERROR: {s}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "server not ACTIVE: {s}\n{}",
            up_log(&data)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ganeti instance name: backend_prefix_id + id (synnefo.dist.toml).
    let instance = format!("snf-{id}");
    let expected = render_console(&instance);

    // Console URLs: remote-consoles (2.6) and os-getVNCConsole (2.1).
    let (status, rc) = api
        .call(
            reqwest::Method::POST,
            &format!("/servers/{id}/remote-consoles"),
            "2.6",
            Some(json!({"remote_console": {"protocol": "vnc", "type": "novnc"}})),
        )
        .await;
    assert_eq!(status, 200, "{rc}");
    let url1 = rc["remote_console"]["url"].as_str().unwrap().to_string();
    let mut console_port = None;
    let token1 = assert_console_url(&url1, &mut console_port);
    let (status, gc) = api
        .call(
            reqwest::Method::POST,
            &format!("/servers/{id}/action"),
            "2.1",
            Some(json!({"os-getVNCConsole": {"type": "novnc"}})),
        )
        .await;
    assert_eq!(status, 200, "{gc}");
    let url2 = gc["console"]["url"].as_str().unwrap().to_string();
    assert_ne!(
        assert_console_url(&url2, &mut console_port),
        token1,
        "tokens are fresh"
    );

    let profile = dir.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let mut browser = start_browser(&chromium, &profile).await;

    let first = expect_screen(&mut browser, &url1, &expected, "remote-consoles URL").await;
    assert_eq!(first.matching, expected.len());
    assert!(first.foreground > 0 && first.background > 0);

    // The same URL again: refused, nothing on screen.
    let (state, pixels) = expect_no_screen(&mut browser, &url1).await;
    let shown = pixels.as_ref().map_or(0, |p| p.background + p.foreground);
    eprintln!(
        "reused URL: page state {}, status {:?}; canvas {:?}; {shown} pixels of the screen's colours",
        state["state"],
        state["status"],
        pixels.as_ref().map(|p| (p.width, p.height))
    );
    assert_eq!(state["state"], "failed", "{state}");
    assert_eq!(shown, 0, "a reused URL showed screen pixels");

    // The os-getVNCConsole URL opens the same screen.
    expect_screen(&mut browser, &url2, &expected, "os-getVNCConsole URL").await;

    // The stock openstack CLI's URL.
    match &openstack {
        Some(osc) => {
            let out = Command::new(osc)
                .args([
                    "--os-cloud",
                    "synnefo-local",
                    "console",
                    "url",
                    "show",
                    "--novnc",
                    "-f",
                    "value",
                    "-c",
                    "url",
                    &id,
                ])
                .env("OS_CLIENT_CONFIG_FILE", data.join("clouds.yaml"))
                .output()
                .expect("running openstack");
            assert!(
                out.status.success(),
                "openstack console url show: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let url3 = String::from_utf8(out.stdout).unwrap().trim().to_string();
            eprintln!("openstack console url show --novnc: {url3}");
            assert_console_url(&url3, &mut console_port);
            expect_screen(&mut browser, &url3, &expected, "openstack CLI URL").await;
        }
        None => loud("SKIPPED console_browser (openstack CLI part): no openstack CLI"),
    }
    eprintln!("console_browser: {:?} in all", started.elapsed());
}
