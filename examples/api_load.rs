//! Load harness: `GET /v2.1/servers/detail` with 200 servers, against a bare
//! axum route serving the same bytes, in the same run, on loopback.
//!
//! The API side is the real router over a SQLite store (token validation,
//! the VM query, NICs, flavors, rendering); the bare side is the fastest
//! the HTTP stack can hand out those bytes. The figure that matters is the
//! ratio of the two (goal: the API reaches at least 40% of the bare
//! route's req/s). Bounded: a fixed number of rounds of a few seconds each,
//! loopback only.
//!
//! ```text
//! cargo run --release -p synnefo-examples --example api_load -- [SECONDS] [CONCURRENCY]
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
    p50: Duration,
    p99: Duration,
    bytes: usize,
}

async fn load(url: &str, token: &str, seconds: f64, concurrency: usize) -> anyhow::Result<Figures> {
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
                anyhow::ensure!(r.status() == 200, "status {}", r.status());
                bytes = r.bytes().await?.len();
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
        p50: pct(0.50),
        p99: pct(0.99),
        bytes,
    })
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
    println!(
        "per request, in process: token validation {:.2} ms, list 200 VMs {:.2} ms, their NICs {:.2} ms, flavors {:.2} ms",
        validate.as_secs_f64() * 1e3,
        list.as_secs_f64() * 1e3,
        nics.as_secs_f64() * 1e3,
        flavors.as_secs_f64() * 1e3
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
    anyhow::ensure!(
        seconds > 0.0 && seconds <= 60.0,
        "SECONDS must be in (0, 60]"
    );
    anyhow::ensure!(
        (1..=256).contains(&concurrency),
        "CONCURRENCY must be in 1..=256"
    );

    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let store = Arc::new(SeaStore::connect(&url, 8).await?);
    store.migrate().await?;
    let token = seed(&store).await?;

    breakdown(&store, &token).await?;

    let api = router(ApiState::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(NoGaneti),
        ApiConfig::default(),
    ));
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(api_listener, api).await });
    // The same API with the listing micro-cache (1 s) and the token cache (5 s) on.
    let cached_config = ApiConfig {
        list_cache_ttl: Some(Duration::from_secs(1)),
        token_cache_ttl: Some(Duration::from_secs(5)),
        ..ApiConfig::default()
    };
    let cached = router(ApiState::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(NoGaneti),
        cached_config,
    ));
    let cached_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cached_addr = cached_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(cached_listener, cached).await });
    let cached_url = format!("http://{cached_addr}/v2.1/servers/detail");

    // The same bytes, served by a bare route.
    let api_url = format!("http://{api_addr}/v2.1/servers/detail");
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
    let bare = Router::new().route(
        "/bare",
        get(move || {
            let b = bare_body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], b) }
        }),
    );
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = bare_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(bare_listener, bare).await });
    let bare_url = format!("http://{bare_addr}/bare");

    println!(
        "GET /v2.1/servers/detail, {SERVERS} servers, {} bytes, concurrency {concurrency}, {seconds} s x {ROUNDS} rounds each",
        body.len()
    );
    // Warm up both.
    load(&bare_url, &token, 0.5, concurrency).await?;
    load(&api_url, &token, 0.5, concurrency).await?;
    load(&cached_url, &token, 0.5, concurrency).await?;
    let (mut bare_rps, mut api_rps, mut cached_rps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare_p99, mut api_p99, mut cached_p99) = (Vec::new(), Vec::new(), Vec::new());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for round in 1..=ROUNDS {
        let b = load(&bare_url, &token, seconds, concurrency).await?;
        let a = load(&api_url, &token, seconds, concurrency).await?;
        let c = load(&cached_url, &token, seconds, concurrency).await?;
        anyhow::ensure!(
            a.bytes == b.bytes && c.bytes == b.bytes,
            "the API answered {} / {} bytes, the bare route {}",
            a.bytes,
            c.bytes,
            b.bytes
        );
        println!(
            "round {round}: bare {:>7.0} req/s p99 {:>7.2} ms | api {:>7.0} req/s p50 {:>7.2} ms p99 {:>7.2} ms | api+cache {:>7.0} req/s p99 {:>7.2} ms",
            b.rps,
            ms(b.p99),
            a.rps,
            ms(a.p50),
            ms(a.p99),
            c.rps,
            ms(c.p99)
        );
        bare_rps.push(b.rps);
        api_rps.push(a.rps);
        cached_rps.push(c.rps);
        bare_p99.push(b.p99);
        api_p99.push(a.p99);
        cached_p99.push(c.p99);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let p99 =
        |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e3;
    println!(
        "api/bare: {:.1}% of the throughput, p99 {:.2} ms vs {:.2} ms",
        mean(&api_rps) / mean(&bare_rps) * 100.0,
        p99(&api_p99),
        p99(&bare_p99)
    );
    println!(
        "api+cache/bare: {:.1}% of the throughput, p99 {:.2} ms vs {:.2} ms (goal >= 40%)",
        mean(&cached_rps) / mean(&bare_rps) * 100.0,
        p99(&cached_p99),
        p99(&bare_p99)
    );
    Ok(())
}
