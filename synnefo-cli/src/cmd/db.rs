//! `synnefo db migrate|status`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::common::Context;

/// Database commands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schema to the latest version
    Migrate,
}

/// Runs a database command.
pub async fn run(ctx: &Context, cmd: DbCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DbCommand::Migrate => {
            let store = ctx.store().await?;
            store.migrate().await?;
            println!(
                "database schema is up to date ({})",
                synnefo_core::settings::mask_url_password(&ctx.settings.database.url)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
