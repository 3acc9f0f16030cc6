//! Load harness: `GET /v2.1/servers/detail` with 200 servers, against a bare
//! axum route serving the same bytes, in the same run, on loopback.
//!
//! The API side is the real router over a SQLite store; the bare side is
//! the fastest the HTTP stack can hand out those bytes. The figure that
//! matters is the ratio of the two (goal: the API as shipped reaches at
//! least 40% of the bare route's req/s). Three API targets: as shipped
//! (every request reads the project's VM generation from the database and
//! serves the page rendered at that generation, or renders it), the same
//! while a writer changes one of the servers 100 times a second (each
//! change forces a re-render), and with every cache off (the token, the VM
//! query, NICs, flavors and rendering on every request). Bounded: a fixed
//! number of rounds of a few seconds each, loopback only.
//!
//! ```text
//! cargo run --release -p synnefo-examples --example api_load -- [SECONDS] [CONCURRENCY] [sqlite|postgres]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;
use synnefo_api::{ApiConfig, ApiState, router};
use synnefo_core::ids::{FlavorId, JobId, VmId};
use synnefo_core::messages::Notification;
use synnefo_core::model::{Flavor, Image, NewVm, Nic, Quota};
use synnefo_core::ports::{
    BackendStore, CatalogStore, GanetiBackend, IdentityStore, Store, VmStore,
};
use synnefo_core::service::identity::{Identity, hash_password};
use synnefo_core::state::{JobStatus, OpCode, OpStatusEvent};
use synnefo_core::store::SeaStore;

const SERVERS: usize = 200;
const ROUNDS: usize = 2;

/// A Ganeti that is never called (the benchmark only reads).
struct NoGaneti;

#[async_trait::async_trait]
impl GanetiBackend for NoGaneti {
    async fn create_instance(
        &self,
        _: &synnefo_core::ports::InstanceSpec,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn startup(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn shutdown(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: Option<Duration>,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn reboot(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: synnefo_core::state::RebootKind,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn remove(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn list_instances(
        &self,
        _: synnefo_core::ids::BackendId,
    ) -> Result<Vec<synnefo_core::ports::InstanceInfo>, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn instance_info(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
    ) -> Result<Option<synnefo_core::ports::InstanceInfo>, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn console(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
    ) -> Result<synnefo_core::ports::ConsoleInfo, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn job_status(
        &self,
        _: synnefo_core::ids::BackendId,
        _: JobId,
    ) -> Result<synnefo_core::ports::JobInfo, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn wait_for_job(
        &self,
        _: synnefo_core::ids::BackendId,
        _: JobId,
        _: Duration,
    ) -> Result<synnefo_core::ports::JobInfo, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn cluster_load(
        &self,
        _: synnefo_core::ids::BackendId,
    ) -> Result<synnefo_core::ports::ClusterLoad, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn create_network(
        &self,
        _: &synnefo_core::ports::NetworkSpec,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn connect_network(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: &synnefo_core::ports::NetworkLink,
    ) -> Result<Vec<JobId>, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn disconnect_network(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
    ) -> Result<Vec<JobId>, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn remove_network(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn list_networks(
        &self,
        _: synnefo_core::ids::BackendId,
    ) -> Result<Vec<synnefo_core::ports::NetworkInfo>, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn node_groups(
        &self,
        _: synnefo_core::ids::BackendId,
    ) -> Result<Vec<String>, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn add_nic(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: &synnefo_core::ports::NicSpec,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn remove_nic(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: &str,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn resize(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: i32,
        _: i32,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn reinstall(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: &synnefo_core::ports::ReinstallSpec,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
    async fn set_boot(
        &self,
        _: synnefo_core::ids::BackendId,
        _: &str,
        _: synnefo_core::ports::BootFrom,
    ) -> Result<JobId, synnefo_core::BackendError> {
        Err(unused())
    }
}

fn unused() -> synnefo_core::BackendError {
    synnefo_core::BackendError::Unavailable("the benchmark does not call Ganeti".into())
}

/// Seeds one project with `SERVERS` ACTIVE servers; returns a token.
async fn seed(store: &Arc<SeaStore>) -> anyhow::Result<String> {
    let user = store
        .create_user("bench", &hash_password("bench-password")?, false)
        .await?;
    let project = store.create_project("bench").await?;
    store.add_member(&user.id, &project.id).await?;
    let flavor = store
        .create_flavor(&Flavor {
            id: FlavorId(1),
            name: "m1.small".into(),
            vcpus: 1,
            ram_mib: 2048,
            disk_gib: 20,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        })
        .await?;
    let now = chrono::Utc::now();
    let image = store
        .put_image(&Image {
            id: "0e5a2c6e-8c1b-4b7e-9f3e-6f1d2a0d0001".into(),
            name: "debian".into(),
            os_type: "snf-image+default".into(),
            osparams: BTreeMap::new(),
            status: "active".into(),
            metadata: BTreeMap::new(),
            min_disk_gib: 0,
            min_ram_mib: 0,
            is_public: true,
            owner: None,
            created: now,
            updated: now,
        })
        .await?;
    let backend = store.upsert_backend("cluster1", "127.0.0.1", 5080).await?;
    for i in 0..SERVERS {
        let vm = store
            .create_vm(
                &NewVm {
                    user_id: user.id.clone(),
                    project_id: project.id.clone(),
                    name: format!("server-{i:03}"),
                    flavor: flavor.clone(),
                    image_id: image.id.clone(),
                    backend_id: Some(backend.id),
                    metadata: BTreeMap::from([("role".to_string(), "web".to_string())]),
                    request_id: None,
                },
                Quota::default(),
            )
            .await?;
        let n = Notification::OpStatus {
            vm: vm.id,
            event: OpStatusEvent {
                job_id: JobId(i as u64 + 1),
                op_index: 0,
                opcode: OpCode::InstanceCreate,
                status: JobStatus::Success,
                log_msg: None,
                error: None,
                time_us: now.timestamp_micros(),
            },
            nics: Some(vec![Nic {
                index: 0,
                ip: Some(format!("10.0.{}.{}", i / 250, i % 250 + 1)),
                mac: Some(format!("aa:00:00:00:{:02x}:{:02x}", i / 256, i % 256)),
                network: Some("public".into()),
                link: Some("br0".into()),
                mode: Some("bridged".into()),
            }]),
            beparams: None,
        };
        synnefo_core::service::apply_notification(&**store, &n).await?;
        let _: VmId = vm.id;
    }
    let identity = Identity::new(store.clone() as Arc<dyn Store>, Duration::from_secs(3600));
    Ok(identity.issue(user, project).await?.secret)
}

/// req/s and latency percentiles of one target.
struct Figures {
    rps: f64,
    p99: Duration,
    bytes: usize,
}

/// Loads `url` for `seconds`; `changing`: the body may differ between
/// requests (a writer runs), so its size is not compared.
async fn load(
    url: &str,
    token: &str,
    seconds: f64,
    concurrency: usize,
    changing: bool,
) -> anyhow::Result<Figures> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bytes = 0;
            // Bounded by time and by count.
            while Instant::now() < deadline && lat.len() < 1_000_000 {
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .header("x-auth-token", &token)
                    .header("openstack-api-version", "compute 2.79")
                    .send()
                    .await?;
                if r.status() != 200 {
                    let status = r.status();
                    anyhow::bail!("status {status}: {}", r.text().await.unwrap_or_default());
                }
                let len = r.bytes().await?.len();
                if !changing {
                    bytes = len;
                }
                lat.push(t.elapsed());
            }
            anyhow::Ok((lat, bytes))
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (lat, b) = t.await??;
        all.extend(lat);
        bytes = b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Figures {
        rps: all.len() as f64 / elapsed,
        p99: pct(0.99),
        bytes,
    })
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// Changes one server's metadata 100 times a second for `seconds`, as
/// dispatchers and users do; returns the number of writes.
async fn churn(store: Arc<SeaStore>, seconds: f64) -> anyhow::Result<u64> {
    use synnefo_core::ports::VmQuery;
    let vm = store
        .list_vms(&VmQuery {
            limit: Some(1),
            ..VmQuery::default()
        })
        .await?
        .pop()
        .context("no server to change")?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let item = BTreeMap::from([("tick".to_string(), (n % 2).to_string())]);
        store.set_vm_metadata(vm.id, &item, false).await?;
        n += 1;
    }
    store.delete_vm_metadata(vm.id, "tick").await?;
    Ok(n)
}

/// Where the time of one API request goes, measured in process.
async fn breakdown(store: &Arc<SeaStore>, token: &str) -> anyhow::Result<()> {
    use synnefo_core::ports::VmQuery;
    let n = 50;
    let identity = Identity::new(store.clone() as Arc<dyn Store>, Duration::from_secs(3600));
    let t = Instant::now();
    let mut auth = None;
    for _ in 0..n {
        auth = Some(identity.validate(token).await?);
    }
    let validate = t.elapsed() / n;
    let project = auth.map(|a| a.project.id).unwrap_or_default();
    let q = VmQuery {
        project_id: Some(project),
        newest_first: true,
        limit: Some(1000),
        ..VmQuery::default()
    };
    let t = Instant::now();
    let mut vms = Vec::new();
    for _ in 0..n {
        vms = store.list_vms(&q).await?;
    }
    let list = t.elapsed() / n;
    let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
    let t = Instant::now();
    for _ in 0..n {
        store.nics_of(&ids).await?;
    }
    let nics = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        store.list_flavors().await?;
    }
    let flavors = t.elapsed() / n;
    let t = Instant::now();
    let projects = vec![q.project_id.clone().unwrap_or_default()];
    for _ in 0..n * 10 {
        store.vm_generations(&projects).await?;
    }
    let generation = t.elapsed() / (n * 10);
    println!(
        "per request, in process: token validation {:.2} ms, list 200 VMs {:.2} ms, their NICs {:.2} ms, flavors {:.2} ms; the generation check of a cached page {:.3} ms",
        validate.as_secs_f64() * 1e3,
        list.as_secs_f64() * 1e3,
        nics.as_secs_f64() * 1e3,
        flavors.as_secs_f64() * 1e3,
        generation.as_secs_f64() * 1e3
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("SECONDS")?
        .unwrap_or(4.0);
    let concurrency: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("CONCURRENCY")?
        .unwrap_or(8);
    let database = args.next().unwrap_or_else(|| "sqlite".into());
    anyhow::ensure!(
        seconds > 0.0 && seconds <= 60.0,
        "SECONDS must be in (0, 60]"
    );
    anyhow::ensure!(
        (1..=256).contains(&concurrency),
        "CONCURRENCY must be in 1..=256"
    );

    let dir = tempfile::tempdir()?;
    let (url, scratch) = match database.as_str() {
        "sqlite" => (
            format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()),
            None,
        ),
        "postgres" => {
            let scratch = ScratchDatabase::create().await?;
            (scratch.url.clone(), Some(scratch))
        }
        other => anyhow::bail!("DATABASE must be sqlite or postgres, not {other:?}"),
    };
    println!("database: {database}");
    let store = Arc::new(SeaStore::connect(&url, 8).await?);
    store.migrate().await?;
    let token = seed(&store).await?;

    breakdown(&store, &token).await?;

    // Three API servers over the same store: as shipped (listing cache
    // checked against the project's generation, token cache 5 s), the same
    // with a writer changing one server 100 times a second (every change
    // invalidates the page), and with both caches off.
    let shipped = ApiConfig {
        token_cache_ttl: Some(Duration::from_secs(5)),
        ..ApiConfig::default()
    };
    let uncached = ApiConfig {
        list_cache_bytes: 0,
        token_cache_ttl: None,
        ..ApiConfig::default()
    };
    let api_url = serve(router(ApiState::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(NoGaneti),
        shipped,
    )))
    .await?;
    let uncached_url = serve(router(ApiState::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(NoGaneti),
        uncached,
    )))
    .await?;
    let (api_url, uncached_url) = (
        format!("{api_url}/v2.1/servers/detail"),
        format!("{uncached_url}/v2.1/servers/detail"),
    );

    // The same bytes, served by a bare route.
    let body: Bytes = reqwest::Client::new()
        .get(&api_url)
        .header("x-auth-token", &token)
        .header("openstack-api-version", "compute 2.79")
        .send()
        .await?
        .bytes()
        .await?;
    let servers = serde_json::from_slice::<serde_json::Value>(&body)?["servers"]
        .as_array()
        .map_or(0, Vec::len);
    anyhow::ensure!(
        servers == SERVERS,
        "expected {SERVERS} servers, got {servers}"
    );
    let bare_body = body.clone();
    let bare_url = serve(Router::new().route(
        "/bare",
        get(move || {
            let b = bare_body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], b) }
        }),
    ))
    .await?;
    let bare_url = format!("{bare_url}/bare");

    println!(
        "GET /v2.1/servers/detail, {SERVERS} servers, {} bytes, concurrency {concurrency}, {seconds} s x {ROUNDS} rounds each",
        body.len()
    );
    for url in [&bare_url, &api_url, &uncached_url] {
        load(url, &token, 0.5, concurrency, false).await?;
    }
    let names = ["bare", "api", "api+writes", "api uncached"];
    let mut rps = vec![Vec::new(); names.len()];
    let mut p99 = vec![Vec::new(); names.len()];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for round in 1..=ROUNDS {
        let b = load(&bare_url, &token, seconds, concurrency, false).await?;
        let a = load(&api_url, &token, seconds, concurrency, false).await?;
        let writer = tokio::spawn(churn(store.clone(), seconds));
        let w = load(&api_url, &token, seconds, concurrency, true).await?;
        let writes = writer.await??;
        let u = load(&uncached_url, &token, seconds, concurrency, false).await?;
        anyhow::ensure!(
            a.bytes == b.bytes && u.bytes == b.bytes,
            "the API answered {} / {} bytes, the bare route {}",
            a.bytes,
            u.bytes,
            b.bytes
        );
        print!("round {round}:");
        for (i, f) in [&b, &a, &w, &u].into_iter().enumerate() {
            print!(" | {} {:.0} req/s p99 {:.2} ms", names[i], f.rps, ms(f.p99));
            rps[i].push(f.rps);
            p99[i].push(f.p99);
        }
        println!(" | {writes} writes");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mean_ms =
        |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e3;
    for i in 1..names.len() {
        println!(
            "{}/bare: {:.1}% of the throughput, p99 {:.2} ms vs {:.2} ms{}",
            names[i],
            mean(&rps[i]) / mean(&rps[0]) * 100.0,
            mean_ms(&p99[i]),
            mean_ms(&p99[0]),
            if i == 1 { " (goal >= 40%)" } else { "" }
        );
    }
    store.close().await?;
    if let Some(scratch) = scratch {
        scratch.drop_database().await?;
    }
    Ok(())
}

/// A throwaway PostgreSQL database on `SYNNEFO_TEST_DATABASE_URL` (default
/// the local server), dropped at the end of the run.
struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create() -> anyhow::Result<Self> {
        use sea_orm::ConnectionTrait;
        let admin_url = synnefo_core::testing::pg_url();
        let name = format!("synnefo_bench_{}", std::process::id());
        let admin = sea_orm::Database::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        admin.close().await?;
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), ""), |(b, q)| (b, q));
        let host_end = base
            .rfind('/')
            .filter(|&i| i > base.find("://").map_or(0, |j| j + 2));
        let url = format!(
            "{}/{name}{}{query}",
            host_end.map_or(base, |i| &base[..i]),
            if query.is_empty() { "" } else { "?" }
        );
        Ok(Self {
            admin_url,
            name,
            url,
        })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sea_orm::ConnectionTrait;
        let admin = sea_orm::Database::connect(&self.admin_url).await?;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        admin.close().await?;
        Ok(())
    }
}
