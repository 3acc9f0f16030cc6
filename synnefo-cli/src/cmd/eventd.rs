//! `synnefo eventd`: the GANETI-MASTER's job-queue watcher.
//!
//! Runs on every master candidate; publishes only the changes made while
//! this node is master (see `synnefo_ganeti_master::eventd::master`). Publishes
//! to RabbitMQ; while the broker is down, messages wait in the spool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig, MasterMode};

use crate::common::{ConfigError, Context, shutdown_token};

/// Options of `synnefo eventd`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ganeti's job queue directory (overrides eventd.queue_dir)
    #[arg(long, value_name = "DIR")]
    pub queue_dir: Option<PathBuf>,
    /// Spool and state directory (overrides eventd.spool_dir)
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// This node's name as in ssconf_master_node (overrides eventd.node_name)
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Publish regardless of ssconf_master_node (single-node labs, simulators)
    #[arg(long)]
    pub always_master: bool,
}

/// Builds eventd's configuration from settings and flags.
pub fn eventd_config(ctx: &Context, args: &Args) -> Result<EventdConfig, ConfigError> {
    let mut config =
        EventdConfig::from_settings(&ctx.settings).map_err(|e| ConfigError(e.to_string()))?;
    if let Some(q) = &args.queue_dir {
        config.queue_dir = q.clone();
    }
    if let Some(s) = &args.spool_dir {
        config.spool_dir = s.clone();
    }
    if let (Some(n), MasterMode::File { node_name, .. }) = (&args.node_name, &mut config.master) {
        *node_name = n.clone();
    }
    if args.always_master {
        config.master = MasterMode::Always;
    }
    Ok(config)
}

/// Runs eventd until SIGTERM/SIGINT.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let config = eventd_config(ctx, &args)?;
    let amqp = AmqpConfig::from_settings(&ctx.settings.amqp, &ctx.settings.backend_prefix_id);
    // Lazy: eventd starts (and spools) while the broker is down.
    let bus = AmqpBus::new_lazy(amqp).map_err(|e| ConfigError(format!("amqp: {e}")))?;
    tracing::info!(queue = %config.queue_dir.display(), spool = %config.spool_dir.display(), master = ?config.master, "eventd starting");
    let eventd = Eventd::new(config, Arc::new(bus.clone()));
    let metrics = eventd.run(shutdown_token()).await?;
    bus.close().await;
    tracing::info!(?metrics, "eventd stopped");
    Ok(ExitCode::SUCCESS)
}
