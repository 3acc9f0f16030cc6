//! eventd load harness: latency from a job file's rename to the bus's
//! confirm at 50 updates/s, and the highest update rate eventd sustains.
//!
//! Job files are written the way Ganeti writes them (temp file, rename
//! over `job-N`) into a queue directory on the local disk; every update is
//! one opcode status change, so each should produce exactly one message.
//! Figures are given next to baselines measured in the same run: a bare
//! `notify` watcher feeding a channel (rename -> event received), the floor
//! any inotify-based eventd sits on, and the bus alone publishing a message
//! of the same size (publish -> confirm), the broker's own floor; for the
//! sustained rate, the writer's ceiling and the bus's own (as many
//! publishes in flight as eventd's publisher keeps).
//!
//! The latency runs write to the local disk (`$TMPDIR`, like Ganeti's
//! `/var/lib/ganeti`); the rate steps write to tmpfs (`/dev/shm`), so they
//! measure eventd rather than the disk's rename cost.
//!
//! The bus: RabbitMQ through `synnefo_amqp::AmqpBus` when a broker answers
//! on `$AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), and the
//! in-process bus always; each result line says which.
//!
//! ```text
//! cargo run --release -p synnefo-examples --example eventd_latency [-- --quick]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use notify::Watcher;
use synnefo_core::BusError;
use synnefo_core::bus::{InProcessBus, InProcessBusConfig};
use synnefo_core::messages::{MessageKind, OpStatusMessage};
use synnefo_core::ports::{EventBus, Subscription};
use synnefo_core::state::JobStatus;
use synnefo_ganeti_master::eventd::testing::{FakeJob, JobWriter};
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use tokio_util::sync::CancellationToken;

/// Rename instants by (job, status), set by the writer just before rename.
type Stamps = Arc<Mutex<HashMap<(u64, String), Instant>>>;

/// Wraps a bus: records when each publish is confirmed.
struct TimingBus {
    inner: Arc<dyn EventBus>,
    stamps: Stamps,
    latencies: Mutex<Vec<Duration>>,
    seen: Mutex<HashMap<(u64, u32, String), u32>>,
    confirmed: AtomicU64,
}

#[async_trait]
impl EventBus for TimingBus {
    async fn publish(&self, kind: MessageKind, body: Vec<u8>) -> Result<(), BusError> {
        let msg: Option<OpStatusMessage> = serde_json::from_slice(&body).ok();
        self.inner.publish(kind, body).await?;
        let now = Instant::now();
        if let Some(m) = msg {
            let key = (m.job_id, m.status.clone());
            if let Some(t0) = self.stamps.lock().unwrap().get(&key) {
                self.latencies.lock().unwrap().push(now - *t0);
            }
            *self
                .seen
                .lock()
                .unwrap()
                .entry((m.job_id, m.op_index, m.status))
                .or_default() += 1;
        }
        self.confirmed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn subscribe(&self, kind: MessageKind) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(kind).await
    }
}

const STATUSES: [JobStatus; 4] = [
    JobStatus::Queued,
    JobStatus::Waiting,
    JobStatus::Running,
    JobStatus::Success,
];

/// Writes `rate` status changes per second for `secs` over `parallel`
/// jobs; returns the number of updates written.
fn write_load(
    dir: &Path,
    first_id: u64,
    rate: u64,
    secs: f64,
    parallel: usize,
    stamps: &Stamps,
) -> u64 {
    let w = JobWriter::new(dir);
    let mut jobs: Vec<(FakeJob, usize)> = Vec::new();
    let mut next_id = first_id;
    let total = (rate as f64 * secs) as u64;
    let start = Instant::now();
    let mut written = 0u64;
    // Paced runs end on time too: a writer that cannot keep up stops at
    // `secs` (plus a little), and reports what it wrote.
    while written < total && start.elapsed().as_secs_f64() < secs + 0.25 {
        // Pace: updates due by now.
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if written >= due {
            // Sleep, never spin: a spinning writer would take a core from
            // eventd and the broker. At high rates this writes in small
            // bursts (what is due after each short sleep).
            let ahead = Duration::from_secs_f64((written + 1) as f64 / rate as f64)
                .saturating_sub(start.elapsed());
            std::thread::sleep(ahead.max(Duration::from_micros(250)));
            continue;
        }
        let slot = (written as usize) % parallel;
        if slot >= jobs.len() || jobs[slot].1 == STATUSES.len() {
            let job = (
                FakeJob::new(next_id, &[("OP_INSTANCE_STARTUP", "snf-1")]),
                0,
            );
            next_id += 1;
            if slot >= jobs.len() {
                jobs.push(job);
            } else {
                jobs[slot] = job;
            }
        }
        let (job, step) = &mut jobs[slot];
        if *step > 0 {
            job.set_status(0, STATUSES[*step]);
        }
        stamps.lock().unwrap().insert(
            (job.id, STATUSES[*step].as_str().to_string()),
            Instant::now(),
        );
        w.write(job).expect("write job file");
        *step += 1;
        written += 1;
    }
    written
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The baseline: rename -> event received by a tokio task, and the most
/// events per second it takes.
async fn baseline(rate: u64, secs: f64) -> (Duration, Duration) {
    let dir = scratch(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && matches!(
                ev.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::To
                ))
            )
        {
            let _ = tx.send((Instant::now(), ev.paths));
        }
    })
    .unwrap();
    watcher
        .watch(dir.path(), notify::RecursiveMode::NonRecursive)
        .unwrap();
    let stamps: Stamps = Arc::default();
    let lat = Arc::new(Mutex::new(Vec::new()));
    let (s2, l2) = (stamps.clone(), lat.clone());
    let consumer = tokio::spawn(async move {
        while let Some((_, paths)) = rx.recv().await {
            let now = Instant::now();
            for p in paths {
                let Some(id) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(synnefo_ganeti_master::eventd::job_id_from_file_name)
                else {
                    continue;
                };
                // The latest stamp of this job.
                let st = s2.lock().unwrap();
                if let Some(t0) = STATUSES
                    .iter()
                    .rev()
                    .find_map(|s| st.get(&(id, s.as_str().to_string())))
                {
                    l2.lock().unwrap().push(now - *t0);
                }
            }
        }
    });
    let p = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || write_load(&p, 1, rate, secs, 4, &stamps))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(watcher);
    consumer.await.unwrap();
    let mut v = lat.lock().unwrap().clone();
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

/// The broker's floor: the same bus publishing a message of the same size
/// at `rate` with no file and no eventd, publish -> confirm. With RabbitMQ
/// this is the persistent-message confirm round trip, which no eventd can
/// beat.
async fn bus_floor(bus: &Arc<dyn EventBus>, rate: u64, secs: f64) -> (Duration, Duration) {
    let body = br#"{"type":"ganeti-op-status","instance":"snf-1","operation":"OP_INSTANCE_STARTUP","jobId":1,"opIndex":0,"status":"success","logmsg":null,"timestamp":1700000000000000,"cluster":"bench"}"#;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let n = (rate as f64 * secs) as usize;
    let mut v = Vec::with_capacity(n);
    let mut next = Instant::now();
    for _ in 0..n {
        tokio::time::sleep_until(next.into()).await;
        next += period;
        let t0 = Instant::now();
        if bus
            .publish(MessageKind::OpStatus, body.to_vec())
            .await
            .is_ok()
        {
            v.push(t0.elapsed());
        }
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

/// The bus's own ceiling: `window` publishes of that message in flight at
/// once for `secs`, as eventd's publisher keeps them; confirmed per second.
async fn bus_ceiling(bus: &Arc<dyn EventBus>, window: usize, secs: f64) -> f64 {
    use futures::StreamExt;
    let body = br#"{"type":"ganeti-op-status","instance":"snf-1","operation":"OP_INSTANCE_STARTUP","jobId":1,"opIndex":0,"status":"success","logmsg":null,"timestamp":1700000000000000,"cluster":"bench"}"#;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut done = 0u64;
    loop {
        while inflight.len() < window && Instant::now() < end {
            let bus = bus.clone();
            inflight.push(async move { bus.publish(MessageKind::OpStatus, body.to_vec()).await });
        }
        match inflight.next().await {
            Some(Ok(())) => done += 1,
            Some(Err(_)) => {}
            None => break,
        }
    }
    done as f64 / t0.elapsed().as_secs_f64()
}

struct Run {
    p50: Duration,
    p99: Duration,
    expected: u64,
    confirmed: u64,
    duplicates: u64,
    parse_errors: u64,
    temp_ignored: u64,
    drained_in: Duration,
}

/// A scratch directory: on tmpfs (`/dev/shm`) when `tmpfs`, else on the
/// local disk (`$TMPDIR`).
fn scratch(tmpfs: bool) -> tempfile::TempDir {
    if tmpfs && Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

async fn run_eventd(
    bus: Arc<dyn EventBus>,
    rate: u64,
    secs: f64,
    parallel: usize,
    tmpfs: bool,
) -> Run {
    let dir = scratch(tmpfs);
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let stamps: Stamps = Arc::default();
    let timing = Arc::new(TimingBus {
        inner: bus,
        stamps: stamps.clone(),
        latencies: Mutex::default(),
        seen: Mutex::default(),
        confirmed: AtomicU64::new(0),
    });
    let mut config = EventdConfig::new(&queue, dir.path().join("spool"), "snf-");
    config.tick = Duration::from_millis(200);
    // Publishes in flight (different jobs); `EVENTD_WINDOW` to try others.
    if let Some(w) = std::env::var("EVENTD_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.publish_window = w;
    }
    let eventd = Eventd::new(config, timing.clone());
    let metrics = eventd.metrics();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(eventd.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let q: PathBuf = queue.clone();
    let expected =
        tokio::task::spawn_blocking(move || write_load(&q, 1, rate, secs, parallel, &stamps))
            .await
            .unwrap();
    let end = Instant::now();
    // Drained: everything confirmed, or nothing new for 2 s.
    let mut last = (timing.confirmed.load(Ordering::Relaxed), Instant::now());
    while timing.confirmed.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let c = timing.confirmed.load(Ordering::Relaxed);
        if c != last.0 {
            last = (c, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let drained_in = last.1.max(end) - end;
    cancel.cancel();
    let m = handle.await.unwrap().unwrap();
    let mut lat = timing.latencies.lock().unwrap().clone();
    let duplicates = timing
        .seen
        .lock()
        .unwrap()
        .values()
        .map(|n| u64::from(n - 1))
        .sum();
    let _ = metrics;
    Run {
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        expected,
        confirmed: timing.confirmed.load(Ordering::Relaxed),
        duplicates,
        parse_errors: m.parse_errors,
        temp_ignored: m.temp_files_ignored,
        drained_in,
    }
}

/// Keeps a bus's queue empty (acks everything) so publishes never block.
fn drain(bus: Arc<dyn EventBus>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let Ok(mut sub) = bus.subscribe(MessageKind::OpStatus).await else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), sub.recv_batch(512)).await {
                Ok(Ok(batch)) => {
                    let tags: Vec<u64> = batch.iter().map(|d| d.tag).collect();
                    let _ = sub.ack(&tags).await;
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let lat_secs = if quick { 3.0 } else { 20.0 };
    let step_secs = if quick { 1.0 } else { 2.0 };

    let mut buses: Vec<(&str, Arc<dyn EventBus>)> = vec![(
        "in-process bus",
        Arc::new(InProcessBus::new(InProcessBusConfig::default())),
    )];
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match tokio::time::timeout(
        Duration::from_secs(5),
        synnefo_amqp::AmqpBus::connect(synnefo_amqp::AmqpConfig::new(url, "eventdbench-")),
    )
    .await
    {
        Ok(Ok(b)) => buses.push(("RabbitMQ (AmqpBus, publisher confirms)", Arc::new(b))),
        Ok(Err(e)) => println!("RabbitMQ not used: {e}"),
        Err(_) => println!("RabbitMQ not used: connect timed out"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    for (_, b) in &buses {
        drain(b.clone(), stop.clone());
    }

    println!("== latency at 50 updates/s ({lat_secs} s), rename -> confirm");
    let (b50, b99) = baseline(50, lat_secs).await;
    println!(
        "baseline (bare notify -> channel): p50 {:.0} us, p99 {:.0} us",
        us(b50),
        us(b99)
    );
    for (name, bus) in &buses {
        let (f50, f99) = bus_floor(bus, 50, lat_secs).await;
        println!(
            "{name} alone (publish -> confirm, no file, no eventd): p50 {:.0} us, p99 {:.0} us",
            us(f50),
            us(f99)
        );
        let r = run_eventd(bus.clone(), 50, lat_secs, 4, false).await;
        println!(
            "eventd + {name}: p50 {:.0} us ({:.2}x baseline), p99 {:.0} us ({:.2}x baseline); over the bus alone: p50 +{:.0} us, p99 +{:.0} us; {} of {} confirmed, duplicates {}, parse errors {}, temp-file events ignored {}",
            us(r.p50),
            us(r.p50) / us(b50).max(1.0),
            us(r.p99),
            us(r.p99) / us(b99).max(1.0),
            us(r.p50) - us(f50),
            us(r.p99) - us(f99),
            r.confirmed,
            r.expected,
            r.duplicates,
            r.parse_errors,
            r.temp_ignored
        );
    }

    println!(
        "== sustained rate ({step_secs} s per step; sustained = every update confirmed, none twice, drained within 100 ms)"
    );
    let rates: &[u64] = &[1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000];
    // The writer alone against a bare watcher: the ceiling of this machine.
    let t = Instant::now();
    let dir = scratch(true);
    let stamps: Stamps = Arc::default();
    let n = write_load(dir.path(), 1, 100_000_000, step_secs, 256, &stamps);
    let writer_max = n as f64 / t.elapsed().as_secs_f64();
    println!("writer alone (temp + rename on tmpfs, no watcher): {writer_max:.0} updates/s");
    for (name, bus) in &buses {
        let window = EventdConfig::new("q", "s", "p").publish_window;
        let ceiling = bus_ceiling(bus, window, step_secs).await;
        println!(
            "{name} alone, {window} publishes in flight (eventd's window): {ceiling:.0} confirmed/s"
        );
        let mut best = 0;
        for &rate in rates {
            if rate as f64 > writer_max * 0.9 {
                break;
            }
            let r = run_eventd(bus.clone(), rate, step_secs, 256, true).await;
            let achieved = r.expected as f64 / step_secs;
            if achieved < rate as f64 * 0.95 {
                println!(
                    "  {name} @ {rate}/s: the writer only managed {achieved:.0}/s on this machine now; stopping here"
                );
                break;
            }
            let ok = r.confirmed == r.expected
                && r.duplicates == 0
                && r.drained_in <= Duration::from_millis(100);
            println!(
                "  {name} @ {rate}/s: {} of {} confirmed, duplicates {}, drained in {:.0} ms, p50 {:.0} us, p99 {:.0} us -> {}",
                r.confirmed,
                r.expected,
                r.duplicates,
                r.drained_in.as_secs_f64() * 1e3,
                us(r.p50),
                us(r.p99),
                if ok { "sustained" } else { "NOT sustained" }
            );
            if !ok {
                break;
            }
            best = rate;
        }
        println!(
            "eventd + {name}: highest sustained {best} updates/s ({:.2}x the writer's own ceiling of {writer_max:.0}/s, {:.2}x the bus's own ceiling of {ceiling:.0}/s)",
            best as f64 / writer_max,
            best as f64 / ceiling
        );
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}
