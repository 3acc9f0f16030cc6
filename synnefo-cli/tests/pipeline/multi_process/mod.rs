//! The multi-process test of issue 9: the seed's node types as separate
//! `synnefo` processes on real PostgreSQL and RabbitMQ, one API and one
//! dispatcher SIGKILLed midway, and nothing lost.
//!
//! ```text
//! round-robin client --HTTP--> synnefo api  x2 --RAPI--> synnefo ganeti-sim
//!   ganeti-sim's job queue --> synnefo eventd --AMQP--> RabbitMQ
//!   RabbitMQ --> synnefo dispatcher x2 --> PostgreSQL <-- synnefo api x2
//! ```
//!
//! A client that behaves like a load balancer sends every request to the
//! next API in turn (a connection refused, i.e. a request never delivered,
//! goes to the other one). 100 servers, 25 at a time, are each created
//! (waited ACTIVE), stopped (SHUTOFF), started (ACTIVE) and deleted (gone).
//! Once 40 servers are created, while writes are in flight on it, one `api`
//! and one `dispatcher` are SIGKILLed. A request cut off in flight is
//! resolved as a careful client would: a create looks the server up by its
//! unique name before creating again; an action re-reads the state and
//! re-issues only if the target state is not reached (a 409 on a server
//! already there counts as done); a delete re-reads.
//!
//! The proof ("nothing lost"): every server went through its whole
//! lifecycle; the API lists none; every VM row in the database is deleted
//! and DESTROYED (no BUILD or other live state left); the simulator has no
//! instance with our prefix; our RabbitMQ queues drain with no dead
//! letters; the surviving api, dispatcher, eventd and simulator still run
//! and stop cleanly on SIGTERM.
//!
//! An API killed between storing a VM and submitting its Ganeti job (or
//! between marking a VM deleted and submitting the removal) leaves a VM that
//! only reconciliation can settle: a VM stranded in BUILD, or an instance
//! left running for a VM already deleted. The test then runs `synnefo
//! reconcile --all --fix-all --stuck-after 0` as the operator would (who
//! knows the API died, so does not wait out the 15-minute guard meant for
//! an API still submitting), says so loudly in its output, and fails unless
//! that settles it; a stranded server is then deleted by its user and lived
//! again from a new create. Everything else must settle on its own.
//!
//! Reconciliation turns a stranded VM to ERROR; its user's delete then has
//! no instance to remove, and the VM must still end deleted and DESTROYED
//! like every other (no row may stay deleted but in ERROR: a removal of an
//! instance Ganeti does not have counts as a removal, as in the seed's
//! `process_op_status`).
//!
//! A SKIPPED line without PostgreSQL or RabbitMQ (a failure under
//! `CI=true`). Isolation: its own database and instance-name prefix (hence
//! routing keys and queues); processes are killed and queues deleted when
//! the test ends, also on failure (process logs are then printed and kept).

mod client;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::model::Vm;
use synnefo_core::ports::{VmQuery, VmStore};
use synnefo_core::state::OperState;
use synnefo_core::store::SeaStore;
use synnefo_test_support::api::{error_chain, json_id};
use synnefo_test_support::process::Proc;
use synnefo_test_support::wait::free_port;
use synnefo_test_support::{amqp_url, service_unavailable};

use crate::support::{SYNNEFO, TestDb, one_at_a_time, start, unique_prefix, write_config};
use client::{Client, Outcome, Stats};
use synnefo_ganeti::rapi::{RapiClient, RapiConfig};

const TEST: &str = "multi_process";
/// Servers taken through the whole lifecycle.
const SERVERS: usize = 100;
/// Lifecycles running at the same time.
const CONCURRENCY: usize = 25;
/// The kill comes once this many servers are created.
const KILL_AFTER_CREATED: usize = 40;
/// The API that is killed (index into [`API_NAMES`]).
const VICTIM_API: usize = 1;
const API_NAMES: [&str; 2] = ["api-a", "api-b"];
/// The dispatcher that is killed.
const VICTIM_DISPATCHER: &str = "dispatcher-a";
/// Longest wait for a state a job leads to.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// A server whose create was cut off and that is still in BUILD this long
/// after it was found is stranded (the simulator's jobs take ~30 ms).
const STRANDED_AFTER: Duration = Duration::from_secs(10);
/// After a cut-off action, how long to wait for its effect before issuing
/// it again.
const SETTLE: Duration = Duration::from_secs(5);
/// Status polling period.
const POLL: Duration = Duration::from_millis(150);

// ------------------------------------------------------------------ entry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_two_dispatchers_100_servers_one_api_and_one_dispatcher_killed() {
    let _heavy = one_at_a_time().await;
    let t0 = Instant::now();
    let prefix = unique_prefix();
    let Some(db) = TestDb::postgres(TEST).await else {
        return;
    };
    let store = db.store.clone();
    let bus = match AmqpBus::connect(AmqpConfig::new(amqp_url(), &prefix)).await {
        Ok(b) => b,
        Err(e) => return service_unavailable(TEST, "RabbitMQ", &e.to_string()),
    };
    let _queues = QueueCleanup(prefix.clone());
    let dir = tempfile::Builder::new()
        .prefix("synnefo-multi-process-")
        .tempdir()
        .expect("temp dir");
    eprintln!(
        "[{TEST}] prefix {prefix}, database {}, files in {}",
        db.url.rsplit('/').next().unwrap_or_default(),
        dir.path().display()
    );
    let mut svc = Services::default();
    let result = run(&prefix, &db.url, &store, &bus, dir.path(), &mut svc).await;
    bus.close().await;
    if let Err(e) = result {
        eprintln!("{}", svc.log_tails(80));
        drop(svc);
        let kept = dir.keep();
        panic!(
            "{TEST} failed: {e}\n(full process logs kept in {})",
            kept.display()
        );
    }
    eprintln!("[{TEST}] passed in {:.1} s", t0.elapsed().as_secs_f64());
    drop(store);
    drop(db);
}

/// Deletes our queues from RabbitMQ when dropped (also on failure).
struct QueueCleanup(String);

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Drop runs inside the test's runtime: do the async work elsewhere.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let bus = AmqpBus::connect(AmqpConfig::new(amqp_url(), &prefix))
                    .await
                    .ok()?;
                let _ = bus.delete_queues().await;
                bus.close().await;
                Some(())
            })
        })
        .join();
    }
}

// ------------------------------------------------------------------ processes

/// The `synnefo` processes of the test, by name (killed when dropped).
#[derive(Default)]
struct Services {
    procs: Vec<Proc>,
}

impl Services {
    fn start(&mut self, name: &str, dir: &Path, config: &Path, args: &[&str]) {
        self.procs.push(start(name, dir, config, args));
    }

    fn get(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Fails if one of `names` is not running.
    fn check_running(&mut self, names: &[&str]) -> Result<(), String> {
        for n in names {
            let p = self.get(n);
            if !p.running() {
                return Err(format!("{n} died; its log:\n{}", p.log_text()));
            }
        }
        Ok(())
    }

    /// The last `n` lines of every log.
    fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text = p.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            out.push_str(&format!(
                "----- {} ({}), last {} of {} lines\n",
                p.name,
                p.log.display(),
                lines.len() - from,
                lines.len()
            ));
            for l in &lines[from..] {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        // A panic inside the run (not one of its errors, which print the
        // logs themselves): show what the processes said.
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(80));
        }
    }
}

/// `synnefo ... --json` that must succeed: its JSON output.
fn synnefo_json(config: &Path, args: &[&str]) -> Result<Value, String> {
    synnefo_test_support::process::synnefo_json(SYNNEFO, config, args)
}

/// Starts an API on a free port; waits until it listens and answers
/// `/healthz`. Returns its base URL.
async fn start_api(
    svc: &mut Services,
    name: &str,
    dir: &Path,
    config: &Path,
    http: &reqwest::Client,
) -> Result<String, String> {
    // A port taken between our probe and the API's bind: try another.
    for _ in 0..3 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        svc.start(
            name,
            dir,
            config,
            &["api", "--listen", &listen, "--no-console"],
        );
        // The log line comes after the bind: then /healthz is ours.
        match svc
            .get(name)
            .wait_log_line("compute API listening", Duration::from_secs(30))
            .await
        {
            Ok(_) => {}
            Err(e) if e.contains("cannot listen") => {
                eprintln!("[{TEST}] {name}: port {port} was taken, trying another");
                svc.procs.retain(|p| p.name != name);
                continue;
            }
            Err(e) => return Err(e),
        }
        let base = format!("http://{listen}");
        let r = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map_err(|e| format!("{base}/healthz: {}", error_chain(&e)))?;
        if !r.status().is_success() {
            return Err(format!("{base}/healthz: HTTP {}", r.status()));
        }
        return Ok(base);
    }
    Err(format!("{name}: no free port in 3 attempts"))
}

// ------------------------------------------------------------------ checks

/// Every VM row, deleted ones included.
async fn all_vms(store: &SeaStore) -> Result<Vec<Vm>, String> {
    store
        .list_vms(&VmQuery {
            include_deleted: true,
            ..VmQuery::default()
        })
        .await
        .map_err(|e| format!("listing VMs: {e}"))
}

/// One VM row for messages.
fn describe(v: &Vm) -> String {
    format!(
        "{} {} {:?} deleted={} action={:?} job={:?}",
        v.id,
        v.name,
        v.state.operstate(),
        v.state.deleted(),
        v.state.action(),
        v.state.job()
    )
}

/// Waits until every VM row is deleted and DESTROYED. Returns the rows
/// that are not.
async fn wait_settled(store: &SeaStore, timeout: Duration) -> Result<Vec<Vm>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<Vm> = all_vms(store)
            .await?
            .into_iter()
            .filter(|v| !(v.state.deleted() && v.state.operstate() == OperState::Destroyed))
            .collect();
        // A deleted VM whose removal was never submitted (the API died in
        // between) and that nothing touched for a while will not settle
        // by itself: no point waiting for it.
        let stuck = |v: &Vm| {
            v.state.deleted()
                && v.state.action().is_some_and(|a| a.job_id.is_none())
                && chrono::Utc::now() - v.updated > chrono::TimeDelta::seconds(5)
        };
        if left.iter().all(stuck) || Instant::now() > deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The simulator's instances with our prefix.
async fn sim_instances(rapi: &RapiClient, prefix: &str) -> Result<Vec<String>, String> {
    Ok(rapi
        .instances()
        .await
        .map_err(|e| format!("listing the simulator's instances: {e}"))?
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// `synnefo reconcile --all --json` as the operator runs it, with the
/// "stuck" guard at zero: the operator knows the API died, so a VM with no
/// job recorded is not an API still submitting one. Returns the report.
fn operator_reconcile(config: &Path, fix: bool) -> Result<Value, String> {
    let mut args = vec![
        "reconcile",
        "--all",
        "--json",
        "--no-progress",
        "--stuck-after",
        "0",
    ];
    if fix {
        args.push("--fix-all");
    }
    let (code, out, err) = synnefo_test_support::process::run_synnefo(SYNNEFO, config, &args)?;
    let report: Value = serde_json::from_str(&out).map_err(|e| {
        format!(
            "synnefo {} exited {code:?} with no JSON report ({e}):\n{out}{err}",
            args.join(" ")
        )
    })?;
    let found: Vec<String> = report["discrepancies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    let fixes: Vec<String> = report["fixes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    eprintln!(
        "[{TEST}] !!!!! OPERATOR: synnefo {} -> exit {code:?}\n    discrepancies: {found:#?}\n    fixes: {fixes:#?}",
        args.join(" ")
    );
    if fix && code != Some(0) {
        return Err(format!(
            "synnefo {} exited {code:?} (fixes incomplete): {report:#}",
            args.join(" ")
        ));
    }
    Ok(report)
}

// ------------------------------------------------------------------ the run

async fn run(
    prefix: &str,
    db_url: &str,
    store: &SeaStore,
    bus: &AmqpBus,
    dir: &Path,
    svc: &mut Services,
) -> Result<(), String> {
    let t_setup = Instant::now();
    let http = reqwest::Client::builder()
        // One connection per request: only a request really in flight is
        // cut off when its API dies, never one on a stale pooled connection.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;

    // ---- the simulator: plain HTTP on a port it picks, a RAPI user.
    let rapi_password = uuid::Uuid::new_v4().simple().to_string();
    let sim_data = dir.join("sim");
    let config = write_config(dir, db_url, &amqp_url(), prefix, "");
    svc.start(
        "ganeti-sim",
        dir,
        &config,
        &[
            "ganeti-sim",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            sim_data.to_str().unwrap_or_default(),
            "--cluster-name",
            "multi.sim",
            "--user",
            &format!("synnefo:{rapi_password}"),
        ],
    );
    let line = svc
        .get("ganeti-sim")
        .wait_log_line("listening on http://", Duration::from_secs(20))
        .await?;
    let sim_url = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| format!("no URL in {line:?}"))?
        .to_string();
    let sim_port: u16 = sim_url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| format!("no port in {sim_url:?}"))?;
    let rapi = RapiClient::new(RapiConfig::new(&sim_url).credentials("synnefo", &rapi_password))
        .map_err(|e| e.to_string())?;

    // ---- settings of every other process: the simulator as a cluster
    // over plain HTTP (`https = false`).
    let config = write_config(
        dir,
        db_url,
        &amqp_url(),
        prefix,
        &format!(
            "[ganeti.clusters.sim]\nhost = \"127.0.0.1\"\nport = {sim_port}\nusername = \"synnefo\"\npassword = \"{rapi_password}\"\nhttps = false\ntimeout_secs = 15\n"
        ),
    );

    // ---- the catalog, as an operator sets it up.
    let (user, project, password) = ("mp-user", "mp-project", "multi-process-pw");
    synnefo_json(
        &config,
        &[
            "admin",
            "users",
            "add",
            user,
            "--password",
            password,
            "--project",
            project,
            "--json",
        ],
    )?;
    synnefo_json(
        &config,
        &[
            "admin",
            "backends",
            "add",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            &sim_port.to_string(),
            "--json",
        ],
    )?;
    let flavor = synnefo_json(
        &config,
        &[
            "admin", "flavors", "add", "mp-tiny", "--vcpus", "1", "--ram", "128", "--disk", "1",
            "--json",
        ],
    )?;
    let flavor = json_id(&flavor["id"]).ok_or_else(|| format!("no flavor id in {flavor}"))?;
    let image = synnefo_json(
        &config,
        &[
            "admin",
            "images",
            "add",
            "mp-image",
            "--os-type",
            "snf-image+default",
            "--json",
        ],
    )?;
    let image = json_id(&image["id"]).ok_or_else(|| format!("no image id in {image}"))?;
    eprintln!(
        "[{TEST}] setup (simulator at {sim_url}, catalog): {:.2} s",
        t_setup.elapsed().as_secs_f64()
    );

    // ---- the services.
    let t_start = Instant::now();
    let spool = dir.join("eventd-spool");
    let queue = sim_data.join("queue");
    svc.start(
        "eventd",
        dir,
        &config,
        &[
            "eventd",
            "--queue-dir",
            queue.to_str().unwrap_or_default(),
            "--spool-dir",
            spool.to_str().unwrap_or_default(),
            "--always-master",
        ],
    );
    svc.start("dispatcher-a", dir, &config, &["dispatcher"]);
    svc.start("dispatcher-b", dir, &config, &["dispatcher"]);
    let mut apis = Vec::new();
    for name in API_NAMES {
        apis.push(start_api(svc, name, dir, &config, &http).await?);
    }
    for d in ["dispatcher-a", "dispatcher-b"] {
        svc.get(d)
            .wait_log_line("dispatcher starting", Duration::from_secs(20))
            .await?;
    }
    svc.get("eventd")
        .wait_log_line("eventd starting", Duration::from_secs(20))
        .await?;
    svc.check_running(&["ganeti-sim", "eventd", "dispatcher-a", "dispatcher-b"])?;
    eprintln!(
        "[{TEST}] eventd, 2 dispatchers, 2 APIs ({}) up: {:.2} s",
        apis.join(", "),
        t_start.elapsed().as_secs_f64()
    );

    let client = Arc::new(Client {
        http,
        apis,
        next: AtomicUsize::new(0),
        token: OnceLock::new(),
        image,
        flavor,
        in_flight_writes: Default::default(),
        stats: Stats::default(),
        notes: Mutex::default(),
        cut_creates: Mutex::default(),
        cut_deletes: Mutex::default(),
    });
    client.login(user, password, project).await?;

    // ---- the workload, and the kill midway.
    let t_work = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=SERVERS {
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let name = format!("srv-{i:03}");
            let outcome = client.lifecycle(&name).await;
            (name, outcome)
        });
    }
    let kill_deadline = Instant::now() + STATE_TIMEOUT;
    while client.stats.created.load(Relaxed) < KILL_AFTER_CREATED {
        if Instant::now() > kill_deadline || tasks.is_empty() {
            return Err(format!(
                "only {} servers created after {STATE_TIMEOUT:?}",
                client.stats.created.load(Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Aim at writes in flight on the victim (the hard case), a few seconds at most.
    let aim = Instant::now() + Duration::from_secs(3);
    while client.in_flight_writes[VICTIM_API].load(Relaxed) < 3 && Instant::now() < aim {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "[{TEST}] SIGKILL {} ({} writes in flight, {} requests served) and {VICTIM_DISPATCHER} at {:.2} s, {} servers created",
        API_NAMES[VICTIM_API],
        client.in_flight_writes[VICTIM_API].load(Relaxed),
        client.stats.served[VICTIM_API].load(Relaxed),
        t_work.elapsed().as_secs_f64(),
        client.stats.created.load(Relaxed)
    );
    svc.get(API_NAMES[VICTIM_API]).kill();
    svc.get(VICTIM_DISPATCHER).kill();

    let mut errors = Vec::new();
    let mut stranded = Vec::new();
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((_, Ok(Outcome::Done))) => done += 1,
            Ok((name, Ok(Outcome::Stranded { id }))) => stranded.push((name, id)),
            Ok((name, Err(e))) => errors.push(format!("{name}: {e}")),
            Err(e) => errors.push(format!("lifecycle task: {e}")),
        }
    }
    eprintln!(
        "[{TEST}] workload: {done} lifecycles done, {} stranded, {} failed in {:.2} s",
        stranded.len(),
        errors.len(),
        t_work.elapsed().as_secs_f64()
    );
    if !errors.is_empty() {
        return Err(format!(
            "{} lifecycles failed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        ));
    }

    // ---- stranded creates: only the operator's reconciliation settles them.
    let mut used_reconcile = Vec::new();
    if !stranded.is_empty() {
        let t = Instant::now();
        eprintln!(
            "[{TEST}] !!!!! {} server(s) stranded in BUILD by the API's death mid-create: {stranded:?}; \
             running the operator's reconciliation",
            stranded.len()
        );
        operator_reconcile(&config, false)?;
        operator_reconcile(&config, true)?;
        used_reconcile.push(format!("stranded creates {stranded:?}"));
        for (name, id) in &stranded {
            match client.status(id).await? {
                None => client.note(name, format!("{id} settled by reconciliation (gone)")),
                Some(s) if s == "BUILD" => {
                    return Err(format!(
                        "{name} ({id}) still BUILD after `synnefo reconcile --fix-all`"
                    ));
                }
                Some(s) => {
                    client.note(
                        name,
                        format!("{id} is {s} after reconciliation: deleting it"),
                    );
                    client.delete(name, id).await?;
                }
            }
            // The user's server still has to live its life.
            match client.lifecycle(name).await? {
                Outcome::Done => {}
                Outcome::Stranded { id } => return Err(format!("{name} ({id}) stranded twice")),
            }
        }
        eprintln!(
            "[{TEST}] stranded servers settled and re-run: {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }

    // ---- nothing lost: the API, the database, the simulator, the queues.
    let t_check = Instant::now();
    let (status, listed) = client.get("/v2.1/servers").await?;
    let listed: Vec<Value> = listed["servers"].as_array().cloned().unwrap_or_default();
    if status != 200 || !listed.is_empty() {
        return Err(format!(
            "the API still lists servers (HTTP {status}): {listed:?}"
        ));
    }
    let mut left = wait_settled(store, Duration::from_secs(30)).await?;
    let mut orphans = sim_instances(&rapi, prefix).await?;
    if !left.is_empty() || !orphans.is_empty() {
        // Allowed only for deletes cut off in flight: the API marked the VM
        // deleted, then died before it submitted the removal.
        let cut = client.cut_deletes.lock().expect("set").clone();
        let explained = left.iter().all(|v| cut.contains(&v.id.to_string()))
            && orphans
                .iter()
                .all(|o| cut.contains(o.strip_prefix(prefix).unwrap_or_default()));
        let rows: Vec<String> = left.iter().map(describe).collect();
        if !explained {
            return Err(format!(
                "not settled 30 s after the workload: VMs {rows:#?}; instances in the simulator {orphans:?}; cut-off deletes {cut:?}"
            ));
        }
        eprintln!(
            "[{TEST}] !!!!! deletes cut off by the API's death left VMs {rows:#?} and instances {orphans:?}; \
             running the operator's reconciliation"
        );
        operator_reconcile(&config, false)?;
        operator_reconcile(&config, true)?;
        used_reconcile.push(format!(
            "cut-off deletes: VMs {rows:?}, instances {orphans:?}"
        ));
        left = wait_settled(store, Duration::from_secs(30)).await?;
        orphans = sim_instances(&rapi, prefix).await?;
    }
    if !left.is_empty() {
        let rows: Vec<String> = left.iter().map(describe).collect();
        return Err(format!(
            "VMs not deleted and DESTROYED in the database: {rows:#?}"
        ));
    }
    if !orphans.is_empty() {
        return Err(format!("instances left in the simulator: {orphans:?}"));
    }
    let rows = all_vms(store).await?.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    let depths = loop {
        let d = bus.queue_depths().await.map_err(|e| e.to_string())?;
        if (d.op == 0 && d.net == 0) || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if depths.dead != 0 {
        let dead = bus
            .dead_letters(20, false)
            .await
            .map_err(|e| e.to_string())?;
        return Err(format!("{} dead letters: {dead:?}", depths.dead));
    }
    if depths.op != 0 || depths.net != 0 {
        return Err(format!("queues did not drain: {depths:?}"));
    }
    eprintln!(
        "[{TEST}] checks (API lists none; {rows} VM rows, all deleted and DESTROYED; simulator empty; queues drained): {:.2} s",
        t_check.elapsed().as_secs_f64()
    );

    // ---- the survivors run, and stop cleanly.
    let survivors = [
        API_NAMES[1 - VICTIM_API],
        "dispatcher-b",
        "eventd",
        "ganeti-sim",
    ];
    svc.check_running(&survivors)?;
    let t_stop = Instant::now();
    for name in survivors {
        let p = svc.get(name);
        let st = p.terminate(Duration::from_secs(20));
        if !st.is_some_and(|s| s.success()) {
            return Err(format!(
                "{name} did not stop cleanly on SIGTERM ({st:?}):\n{}",
                p.log_text()
            ));
        }
        if let Some(l) = p.log_text().lines().find(|l| l.contains("stopped")) {
            eprintln!("[{TEST}] {name}: {l}");
        }
    }
    eprintln!(
        "[{TEST}] survivors stopped on SIGTERM: {:.2} s",
        t_stop.elapsed().as_secs_f64()
    );

    // ---- the numbers.
    let s = &client.stats;
    let per_api = |c: &[AtomicU64; 2]| {
        format!(
            "{}={} {}={}",
            API_NAMES[0],
            c[0].load(Relaxed),
            API_NAMES[1],
            c[1].load(Relaxed)
        )
    };
    eprintln!(
        "[{TEST}] requests answered: {}; refused (sent to the other): {}; cut off in flight: {}; 409s: {}",
        per_api(&s.served),
        per_api(&s.refused),
        per_api(&s.cut_off),
        s.conflicts.load(Relaxed)
    );
    let notes = client.notes.lock().expect("notes").clone();
    eprintln!("[{TEST}] servers with a cut-off request: {}", notes.len());
    for (name, n) in &notes {
        eprintln!("    {name}: {}", n.join("; "));
    }
    if used_reconcile.is_empty() {
        eprintln!("[{TEST}] everything settled without reconciliation");
    } else {
        eprintln!(
            "[{TEST}] !!!!! settled only by `synnefo reconcile --all --fix-all --stuck-after 0`: {used_reconcile:?}"
        );
    }
    if s.served[VICTIM_API].load(Relaxed) == 0 || s.refused[VICTIM_API].load(Relaxed) == 0 {
        return Err(format!(
            "the round robin did not use {} before and after its death: {}",
            API_NAMES[VICTIM_API],
            per_api(&s.refused)
        ));
    }
    Ok(())
}
