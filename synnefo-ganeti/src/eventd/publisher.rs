//! The publishing task: broker confirms, or the spool; order kept per job.
//!
//! Messages arrive numbered (`seq`). While the broker answers, up to
//! `window` publishes are in flight at once (a confirm round trip is the
//! bottleneck), but never two of the same job, so a job's changes reach
//! the broker in order. The first publish that fails or times out switches
//! to spooling: intake pauses until the in-flight publishes settle (each
//! either confirmed or spooled), then every message goes to the spool
//! behind the failed ones, and replay publishes the spool in file order,
//! one confirm at a time with backoff, before anything newer. Once the
//! spool is empty, direct publishing resumes.
//!
//! `handed_off` tells the main loop up to which `seq` every message is
//! confirmed or durably spooled: the state file only ever records marks up
//! to there, so a crash republishes rather than loses.

use std::collections::{BTreeSet, HashMap};
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
    let mut blocked: Option<Outgoing> = None;
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
            if let Some(b) = blocked.take() {
                spool.append(&[b.record()]).map_err(spool_err)?;
                inc(&st.metrics.spooled, 1);
                st.done(b.seq);
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

        if closed && inflight.is_empty() && blocked.is_none() {
            break;
        }

        let intake =
            !closed && blocked.is_none() && inflight.len() < tuning.window && spool.is_empty();
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
                    && let Some(b) = blocked.take_if(|b| !inflight_jobs.contains_key(&b.job_id))
                {
                    start(b, &mut inflight, &mut inflight_jobs);
                }
            }
            m = rx.recv(), if intake => match m {
                None => closed = true,
                Some(m) => {
                    st.received(m.seq);
                    if inflight_jobs.contains_key(&m.job_id) {
                        blocked = Some(m);
                    } else {
                        start(m, &mut inflight, &mut inflight_jobs);
                    }
                }
            },
            else => {
                // Nothing in flight and no intake: only a blocked message
                // whose job is no longer in flight can be left.
                if let Some(b) = blocked.take() {
                    start(b, &mut inflight, &mut inflight_jobs);
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
