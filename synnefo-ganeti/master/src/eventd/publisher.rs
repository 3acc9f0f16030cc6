//! The publishing task: broker confirms, or the spool; order kept per job.
//!
//! Messages arrive numbered (`seq`). While the broker answers, up to
//! `window` publishes are in flight at once (a confirm round trip is the
//! bottleneck), but never two of the same job, so a job's changes reach
//! the broker in order (a job's later messages wait in a per-job queue
//! while the others go on). The first publish that fails or times out switches
//! to spooling: intake pauses until the in-flight publishes settle (each
//! either confirmed or spooled), then every message goes to the spool
//! behind the failed ones, and replay publishes the spool in file order,
//! one confirm at a time with backoff, before anything newer. Once the
//! spool is empty, direct publishing resumes.
//!
//! `handed_off` tells the main loop up to which `seq` every message is
//! confirmed or durably spooled: the state file only ever records marks up
//! to there, so a crash republishes rather than loses.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::EventBus;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::metrics::{Metrics, inc};
use super::spool::{Spool, SpoolRecord};

/// One message for the broker.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub seq: u64,
    pub job_id: u64,
    pub kind: MessageKind,
    pub body: Vec<u8>,
}

impl Outgoing {
    fn record(&self) -> SpoolRecord {
        SpoolRecord {
            kind: self.kind,
            body: self.body.clone(),
        }
    }
}

/// Tuning of the publishing task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublisherTuning {
    pub window: usize,
    pub timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub shutdown_grace: Duration,
}

struct State {
    outstanding: BTreeSet<u64>,
    max_seen: u64,
    handed_off: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl State {
    fn publish_handoff(&self) {
        let upto = self.outstanding.first().map_or(self.max_seen, |s| s - 1);
        self.handed_off.store(upto, Ordering::Release);
    }
    fn received(&mut self, seq: u64) {
        self.max_seen = self.max_seen.max(seq);
        self.outstanding.insert(seq);
    }
    fn done(&mut self, seq: u64) {
        self.outstanding.remove(&seq);
    }
}

type Inflight =
    FuturesUnordered<futures::future::BoxFuture<'static, (Outgoing, Result<(), String>)>>;

fn spool_err(e: std::io::Error) -> super::EventdError {
    super::EventdError::Spool(e.to_string())
}

/// Runs until `rx` closes and everything is confirmed or spooled (with a
/// short grace to drain the spool at shutdown).
pub(crate) async fn run(
    mut rx: mpsc::Receiver<Outgoing>,
    bus: Arc<dyn EventBus>,
    mut spool: Spool,
    metrics: Arc<Metrics>,
    handed_off: Arc<AtomicU64>,
    tuning: PublisherTuning,
) -> Result<(), super::EventdError> {
    let mut st = State {
        outstanding: BTreeSet::new(),
        max_seen: handed_off.load(Ordering::Acquire),
        handed_off,
        metrics,
    };
    let mut inflight: Inflight = FuturesUnordered::new();
    let mut inflight_jobs: HashMap<u64, u32> = HashMap::new();
    // Messages of jobs that have one in flight, in order, per job.
    let mut held: HashMap<u64, VecDeque<Outgoing>> = HashMap::new();
    let mut held_count = 0usize;
    let mut closed = false;
    let mut backoff = tuning.retry_min;
    let mut retry_at = Instant::now();
    let mut grace_deadline: Option<Instant> = None;
    st.metrics
        .spool_depth
        .store(spool.pending(), Ordering::Relaxed);

    let start = |out: Outgoing, inflight: &mut Inflight, jobs: &mut HashMap<u64, u32>| {
        *jobs.entry(out.job_id).or_default() += 1;
        let bus = bus.clone();
        let timeout = tuning.timeout;
        inflight.push(Box::pin(async move {
            let r = tokio::time::timeout(timeout, bus.publish(out.kind, out.body.clone())).await;
            let r = match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no confirm within {timeout:?}")),
            };
            (out, r)
        }));
    };

    loop {
        st.publish_handoff();
        st.metrics
            .spool_depth
            .store(spool.pending(), Ordering::Relaxed);

        // Spool mode: only once every in-flight publish has settled.
        if !spool.is_empty() && inflight.is_empty() {
            if held_count > 0 {
                // Each job's held messages, in order, behind what failed.
                let msgs: Vec<Outgoing> = held.drain().flat_map(|(_, q)| q).collect();
                held_count = 0;
                let recs: Vec<SpoolRecord> = msgs.iter().map(Outgoing::record).collect();
                spool.append(&recs).map_err(spool_err)?;
                inc(&st.metrics.spooled, recs.len() as u64);
                for m in &msgs {
                    st.done(m.seq);
                }
                continue;
            }
            let mut wake = retry_at;
            if closed {
                let deadline =
                    *grace_deadline.get_or_insert_with(|| Instant::now() + tuning.shutdown_grace);
                if Instant::now() >= deadline {
                    tracing::warn!(pending = spool.pending(), path = %spool.path().display(), "shutting down with messages in the spool; they are replayed at the next start");
                    break;
                }
                wake = wake.min(deadline);
            }
            tokio::select! {
                biased;
                m = rx.recv(), if !closed => match m {
                    None => closed = true,
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < 1024 {
                            match rx.try_recv() {
                                Ok(m) => batch.push(m),
                                Err(_) => break,
                            }
                        }
                        let recs: Vec<SpoolRecord> = batch.iter().map(Outgoing::record).collect();
                        spool.append(&recs).map_err(spool_err)?;
                        inc(&st.metrics.spooled, recs.len() as u64);
                        for m in &batch {
                            st.max_seen = st.max_seen.max(m.seq);
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    for _ in 0..256 {
                        if Instant::now() < retry_at {
                            break;
                        }
                        let Some(rec) = spool.head().map_err(spool_err)?.cloned() else { break };
                        match tokio::time::timeout(tuning.timeout, bus.publish(rec.kind, rec.body)).await {
                            Ok(Ok(())) => {
                                spool.confirm_head().map_err(spool_err)?;
                                inc(&st.metrics.replayed, 1);
                                inc(&st.metrics.published, 1);
                                backoff = tuning.retry_min;
                            }
                            Ok(Err(e)) => {
                                inc(&st.metrics.publish_failures, 1);
                                tracing::debug!(error = %e, "broker still unavailable; spool waits");
                                retry_at = Instant::now() + backoff;
                                backoff = (backoff * 2).min(tuning.retry_max);
                                break;
                            }
                            Err(_) => {
                                inc(&st.metrics.publish_failures, 1);
                                retry_at = Instant::now() + backoff;
                                backoff = (backoff * 2).min(tuning.retry_max);
                                break;
                            }
                        }
                    }
                    if spool.is_empty() {
                        tracing::info!("spool drained; publishing directly again");
                    }
                }
            }
            continue;
        }

        if closed && inflight.is_empty() && held_count == 0 {
            break;
        }

        let intake = !closed
            && inflight.len() < tuning.window
            && held_count < tuning.window
            && spool.is_empty();
        tokio::select! {
            biased;
            Some((out, res)) = inflight.next(), if !inflight.is_empty() => {
                if let Some(n) = inflight_jobs.get_mut(&out.job_id) {
                    *n -= 1;
                    if *n == 0 {
                        inflight_jobs.remove(&out.job_id);
                    }
                }
                match res {
                    Ok(()) => inc(&st.metrics.published, 1),
                    Err(reason) => {
                        inc(&st.metrics.publish_failures, 1);
                        if spool.is_empty() {
                            tracing::warn!(%reason, "publish failed; spooling until the broker is back");
                        }
                        spool.append(&[out.record()]).map_err(spool_err)?;
                        inc(&st.metrics.spooled, 1);
                        retry_at = Instant::now() + backoff;
                    }
                }
                st.done(out.seq);
                if spool.is_empty()
                    && !inflight_jobs.contains_key(&out.job_id)
                    && let Some(q) = held.get_mut(&out.job_id)
                {
                    if let Some(next) = q.pop_front() {
                        held_count -= 1;
                        start(next, &mut inflight, &mut inflight_jobs);
                    }
                    if q.is_empty() {
                        held.remove(&out.job_id);
                    }
                }
            }
            m = rx.recv(), if intake => match m {
                None => closed = true,
                Some(m) => {
                    st.received(m.seq);
                    if inflight_jobs.contains_key(&m.job_id) {
                        held.entry(m.job_id).or_default().push_back(m);
                        held_count += 1;
                    } else {
                        start(m, &mut inflight, &mut inflight_jobs);
                    }
                }
            },
            else => {
                // Nothing in flight and no intake: start held messages
                // whose job is no longer in flight (defensive; completions
                // already do).
                let ready: Vec<u64> = held.keys().copied().filter(|j| !inflight_jobs.contains_key(j)).collect();
                for j in ready {
                    if let Some(mut q) = held.remove(&j) {
                        if let Some(next) = q.pop_front() {
                            held_count -= 1;
                            start(next, &mut inflight, &mut inflight_jobs);
                        }
                        if !q.is_empty() {
                            held.insert(j, q);
                        }
                    }
                }
            }
        }
    }
    st.publish_handoff();
    st.metrics
        .spool_depth
        .store(spool.pending(), Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use synnefo_core::BusError;
    use synnefo_core::ports::Subscription;

    /// Confirms after a delay that varies per message, so concurrent
    /// publishes finish out of order; can fail the first `fail` calls.
    #[derive(Default)]
    struct JitterBus {
        log: Mutex<Vec<(u64, u64)>>,
        fail: AtomicU64,
    }

    #[async_trait]
    impl EventBus for JitterBus {
        async fn publish(&self, _kind: MessageKind, body: Vec<u8>) -> Result<(), BusError> {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let (job, n) = (v["job"].as_u64().unwrap(), v["n"].as_u64().unwrap());
            tokio::time::sleep(Duration::from_micros((n * 7919 % 13) * 150)).await;
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(BusError::Unavailable("jitter".into()));
            }
            self.log.lock().unwrap().push((job, n));
            Ok(())
        }
        async fn subscribe(&self, _kind: MessageKind) -> Result<Box<dyn Subscription>, BusError> {
            Err(BusError::Closed)
        }
    }

    async fn run_with(fail: u64) -> (Vec<(u64, u64)>, Arc<Metrics>) {
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(JitterBus::default());
        bus.fail.store(fail, Ordering::SeqCst);
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::channel(16);
        let tuning = PublisherTuning {
            window: 8,
            timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_millis(5),
            shutdown_grace: Duration::from_secs(5),
        };
        let handed = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            rx,
            bus.clone(),
            Spool::open(dir.path()).unwrap(),
            metrics.clone(),
            handed.clone(),
            tuning,
        ));
        for seq in 1..=300u64 {
            let (job, n) = (seq % 5, seq);
            let body = serde_json::to_vec(&serde_json::json!({"job": job, "n": n})).unwrap();
            tx.send(Outgoing {
                seq,
                job_id: job,
                kind: MessageKind::OpStatus,
                body,
            })
            .await
            .unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
        assert_eq!(handed.load(Ordering::SeqCst), 300, "everything handed off");
        let log = bus.log.lock().unwrap().clone();
        (log, metrics)
    }

    fn check(log: &[(u64, u64)]) {
        assert_eq!(log.len(), 300, "each message once");
        let mut seen: Vec<u64> = log.iter().map(|(_, n)| *n).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 300, "none twice");
        for job in 0..5 {
            let ns: Vec<u64> = log
                .iter()
                .filter(|(j, _)| *j == job)
                .map(|(_, n)| *n)
                .collect();
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "job {job} in order: {ns:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_keep_each_jobs_order() {
        let (log, m) = run_with(0).await;
        check(&log);
        assert_eq!(m.snapshot().published, 300);
        // Different jobs did overlap (the window was used).
        assert!(
            log.windows(2).any(|w| w[0].1 > w[1].1),
            "some out-of-seq completion across jobs"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_in_the_middle_spool_and_keep_each_jobs_order() {
        let (log, m) = run_with(20).await;
        check(&log);
        let s = m.snapshot();
        assert!(
            s.spooled > 0 && s.replayed == s.spooled && s.spool_depth == 0,
            "{s:?}"
        );
    }
}
