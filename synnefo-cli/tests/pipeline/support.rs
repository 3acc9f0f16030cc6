//! Shared plumbing of the pipeline tests: settings files for `synnefo`
//! processes, op-status scenarios with their in-order expectation, and the
//! lock that runs the heavy tests of this binary one at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use synnefo_core::ids::VmId;
use synnefo_core::messages::{Notification, decode};
use synnefo_core::ports::VmStore;
use synnefo_core::state::{OperState, Transition, VmState, apply_op_status};
use synnefo_core::store::SeaStore;
pub use synnefo_test_support::builders::create_vms;
pub use synnefo_test_support::db::TestDb;
use synnefo_test_support::process::Proc;

/// The `synnefo` binary under test.
pub const SYNNEFO: &str = env!("CARGO_BIN_EXE_synnefo");

/// A unique instance-name prefix: our own routing keys and queues.
pub fn unique_prefix() -> String {
    synnefo_test_support::unique("p")
}

/// Starts `synnefo -c CONFIG ARGS` with its output in `<dir>/<name>.log`.
pub fn start(name: &str, dir: &Path, config: &Path, args: &[&str]) -> Proc {
    Proc::synnefo(SYNNEFO, name, dir, config, args)
}

/// The heavy tests of this binary (several `synnefo` processes each) run
/// one at a time, as they did as separate binaries: a 2-core machine
/// running them together would turn their timing into noise.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

// ------------------------------------------------------------- settings

/// `[amqp]` settings for `url` (`amqp://user:pass@host:port/vhost`).
fn amqp_toml(url: &str) -> String {
    let rest = url.strip_prefix("amqp://").unwrap_or(url);
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

/// Writes a settings file for the test's database, broker and prefix.
pub fn write_config(
    dir: &Path,
    db_url: &str,
    amqp_url: &str,
    prefix: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join("synnefo.toml");
    let text = format!(
        "backend_prefix_id = {prefix:?}\ndata_dir = {:?}\n[database]\nurl = {db_url:?}\nmax_connections = 4\n{}\n[log]\nlevel = \"info,synnefo_core=info\"\n{extra}",
        dir.display().to_string(),
        amqp_toml(amqp_url)
    );
    std::fs::write(&path, text).expect("write settings");
    path
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
        expected.insert(*vm, (state.operstate(), state.deleted()));
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
        .map(|v| (v.id, (v.state.operstate(), v.state.deleted())))
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
