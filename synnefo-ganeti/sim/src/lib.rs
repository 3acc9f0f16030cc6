//! # synnefo-ganeti-sim
//!
//! A Ganeti simulator that speaks RAPI, for tests, demos and benchmarks:
//! `synnefo ganeti-sim` and `synnefo up` run it, and the test suites of
//! the client, eventd, the API and the CLI run against it. No production
//! node runs it; it lives apart from `synnefo-ganeti` so that programs
//! embedding the RAPI client do not compile an HTTP server.
//!
//! It answers the same paths with the same JSON as Ganeti 3.0 (checked
//! against recorded fixtures by `tests/sim_golden.rs`), runs jobs through
//! queued -> waiting -> running -> success/error with configurable latency,
//! and writes Ganeti-shaped job files (write to a temporary name, rename
//! over `queue/job-N`, archive to `queue/archive/<N/10000>/`) so `eventd`
//! can watch it exactly as it watches a real master.
//!
//! Test knobs on [`SimHandle`]: failure injection (next N jobs, by opcode,
//! by instance), cancellation (`DELETE /2/jobs/ID` while queued/waiting),
//! changes behind Ganeti's back (for reconciliation), a single-step mode in
//! which jobs advance only on [`SimHandle::step`], and a response delay to
//! exercise client timeouts. It holds 100k instances in a `BTreeMap` and
//! streams the bulk listing straight into one buffer.
//!
//! Inside: [`SimConfig`] (plain data), the HTTP side (`server`), the
//! cluster model (`model`), the RAPI views (`views`), the job engine
//! (`jobs`), networks and address pools (`networks`), cluster policy
//! checks (`policy`), one module per opcode family (`ops`), and the
//! on-disk job queue (`queue`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), synnefo_ganeti::RapiError> {
//! use synnefo_ganeti_sim::Simulator;
//! let sim = Simulator::builder().https().single_step(true).start().await?;
//! let client = sim.client()?;
//! let job = client.startup("snf-1").await?;
//! sim.run_until_idle();
//! println!("{:?} in {}", client.job(job).await?.status, sim.queue_dir().display());
//! # Ok(()) }
//! ```

#![recursion_limit = "256"]

mod config;
mod error;
mod jobs;
mod json;
mod model;
mod networks;
mod ops;
mod policy;
mod queue;
mod server;
mod views;
mod vnc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use synnefo_core::state::JobStatus;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use config::{
    SimConfig, SimIPolicy, SimLatency, SimNetworkConfig, SimNodeConfig, SimOsConfig, SimPopulate,
    SimProgress, SimTls, SimUser,
};

/// Where a simulated create's snf-image messages go (the node's
/// `PROGRESS_MONITOR`): called with the instance's name and one of
/// snf-image's monitor messages, outside the simulator's lock, in order.
pub type ProgressMonitor = Arc<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// The monitor slot (a closure has no `Debug`).
#[derive(Default)]
pub(crate) struct MonitorSlot(Mutex<Option<ProgressMonitor>>);

impl std::fmt::Debug for MonitorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MonitorSlot")
    }
}
pub use error::SimError;
pub use jobs::FailureRule;
pub use model::{NewSimInstance, SimDisk, SimInstance, SimNic};
pub use vnc::{BACKGROUND, FB_HEIGHT, FB_WIDTH, FOREGROUND, SimVncConfig, render_console};

use model::SimState;
use queue::QueueFiles;
use synnefo_ganeti::RapiError;
use synnefo_ganeti::rapi::{RapiClient, RapiConfig};

/// State shared by the HTTP handlers, the driver and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<SimState>,
    pub(crate) config: SimConfig,
    pub(crate) changes: watch::Sender<u64>,
    wake: Notify,
    pub(crate) response_delay_ms: AtomicU64,
    monitor: MonitorSlot,
    /// Serializes hand-overs to the monitor, so messages keep their order.
    monitor_order: Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock must not wedge every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&SimState) -> T) -> T {
        f(&self.lock())
    }

    pub(crate) fn mutate<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        let order = self.monitor_order.lock().unwrap_or_else(|p| p.into_inner());
        let (out, generation, progress) = {
            let mut st = self.lock();
            let before = st.generation;
            let out = f(&mut st);
            let g = st.generation;
            let progress = std::mem::take(&mut st.progress_out);
            (out, (g != before).then_some(g), progress)
        };
        if !progress.is_empty() {
            let monitor = self
                .monitor
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(m) = monitor {
                for (instance, msg) in progress {
                    m(&instance, msg);
                }
            }
        }
        drop(order);
        if let Some(g) = generation {
            self.changes.send_replace(g);
            self.wake.notify_one();
        }
        out
    }
}

/// The entry point: `Simulator::builder()...start().await` gives a
/// running [`SimHandle`].
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// A builder with [`SimConfig::default`] (plain HTTP, user
    /// `synnefo`/`synnefo` with write access, two KVM nodes).
    pub fn builder() -> SimBuilder {
        SimBuilder {
            config: SimConfig::default(),
        }
    }
}

/// Configures and starts a simulator.
#[derive(Debug, Clone)]
pub struct SimBuilder {
    config: SimConfig,
}

impl SimBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: SimConfig) -> Self {
        self.config = config;
        self
    }

    /// HTTPS with a generated self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn https(mut self) -> Self {
        self.config.tls = SimTls::Generate {
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        self
    }

    /// HTTPS with this PEM certificate chain and key.
    pub fn tls_pem(mut self, cert: impl Into<String>, key: impl Into<String>) -> Self {
        self.config.tls = SimTls::Pem {
            cert: cert.into(),
            key: key.into(),
        };
        self
    }

    /// Replaces the users with one write user.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.config.users = vec![SimUser {
            name: name.into(),
            password: password.into(),
            write: true,
        }];
        self
    }

    /// Adds a user; `write` lets it submit jobs and long-poll.
    pub fn add_user(mut self, name: &str, password: &str, write: bool) -> Self {
        self.config.users.push(SimUser {
            name: name.into(),
            password: password.into(),
            write,
        });
        self
    }

    /// How long jobs spend in each status (timed mode).
    pub fn latency(mut self, latency: SimLatency) -> Self {
        self.config.latency = latency;
        self
    }

    /// Jobs advance only on [`SimHandle::step`].
    pub fn single_step(mut self, on: bool) -> Self {
        self.config.single_step = on;
        self
    }

    /// Data directory (queue, ssconf); a temporary one otherwise.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    /// Creates `count` running instances `snf-1 ..` at start.
    pub fn instances(mut self, count: u64) -> Self {
        self.config.populate = Some(SimPopulate {
            count,
            ..SimPopulate::default()
        });
        self
    }

    /// Default hypervisor (`kvm` or `fake`).
    pub fn hypervisor(mut self, hv: &str) -> Self {
        self.config.hypervisor = hv.into();
        self
    }

    /// Archive finished jobs after this delay.
    pub fn archive_after(mut self, d: Duration) -> Self {
        self.config.archive_after_ms = Some(d.as_millis() as u64);
        self
    }

    /// `/wait` long-poll budget.
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.config.wait_timeout_ms = d.as_millis() as u64;
        self
    }

    /// Binds, starts the driver, and returns the handle.
    pub async fn start(self) -> Result<SimHandle, SimError> {
        let mut config = self.config;
        if config.nodes.is_empty() {
            config.nodes.push(SimNodeConfig::default());
        }
        config
            .validate()
            .map_err(|e| SimError::Config(format!("simulator configuration: {e}")))?;
        let (tempdir, data_dir) = match &config.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("ganeti-sim-").tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let master = config.nodes[0].name.clone();
        let queue = if config.write_job_files {
            Some(QueueFiles::create(
                &data_dir,
                &config.cluster_name,
                &master,
            )?)
        } else {
            None
        };
        let tls = build_tls(&config.tls)?;
        let listener = TcpListener::bind(&config.listen).await?;
        let addr = listener.local_addr()?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(SimState::new(config.clone(), queue)),
            config: config.clone(),
            changes,
            wake: Notify::new(),
            response_delay_ms: AtomicU64::new(0),
            monitor: MonitorSlot::default(),
            monitor_order: Mutex::new(()),
        });
        let stop = CancellationToken::new();
        let app = server::router(shared.clone());
        let cert_pem = tls.as_ref().map(|t| t.0.clone());
        match tls {
            Some((_, server_config)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
                tokio::spawn(server::serve_tls(listener, acceptor, app, stop.clone()));
            }
            None => {
                let stop2 = stop.clone();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stop2.cancelled_owned())
                        .await;
                });
            }
        }
        tokio::spawn(drive(shared.clone(), stop.clone()));
        tracing::info!(%addr, https = cert_pem.is_some(), "Ganeti simulator listening");
        Ok(SimHandle {
            shared,
            addr,
            cert_pem,
            data_dir,
            stop,
            _tempdir: tempdir,
        })
    }
}

type TlsSetup = (String, rustls::ServerConfig);

fn build_tls(tls: &SimTls) -> Result<Option<TlsSetup>, SimError> {
    let (cert_pem, key_pem) = match tls {
        SimTls::None => return Ok(None),
        SimTls::Generate { names } => {
            let names = if names.is_empty() {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            } else {
                names.clone()
            };
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| SimError::Tls(format!("cannot generate certificate: {e}")))?;
            (ck.cert.pem(), ck.key_pair.serialize_pem())
        }
        SimTls::Pem { cert, key } => (cert.clone(), key.clone()),
        SimTls::Files { cert, key } => (
            std::fs::read_to_string(cert)?,
            std::fs::read_to_string(key)?,
        ),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| SimError::Config(format!("simulator certificate: {e:?}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| SimError::Config(format!("simulator key: {e:?}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SimError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| SimError::Tls(format!("simulator certificate/key: {e}")))?;
    Ok(Some((cert_pem, config)))
}

/// Advances due jobs in timed mode and archives old ones.
async fn drive(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let now = Instant::now();
        let next = shared.mutate(|st| {
            if st.single_step {
                return None;
            }
            let before = st.active().len();
            for id in st.due(now) {
                st.advance(id);
            }
            if st.active().len() < before {
                // Something finished: jobs waiting for its lock may go on.
                let waiting: Vec<u64> = st
                    .jobs
                    .values()
                    .filter(|j| j.next_at.is_none() && !j.status().is_terminal())
                    .map(|j| j.id)
                    .collect();
                for id in waiting {
                    if let Some(j) = st.jobs.get_mut(&id) {
                        j.next_at = Some(now);
                    }
                }
            }
            if let Some(ms) = st.cfg.archive_after_ms {
                st.archive(Duration::from_millis(ms));
            }
            st.next_deadline()
        });
        let archive_tick = shared
            .config
            .archive_after_ms
            .map(|_| Duration::from_millis(50));
        let sleep = match (next, archive_tick) {
            (Some(t), tick) => t
                .saturating_duration_since(Instant::now())
                .min(tick.unwrap_or(Duration::MAX)),
            (None, Some(tick)) => tick,
            (None, None) => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cert_pem: Option<String>,
    data_dir: PathBuf,
    stop: CancellationToken,
    _tempdir: Option<tempfile::TempDir>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SimHandle {
    /// Base URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server certificate (PEM) when serving HTTPS; pin it in clients.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// `<data_dir>/queue`: where job files appear.
    pub fn queue_dir(&self) -> PathBuf {
        self.data_dir.join("queue")
    }

    /// The data directory (`queue/`, `ssconf_master_node`, ...).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// A client configuration for this simulator (first user, pinned certificate).
    pub fn client_config(&self) -> RapiConfig {
        let mut c = RapiConfig::new(self.url());
        if let Some(u) = self.shared.config.users.first() {
            c = c.credentials(u.name.clone(), u.password.clone());
        }
        if let Some(pem) = &self.cert_pem {
            c = c.ca_pem(pem.as_bytes().to_vec());
        }
        c
    }

    /// A RAPI client for this simulator (see [`SimHandle::client_config`]).
    pub fn client(&self) -> Result<RapiClient, RapiError> {
        RapiClient::new(self.client_config())
    }

    /// Stops serving (also done on drop).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    // ------------------------------------------------------------ jobs

    /// Advances every unfinished job by one status (in id order); returns
    /// how many moved. Works in either mode.
    pub fn step(&self) -> usize {
        self.shared.mutate(|st| {
            let ids = st.active();
            ids.into_iter().filter(|id| st.advance(*id)).count()
        })
    }

    /// Advances one job by one status.
    pub fn step_job(&self, id: u64) -> bool {
        self.shared.mutate(|st| st.advance(id))
    }

    /// Steps until no job can move; returns the number of steps taken.
    pub fn run_until_idle(&self) -> usize {
        let mut total = 0;
        for _ in 0..100_000 {
            let n = self.step();
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }

    /// Waits (timed mode) until no job is unfinished, or `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.read(|st| st.active().is_empty()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Switches single-step mode on or off.
    pub fn set_single_step(&self, on: bool) {
        self.shared.mutate(|st| {
            st.single_step = on;
            if !on {
                let now = Instant::now();
                for j in st.jobs.values_mut().filter(|j| !j.status().is_terminal()) {
                    j.next_at = Some(now);
                }
            }
            st.generation += 1;
        });
    }

    /// Sets (or, with `None`, removes) where the snf-image messages of
    /// creates go; see [`SimProgress`].
    pub fn set_progress_monitor(&self, monitor: Option<ProgressMonitor>) {
        *self
            .shared
            .monitor
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = monitor;
    }

    /// Changes what later creates report (see [`SimProgress`]).
    pub fn set_progress(&self, progress: SimProgress) {
        self.shared.mutate(|st| st.cfg.progress = progress);
    }

    /// Changes the job latency (applies from each job's next status).
    pub fn set_latency(&self, latency: SimLatency) {
        self.shared.mutate(|st| st.latency = latency);
    }

    /// A job's status, if it exists.
    pub fn job_status(&self, id: u64) -> Option<JobStatus> {
        self.shared.read(|st| st.jobs.get(&id).map(|j| j.status()))
    }

    /// Every job id, oldest first.
    pub fn job_ids(&self) -> Vec<u64> {
        self.shared.read(|st| st.jobs.keys().copied().collect())
    }

    /// Archives every finished job now; returns how many moved.
    pub fn archive_finished_jobs(&self) -> usize {
        self.shared.mutate(|st| st.archive(Duration::ZERO))
    }

    /// Adds a failure rule; the first matching rule fails each new job.
    pub fn add_failure(&self, rule: FailureRule) {
        self.shared.mutate(|st| st.failures.push(rule));
    }

    /// The next `n` submitted jobs fail at execution with `message`.
    pub fn fail_next_jobs(&self, n: u32, message: &str) {
        self.add_failure(FailureRule {
            opcode: None,
            instance: None,
            remaining: Some(n),
            class: "OpExecError".into(),
            message: message.into(),
            ecode: None,
        });
    }

    /// Every job of this opcode (`OP_INSTANCE_CREATE`) fails with `message`.
    pub fn fail_opcode(&self, opcode: &str, message: &str) {
        self.add_failure(FailureRule {
            opcode: Some(opcode.into()),
            instance: None,
            remaining: None,
            class: "OpExecError".into(),
            message: message.into(),
            ecode: None,
        });
    }

    /// Every job on this instance fails with `message`.
    pub fn fail_instance(&self, instance: &str, message: &str) {
        self.add_failure(FailureRule {
            opcode: None,
            instance: Some(instance.into()),
            remaining: None,
            class: "OpExecError".into(),
            message: message.into(),
            ecode: None,
        });
    }

    /// Removes all failure rules.
    pub fn clear_failures(&self) {
        self.shared.mutate(|st| st.failures.clear());
    }

    /// Makes every HTTP answer wait this long (client timeout tests).
    pub fn set_response_delay(&self, d: Duration) {
        self.shared
            .response_delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    // ------------------------------------------------------------ behind Ganeti's back

    /// Removes an instance without a job; false if absent.
    pub fn remove_instance_directly(&self, name: &str) -> bool {
        self.shared.mutate(|st| st.instances.remove(name).is_some())
    }

    /// Sets an instance's running state (and admin state) without a job.
    pub fn set_instance_running(&self, name: &str, running: bool) -> bool {
        self.shared.mutate(|st| match st.instances.get_mut(name) {
            Some(i) => {
                i.running = running;
                i.admin_up = running;
                true
            }
            None => false,
        })
    }

    /// Sets only `oper_state` (e.g. a crashed guest: admin up, not running).
    pub fn set_instance_oper_state(&self, name: &str, running: bool) -> bool {
        self.shared.mutate(|st| match st.instances.get_mut(name) {
            Some(i) => {
                i.running = running;
                true
            }
            None => false,
        })
    }

    /// The UUID of a configured network (generated at start unless set).
    pub fn network_uuid(&self, name: &str) -> Option<String> {
        self.shared.read(|st| {
            st.networks
                .iter()
                .find(|n| n.cfg.name == name)
                .map(|n| n.uuid.clone())
        })
    }

    /// Adds an instance without a job (behind Ganeti's back).
    pub fn add_instance_directly(&self, spec: NewSimInstance) {
        self.shared.mutate(|st| st.add_instance(&spec));
    }

    /// A snapshot of one instance.
    pub fn instance(&self, name: &str) -> Option<SimInstance> {
        self.shared.read(|st| st.instances.get(name).cloned())
    }

    /// Instance names, sorted.
    pub fn instance_names(&self) -> Vec<String> {
        self.shared
            .read(|st| st.instances.keys().cloned().collect())
    }

    /// How many instances the cluster has.
    pub fn instance_count(&self) -> usize {
        self.shared.read(|st| st.instances.len())
    }

    /// Marks a node offline (or back online).
    pub fn set_node_offline(&self, node: &str, offline: bool) -> bool {
        self.shared.mutate(
            |st| match st.nodes.iter_mut().find(|n| n.cfg.name == node) {
                Some(n) => {
                    n.cfg.offline = offline;
                    true
                }
                None => false,
            },
        )
    }

    /// Marks a node drained (or not).
    pub fn set_node_drained(&self, node: &str, drained: bool) -> bool {
        self.shared.mutate(
            |st| match st.nodes.iter_mut().find(|n| n.cfg.name == node) {
                Some(n) => {
                    n.cfg.drained = drained;
                    true
                }
                None => false,
            },
        )
    }
}
