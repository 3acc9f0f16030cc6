//! Shared plumbing of the `pipeline_*` end-to-end tests: a throwaway
//! PostgreSQL database, a settings file, `synnefo` child processes that are
//! killed when the test ends (also on panic), and op-status scenarios with
//! their in-order expectation.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use synnefo_core::ids::{FlavorId, VmId};
use synnefo_core::messages::{Notification, decode};
use synnefo_core::model::{Flavor, NewVm, Quota};
use synnefo_core::ports::{CatalogStore, IdentityStore, VmStore};
use synnefo_core::state::{OperState, Transition, VmState, apply_op_status};
use synnefo_core::store::SeaStore;
use synnefo_core::testing::{amqp_url, pg_url, service_unavailable};

/// The `synnefo` binary under test.
pub const SYNNEFO: &str = env!("CARGO_BIN_EXE_synnefo");

/// A unique instance-name prefix: our own routing keys and queues.
pub fn unique_prefix() -> String {
    format!("p{}-", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

// ------------------------------------------------------------- database

/// A fresh PostgreSQL database, dropped when this goes out of scope.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    admin_url: String,
    name: String,
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..]
        .find('/')
        .map_or(base.len(), |i| host_start + i);
    format!("{}/{db}{query}", &base[..host_end])
}

impl TestDb {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the server's maintenance database (to act on this one
    /// from outside it).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Creates and migrates a database, or reports PostgreSQL unavailable.
    pub async fn create(test: &str) -> Option<(TestDb, SeaStore)> {
        let admin_url = pg_url();
        let admin = match Database::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                service_unavailable(test, "PostgreSQL", &e.to_string());
                return None;
            }
        };
        let name = format!("synnefo_pipe_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let _ = admin.close().await;
        let db = TestDb {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        };
        let store = SeaStore::connect(&db.url, 8)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate");
        Some((db, store))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the async work elsewhere.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                let _ = admin.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// Creates `n` VMs in BUILD (one user, project and flavor).
pub async fn create_vms(store: &SeaStore, n: usize) -> Vec<VmId> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let user = store
        .create_user(&format!("u{tag}"), "$argon2id$fake", false)
        .await
        .unwrap();
    let project = store.create_project(&format!("p{tag}")).await.unwrap();
    store.add_member(&user.id, &project.id).await.unwrap();
    let flavor = store
        .create_flavor(&Flavor {
            id: FlavorId(0),
            name: format!("f{tag}"),
            vcpus: 1,
            ram_mib: 128,
            disk_gib: 1,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        })
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let vm = store
            .create_vm(
                &NewVm {
                    user_id: user.id.clone(),
                    project_id: project.id.clone(),
                    name: format!("vm{i}"),
                    flavor: flavor.clone(),
                    image_id: "img".into(),
                    backend_id: None,
                    metadata: BTreeMap::new(),
                },
                Quota::default(),
            )
            .await
            .unwrap();
        ids.push(vm.id);
    }
    ids
}

// ------------------------------------------------------------- settings

/// `[amqp]` settings for `amqp_url()` (`amqp://user:pass@host:port/vhost`).
fn amqp_toml() -> String {
    let url = amqp_url();
    let rest = url.strip_prefix("amqp://").unwrap_or(&url);
    let (auth, hostpart) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, vhost) = hostpart.split_once('/').unwrap_or((hostpart, "%2f"));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5672"));
    let vhost = if vhost.is_empty() || vhost.eq_ignore_ascii_case("%2f") {
        "/".to_string()
    } else {
        vhost.to_string()
    };
    format!(
        "[amqp]\nhost = {host:?}\nport = {port}\nusername = {user:?}\npassword = {pass:?}\nvhost = {vhost:?}\nmax_reconnect_backoff_secs = 1\n"
    )
}

/// Writes a settings file for the test's database and prefix.
pub fn write_config(dir: &Path, db_url: &str, prefix: &str, extra: &str) -> PathBuf {
    let path = dir.join("synnefo.toml");
    let text = format!(
        "backend_prefix_id = {prefix:?}\ndata_dir = {:?}\n[database]\nurl = {db_url:?}\nmax_connections = 4\n{}\n[log]\nlevel = \"info,synnefo_core=info\"\n{extra}",
        dir.display().to_string(),
        amqp_toml()
    );
    std::fs::write(&path, text).expect("write settings");
    path
}

// ------------------------------------------------------------- processes

/// A `synnefo` child process, SIGKILLed when dropped.
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `synnefo <args>` with its output in `<dir>/<name>.log`.
    pub fn start(name: &str, dir: &Path, config: &Path, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(SYNNEFO)
            .arg("-c")
            .arg(config)
            .args(args)
            .env_remove("SYNNEFO_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start synnefo");
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------- scenarios

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce by seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The lifecycles exercised, as (opcode, final status) per job.
pub const SCENARIOS: &[&[(&str, &str)]] = &[
    &[("OP_INSTANCE_CREATE", "success")],
    &[
        ("OP_INSTANCE_CREATE", "success"),
        ("OP_INSTANCE_SHUTDOWN", "success"),
    ],
    &[
        ("OP_INSTANCE_CREATE", "success"),
        ("OP_INSTANCE_SHUTDOWN", "success"),
        ("OP_INSTANCE_STARTUP", "success"),
    ],
    &[
        ("OP_INSTANCE_CREATE", "success"),
        ("OP_INSTANCE_REBOOT", "success"),
    ],
    &[
        ("OP_INSTANCE_CREATE", "success"),
        ("OP_INSTANCE_REMOVE", "success"),
    ],
    &[("OP_INSTANCE_CREATE", "error")],
    &[
        ("OP_INSTANCE_CREATE", "success"),
        ("OP_INSTANCE_SHUTDOWN", "error"),
    ],
];

/// One op-status body, in Synnefo's wire format.
pub fn op_status(instance: &str, job: u64, opcode: &str, status: &str, time_us: i64) -> Vec<u8> {
    let logmsg = (status == "error").then(|| format!("job {job} failed: simulated"));
    serde_json::to_vec(&json!({
        "type": "ganeti-op-status",
        "instance": instance,
        "operation": opcode,
        "jobId": job,
        "status": status,
        "logmsg": logmsg,
        "result": null,
        "event_time": [time_us / 1_000_000, time_us % 1_000_000],
        "cluster": "test-cluster",
    }))
    .expect("json")
}

/// The messages of every VM's scenario, in order per VM, and the state
/// each VM ends in when they are applied in that order.
pub struct Workload {
    /// `(vm, body)` in generation order.
    pub messages: Vec<(VmId, Vec<u8>)>,
    /// Expected operstate (and deleted flag) per VM.
    pub expected: BTreeMap<VmId, (OperState, bool)>,
}

/// Builds the workload: each VM gets scenario `i % SCENARIOS.len()`, each
/// job goes queued -> running -> its final status.
pub fn workload(prefix: &str, vms: &[VmId], first_job: u64) -> Workload {
    let mut messages = Vec::new();
    let mut expected = BTreeMap::new();
    let mut job = first_job;
    let mut t: i64 = 1_700_000_000_000_000;
    for (i, vm) in vms.iter().enumerate() {
        let name = format!("{prefix}{}", vm.0);
        let mut state = VmState::new_build();
        for (opcode, fin) in SCENARIOS[i % SCENARIOS.len()] {
            job += 1;
            for status in ["queued", "running", fin] {
                t += 1_000;
                let body = op_status(&name, job, opcode, status, t);
                match decode(&body, prefix).expect("valid message") {
                    Notification::OpStatus { event, .. } => {
                        if let Transition::Applied(next) = apply_op_status(&state, &event) {
                            state = next;
                        }
                    }
                    other => panic!("{other:?}"),
                }
                messages.push((*vm, body));
            }
        }
        expected.insert(*vm, (state.operstate, state.deleted));
    }
    Workload { messages, expected }
}

/// Shuffles and duplicates `dup_percent`% of the messages.
pub fn shuffled_with_duplicates(
    msgs: &[(VmId, Vec<u8>)],
    dup_percent: usize,
    rng: &mut Rng,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = msgs.iter().map(|(_, b)| b.clone()).collect();
    for (_, b) in msgs {
        if rng.below(100) < dup_percent {
            out.push(b.clone());
        }
    }
    rng.shuffle(&mut out);
    out
}

/// VMs whose stored state differs from the expectation: `(vm, got, want)`.
pub async fn mismatches(
    store: &SeaStore,
    expected: &BTreeMap<VmId, (OperState, bool)>,
) -> Vec<(VmId, (OperState, bool), (OperState, bool))> {
    let ids: Vec<VmId> = expected.keys().copied().collect();
    // A read may fail on a connection the test (or a database restart)
    // killed: the pool drops it and the next read gets a fresh one.
    let mut attempts = 0;
    let vms = loop {
        match store.vms(&ids).await {
            Ok(v) => break v,
            Err(e) if attempts < 50 => {
                attempts += 1;
                eprintln!("reading the VMs failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("read vms: {e}"),
        }
    };
    let got: BTreeMap<VmId, (OperState, bool)> = vms
        .into_iter()
        .map(|v| (v.id, (v.state.operstate, v.state.deleted)))
        .collect();
    expected
        .iter()
        .filter_map(|(id, want)| {
            let g = got.get(id).copied().unwrap_or((OperState::Build, false));
            (g != *want).then_some((*id, g, *want))
        })
        .collect()
}

/// Waits until every VM matches its expectation; returns what still differs.
pub async fn wait_converged(
    store: &SeaStore,
    expected: &BTreeMap<VmId, (OperState, bool)>,
    timeout: Duration,
) -> Vec<(VmId, (OperState, bool), (OperState, bool))> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = mismatches(store, expected).await;
        if m.is_empty() || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------- end to end

/// What a VM goes through on the simulator, and the state it must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// create -> STARTED
    Create,
    /// create, shutdown -> STOPPED
    Shutdown,
    /// create, shutdown, startup -> STARTED
    Restart,
    /// create, reboot -> STARTED
    Reboot,
    /// create, remove -> DESTROYED (deleted)
    Remove,
    /// a create that fails -> ERROR
    FailedCreate,
}

impl Lifecycle {
    /// All of them.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Create,
        Lifecycle::Shutdown,
        Lifecycle::Restart,
        Lifecycle::Reboot,
        Lifecycle::Remove,
        Lifecycle::FailedCreate,
    ];

    /// The end state `(operstate, deleted)`.
    pub fn expected(self) -> (OperState, bool) {
        match self {
            Lifecycle::Create | Lifecycle::Restart | Lifecycle::Reboot => {
                (OperState::Started, false)
            }
            Lifecycle::Shutdown => (OperState::Stopped, false),
            Lifecycle::Remove => (OperState::Destroyed, true),
            Lifecycle::FailedCreate => (OperState::Error, false),
        }
    }
}

/// Runs one VM's lifecycle on the simulator through RAPI, each job to its
/// end before the next (as the API does with user actions).
pub async fn drive(
    client: &synnefo_ganeti::rapi::RapiClient,
    ganeti: &synnefo_core::settings::GanetiSettings,
    name: &str,
    life: Lifecycle,
) -> Result<(), String> {
    use synnefo_core::ids::BackendId;
    use synnefo_core::ports::{InstanceSpec, NicSpec};
    use synnefo_core::state::RebootKind;
    let wait = Duration::from_secs(60);
    let spec = InstanceSpec {
        backend: BackendId(1),
        name: name.into(),
        vcpus: 1,
        ram_mib: 128,
        disk_gib: 1,
        disk_template: String::new(),
        os_type: "snf-image+default".into(),
        osparams: BTreeMap::new(),
        nics: vec![NicSpec::default()],
        hvparams: BTreeMap::new(),
        start: true,
    };
    let request = synnefo_ganeti::backend::create_request(&spec, ganeti);
    let job = client
        .create_instance(&request)
        .await
        .map_err(|e| format!("{name}: create: {e}"))?;
    let done = client
        .wait_for_job(job, wait)
        .await
        .map_err(|e| format!("{name}: wait create: {e}"))?;
    let status = done.status.clone().unwrap_or_default();
    if life == Lifecycle::FailedCreate {
        return if status == "error" {
            Ok(())
        } else {
            Err(format!("{name}: create ended {status}, wanted error"))
        };
    }
    if status != "success" {
        return Err(format!("{name}: create ended {status}"));
    }
    let jobs: Vec<u64> = match life {
        Lifecycle::Create | Lifecycle::FailedCreate => vec![],
        Lifecycle::Shutdown => vec![
            client
                .shutdown(name, None)
                .await
                .map_err(|e| e.to_string())?,
        ],
        Lifecycle::Restart => {
            let j = client
                .shutdown(name, None)
                .await
                .map_err(|e| e.to_string())?;
            client
                .wait_for_job_success(j, wait)
                .await
                .map_err(|e| format!("{name}: shutdown: {e}"))?;
            vec![client.startup(name).await.map_err(|e| e.to_string())?]
        }
        Lifecycle::Reboot => vec![
            client
                .reboot(name, RebootKind::Soft)
                .await
                .map_err(|e| e.to_string())?,
        ],
        Lifecycle::Remove => vec![
            client
                .remove_instance(name)
                .await
                .map_err(|e| e.to_string())?,
        ],
    };
    for j in jobs {
        client
            .wait_for_job_success(j, wait)
            .await
            .map_err(|e| format!("{name}: job {j}: {e}"))?;
    }
    Ok(())
}

/// Starts the broker again when dropped (also on panic).
pub struct BrokerRestart;

impl BrokerRestart {
    /// `rabbitmqctl stop_app`; the guard runs `start_app` when dropped.
    pub fn stop() -> Result<BrokerRestart, String> {
        rabbitmqctl(&["stop_app"])?;
        Ok(BrokerRestart)
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["start_app"]) {
            eprintln!("!!!!! could not restart RabbitMQ: {e}");
        }
        let _ = rabbitmqctl(&["await_startup"]);
    }
}

/// Runs `rabbitmqctl`.
pub fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Serialises broker restarts between test processes.
#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the toolchain is newer.
pub fn restart_lock() -> Option<File> {
    let f = File::create("/tmp/synnefo-rabbitmq-restart.lock").ok()?;
    f.lock().ok()?;
    Some(f)
}

// ------------------------------------------------------------- PostgreSQL

/// Serialises PostgreSQL restarts (and tests that kill the server's
/// connections) between test processes and threads; held for a whole test.
#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the toolchain is newer.
pub fn pg_restart_lock() -> Option<File> {
    let f = File::create("/tmp/synnefo-postgresql-restart.lock").ok()?;
    f.lock().ok()?;
    Some(f)
}

/// The local PostgreSQL cluster a test may restart (`pg_lsclusters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCluster {
    /// Major version (`15`).
    pub version: String,
    /// Cluster name (`main`).
    pub name: String,
    /// Its port.
    pub port: u16,
}

impl PgCluster {
    /// The cluster of this machine that serves `url` (a loopback host and
    /// the cluster's port), or why there is none.
    pub fn serving(url: &str) -> Result<PgCluster, String> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let hostport = rest.split(['/', '?']).next().unwrap_or_default();
        let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|e| format!("port of {url}: {e}"))?,
            ),
            None => (hostport, 5432),
        };
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "") {
            return Err(format!("{host} is not this machine"));
        }
        let out = Command::new("pg_lsclusters")
            .arg("-h")
            .output()
            .map_err(|e| format!("pg_lsclusters: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_lsclusters: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4 && f[2].parse() == Ok(port) && f[3] == "online").then(|| PgCluster {
                    version: f[0].to_string(),
                    name: f[1].to_string(),
                    port,
                })
            })
            .ok_or_else(|| format!("no online cluster on port {port} in pg_lsclusters"))
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        let out = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", "-m", "fast"])
            .args([&self.version, &self.name, action])
            .output()
            .map_err(|e| format!("pg_ctlcluster: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctlcluster {} {} {action}: {}{}",
                self.version,
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Restarts the server (fast shutdown: every session is ended; the
    /// command returns once it accepts connections again). Returns how
    /// long it took. A guard starts it again should the restart fail
    /// half-way.
    pub fn restart(&self) -> Result<Duration, String> {
        let t = Instant::now();
        let guard = PgStartGuard(self.clone());
        let result = self.ctl("restart");
        drop(guard);
        result.map(|()| t.elapsed())
    }

    /// Stops the server (fast shutdown); it is started again when the
    /// returned guard is dropped (also on panic), or by [`PgStartGuard::start`].
    pub fn stop(&self) -> Result<PgStartGuard, String> {
        let guard = PgStartGuard(self.clone());
        self.ctl("stop")?;
        Ok(guard)
    }
}

/// Starts the cluster when dropped if it is not running (also on panic).
pub struct PgStartGuard(PgCluster);

impl PgStartGuard {
    /// Starts the cluster now; returns once it accepts connections.
    pub fn start(self) -> Result<(), String> {
        let result = self.0.ctl("start");
        drop(self);
        result
    }
}

impl Drop for PgStartGuard {
    fn drop(&mut self) {
        let online = Command::new("pg_lsclusters")
            .arg("-h")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() >= 4
                        && f[0] == self.0.version
                        && f[1] == self.0.name
                        && f[3] == "online"
                })
            })
            .unwrap_or(false);
        if !online && let Err(e) = self.0.ctl("start") {
            eprintln!("!!!!! could not start PostgreSQL again: {e}");
        }
    }
}

/// Ends every session of database `db` (`pg_terminate_backend`) from a
/// fresh connection to the maintenance database; returns how many.
pub async fn kill_connections(admin_url: &str, db: &str) -> Result<usize, String> {
    use sea_orm::{DbBackend, Statement};
    let admin = Database::connect(admin_url)
        .await
        .map_err(|e| format!("connecting to {admin_url}: {e}"))?;
    let rows = admin
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        ))
        .await
        .map_err(|e| format!("pg_terminate_backend: {e}"));
    let _ = admin.close().await;
    Ok(rows?.len())
}

/// The figures a `synnefo dispatcher` prints when it stops (`dispatcher
/// stopped: N applied, N ignored, N dead-lettered, N batches, N
/// redelivered, N retries`), by name.
pub fn dispatcher_totals(log: &str) -> Option<BTreeMap<String, u64>> {
    let line = log
        .lines()
        .find(|l| l.starts_with("dispatcher stopped: "))?;
    Some(
        line.trim_start_matches("dispatcher stopped: ")
            .split(", ")
            .filter_map(|part| {
                let (n, what) = part.split_once(' ')?;
                Some((what.to_string(), n.parse().ok()?))
            })
            .collect(),
    )
}

// ------------------------------------------------------------- end to end runs

/// What happens to the services while the jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// Nothing.
    None,
    /// RabbitMQ stopped for a few seconds (`rabbitmqctl stop_app`).
    BrokerRestart,
    /// Every session of the test database killed (`pg_terminate_backend`)
    /// three times, and PostgreSQL itself restarted once in between.
    DatabaseRestart,
    /// eventd SIGKILLed mid-stream and started again only after jobs went
    /// on changing for a few seconds without it.
    EventdRestart,
}

/// The full pipeline: the Ganeti simulator runs each VM's jobs -> `synnefo
/// eventd` publishes from its job queue -> RabbitMQ -> two `synnefo
/// dispatcher`s -> PostgreSQL; asserts every VM's final state. With
/// `restart_broker`, RabbitMQ is stopped for a few seconds while jobs run.
pub async fn end_to_end(test: &str, per_lifecycle: usize, restart_broker: bool) {
    let disruption = if restart_broker {
        Disruption::BrokerRestart
    } else {
        Disruption::None
    };
    end_to_end_with(test, per_lifecycle, disruption).await;
}

/// [`end_to_end`] with a [`Disruption`] while the jobs run. Under a
/// database restart the dispatchers must also have retried (the outage
/// overlapped their work), never dead-lettered, and stop cleanly.
pub async fn end_to_end_with(test: &str, per_lifecycle: usize, disruption: Disruption) {
    use synnefo_ganeti_sim::Simulator;

    let restart_broker = disruption == Disruption::BrokerRestart;
    let restart_db = disruption == Disruption::DatabaseRestart;
    // Taken before the database is created: the database disruption of
    // another test must not hit this one's database either.
    let t_lock = Instant::now();
    let _pg_lock = if restart_db {
        let lock = pg_restart_lock();
        eprintln!("{test}: waited {:?} for the restart lock", t_lock.elapsed());
        lock
    } else {
        None
    };
    let t_test = Instant::now();
    let prefix = unique_prefix();
    let Some((db, store)) = TestDb::create(test).await else {
        return;
    };
    let cluster = if restart_db {
        match PgCluster::serving(&db.url) {
            Ok(c) => Some(c),
            Err(e) => {
                service_unavailable(test, "a PostgreSQL restart (pg_ctlcluster, as root)", &e);
                return;
            }
        }
    } else {
        None
    };
    let mut amqp = synnefo_amqp::AmqpConfig::new(amqp_url(), &prefix);
    amqp.publish_timeout = Duration::from_secs(30);
    let bus = match synnefo_amqp::AmqpBus::connect(amqp).await {
        Ok(b) => b,
        Err(e) => {
            service_unavailable(test, "RabbitMQ", &e.to_string());
            return;
        }
    };
    let _lock = if restart_broker {
        if rabbitmqctl(&["status"]).is_err() {
            service_unavailable(
                test,
                "rabbitmqctl (needs root)",
                "cannot run rabbitmqctl status",
            );
            return;
        }
        restart_lock()
    } else {
        None
    };
    let dir = tempfile::tempdir().unwrap();
    // Slow jobs when a service restarts, so the outage lands mid-stream
    // (a database restart takes a few seconds: the jobs outlast it).
    let latency = match disruption {
        Disruption::None => synnefo_ganeti_sim::SimLatency::default(),
        Disruption::BrokerRestart | Disruption::EventdRestart => synnefo_ganeti_sim::SimLatency {
            queued_ms: 100,
            waiting_ms: 100,
            running_ms: 1_000,
        },
        Disruption::DatabaseRestart => synnefo_ganeti_sim::SimLatency {
            queued_ms: 100,
            waiting_ms: 100,
            running_ms: 2_500,
        },
    };
    let sim = Simulator::builder()
        .data_dir(dir.path().join("sim"))
        .latency(latency)
        .start()
        .await
        .expect("simulator");
    let config = write_config(
        dir.path(),
        &db.url,
        &prefix,
        "[eventd]\nnode_name = \"test-node\"\ncluster_name = \"sim-cluster\"\n",
    );

    let lives: Vec<Lifecycle> = Lifecycle::ALL
        .iter()
        .flat_map(|l| std::iter::repeat_n(*l, per_lifecycle))
        .collect();
    let vms = create_vms(&store, lives.len()).await;
    let mut expected = BTreeMap::new();
    for (vm, life) in vms.iter().zip(&lives) {
        expected.insert(*vm, life.expected());
        if *life == Lifecycle::FailedCreate {
            sim.fail_instance(&format!("{prefix}{}", vm.0), "simulated create failure");
        }
    }

    let spool = dir.path().join("spool");
    let queue = sim.queue_dir();
    let eventd_args = [
        "eventd",
        "--queue-dir",
        queue.to_str().unwrap_or_default(),
        "--spool-dir",
        spool.to_str().unwrap_or_default(),
        "--always-master",
    ];
    let mut eventd = Proc::start("eventd", dir.path(), &config, &eventd_args);
    let mut a = Proc::start("dispatcher-a", dir.path(), &config, &["dispatcher"]);
    let mut b = Proc::start("dispatcher-b", dir.path(), &config, &["dispatcher"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let client = sim.client().expect("RAPI client");
    let ganeti = synnefo_core::settings::Settings::defaults_with("")
        .expect("defaults")
        .ganeti;
    let mut tasks = tokio::task::JoinSet::new();
    // Under a database disruption the lifecycles start one after another,
    // so notifications flow all the time instead of in bursts and every
    // disruption lands while the dispatchers write.
    let stagger = if restart_db {
        Duration::from_millis(120)
    } else {
        Duration::ZERO
    };
    for (i, (vm, life)) in vms.iter().zip(lives.iter().copied()).enumerate() {
        let (client, ganeti, name) = (client.clone(), ganeti.clone(), format!("{prefix}{}", vm.0));
        let delay = stagger * i as u32;
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            drive(&client, &ganeti, &name, life).await
        });
    }
    if restart_broker {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let guard = BrokerRestart::stop().expect("stop_app");
        eprintln!("{test}: RabbitMQ stopped at {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(guard);
        eprintln!("{test}: RabbitMQ back at {:?}", started.elapsed());
    }
    if disruption == Disruption::EventdRestart {
        tokio::time::sleep(Duration::from_millis(400)).await;
        eventd.kill();
        eprintln!("{test}: eventd SIGKILLed at {:?}", started.elapsed());
        // Jobs go on changing in Ganeti's queue while nobody watches it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let left = mismatches(&store, &expected).await.len();
        eprintln!(
            "{test}: {left} of {} VMs not in their final state while eventd is down",
            expected.len()
        );
        assert!(left > 0, "the jobs ended before eventd was killed");
        eventd = Proc::start("eventd", dir.path(), &config, &eventd_args);
        eprintln!("{test}: eventd started again at {:?}", started.elapsed());
    }
    if let Some(cluster) = &cluster {
        let kill = |when: &'static str| {
            let (admin, name) = (db.admin_url().to_string(), db.name().to_string());
            async move {
                let t = started.elapsed();
                let n = kill_connections(&admin, &name)
                    .await
                    .expect("pg_terminate_backend");
                eprintln!("{test}: {when}: killed {n} sessions of the test database at {t:?}");
            }
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        kill("kill 1").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        kill("kill 2").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        eprintln!("{test}: restarting PostgreSQL at {:?}", started.elapsed());
        let c = cluster.clone();
        let took = tokio::task::spawn_blocking(move || c.restart())
            .await
            .expect("restart task")
            .expect("PostgreSQL restart");
        eprintln!(
            "{test}: PostgreSQL {}/{} restarted in {took:?}, back at {:?}",
            cluster.version,
            cluster.name,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        kill("kill 3").await;
        // Work is left for after the restart: the dispatchers must do it
        // over new sessions (every old one is gone).
        let left = mismatches(&store, &expected).await.len();
        eprintln!(
            "{test}: {left} of {} VMs not in their final state after the restart",
            expected.len()
        );
        assert!(left > 0, "the jobs ended before the database restart");
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("driver task").expect("lifecycle on the simulator");
    }
    eprintln!(
        "{test}: {} lifecycles done on the simulator in {:?}",
        lives.len(),
        started.elapsed()
    );

    let left = wait_converged(&store, &expected, Duration::from_secs(90)).await;
    eprintln!("{test}: converged after {:?}", started.elapsed());
    if !left.is_empty() {
        for p in [&eventd, &a, &b] {
            eprintln!("--- {} ---\n{}", p.name, p.log_text());
        }
    }
    assert!(
        left.is_empty(),
        "{} VMs lost or regressed (vm, got, want): {:?}",
        left.len(),
        &left[..left.len().min(20)]
    );
    for p in [&mut eventd, &mut a, &mut b] {
        assert!(p.running(), "{} died:\n{}", p.name, p.log_text());
    }
    let depths = bus.queue_depths().await.expect("queue depths");
    let dead = bus.dead_letters(100, false).await.expect("dead letters");
    assert_eq!(depths.dead, 0, "dead letters: {dead:?}");
    for p in [&mut eventd, &mut a, &mut b] {
        let st = p.terminate(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({st:?}):\n{}",
            p.name,
            p.log_text()
        );
        if let Some(line) = p.log_text().lines().find(|l| l.contains("stopped")) {
            eprintln!("{test}: {}: {line}", p.name);
        }
    }
    if restart_db {
        // The outage overlapped the dispatchers' work: they retried (the
        // database refused or dropped them), nothing was dead-lettered,
        // and each printed its totals on the way out.
        let mut retries = 0;
        for p in [&a, &b] {
            let totals = dispatcher_totals(&p.log_text())
                .unwrap_or_else(|| panic!("{} printed no totals:\n{}", p.name, p.log_text()));
            assert_eq!(
                totals.get("dead-lettered"),
                Some(&0),
                "{}: {totals:?}",
                p.name
            );
            retries += totals.get("retries").copied().unwrap_or(0);
            for line in p
                .log_text()
                .lines()
                .filter(|l| l.contains("database unavailable"))
                .take(3)
            {
                eprintln!("{test}: {}: {line}", p.name);
            }
        }
        // Retries happen when a session dies under a query; an outage
        // shorter than the pool's acquire timeout only delays the rest.
        eprintln!("{test}: dispatcher batches retried after a database error: {retries}");
    }
    if disruption == Disruption::EventdRestart {
        // The second run found the job files that changed while it was down.
        let log = eventd.log_text();
        let caught_up = log
            .rsplit("catch_up_files: ")
            .next()
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        eprintln!("{test}: the restarted eventd caught up on {caught_up} job files");
        assert!(caught_up > 0, "no catch-up after the restart:\n{log}");
    }
    if restart_broker {
        // The outage overlapped the stream: eventd had to hold messages
        // back, and the dispatchers had to reconnect.
        let log = eventd.log_text();
        let spooled = log
            .split("spooled: ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        // eventd's publishes either waited in the bus's retry loop (the
        // broker came back within its publish timeout) or were spooled.
        let retried = log.contains("publish failed; retrying");
        eprintln!("{test}: eventd spooled {spooled}, retried publishes: {retried}");
        assert!(
            spooled > 0 || retried,
            "the outage did not overlap eventd's publishing:\n{log}"
        );
        for p in [&a, &b] {
            assert!(
                p.log_text().contains("consumer reconnected"),
                "{} did not reconnect:\n{}",
                p.name,
                p.log_text()
            );
        }
    }
    let _ = bus.delete_queues().await;
    bus.close().await;
    sim.shutdown();
    drop(store);
    drop(db);
    eprintln!("{test}: passed in {:?}", t_test.elapsed());
}
