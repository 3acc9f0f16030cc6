//! Where the broker is and how the topology is named.
//!
//! Names follow Synnefo's later releases so an operator recognises them:
//! exchange `ganeti` (topic), routing keys `ganeti.<prefix>.event.op|net`,
//! queues `<prefix>-events-op|net`; ours adds a dead-letter exchange
//! `ganeti.dead` and queue `<prefix>-events-dead`. With
//! [`AmqpConfig::synnefo_queues`] (the default) Synnefo 0.16-0.20's other
//! queues and routing keys are declared and bound too, and with
//! [`ExistingQueues::Adopt`] (the default) queues that exist already, e.g.
//! declared by Synnefo's dispatcher with its own arguments, are used as
//! they are.

use std::time::Duration;

use synnefo_core::messages::{EXCHANGE, MessageKind};
pub use synnefo_core::settings::ExistingQueues;
use synnefo_core::settings::{AmqpSettings, AmqpTopologySettings};

/// Configuration of an [`crate::AmqpBus`].
#[derive(Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` (may hold a password).
    pub uri: String,
    /// Instance-name prefix (`BACKEND_PREFIX_ID`, e.g. `snf-`).
    pub prefix: String,
    /// The notifications exchange (topic, durable).
    pub exchange: String,
    /// The dead-letter exchange (topic, durable).
    pub dead_letter_exchange: String,
    /// The op-status queue (`<prefix>-events-op`).
    pub op_queue: String,
    /// The net-status queue (`<prefix>-events-net`).
    pub net_queue: String,
    /// Our dead-letter queue (`<prefix>-events-dead`).
    pub dead_queue: String,
    /// What to do with exchanges and queues that already exist.
    pub existing: ExistingQueues,
    /// Declare and bind Synnefo 0.16-0.20's network, progress and cluster
    /// queues and routing keys ([`AmqpConfig::synnefo_bindings`]).
    pub synnefo_queues: bool,
    /// Declare quorum queues (RabbitMQ HA) instead of classic durable ones
    /// (for queues this process creates; adopted ones stay as they are).
    pub quorum_queues: bool,
    /// Unacked messages per consumer.
    pub prefetch: u16,
    /// First reconnection delay.
    pub min_backoff: Duration,
    /// Longest reconnection delay.
    pub max_backoff: Duration,
    /// How long `publish` keeps retrying (reconnecting) before it reports
    /// the broker unavailable (eventd then spools).
    pub publish_timeout: Duration,
    /// Heartbeat asked of the broker when the URI does not set one, so a
    /// vanished broker is noticed within about twice this.
    pub heartbeat_secs: u16,
    /// TCP connect timeout when the URI does not set one.
    pub connect_timeout: Duration,
    /// Connection name shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("uri", &synnefo_core::settings::mask_url_password(&self.uri))
            .field("prefix", &self.prefix)
            .field("exchange", &self.exchange)
            .field("dead_letter_exchange", &self.dead_letter_exchange)
            .field("op_queue", &self.op_queue)
            .field("net_queue", &self.net_queue)
            .field("dead_queue", &self.dead_queue)
            .field("existing", &self.existing)
            .field("synnefo_queues", &self.synnefo_queues)
            .field("quorum_queues", &self.quorum_queues)
            .field("prefetch", &self.prefetch)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("publish_timeout", &self.publish_timeout)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// One queue of the topology and the routing keys bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    /// Queue name.
    pub queue: String,
    /// The exchange it is bound to.
    pub exchange: String,
    /// Binding keys (topic patterns).
    pub keys: Vec<String>,
}

fn stem_of(prefix: &str) -> &str {
    prefix.trim_end_matches('-')
}

impl AmqpConfig {
    /// Defaults for a broker URI and an instance-name prefix.
    pub fn new(uri: impl Into<String>, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let stem = stem_of(&prefix).to_string();
        Self {
            uri: uri.into(),
            exchange: EXCHANGE.to_string(),
            dead_letter_exchange: format!("{EXCHANGE}.dead"),
            op_queue: format!("{stem}-events-op"),
            net_queue: format!("{stem}-events-net"),
            dead_queue: format!("{stem}-events-dead"),
            existing: ExistingQueues::Adopt,
            synnefo_queues: true,
            prefix,
            quorum_queues: false,
            prefetch: 512,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(10),
            heartbeat_secs: 10,
            connect_timeout: Duration::from_secs(5),
            connection_name: format!("synnefo-{}", std::process::id()),
        }
    }

    /// From the `[amqp]` settings (`[amqp.topology]` included) and
    /// `backend_prefix_id`.
    pub fn from_settings(amqp: &AmqpSettings, prefix: &str) -> Self {
        let base = Self::new(amqp.uri(), prefix);
        let t: &AmqpTopologySettings = &amqp.topology;
        let or = |v: &str, d: String| if v.is_empty() { d } else { v.to_string() };
        Self {
            exchange: t.exchange.clone(),
            dead_letter_exchange: t.dead_letter_exchange.clone(),
            op_queue: or(&t.op_queue, base.op_queue.clone()),
            net_queue: or(&t.net_queue, base.net_queue.clone()),
            dead_queue: or(&t.dead_letter_queue, base.dead_queue.clone()),
            existing: t.existing,
            synnefo_queues: t.synnefo_queues,
            quorum_queues: amqp.quorum_queues,
            prefetch: amqp.prefetch.max(1),
            max_backoff: Duration::from_secs(amqp.max_reconnect_backoff_secs.max(1)),
            ..base
        }
    }

    fn stem(&self) -> &str {
        stem_of(&self.prefix)
    }

    /// The queue of one message kind (`snf-events-op`, `snf-events-net`).
    ///
    /// Synnefo's own kinds ([`MessageKind::SYNNEFO`]) have the queue its
    /// dispatcher declares: `<prefix>-events-network`, `-progress`,
    /// `-cluster`.
    pub fn queue_name(&self, kind: MessageKind) -> String {
        match kind {
            MessageKind::OpStatus => self.op_queue.clone(),
            MessageKind::NetStatus => self.net_queue.clone(),
            other => format!("{}-events-{}", self.stem(), other.queue_word()),
        }
    }

    /// The dead-letter queue (`snf-events-dead`).
    pub fn dead_letter_queue(&self) -> String {
        self.dead_queue.clone()
    }

    /// The routing key of one kind (`ganeti.snf.event.op`).
    pub fn routing_key(&self, kind: MessageKind) -> String {
        kind.routing_key(&self.prefix)
    }

    /// The pattern binding the dead-letter queue (`ganeti.snf.#`).
    pub fn dead_letter_binding(&self) -> String {
        format!("ganeti.{}.#", self.stem())
    }

    /// Synnefo 0.16-0.20's queues other than the op one, each with the
    /// routing key its eventd (`ganeti.<prefix>.event.network`,
    /// `ganeti.event.cluster`) or snf-image's progress monitor
    /// (`ganeti.<prefix>.event.progress`) publishes on. Empty unless
    /// [`AmqpConfig::synnefo_queues`].
    pub fn synnefo_bindings(&self) -> Vec<QueueBinding> {
        if !self.synnefo_queues {
            return Vec::new();
        }
        MessageKind::SYNNEFO
            .into_iter()
            .map(|kind| QueueBinding {
                queue: self.queue_name(kind),
                exchange: self.exchange.clone(),
                keys: vec![kind.routing_key(&self.prefix)],
            })
            .collect()
    }

    /// Every queue this bus declares (or adopts) and its bindings: the
    /// per-kind queues, Synnefo's ([`AmqpConfig::synnefo_bindings`]) and
    /// the dead-letter queue, in declaration order. A queue named twice
    /// (an operator pointing `net_queue` at `op_queue`) appears once with
    /// both keys.
    pub fn bindings(&self) -> Vec<QueueBinding> {
        let mut out: Vec<QueueBinding> = Vec::new();
        let mut add = |b: QueueBinding| {
            if let Some(have) = out
                .iter_mut()
                .find(|h| h.queue == b.queue && h.exchange == b.exchange)
            {
                for k in b.keys {
                    if !have.keys.contains(&k) {
                        have.keys.push(k);
                    }
                }
            } else {
                out.push(b);
            }
        };
        for kind in MessageKind::ALL {
            add(QueueBinding {
                queue: self.queue_name(kind),
                exchange: self.exchange.clone(),
                keys: vec![self.routing_key(kind)],
            });
        }
        let synnefo = self.synnefo_bindings();
        let cluster_keys: Vec<String> = synnefo
            .iter()
            .flat_map(|b| b.keys.iter())
            .filter(|k| !k.starts_with(&format!("ganeti.{}.", self.stem())))
            .cloned()
            .collect();
        for b in synnefo {
            add(b);
        }
        let mut dead_keys = vec![self.dead_letter_binding()];
        dead_keys.extend(cluster_keys);
        add(QueueBinding {
            queue: self.dead_letter_queue(),
            exchange: self.dead_letter_exchange.clone(),
            keys: dead_keys,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_synnefo() {
        let c = AmqpConfig::new("amqp://x", "snf-");
        assert_eq!(c.queue_name(MessageKind::OpStatus), "snf-events-op");
        assert_eq!(c.queue_name(MessageKind::NetStatus), "snf-events-net");
        assert_eq!(c.dead_letter_queue(), "snf-events-dead");
        assert_eq!(c.routing_key(MessageKind::OpStatus), "ganeti.snf.event.op");
        assert_eq!(c.dead_letter_binding(), "ganeti.snf.#");
        assert_eq!(
            (c.exchange.as_str(), c.dead_letter_exchange.as_str()),
            ("ganeti", "ganeti.dead")
        );
        assert_eq!(c.existing, ExistingQueues::Adopt);
    }

    #[test]
    fn synnefo_queues_and_keys_are_bound_by_default() {
        let c = AmqpConfig::new("amqp://x", "snf-");
        let b = c.bindings();
        let pairs: Vec<(&str, &str, Vec<&str>)> = b
            .iter()
            .map(|b| {
                (
                    b.queue.as_str(),
                    b.exchange.as_str(),
                    b.keys.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("snf-events-op", "ganeti", vec!["ganeti.snf.event.op"]),
                ("snf-events-net", "ganeti", vec!["ganeti.snf.event.net"]),
                (
                    "snf-events-network",
                    "ganeti",
                    vec!["ganeti.snf.event.network"]
                ),
                (
                    "snf-events-progress",
                    "ganeti",
                    vec!["ganeti.snf.event.progress"]
                ),
                ("snf-events-cluster", "ganeti", vec!["ganeti.event.cluster"]),
                (
                    "snf-events-dead",
                    "ganeti.dead",
                    vec!["ganeti.snf.#", "ganeti.event.cluster"]
                ),
            ]
        );
        let off = AmqpConfig {
            synnefo_queues: false,
            ..c
        };
        assert_eq!(off.bindings().len(), 3);
        assert_eq!(off.bindings()[2].keys, vec!["ganeti.snf.#".to_string()]);
    }

    #[test]
    fn one_queue_named_twice_is_declared_once_with_both_keys() {
        let mut c = AmqpConfig::new("amqp://x", "snf-");
        c.net_queue = c.op_queue.clone();
        let b = c.bindings();
        assert_eq!(b[0].queue, "snf-events-op");
        assert_eq!(
            b[0].keys,
            vec!["ganeti.snf.event.op", "ganeti.snf.event.net"]
        );
        assert_eq!(b.iter().filter(|q| q.queue == "snf-events-op").count(), 1);
    }

    #[test]
    fn topology_settings_map_over() {
        let s = synnefo_core::settings::Settings::defaults_with(
            "[amqp.topology]\ndead_letter_exchange = \"ganeti-dl\"\nop_queue = \"old-op\"\nexisting = \"declare\"\nsynnefo_queues = false",
        )
        .unwrap();
        let c = AmqpConfig::from_settings(&s.amqp, &s.backend_prefix_id);
        assert_eq!(c.dead_letter_exchange, "ganeti-dl");
        assert_eq!(c.op_queue, "old-op");
        assert_eq!(c.net_queue, "snf-events-net", "empty: derived");
        assert_eq!(c.existing, ExistingQueues::Declare);
        assert!(!c.synnefo_queues);
        let d = synnefo_core::settings::Settings::defaults_with("").unwrap();
        let c = AmqpConfig::from_settings(&d.amqp, &d.backend_prefix_id);
        assert_eq!(
            (c.existing, c.synnefo_queues),
            (ExistingQueues::Adopt, true)
        );
        assert_eq!(c.exchange, "ganeti");
        for bad in [
            "[amqp.topology]\nexisting = \"maybe\"",
            "[amqp.topology]\nexchange = \"\"",
            "[amqp.topology]\ndead_letter_exchange = \"ganeti\"",
            "[amqp.topology]\nop_queue = \"amq.x\"",
            "[amqp.topology]\nno_such_key = 1",
        ] {
            assert!(
                synnefo_core::settings::Settings::defaults_with(bad)
                    .and_then(|s| s.validate().map(|_| s))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_map_over_and_the_password_stays_hidden() {
        let s = synnefo_core::settings::Settings::defaults_with(
            "[amqp]\npassword = \"hunter2\"\nquorum_queues = true\nprefetch = 64\nmax_reconnect_backoff_secs = 3",
        )
        .unwrap();
        let c = AmqpConfig::from_settings(&s.amqp, &s.backend_prefix_id);
        assert!(c.quorum_queues);
        assert_eq!(c.prefetch, 64);
        assert_eq!(c.max_backoff, Duration::from_secs(3));
        assert!(c.uri.contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
