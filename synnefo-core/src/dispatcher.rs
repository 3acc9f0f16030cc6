//! The LOGIC node's loop: consume backend notifications, apply them to the
//! database, acknowledge them.
//!
//! The seed's dispatcher acked a message after its handler returned; we keep
//! that rule and make it cheap:
//!
//! 1. take up to `batch_size` deliveries that are ready;
//! 2. read each ([`messages::decode_any`]). A notification that changes a
//!    server goes on to step 3. What is understood but changes nothing here
//!    (Synnefo's network and cluster messages, opcodes with no state
//!    effect such as tags) is acknowledged and counted, as
//!    Synnefo's dispatcher acknowledges what it has no use for; so is a
//!    message for another deployment's instance. An unreadable body (not
//!    JSON, a key missing, an unknown type) is acknowledged with a WARN
//!    line, as Synnefo does, or dead-lettered with the reason when
//!    `dispatcher.malformed_messages = "dead-letter"`;
//! 3. apply snf-image's build messages (progress and diagnostics, outside
//!    the state machine: [`crate::service::build`]) one by one, then the
//!    state notifications of the batch with
//!    [`service::apply_notifications`]: one read and one write transaction;
//! 4. ack the batch **only after that transaction commits**. A notification
//!    about a server the database does not have is acknowledged and
//!    counted (`dispatcher.unknown_servers = "ack"`, Synnefo's policy) or
//!    dead-lettered; one that fails otherwise is dead-lettered with the
//!    reason; a database outage is retried with backoff and nothing is
//!    acked meanwhile, so nothing is lost.
//!
//! Several dispatchers (and several consumers inside one) compete for the
//! same queue. They never double-apply: the state machine makes duplicates
//! and stale events no-ops, and writes are guarded by the VM's version.
//! A redelivered message is therefore harmless, which is what lets the bus
//! redeliver anything not acked (a crash, a broker restart).
//!
//! Shutdown is graceful: cancelling the token stops taking new batches; a
//! batch already taken is finished and acked (or, if the database is down,
//! handed back to the queue).
//!
//! [`messages::decode_any`]: crate::messages::decode_any
//! [`service::apply_notifications`]: crate::service::apply_notifications

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{BusError, EventError, ServiceError, StoreError};
use crate::messages::{Decoded, MessageKind, Notification, ProgressNote, decode_any};
use crate::ports::{Delivery, EventBus, Subscription, VmStore};
use crate::service::build::apply_build_report;
use crate::service::{ApplyOutcome, apply_notification, apply_notifications};
use crate::settings::Settings;
use crate::settings::Unusable;

/// How a dispatcher runs.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Instance-name prefix (`BACKEND_PREFIX_ID`).
    pub prefix: String,
    /// Deliveries taken and applied per database transaction.
    pub batch_size: usize,
    /// Consumers per message kind inside this process (each with its own
    /// subscription; they compete like separate dispatchers).
    pub consumers_per_kind: usize,
    /// First wait after a database or bus failure.
    pub retry_min: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// A notification about a server the database does not have.
    pub unknown_servers: Unusable,
    /// A body that cannot be read.
    pub malformed_messages: Unusable,
    /// Also consume the kinds only Synnefo's eventd and snf-image publish
    /// ([`MessageKind::SYNNEFO`]): true when the bus declares their queues
    /// (`amqp.topology.synnefo_queues`).
    pub synnefo_kinds: bool,
    /// snf-image's build messages kept per server as its diagnostics
    /// (`dispatcher.max_diagnostics_per_server`).
    pub max_diagnostics_per_server: u32,
}

impl DispatcherConfig {
    /// The configuration from settings (`[dispatcher]`, `backend_prefix_id`).
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            prefix: settings.backend_prefix_id.clone(),
            batch_size: settings.dispatcher.batch_size,
            unknown_servers: settings.dispatcher.unknown_servers,
            malformed_messages: settings.dispatcher.malformed_messages,
            synnefo_kinds: settings.amqp.topology.synnefo_queues,
            max_diagnostics_per_server: settings.dispatcher.max_diagnostics_per_server,
            ..Self::new(&settings.backend_prefix_id)
        }
    }

    /// Defaults for a prefix.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            batch_size: 256,
            consumers_per_kind: 1,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            unknown_servers: Unusable::Ack,
            malformed_messages: Unusable::Ack,
            synnefo_kinds: false,
            max_diagnostics_per_server: 100,
        }
    }

    /// The kinds this dispatcher consumes.
    pub fn kinds(&self) -> Vec<MessageKind> {
        let mut kinds = MessageKind::ALL.to_vec();
        if self.synnefo_kinds {
            kinds.extend(MessageKind::SYNNEFO);
        }
        kinds
    }
}

/// Why a dispatcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// A queue could not be subscribed to.
    #[error("cannot subscribe to the {kind} queue: {source}")]
    Subscribe {
        /// The queue's message type.
        kind: &'static str,
        /// The bus error.
        source: BusError,
    },
    /// A consumer task failed unexpectedly.
    #[error("dispatcher consumer task failed: {0}")]
    Task(String),
}

#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    ignored: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    redelivered: AtomicU64,
    apply_micros: AtomicU64,
    retries: AtomicU64,
    ack_errors: AtomicU64,
    dead_letter_errors: AtomicU64,
    recorded: AtomicU64,
    unknown_server: AtomicU64,
    malformed: AtomicU64,
}

/// What a dispatcher has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatcherMetrics {
    /// Notifications that changed a VM.
    pub applied: u64,
    /// Notifications acknowledged without a change (duplicates, stale
    /// events, foreign instances).
    pub ignored: u64,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Batches taken from the bus.
    pub batches: u64,
    /// Deliveries the bus flagged as redelivered (a consumer died or
    /// requeued them before acking).
    pub redelivered: u64,
    /// Time spent applying batches to the store (read + write
    /// transaction), in microseconds.
    pub apply_micros: u64,
    /// Database retries after a failure (nothing acked meanwhile).
    pub retries: u64,
    /// Failed acks (the bus redelivers those messages; harmless).
    pub ack_errors: u64,
    /// Failed dead-letterings (the message stays unacked and comes back).
    pub dead_letter_errors: u64,
    /// Messages understood and acknowledged that change no server here
    /// (Synnefo's network, cluster and progress messages; untracked
    /// opcodes such as tags).
    pub recorded: u64,
    /// Notifications about servers the database does not have,
    /// acknowledged (`dispatcher.unknown_servers = "ack"`).
    pub unknown_server: u64,
    /// Unreadable messages acknowledged (`dispatcher.malformed_messages =
    /// "ack"`).
    pub malformed: u64,
}

impl Counters {
    fn snapshot(&self) -> DispatcherMetrics {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DispatcherMetrics {
            applied: l(&self.applied),
            ignored: l(&self.ignored),
            dead_lettered: l(&self.dead_lettered),
            batches: l(&self.batches),
            redelivered: l(&self.redelivered),
            apply_micros: l(&self.apply_micros),
            retries: l(&self.retries),
            ack_errors: l(&self.ack_errors),
            dead_letter_errors: l(&self.dead_letter_errors),
            recorded: l(&self.recorded),
            unknown_server: l(&self.unknown_server),
            malformed: l(&self.malformed),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The start of a body for a log line: at most 256 bytes, lossy UTF-8.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned()
}

/// Consumes notifications from an [`EventBus`] and applies them to a
/// [`VmStore`]. Cheap to clone (clones share the metrics).
#[derive(Clone)]
pub struct Dispatcher {
    store: Arc<dyn VmStore>,
    bus: Arc<dyn EventBus>,
    config: DispatcherConfig,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Is a failure worth retrying (the same input may succeed later)?
fn is_transient(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Store(StoreError::Database(_) | StoreError::Conflict(_))
    )
}

impl Dispatcher {
    /// A dispatcher over a store and a bus.
    pub fn new(store: Arc<dyn VmStore>, bus: Arc<dyn EventBus>, config: DispatcherConfig) -> Self {
        Self {
            store,
            bus,
            config,
            counters: Arc::new(Counters::default()),
        }
    }

    /// The counters so far.
    pub fn metrics(&self) -> DispatcherMetrics {
        self.counters.snapshot()
    }

    /// Subscribes to both kinds (`consumers_per_kind` times each) and
    /// consumes until `cancel` fires; returns once every in-flight batch is
    /// finished.
    pub async fn run(
        &self,
        cancel: CancellationToken,
    ) -> Result<DispatcherMetrics, DispatcherError> {
        let mut subs = Vec::new();
        for kind in self.config.kinds() {
            for _ in 0..self.config.consumers_per_kind.max(1) {
                let sub = self.bus.subscribe(kind).await.map_err(|source| {
                    DispatcherError::Subscribe {
                        kind: kind.type_name(),
                        source,
                    }
                })?;
                subs.push(sub);
            }
        }
        tracing::info!(
            consumers = subs.len(),
            batch_size = self.config.batch_size,
            prefix = %self.config.prefix,
            "dispatcher running"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for sub in subs {
            let me = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move { me.consume(sub, cancel).await });
        }
        let mut failure = None;
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                // A panicking consumer: stop the others gracefully too.
                cancel.cancel();
                failure = Some(DispatcherError::Task(e.to_string()));
            }
        }
        let m = self.metrics();
        tracing::info!(?m, "dispatcher stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(m),
        }
    }

    /// Consumes one subscription until `cancel` fires or the bus closes.
    pub async fn consume(&self, mut sub: Box<dyn Subscription>, cancel: CancellationToken) {
        let mut backoff = self.config.retry_min;
        loop {
            let got = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = sub.recv_batch(self.config.batch_size.max(1)) => r,
            };
            match got {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => {
                    backoff = self.config.retry_min;
                    self.process_batch(sub.as_mut(), batch, &cancel).await;
                }
                Err(BusError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "receiving from the bus failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.retry_max);
                }
            }
        }
    }

    async fn dead_letter(&self, sub: &mut dyn Subscription, tag: u64, reason: &str) {
        match sub.dead_letter(tag, reason).await {
            Ok(()) => {
                bump(&self.counters.dead_lettered, 1);
                tracing::warn!(tag, %reason, "message dead-lettered");
            }
            Err(e) => {
                // Left unacked: the bus hands it out again and we retry.
                bump(&self.counters.dead_letter_errors, 1);
                tracing::error!(tag, %reason, error = %e, "dead-lettering failed; the message will be redelivered");
            }
        }
    }

    async fn ack(&self, sub: &mut dyn Subscription, tags: &[u64]) {
        if tags.is_empty() {
            return;
        }
        if let Err(e) = sub.ack(tags).await {
            bump(&self.counters.ack_errors, 1);
            tracing::warn!(error = %e, n = tags.len(), "ack failed; the bus will redeliver (duplicates are no-ops)");
        }
    }

    /// Decodes, applies and acknowledges one batch of deliveries.
    pub async fn process_batch(
        &self,
        sub: &mut dyn Subscription,
        batch: Vec<Delivery>,
        cancel: &CancellationToken,
    ) {
        bump(&self.counters.batches, 1);
        let mut done: Vec<u64> = Vec::with_capacity(batch.len());
        let mut tags: Vec<u64> = Vec::with_capacity(batch.len());
        let mut notes: Vec<Notification> = Vec::with_capacity(batch.len());
        let mut builds: Vec<(u64, ProgressNote)> = Vec::new();
        let redelivered = batch.iter().filter(|d| d.redelivered).count();
        bump(&self.counters.redelivered, redelivered as u64);
        for d in batch {
            match decode_any(&d.body, &self.config.prefix) {
                Ok(Decoded::Apply(n)) => {
                    tags.push(d.tag);
                    notes.push(n);
                }
                Ok(Decoded::Progress(p)) => builds.push((d.tag, p)),
                Ok(Decoded::Record(r)) => {
                    tracing::debug!(kind = r.label(), record = ?r, "acknowledging a message that changes no server here");
                    bump(&self.counters.recorded, 1);
                    done.push(d.tag);
                }
                Err(EventError::ForeignInstance(name)) => {
                    tracing::info!(instance = %name, "ignoring a notification for an instance that is not ours");
                    bump(&self.counters.ignored, 1);
                    done.push(d.tag);
                }
                Err(e) => {
                    let reason = format!("undecodable {} message: {e}", d.kind.type_name());
                    match self.config.malformed_messages {
                        Unusable::Ack => {
                            tracing::warn!(%reason, body = %excerpt(&d.body), "acknowledging an unreadable message (dispatcher.malformed_messages = \"ack\")");
                            bump(&self.counters.malformed, 1);
                            done.push(d.tag);
                        }
                        Unusable::DeadLetter => self.dead_letter(sub, d.tag, &reason).await,
                    }
                }
            }
        }

        if !builds.is_empty()
            && !self
                .apply_builds(sub, builds, &tags, &mut done, cancel)
                .await
        {
            return;
        }

        let mut backoff = self.config.retry_min;
        while !notes.is_empty() {
            let started = std::time::Instant::now();
            let applied = apply_notifications(self.store.as_ref(), &notes).await;
            bump(
                &self.counters.apply_micros,
                started.elapsed().as_micros() as u64,
            );
            let results = match applied {
                Ok(r) => r,
                Err(e) if is_transient(&e) => {
                    // every note of the batch failed for the same reason
                    let cause = match &e {
                        ServiceError::Store(s) => s.clone(),
                        other => StoreError::Database(other.to_string()),
                    };
                    std::iter::repeat_with(|| Err(ServiceError::Store(cause.clone())))
                        .take(notes.len())
                        .collect()
                }
                Err(e) => {
                    // Not the database being down: find the culprit(s) one by one.
                    tracing::warn!(error = %e, "batch apply failed; applying one by one");
                    let mut r = Vec::with_capacity(notes.len());
                    for n in &notes {
                        r.push(apply_notification(self.store.as_ref(), n).await);
                    }
                    r
                }
            };
            let mut retry_tags = Vec::new();
            let mut retry_notes = Vec::new();
            let mut last_error = None;
            for ((tag, n), r) in tags.into_iter().zip(notes).zip(results) {
                match r {
                    Ok(ApplyOutcome::Applied) => {
                        bump(&self.counters.applied, 1);
                        done.push(tag);
                    }
                    Ok(ApplyOutcome::Ignored(_)) => {
                        bump(&self.counters.ignored, 1);
                        done.push(tag);
                    }
                    Err(e) if is_transient(&e) => {
                        last_error = Some(e.to_string());
                        retry_tags.push(tag);
                        retry_notes.push(n);
                    }
                    Err(ServiceError::NotFound(_))
                        if self.config.unknown_servers == Unusable::Ack =>
                    {
                        tracing::warn!(server = %n.vm(), "acknowledging a notification for a server the database does not have (dispatcher.unknown_servers = \"ack\")");
                        bump(&self.counters.unknown_server, 1);
                        done.push(tag);
                    }
                    Err(e) => {
                        let reason =
                            format!("cannot apply notification for server {}: {e}", n.vm());
                        self.dead_letter(sub, tag, &reason).await;
                    }
                }
            }
            tags = retry_tags;
            notes = retry_notes;
            if notes.is_empty() {
                break;
            }
            // What committed is acked now; the rest waits for the database.
            self.ack(sub, &std::mem::take(&mut done)).await;
            bump(&self.counters.retries, 1);
            tracing::warn!(
                pending = notes.len(),
                error = last_error.as_deref().unwrap_or(""),
                ?backoff,
                "database unavailable; retrying the batch (nothing acked)"
            );
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(backoff) => false,
            };
            if stop {
                // Shutting down with the database away: hand them back.
                for &tag in &tags {
                    if let Err(e) = sub.requeue(tag).await {
                        tracing::warn!(tag, error = %e, "requeue failed; the bus will redeliver it");
                    }
                }
                return;
            }
            backoff = (backoff * 2).min(self.config.retry_max);
        }
        self.ack(sub, &done).await;
    }

    /// Applies snf-image's build messages one by one (each is one short
    /// write outside the state machine), pushing the settled tags to
    /// `done`. A database outage is retried with backoff like the state
    /// notifications; on shutdown meanwhile, what committed is acked, the
    /// rest (and `pending`, the batch's state notifications) is handed
    /// back, and `false` says the batch is over.
    async fn apply_builds(
        &self,
        sub: &mut dyn Subscription,
        builds: Vec<(u64, ProgressNote)>,
        pending: &[u64],
        done: &mut Vec<u64>,
        cancel: &CancellationToken,
    ) -> bool {
        let keep = self.config.max_diagnostics_per_server;
        let mut backoff = self.config.retry_min;
        let mut it = builds.into_iter();
        while let Some((tag, p)) = it.next() {
            loop {
                let started = std::time::Instant::now();
                let r = apply_build_report(self.store.as_ref(), &p, keep).await;
                bump(
                    &self.counters.apply_micros,
                    started.elapsed().as_micros() as u64,
                );
                match r {
                    Ok(ApplyOutcome::Applied) => {
                        bump(&self.counters.applied, 1);
                        done.push(tag);
                    }
                    Ok(ApplyOutcome::Ignored(_)) => {
                        bump(&self.counters.ignored, 1);
                        done.push(tag);
                    }
                    Err(e) if is_transient(&e) => {
                        self.ack(sub, &std::mem::take(done)).await;
                        bump(&self.counters.retries, 1);
                        tracing::warn!(error = %e, ?backoff, "database unavailable; retrying a build message (nothing acked)");
                        let stop = tokio::select! {
                            _ = cancel.cancelled() => true,
                            _ = tokio::time::sleep(backoff) => false,
                        };
                        if stop {
                            let rest = std::iter::once(tag)
                                .chain(it.map(|(t, _)| t))
                                .chain(pending.iter().copied());
                            for t in rest {
                                if let Err(e) = sub.requeue(t).await {
                                    tracing::warn!(tag = t, error = %e, "requeue failed; the bus will redeliver it");
                                }
                            }
                            return false;
                        }
                        backoff = (backoff * 2).min(self.config.retry_max);
                        continue;
                    }
                    Err(ServiceError::NotFound(_))
                        if self.config.unknown_servers == Unusable::Ack =>
                    {
                        tracing::warn!(server = %p.vm, "acknowledging a build message for a server the database does not have (dispatcher.unknown_servers = \"ack\")");
                        bump(&self.counters.unknown_server, 1);
                        done.push(tag);
                    }
                    Err(e) => {
                        let reason = format!("cannot apply build message for server {}: {e}", p.vm);
                        self.dead_letter(sub, tag, &reason).await;
                    }
                }
                break;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{FlavorId, VmId};
    use crate::model::Vm;
    use crate::ports::{MockSubscription, MockVmStore};
    use crate::state::VmState;
    use chrono::Utc;
    use mockall::Sequence;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn vm(id: i64) -> Vm {
        Vm {
            id: VmId(id),
            user_id: "u".into(),
            project_id: "p".into(),
            name: format!("vm{id}"),
            flavor_id: FlavorId(1),
            image_id: "img".into(),
            backend_id: None,
            state: VmState::new_build(),
            metadata: BTreeMap::new(),
            created: Utc::now(),
            updated: Utc::now(),
            last_reconciled: None,
            version: 1,
        }
    }

    fn op(vm: i64, job: u64, opcode: &str, status: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"ganeti-op-status","instance":"snf-{vm}","operation":"{opcode}","jobId":{job},"status":"{status}","logmsg":null,"result":null,"event_time":[1700000000,{job}]}}"#
        )
        .into_bytes()
    }

    fn delivery(tag: u64, body: Vec<u8>) -> Delivery {
        Delivery {
            tag,
            kind: MessageKind::OpStatus,
            body,
            redelivered: false,
        }
    }

    fn dispatcher(store: MockVmStore) -> Dispatcher {
        dispatcher_with(store, Unusable::Ack)
    }

    /// A dispatcher whose policy for unknown servers and unreadable
    /// messages is `policy`.
    fn dispatcher_with(store: MockVmStore, policy: Unusable) -> Dispatcher {
        let bus = crate::ports::MockEventBus::new();
        let mut cfg = DispatcherConfig::new("snf-");
        cfg.retry_min = Duration::from_millis(1);
        cfg.retry_max = Duration::from_millis(2);
        cfg.unknown_servers = policy;
        cfg.malformed_messages = policy;
        Dispatcher::new(Arc::new(store), Arc::new(bus), cfg)
    }

    /// A store that knows VMs 1..=n and records written updates.
    fn store_with(n: i64, writes: Arc<Mutex<Vec<VmId>>>) -> MockVmStore {
        let mut store = MockVmStore::new();
        store.expect_vms().returning(move |ids| {
            Ok(ids
                .iter()
                .filter(|i| i.0 >= 1 && i.0 <= n)
                .map(|i| vm(i.0))
                .collect())
        });
        store.expect_update_vm_states().returning(move |u| {
            writes.lock().unwrap().extend(u.iter().map(|x| x.id));
            Ok(u.iter().map(|_| Ok(())).collect())
        });
        store
    }

    #[tokio::test]
    async fn applies_a_batch_then_acks_it_in_one_call() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let d = dispatcher(store_with(5, writes.clone()));
        let mut sub = MockSubscription::new();
        sub.expect_ack()
            .withf(|tags| tags == [1, 2, 3])
            .times(1)
            .returning(|_| Ok(()));
        sub.expect_dead_letter().times(0);
        let batch = vec![
            delivery(1, op(1, 10, "OP_INSTANCE_CREATE", "success")),
            delivery(2, op(2, 11, "OP_INSTANCE_CREATE", "success")),
            delivery(3, op(1, 10, "OP_INSTANCE_CREATE", "success")),
        ];
        d.process_batch(&mut sub, batch, &CancellationToken::new())
            .await;
        let mut w = writes.lock().unwrap().clone();
        w.sort();
        assert_eq!(w, [VmId(1), VmId(2)], "one write per VM");
        let m = d.metrics();
        assert_eq!(
            (m.applied, m.ignored, m.batches, m.dead_lettered),
            (2, 1, 1, 0),
            "the duplicate is a no-op"
        );
    }

    #[tokio::test]
    async fn garbage_is_dead_lettered_with_the_reason_before_the_ack() {
        let d = dispatcher_with(
            store_with(5, Arc::new(Mutex::new(Vec::new()))),
            Unusable::DeadLetter,
        );
        let mut sub = MockSubscription::new();
        let mut seq = Sequence::new();
        sub.expect_dead_letter()
            .withf(|tag, reason| {
                *tag == 1 && reason.contains("undecodable") && reason.contains("malformed")
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        sub.expect_dead_letter()
            .withf(|tag, reason| *tag == 2 && reason.contains("unknown opcode"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        sub.expect_ack()
            .withf(|tags| tags == [3])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        let batch = vec![
            delivery(1, b"{not json".to_vec()),
            // not an opcode name Ganeti could write
            delivery(2, op(1, 1, "frobnicate", "success")),
            delivery(3, op(1, 2, "OP_INSTANCE_CREATE", "success")),
        ];
        d.process_batch(&mut sub, batch, &CancellationToken::new())
            .await;
        assert_eq!(d.metrics().dead_lettered, 2);
    }

    /// Synnefo's policy, our default: unreadable bodies and servers the
    /// database does not have are logged, counted and acknowledged;
    /// understood messages that change nothing here (tags, snapshots of
    /// no state, Synnefo's network/cluster/progress kinds) are recorded
    /// and acknowledged; nothing is dead-lettered.
    #[tokio::test]
    async fn by_default_what_synnefo_acks_is_acked_and_counted() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let mut store = store_with(1, writes.clone());
        store
            .expect_record_build_progress()
            .withf(|vm, p| *vm == VmId(1) && *p == 42)
            .times(1)
            .returning(|_, _| Ok(crate::model::BuildWrite::Applied));
        let d = dispatcher(store);
        let mut sub = MockSubscription::new();
        sub.expect_dead_letter().times(0);
        sub.expect_ack()
            .withf(|tags| {
                let mut t = tags.to_vec();
                t.sort();
                t == (1..=9).collect::<Vec<u64>>()
            })
            .times(1)
            .returning(|_| Ok(()));
        let batch = vec![
            delivery(1, b"{not json".to_vec()),
            delivery(2, br#"{"type":"ganeti-op-status","instance":"snf-1"}"#.to_vec()),
            delivery(3, op(99, 1, "OP_INSTANCE_STARTUP", "success")),
            delivery(4, op(1, 2, "OP_TAGS_SET", "success")),
            delivery(5, op(1, 3, "OP_INSTANCE_GROW_DISK", "success")),
            delivery(
                6,
                br#"{"type":"ganeti-network-status","network":"snf-net-7","operation":"OP_NETWORK_ADD","jobId":8,"status":"success","event_time":[1,0]}"#.to_vec(),
            ),
            delivery(
                7,
                br#"{"type":"image-copy-progress","instance":"snf-1","progress":42,"event_time":[1,0]}"#.to_vec(),
            ),
            delivery(8, br#"{"type":"ganeti-cluster-status","cluster":"c1","operation":"OP_CLUSTER_SET_PARAMS","jobId":9,"status":"success"}"#.to_vec()),
            delivery(9, br#"{"type":"no-such-type"}"#.to_vec()),
        ];
        d.process_batch(&mut sub, batch, &CancellationToken::new())
            .await;
        let m = d.metrics();
        assert_eq!(
            (
                m.applied,
                m.recorded,
                m.unknown_server,
                m.malformed,
                m.dead_lettered
            ),
            (2, 3, 1, 3, 0),
            "{m:?}"
        );
        assert_eq!(writes.lock().unwrap().as_slice(), [VmId(1)]);
    }

    /// snf-image's messages: a diagnostic stored with the setting's bound,
    /// one for an unknown server acked (the default policy), a database
    /// outage retried until it is back, then everything acked.
    #[tokio::test]
    async fn build_messages_are_applied_outside_the_state_machine() {
        let mut store = MockVmStore::new();
        let calls = Arc::new(Mutex::new(0u32));
        let c = calls.clone();
        store
            .expect_record_diagnostic()
            .returning(move |vm, time_us, d, keep| {
                assert_eq!(keep, 100);
                if vm == VmId(2) {
                    return Err(StoreError::NotFound("server 2".into()));
                }
                assert_eq!((vm, time_us), (VmId(1), 1_000_001));
                assert_eq!(d.source, "image-helper-task-start");
                assert_eq!(d.message, "MountImage");
                let mut n = c.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    Err(StoreError::Database("connection reset".into()))
                } else {
                    Ok(crate::model::BuildWrite::Applied)
                }
            });
        store
            .expect_record_build_progress()
            .returning(|_, _| Ok(crate::model::BuildWrite::Ignored));
        let d = dispatcher(store);
        let mut sub = MockSubscription::new();
        sub.expect_dead_letter().times(0);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let a = acked.clone();
        sub.expect_ack().returning(move |tags| {
            a.lock().unwrap().extend_from_slice(tags);
            Ok(())
        });
        let helper = |vm: i64| {
            format!(
                r#"{{"type":"image-helper","subtype":"task-start","task":"MountImage","instance":"snf-{vm}","event_time":[1,1]}}"#
            )
            .into_bytes()
        };
        let batch = vec![
            delivery(1, helper(1)),
            delivery(2, helper(2)),
            delivery(
                3,
                br#"{"type":"image-copy-progress","instance":"snf-1","progress":7,"event_time":[1,2]}"#.to_vec(),
            ),
        ];
        d.process_batch(&mut sub, batch, &CancellationToken::new())
            .await;
        let mut got = acked.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(*calls.lock().unwrap(), 2, "retried once");
        let m = d.metrics();
        assert_eq!(
            (m.applied, m.ignored, m.unknown_server, m.retries),
            (1, 1, 1, 1),
            "{m:?}"
        );
    }

    #[tokio::test]
    async fn unknown_vms_are_dead_lettered_and_foreign_instances_ignored() {
        let d = dispatcher_with(
            store_with(1, Arc::new(Mutex::new(Vec::new()))),
            Unusable::DeadLetter,
        );
        let mut sub = MockSubscription::new();
        sub.expect_dead_letter()
            .withf(|tag, reason| {
                *tag == 2 && reason.contains("server 99") && reason.contains("not found")
            })
            .times(1)
            .returning(|_, _| Ok(()));
        sub.expect_ack()
            .withf(|tags| {
                let mut t = tags.to_vec();
                t.sort();
                t == [1, 3]
            })
            .times(1)
            .returning(|_| Ok(()));
        let foreign = br#"{"type":"ganeti-op-status","instance":"other-3","operation":"OP_INSTANCE_STARTUP","jobId":1,"status":"success","event_time":[1,0]}"#;
        let batch = vec![
            delivery(1, op(1, 1, "OP_INSTANCE_CREATE", "success")),
            delivery(2, op(99, 1, "OP_INSTANCE_CREATE", "success")),
            delivery(3, foreign.to_vec()),
        ];
        d.process_batch(&mut sub, batch, &CancellationToken::new())
            .await;
        let m = d.metrics();
        assert_eq!((m.applied, m.ignored, m.dead_lettered), (1, 1, 1));
    }

    #[tokio::test]
    async fn nothing_is_acked_while_the_database_write_fails() {
        let mut store = MockVmStore::new();
        store
            .expect_vms()
            .returning(|ids| Ok(ids.iter().map(|i| vm(i.0)).collect()));
        store
            .expect_update_vm_states()
            .returning(|_| Err(StoreError::Database("connection refused".into())));
        let d = dispatcher(store);
        let mut sub = MockSubscription::new();
        sub.expect_ack().times(0);
        sub.expect_dead_letter().times(0);
        // On shutdown the pending message is handed back, never dropped.
        sub.expect_requeue()
            .withf(|t| *t == 7)
            .times(1)
            .returning(|_| Ok(()));
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c2.cancel();
        });
        d.process_batch(
            &mut sub,
            vec![delivery(7, op(1, 1, "OP_INSTANCE_CREATE", "success"))],
            &cancel,
        )
        .await;
        let m = d.metrics();
        assert!(m.retries >= 2, "{m:?}");
        assert_eq!(m.applied, 0);
    }

    #[tokio::test]
    async fn a_database_outage_is_retried_until_it_commits_then_acked() {
        let mut store = MockVmStore::new();
        let reads = Arc::new(AtomicU64::new(0));
        let r = reads.clone();
        store.expect_vms().returning(move |ids| {
            if r.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(StoreError::Database(
                    "the database system is starting up".into(),
                ))
            } else {
                Ok(ids.iter().map(|i| vm(i.0)).collect())
            }
        });
        let acked_after_commit = Arc::new(AtomicU64::new(0));
        let committed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = committed.clone();
        store
            .expect_update_vm_states()
            .times(1)
            .returning(move |u| {
                c.store(true, Ordering::SeqCst);
                Ok(u.iter().map(|_| Ok(())).collect())
            });
        let d = dispatcher(store);
        let mut sub = MockSubscription::new();
        let (a, c) = (acked_after_commit.clone(), committed.clone());
        sub.expect_ack().times(1).returning(move |tags| {
            assert!(c.load(Ordering::SeqCst), "ack before commit");
            a.fetch_add(tags.len() as u64, Ordering::SeqCst);
            Ok(())
        });
        d.process_batch(
            &mut sub,
            vec![
                delivery(1, op(1, 1, "OP_INSTANCE_CREATE", "success")),
                delivery(2, op(2, 1, "OP_INSTANCE_CREATE", "success")),
            ],
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(acked_after_commit.load(Ordering::SeqCst), 2);
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        assert_eq!(d.metrics().retries, 3);
    }

    #[tokio::test]
    async fn a_failed_dead_letter_leaves_the_message_unacked() {
        let d = dispatcher_with(
            store_with(1, Arc::new(Mutex::new(Vec::new()))),
            Unusable::DeadLetter,
        );
        let mut sub = MockSubscription::new();
        sub.expect_dead_letter()
            .returning(|_, _| Err(BusError::Unavailable("broker gone".into())));
        sub.expect_ack().times(0);
        d.process_batch(
            &mut sub,
            vec![delivery(1, b"garbage".to_vec())],
            &CancellationToken::new(),
        )
        .await;
        let m = d.metrics();
        assert_eq!((m.dead_lettered, m.dead_letter_errors), (0, 1));
    }

    #[tokio::test]
    async fn run_over_the_in_process_bus_applies_everything_and_stops_gracefully() {
        use crate::bus::InProcessBus;
        let writes = Arc::new(Mutex::new(Vec::new()));
        let store = store_with(100, writes.clone());
        let bus = InProcessBus::default();
        for i in 1..=100 {
            bus.publish(
                MessageKind::OpStatus,
                op(i, 5, "OP_INSTANCE_CREATE", "success"),
            )
            .await
            .unwrap();
        }
        bus.publish(MessageKind::NetStatus, b"nope".to_vec())
            .await
            .unwrap();
        let mut cfg = DispatcherConfig::new("snf-");
        cfg.batch_size = 16;
        cfg.consumers_per_kind = 2;
        cfg.malformed_messages = Unusable::DeadLetter;
        let d = Dispatcher::new(Arc::new(store), Arc::new(bus.clone()), cfg);
        let cancel = CancellationToken::new();
        let run = tokio::spawn({
            let d = d.clone();
            let cancel = cancel.clone();
            async move { d.run(cancel).await }
        });
        for _ in 0..2000 {
            if d.metrics().applied == 100 && d.metrics().dead_lettered == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        let m = run.await.unwrap().unwrap();
        assert_eq!((m.applied, m.dead_lettered), (100, 1), "{m:?}");
        let dead = bus.dead_letters(MessageKind::NetStatus);
        assert!(dead[0].reason.contains("undecodable"), "{dead:?}");
        let d = bus.depth(MessageKind::OpStatus);
        assert_eq!((d.ready, d.unacked), (0, 0));
        assert_eq!(writes.lock().unwrap().len(), 100);
    }
}
