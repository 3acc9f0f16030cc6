//! Shared plumbing for subcommands: settings, logging, exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use synnefo_core::settings::{Settings, SettingsSources};

/// Exit code for bad usage or bad settings (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for an unavailable service (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for internal errors (sysexits EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;

/// What every subcommand starts from.
pub struct Context {
    /// The merged settings.
    pub settings: Settings,
}

/// A settings problem, mapped to [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Context {
    /// Loads settings and sets up logging.
    pub fn load(files: &[PathBuf], log_format: Option<&str>) -> anyhow::Result<Context> {
        let settings = Settings::load(&SettingsSources::standard(files))
            .map_err(|e| ConfigError(e.to_string()))?;
        init_logging(
            log_format.unwrap_or(&settings.log.format),
            &settings.log.level,
        );
        Ok(Context { settings })
    }

    /// Connects to the configured database.
    pub async fn store(&self) -> anyhow::Result<synnefo_core::store::SeaStore> {
        let db = &self.settings.database;
        if let Some(path) = sqlite_path(&db.url)
            && let Some(parent) = std::path::Path::new(&path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        synnefo_core::store::SeaStore::connect_with_timeout(
            &db.url,
            db.max_connections,
            std::time::Duration::from_secs(db.connect_timeout_secs),
        )
        .await
        .map_err(|e| Unavailable(format!("database: {e}")).into())
    }
}

/// A dependency that is down, mapped to [`EXIT_UNAVAILABLE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// Sets up tracing (human or JSON), once.
///
/// The human format is colored only on a terminal (and without
/// `NO_COLOR`): a service's stderr goes to journald or a log file, where
/// escape sequences are noise.
pub fn init_logging(format: &str, level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SYNNEFO_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Prints an error and picks the exit code.
pub fn report(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    if e.downcast_ref::<ConfigError>().is_some() {
        ExitCode::from(EXIT_CONFIG)
    } else if e.downcast_ref::<Unavailable>().is_some() {
        ExitCode::from(EXIT_UNAVAILABLE)
    } else {
        ExitCode::FAILURE
    }
}

/// A token cancelled on SIGTERM or SIGINT (Ctrl-C), for graceful shutdown.
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested; finishing in-flight work");
        t.cancel();
    });
    token
}
