//! Declaring exchanges, queues and bindings.
//!
//! Both sides declare the whole topology on every new channel (it is
//! idempotent): a publisher that came up before any dispatcher must not
//! publish into an exchange with no queue bound, where RabbitMQ would drop
//! the message; and a broker that lost a non-replicated queue gets it back.
//!
//! Queues that exist already are, by default, used as they are: Synnefo's
//! dispatcher declares `snf-events-op` with `x-dead-letter-exchange=ganeti-dl`
//! and `x-ha-policy=all`, and declaring it again with other arguments would
//! be refused (`PRECONDITION_FAILED`). AMQP has no way to read a queue's
//! arguments (a passive declare only says it exists), so we ask that, and
//! declare only what is missing.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::{AmqpConfig, ExistingQueues};
use crate::error::{AmqpError, channel_err};

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
        " (it exists with other arguments, e.g. declared by Synnefo's dispatcher or before \
         amqp.quorum_queues changed: set amqp.topology.existing = \"adopt\" to use it as it is, \
         or delete it)"
    } else {
        ""
    };
    AmqpError::Topology(format!("{what}: {e}{hint}"))
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 404)
}

/// Asks the broker whether exchanges and queues exist (passive declares).
///
/// A passive declare of a missing object is a channel error that closes
/// the channel, so probes run on a throwaway channel of their own,
/// replaced after each "not found", never on the channel being set up.
struct Prober<'a> {
    conn: &'a Connection,
    channel: Option<Channel>,
}

impl Prober<'_> {
    async fn channel(&mut self) -> Result<Channel, AmqpError> {
        if let Some(c) = self.channel.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        let c = self
            .conn
            .create_channel()
            .await
            .map_err(|e| channel_err("opening a probe channel", e))?;
        self.channel = Some(c.clone());
        Ok(c)
    }

    fn settle(&mut self, r: Result<(), lapin::Error>, what: &str) -> Result<bool, AmqpError> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => {
                self.channel = None;
                Ok(false)
            }
            Err(e) => {
                self.channel = None;
                Err(topo(format!("probing {what}"), e))
            }
        }
    }

    async fn exchange_exists(&mut self, name: &str) -> Result<bool, AmqpError> {
        let ch = self.channel().await?;
        let opts = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let r = ch
            .exchange_declare(
                short(name)?,
                ExchangeKind::Topic,
                opts,
                FieldTable::default(),
            )
            .await;
        self.settle(r, &format!("exchange {name}"))
    }

    async fn queue_exists(&mut self, name: &str) -> Result<bool, AmqpError> {
        let ch = self.channel().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let r = ch
            .queue_declare(short(name)?, opts, FieldTable::default())
            .await
            .map(|_| ());
        self.settle(r, &format!("queue {name}"))
    }

    async fn close(self) {
        if let Some(c) = self.channel
            && c.status().connected()
        {
            let _ = c.close(200, "probe done".into()).await;
        }
    }
}

/// Declares the exchanges, the queues of [`AmqpConfig::bindings`] and
/// their bindings on `ch`. With [`ExistingQueues::Adopt`] an exchange or
/// queue that exists already is used as it is (whatever its arguments;
/// only missing ones are declared, with ours); with
/// [`ExistingQueues::Declare`] everything is declared with our arguments
/// and a mismatch is an error.
pub(crate) async fn declare(
    conn: &Connection,
    ch: &Channel,
    cfg: &AmqpConfig,
) -> Result<(), AmqpError> {
    let mut probe = match cfg.existing {
        ExistingQueues::Adopt => Some(Prober {
            conn,
            channel: None,
        }),
        ExistingQueues::Declare => None,
    };
    let result = declare_with(ch, cfg, &mut probe).await;
    if let Some(p) = probe {
        p.close().await;
    }
    result
}

async fn declare_with(
    ch: &Channel,
    cfg: &AmqpConfig,
    probe: &mut Option<Prober<'_>>,
) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for ex in [&cfg.exchange, &cfg.dead_letter_exchange] {
        if let Some(p) = probe.as_mut()
            && p.exchange_exists(ex).await?
        {
            tracing::debug!(exchange = %ex, "exchange exists; using it as it is");
            continue;
        }
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
    for b in cfg.bindings() {
        let q = &b.queue;
        let adopted = match probe.as_mut() {
            Some(p) => p.queue_exists(q).await?,
            None => false,
        };
        if adopted {
            tracing::debug!(queue = %q, "queue exists; using it as it is");
        } else {
            let dlx =
                (b.exchange != cfg.dead_letter_exchange).then_some(&*cfg.dead_letter_exchange);
            ch.queue_declare(short(q)?, qopts, queue_args(cfg, dlx)?)
                .await
                .map_err(|e| topo(format!("queue {q}"), e))?;
        }
        for key in &b.keys {
            ch.queue_bind(
                short(q)?,
                short(&b.exchange)?,
                short(key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| topo(format!("binding {q} to {} with {key}", b.exchange), e))?;
        }
    }
    Ok(())
}
