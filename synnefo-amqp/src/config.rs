//! Where the broker is and how the topology is named.
//!
//! Names follow Synnefo's later releases so an operator recognises them:
//! exchange `ganeti` (topic), routing keys `ganeti.<prefix>.event.op|net`,
//! queues `<prefix>-events-op|net`; ours adds a dead-letter exchange
//! `ganeti.dead` and queue `<prefix>-events-dead`.

use std::time::Duration;

use synnefo_core::messages::{EXCHANGE, MessageKind};
use synnefo_core::settings::AmqpSettings;

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
    /// Declare quorum queues (RabbitMQ HA) instead of classic durable ones.
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

impl AmqpConfig {
    /// Defaults for a broker URI and an instance-name prefix.
    pub fn new(uri: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            prefix: prefix.into(),
            exchange: EXCHANGE.to_string(),
            dead_letter_exchange: format!("{EXCHANGE}.dead"),
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

    /// From the `[amqp]` settings and `backend_prefix_id`.
    pub fn from_settings(amqp: &AmqpSettings, prefix: &str) -> Self {
        Self {
            quorum_queues: amqp.quorum_queues,
            prefetch: amqp.prefetch.max(1),
            max_backoff: Duration::from_secs(amqp.max_reconnect_backoff_secs.max(1)),
            ..Self::new(amqp.uri(), prefix)
        }
    }

    fn stem(&self) -> &str {
        self.prefix.trim_end_matches('-')
    }

    /// The queue of one message kind (`snf-events-op`, `snf-events-net`).
    pub fn queue_name(&self, kind: MessageKind) -> String {
        match kind {
            MessageKind::OpStatus => format!("{}-events-op", self.stem()),
            MessageKind::NetStatus => format!("{}-events-net", self.stem()),
        }
    }

    /// The dead-letter queue (`snf-events-dead`).
    pub fn dead_letter_queue(&self) -> String {
        format!("{}-events-dead", self.stem())
    }

    /// The routing key of one kind (`ganeti.snf.event.op`).
    pub fn routing_key(&self, kind: MessageKind) -> String {
        kind.routing_key(&self.prefix)
    }

    /// The pattern binding the dead-letter queue (`ganeti.snf.#`).
    pub fn dead_letter_binding(&self) -> String {
        format!("ganeti.{}.#", self.stem())
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
