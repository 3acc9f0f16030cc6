//! The proof on a real Ganeti 3.0: the whole pipeline against the lab of
//! `scripts/ganeti-lab/` (Debian's Ganeti 3.0.2, fake hypervisor, no-op OS).
//!
//! Every other test trusts our simulator; this one drives the real thing, so
//! the simulator cannot drift from Ganeti unnoticed, and the GANETI-MASTER
//! services of the seed (eventd, the hook) run where they really run: inside
//! the lab's namespaces, on Ganeti's own job queue, started by Ganeti's own
//! hook runner.
//!
//! ```text
//! test (host) --HTTP--> synnefo api (host) --RAPI over 127.0.0.1:15080--> Ganeti (lab)
//!   Ganeti writes queue/job-N --> synnefo eventd (lab) --AMQP, lab 127.0.0.1:5672 forward-->
//!   RabbitMQ (host) --> synnefo dispatcher x2 (host) --> PostgreSQL (host) <-- synnefo api
//!   Ganeti runs hooks/instance-{add,start,modify}-post.d/50-synnefo* = synnefo ganeti-hook (lab)
//! ```
//!
//! A no-op (one SKIPPED line) unless `SYNNEFO_TEST_GANETI_LAB=1`;
//! `scripts/ganeti-lab/test` brings the lab up, exports its environment
//! (`scripts/ganeti-lab/env`) and sets it. With it set, an unreachable lab,
//! PostgreSQL or RabbitMQ is a SKIPPED line, or a failure under `CI=true`.
//!
//! Isolation from other tests sharing the broker, the database server and
//! the lab: a fresh database `synnefo_lab_<id>`, the instance-name prefix
//! `lab<id>-` (so routing keys `ganeti.lab<id>-.event.*` and queues
//! `lab<id>--events-*` are ours alone), hook links named `50-synnefo-<id>`.
//! Everything started or created is stopped or removed at the end, also when
//! the test fails (guards run on drop).
//!
//! Each step's wall time is printed (a table at the end): job latency on the
//! real cluster against the simulator's default latency.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use synnefo_core::testing::{amqp_url, pg_url, service_unavailable};

/// The `synnefo` binary under test.
const SYNNEFO: &str = env!("CARGO_BIN_EXE_synnefo");
/// The test's name in SKIPPED lines and CI failures.
const TEST: &str = "ganeti_lab";
/// How long a server may take to reach a state on the real cluster. Jobs
/// take 0.5-2 s here, doubled under a loaded 2-core machine; the margin is
/// for the first create (ganeti-metad starts) and catch-up after restarts.
const STATE_TIMEOUT: Duration = Duration::from_secs(90);
/// The Ganeti network the test's servers get their address from.
const LAB_NETWORK: &str = "synnefo-lab";
/// Its subnet: TEST-NET-2, which exists only as Ganeti's bookkeeping (the
/// fake hypervisor configures nothing).
const LAB_SUBNET: &str = "198.51.100.0/24";
/// Address prefix every server address must have.
const LAB_SUBNET_PREFIX: &str = "198.51.100.";
/// The hook phases `synnefo ganeti-hook install` links into by default.
const HOOK_PHASES: [&str; 3] = [
    "instance-add-post",
    "instance-start-post",
    "instance-modify-post",
];
/// The simulator's default job latency (queued + waiting + running,
/// `synnefo_ganeti_sim::SimLatency::default()`), printed next to the real
/// figures.
const SIM_DEFAULT_JOB_MS: u64 = 5 + 5 + 20;

// ------------------------------------------------------------------ entry

#[test]
fn real_ganeti_end_to_end() {
    if std::env::var("SYNNEFO_TEST_GANETI_LAB").as_deref() != Ok("1") {
        eprintln!(
            "\n********** SKIPPED {TEST}: needs the real-Ganeti lab; run scripts/ganeti-lab/test \
             (or set SYNNEFO_TEST_GANETI_LAB=1 with the lab's env) **********\n"
        );
        return;
    }
    let lab = match Lab::from_env().and_then(|lab| lab.check().map(|()| lab)) {
        Ok(lab) => lab,
        Err(e) => return service_unavailable(TEST, "the Ganeti lab", &format!("{e:#}")),
    };
    if let Err(e) = tcp_reachable(&pg_url(), 5432) {
        return service_unavailable(TEST, "PostgreSQL", &e);
    }
    if let Err(e) = tcp_reachable(&amqp_url(), 5672) {
        return service_unavailable(TEST, "RabbitMQ", &e);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut timings = Timings::default();
    let result = runtime.block_on(run(&lab, &mut timings));
    timings.print();
    if let Err(e) = result {
        panic!("{TEST} failed: {e:#}");
    }
}

/// Fails fast when a service's TCP port does not answer.
fn tcp_reachable(url: &str, default_port: u16) -> Result<(), String> {
    let (host, port) = host_port(url, default_port);
    let addr = format!("{host}:{port}");
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    TcpStream::connect_timeout(&sock, Duration::from_secs(3))
        .map(drop)
        .map_err(|e| format!("{addr}: {e}"))
}

/// `scheme://user:pass@host:port/...` -> (host, port).
fn host_port(url: &str, default_port: u16) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(default_port)),
        None => (hostport.to_string(), default_port),
    }
}

// ------------------------------------------------------------------ the lab

/// The running lab, from `scripts/ganeti-lab/env`.
struct Lab {
    /// `$LAB_NS`: runs a command inside the lab.
    ns: PathBuf,
    /// Host port of the RAPI forward.
    rapi_port: u16,
    rapi_user: String,
    rapi_password: String,
    /// RAPI's certificate (pinned).
    rapi_cert: PathBuf,
    /// The node (`pnode`).
    node: String,
    /// `/etc/ganeti/hooks` as a host path.
    hooks_dir: PathBuf,
    /// `/etc/synnefo` of the lab as a host path.
    synnefo_etc: PathBuf,
}

fn env_var(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set (eval \"$(scripts/ganeti-lab/env)\")"))
}

impl Lab {
    fn from_env() -> Result<Lab> {
        Ok(Lab {
            ns: env_var("LAB_NS")?.into(),
            rapi_port: env_var("LAB_RAPI_PORT")?.parse().context("LAB_RAPI_PORT")?,
            rapi_user: env_var("SYNNEFO_TEST_RAPI_USER")?,
            rapi_password: env_var("SYNNEFO_TEST_RAPI_PASSWORD")?,
            rapi_cert: env_var("SYNNEFO_TEST_RAPI_CERT")?.into(),
            node: env_var("SYNNEFO_TEST_RAPI_NODE")?,
            hooks_dir: env_var("SYNNEFO_TEST_GANETI_HOOKS_DIR")?.into(),
            synnefo_etc: env_var("SYNNEFO_TEST_LAB_SYNNEFO_ETC")?.into(),
        })
    }

    /// The lab answers: its namespace wrapper runs and Ganeti's master
    /// daemons answer a query; the RAPI forward accepts connections.
    fn check(&self) -> Result<()> {
        ensure!(
            self.ns.exists(),
            "{} does not exist: is the lab up?",
            self.ns.display()
        );
        ensure!(
            self.synnefo_etc.is_dir(),
            "{} is missing",
            self.synnefo_etc.display()
        );
        self.gnt(&["gnt-cluster", "getmaster"])
            .context("gnt-cluster getmaster in the lab")?;
        tcp_reachable(
            &format!("https://127.0.0.1:{}", self.rapi_port),
            self.rapi_port,
        )
        .map_err(|e| anyhow!("RAPI forward: {e}"))
    }

    /// A command run inside the lab.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(&self.ns);
        c.arg(program);
        c
    }

    /// Runs a Ganeti command in the lab; its stdout, or an error with its output.
    fn gnt(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        let out = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} in the lab", args.join(" ")))?;
        ensure!(
            out.status.success(),
            "{} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Names of the instances whose name starts with `prefix`.
    fn instances(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .gnt(&["gnt-instance", "list", "--no-headers", "-o", "name"])?
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(prefix))
            .map(String::from)
            .collect())
    }

    /// `gnt-instance list` status of one instance (`running`, `ADMIN_down`).
    fn instance_status(&self, name: &str) -> Result<String> {
        Ok(self
            .gnt(&["gnt-instance", "list", "--no-headers", "-o", "status", name])?
            .trim()
            .to_string())
    }

    /// The Ganeti network the servers use, created once per lab.
    fn ensure_network(&self) -> Result<()> {
        let list = self.gnt(&["gnt-network", "list", "--no-headers", "-o", "name"])?;
        if !list.lines().any(|l| l.trim() == LAB_NETWORK) {
            self.gnt(&[
                "gnt-network",
                "add",
                &format!("--network={LAB_SUBNET}"),
                LAB_NETWORK,
            ])?;
        }
        let groups = self.gnt(&[
            "gnt-network",
            "list",
            "--no-headers",
            "-o",
            "group_list",
            LAB_NETWORK,
        ])?;
        if !groups.contains("default") {
            self.gnt(&[
                "gnt-network",
                "connect",
                "--nic-parameters=mode=routed,link=100",
                LAB_NETWORK,
                "default",
            ])?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ processes and cleanup

/// Every process the test started; each is stopped (SIGTERM, then SIGKILL)
/// when the guard drops, also on failure. A failing run prints the tail of
/// every process's log.
#[derive(Default)]
struct Procs {
    running: Vec<Proc>,
    logs: Vec<(String, PathBuf)>,
}

struct Proc {
    name: String,
    child: Child,
}

impl Procs {
    /// Starts `cmd` with stdout and stderr in `<log_dir>/<name>.log`.
    fn spawn(&mut self, name: &str, mut cmd: Command, log_dir: &Path) -> Result<u32> {
        let log = log_dir.join(format!("{name}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().context("log file")?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        self.running.push(Proc {
            name: name.to_string(),
            child,
        });
        self.logs.push((name.to_string(), log));
        Ok(pid)
    }

    /// Fails if a process has exited.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.running {
            if let Some(status) = p.child.try_wait().context("waitpid")? {
                bail!("{} exited early ({status}); see its log below", p.name);
            }
        }
        Ok(())
    }

    /// Stops one process by name (SIGTERM, then SIGKILL after 10 s).
    fn stop(&mut self, name: &str) -> Result<()> {
        let i = self
            .running
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no process {name}"))?;
        let mut p = self.running.remove(i);
        terminate(&mut p.child, Duration::from_secs(10));
        Ok(())
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (name, path) in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            let _ = writeln!(
                out,
                "----- {name} ({}), last {} lines",
                path.display(),
                lines.len() - from
            );
            for l in &lines[from..] {
                let _ = writeln!(out, "  {l}");
            }
        }
        out
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM to all first, so they shut down in parallel.
        for p in &self.running {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.child.id().to_string())
                .status();
        }
        for p in &mut self.running {
            terminate(&mut p.child, Duration::from_secs(10));
        }
        if std::thread::panicking() || std::env::var_os("SYNNEFO_TEST_LAB_LOGS").is_some() {
            eprintln!("{}", self.log_tails());
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One undo action.
type UndoFn = Box<dyn FnOnce() -> Result<()>>;

/// Undo actions run in reverse order on drop (also on failure).
#[derive(Default)]
struct Cleanup {
    actions: Vec<(String, UndoFn)>,
}

impl Cleanup {
    fn push(&mut self, what: impl Into<String>, f: impl FnOnce() -> Result<()> + 'static) {
        self.actions.push((what.into(), Box::new(f)));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some((what, f)) = self.actions.pop() {
            if let Err(e) = f() {
                eprintln!("[{TEST}] cleanup: {what}: {e:#}");
            }
        }
    }
}

/// Wall times of the steps.
#[derive(Default)]
struct Timings {
    steps: Vec<(String, Duration)>,
}

impl Timings {
    fn record(&mut self, step: &str, d: Duration) {
        eprintln!("[{TEST}] {step}: {:.3} s", d.as_secs_f64());
        self.steps.push((step.to_string(), d));
    }

    fn print(&self) {
        eprintln!(
            "\n==== {TEST}: wall time per step (real Ganeti 3.0; the simulator's default job takes {SIM_DEFAULT_JOB_MS} ms)"
        );
        for (step, d) in &self.steps {
            eprintln!("  {step:<58} {:>8.3} s", d.as_secs_f64());
        }
    }
}

// ------------------------------------------------------------------ synnefo commands

/// Runs `synnefo` with the given settings file; Ok(stdout) on exit 0.
fn synnefo(config: &Path, args: &[&str]) -> Result<String> {
    let out = synnefo_command(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running synnefo {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "synnefo {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `synnefo` with a clean environment: only our settings file, no stray
/// `SYNNEFO_*` overrides from the caller's shell.
fn synnefo_command(config: &Path) -> Command {
    let mut c = Command::new(SYNNEFO);
    scrub_env(&mut c);
    c.env("SYNNEFO_CONFIG", config);
    c
}

fn scrub_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SYNNEFO_") && !k.starts_with("SYNNEFO_TEST_") {
            c.env_remove(k.as_ref());
        }
    }
    c.env(
        "SYNNEFO_LOG",
        std::env::var("SYNNEFO_TEST_LAB_LOG").unwrap_or_else(|_| "info".into()),
    );
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A short id unique to this run.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:04x}", std::process::id() % 0xfff, nanos % 0xffff)
}

/// Runs SQL on the PostgreSQL server of `url` (through `psql`).
fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (the PostgreSQL client)")?;
    ensure!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `url` with its database name replaced.
fn with_database(url: &str, db: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("database URL without scheme")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(format!("{scheme}://{authority}/{db}{query}"))
}

// ------------------------------------------------------------------ HTTP

/// A minimal HTTP/1.1 client for the API on loopback (one request per
/// connection, `Connection: close`), so the test needs no HTTP crate.
mod http {
    use super::*;

    /// A response.
    pub struct Response {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Response {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub fn json(&self) -> Result<Value> {
            serde_json::from_slice(&self.body)
                .with_context(|| format!("HTTP {} body is not JSON: {}", self.status, self.text()))
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Sends one request; `url` is `http://host:port/path`.
    pub fn request(
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("not an http:// URL: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut stream =
            TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some(t) = token {
            let _ = write!(head, "X-Auth-Token: {t}\r\n");
        }
        if body.is_some() {
            let _ = write!(
                head,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            );
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(payload.as_bytes())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        parse(&raw).with_context(|| format!("{method} {url}"))
    }

    fn parse(raw: &[u8]) -> Result<Response> {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().context("no status line")?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = raw[end + 4..].to_vec();
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        if chunked {
            body = dechunk(&body)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let eol = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("bad chunk header")?;
            let size_text = std::str::from_utf8(&data[..eol])?
                .split(';')
                .next()
                .unwrap_or("")
                .trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            data = &data[eol + 2..];
            if size == 0 {
                return Ok(out);
            }
            ensure!(data.len() >= size + 2, "truncated chunk");
            out.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }
}

// ------------------------------------------------------------------ the API client

/// The compute API as a user sees it.
struct Api {
    compute: String,
    token: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<http::Response> {
        http::request(
            method,
            &format!("{}{path}", self.compute),
            Some(&self.token),
            body,
        )
    }

    /// `GET /servers/ID`: the server, or None on 404.
    fn server(&self, id: &str) -> Result<Option<Value>> {
        let r = self.call("GET", &format!("/servers/{id}"), None)?;
        match r.status {
            200 => Ok(Some(r.json()?["server"].clone())),
            404 => Ok(None),
            s => bail!("GET /servers/{id}: HTTP {s}: {}", r.text()),
        }
    }

    fn action(&self, id: &str, body: Value) -> Result<()> {
        let r = self.call("POST", &format!("/servers/{id}/action"), Some(&body))?;
        ensure!(
            r.status == 202,
            "action {body} on server {id}: HTTP {}: {}",
            r.status,
            r.text()
        );
        Ok(())
    }

    fn create(&self, name: &str, image: &str, flavor: &str) -> Result<String> {
        Ok(self.create_with_password(name, image, flavor)?.0)
    }

    /// Creates a server; returns its id and `adminPass`.
    fn create_with_password(
        &self,
        name: &str,
        image: &str,
        flavor: &str,
    ) -> Result<(String, String)> {
        let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor}});
        let r = self.call("POST", "/servers", Some(&body))?;
        ensure!(
            r.status == 202,
            "create {name}: HTTP {}: {}",
            r.status,
            r.text()
        );
        let v = r.json()?;
        let id = v["server"]["id"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("create {name}: no server id in {v}"))?;
        let pass = v["server"]["adminPass"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("create {name}: no adminPass in {v}"))?;
        Ok((id, pass))
    }

    /// Polls until the server's status is `want` (or it is gone, for
    /// `want == "DELETED"`); fails at once on an unexpected ERROR.
    async fn wait_status(&self, id: &str, want: &str, procs: &mut Procs) -> Result<Value> {
        let deadline = Instant::now() + STATE_TIMEOUT;
        let mut last;
        loop {
            let server = self.server(id)?;
            match server {
                None if want == "DELETED" => return Ok(Value::Null),
                None => bail!("server {id} vanished while waiting for {want}"),
                Some(s) => {
                    let status = s["status"].as_str().unwrap_or_default().to_string();
                    if status == want {
                        return Ok(s);
                    }
                    if status == "ERROR" && want != "ERROR" {
                        bail!("server {id} went to ERROR while waiting for {want}: {s}");
                    }
                    last = s;
                }
            }
            procs.check_alive()?;
            if Instant::now() > deadline {
                bail!("server {id} not {want} after {STATE_TIMEOUT:?}; last seen: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every IPv4 address of a server (`addresses` of the API's server body).
fn server_ips(server: &Value) -> Vec<String> {
    server["addresses"]
        .as_object()
        .map(|nets| {
            nets.values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(|a| a["addr"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------ the run

/// What the test created, by name.
struct Fixture {
    prefix: String,
    user: String,
    project: String,
    password: String,
    image: String,
    flavor: String,
    flavor_too_big: String,
}

async fn run(lab: &Lab, t: &mut Timings) -> Result<()> {
    let id = run_id();
    let prefix = format!("lab{id}-");
    let work = tempfile::Builder::new()
        .prefix("synnefo-ganeti-lab-")
        .tempdir()
        .context("temp dir")?;
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    eprintln!(
        "[{TEST}] run {id}: prefix {prefix}, files in {}",
        work.path().display()
    );
    let mut cleanup = Cleanup::default();

    // ---- PostgreSQL: a fresh database.
    let t0 = Instant::now();
    let db_name = format!("synnefo_lab_{id}");
    let admin_url = pg_url();
    psql(&admin_url, &format!("CREATE DATABASE {db_name}"))?;
    {
        let admin_url = admin_url.clone();
        let db_name = db_name.clone();
        cleanup.push(format!("drop database {db_name}"), move || {
            psql(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"),
            )
        });
    }
    let db_url = with_database(&admin_url, &db_name)?;

    // ---- RabbitMQ: our queues go when we are done.
    {
        let prefix = prefix.clone();
        cleanup.push(format!("delete the {prefix} queues"), move || {
            delete_queues(&prefix)
        });
    }

    // ---- settings: one file for the host's services, one for the lab's.
    let api_port = free_port()?;
    let api_url = format!("http://127.0.0.1:{api_port}");
    let host_config = work.path().join("synnefo.toml");
    std::fs::write(&host_config, host_settings(lab, &prefix, &db_url, api_port))?;
    let lab_config = lab.synnefo_etc.join("synnefo.toml");
    let spool = work.path().join("eventd-spool");
    std::fs::write(&lab_config, lab_settings(lab, &prefix, &spool))?;
    {
        let lab_config = lab_config.clone();
        cleanup.push("remove the lab's synnefo.toml", move || {
            Ok(std::fs::remove_file(&lab_config).or_else(ignore_not_found)?)
        });
    }
    synnefo(&host_config, &["config", "check"])?;
    synnefo(&lab_config, &["config", "check"])?;
    t.record("setup: database, settings", t0.elapsed());

    let t0 = Instant::now();
    synnefo(&host_config, &["db", "migrate"])?;
    t.record("synnefo db migrate (PostgreSQL)", t0.elapsed());

    // ---- the catalog and the backend, through `synnefo admin`.
    let t0 = Instant::now();
    let fixture = admin_setup(&host_config, lab, &prefix)?;
    t.record(
        "synnefo admin: user, project, flavors, image, backend",
        t0.elapsed(),
    );

    // ---- the lab: a Ganeti network to take addresses from; the hook.
    let t0 = Instant::now();
    lab.ensure_network()?;
    let hook_links = install_hook(lab, &lab_config, &id)?;
    {
        let links = hook_links.clone();
        cleanup.push("remove the hook links", move || {
            for l in links {
                std::fs::remove_file(&l).or_else(ignore_not_found)?;
            }
            Ok(())
        });
    }
    {
        // Instances left by a failed run; cleanup runs before the DB is dropped.
        let ns = lab.ns.clone();
        let prefix = prefix.clone();
        cleanup.push(format!("remove leftover {prefix}* instances"), move || {
            remove_instances(&ns, &prefix)
        });
    }
    t.record("lab: Ganeti network, hook links", t0.elapsed());

    // ---- the services.
    let t0 = Instant::now();
    let mut procs = Procs::default();
    let mut eventd = lab.command(SYNNEFO);
    scrub_env(&mut eventd);
    eventd
        .env("SYNNEFO_CONFIG", "/etc/synnefo/synnefo.toml")
        .arg("eventd");
    procs.spawn("eventd", eventd, &logs)?;
    for n in 1..=2 {
        let mut d = synnefo_command(&host_config);
        d.arg("dispatcher");
        procs.spawn(&format!("dispatcher-{n}"), d, &logs)?;
    }
    let mut api = synnefo_command(&host_config);
    api.arg("api");
    procs.spawn("api", api, &logs)?;
    wait_http(&format!("{api_url}/healthz"), &mut procs).await?;
    t.record("start eventd (lab), 2 dispatchers, api", t0.elapsed());

    let result = scenario(lab, &api_url, &host_config, &fixture, &mut procs, t).await;
    if result.is_err() {
        // The guard prints the logs on panic; an Err is about to become one,
        // but print them now, next to the error.
        eprintln!("{}", procs.log_tails());
    }
    drop(procs);
    result
}

fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

async fn wait_http(url: &str, procs: &mut Procs) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http::request("GET", url, None, None)
            && r.status == 200
        {
            return Ok(());
        }
        procs.check_alive()?;
        ensure!(
            Instant::now() < deadline,
            "{url} did not answer 200 within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings of the host's api, dispatchers, admin and reconcile.
fn host_settings(lab: &Lab, prefix: &str, db_url: &str, api_port: u16) -> String {
    let (amqp_host, amqp_port) = host_port(&amqp_url(), 5672);
    format!(
        r#"# ganeti_lab test: host side
backend_prefix_id = "{prefix}"

[database]
url = "{db_url}"
max_connections = 8

[amqp]
host = "{amqp_host}"
port = {amqp_port}

[api]
listen = "127.0.0.1:{api_port}"
public_url = "http://127.0.0.1:{api_port}"

[ganeti]
default_disk_template = "diskless"
default_nic_network = "{LAB_NETWORK}"
hypervisor = "fake"
shutdown_timeout_secs = 30

[ganeti.clusters.lab]
host = "127.0.0.1"
port = {port}
username = "{user}"
password = "{password}"
ca_file = "{cert}"
timeout_secs = 60

[log]
level = "info"
"#,
        port = lab.rapi_port,
        user = lab.rapi_user,
        password = lab.rapi_password,
        cert = lab.rapi_cert.display(),
    )
}

/// Settings of eventd and the hook inside the lab (`/etc/synnefo/synnefo.toml`
/// there): the broker is the lab's 127.0.0.1:5672, forwarded to the host's.
fn lab_settings(lab: &Lab, prefix: &str, spool: &Path) -> String {
    format!(
        r#"# ganeti_lab test: inside the lab (eventd, the hook)
backend_prefix_id = "{prefix}"

[amqp]
host = "127.0.0.1"
port = 5672

[eventd]
queue_dir = "/var/lib/ganeti/queue"
master_node_file = "/var/lib/ganeti/ssconf_master_node"
node_name = "{node}"
spool_dir = "{spool}"
"#,
        node = lab.node,
        spool = spool.display(),
    )
}

/// Deletes the prefix's queues (`<prefix>-events-*`) from RabbitMQ.
fn delete_queues(prefix: &str) -> Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name"])
        .stdin(Stdio::null())
        .output()
        .context("rabbitmqctl list_queues")?;
    ensure!(
        out.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for q in String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|q| q.starts_with(prefix))
    {
        let st = Command::new("rabbitmqctl")
            .args(["-q", "delete_queue", q])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        ensure!(st.success(), "rabbitmqctl delete_queue {q}");
    }
    Ok(())
}

/// Removes every instance named `<prefix>*` from the lab (cleanup).
fn remove_instances(ns: &Path, prefix: &str) -> Result<()> {
    let out = Command::new(ns)
        .args(["gnt-instance", "list", "--no-headers", "-o", "name"])
        .stdin(Stdio::null())
        .output()?;
    for name in String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
    {
        let out = Command::new(ns)
            .args(["gnt-instance", "remove", "-f", name])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // A removal job of ours may have ended in between.
        ensure!(
            out.status.success() || text.contains("not known"),
            "gnt-instance remove {name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ admin + hook

/// Creates the user, project, flavors, image and the lab backend with
/// `synnefo admin`, as an operator would.
fn admin_setup(config: &Path, lab: &Lab, prefix: &str) -> Result<Fixture> {
    let user = format!("{prefix}user");
    let project = format!("{prefix}project");
    let password = "lab-password-1";
    synnefo(
        config,
        &[
            "admin",
            "users",
            "add",
            &user,
            "--password",
            password,
            "--project",
            &project,
            "--json",
        ],
    )?;
    let port = lab.rapi_port.to_string();
    synnefo(
        config,
        &[
            "admin",
            "backends",
            "add",
            "lab",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--json",
        ],
    )?;
    let flavor = |name: &str, disk: &str, template: &str| -> Result<String> {
        let out = synnefo(
            config,
            &[
                "admin",
                "flavors",
                "add",
                name,
                "--vcpus",
                "1",
                "--ram",
                "128",
                "--disk",
                disk,
                "--disk-template",
                template,
                "--json",
            ],
        )?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("admin flavors add --json printed {out:?}"))?;
        json_id(&v["id"]).with_context(|| format!("no flavor id in {v}"))
    };
    // Diskless: Ganeti skips the OS create script; the noop OS does nothing anyway.
    let tiny = flavor(&format!("{prefix}tiny"), "0", "diskless")?;
    // A 2 TiB file disk: above the instance policy's 1 TiB maximum, so Ganeti
    // accepts the job and the job fails in its prerequisites.
    let too_big = flavor(&format!("{prefix}too-big"), "2048", "file")?;
    let out = synnefo(
        config,
        &[
            "admin",
            "images",
            "add",
            &format!("{prefix}noop"),
            "--os-type",
            "noop+default",
            "--json",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)
        .with_context(|| format!("admin images add --json printed {out:?}"))?;
    let image = json_id(&v["id"]).with_context(|| format!("no image id in {v}"))?;
    Ok(Fixture {
        prefix: prefix.to_string(),
        user,
        project,
        password: password.to_string(),
        image,
        flavor: tiny,
        flavor_too_big: too_big,
    })
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path)
                        && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                    {
                        out.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// An id printed as a JSON number or string.
fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Links the hook into the lab's add/start/modify post-hook directories
/// with `synnefo ganeti-hook install` (the link points at the `synnefo`
/// binary, which the lab sees at the same path).
///
/// Links of earlier runs killed before their cleanup are removed first: they
/// would run with this run's settings (one lab serves one run at a time; its
/// `/etc/synnefo/synnefo.toml` is shared).
fn install_hook(lab: &Lab, lab_config: &Path, id: &str) -> Result<Vec<PathBuf>> {
    for phase in HOOK_PHASES {
        let dir = lab.hooks_dir.join(format!("{phase}.d"));
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let stale = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("50-synnefo-"));
            if stale && path.is_symlink() {
                eprintln!(
                    "[{TEST}] removing a hook link left by an earlier run: {}",
                    path.display()
                );
                std::fs::remove_file(&path)?;
            }
        }
    }
    let name = format!("50-synnefo-{id}");
    let hooks = lab.hooks_dir.display().to_string();
    synnefo(
        lab_config,
        &[
            "ganeti-hook",
            "install",
            "--hooks-dir",
            &hooks,
            "--name",
            &name,
        ],
    )?;
    let mut links = Vec::new();
    for phase in HOOK_PHASES {
        let link = lab.hooks_dir.join(format!("{phase}.d")).join(&name);
        let target = std::fs::read_link(&link)
            .with_context(|| format!("{} is not a symlink", link.display()))?;
        ensure!(
            target.canonicalize().ok() == Path::new(SYNNEFO).canonicalize().ok(),
            "{} points at {}, not at {SYNNEFO}",
            link.display(),
            target.display()
        );
        links.push(link);
    }
    Ok(links)
}

// ------------------------------------------------------------------ the scenario

/// Issues a Keystone token (password method, project scope) and finds the
/// compute endpoint in the catalog.
fn login(api_url: &str, fx: &Fixture) -> Result<Api> {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": fx.user, "domain": {"id": "default"}, "password": fx.password}}},
        "scope": {"project": {"name": fx.project, "domain": {"id": "default"}}}}});
    let r = http::request(
        "POST",
        &format!("{api_url}/identity/v3/auth/tokens"),
        None,
        Some(&body),
    )?;
    ensure!(
        r.status == 201,
        "POST /identity/v3/auth/tokens: HTTP {}: {}",
        r.status,
        r.text()
    );
    let token = r
        .header("x-subject-token")
        .context("no X-Subject-Token")?
        .to_string();
    let v = r.json()?;
    let compute = v["token"]["catalog"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|svc| svc["type"] == "compute")
        .and_then(|svc| {
            svc["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["interface"] == "public")
        })
        .and_then(|e| e["url"].as_str())
        .with_context(|| format!("no public compute endpoint in the catalog: {v}"))?
        .trim_end_matches('/')
        .to_string();
    Ok(Api { compute, token })
}

/// Ganeti's jobs with this summary (e.g. `INSTANCE_STARTUP(lab1-3)`): (id, status, oplog).
fn jobs(lab: &Lab, summary: &str) -> Result<Vec<(u64, String, String)>> {
    let out = lab.gnt(&[
        "gnt-job",
        "list",
        "--no-headers",
        "--separator=|",
        "-o",
        "id,status,summary,oplog",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '|');
            let id = f.next()?.trim().parse().ok()?;
            let status = f.next()?.trim().to_string();
            let sum = f.next()?.trim();
            let log = f.next().unwrap_or("").to_string();
            (sum == summary).then_some((id, status, log))
        })
        .collect())
}

/// Waits for the last Ganeti job with this summary to end; it must have
/// succeeded with no hook failure in its log. Returns its id.
async fn wait_job(lab: &Lab, summary: &str) -> Result<u64> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let js = jobs(lab, summary)?;
        if let Some((id, status, log)) = js.last() {
            match status.as_str() {
                "success" => {
                    ensure!(
                        !(log.contains("WARNING") && log.contains("failed")),
                        "a hook failed in Ganeti job {id} {summary}: {log}"
                    );
                    return Ok(*id);
                }
                "error" | "canceled" => bail!("Ganeti job {id} {summary} ended {status}: {log}"),
                _ => {}
            }
        }
        ensure!(
            Instant::now() < deadline,
            "Ganeti job {summary} not over after {STATE_TIMEOUT:?}: {js:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The DB's view of a server (`synnefo server show --json`), deleted ones included.
fn server_show(config: &Path, id: &str) -> Result<Value> {
    let out = synnefo(config, &["server", "show", id, "--json"])?;
    serde_json::from_str(&out)
        .with_context(|| format!("synnefo server show --json printed {out:?}"))
}

/// Waits until the DB records `operstate` for a server.
async fn wait_operstate(config: &Path, id: &str, operstate: &str) -> Result<()> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let doc = server_show(config, id)?;
        if doc["server"]["state"]["operstate"] == operstate {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "server {id} not {operstate} in the DB: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `synnefo reconcile --all --json`: (exit code, report).
fn reconcile_run(config: &Path, extra: &[&str]) -> Result<(Option<i32>, Value)> {
    let mut args = vec!["reconcile", "--all", "--json", "--no-progress"];
    args.extend_from_slice(extra);
    let out = synnefo_command(config)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running synnefo reconcile")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "synnefo {} ({}) printed no JSON report:\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), report))
}

/// [`reconcile_run`], whose exit code must be `code` (0 clean or all
/// fixed, 1 discrepancies remain).
fn reconcile(config: &Path, extra: &[&str], code: i32) -> Result<Value> {
    let (got, report) = reconcile_run(config, extra)?;
    ensure!(
        got == Some(code),
        "synnefo reconcile {} exited {got:?}, expected {code}; report: {report:#}",
        extra.join(" ")
    );
    Ok(report)
}

/// (kind, vm) of each discrepancy of a report, sorted.
fn discrepancies(report: &Value) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = report["discrepancies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("?").to_string(),
                json_id(&d["vm"]).unwrap_or_default(),
            )
        })
        .collect();
    d.sort();
    d
}

async fn scenario(
    lab: &Lab,
    api_url: &str,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
) -> Result<()> {
    let name_of = |id: &str| format!("{}{id}", fx.prefix);

    let t0 = Instant::now();
    let api = login(api_url, fx)?;
    t.record("keystone token", t0.elapsed());

    // ---- create -> ACTIVE, with the address Ganeti picked from the pool.
    let t0 = Instant::now();
    let (s1, admin_pass) = api.create_with_password("lab-one", &fx.image, &fx.flavor)?;
    t.record("POST /servers (202; RAPI create submitted)", t0.elapsed());
    let inst1 = name_of(&s1);
    let server = api.wait_status(&s1, "ACTIVE", procs).await?;
    t.record(
        "create -> ACTIVE (job, eventd, RabbitMQ, dispatcher)",
        t0.elapsed(),
    );
    wait_job(lab, &format!("INSTANCE_CREATE({inst1})")).await?;
    ensure!(
        lab.instance_status(&inst1)? == "running",
        "Ganeti does not run {inst1}"
    );
    let ganeti_ips = lab.gnt(&[
        "gnt-instance",
        "list",
        "--no-headers",
        "-o",
        "nic.ips",
        &inst1,
    ])?;
    let ganeti_ip = ganeti_ips.trim().to_string();
    ensure!(
        ganeti_ip.starts_with(LAB_SUBNET_PREFIX),
        "Ganeti gave {inst1} the address {ganeti_ip:?}"
    );
    let ips = wait_ips(&api, config, &s1, 1, procs)
        .await
        .map_err(|e| e.context(format!("server body was {server}")))?;
    ensure!(
        ips == vec![ganeti_ip.clone()],
        "the API shows {ips:?}, Ganeti {ganeti_ip}"
    );
    t.record("create -> ACTIVE with its IP", t0.elapsed());
    // The admin password reached Ganeti as osparams_secret: no file of
    // Ganeti's (job queue, archive, config) holds it.
    let leaks = files_containing(
        &PathBuf::from(env_var("SYNNEFO_TEST_GANETI_DATA_DIR")?),
        &admin_pass,
    );
    ensure!(
        leaks.is_empty(),
        "the admin password is stored by Ganeti in {leaks:?}"
    );

    // ---- stop -> SHUTOFF.
    let t0 = Instant::now();
    api.action(&s1, json!({"os-stop": null}))?;
    api.wait_status(&s1, "SHUTOFF", procs).await?;
    t.record("os-stop -> SHUTOFF", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_SHUTDOWN({inst1})")).await?;
    ensure!(
        lab.instance_status(&inst1)? == "ADMIN_down",
        "{inst1} is not ADMIN_down in Ganeti"
    );

    // ---- start -> ACTIVE (Ganeti runs instance-start-post: the hook).
    let t0 = Instant::now();
    api.action(&s1, json!({"os-start": null}))?;
    api.wait_status(&s1, "ACTIVE", procs).await?;
    t.record("os-start -> ACTIVE", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_STARTUP({inst1})")).await?;
    ensure!(
        lab.instance_status(&inst1)? == "running",
        "{inst1} is not running in Ganeti"
    );

    // ---- reboot -> ACTIVE (REBOOT while the job runs).
    let t0 = Instant::now();
    api.action(&s1, json!({"reboot": {"type": "SOFT"}}))?;
    api.wait_status(&s1, "ACTIVE", procs).await?;
    t.record("reboot SOFT -> ACTIVE", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_REBOOT({inst1})")).await?;

    // ---- delete -> 404.
    let t0 = Instant::now();
    let r = api.call("DELETE", &format!("/servers/{s1}"), None)?;
    ensure!(
        r.status == 204,
        "DELETE /servers/{s1}: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&s1, "DELETED", procs).await?;
    t.record("delete -> 404 (at once)", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_REMOVE({inst1})")).await?;
    wait_operstate(config, &s1, "DESTROYED").await?;
    t.record(
        "delete -> remove job done, DESTROYED in the DB",
        t0.elapsed(),
    );
    ensure!(
        lab.instances(&inst1)?.iter().all(|n| n != &inst1),
        "{inst1} is still in Ganeti"
    );

    // ---- a create Ganeti rejects -> ERROR with Ganeti's message as the fault.
    let t0 = Instant::now();
    let s2 = api.create("lab-too-big", &fx.image, &fx.flavor_too_big)?;
    let server = api.wait_status(&s2, "ERROR", procs).await?;
    t.record("rejected create -> ERROR", t0.elapsed());
    let fault = server["fault"]["message"].as_str().unwrap_or_default();
    ensure!(
        // Which check refuses first depends on the allocator (hail) or the
        // instance policy; either way the fault is Ganeti's own message.
        ["violates policy", "iallocator", "OpPrereqError"]
            .iter()
            .any(|m| fault.contains(m))
            && !fault.starts_with("Ganeti job"),
        "the fault does not carry Ganeti's message (the failed job's result): {server}"
    );
    let js = jobs(lab, &format!("INSTANCE_CREATE({})", name_of(&s2)))?;
    ensure!(
        js.last().is_some_and(|j| j.1 == "error"),
        "Ganeti's create job of {s2} did not fail: {js:?}"
    );
    let r = api.call("DELETE", &format!("/servers/{s2}"), None)?;
    ensure!(
        r.status == 204,
        "DELETE /servers/{s2}: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&s2, "DELETED", procs).await?;

    // ---- reconciliation against the real cluster.
    let t0 = Instant::now();
    let a = api.create("lab-stale", &fx.image, &fx.flavor)?;
    let b = api.create("lab-unsynced", &fx.image, &fx.flavor)?;
    api.wait_status(&a, "ACTIVE", procs).await?;
    api.wait_status(&b, "ACTIVE", procs).await?;
    wait_ips(&api, config, &b, 1, procs).await?;
    t.record("2 creates in parallel -> ACTIVE", t0.elapsed());
    let (inst_a, inst_b) = (name_of(&a), name_of(&b));

    // Nothing may tell the DB what happens now: eventd stops (a Ganeti
    // master without its watcher, or a lost broker). The hook still runs.
    procs.stop("eventd")?;

    // The hook alone: a NIC added by hand reaches the DB only through the
    // instance-modify-post hook (eventd is down).
    let t0 = Instant::now();
    lab.gnt(&[
        "gnt-instance",
        "modify",
        "--net",
        &format!("add:network={LAB_NETWORK},ip=pool"),
        &inst_b,
    ])?;
    let ips = wait_ips(&api, config, &b, 2, procs)
        .await
        .context("the hook's ganeti-net-status never arrived")?;
    let ganeti_ips = lab.gnt(&[
        "gnt-instance",
        "list",
        "--no-headers",
        "-o",
        "nic.ips",
        &inst_b,
    ])?;
    let mut want: Vec<String> = ganeti_ips.trim().split(',').map(String::from).collect();
    want.sort();
    ensure!(
        ips == want,
        "after the NIC add the API shows {ips:?}, Ganeti {want:?}"
    );
    t.record(
        "gnt-instance modify --net add -> hook -> 2 IPs in the API",
        t0.elapsed(),
    );
    wait_job(lab, &format!("INSTANCE_SET_PARAMS({inst_b})")).await?;

    // Drift behind our back.
    let t0 = Instant::now();
    lab.gnt(&["gnt-instance", "remove", "-f", &inst_a])?;
    lab.gnt(&["gnt-instance", "shutdown", &inst_b])?;
    let orphan_id = "999999";
    let orphan = name_of(orphan_id);
    lab.gnt(&[
        "gnt-instance",
        "add",
        "-t",
        "diskless",
        "-o",
        "noop+default",
        "-n",
        &lab.node,
        "-H",
        "fake",
        "-B",
        "memory=128,vcpus=1",
        "--net",
        &format!("0:network={LAB_NETWORK},ip=pool"),
        "--no-name-check",
        "--no-ip-check",
        &orphan,
    ])?;
    t.record("drift: gnt-instance remove, shutdown, add", t0.elapsed());

    let t0 = Instant::now();
    let report = reconcile(config, &[], 1)?;
    t.record("synnefo reconcile --all (report)", t0.elapsed());
    let mut want = vec![
        ("orphan".to_string(), orphan_id.to_string()),
        ("stale".to_string(), a.clone()),
        ("unsynced_operstate".to_string(), b.clone()),
    ];
    want.sort();
    ensure!(
        discrepancies(&report) == want,
        "reconcile reported {:?}, expected exactly {want:?}; report: {report:#}",
        discrepancies(&report)
    );

    let t0 = Instant::now();
    let report = reconcile(
        config,
        &["--fix-stale", "--fix-orphans", "--fix-unsynced"],
        0,
    )?;
    t.record("synnefo reconcile --all --fix-* (repair)", t0.elapsed());
    let fixes = report["fixes"].as_array().cloned().unwrap_or_default();
    ensure!(
        fixes.len() == 3 && fixes.iter().all(|f| f["result"] == "done"),
        "not every fix was done: {report:#}"
    );
    ensure!(
        api.server(&a)?.is_none(),
        "server {a} (removed behind our back) still exists"
    );
    let sb = api
        .server(&b)?
        .with_context(|| format!("server {b} vanished"))?;
    ensure!(
        sb["status"] == "SHUTOFF",
        "server {b} is not SHUTOFF after the fix: {sb}"
    );

    // The orphan's removal is a Ganeti job: wait for it, then a clean report.
    let t0 = Instant::now();
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (_, report) = reconcile_run(config, &[])?;
        let left = discrepancies(&report);
        if left.is_empty() && lab.instances(&orphan)?.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still not clean after the fixes: {left:?}; {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    t.record("orphan removed, reconcile report clean", t0.elapsed());

    // eventd comes back and catches up on the jobs it missed; the last
    // server goes through the API, and the final report is still clean.
    let t0 = Instant::now();
    let mut eventd = lab.command(SYNNEFO);
    scrub_env(&mut eventd);
    eventd
        .env("SYNNEFO_CONFIG", "/etc/synnefo/synnefo.toml")
        .arg("eventd");
    procs.spawn("eventd-2", eventd, &procs_log_dir(procs)?)?;
    let r = api.call("DELETE", &format!("/servers/{b}"), None)?;
    ensure!(
        r.status == 204,
        "DELETE /servers/{b}: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&b, "DELETED", procs).await?;
    wait_job(lab, &format!("INSTANCE_REMOVE({inst_b})")).await?;
    wait_operstate(config, &b, "DESTROYED").await?;
    t.record(
        "eventd restarted (catch-up), delete -> DESTROYED",
        t0.elapsed(),
    );
    let left = lab.instances(&fx.prefix)?;
    ensure!(left.is_empty(), "instances left in Ganeti: {left:?}");
    let report = reconcile(config, &[], 0)?;
    ensure!(
        discrepancies(&report).is_empty(),
        "final report not clean: {report:#}"
    );
    procs.check_alive()?;
    Ok(())
}

/// Where the processes' logs go.
fn procs_log_dir(procs: &Procs) -> Result<PathBuf> {
    procs
        .logs
        .first()
        .and_then(|(_, p)| p.parent())
        .map(Path::to_path_buf)
        .context("no log directory")
}

/// Waits until the API shows `n` addresses for a server, all from the lab
/// network; returns them sorted.
async fn wait_ips(
    api: &Api,
    config: &Path,
    id: &str,
    n: usize,
    procs: &mut Procs,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let server = api
            .server(id)?
            .with_context(|| format!("server {id} vanished"))?;
        let mut ips = server_ips(&server);
        if ips.len() == n {
            ips.sort();
            ensure!(
                ips.iter().all(|ip| ip.starts_with(LAB_SUBNET_PREFIX)),
                "server {id} has addresses outside {LAB_SUBNET}: {ips:?}"
            );
            return Ok(ips);
        }
        procs.check_alive()?;
        if Instant::now() > deadline {
            let db = server_show(config, id)
                .map_or_else(|e| format!("{e:#}"), |d| d["nics"].to_string());
            bail!(
                "server {id} does not show {n} address(es) after {STATE_TIMEOUT:?}; NICs in the DB: {db}; server: {server}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
