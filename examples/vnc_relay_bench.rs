//! Load and throughput harness for the console proxy (vncauthproxy).
//!
//! Measured in one run, loopback only, bounded (< 2 minutes):
//! 1. Relay throughput, backend -> viewer (the framebuffer direction):
//!    direct TCP, a bare tokio `copy_bidirectional` relay, and our proxy with
//!    its splice(2) relay and with its copy relay. Same source, same sink;
//!    reported as ratios to direct TCP (median of interleaved rounds).
//! 2. Control socket request -> answer latency (a new connection per
//!    request, as the API does), p50 / p99.
//! 3. Concurrent authenticated idle sessions: the proxy runs in a child
//!    process (this binary re-executed) so its VmRSS is its own; memory per
//!    session = VmRSS delta / sessions.
//!
//! ```text
//! cargo run --release -p synnefo-examples --example vnc_relay_bench -- \
//!     [--sessions 10000] [--copy-sessions 2000] [--seconds 1.5] [--rounds 3]
//! ```

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use synnefo_api::console::rfb::{self, RfbVersion};
use synnefo_api::console::{Forwarding, ProxyConfig, RelayMode, VncAuthProxy, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const SERVER_INIT: &[u8] = b"\x02\x80\x01\xe0\x20\x18\x00\x01\x00\xff\x00\xff\x00\xff\x10\x08\x00\x00\x00\x00\x00\x00\x00\x05bench";

struct Args {
    sessions: usize,
    copy_sessions: usize,
    seconds: f64,
    rounds: usize,
    control_requests: usize,
    idle_only: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        sessions: 10_000,
        copy_sessions: 2_000,
        seconds: 1.5,
        rounds: 3,
        control_requests: 2_000,
        idle_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().context("missing value");
        match flag.as_str() {
            "--sessions" => a.sessions = val()?.parse()?,
            "--copy-sessions" => a.copy_sessions = val()?.parse()?,
            "--seconds" => a.seconds = val()?.parse()?,
            "--rounds" => a.rounds = val()?.parse()?,
            "--control-requests" => a.control_requests = val()?.parse()?,
            "--idle-only" => a.idle_only = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match argv.get(1).map(String::as_str) {
        Some("--proxy-child") => return rt.block_on(proxy_child(&argv[2..])),
        Some("--backend-child") => return rt.block_on(backend_child(&argv[2..])),
        _ => {}
    }
    let args = parse_args()?;
    rt.block_on(run(args))
}

/// Waits until the parent closes our stdin (or dies).
async fn until_stdin_closes() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    })
    .await?;
    Ok(())
}

/// Child process: the proxy (control socket SOCKET, relay MODE, pool
/// MIN..=MAX) plus a bare relay to BACKEND. Prints `READY <bare relay addr>`.
async fn proxy_child(args: &[String]) -> anyhow::Result<()> {
    let [sock, mode, min, max, backend] = args else {
        bail!("usage: --proxy-child SOCKET splice|copy POOL_MIN POOL_MAX BACKEND_ADDR");
    };
    let relay = if mode == "copy" {
        RelayMode::Copy
    } else {
        RelayMode::Splice
    };
    let proxy = VncAuthProxy::start(
        ProxyConfig {
            ctrl_socket: Some(PathBuf::from(sock)),
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: min.parse()?,
            port_max: max.parse()?,
            max_sessions: 100_000,
            accept_timeout: Duration::from_secs(90),
            relay,
            nofile_limit: 1 << 20,
            ..ProxyConfig::default()
        },
        CancellationToken::new(),
    )
    .await?;
    let bare = bare_relay(backend.parse()?).await?;
    println!("READY {bare}");
    std::io::stdout().flush()?;
    until_stdin_closes().await?;
    proxy.shutdown().await;
    Ok(())
}

/// Child process: a fake VNC server, `stream` (sends as fast as it can) or
/// `idle`. Prints `READY <addr>`.
async fn backend_child(args: &[String]) -> anyhow::Result<()> {
    let _ = synnefo_api::console::raise_nofile_limit(1 << 20);
    let addr = match args.first().map(String::as_str) {
        Some("stream") => streaming_backend().await?,
        _ => idle_backend().await?,
    };
    println!("READY {addr}");
    std::io::stdout().flush()?;
    until_stdin_closes().await
}

/// A child process of this binary; killed (stdin closed) on drop.
struct Child {
    child: tokio::process::Child,
    pid: u32,
    ready: String,
}

async fn spawn_child(args: &[&str]) -> anyhow::Result<Child> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await?;
    let Some(ready) = line.trim().strip_prefix("READY") else {
        bail!("child {args:?} did not start: {line:?}");
    };
    Ok(Child {
        child,
        pid,
        ready: ready.trim().to_owned(),
    })
}

impl Child {
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (before, after) = synnefo_api::console::raise_nofile_limit(200_000)?;
    println!("vnc_relay_bench: RLIMIT_NOFILE {before} -> {after}");
    let started = Instant::now();

    let dir = tempdir()?;
    if !args.idle_only {
        throughput_and_control(&args, &dir).await?;
    }
    idle_phase(&args, &dir).await?;
    println!("\ntotal run time {:.1} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn throughput_and_control(args: &Args, dir: &Path) -> anyhow::Result<()> {
    // 1. Throughput: source (backend child) -> relay (proxy child) -> sink (us).
    let source = spawn_child(&["--backend-child", "stream"]).await?;
    let backend: SocketAddr = source.ready.parse()?;
    let splice_sock = dir.join("splice.sock");
    let copy_sock = dir.join("copy.sock");
    let splice_child = spawn_child(&[
        "--proxy-child",
        &splice_sock.to_string_lossy(),
        "splice",
        "22000",
        "24999",
        &backend.to_string(),
    ])
    .await?;
    let copy_child = spawn_child(&[
        "--proxy-child",
        &copy_sock.to_string_lossy(),
        "copy",
        "25000",
        "25999",
        &backend.to_string(),
    ])
    .await?;
    let bare: SocketAddr = splice_child.ready.parse()?;
    let dur = Duration::from_secs_f64(args.seconds);
    let names = [
        "direct TCP",
        "bare copy_bidirectional",
        "proxy (splice)",
        "proxy (copy)",
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..args.rounds {
        results[0].push(stream_through(backend, None, dur).await?);
        results[1].push(stream_through(bare, None, dur).await?);
        for (i, sock) in [(2, &splice_sock), (3, &copy_sock)] {
            let fwd = Forwarding::new(0, "127.0.0.1", backend.port(), "benchpw1");
            let port = client::request_forwarding(sock, &fwd).await?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            results[i].push(stream_through(addr, Some("benchpw1"), dur).await?);
        }
    }
    let medians: Vec<f64> = results.iter_mut().map(|r| median(r)).collect();
    println!(
        "\n== relay throughput, backend -> viewer, 3 processes, {} rounds x {:.1} s (median) ==",
        args.rounds, args.seconds
    );
    for (name, m) in names.iter().zip(&medians) {
        println!(
            "{name:<26} {:>9.0} MiB/s  {:.2}x direct  {:.2}x bare relay",
            m / 1048576.0,
            m / medians[0],
            m / medians[1]
        );
    }

    // 2. Control latency.
    let mut lat = Vec::with_capacity(args.control_requests);
    for i in 0..args.control_requests {
        let fwd = Forwarding::new(0, "127.0.0.1", backend.port(), format!("ctl{i}"));
        let t = Instant::now();
        client::request_forwarding(&splice_sock, &fwd).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "\n== control request -> answer ({} requests, new connection each) ==\np50 {:.0} us  p99 {:.0} us  max {:.0} us",
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    splice_child.stop().await;
    copy_child.stop().await;
    source.stop().await;
    Ok(())
}

async fn idle_phase(args: &Args, dir: &Path) -> anyhow::Result<()> {
    // 3. Idle sessions, proxy in a child process.
    let idle = spawn_child(&["--backend-child", "idle"]).await?;
    let idle_backend: SocketAddr = idle.ready.parse()?;
    // Each session holds 2 sockets in the proxy: the fd hard limit caps it.
    let hard = nofile_hard_limit()?;
    let cap = usize::try_from(hard.saturating_sub(256) / 2).unwrap_or(usize::MAX);
    println!("\n== concurrent authenticated idle sessions (proxy in a child process) ==");
    for (mode, asked) in [("splice", args.sessions), ("copy", args.copy_sessions)] {
        if asked == 0 {
            continue;
        }
        let n = asked.min(cap);
        if n < asked {
            println!(
                "({mode}: {asked} asked, {n} possible under the hard RLIMIT_NOFILE of {hard})"
            );
        }
        match idle_sessions(dir, mode, n, idle_backend).await {
            Ok((held, per_session, rss)) => println!(
                "{mode:<7} {held:>6} sessions held; proxy VmRSS {:.1} MiB; {:.2} KiB per session",
                rss as f64 / 1048576.0,
                per_session / 1024.0
            ),
            Err(e) => println!("{mode:<7} failed: {e:#}"),
        }
    }
    idle.stop().await;
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vnc_relay_bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// RFB handshake (security None), then ServerInit after ClientInit.
async fn backend_handshake(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.write_all(RfbVersion::V3_8.as_bytes()).await?;
    let mut v = [0u8; 12];
    s.read_exact(&mut v).await?;
    s.write_all(&[1, 1]).await?;
    let mut choice = [0u8; 1];
    s.read_exact(&mut choice).await?;
    s.write_all(&0u32.to_be_bytes()).await?;
    let mut client_init = [0u8; 1];
    s.read_exact(&mut client_init).await?;
    s.write_all(SERVER_INIT).await
}

/// A VNC server that streams bytes to its viewer as fast as it can.
async fn streaming_backend() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if backend_handshake(&mut s).await.is_err() {
                    return;
                }
                let chunk = vec![0xA5u8; 256 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    Ok(addr)
}

/// A VNC server whose sessions stay idle.
async fn idle_backend() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if backend_handshake(&mut s).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

/// The baseline: a plain tokio relay to `backend`.
async fn bare_relay(backend: SocketAddr) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut v, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = v.set_nodelay(true);
                let Ok(mut b) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = b.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut v, &mut b).await;
            });
        }
    });
    Ok(addr)
}

/// Connects as a viewer, then counts bytes received for `dur`: bytes/s.
async fn stream_through(
    addr: SocketAddr,
    password: Option<&str>,
    dur: Duration,
) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    rfb::client_handshake(&mut s, password.map(str::as_bytes)).await?;
    s.write_all(&[1]).await?;
    let mut init = vec![0u8; SERVER_INIT.len()];
    s.read_exact(&mut init).await?;
    let mut buf = vec![0u8; 256 * 1024];
    // Warm up briefly, then measure.
    let warm = Instant::now() + Duration::from_millis(200);
    while Instant::now() < warm {
        if s.read(&mut buf).await? == 0 {
            bail!("stream ended during warm-up");
        }
    }
    let start = Instant::now();
    let mut total = 0u64;
    while start.elapsed() < dur {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("stream ended early");
        }
        total += n as u64;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn nofile_hard_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-files limit")?;
    let hard = line.split_whitespace().nth(4).context("bad limits line")?;
    Ok(hard.parse().unwrap_or(u64::MAX))
}

fn vm_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?;
    Ok(kb * 1024)
}

/// Opens `n` authenticated idle sessions through a proxy child process;
/// returns (sessions held, bytes per session, final VmRSS).
async fn idle_sessions(
    dir: &Path,
    mode: &str,
    n: usize,
    backend: SocketAddr,
) -> anyhow::Result<(usize, f64, u64)> {
    let sock = dir.join(format!("child-{mode}.sock"));
    let child = spawn_child(&[
        "--proxy-child",
        &sock.to_string_lossy(),
        mode,
        "21000",
        "21999",
        &backend.to_string(),
    ])
    .await?;
    let pid = child.pid;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = vm_rss_bytes(pid)?;

    let sem = Arc::new(Semaphore::new(64));
    let failures = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(45);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() > deadline {
            break;
        }
        if i % 500 == 499 {
            // Fresh splice sessions hold their pipes for a second; let them
            // go so the run stays inside the fd limit.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let sock = sock.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let r = async {
                let pw = format!("idle{i}");
                let port = client::request_forwarding(
                    &sock,
                    &Forwarding::new(0, "127.0.0.1", backend.port(), &pw),
                )
                .await?;
                let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
                rfb::client_handshake(&mut s, Some(pw.as_bytes())).await?;
                s.write_all(&[1]).await?;
                let mut init = vec![0u8; SERVER_INIT.len()];
                s.read_exact(&mut init).await?;
                anyhow::Ok(s)
            }
            .await;
            drop(permit);
            if let Err(e) = &r
                && failures.fetch_add(1, Ordering::Relaxed) < 3
            {
                eprintln!("session setup failed: {e:#}");
            }
            r.ok()
        }));
    }
    let mut held = Vec::with_capacity(n);
    for t in tasks {
        if let Some(s) = t.await? {
            held.push(s);
        }
    }
    println!(
        "({mode}: {} sessions set up in {:.1} s)",
        held.len(),
        t0.elapsed().as_secs_f64()
    );
    // Idle splice sessions give their pipes back after 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = vm_rss_bytes(pid)?;
    let count = held.len();
    if failures.load(Ordering::Relaxed) > 0 {
        println!(
            "({mode}: {} session setups failed)",
            failures.load(Ordering::Relaxed)
        );
    }
    drop(held);
    child.stop().await;
    let per = if count == 0 {
        0.0
    } else {
        rss.saturating_sub(base) as f64 / count as f64
    };
    Ok((count, per, rss))
}
