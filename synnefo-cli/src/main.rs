//! The `synnefo` command: one subcommand per Synnefo node type.
//!
//! Each subcommand only loads settings, builds the library adapters and
//! calls library code; the logic lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod common;

/// Synnefo: an OpenStack-compatible cloud control plane over Ganeti.
#[derive(Debug, Parser)]
#[command(name = "synnefo", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Settings override file(s), merged in order over the shipped defaults
    /// [default: $SYNNEFO_CONFIG, else /etc/synnefo/synnefo.toml if present]
    #[arg(long = "config", short = 'c', global = true, value_name = "FILE")]
    config: Vec<std::path::PathBuf>,
    /// Log format: human or json (overrides log.format)
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show or check the merged settings
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Database schema management
    #[command(subcommand)]
    Db(cmd::db::DbCommand),
    /// Bring the DB in sync with Ganeti (admin; cron or --daemon)
    Reconcile(cmd::reconcile::Args),
    /// Consume backend notifications and apply them to the database (LOGIC)
    Dispatcher(cmd::dispatcher::Args),
    /// Run the VNC console proxy (WEBSERVER)
    Vncauthproxy(cmd::vncauthproxy::Args),
    /// Run a simulated Ganeti cluster speaking RAPI (tests, demos)
    GanetiSim(cmd::ganeti_sim::Args),
    /// Run the whole cloud in one process (SQLite, in-process bus, simulated Ganeti)
    Up(cmd::up::Args),
    /// Operators' view of servers in every project
    #[command(subcommand)]
    Server(cmd::server::ServerCommand),
    /// Print a shell completion script
    Completions(cmd::completions::Args),
    /// Serve the OpenStack compute API, identity and image endpoints (WEBSERVER)
    Api(cmd::api::Args),
    /// Manage users, projects, quotas, flavors, images, backends and tokens
    #[command(subcommand)]
    Admin(cmd::admin::AdminCommand),
    /// Watch Ganeti's job queue and publish op-status messages (GANETI-MASTER)
    Eventd(cmd::eventd::Args),
    /// The Ganeti hook reporting NICs (run by Ganeti via symlink), and `install`
    #[command(name = "ganeti-hook")]
    GanetiHook(cmd::ganeti_hook::Args),
    /// snf-image's PROGRESS_MONITOR: publish its build messages (Ganeti nodes)
    #[command(name = "progress-monitor")]
    ProgressMonitor(cmd::progress_monitor::Args),
}

fn main() -> ExitCode {
    // Ganeti runs the hook symlink with no arguments.
    let cli = if cmd::ganeti_hook::invoked_as_hook() {
        Cli::parse_from(["synnefo", "ganeti-hook"])
    } else {
        Cli::parse()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(common::EXIT_SOFTWARE);
        }
    };
    runtime.block_on(async move {
        let command = match cli.command {
            Command::Config(c) => {
                return cmd::config::run(&cli.config, c)
                    .await
                    .unwrap_or_else(common::report);
            }
            Command::Completions(a) => return cmd::completions::run::<Cli>(a),
            Command::GanetiSim(a) => {
                common::init_logging(cli.log_format.as_deref().unwrap_or("human"), "info");
                return cmd::ganeti_sim::run(a).await.unwrap_or_else(common::report);
            }
            other => other,
        };
        let ctx = match common::Context::load(&cli.config, cli.log_format.as_deref()) {
            Ok(ctx) => ctx,
            Err(e) => {
                if matches!(command, Command::ProgressMonitor(_)) {
                    // snf-image must still be able to write its messages.
                    cmd::progress_monitor::drain_stdin().await;
                }
                return common::report(e);
            }
        };
        let result = match command {
            Command::Config(_) | Command::GanetiSim(_) | Command::Completions(_) => {
                unreachable!("handled above")
            }
            Command::Server(c) => cmd::server::run(&ctx, c).await,
            Command::Up(a) => cmd::up::run(&ctx, a).await,
            Command::Api(a) => cmd::api::run(&ctx, a).await,
            Command::Admin(c) => cmd::admin::run(&ctx, c).await,
            Command::Db(c) => cmd::db::run(&ctx, c).await,
            Command::Reconcile(a) => cmd::reconcile::run(&ctx, a).await,
            Command::Dispatcher(a) => cmd::dispatcher::run(&ctx, a).await,
            Command::Vncauthproxy(a) => cmd::vncauthproxy::run(&ctx, a).await,
            Command::Eventd(a) => cmd::eventd::run(&ctx, a).await,
            Command::GanetiHook(a) => cmd::ganeti_hook::run(&ctx, a).await,
            Command::ProgressMonitor(a) => cmd::progress_monitor::run(&ctx, a).await,
        };
        match result {
            Ok(code) => code,
            Err(e) => common::report(e),
        }
    })
}
