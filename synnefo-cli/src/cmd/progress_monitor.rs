//! `synnefo progress-monitor INSTANCE`: snf-image's `PROGRESS_MONITOR` on
//! every node that builds instances. snf-image runs
//! `$PROGRESS_MONITOR "$instance"` with its monitor messages on standard
//! input; set `PROGRESS_MONITOR="synnefo progress-monitor"` in
//! `/etc/default/snf-image`. Settings come from `/etc/synnefo/synnefo.toml`
//! (or `SYNNEFO_CONFIG`): the broker (`[amqp]`) and the instance-name
//! prefix. The messages go to the bus as Synnefo's `snf-progress-monitor`
//! publishes them; standard input is always read to its end (a monitor
//! that stops reading makes snf-image's deployment fail).

use std::process::ExitCode;
use std::time::Duration;

use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_ganeti_master::progress;

use crate::common::{ConfigError, Context};

/// Options of `synnefo progress-monitor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The instance snf-image is deploying (its only argument)
    pub instance: String,
    /// Seconds to wait for the broker per message
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub timeout: u64,
}

/// Reads standard input to its end (when the settings cannot be read:
/// snf-image must still be able to write).
pub async fn drain_stdin() {
    let mut sink = tokio::io::sink();
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut sink).await;
}

/// Publishes snf-image's messages for `args.instance`.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut amqp = AmqpConfig::from_settings(&ctx.settings.amqp, &ctx.settings.backend_prefix_id);
    amqp.publish_timeout = timeout;
    amqp.connect_timeout = amqp.connect_timeout.min(timeout);
    let bus = match AmqpBus::new_lazy(amqp) {
        Ok(b) => b,
        Err(e) => {
            drain_stdin().await;
            return Err(ConfigError(format!("amqp: {e}")).into());
        }
    };
    let stats = progress::run(
        tokio::io::stdin(),
        &args.instance,
        &ctx.settings.backend_prefix_id,
        &bus,
        timeout,
        synnefo_ganeti_master::eventd::job::now_timestamp,
    )
    .await;
    bus.close().await;
    tracing::info!(
        instance = %args.instance,
        read = stats.read,
        published = stats.published,
        skipped = stats.skipped,
        failed = stats.failed,
        "snf-image's monitor input ended"
    );
    Ok(ExitCode::SUCCESS)
}
