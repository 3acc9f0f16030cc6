//! `synnefo dispatcher`: the LOGIC node.
//!
//! Consumes backend notifications from RabbitMQ and applies them to the
//! database (`synnefo_core::dispatcher`). Run two or more side by side:
//! they compete for the same queues, and the state machine plus optimistic
//! concurrency make that safe. SIGTERM/SIGINT finish the batches in flight,
//! ack them, and exit.

use std::process::ExitCode;
use std::sync::Arc;

use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};

use crate::common::{Context, Unavailable, shutdown_token};

/// Options of `synnefo dispatcher`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages applied per database transaction (overrides dispatcher.batch_size)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: Option<u32>,
    /// Unacked messages per consumer (overrides amqp.prefetch)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: Option<u16>,
    /// Consumers per queue inside this process; two overlap one batch's
    /// commit with the next batch's read (`examples/dispatcher_load`:
    /// about +13% on PostgreSQL)
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub consumers: u16,
}

/// Runs the dispatcher until SIGTERM/SIGINT.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let s = &ctx.settings;
    let store = ctx.store().await?;
    let mut amqp = AmqpConfig::from_settings(&s.amqp, &s.backend_prefix_id);
    amqp.connection_name = format!("synnefo-dispatcher-{}", std::process::id());
    if let Some(p) = args.prefetch {
        amqp.prefetch = p;
    }
    let bus = AmqpBus::connect(amqp)
        .await
        .map_err(|e| Unavailable(format!("message bus: {e}")))?;

    let mut config = DispatcherConfig::from_settings(s);
    if let Some(b) = args.batch_size {
        config.batch_size = b as usize;
    }
    config.consumers_per_kind = args.consumers as usize;
    let queues: Vec<String> = config
        .kinds()
        .into_iter()
        .map(|k| bus.config().queue_name(k))
        .collect();
    tracing::info!(
        ?queues,
        batch_size = config.batch_size,
        prefetch = bus.config().prefetch,
        consumers = config.consumers_per_kind,
        "dispatcher starting"
    );
    let dispatcher = Dispatcher::new(Arc::new(store), Arc::new(bus.clone()), config);
    let metrics = dispatcher.run(shutdown_token()).await?;
    bus.close().await;
    eprintln!(
        "dispatcher stopped: {} applied, {} ignored, {} recorded, {} for unknown servers, {} unreadable, {} dead-lettered, {} batches, {} redelivered, {} retries",
        metrics.applied,
        metrics.ignored,
        metrics.recorded,
        metrics.unknown_server,
        metrics.malformed,
        metrics.dead_lettered,
        metrics.batches,
        metrics.redelivered,
        metrics.retries
    );
    Ok(ExitCode::SUCCESS)
}
