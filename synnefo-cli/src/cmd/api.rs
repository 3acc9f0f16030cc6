//! `synnefo api`: the WEBSERVER node's compute API.
//!
//! Builds the adapters from settings (the database, one RAPI client per
//! `[ganeti.clusters.*]`, the vncauthproxy control socket) and serves
//! `synnefo_api::router` on `api.listen` until SIGTERM/SIGINT, then drains
//! in-flight requests.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use synnefo_api::consoles::SocketForwarder;
use synnefo_api::{ApiConfig, ApiState};
use synnefo_core::ServiceError;
use synnefo_core::model::{Backend, Flavor};
use synnefo_core::ports::{GanetiBackend, Store};
use synnefo_core::service::compute::{PlaceWith, PlacementFuture};
use synnefo_ganeti::backend::RapiBackend;

use crate::common::{Context, Unavailable, shutdown_token};

/// `synnefo api` options.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Listen address [default: api.listen]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Create or upgrade the schema before serving
    #[arg(long)]
    pub migrate: bool,
    /// Serve without a console proxy (console requests answer 503)
    #[arg(long)]
    pub no_console: bool,
    /// Memory for rendered server listings in MiB, 0 to turn the cache
    /// off [default: api.list_cache_mib]. Pages are checked against the
    /// project's change counter in the database on every request, so they
    /// are never stale, whichever process changed what
    #[arg(long, value_name = "MIB")]
    pub list_cache_mib: Option<usize>,
    /// Trust a validated token for this many milliseconds without asking
    /// the database (0: validate every request)
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub token_cache_ms: u64,
}

/// Placement through Ganeti's own view of free memory (synnefo-ganeti's
/// allocator), for clusters whose loads can be read.
fn ganeti_placement(
    ganeti: Arc<dyn GanetiBackend>,
) -> PlaceWith<impl Fn(Vec<Backend>, Flavor) -> PlacementFuture + Send + Sync> {
    PlaceWith(
        move |candidates: Vec<Backend>, flavor: Flavor| -> PlacementFuture {
            let ganeti = ganeti.clone();
            Box::pin(async move {
                synnefo_ganeti::allocator::allocate(
                    &candidates,
                    ganeti.as_ref(),
                    flavor.ram_mib.max(0) as u64,
                )
                .await
                .map_err(ServiceError::from)
            })
        },
    )
}

/// Runs the API until a shutdown signal.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let store = ctx.store().await?;
    if args.migrate {
        store.migrate().await.context("migrating the database")?;
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let mut clusters = Vec::new();
    for (name, c) in &settings.ganeti.clusters {
        let b = store
            .upsert_backend(name, &c.host, c.port)
            .await
            .map_err(|e| Unavailable(format!("database: {e}")))?;
        clusters.push((b.id, c.clone()));
    }
    if clusters.is_empty() {
        tracing::warn!("no [ganeti.clusters.*] configured: creates will answer 503");
    }
    let ganeti: Arc<dyn GanetiBackend> = Arc::new(
        RapiBackend::new(clusters, settings.ganeti.clone()).context("building the RAPI clients")?,
    );
    let mut config = ApiConfig::from_settings(settings);
    if let Some(mib) = args.list_cache_mib {
        config.list_cache_bytes = mib.saturating_mul(1024 * 1024);
    }
    config.token_cache_ttl =
        Some(std::time::Duration::from_millis(args.token_cache_ms)).filter(|d| !d.is_zero());
    let mut state = ApiState::new(store, ganeti.clone(), config)
        .with_placement(Arc::new(ganeti_placement(ganeti)));
    if !args.no_console {
        state = state.with_console(Arc::new(SocketForwarder {
            socket: settings.vncauthproxy.ctrl_socket.clone(),
            public_host: settings.vncauthproxy.public_host.clone(),
        }));
    }
    let listen: SocketAddr = match args.listen {
        Some(a) => a,
        None => settings.api.listen.parse().map_err(|e| {
            crate::common::ConfigError(format!("api.listen {:?}: {e}", settings.api.listen))
        })?,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Unavailable(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(%listen, public_url = %settings.api.public_url, "compute API listening");
    let token = shutdown_token();
    synnefo_api::serve(
        listener,
        synnefo_api::router(state),
        synnefo_api::ServeConfig::from_settings(&settings.limits),
        token,
    )
    .await
    .context("serving the API")?;
    tracing::info!("compute API stopped");
    Ok(ExitCode::SUCCESS)
}
