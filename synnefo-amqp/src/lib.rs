//! # synnefo-amqp
//!
//! The RabbitMQ [`EventBus`] of Synnefo (the seed's QUEUE node), over
//! [lapin](https://docs.rs/lapin) 4.
//!
//! What the dispatcher and eventd rely on, and how this crate provides it:
//!
//! * **Topology**: a durable topic exchange `ganeti`; one durable queue per
//!   [`MessageKind`] (`<prefix>-events-op`, `<prefix>-events-net`) bound by
//!   routing key `ganeti.<prefix>.event.op|net`; a dead-letter exchange
//!   `ganeti.dead` and queue `<prefix>-events-dead`; and Synnefo
//!   0.16-0.20's `<prefix>-events-network|progress|cluster` queues bound by
//!   its routing keys ([`AmqpConfig::synnefo_bindings`]). All names are
//!   configurable. Quorum queues on request ([`AmqpConfig::quorum_queues`]).
//!   Declared by publishers and consumers alike, so nothing is published
//!   into the void. Queues that already exist (Synnefo's dispatcher
//!   declares them with its own arguments) are used as they are
//!   ([`ExistingQueues::Adopt`], the default).
//! * **No message lost on the way in**: persistent messages (delivery
//!   mode 2), publisher confirms, `mandatory` publishing: [`EventBus::publish`]
//!   returns only once the broker has the message, and reports
//!   [`BusError::Unavailable`] after [`AmqpConfig::publish_timeout`] of
//!   failed attempts so the caller can spool.
//! * **No message lost on the way out**: manual acks, sent by the
//!   dispatcher only after its database transaction commits; contiguous
//!   acks collapse into one `basic.ack multiple=true`. Prefetch bounds what a
//!   consumer holds.
//! * **Dead letters with a reason**: [`Subscription::dead_letter`]
//!   republishes the message (confirmed) to `ganeti.dead` with the reason in
//!   the `x-synnefo-reason` header, then acks it; if that fails it is
//!   rejected into the queue's own dead-letter exchange (the broker adds
//!   `x-death`), and if even that fails it stays unacked and comes back.
//! * **Broker loss**: publisher and consumers reconnect with exponential
//!   backoff. A [`Subscription`] keeps working across a broker restart; what
//!   it had not acked is redelivered by the broker, which is harmless
//!   because applying a notification twice is a no-op. Acks for deliveries
//!   of a previous connection are dropped (they will be redelivered).
//!
//! ```no_run
//! use synnefo_amqp::{AmqpBus, AmqpConfig};
//! use synnefo_core::messages::MessageKind;
//! use synnefo_core::ports::EventBus;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = AmqpBus::connect(AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "snf-")).await?;
//! bus.publish(MessageKind::OpStatus, br#"{"type":"ganeti-op-status"}"#.to_vec()).await?;
//! let mut sub = bus.subscribe(MessageKind::OpStatus).await?;
//! let batch = sub.recv_batch(100).await?;
//! // ... apply, commit, then:
//! sub.ack(&batch.iter().map(|d| d.tag).collect::<Vec<_>>()).await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod subscription;
mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use synnefo_core::BusError;
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::{EventBus, Subscription};
use synnefo_core::settings::mask_url_password;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{AmqpConfig, ExistingQueues, QueueBinding};
pub use error::AmqpError;
pub use subscription::AmqpSubscription;
pub use topology::{DEAD_AT_HEADER, QUEUE_HEADER, REASON_HEADER};

use error::channel_err;

/// Counters of an [`AmqpBus`], for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmqpStats {
    /// Connections opened (publisher and consumers; the first counts).
    pub connections: u64,
    /// Messages published and confirmed.
    pub published: u64,
    /// Publish attempts that failed and were retried.
    pub publish_retries: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    published: AtomicU64,
    publish_retries: AtomicU64,
    dead_lettered: AtomicU64,
}

/// One role's connection (publishing and consuming use separate ones, so
/// broker flow control on publishers never stalls acks).
struct Slot {
    role: &'static str,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

struct PubChannel {
    id: u64,
    channel: Channel,
}

pub(crate) struct Inner {
    config: AmqpConfig,
    uri: AMQPUri,
    publisher: Slot,
    consumer: Slot,
    pub_channel: tokio::sync::Mutex<Option<PubChannel>>,
    pub_channel_ids: AtomicU64,
    closed: CancellationToken,
    counters: Counters,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inner {
    fn masked_uri(&self) -> String {
        mask_url_password(&self.config.uri)
    }

    /// The role's live connection, or one new attempt at connecting.
    async fn connection(&self, slot: &Slot) -> Result<Arc<Connection>, AmqpError> {
        let mut current = slot.conn.lock().await;
        if let Some(c) = current.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        if self.closed.is_cancelled() {
            return Err(AmqpError::Closed);
        }
        let name = format!("{}-{}", self.config.connection_name, slot.role);
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let limit = self.config.connect_timeout + Duration::from_secs(5);
        let conn =
            match tokio::time::timeout(limit, Connection::connect_uri(self.uri.clone(), props))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(AmqpError::Connect {
                        uri: self.masked_uri(),
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(AmqpError::Connect {
                        uri: self.masked_uri(),
                        reason: format!("no answer within {limit:?}"),
                    });
                }
            };
        let n = self.counters.connections.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(role = slot.role, uri = %self.masked_uri(), "connected to RabbitMQ again");
        } else {
            tracing::debug!(role = slot.role, uri = %self.masked_uri(), "connected to RabbitMQ");
        }
        let conn = Arc::new(conn);
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets a connection that turned out dead (if it is still current).
    async fn invalidate(&self, slot: &Slot, conn: &Arc<Connection>) {
        let mut current = slot.conn.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }

    /// A channel on `slot`'s connection with the topology declared.
    async fn open_channel(&self, slot: &Slot) -> Result<Channel, AmqpError> {
        let conn = self.connection(slot).await?;
        let channel = match conn.create_channel().await {
            Ok(c) => c,
            Err(e) => {
                self.invalidate(slot, &conn).await;
                return Err(channel_err("opening a channel", e));
            }
        };
        topology::declare(&conn, &channel, &self.config).await?;
        Ok(channel)
    }

    async fn publish_channel(&self) -> Result<(u64, Channel), AmqpError> {
        let mut current = self.pub_channel.lock().await;
        if let Some(p) = current.as_ref()
            && p.channel.status().connected()
        {
            return Ok((p.id, p.channel.clone()));
        }
        let channel = self.open_channel(&self.publisher).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| channel_err("enabling publisher confirms", e))?;
        let id = self.pub_channel_ids.fetch_add(1, Ordering::Relaxed) + 1;
        *current = Some(PubChannel {
            id,
            channel: channel.clone(),
        });
        Ok((id, channel))
    }

    async fn drop_publish_channel(&self, id: u64) {
        let mut current = self.pub_channel.lock().await;
        if current.as_ref().is_some_and(|p| p.id == id) {
            *current = None;
        }
    }

    async fn publish_once(
        &self,
        exchange: &ShortString,
        key: &ShortString,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), (Option<u64>, AmqpError)> {
        let (id, channel) = self.publish_channel().await.map_err(|e| (None, e))?;
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = channel
            .basic_publish(exchange.clone(), key.clone(), opts, body, props)
            .await
            .map_err(|e| (Some(id), channel_err("basic.publish", e)))?;
        match confirm
            .await
            .map_err(|e| (Some(id), channel_err("waiting for the confirm", e)))?
        {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(ret)) => Err((
                Some(id),
                AmqpError::Refused(format!(
                    "unroutable via {exchange} with key {key}: {} {}",
                    ret.reply_code, ret.reply_text
                )),
            )),
            Confirmation::Nack(_) => Err((
                Some(id),
                AmqpError::Refused("negative confirm (broker could not store it)".into()),
            )),
            Confirmation::NotRequested => Err((
                Some(id),
                AmqpError::Channel("publisher confirms are not enabled".into()),
            )),
        }
    }

    /// Publishes and waits for the broker's confirm, reconnecting with
    /// backoff for up to `publish_timeout`.
    pub(crate) async fn publish_raw(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), AmqpError> {
        let exchange = topology::short(exchange)?;
        let key = topology::short(key)?;
        let timeout = self.config.publish_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = self.config.min_backoff;
        // The broker's last refusal (unroutable, nack): what a deadline that
        // cuts a later attempt reports, so that a key nobody binds is
        // reported as such whatever the timing, not as a timeout.
        let mut refused: Option<String> = None;
        loop {
            if self.closed.is_cancelled() {
                return Err(AmqpError::Closed);
            }
            let attempt = tokio::time::timeout_at(
                deadline,
                self.publish_once(&exchange, &key, body, props.clone()),
            )
            .await;
            let (channel_id, err) = match attempt {
                Ok(Ok(())) => {
                    self.counters.published.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => match refused.take() {
                    Some(m) => (
                        None,
                        AmqpError::Refused(format!(
                            "{m} (and the last attempt was not confirmed within {timeout:?})"
                        )),
                    ),
                    None => (
                        None,
                        AmqpError::PublishTimeout(timeout, "no confirm from the broker".into()),
                    ),
                },
            };
            if let AmqpError::Refused(m) = &err {
                refused = Some(m.clone());
            }
            if matches!(err, AmqpError::Config(_) | AmqpError::Closed) {
                return Err(err);
            }
            // Start over on a fresh channel (and topology) next time.
            match channel_id {
                Some(id) => self.drop_publish_channel(id).await,
                None => {
                    let mut current = self.pub_channel.lock().await;
                    if current
                        .as_ref()
                        .is_some_and(|p| !p.channel.status().connected())
                    {
                        *current = None;
                    }
                }
            }
            if Instant::now() + backoff >= deadline {
                tracing::warn!(error = %err, %key, "publish failed; giving up for now");
                return Err(err);
            }
            self.counters
                .publish_retries
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, ?backoff, %key, "publish failed; retrying");
            tokio::select! {
                _ = self.closed.cancelled() => return Err(AmqpError::Closed),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

/// Properties of every notification: persistent JSON.
pub(crate) fn message_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_timestamp(now_secs())
}

/// The RabbitMQ event bus. Cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AmqpBus {
    /// Connects to the broker and declares the topology; fails fast if the
    /// broker is unreachable now (later losses are handled by reconnecting).
    pub async fn connect(config: AmqpConfig) -> Result<AmqpBus, AmqpError> {
        let bus = Self::new_lazy(config)?;
        bus.inner.publish_channel().await?;
        Ok(bus)
    }

    /// A bus that connects on first use (eventd starts while the broker is
    /// down, and spools). Fails only on an invalid URI.
    pub fn new_lazy(config: AmqpConfig) -> Result<AmqpBus, AmqpError> {
        let mut uri: AMQPUri = config.uri.parse().map_err(|e: String| {
            AmqpError::Config(format!(
                "bad AMQP URI {}: {e}",
                mask_url_password(&config.uri)
            ))
        })?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(config.heartbeat_secs);
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(
                config
                    .connect_timeout
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            );
        }
        for b in config.bindings() {
            topology::short(&b.queue)?;
            for k in &b.keys {
                topology::short(k)?;
            }
        }
        for ex in [&config.exchange, &config.dead_letter_exchange] {
            if ex.is_empty() {
                return Err(AmqpError::Config("an exchange name is empty".into()));
            }
            topology::short(ex)?;
        }
        Ok(AmqpBus {
            inner: Arc::new(Inner {
                config,
                uri,
                publisher: Slot {
                    role: "publish",
                    conn: tokio::sync::Mutex::new(None),
                },
                consumer: Slot {
                    role: "consume",
                    conn: tokio::sync::Mutex::new(None),
                },
                pub_channel: tokio::sync::Mutex::new(None),
                pub_channel_ids: AtomicU64::new(0),
                closed: CancellationToken::new(),
                counters: Counters::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// Counters so far.
    pub fn stats(&self) -> AmqpStats {
        let c = &self.inner.counters;
        AmqpStats {
            connections: c.connections.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            publish_retries: c.publish_retries.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Publishes a body under an explicit routing key with our message
    /// properties (tools and tests; notifications use [`EventBus::publish`]).
    pub async fn publish_with_key(&self, routing_key: &str, body: &[u8]) -> Result<(), AmqpError> {
        self.inner
            .publish_raw(
                &self.inner.config.exchange,
                routing_key,
                body,
                message_properties(),
            )
            .await
    }

    /// Closes the bus: pending and future calls fail with
    /// [`BusError::Closed`]; subscriptions stop; connections close (each
    /// given `connect_timeout` for the broker to confirm).
    pub async fn close(&self) {
        self.inner.closed.cancel();
        for slot in [&self.inner.publisher, &self.inner.consumer] {
            if let Some(c) = slot.conn.lock().await.take() {
                // Bounded: lapin waits for the broker's close-ok, which a
                // connection caught closing its channels (seen once in the
                // pipeline test: "invalid channel state: Closing") never
                // gets; a stopping process must not hang on it. Dropping
                // the connection closes the socket anyway.
                let closing = c.close(200, "synnefo shutting down".into());
                if tokio::time::timeout(self.inner.config.connect_timeout, closing)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        timeout = ?self.inner.config.connect_timeout,
                        "the broker did not confirm the connection close; dropping it"
                    );
                }
            }
        }
        *self.inner.pub_channel.lock().await = None;
    }
}

#[async_trait]
impl EventBus for AmqpBus {
    async fn publish(&self, kind: MessageKind, body: Vec<u8>) -> Result<(), BusError> {
        let key = self.inner.config.routing_key(kind);
        Ok(self
            .inner
            .publish_raw(
                &self.inner.config.exchange,
                &key,
                &body,
                message_properties(),
            )
            .await?)
    }

    async fn subscribe(&self, kind: MessageKind) -> Result<Box<dyn Subscription>, BusError> {
        Ok(Box::new(
            AmqpSubscription::open(self.inner.clone(), kind).await?,
        ))
    }
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its original routing key.
    pub routing_key: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// Why (our `x-synnefo-reason` header, else the broker's `x-death` reason).
    pub reason: Option<String>,
    /// The queue it was dead-lettered from.
    pub queue: Option<String>,
}

/// Messages ready (not delivered) in each of our queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepths {
    /// `<prefix>-events-op`.
    pub op: u32,
    /// `<prefix>-events-net`.
    pub net: u32,
    /// `<prefix>-events-dead`.
    pub dead: u32,
    /// Synnefo's `<prefix>-events-network`, `-progress` and `-cluster`
    /// together (0 without [`AmqpConfig::synnefo_queues`]).
    pub synnefo: u32,
}

fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn x_death_reason(headers: &FieldTable) -> Option<String> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => a.as_slice().iter().find_map(|v| match v {
            AMQPValue::FieldTable(t) => {
                header_text(t, "reason").map(|r| format!("broker dead-lettered: {r}"))
            }
            _ => None,
        }),
        _ => None,
    }
}

impl AmqpBus {
    /// Ready message counts of the op, net, dead-letter and Synnefo queues.
    pub async fn queue_depths(&self) -> Result<QueueDepths, AmqpError> {
        let cfg = &self.inner.config;
        let channel = self.inner.open_channel(&self.inner.consumer).await?;
        let mut depths = QueueDepths::default();
        let synnefo: Vec<String> = cfg
            .synnefo_bindings()
            .into_iter()
            .map(|b| b.queue)
            .collect();
        let mut seen = Vec::new();
        for q in cfg.bindings().into_iter().map(|b| b.queue) {
            if seen.contains(&q) {
                continue;
            }
            let opts = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let n = channel
                .queue_declare(topology::short(&q)?, opts, FieldTable::default())
                .await
                .map_err(|e| channel_err("queue.declare (passive)", e))?
                .message_count();
            if q == cfg.queue_name(MessageKind::OpStatus) {
                depths.op = n;
            } else if q == cfg.queue_name(MessageKind::NetStatus) {
                depths.net = n;
            } else if q == cfg.dead_letter_queue() {
                depths.dead = n;
            } else if synnefo.contains(&q) {
                depths.synnefo += n;
            }
            seen.push(q);
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }

    /// Deletes this prefix's queues (those of [`AmqpConfig::bindings`]),
    /// messages included (tests, and decommissioning a prefix). The
    /// exchanges stay: others share them.
    pub async fn delete_queues(&self) -> Result<(), AmqpError> {
        let cfg = &self.inner.config;
        let conn = self.inner.connection(&self.inner.consumer).await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| channel_err("opening a channel", e))?;
        let mut seen = Vec::new();
        for q in cfg.bindings().into_iter().map(|b| b.queue) {
            if seen.contains(&q) {
                continue;
            }
            channel
                .queue_delete(topology::short(&q)?, QueueDeleteOptions::default())
                .await
                .map_err(|e| channel_err(&format!("deleting {q}"), e))?;
            seen.push(q);
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(())
    }

    /// Up to `max` messages of the dead-letter queue, oldest first;
    /// `remove` takes them off the queue, otherwise they are put back.
    pub async fn dead_letters(
        &self,
        max: usize,
        remove: bool,
    ) -> Result<Vec<DeadLetter>, AmqpError> {
        let queue = self.inner.config.dead_letter_queue();
        let channel = self.inner.open_channel(&self.inner.consumer).await?;
        let mut out = Vec::new();
        let mut last_tag = None;
        while out.len() < max {
            let got = channel
                .basic_get(topology::short(&queue)?, BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| channel_err("basic.get", e))?;
            let Some(m) = got else { break };
            let d = m.delivery;
            let headers = headers_of(&d.properties);
            last_tag = Some(d.delivery_tag);
            out.push(DeadLetter {
                routing_key: d.routing_key.to_string(),
                reason: header_text(&headers, REASON_HEADER).or_else(|| x_death_reason(&headers)),
                queue: header_text(&headers, QUEUE_HEADER),
                body: d.data,
            });
        }
        if let Some(tag) = last_tag {
            let settled = if remove {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            } else {
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: true,
                            requeue: true,
                        },
                    )
                    .await
            };
            settled.map_err(|e| channel_err("settling dead letters", e))?;
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(out)
    }

    /// Puts up to `max` dead letters back on the exchange under their
    /// original routing key, oldest first; returns how many.
    ///
    /// Each is published (and confirmed by the broker) **before** it is
    /// taken off the dead-letter queue, so a crash in between leaves a
    /// duplicate, never a loss; duplicates are no-ops for the dispatcher.
    /// A message that fails again comes back to the dead-letter queue with
    /// its new reason.
    pub async fn retry_dead_letters(&self, max: usize) -> Result<usize, AmqpError> {
        let queue = self.inner.config.dead_letter_queue();
        let channel = self.inner.open_channel(&self.inner.consumer).await?;
        let mut moved = 0;
        while moved < max {
            let got = channel
                .basic_get(topology::short(&queue)?, BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| channel_err("basic.get", e))?;
            let Some(m) = got else { break };
            let d = m.delivery;
            if let Err(e) = self
                .inner
                .publish_raw(
                    &self.inner.config.exchange,
                    d.routing_key.as_str(),
                    &d.data,
                    message_properties(),
                )
                .await
            {
                // Not republished: it stays a dead letter.
                let _ = channel
                    .basic_nack(
                        d.delivery_tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await;
                let _ = channel.close(200, "done".into()).await;
                return Err(e);
            }
            channel
                .basic_ack(d.delivery_tag, BasicAckOptions { multiple: false })
                .await
                .map_err(|e| channel_err("acking a retried dead letter", e))?;
            moved += 1;
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(moved)
    }
}

/// Empty header table helper for callers building properties.
pub(crate) fn headers_of(props: &BasicProperties) -> FieldTable {
    props.headers().clone().unwrap_or_default()
}
