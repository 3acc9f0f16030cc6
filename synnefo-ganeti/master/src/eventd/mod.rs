//! `synnefo eventd`: Ganeti's job queue turned into `ganeti-op-status`
//! messages.
//!
//! Ganeti records each job in `queue/job-N` and rewrites that file (temp
//! file + rename) many times as the job runs. eventd watches the directory
//! with inotify, reads each renamed job file, and publishes one message per
//! **opcode status change** — never one per rewrite, never one from a temp
//! file, never the same change twice, every opcode of a multi-op job.
//!
//! The pieces, pure ones first:
//! * [`job`]: parsing job files and telling job files from temp files;
//! * [`message`]: one opcode in its current status -> the message
//!   Synnefo's eventd publishes for it (op, network or cluster status),
//!   with the instance's NICs, disks and boot parameters from
//!   [`ganeti_config`] (Ganeti's `config.data`);
//! * [`diff`]: a job file + what we remember of it -> the messages due;
//! * [`master`]: which master candidate publishes which change (the seed's
//!   "TBD: master migration");
//! * [`spool`]: the on-disk spool that keeps messages while the broker is
//!   down, replayed in order;
//! * [`state`]: bounded per-job memory and the state file that makes a
//!   restart catch up without republishing everything;
//! * [`Eventd`]: the I/O loop tying them together, and [`testing`]: a
//!   recording bus and a Ganeti-style job writer for tests and benches.
//!
//! All paths come from settings and are made absolute once at start, so
//! eventd runs from any directory (the seed's FIXME).
//!
//! ```no_run
//! # async fn demo(bus: std::sync::Arc<dyn synnefo_core::ports::EventBus>) -> Result<(), Box<dyn std::error::Error>> {
//! use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
//! let config = EventdConfig::new("/var/lib/ganeti/queue", "/var/spool/synnefo/eventd", "snf-");
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let metrics = Eventd::new(config, bus).run(cancel).await?;
//! println!("published {}", metrics.published);
//! # Ok(()) }
//! ```

pub mod diff;
pub mod ganeti_config;
pub mod job;
pub mod master;
pub mod message;
pub mod metrics;
mod publisher;
pub mod spool;
pub mod state;
pub mod testing;
mod watch;

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use synnefo_core::ports::EventBus;
use synnefo_core::settings::Settings;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use diff::{DiffContext, JobDiff, JobMark, diff_job};
pub use job::{JobFile, JobParseError, job_id_from_file_name, parse_job};
pub use master::{MasterHistory, RoleChange};
pub use metrics::{Metrics, MetricsSnapshot};

use metrics::inc;
use publisher::{Outgoing, PublisherTuning};
use state::{Marks, SavedState};
use watch::WatchEvent;

/// What stops eventd (everything else is logged and survived).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventdError {
    /// The job queue directory is missing or unreadable.
    #[error("job queue directory {path}: {reason}")]
    QueueDir {
        /// The directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// inotify could not be set up.
    #[error("cannot watch {path}: {reason}")]
    Watch {
        /// The directory.
        path: String,
        /// The error.
        reason: String,
    },
    /// The spool directory or file cannot be written (messages would be lost).
    #[error("spool: {0}")]
    Spool(String),
    /// The master file exists but cannot be read.
    #[error("master file {path}: {reason}")]
    MasterFile {
        /// The file.
        path: String,
        /// The error.
        reason: String,
    },
    /// Inconsistent settings.
    #[error("invalid eventd configuration: {0}")]
    Config(String),
}

/// Who is master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterMode {
    /// Always active (no Ganeti master file: embedded mode, simulator, tests).
    Always,
    /// Active for changes made while `path` (`ssconf_master_node`) names
    /// `node_name`.
    File {
        /// The master file.
        path: PathBuf,
        /// This node's name.
        node_name: String,
    },
}

/// How an eventd runs.
#[derive(Debug, Clone)]
pub struct EventdConfig {
    /// Ganeti's job queue directory.
    pub queue_dir: PathBuf,
    /// Where the spool and the state file live.
    pub spool_dir: PathBuf,
    /// Instance-name prefix (`snf-`): other instances are not published.
    pub prefix: String,
    /// Cluster name for the messages.
    pub cluster_name: Option<String>,
    /// Ganeti's `config.data`, read for the instance's NICs, disks and boot
    /// parameters (`instance_nics`, `instance_disks`, `instance_hvparams`).
    /// `None`, or a file that does not exist when eventd starts: none to
    /// read (simulator, tests); a create then reports only NICs its input
    /// spells out completely.
    pub ganeti_config: Option<PathBuf>,
    /// Also publish `ganeti-network-status` and `ganeti-cluster-status`
    /// (their queues are declared: `amqp.topology.synnefo_queues`).
    pub synnefo_kinds: bool,
    /// Master detection.
    pub master: MasterMode,
    /// Width of each master's claim around a switch (clock skew, coarse
    /// file times). 0: changes are split exactly; more: changes near a
    /// switch may be published by both masters (never by neither).
    pub handover_slack: Duration,
    /// How far before the saved watermark a restart looks again (inotify
    /// delivery lag, coarse file times).
    pub catch_up_slack: Duration,
    /// With no state file: how far back into `archive/` the first start looks.
    pub initial_archive_window: Duration,
    /// Jobs remembered in memory and in the state file.
    pub max_tracked_jobs: usize,
    /// Publishes in flight at once (different jobs only). Under load a
    /// persistent confirm takes tens of ms, so 10k updates/s need about a
    /// thousand in flight.
    pub publish_window: usize,
    /// How long to wait for a broker confirm before spooling.
    pub publish_timeout: Duration,
    /// First and longest wait between replay attempts while the broker is down.
    pub retry_backoff: (Duration, Duration),
    /// How long a shutdown may spend draining the spool.
    pub shutdown_grace: Duration,
    /// How often the state file is saved (when something changed) and the
    /// master file polled (in case an inotify event was missed).
    pub tick: Duration,
}

impl EventdConfig {
    /// A configuration with defaults: always master, no cluster name.
    pub fn new(queue_dir: impl Into<PathBuf>, spool_dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self {
            queue_dir: queue_dir.into(),
            spool_dir: spool_dir.into(),
            prefix: prefix.to_string(),
            cluster_name: None,
            ganeti_config: None,
            synnefo_kinds: false,
            master: MasterMode::Always,
            handover_slack: Duration::from_secs(2),
            catch_up_slack: Duration::from_secs(2),
            initial_archive_window: Duration::from_secs(3600),
            max_tracked_jobs: 20_000,
            publish_window: 1024,
            publish_timeout: Duration::from_secs(5),
            retry_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            shutdown_grace: Duration::from_secs(2),
            tick: Duration::from_secs(1),
        }
    }

    /// From `[eventd]` settings: master file, node name (default: host
    /// name), cluster name (default: `ssconf_cluster_name` next to the
    /// master file), Ganeti's `config.data` (next to the master file too),
    /// network and cluster messages when `amqp.topology.synnefo_queues`.
    pub fn from_settings(settings: &Settings) -> Result<Self, EventdError> {
        let ev = &settings.eventd;
        let node_name = if ev.node_name.trim().is_empty() {
            master::host_name().ok_or_else(|| {
                EventdError::Config("eventd.node_name is empty and the host name is unknown".into())
            })?
        } else {
            ev.node_name.trim().to_string()
        };
        let cluster_name = if ev.cluster_name.trim().is_empty() {
            ev.master_node_file
                .parent()
                .map(|d| d.join("ssconf_cluster_name"))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        } else {
            Some(ev.cluster_name.trim().to_string())
        };
        let mut c = Self::new(&ev.queue_dir, &ev.spool_dir, &settings.backend_prefix_id);
        c.cluster_name = cluster_name;
        c.ganeti_config = ev.master_node_file.parent().map(|d| d.join("config.data"));
        c.synnefo_kinds = settings.amqp.topology.synnefo_queues;
        c.master = MasterMode::File {
            path: ev.master_node_file.clone(),
            node_name,
        };
        Ok(c)
    }

    fn absolute(mut self) -> Result<Self, EventdError> {
        let abs = |p: &Path| {
            std::path::absolute(p).map_err(|e| EventdError::Config(format!("{}: {e}", p.display())))
        };
        self.queue_dir =
            std::fs::canonicalize(&self.queue_dir).map_err(|e| EventdError::QueueDir {
                path: self.queue_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        if !self.queue_dir.is_dir() {
            return Err(EventdError::QueueDir {
                path: self.queue_dir.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        self.spool_dir = abs(&self.spool_dir)?;
        if let Some(p) = &self.ganeti_config {
            self.ganeti_config = Some(abs(p)?);
        }
        if let MasterMode::File { path, .. } = &mut self.master {
            let p = abs(path)?;
            // Canonical parent so watcher paths compare equal.
            *path = match (p.parent(), p.file_name()) {
                (Some(d), Some(n)) => std::fs::canonicalize(d)
                    .map(|d| d.join(n))
                    .unwrap_or(p.clone()),
                _ => {
                    return Err(EventdError::Config(format!(
                        "master file {} has no file name",
                        p.display()
                    )));
                }
            };
        }
        if self.publish_window == 0 || self.max_tracked_jobs == 0 {
            return Err(EventdError::Config(
                "publish_window and max_tracked_jobs must be positive".into(),
            ));
        }
        Ok(self)
    }
}

/// The job-queue watcher.
pub struct Eventd {
    config: EventdConfig,
    bus: Arc<dyn EventBus>,
    metrics: Arc<Metrics>,
}

fn duration_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Reads `job-N` from the queue, or from `archive/` if Ganeti moved it
/// there in between. `Ok(None)`: gone.
fn read_job_file(queue_dir: &Path, id: u64) -> std::io::Result<Option<Vec<u8>>> {
    let name = format!("job-{id}");
    for path in [
        queue_dir.join(&name),
        queue_dir.join(job::archive_relative_path(id)),
    ] {
        match std::fs::File::open(&path) {
            Ok(f) => {
                let mut buf = Vec::new();
                f.take(job::MAX_JOB_FILE_BYTES + 1).read_to_end(&mut buf)?;
                if buf.len() as u64 > job::MAX_JOB_FILE_BYTES {
                    return Err(std::io::Error::other(format!(
                        "larger than {} bytes",
                        job::MAX_JOB_FILE_BYTES
                    )));
                }
                return Ok(Some(buf));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Job files (`queue/job-N` and `queue/archive/*/job-N`) modified at or
/// after `since_us` (all queue files when `None`; archive files only with
/// a bound), ascending by id.
fn scan_queue(queue_dir: &Path, since_us: Option<i64>, archive_since_us: i64) -> Vec<u64> {
    let mut ids = Vec::new();
    let recent = |meta: &std::fs::Metadata, bound: Option<i64>| match (bound, meta.modified()) {
        (None, _) => true,
        (Some(b), Ok(m)) => master::system_time_us(m) >= b,
        (Some(_), Err(_)) => true,
    };
    let list = |dir: &Path, bound: Option<i64>, ids: &mut Vec<u64>| {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(job_id_from_file_name) else {
                continue;
            };
            if entry.metadata().is_ok_and(|m| recent(&m, bound)) {
                ids.push(id);
            }
        }
    };
    list(queue_dir, since_us, &mut ids);
    let archive_bound = Some(since_us.unwrap_or(archive_since_us));
    if let Ok(rd) = std::fs::read_dir(queue_dir.join("archive")) {
        for entry in rd.flatten() {
            // A directory's mtime moves when a job is archived into it, so
            // an old directory holds only old files.
            if entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && recent(&m, archive_bound))
            {
                list(&entry.path(), archive_bound, &mut ids);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The main loop's state.
struct Core {
    config: EventdConfig,
    metrics: Arc<Metrics>,
    marks: Marks,
    history: MasterHistory,
    master_file: Option<master::MasterFile>,
    /// Ganeti's `config.data`, if there is one to read.
    ganeti_config: Option<ganeti_config::ConfigFile>,
    /// To the publishing task (`None` once closed at shutdown).
    tx: Option<mpsc::Sender<Outgoing>>,
    seq: u64,
    /// Every file write before this was handled (µs).
    watermark_us: Option<i64>,
    dirty: bool,
    pending_snapshot: Option<(u64, SavedState)>,
    /// The state file being written on a blocking thread: its fsync (ms on
    /// a disk) must not stall the loop that turns renames into messages.
    saving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Core {
    fn master_path(&self) -> Option<&Path> {
        match &self.config.master {
            MasterMode::Always => None,
            MasterMode::File { path, .. } => Some(path),
        }
    }

    /// Re-reads the master file if it changed; returns a role change.
    fn refresh_master(&mut self) -> Result<Option<RoleChange>, EventdError> {
        let Some(path) = self.master_path().map(Path::to_path_buf) else {
            return Ok(None);
        };
        let read = master::read_master_file(&path, self.master_file.as_ref()).map_err(|e| {
            EventdError::MasterFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let Some(mf) = read else { return Ok(None) };
        let change = self.history.observe(mf.mtime_us, mf.master.clone());
        if mf.master.is_none() {
            tracing::warn!(path = %path.display(), "master file missing or empty: no node is master");
        }
        self.master_file = Some(mf);
        self.dirty = true;
        self.metrics
            .master
            .store(self.history.is_master(), Ordering::Relaxed);
        match change {
            Some(RoleChange::BecameMaster(at)) => {
                inc(&self.metrics.takeovers, 1);
                tracing::info!(at_us = at, "this node is master: publishing");
            }
            Some(RoleChange::LostMaster(at)) => {
                tracing::info!(
                    at_us = at,
                    "this node is no longer master: changes after the switch are left to the new master"
                );
            }
            None => {}
        }
        Ok(change)
    }

    fn read(&self, id: u64) -> Option<JobFile> {
        inc(&self.metrics.job_files_read, 1);
        match read_job_file(&self.config.queue_dir, id) {
            Ok(Some(bytes)) => match parse_job(&bytes, Some(id)) {
                Ok(job) => Some(job),
                Err(e) => {
                    inc(&self.metrics.parse_errors, 1);
                    tracing::warn!(job = id, reason = %e, "malformed job file; nothing published for it");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                inc(&self.metrics.parse_errors, 1);
                tracing::warn!(job = id, reason = %e, "cannot read job file");
                None
            }
        }
    }

    /// Diffs a read job against its mark, hands the messages to the
    /// publisher and remembers the new mark.
    async fn apply(&mut self, job: &JobFile) -> Result<(), EventdError> {
        let config_file = self.ganeti_config.as_ref();
        let lookup = |name: &str| {
            let file = config_file?;
            match file.load() {
                Ok(c) => {
                    let info = c.instance(name);
                    if info.is_none() {
                        tracing::debug!(
                            instance = name,
                            "Ganeti's configuration has no such instance (removed since): no NICs, disks or hvparams sent"
                        );
                    }
                    info
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read Ganeti's configuration: no NICs, disks or hvparams sent");
                    None
                }
            }
        };
        let ctx = DiffContext {
            prefix: &self.config.prefix,
            cluster: self.config.cluster_name.as_deref(),
            now: job::now_timestamp(),
            synnefo_kinds: self.config.synnefo_kinds,
            instance_info: config_file.map(|_| &lookup as message::InstanceLookup<'_>),
        };
        let history = &self.history;
        let owns = |t: job::Timestamp| history.owns(diff::timestamp_us(t));
        let d = diff_job(job, self.marks.get(job.id), &ctx, &owns);
        if d.is_rewrite() {
            inc(&self.metrics.duplicates_suppressed, 1);
        }
        if !d.skipped.is_empty() {
            inc(&self.metrics.ops_skipped, d.skipped.len() as u64);
            for (i, why) in &d.skipped {
                tracing::debug!(job = job.id, op = i, reason = ?why, "opcode not published");
            }
        }
        inc(&self.metrics.observed_not_owned, u64::from(d.not_owned));
        for c in &d.changes {
            let body = match serde_json::to_vec(&c.message) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(job = job.id, error = %e, "cannot encode a message");
                    continue;
                }
            };
            self.seq += 1;
            let out = Outgoing {
                seq: self.seq,
                job_id: job.id,
                kind: c.kind(),
                body,
            };
            let tx = self
                .tx
                .as_ref()
                .ok_or_else(|| EventdError::Spool("the publishing task is closed".into()))?;
            tx.send(out)
                .await
                .map_err(|_| EventdError::Spool("the publishing task stopped".into()))?;
        }
        if self.marks.get(job.id) != Some(&d.mark) {
            self.marks.insert(job.id, d.mark);
            self.dirty = true;
        }
        Ok(())
    }

    /// Reads and publishes what changed in the job files modified since
    /// `since_us` (queue and archive), in id order, in chunks: each chunk
    /// is read before the master file is checked.
    async fn catch_up(&mut self, since_us: Option<i64>, why: &str) -> Result<(), EventdError> {
        let started = master::system_time_us(SystemTime::now());
        let archive_since = started - duration_us(self.config.initial_archive_window);
        let queue = self.config.queue_dir.clone();
        let ids = tokio::task::spawn_blocking(move || scan_queue(&queue, since_us, archive_since))
            .await
            .unwrap_or_default();
        tracing::info!(
            files = ids.len(),
            reason = why,
            "catching up on the job queue"
        );
        for chunk in ids.chunks(256) {
            let jobs: Vec<JobFile> = chunk.iter().filter_map(|id| self.read(*id)).collect();
            inc(&self.metrics.catch_up_files, chunk.len() as u64);
            self.refresh_master()?;
            for job in &jobs {
                self.apply(job).await?;
            }
        }
        self.advance_watermark(started);
        Ok(())
    }

    fn advance_watermark(&mut self, t_us: i64) {
        if self.watermark_us.is_none_or(|w| t_us > w) {
            self.watermark_us = Some(t_us);
            self.dirty = true;
        }
    }

    fn since_watermark(&self) -> Option<i64> {
        self.watermark_us
            .map(|w| w - duration_us(self.config.catch_up_slack))
    }

    /// One batch of watcher events.
    async fn handle(&mut self, events: Vec<WatchEvent>) -> Result<(), EventdError> {
        let started = master::system_time_us(SystemTime::now());
        let mut seen = HashSet::new();
        let mut ids = Vec::new();
        let mut rescan = false;
        for e in events {
            match e {
                WatchEvent::Job(id) => {
                    if seen.insert(id) {
                        ids.push(id);
                    }
                }
                WatchEvent::Master => {}
                WatchEvent::Rescan => rescan = true,
            }
        }
        // Read first, then check the master file (see `master`).
        let jobs: Vec<JobFile> = ids.iter().filter_map(|id| self.read(*id)).collect();
        if let Some(RoleChange::BecameMaster(at)) = self.refresh_master()? {
            // The catch-up re-reads these files too, newer: drop our reads.
            let slack =
                duration_us(self.config.handover_slack) + duration_us(self.config.catch_up_slack);
            return self.catch_up(Some(at - slack), "takeover").await;
        }
        if rescan {
            inc(&self.metrics.rescans, 1);
            return self
                .catch_up(self.since_watermark(), "inotify overflow")
                .await;
        }
        for job in &jobs {
            self.apply(job).await?;
        }
        self.advance_watermark(started);
        Ok(())
    }

    /// Starts saving the state file, on a blocking thread, once its marks
    /// are all handed off; one save at a time, each newer than the last.
    fn maybe_save(&mut self, handed_off: u64, force: bool) {
        if let Some(h) = &mut self.saving {
            match h.now_or_never() {
                // Still writing: the next tick tries again.
                None => return,
                Some(done) => {
                    self.saving = None;
                    self.saved(done);
                }
            }
        }
        if let Some(snap) = self.snapshot_to_save(handed_off, force) {
            let dir = self.config.spool_dir.clone();
            self.saving = Some(tokio::task::spawn_blocking(move || {
                state::save_state(&dir, &snap)
            }));
        }
    }

    /// The last save at shutdown, after any save still running.
    async fn final_save(&mut self) {
        if let Some(h) = self.saving.take() {
            let done = h.await;
            self.saved(done);
        }
        if let Some(snap) = self.snapshot_to_save(u64::MAX, true) {
            let done = state::save_state(&self.config.spool_dir, &snap);
            self.saved(Ok(done));
        }
    }

    fn snapshot_to_save(&mut self, handed_off: u64, force: bool) -> Option<SavedState> {
        if self.pending_snapshot.is_none() && (self.dirty || force) {
            let snap =
                SavedState::capture(&self.marks, self.history.transitions(), self.watermark_us);
            self.pending_snapshot = Some((self.seq, snap));
            self.dirty = false;
        }
        match &self.pending_snapshot {
            Some((seq, _)) if *seq <= handed_off => self.pending_snapshot.take().map(|(_, s)| s),
            _ => None,
        }
    }

    fn saved(&mut self, done: Result<std::io::Result<()>, tokio::task::JoinError>) {
        let err = match done {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // Not fatal: the next start then republishes a little more.
        tracing::error!(dir = %self.config.spool_dir.display(), error = %err, "cannot save the state file");
        self.dirty = true;
    }
}

impl Eventd {
    /// An eventd publishing to `bus`.
    pub fn new(config: EventdConfig, bus: Arc<dyn EventBus>) -> Self {
        Self {
            config,
            bus,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// The live counters (read them while [`Eventd::run`] runs).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until `cancel`: catches up, then follows the queue. On
    /// shutdown, in-flight messages are confirmed or spooled and the state
    /// file is saved. Returns the final counters.
    pub async fn run(self, cancel: CancellationToken) -> Result<MetricsSnapshot, EventdError> {
        let config = self.config.absolute()?;
        std::fs::create_dir_all(&config.spool_dir)
            .map_err(|e| EventdError::Spool(format!("{}: {e}", config.spool_dir.display())))?;
        let saved = state::load_state(&config.spool_dir)
            .map_err(|e| EventdError::Spool(format!("state file: {e}")))?;
        let spool =
            spool::Spool::open(&config.spool_dir).map_err(|e| EventdError::Spool(e.to_string()))?;
        if !spool.is_empty() {
            tracing::info!(
                pending = spool.pending(),
                "replaying messages spooled by a previous run first"
            );
        }
        let history = match &config.master {
            MasterMode::Always => MasterHistory::always(),
            MasterMode::File { node_name, .. } => {
                MasterHistory::for_node(node_name, duration_us(config.handover_slack))
                    .with_transitions(
                        saved
                            .as_ref()
                            .map(|s| s.masters.clone())
                            .unwrap_or_default(),
                    )
            }
        };
        let marks = saved.as_ref().map_or_else(
            || Marks::new(config.max_tracked_jobs),
            |s| s.marks(config.max_tracked_jobs),
        );
        let handed_off = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(4096);
        let tuning = PublisherTuning {
            window: config.publish_window,
            timeout: config.publish_timeout,
            retry_min: config.retry_backoff.0,
            retry_max: config.retry_backoff.1,
            shutdown_grace: config.shutdown_grace,
        };
        let publisher = tokio::spawn(publisher::run(
            rx,
            self.bus.clone(),
            spool,
            self.metrics.clone(),
            handed_off.clone(),
            tuning,
        ));

        // Watch before the catch-up scan, so nothing falls in between.
        let (wtx, mut wrx) = mpsc::unbounded_channel();
        let master_path = match &config.master {
            MasterMode::File { path, .. } => Some(path.clone()),
            MasterMode::Always => None,
        };
        let watcher = watch::start(
            &config.queue_dir,
            master_path.as_deref(),
            wtx,
            self.metrics.clone(),
        )?;
        // A configured `config.data` that is not there at start (eventd
        // next to the simulator, which has none): as if none was configured.
        let config_file = match &config.ganeti_config {
            Some(p) if p.exists() => {
                tracing::info!(path = %p.display(), "instance NICs, disks and hvparams from Ganeti's configuration");
                Some(ganeti_config::ConfigFile::new(p))
            }
            Some(p) => {
                tracing::info!(path = %p.display(), "no Ganeti configuration there: instance NICs only from a create's literal input");
                None
            }
            None => None,
        };
        let mut core = Core {
            watermark_us: saved.as_ref().and_then(|s| s.watermark_us),
            config,
            metrics: self.metrics.clone(),
            marks,
            history,
            master_file: None,
            ganeti_config: config_file,
            tx: Some(tx),
            seq: 0,
            dirty: false,
            pending_snapshot: None,
            saving: None,
        };
        self.metrics.master.store(
            matches!(core.config.master, MasterMode::Always),
            Ordering::Relaxed,
        );
        let result = async {
            core.refresh_master()?;
            let since = core.since_watermark();
            core.catch_up(since, if since.is_some() { "restart" } else { "first start" }).await?;
            let mut tick = tokio::time::interval(core.config.tick);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut batch = VecDeque::new();
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    ev = wrx.recv() => {
                        let Some(ev) = ev else {
                            return Err(EventdError::Watch { path: core.config.queue_dir.display().to_string(), reason: "the watcher stopped".into() });
                        };
                        batch.push_back(ev);
                        while batch.len() < 4096 {
                            match wrx.try_recv() {
                                Ok(ev) => batch.push_back(ev),
                                Err(_) => break,
                            }
                        }
                        core.handle(batch.drain(..).collect()).await?;
                    }
                    _ = tick.tick() => {
                        if publisher.is_finished() {
                            // Only on a spool write error: stop (its error is returned below).
                            return Err(EventdError::Spool("the publishing task stopped".into()));
                        }
                        if let Some(RoleChange::BecameMaster(at)) = core.refresh_master()? {
                            let slack = duration_us(core.config.handover_slack) + duration_us(core.config.catch_up_slack);
                            core.catch_up(Some(at - slack), "takeover").await?;
                        }
                        core.maybe_save(handed_off.load(Ordering::Acquire), false);
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(watcher);
        core.tx = None;
        core.pending_snapshot = None;
        let published = match publisher.await {
            Ok(r) => r,
            Err(e) => Err(EventdError::Spool(format!("publishing task failed: {e}"))),
        };
        if published.is_ok() {
            // Everything is confirmed or spooled now: the state can be saved.
            core.final_save().await;
        } else if let Some(h) = core.saving.take() {
            let _ = h.await;
        }
        published?;
        result?;
        Ok(self.metrics.snapshot())
    }
}
