//! Declaring exchanges, queues and bindings.
//!
//! Both sides declare the whole topology on every new channel (it is
//! idempotent): a publisher that came up before any dispatcher must not
//! publish into an exchange with no queue bound, where RabbitMQ would drop
//! the message; and a broker that lost a non-replicated queue gets it back.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use synnefo_core::messages::MessageKind;

use crate::config::AmqpConfig;
use crate::error::AmqpError;

/// Header carrying the reason a message was dead-lettered.
pub const REASON_HEADER: &str = "x-synnefo-reason";
/// Header naming the queue a dead letter came from.
pub const QUEUE_HEADER: &str = "x-synnefo-queue";
/// Header with the time (seconds since the epoch) of dead-lettering.
pub const DEAD_AT_HEADER: &str = "x-synnefo-dead-lettered-at";

/// An AMQP short string (at most 255 bytes), or a configuration error.
pub(crate) fn short(s: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(s)
        .map_err(|_| AmqpError::Config(format!("name too long for AMQP (255 bytes max): {s:?}")))
}

/// A header table value.
pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn queue_args(cfg: &AmqpConfig, dead_letter_to: Option<&str>) -> Result<FieldTable, AmqpError> {
    let mut t = FieldTable::default();
    if let Some(dlx) = dead_letter_to {
        t.insert(short("x-dead-letter-exchange")?, text(dlx));
    }
    if cfg.quorum_queues {
        t.insert(short("x-queue-type")?, text("quorum"));
    }
    Ok(t)
}

fn topo(what: String, e: lapin::Error) -> AmqpError {
    let hint = if e.to_string().contains("PRECONDITION_FAILED")
        || e.to_string().contains("inequivalent")
    {
        " (it exists with other arguments: was amqp.quorum_queues changed? delete the queue or keep the old setting)"
    } else {
        ""
    };
    AmqpError::Topology(format!("{what}: {e}{hint}"))
}

/// Declares the exchanges, the per-kind queues, the dead-letter queue and
/// their bindings.
pub(crate) async fn declare(ch: &Channel, cfg: &AmqpConfig) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for ex in [&cfg.exchange, &cfg.dead_letter_exchange] {
        ch.exchange_declare(
            short(ex)?,
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| topo(format!("exchange {ex}"), e))?;
    }
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for kind in MessageKind::ALL {
        let q = cfg.queue_name(kind);
        ch.queue_declare(
            short(&q)?,
            qopts,
            queue_args(cfg, Some(&cfg.dead_letter_exchange))?,
        )
        .await
        .map_err(|e| topo(format!("queue {q}"), e))?;
        let key = cfg.routing_key(kind);
        ch.queue_bind(
            short(&q)?,
            short(&cfg.exchange)?,
            short(&key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| topo(format!("binding {q} to {key}"), e))?;
    }
    let dq = cfg.dead_letter_queue();
    ch.queue_declare(short(&dq)?, qopts, queue_args(cfg, None)?)
        .await
        .map_err(|e| topo(format!("queue {dq}"), e))?;
    ch.queue_bind(
        short(&dq)?,
        short(&cfg.dead_letter_exchange)?,
        short(&cfg.dead_letter_binding())?,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| topo(format!("binding {dq}"), e))?;
    Ok(())
}
