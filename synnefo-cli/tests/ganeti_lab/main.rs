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

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use synnefo_test_support::api::ApiClient;
use synnefo_test_support::db::with_database;
use synnefo_test_support::wait::free_port;
use synnefo_test_support::{amqp_url, pg_url, service_unavailable};

mod api_networks;
mod client;
mod issue17;
mod lifecycle;
mod networks;
mod scenario;
mod setup;

use client::*;
use scenario::*;
use setup::*;

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
    /// 1 vCPU, 128 MiB, a 1 GiB `file` disk (issue 17: grow-disk, modify -B).
    flavor_file: String,
    /// The same with 2 vCPUs and 256 MiB: what `modify -B vcpus=2,maxmem=256` makes of it.
    flavor_file_2: String,
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
    let db_url = with_database(&admin_url, &db_name);

    // ---- RabbitMQ: our queues go when we are done.
    {
        let prefix = prefix.clone();
        cleanup.push(format!("delete the {prefix} queues"), move || {
            delete_queues(&prefix)
        });
    }

    // ---- settings: one file for the host's services, one for the lab's.
    let api_port = free_port();
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

    let mut result = scenario(lab, &api_url, &host_config, &fixture, &mut procs, t).await;
    if result.is_ok() {
        // Networks through the API (Neutron, Nova `networks`, os-interface)
        // and their reconciliation, on the same services.
        result =
            api_networks::api_networks(lab, &api_url, &host_config, &fixture, &mut procs, t).await;
    }
    if result.is_ok() {
        // Issue 17: tags, disk grow, modify -B behind the API, eventd's
        // messages as Synnefo's, no dead letter, the flavor following.
        result = issue17::issue17(lab, &api_url, &host_config, &fixture, &mut procs, t).await;
    }
    if result.is_ok() {
        // Issue 16: resize of a running and of a stopped server, as
        // `gnt-instance list` and the hypervisor show it.
        result = lifecycle::lifecycle(lab, &api_url, &host_config, &fixture, &mut procs, t).await;
    }
    if result.is_err() {
        // The guard prints the logs on panic; an Err is about to become one,
        // but print them now, next to the error.
        eprintln!("{}", procs.log_tails());
    }
    drop(procs);
    result?;
    // Ganeti networks and NICs through the port itself, once the services are down.
    networks::network_ops(lab, &prefix, t).await
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
        if ApiClient::new(url, Duration::from_secs(10))
            .status("")
            .await
            == Ok(200)
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

# The lab has no bridge: networks are routed on link 100, like its default NIC.
[network.flavors.MAC_FILTERED]
mode = "routed"
link = "100"

[network.flavors.IP_LESS_ROUTED]
mode = "routed"
link = "100"

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

/// Deletes the prefix's queues from RabbitMQ over AMQP (no `rabbitmqctl`:
/// the broker need not be a local process). Runs on a thread of its own
/// with its own runtime, so it works from sync cleanup code whether or not
/// a runtime is current.
fn delete_queues(prefix: &str) -> Result<()> {
    let prefix = prefix.to_string();
    std::thread::spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let config = synnefo_amqp::AmqpConfig::new(amqp_url(), prefix);
            let bus = synnefo_amqp::AmqpBus::connect(config).await?;
            bus.delete_queues().await?;
            bus.close().await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow!("the queue deletion thread panicked"))?
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
