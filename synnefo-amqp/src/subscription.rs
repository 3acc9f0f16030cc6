//! A consumer on one queue, with manual acks that survive reconnection.
//!
//! lapin's delivery tags belong to a channel and restart at 1 on a new one,
//! so a [`Delivery`] carries our own tag, mapped to the channel's tag while
//! that channel lives. After a broker loss the old channel's deliveries are
//! back on the queue (the broker requeues what was not acked) and will be
//! redelivered; acks for them are dropped rather than sent on the new
//! channel, where they would name other messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};
use synnefo_core::BusError;
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::{Delivery, Subscription};

use crate::error::{AmqpError, channel_err};
use crate::topology::{self, DEAD_AT_HEADER, QUEUE_HEADER, REASON_HEADER, short, text};
use crate::{Inner, headers_of, now_secs};

struct Live {
    channel: Channel,
    consumer: Consumer,
}

struct Pending {
    /// The channel's delivery tag.
    amqp_tag: u64,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

/// A competing consumer on one kind's queue (see the crate docs).
pub struct AmqpSubscription {
    inner: Arc<Inner>,
    kind: MessageKind,
    queue: String,
    live: Option<Live>,
    /// Our next delivery tag (never reused).
    next_tag: u64,
    /// Our first tag on the current channel; smaller tags are stale.
    epoch_start: u64,
    /// Delivered, not yet settled, on the current channel; in tag order,
    /// which is also the channel's tag order.
    pending: BTreeMap<u64, Pending>,
    consumers_opened: u64,
}

impl std::fmt::Debug for AmqpSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSubscription")
            .field("queue", &self.queue)
            .field("connected", &self.live.is_some())
            .field("unacked", &self.pending.len())
            .finish()
    }
}

impl AmqpSubscription {
    /// Subscribes; tries to connect at once, and keeps trying in
    /// [`Subscription::recv_batch`] if the broker is away now. A topology
    /// conflict (a queue declared with other arguments) is an error.
    pub(crate) async fn open(inner: Arc<Inner>, kind: MessageKind) -> Result<Self, AmqpError> {
        if MessageKind::SYNNEFO.contains(&kind) && !inner.config.synnefo_queues {
            return Err(AmqpError::Config(format!(
                "no {} queue: Synnefo's queues are off (amqp.topology.synnefo_queues = false)",
                kind.type_name()
            )));
        }
        let mut sub = AmqpSubscription {
            queue: inner.config.queue_name(kind),
            inner,
            kind,
            live: None,
            next_tag: 1,
            epoch_start: 1,
            pending: BTreeMap::new(),
            consumers_opened: 0,
        };
        match sub.connect().await {
            Ok(()) => {}
            Err(e @ (AmqpError::Topology(_) | AmqpError::Config(_) | AmqpError::Closed)) => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(queue = %sub.queue, error = %e, "broker unavailable; the consumer will keep trying")
            }
        }
        Ok(sub)
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Deliveries held, not yet acked.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    async fn connect(&mut self) -> Result<(), AmqpError> {
        let cfg = &self.inner.config;
        let channel = self.inner.open_channel(&self.inner.consumer).await?;
        channel
            .basic_qos(cfg.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| channel_err("basic.qos", e))?;
        self.consumers_opened += 1;
        let tag = format!(
            "{}-{}-{}",
            cfg.connection_name, self.queue, self.consumers_opened
        );
        let consumer = channel
            .basic_consume(
                short(&self.queue)?,
                short(&tag)?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| channel_err("basic.consume", e))?;
        self.live = Some(Live { channel, consumer });
        self.epoch_start = self.next_tag;
        self.pending.clear();
        Ok(())
    }

    /// Forgets the current channel: its unacked deliveries go back to the
    /// queue (the broker requeues them when the channel closes).
    fn drop_live(&mut self, why: &str) {
        if self.live.take().is_some() {
            tracing::warn!(
                queue = %self.queue,
                unacked = self.pending.len(),
                %why,
                "consumer channel lost; unacked messages will be redelivered"
            );
        }
        self.pending.clear();
        self.epoch_start = self.next_tag;
    }

    async fn ensure_live(&mut self) -> Result<(), BusError> {
        let mut backoff = self.inner.config.min_backoff;
        let mut attempts = 0u32;
        while self.live.is_none() {
            if self.inner.closed.is_cancelled() {
                return Err(BusError::Closed);
            }
            match self.connect().await {
                Ok(()) => {
                    if attempts > 0 {
                        tracing::info!(queue = %self.queue, attempts, "consumer reconnected");
                    }
                    return Ok(());
                }
                Err(e @ (AmqpError::Topology(_) | AmqpError::Config(_) | AmqpError::Closed)) => {
                    return Err(e.into());
                }
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(queue = %self.queue, error = %e, ?backoff, attempts, "cannot reach the broker; retrying");
                    }
                    tokio::select! {
                        _ = self.inner.closed.cancelled() => return Err(BusError::Closed),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                }
            }
        }
        Ok(())
    }

    fn track(
        next_tag: &mut u64,
        pending: &mut BTreeMap<u64, Pending>,
        kind: MessageKind,
        d: lapin::message::Delivery,
    ) -> Delivery {
        let tag = *next_tag;
        *next_tag += 1;
        pending.insert(
            tag,
            Pending {
                amqp_tag: d.delivery_tag,
                routing_key: d.routing_key.to_string(),
                body: d.data.clone(),
                properties: d.properties,
            },
        );
        Delivery {
            tag,
            kind,
            body: d.data,
            redelivered: d.redelivered,
        }
    }

    fn channel(&self) -> Result<&Channel, BusError> {
        self.live
            .as_ref()
            .map(|l| &l.channel)
            .ok_or_else(|| BusError::Unavailable("consumer channel lost".into()))
    }

    /// Classifies a tag not on the current channel: stale (an earlier
    /// channel's; the broker redelivers it) or never handed out / settled.
    fn is_stale(&self, tag: u64) -> bool {
        tag < self.epoch_start
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn recv_batch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        loop {
            self.ensure_live().await?;
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            let first = tokio::select! {
                _ = self.inner.closed.cancelled() => return Err(BusError::Closed),
                next = live.consumer.next() => next,
            };
            match first {
                Some(Ok(d)) => {
                    let mut out = Vec::with_capacity(max.min(self.inner.config.prefetch as usize));
                    out.push(Self::track(
                        &mut self.next_tag,
                        &mut self.pending,
                        self.kind,
                        d,
                    ));
                    let mut broken = None;
                    while out.len() < max {
                        match live.consumer.next().now_or_never() {
                            Some(Some(Ok(d))) => out.push(Self::track(
                                &mut self.next_tag,
                                &mut self.pending,
                                self.kind,
                                d,
                            )),
                            Some(Some(Err(e))) => {
                                broken = Some(e.to_string());
                                break;
                            }
                            Some(None) => {
                                broken = Some("consumer cancelled".to_string());
                                break;
                            }
                            None => break,
                        }
                    }
                    if let Some(why) = broken {
                        // What we got is handed out; its acks will be
                        // dropped and the broker redelivers it.
                        self.drop_live(&why);
                    }
                    return Ok(out);
                }
                Some(Err(e)) => self.drop_live(&e.to_string()),
                None => self.drop_live("consumer cancelled by the broker"),
            }
        }
    }

    async fn ack(&mut self, tags: &[u64]) -> Result<(), BusError> {
        let mut want = BTreeSet::new();
        let mut unknown = Vec::new();
        let mut stale = 0usize;
        for &t in tags {
            if self.pending.contains_key(&t) {
                want.insert(t);
            } else if self.is_stale(t) {
                stale += 1;
            } else {
                unknown.push(t);
            }
        }
        if stale > 0 {
            tracing::debug!(queue = %self.queue, stale, "dropping acks of a previous channel (redelivered instead)");
        }
        if !want.is_empty() {
            // The longest run of the oldest unsettled deliveries that are all
            // being acked goes out as one `multiple` ack.
            let mut prefix = 0usize;
            let mut upto = 0u64;
            for (t, p) in &self.pending {
                if want.contains(t) {
                    prefix += 1;
                    upto = p.amqp_tag;
                } else {
                    break;
                }
            }
            let singles: Vec<u64> = want
                .iter()
                .skip(prefix)
                .map(|t| self.pending[t].amqp_tag)
                .collect();
            let channel = self.channel()?.clone();
            let mut result = Ok(());
            if prefix > 0 {
                result = channel
                    .basic_ack(
                        upto,
                        BasicAckOptions {
                            multiple: prefix > 1,
                        },
                    )
                    .await;
            }
            for t in singles {
                if result.is_err() {
                    break;
                }
                result = channel
                    .basic_ack(t, BasicAckOptions { multiple: false })
                    .await;
            }
            if let Err(e) = result {
                self.drop_live(&format!("basic.ack failed: {e}"));
                return Err(BusError::Unavailable(format!(
                    "ack failed (the messages will be redelivered): {e}"
                )));
            }
            for t in &want {
                self.pending.remove(t);
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(BusError::Other(format!(
                "unknown delivery tags {unknown:?}"
            )))
        }
    }

    async fn dead_letter(&mut self, tag: u64, reason: &str) -> Result<(), BusError> {
        let Some(p) = self.pending.get(&tag) else {
            if self.is_stale(tag) {
                tracing::debug!(
                    tag,
                    "dead-letter of a previous channel's delivery: it is redelivered instead"
                );
                return Ok(());
            }
            return Err(BusError::Other(format!("unknown delivery tag {tag}")));
        };
        let cfg = &self.inner.config;
        let mut headers = headers_of(&p.properties);
        let mut put = |k: &str, v: AMQPValue| {
            if let Ok(k) = topology::short(k) {
                headers.insert(k, v);
            }
        };
        put(REASON_HEADER, text(reason));
        put(QUEUE_HEADER, text(&self.queue));
        put(DEAD_AT_HEADER, AMQPValue::Timestamp(now_secs()));
        let props = p
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let published = self
            .inner
            .publish_raw(&cfg.dead_letter_exchange, &p.routing_key, &p.body, props)
            .await;
        let amqp_tag = p.amqp_tag;
        let channel = self.channel()?.clone();
        let settled = match published {
            Ok(()) => {
                channel
                    .basic_ack(amqp_tag, BasicAckOptions { multiple: false })
                    .await
            }
            Err(e) => {
                tracing::error!(
                    queue = %self.queue,
                    %reason,
                    error = %e,
                    "cannot publish the dead letter; rejecting it into the queue's dead-letter exchange (reason only in this log and x-death)"
                );
                channel
                    .basic_nack(
                        amqp_tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: false,
                        },
                    )
                    .await
            }
        };
        if let Err(e) = settled {
            self.drop_live(&format!("settling a dead letter failed: {e}"));
            return Err(BusError::Unavailable(format!(
                "dead-lettering failed (the message will be redelivered): {e}"
            )));
        }
        self.pending.remove(&tag);
        self.inner
            .counters
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn requeue(&mut self, tag: u64) -> Result<(), BusError> {
        let Some(p) = self.pending.get(&tag) else {
            if self.is_stale(tag) {
                return Ok(());
            }
            return Err(BusError::Other(format!("unknown delivery tag {tag}")));
        };
        let amqp_tag = p.amqp_tag;
        let channel = self.channel()?.clone();
        if let Err(e) = channel
            .basic_reject(amqp_tag, BasicRejectOptions { requeue: true })
            .await
        {
            self.drop_live(&format!("basic.reject failed: {e}"));
            return Err(BusError::Unavailable(format!(
                "requeue failed (the message will be redelivered): {e}"
            )));
        }
        self.pending.remove(&tag);
        Ok(())
    }
}
