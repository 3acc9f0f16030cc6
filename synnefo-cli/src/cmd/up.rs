//! `synnefo up`: the whole cloud in one process on the embedded default.
//!
//! SQLite under the data dir, the in-process bus, simulated Ganeti clusters
//! speaking RAPI, and every service of the seed wired as in a real
//! deployment: the API drives the clusters over RAPI, eventd watches each
//! simulator's job queue and publishes to the bus, the dispatcher applies
//! the notifications, the reconciler runs staggered, the console proxy
//! hands out one-time VNC forwardings. A second run reuses the data dir;
//! the simulated clusters (which keep nothing on disk) are rebuilt from the
//! DB so the reconciler finds them as it left them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use synnefo_api::console::{ProxyConfig, VncAuthProxy};
use synnefo_api::{ApiConfig, ApiState};
use synnefo_core::bus::InProcessBus;
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
use synnefo_core::ids::{BackendId, FlavorId, InstanceName};
use synnefo_core::model::{Flavor, Image, Quota};
use synnefo_core::ports::{EventBus, GanetiBackend, Store, VmQuery, VmStore};
use synnefo_core::settings::Settings;
use synnefo_core::state::OperState;
use synnefo_core::store::SeaStore;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use synnefo_ganeti_sim::{
    NewSimInstance, SimConfig, SimHandle, SimLatency, SimNetworkConfig, SimNodeConfig,
    SimVncConfig, Simulator,
};
use tokio::task::JoinSet;

use crate::common::{Context, shutdown_token};

mod hook;

/// The Ganeti network every server of `synnefo up` gets a NIC on (one per
/// simulated cluster, each with its own address pool).
pub const PUBLIC_NETWORK: &str = "public";

/// Options of `synnefo up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the SQLite DB, the simulators' job queues, the eventd spool and clouds.yaml live
    #[arg(long, default_value = ".synnefo-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// API listen address
    #[arg(long, default_value = "127.0.0.1:8774", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Number of simulated Ganeti clusters
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub clusters: u8,
    /// Simulated job latency per phase (queued, waiting, running), milliseconds
    #[arg(long, default_value_t = 50, value_name = "MS")]
    pub job_latency_ms: u64,
    /// Password of the demo user (default: generated on the first run and kept in DATA_DIR/demo-password)
    #[arg(long, env = "SYNNEFO_UP_DEMO_PASSWORD", hide_env_values = true)]
    pub demo_password: Option<String>,
    /// Browser consoles: where the noVNC page and its WebSocket listen (default: the API's address, port 6080, or a free port if that is taken; port 0 picks a free one)
    #[arg(long, value_name = "ADDR")]
    pub console_listen: Option<SocketAddr>,
    /// First VNC port of the simulated instances (cluster N uses BASE + (N-1)*1000 onwards)
    #[arg(long, default_value_t = 12000, value_name = "PORT")]
    pub vnc_port_base: u16,
    /// snf-image's image-copy-progress messages per simulated create (0: no build messages)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub build_progress_steps: u32,
    /// Time between two of a simulated create's build messages, milliseconds [default: --job-latency-ms]
    #[arg(long, value_name = "MS")]
    pub build_progress_interval_ms: Option<u64>,
}

const DEMO_USER: &str = "demo";
const DEMO_PROJECT: &str = "demo";

/// Runs everything until SIGTERM/SIGINT.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    create_private_dir(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let settings = embedded_settings(&ctx.settings, &data_dir, args.listen);
    let token = shutdown_token();

    // DB: password hashes and token digests, readable by the owner only
    // (created empty with mode 0600 before SQLite opens it; SQLite's -wal
    // and -shm files copy the database file's mode).
    private_file(&data_dir.join("synnefo.db"))?;
    let store = SeaStore::connect(&settings.database.url, settings.database.max_connections)
        .await
        .context("opening the embedded SQLite database")?;
    store.migrate().await.context("migrating the database")?;
    let store: Arc<dyn Store> = Arc::new(store);
    let password = demo_password(&data_dir, args.demo_password.as_deref())?;
    seed_demo(store.as_ref(), &password).await?;

    // GANETI: simulated clusters, rebuilt from the DB
    let mut sims = Vec::new();
    let mut clients = Vec::new();
    for i in 1..=args.clusters {
        let name = format!("cluster{i}");
        let in_use = addresses_in_use(store.as_ref(), &name).await?;
        let vnc_base = args
            .vnc_port_base
            .checked_add(u16::from(i - 1) * 1000)
            .context("--vnc-port-base too high for this many clusters")?;
        let sim = start_cluster(&data_dir, &name, i, vnc_base, args.job_latency_ms, in_use).await?;
        sim.set_progress(synnefo_ganeti_sim::SimProgress {
            copy_steps: args.build_progress_steps,
            interval_ms: args
                .build_progress_interval_ms
                .unwrap_or(args.job_latency_ms),
            // Its instances are diskless: Ganeti would run no OS scripts,
            // snf-image would report nothing; the demo reports anyway.
            diskless: true,
        });
        let backend = store
            .upsert_backend(&name, &sim.addr().ip().to_string(), sim.addr().port())
            .await
            .context("registering the simulated cluster")?;
        restore_instances(
            store.as_ref(),
            &sim,
            backend.id,
            &settings.backend_prefix_id,
        )
        .await?;
        // Every running instance's console shows a (generated) screen.
        sim.serve_vnc(SimVncConfig::default());
        clients.push((backend.id, sim.client()?));
        sims.push((name, Arc::new(sim)));
    }
    let backend_ids: Vec<_> = clients.iter().map(|(id, _)| *id).collect();
    let ganeti: Arc<dyn GanetiBackend> =
        Arc::new(RapiBackend::from_clients(clients, settings.ganeti.clone()));

    // NETWORK: the public network every new server joins, floating IPs
    // from the same pool; the simulators start empty, so each network is
    // made again on a cluster when a server there first needs it.
    let networking = synnefo_core::service::network::Networking::new(
        store.clone(),
        ganeti.clone(),
        synnefo_core::service::compute::ComputeConfig::from_settings(&settings).network,
        settings.backend_prefix_id.clone(),
    );
    for b in &backend_ids {
        networking.forget_backend(*b).await?;
    }
    networking
        .create_public_network(
            PUBLIC_NETWORK,
            synnefo_core::network::NetworkFlavor::IpLessRouted,
            Some(synnefo_core::service::network::FlavorRecipe {
                mode: "routed".into(),
                link: "100".into(),
            }),
            synnefo_core::network::SubnetRequest {
                cidr: UP_PUBLIC_SUBNET.into(),
                ..Default::default()
            },
        )
        .await
        .context("creating the public network")?;

    // QUEUE: the in-process bus
    let bus = Arc::new(InProcessBus::default());
    let bus_dyn: Arc<dyn EventBus> = bus.clone();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    // GANETI-MASTER: one eventd per cluster
    for (name, sim) in &sims {
        let mut config = EventdConfig::new(
            sim.queue_dir(),
            data_dir.join("spool").join(name),
            &settings.backend_prefix_id,
        );
        config.cluster_name = Some(sim.config().cluster_name.clone());
        let eventd = Eventd::new(config, bus_dyn.clone());
        let t = token.clone();
        tasks.spawn(async move { eventd.run(t).await.map(|_| ()).context("eventd") });
        // ... snf-image's PROGRESS_MONITOR on its nodes
        sim.set_progress_monitor(Some(Arc::new(synnefo_ganeti_master::progress::forwarder(
            bus_dyn.clone(),
            &settings.backend_prefix_id,
            Duration::from_secs(5),
        ))));
        // ... and the hook Ganeti would run there
        let (sim, bus, prefix, t) = (
            sim.clone(),
            bus_dyn.clone(),
            settings.backend_prefix_id.clone(),
            token.clone(),
        );
        tasks.spawn(async move { hook::run(sim, bus, prefix, t).await.context("ganeti hook") });
    }

    // LOGIC: the dispatcher (two consumers per queue, as two dispatchers would)
    let mut dconfig = DispatcherConfig::from_settings(&settings);
    dconfig.consumers_per_kind = 2;
    let vm_store: Arc<dyn VmStore> = store_as_vm_store(store.clone());
    let dispatcher = Dispatcher::new(vm_store, bus_dyn.clone(), dconfig);
    {
        let t = token.clone();
        tasks.spawn(async move { dispatcher.run(t).await.map(|_| ()).context("dispatcher") });
    }

    // WEBSERVER: console proxy (with the browser console: noVNC page and
    // WebSocket) + API
    let console_listen = args.console_listen.unwrap_or_else(|| {
        // The default port may be taken (another `synnefo up`, a noVNC
        // proxy): the URL comes from the API anyway, so any port will do.
        let default = SocketAddr::new(args.listen.ip(), 6080);
        match std::net::TcpListener::bind(default) {
            Ok(_) => default,
            Err(e) => {
                tracing::warn!(%default, error = %e, "browser consoles: default port unavailable, using a free one");
                SocketAddr::new(args.listen.ip(), 0)
            }
        }
    });
    let proxy_config = crate::cmd::vncauthproxy::with_limits(
        ProxyConfig {
            ctrl_socket: Some(data_dir.join("vncauthproxy.sock")),
            listen_address: args.listen.ip(),
            port_min: settings.vncauthproxy.port_min,
            port_max: settings.vncauthproxy.port_max,
            websocket_enabled: true,
            websocket_listen: console_listen,
            websocket_handshake_timeout: Duration::from_secs(
                settings.vncauthproxy.websocket_handshake_timeout_secs,
            ),
            websocket_max_message: settings.vncauthproxy.websocket_max_message_bytes,
            websocket_max_connections: settings.vncauthproxy.websocket_max_connections,
            ..ProxyConfig::default()
        },
        &settings.limits,
    );
    let proxy = VncAuthProxy::start(proxy_config, token.clone())
        .await
        .with_context(|| {
            format!(
                "starting vncauthproxy (browser consoles on {console_listen}; see --console-listen)"
            )
        })?;
    let mut api_config = ApiConfig::from_settings(&settings);
    // The page's URL as the browser reaches it: the bound port (0 picks
    // one), on the API's host when the console listens on all addresses.
    let console_page = proxy.websocket_addr().map(|addr| {
        let host = if addr.ip().is_unspecified() {
            args.listen.ip()
        } else {
            addr.ip()
        };
        format!(
            "http://{}{}",
            SocketAddr::new(host, addr.port()),
            synnefo_api::console::CONSOLE_PAGE
        )
    });
    api_config.novnc_url = console_page.clone();
    let state = ApiState::new(store.clone(), ganeti.clone(), api_config).with_console(Arc::new(
        synnefo_api::consoles::InProcessForwarder {
            handle: proxy.clone(),
            public_host: args.listen.ip().to_string(),
        },
    ));
    let app = synnefo_api::router(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "binding the API to {} (is another `synnefo up` running?)",
                args.listen
            )
        })?;
    {
        let t = token.clone();
        let serve_config = synnefo_api::ServeConfig::from_settings(&settings.limits);
        tasks.spawn(async move {
            synnefo_api::serve(listener, app, serve_config, t)
                .await
                .context("API server")
        });
    }

    // Administration: staggered reconciliation
    {
        let t = token.clone();
        let store = store.clone();
        let ganeti = ganeti.clone();
        let settings = settings.clone();
        tasks.spawn(async move {
            use synnefo_core::service::reconcile::{Reconciler, RunOptions, Scope};
            let clock: Arc<dyn synnefo_core::ports::Clock> = Arc::new(synnefo_core::ports::SystemClock);
            let reconciler = Reconciler::new(store, ganeti, clock, settings.backend_prefix_id.clone());
            let interval = settings.reconciliation.interval_min;
            let opts = RunOptions {
                scope: Scope::Staggered {
                    interval_min: interval,
                    reconciliation_min: settings.reconciliation.reconciliation_min,
                },
                ..RunOptions::default()
            };
            reconciler
                .run_periodically(opts, Duration::from_secs(interval * 60), t, |r| match r {
                    Ok(report) => tracing::info!(summary = %crate::cmd::reconcile::render(&report).lines().next().unwrap_or(""), "reconcile run (report only)"),
                    Err(e) => tracing::warn!(error = %e, "reconcile run failed"),
                })
                .await;
            Ok(())
        });
    }

    let clouds = write_clouds_yaml(&data_dir, &settings, &password)?;
    print_banner(
        &args,
        &settings,
        &clouds,
        &password,
        &sims,
        console_page.as_deref(),
    );

    // Run until Ctrl-C/SIGTERM, or until a service fails.
    let mut status = ExitCode::SUCCESS;
    tokio::select! {
        _ = token.cancelled() => {}
        Some(r) = tasks.join_next() => {
            if let Ok(Err(e)) | Err(e) = r.map_err(anyhow::Error::from) {
                tracing::error!(error = %format!("{e:#}"), "a service stopped; shutting down");
                status = ExitCode::FAILURE;
            }
            token.cancel();
        }
    }
    let drain = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %format!("{e:#}"), "service ended with an error during shutdown");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(15), drain)
        .await
        .is_err()
    {
        tracing::warn!("some services did not stop within 15 s");
    }
    proxy.shutdown().await;
    bus.close();
    for (_, sim) in &sims {
        sim.shutdown();
    }
    println!("synnefo up: stopped; data kept in {}", data_dir.display());
    Ok(status)
}

fn store_as_vm_store(store: Arc<dyn Store>) -> Arc<dyn VmStore> {
    store
}

/// The settings of the embedded default: SQLite and everything under the data dir.
/// The public network's subnet in `synnefo up` (a /16: 65,534 addresses,
/// apart from the simulators' own legacy `public` networks, `10.<n>.0.0/16`).
const UP_PUBLIC_SUBNET: &str = "10.0.0.0/16";

fn embedded_settings(base: &Settings, data_dir: &Path, listen: SocketAddr) -> Settings {
    let mut s = base.clone();
    s.data_dir = data_dir.to_path_buf();
    s.database.url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("synnefo.db").display()
    );
    s.api.listen = listen.to_string();
    s.api.public_url = format!("http://{listen}");
    s.vncauthproxy.ctrl_socket = data_dir.join("vncauthproxy.sock");
    s.vncauthproxy.public_host = listen.ip().to_string();
    s.eventd.spool_dir = data_dir.join("spool");
    // The simulators run diskless instances on "NICs" with no real network.
    s.ganeti.default_disk_template = "diskless".into();
    s.ganeti.default_nic_mode = "routed".into();
    s.ganeti.default_nic_link = "100".into();
    // Every server gets an address from the cluster's pool (`ip=pool`).
    s.ganeti.default_nic_network = PUBLIC_NETWORK.into();
    s
}

/// The `public` network of simulated cluster `index`: 10.`index`.0.0/16,
/// routed, with the addresses servers of an earlier run hold reserved
/// (the simulator keeps no pool on disk).
fn public_network(index: u8, in_use: Vec<String>) -> SimNetworkConfig {
    let subnet = format!("10.{index}.0.0/16");
    let prefix = format!("10.{index}.");
    SimNetworkConfig {
        gateway: Some(format!("10.{index}.0.1")),
        reserved_ips: in_use
            .into_iter()
            .filter(|ip| ip.starts_with(&prefix) && ip.parse::<std::net::Ipv4Addr>().is_ok())
            .collect(),
        mode: "routed".into(),
        link: "100".into(),
        ..SimNetworkConfig::new(PUBLIC_NETWORK, &subnet)
    }
}

/// The addresses the DB's servers on cluster `name` hold (none for a
/// cluster not registered yet).
async fn addresses_in_use(store: &dyn Store, name: &str) -> anyhow::Result<Vec<String>> {
    let Some(backend) = store
        .list_backends()
        .await?
        .into_iter()
        .find(|b| b.name == name)
    else {
        return Ok(Vec::new());
    };
    let vms = store
        .list_vms(&VmQuery {
            backend_id: Some(backend.id),
            ..VmQuery::default()
        })
        .await?;
    let ids: Vec<_> = vms.iter().map(|v| v.id).collect();
    let nics = store.nics_of(&ids).await?;
    Ok(nics.into_values().flatten().filter_map(|n| n.ip).collect())
}

async fn start_cluster(
    data_dir: &Path,
    name: &str,
    index: u8,
    vnc_port_base: u16,
    latency_ms: u64,
    in_use: Vec<String>,
) -> anyhow::Result<SimHandle> {
    let config = SimConfig {
        cluster_name: format!("{name}.sim"),
        data_dir: Some(data_dir.join("ganeti").join(name)),
        // Nodes live on loopback: consoles and everything else stay on this machine.
        nodes: (1..=2)
            .map(|n| SimNodeConfig {
                name: format!("node{n}.{name}.sim"),
                ip: Some("127.0.0.1".into()),
                ..SimNodeConfig::default()
            })
            .collect(),
        vnc_port_base,
        latency: SimLatency::uniform(Duration::from_millis(latency_ms)),
        archive_after_ms: Some(60_000),
        networks: vec![public_network(index, in_use)],
        ..SimConfig::default()
    };
    Simulator::builder()
        .config(config)
        .start()
        .await
        .with_context(|| format!("starting the simulated cluster {name}"))
}

/// Re-creates, in a fresh simulator, the instances the DB says live there.
async fn restore_instances(
    store: &dyn Store,
    sim: &SimHandle,
    backend: BackendId,
    prefix: &str,
) -> anyhow::Result<()> {
    let vms = store
        .list_vms(&VmQuery {
            backend_id: Some(backend),
            ..VmQuery::default()
        })
        .await?;
    let flavors: BTreeMap<FlavorId, Flavor> = store
        .list_flavors()
        .await?
        .into_iter()
        .map(|f| (f.id, f))
        .collect();
    let mut restored = 0;
    for vm in vms {
        if !matches!(
            vm.state.operstate(),
            OperState::Started | OperState::Stopped
        ) {
            continue;
        }
        let nics = store.nics(vm.id).await?;
        let flavor = flavors.get(&vm.flavor_id);
        sim.add_instance_directly(NewSimInstance {
            name: InstanceName::new(prefix, vm.id).to_string(),
            memory_mib: flavor.map_or(512, |f| f.ram_mib.max(0) as u64),
            vcpus: flavor.map_or(1, |f| f.vcpus.max(0) as u64),
            running: vm.state.operstate() == OperState::Started,
            nic_ips: nics.iter().map(|n| n.ip.clone()).collect(),
            ..NewSimInstance::default()
        });
        restored += 1;
    }
    if restored > 0 {
        tracing::info!(restored, cluster = %sim.config().cluster_name, "simulated instances restored from the DB");
    }
    Ok(())
}

fn demo_password(data_dir: &Path, given: Option<&str>) -> anyhow::Result<String> {
    let path = data_dir.join("demo-password");
    if let Some(p) = given {
        return Ok(p.to_string());
    }
    if let Ok(p) = std::fs::read_to_string(&path) {
        let p = p.trim().to_string();
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let secret = synnefo_core::service::identity::new_token_secret();
    let p: String = secret
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    write_private(&path, &format!("{p}\n"))?;
    Ok(p)
}

/// Creates `dir` (and parents) with mode 0700: it holds the database, the
/// demo password and clouds.yaml. An existing directory keeps its mode
/// (it may be shared on purpose); its secret files are 0600 anyway.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// Creates `path` empty if missing, and makes it 0600 either way.
fn private_file(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Demo identity, quota, flavors and images; idempotent.
async fn seed_demo(store: &dyn Store, password: &str) -> anyhow::Result<()> {
    use synnefo_core::service::identity::{hash_password, verify_password};
    let user = match store.user_by_name(DEMO_USER).await? {
        // The same password as last time: keep the hash, so the tokens
        // issued before this restart stay valid (a new hash revokes them).
        Some(u) if verify_password(&u.password_hash, password) => {
            store.update_user(&u.id, None, Some(true)).await?
        }
        Some(u) => {
            let hash = hash_password(password)?;
            store.update_user(&u.id, Some(hash), Some(true)).await?
        }
        None => {
            store
                .create_user(DEMO_USER, &hash_password(password)?, false)
                .await?
        }
    };
    let project = match store.project_by_name(DEMO_PROJECT).await? {
        Some(p) => p,
        None => store.create_project(DEMO_PROJECT).await?,
    };
    store.add_member(&user.id, &project.id).await?;
    store
        .set_quota(
            &project.id,
            Quota {
                servers: Some(50),
                vcpus: Some(100),
                ram_mib: Some(200 * 1024),
            },
        )
        .await?;
    let existing: Vec<String> = store
        .list_flavors()
        .await?
        .into_iter()
        .map(|f| f.name)
        .collect();
    for (name, vcpus, ram, disk) in [
        ("m1.tiny", 1, 512, 1),
        // m1.tiny's disk with twice the memory: a tiny server can be
        // resized to it (a resize keeps the disk).
        ("m2.tiny", 1, 1024, 1),
        ("m1.small", 1, 2048, 20),
        ("m1.medium", 2, 4096, 40),
        ("m1.large", 4, 8192, 80),
    ] {
        if !existing.iter().any(|n| n == name) {
            store
                .create_flavor(&Flavor {
                    id: FlavorId(0),
                    name: name.into(),
                    vcpus,
                    ram_mib: ram,
                    disk_gib: disk,
                    disk_template: "diskless".into(),
                    is_public: true,
                    deleted: false,
                })
                .await?;
        }
    }
    let now = chrono::Utc::now();
    for (id, name, os) in [
        (
            "0e5a2c6e-8c1b-4b7e-9f3e-6f1d2a0d0001",
            "debian",
            "snf-image+default",
        ),
        (
            "0e5a2c6e-8c1b-4b7e-9f3e-6f1d2a0d0002",
            "cirros",
            "noop+default",
        ),
    ] {
        if store.image(id).await?.is_none() {
            store
                .put_image(&Image {
                    id: id.into(),
                    name: name.into(),
                    os_type: os.into(),
                    osparams: BTreeMap::from([("img_id".to_string(), name.to_string())]),
                    status: "ACTIVE".into(),
                    metadata: BTreeMap::from([("os".to_string(), name.to_string())]),
                    min_disk_gib: 0,
                    min_ram_mib: 0,
                    is_public: true,
                    owner: None,
                    created: now,
                    updated: now,
                })
                .await?;
        }
    }
    Ok(())
}

fn write_clouds_yaml(
    data_dir: &Path,
    settings: &Settings,
    password: &str,
) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("clouds.yaml");
    let text = format!(
        "# Written by `synnefo up`. Use: OS_CLIENT_CONFIG_FILE={path} openstack --os-cloud synnefo-local ...\n\
clouds:\n  synnefo-local:\n    auth:\n      auth_url: {url}/identity/v3\n      username: {DEMO_USER}\n      password: \"{password}\"\n      project_name: {DEMO_PROJECT}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: {region}\n    identity_api_version: 3\n    interface: public\n",
        path = path.display(),
        url = settings.api.public_url,
        region = settings.api.region,
    );
    write_private(&path, &text)?;
    Ok(path)
}

fn print_banner(
    args: &Args,
    settings: &Settings,
    clouds: &Path,
    password: &str,
    sims: &[(String, Arc<SimHandle>)],
    console_page: Option<&str>,
) {
    let url = &settings.api.public_url;
    println!();
    println!(
        "  Synnefo is up (embedded: SQLite, in-process bus, {} simulated Ganeti cluster(s))",
        sims.len()
    );
    println!();
    println!("  Compute API   {url}/compute/v2.1");
    println!("  Identity      {url}/identity/v3");
    println!("  Credentials   user {DEMO_USER}, password {password}, project {DEMO_PROJECT}");
    println!("  clouds.yaml   {}", clouds.display());
    for (name, sim) in sims {
        println!(
            "  Ganeti        {name}: RAPI {} (job queue {})",
            sim.url(),
            sim.queue_dir().display()
        );
    }
    if let Some(page) = console_page {
        println!("  Consoles      {page} (noVNC; `openstack console url show --novnc SERVER`)");
    }
    println!("  Data          {}", args.data_dir.display());
    println!();
    println!("  Next:");
    println!("    export OS_CLIENT_CONFIG_FILE={}", clouds.display());
    println!(
        "    openstack --os-cloud synnefo-local server create --flavor m1.small --image debian --wait demo1"
    );
    println!();
    println!("  Ctrl-C stops everything; the next `synnefo up` reuses the data dir.");
    println!();
}
