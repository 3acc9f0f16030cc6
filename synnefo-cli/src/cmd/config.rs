//! `synnefo config show|check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use synnefo_core::settings::{Settings, SettingsSources};

use crate::common::ConfigError;

/// Settings commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged settings (defaults + files + environment), secrets masked
    Show {
        /// Print JSON instead of TOML
        #[arg(long)]
        json: bool,
    },
    /// Validate the settings; exit 0 if they load, 78 otherwise
    Check,
    /// Print the shipped defaults (synnefo.dist.toml)
    Defaults,
}

/// Runs a settings command.
pub async fn run(files: &[PathBuf], cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    if let ConfigCommand::Defaults = cmd {
        print!("{}", synnefo_core::settings::DIST_TOML);
        return Ok(ExitCode::SUCCESS);
    }
    let sources = SettingsSources::standard(files);
    let settings = Settings::load(&sources).map_err(|e| ConfigError(e.to_string()))?;
    match cmd {
        ConfigCommand::Show { json: false } => print!("{}", settings.to_masked_toml()),
        ConfigCommand::Show { json: true } => {
            println!("{}", serde_json::to_string_pretty(&settings)?)
        }
        ConfigCommand::Check => {
            let files: Vec<String> = sources
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            let extra = if files.is_empty() {
                String::new()
            } else {
                format!(" + {}", files.join(" + "))
            };
            println!("settings OK (defaults{extra} + SYNNEFO_* environment)");
        }
        ConfigCommand::Defaults => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}
