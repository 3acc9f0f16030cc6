//! `synnefo ganeti-hook`: the Ganeti hook (run by Ganeti through a
//! symlink, with no arguments) and its `install` helper.
//!
//! Ganeti runs hooks with a reset environment, so settings come from
//! `/etc/synnefo/synnefo.toml` (or `SYNNEFO_CONFIG` when set), never from
//! where the link points.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_ganeti_master::hook::{self, HookOutcome, InstallOptions, Installed};

use crate::common::{ConfigError, Context};

/// Options of `synnefo ganeti-hook`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to wait for the broker (Ganeti waits for its hooks)
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Option<HookCommand>,
}

/// Subcommands of `synnefo ganeti-hook`.
#[derive(Debug, clap::Subcommand)]
pub enum HookCommand {
    /// Link this executable into Ganeti's hook directories
    Install(InstallArgs),
}

/// Options of `synnefo ganeti-hook install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Ganeti's hooks directory
    #[arg(long, default_value = "/etc/ganeti/hooks", value_name = "DIR")]
    pub hooks_dir: PathBuf,
    /// Link name (Ganeti runs only names matching ^[a-zA-Z0-9_-]+$)
    #[arg(long, default_value = "00-synnefo")]
    pub name: String,
    /// Hook phases to link into (the PATH-PHASE.d directories)
    #[arg(long, value_delimiter = ',', default_values_t = hook::DEFAULT_PHASES.map(String::from))]
    pub phases: Vec<String>,
    /// Link target [default: this executable]
    #[arg(long, value_name = "PATH")]
    pub target: Option<PathBuf>,
    /// Replace another file of the same name
    #[arg(long)]
    pub force: bool,
}

/// True when Ganeti runs us as a hook: no arguments, hook environment.
/// (Ganeti calls the link with no arguments, so `main` routes to the hook.)
pub fn invoked_as_hook() -> bool {
    std::env::args_os().len() == 1 && std::env::var_os("GANETI_HOOKS_PATH").is_some()
}

/// Runs the hook or the install helper.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(HookCommand::Install(a)) => install(a),
        None => run_hook(ctx, Duration::from_secs(args.timeout.max(1))).await,
    }
}

fn install(a: InstallArgs) -> anyhow::Result<ExitCode> {
    let target = match a.target {
        Some(t) => t,
        None => std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .context("locating this executable")?,
    };
    let opts = InstallOptions {
        hooks_dir: a.hooks_dir,
        name: a.name,
        phases: a.phases,
        target,
        force: a.force,
    };
    let done = hook::install(&opts).map_err(|e| match e {
        hook::HookError::BadLinkName(_) | hook::HookError::BadPhase(_) => {
            anyhow::Error::new(ConfigError(e.to_string()))
        }
        other => anyhow::Error::new(other),
    })?;
    for d in done {
        match d {
            Installed::Created(p) => {
                println!("created  {} -> {}", p.display(), opts.target.display())
            }
            Installed::Unchanged(p) => println!("present  {}", p.display()),
            Installed::Replaced(p) => {
                println!("replaced {} -> {}", p.display(), opts.target.display())
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_hook(ctx: &Context, timeout: Duration) -> anyhow::Result<ExitCode> {
    let env = hook::parse_env(std::env::vars()).map_err(|e| ConfigError(e.to_string()))?;
    let outcome = hook::plan(
        &env,
        &ctx.settings.backend_prefix_id,
        synnefo_ganeti_master::eventd::job::now_timestamp(),
    );
    let msg = match outcome {
        HookOutcome::Skip(why) => {
            println!("synnefo ganeti-hook: {why}");
            return Ok(ExitCode::SUCCESS);
        }
        HookOutcome::Publish(msg) => msg,
    };
    let mut amqp = AmqpConfig::from_settings(&ctx.settings.amqp, &ctx.settings.backend_prefix_id);
    amqp.publish_timeout = timeout;
    amqp.connect_timeout = amqp.connect_timeout.min(timeout);
    let bus = AmqpBus::new_lazy(amqp).map_err(|e| ConfigError(format!("amqp: {e}")))?;
    let result = hook::publish(&msg, &bus, timeout).await;
    bus.close().await;
    result?;
    println!(
        "synnefo ganeti-hook: published ganeti-net-status for {} ({} NICs)",
        msg.instance,
        msg.nics.len()
    );
    Ok(ExitCode::SUCCESS)
}
