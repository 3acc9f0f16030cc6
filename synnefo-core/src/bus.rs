//! The in-process [`EventBus`] of the embedded default (`synnefo up`).
//!
//! One process runs eventd, the dispatcher and the API, so the broker can be
//! a pair of in-memory queues. It keeps the semantics the dispatcher relies
//! on with RabbitMQ, so the same dispatcher code is correct over both:
//!
//! * **competing consumers**: every subscription of a kind takes messages
//!   from the same queue, each message goes to one of them;
//! * **manual acknowledgement**: a delivered message stays owned by its
//!   subscription until it is acked, requeued or dead-lettered; a dropped
//!   subscription's unacked messages go back to the head of the queue,
//!   flagged `redelivered` (what the broker does when a channel dies);
//! * **prefetch**: a subscription holds at most `prefetch` unacked messages;
//! * **dead letters** are kept with their reason, readable through
//!   [`InProcessBus::dead_letters`];
//! * **bounded memory**: at most `capacity` messages per kind (ready plus
//!   unacked); a publisher waits for room up to `publish_timeout`, then gets
//!   [`BusError::Unavailable`] (eventd spools, as with a broker outage).
//!
//! There is no persistence: in the embedded mode eventd re-reads the Ganeti
//! job queue on start, which is what makes a crash lose nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::error::BusError;
use crate::messages::MessageKind;
use crate::ports::{Delivery, EventBus, Subscription};

/// Limits of an [`InProcessBus`].
#[derive(Debug, Clone)]
pub struct InProcessBusConfig {
    /// Messages per kind, ready plus unacked.
    pub capacity: usize,
    /// Unacked messages per subscription.
    pub prefetch: usize,
    /// Dead letters kept per kind (the oldest is logged and discarded
    /// beyond that).
    pub dead_letter_capacity: usize,
    /// How long a publisher waits for room before [`BusError::Unavailable`].
    pub publish_timeout: Duration,
}

impl Default for InProcessBusConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            prefetch: 512,
            dead_letter_capacity: 10_000,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// A message that could not be parsed or applied, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its kind (queue).
    pub kind: MessageKind,
    /// The raw body.
    pub body: Vec<u8>,
    /// Why it was dead-lettered.
    pub reason: String,
}

/// Message counts of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Waiting for a consumer.
    pub ready: usize,
    /// Delivered, not yet acked.
    pub unacked: usize,
    /// Dead letters kept.
    pub dead: usize,
}

#[derive(Debug)]
struct Message {
    /// Publish order, to put returned messages back where they were.
    seq: u64,
    body: Vec<u8>,
    redelivered: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<Message>,
    unacked: usize,
    dead: VecDeque<DeadLetter>,
    next_seq: u64,
}

#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when messages become ready (or the bus closes).
    available: Notify,
    /// Signalled when room frees up (or the bus closes).
    space: Notify,
}

#[derive(Debug)]
struct Inner {
    config: InProcessBusConfig,
    /// One queue per [`MessageKind`], in declaration order.
    queues: [Queue; 5],
    closed: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn queue(&self, kind: MessageKind) -> &Queue {
        &self.queues[match kind {
            MessageKind::OpStatus => 0,
            MessageKind::NetStatus => 1,
            MessageKind::NetworkStatus => 2,
            MessageKind::Progress => 3,
            MessageKind::ClusterStatus => 4,
        }]
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn lock(q: &Queue) -> MutexGuard<'_, QueueState> {
    // A panic while holding the lock cannot leave the state half-updated
    // in a way that matters more than losing the bus; keep going.
    q.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The in-process bus; cheap to clone (clones share the queues).
#[derive(Debug, Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(InProcessBusConfig::default())
    }
}

impl InProcessBus {
    /// A new, empty bus.
    pub fn new(config: InProcessBusConfig) -> Self {
        let queue = || Queue {
            state: Mutex::new(QueueState::default()),
            available: Notify::new(),
            space: Notify::new(),
        };
        let config = InProcessBusConfig {
            capacity: config.capacity.max(1),
            prefetch: config.prefetch.max(1),
            ..config
        };
        Self {
            inner: Arc::new(Inner {
                config,
                queues: std::array::from_fn(|_| queue()),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The dead letters of one kind, oldest first.
    pub fn dead_letters(&self, kind: MessageKind) -> Vec<DeadLetter> {
        lock(self.inner.queue(kind)).dead.iter().cloned().collect()
    }

    /// Current counts of one kind.
    pub fn depth(&self, kind: MessageKind) -> QueueDepth {
        let st = lock(self.inner.queue(kind));
        QueueDepth {
            ready: st.ready.len(),
            unacked: st.unacked,
            dead: st.dead.len(),
        }
    }

    /// Shuts the bus down: publishers and consumers get [`BusError::Closed`].
    pub fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for q in &self.inner.queues {
            q.available.notify_waiters();
            q.space.notify_waiters();
        }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, kind: MessageKind, body: Vec<u8>) -> Result<(), BusError> {
        let q = self.inner.queue(kind);
        let deadline = tokio::time::Instant::now() + self.inner.config.publish_timeout;
        loop {
            let space = q.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.inner.is_closed() {
                return Err(BusError::Closed);
            }
            {
                let mut st = lock(q);
                if st.ready.len() + st.unacked < self.inner.config.capacity {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    st.ready.push_back(Message {
                        seq,
                        body,
                        redelivered: false,
                    });
                    drop(st);
                    q.available.notify_waiters();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(BusError::Unavailable(format!(
                    "in-process {} queue full ({} messages) for {:?}",
                    kind.type_name(),
                    self.inner.config.capacity,
                    self.inner.config.publish_timeout
                )));
            }
        }
    }

    async fn subscribe(&self, kind: MessageKind) -> Result<Box<dyn Subscription>, BusError> {
        if self.inner.is_closed() {
            return Err(BusError::Closed);
        }
        Ok(Box::new(InProcessSubscription {
            inner: self.inner.clone(),
            kind,
            next_tag: 1,
            unacked: BTreeMap::new(),
        }))
    }
}

/// A consumer of an [`InProcessBus`] queue.
#[derive(Debug)]
pub struct InProcessSubscription {
    inner: Arc<Inner>,
    kind: MessageKind,
    next_tag: u64,
    unacked: BTreeMap<u64, Message>,
}

impl InProcessSubscription {
    fn take(&mut self, tag: u64) -> Option<Message> {
        self.unacked.remove(&tag)
    }

    fn release(&self, st: &mut QueueState, n: usize) {
        st.unacked = st.unacked.saturating_sub(n);
    }
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn recv_batch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        let inner = self.inner.clone();
        let q = inner.queue(self.kind);
        loop {
            let available = q.available.notified();
            tokio::pin!(available);
            available.as_mut().enable();
            if inner.is_closed() {
                return Err(BusError::Closed);
            }
            let room = inner.config.prefetch.saturating_sub(self.unacked.len());
            if room > 0 {
                let mut st = lock(q);
                let n = max.min(room).min(st.ready.len());
                if n > 0 {
                    st.unacked += n;
                    let mut out = Vec::with_capacity(n);
                    for m in st.ready.drain(..n) {
                        let tag = self.next_tag;
                        self.next_tag += 1;
                        out.push(Delivery {
                            tag,
                            kind: self.kind,
                            body: m.body.clone(),
                            redelivered: m.redelivered,
                        });
                        self.unacked.insert(tag, m);
                    }
                    return Ok(out);
                }
            }
            // Nothing ready, or this subscription holds `prefetch` unacked
            // messages (then only its own acks make room).
            available.await;
        }
    }

    async fn ack(&mut self, tags: &[u64]) -> Result<(), BusError> {
        let mut acked = 0;
        let mut unknown = Vec::new();
        for &t in tags {
            match self.take(t) {
                Some(_) => acked += 1,
                None => unknown.push(t),
            }
        }
        let q = self.inner.queue(self.kind);
        {
            let mut st = lock(q);
            self.release(&mut st, acked);
        }
        q.space.notify_waiters();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(BusError::Other(format!(
                "unknown delivery tags {unknown:?}"
            )))
        }
    }

    async fn dead_letter(&mut self, tag: u64, reason: &str) -> Result<(), BusError> {
        let m = self
            .take(tag)
            .ok_or_else(|| BusError::Other(format!("unknown delivery tag {tag}")))?;
        let q = self.inner.queue(self.kind);
        {
            let mut st = lock(q);
            self.release(&mut st, 1);
            if st.dead.len() >= self.inner.config.dead_letter_capacity.max(1)
                && let Some(old) = st.dead.pop_front()
            {
                tracing::error!(
                    kind = old.kind.type_name(),
                    reason = %old.reason,
                    body = %String::from_utf8_lossy(&old.body),
                    "in-process dead-letter store full: discarding the oldest dead letter"
                );
            }
            tracing::warn!(kind = self.kind.type_name(), %reason, "message dead-lettered");
            st.dead.push_back(DeadLetter {
                kind: self.kind,
                body: m.body,
                reason: reason.to_string(),
            });
        }
        q.space.notify_waiters();
        Ok(())
    }

    async fn requeue(&mut self, tag: u64) -> Result<(), BusError> {
        let mut m = self
            .take(tag)
            .ok_or_else(|| BusError::Other(format!("unknown delivery tag {tag}")))?;
        m.redelivered = true;
        let q = self.inner.queue(self.kind);
        {
            let mut st = lock(q);
            self.release(&mut st, 1);
            st.ready.push_front(m);
        }
        q.available.notify_waiters();
        Ok(())
    }
}

impl Drop for InProcessSubscription {
    fn drop(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        let q = self.inner.queue(self.kind);
        let returned = std::mem::take(&mut self.unacked);
        {
            let mut st = lock(q);
            self.release(&mut st, returned.len());
            // Back to the head of the queue in their original order.
            let mut msgs: Vec<Message> = returned.into_values().collect();
            msgs.sort_by_key(|m| std::cmp::Reverse(m.seq));
            for mut m in msgs {
                m.redelivered = true;
                st.ready.push_front(m);
            }
        }
        q.available.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(capacity: usize, prefetch: usize) -> InProcessBus {
        InProcessBus::new(InProcessBusConfig {
            capacity,
            prefetch,
            dead_letter_capacity: 2,
            publish_timeout: Duration::from_millis(50),
        })
    }

    fn bodies(d: &[Delivery]) -> Vec<String> {
        d.iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn publish_then_consume_and_ack() {
        let bus = bus(10, 10);
        let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        for i in 0..3 {
            bus.publish(MessageKind::OpStatus, format!("m{i}").into_bytes())
                .await
                .unwrap();
        }
        bus.publish(MessageKind::NetStatus, b"n".to_vec())
            .await
            .unwrap();
        let got = sub.recv_batch(2).await.unwrap();
        assert_eq!(bodies(&got), ["m0", "m1"]);
        assert!(
            got.iter()
                .all(|d| d.kind == MessageKind::OpStatus && !d.redelivered)
        );
        let rest = sub.recv_batch(10).await.unwrap();
        assert_eq!(bodies(&rest), ["m2"]);
        let tags: Vec<u64> = got.iter().chain(&rest).map(|d| d.tag).collect();
        sub.ack(&tags).await.unwrap();
        let d = bus.depth(MessageKind::OpStatus);
        assert_eq!((d.ready, d.unacked), (0, 0));
        assert_eq!(
            bus.depth(MessageKind::NetStatus).ready,
            1,
            "kinds are separate queues"
        );
    }

    #[tokio::test]
    async fn competing_consumers_share_the_queue() {
        let bus = bus(100, 3);
        let mut a = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        let mut b = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        for i in 0..6 {
            bus.publish(MessageKind::OpStatus, vec![i]).await.unwrap();
        }
        let ga = a.recv_batch(100).await.unwrap();
        let gb = b.recv_batch(100).await.unwrap();
        assert_eq!(ga.len(), 3, "prefetch caps each consumer");
        assert_eq!(gb.len(), 3);
        let mut all: Vec<u8> = ga.iter().chain(&gb).map(|d| d.body[0]).collect();
        all.sort_unstable();
        assert_eq!(
            all,
            [0, 1, 2, 3, 4, 5],
            "each message to exactly one consumer"
        );
    }

    #[tokio::test]
    async fn unacked_messages_of_a_dropped_subscription_are_redelivered() {
        let bus = bus(100, 100);
        let mut a = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        for i in 0..4u8 {
            bus.publish(MessageKind::OpStatus, vec![i]).await.unwrap();
        }
        let got = a.recv_batch(3).await.unwrap();
        a.ack(&[got[1].tag]).await.unwrap();
        drop(a);
        let mut b = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        let again = b.recv_batch(10).await.unwrap();
        let seen: Vec<(u8, bool)> = again.iter().map(|d| (d.body[0], d.redelivered)).collect();
        assert_eq!(
            seen,
            [(0, true), (2, true), (3, false)],
            "original order, flagged"
        );
    }

    #[tokio::test]
    async fn requeue_and_dead_letter() {
        let bus = bus(100, 100);
        let mut s = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        bus.publish(MessageKind::OpStatus, b"bad".to_vec())
            .await
            .unwrap();
        bus.publish(MessageKind::OpStatus, b"retry".to_vec())
            .await
            .unwrap();
        let got = s.recv_batch(10).await.unwrap();
        s.dead_letter(got[0].tag, "garbage").await.unwrap();
        s.requeue(got[1].tag).await.unwrap();
        let again = s.recv_batch(10).await.unwrap();
        assert_eq!(bodies(&again), ["retry"]);
        assert!(again[0].redelivered);
        let dead = bus.dead_letters(MessageKind::OpStatus);
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].body.as_slice(), dead[0].reason.as_str()),
            (&b"bad"[..], "garbage")
        );
        assert!(
            s.ack(&[got[0].tag]).await.is_err(),
            "a dead-lettered tag is gone"
        );
        let d = bus.depth(MessageKind::OpStatus);
        assert_eq!((d.ready, d.unacked, d.dead), (0, 1, 1));
    }

    #[tokio::test]
    async fn dead_letter_store_is_bounded() {
        let bus = bus(100, 100);
        let mut s = bus.subscribe(MessageKind::NetStatus).await.unwrap();
        for i in 0..3u8 {
            bus.publish(MessageKind::NetStatus, vec![i]).await.unwrap();
        }
        for d in s.recv_batch(10).await.unwrap() {
            s.dead_letter(d.tag, "x").await.unwrap();
        }
        let dead: Vec<u8> = bus
            .dead_letters(MessageKind::NetStatus)
            .iter()
            .map(|d| d.body[0])
            .collect();
        assert_eq!(dead, [1, 2]);
    }

    #[tokio::test]
    async fn a_full_queue_pushes_back_on_publishers() {
        let bus = bus(2, 10);
        bus.publish(MessageKind::OpStatus, vec![1]).await.unwrap();
        bus.publish(MessageKind::OpStatus, vec![2]).await.unwrap();
        let err = bus
            .publish(MessageKind::OpStatus, vec![3])
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Unavailable(_)), "{err}");

        // Unacked messages still count; an ack makes room for a waiting publisher.
        let mut s = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        let got = s.recv_batch(1).await.unwrap();
        let b2 = bus.clone();
        let waiting = tokio::spawn(async move { b2.publish(MessageKind::OpStatus, vec![3]).await });
        tokio::task::yield_now().await;
        s.ack(&[got[0].tag]).await.unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(bus.depth(MessageKind::OpStatus).ready, 2);
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_publish_and_on_close() {
        let bus = bus(10, 10);
        let mut s = bus.subscribe(MessageKind::OpStatus).await.unwrap();
        let b2 = bus.clone();
        let t = tokio::spawn(async move {
            let first = s.recv_batch(10).await.map(|d| d.len());
            let second = s.recv_batch(10).await.map(|d| d.len());
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        b2.publish(MessageKind::OpStatus, vec![1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        bus.close();
        let (first, second) = t.await.unwrap();
        assert_eq!(first.unwrap(), 1);
        assert!(matches!(second, Err(BusError::Closed)));
        assert!(matches!(
            bus.publish(MessageKind::OpStatus, vec![]).await,
            Err(BusError::Closed)
        ));
    }
}
