//! Issue 15's address race over HTTP: two `synnefo api` processes on one
//! database, 200 port creates fired at once on a subnet whose pool holds
//! 150 addresses, half through each API.
//!
//! ```text
//! 200 concurrent POST /network/v2.0/ports --> synnefo api x2 --> PostgreSQL | MariaDB
//! ```
//!
//! The proof: every answer is a `201 Created` or a clean `409`
//! `IpAddressGenerationFailure` fault; exactly 150 ports are created, with
//! 150 distinct addresses, all inside the pool; exactly 50 faults; and
//! `GET /network/v2.0/ports` (asked of each API) lists those 150 ports and
//! the same 150 distinct addresses. A `409` of another type (`Conflict`:
//! the store gave up on lock contention or a deadlock) is not a result: the
//! client retries it, as a Neutron client retries a conflict, and the test
//! reports how many such retries there were.
//!
//! No Ganeti is configured: a port without `device_id` is a database
//! object only. Run on PostgreSQL (`SYNNEFO_TEST_DATABASE_URL`) and on
//! MariaDB (`SYNNEFO_TEST_MYSQL_URL`); a SKIPPED line when the server is
//! unreachable (a failure under `CI=true`). Isolation: a fresh database
//! per run, dropped at the end; the API processes are killed at the end,
//! also on failure (their logs are then printed and kept).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use synnefo_test_support::api::{ApiClient, error_chain, json_id};
use synnefo_test_support::process::Proc;
use synnefo_test_support::wait::free_port;
use synnefo_test_support::{amqp_url, process::synnefo_json};

use crate::support::{SYNNEFO, TestDb, one_at_a_time, start, unique_prefix, write_config};

/// Port creates fired at once.
const CREATES: usize = 200;
/// The subnet and its allocation pool (150 addresses).
const CIDR: &str = "10.66.0.0/24";
const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 66, 0, 10), Ipv4Addr::new(10, 66, 0, 159));
/// Addresses in [`POOL`].
const POOL_SIZE: usize = 150;
/// Retries of one create answered with a lock-contention `409 Conflict`.
const MAX_CONFLICT_RETRIES: usize = 50;
const N: &str = "/network/v2.0";

/// PostgreSQL: 150 distinct addresses and 50 clean faults, never a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_200_port_creates_on_150_addresses_postgres() {
    let _heavy = one_at_a_time().await;
    let test = "address_race_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    race(test, db).await;
}

/// MariaDB: 150 distinct addresses and 50 clean faults, never a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_200_port_creates_on_150_addresses_mariadb() {
    let _heavy = one_at_a_time().await;
    let test = "address_race_mariadb";
    let Some(db) = TestDb::mysql(test).await else {
        return;
    };
    race(test, db).await;
}

/// The whole run on `db`; panics (after killing the APIs and printing
/// their logs) on failure. The database is dropped with `db`.
async fn race(test: &str, db: TestDb) {
    let t0 = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("synnefo-address-race-")
        .tempdir()
        .expect("temp dir");
    eprintln!(
        "[{test}] database {}, files in {}",
        db.name().unwrap_or_default(),
        dir.path().display()
    );
    let mut apis: Vec<Proc> = Vec::new();
    let result = run(test, &db.url, dir.path(), &mut apis).await;
    if let Err(e) = result {
        let tails = log_tails(&apis, 60);
        drop(apis);
        eprintln!("{tails}");
        let kept = dir.keep();
        drop(db);
        panic!(
            "{test} failed: {e}\n(full process logs kept in {})",
            kept.display()
        );
    }
    drop(apis);
    drop(db);
    eprintln!("[{test}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}

/// The last `n` lines of every process's log.
fn log_tails(procs: &[Proc], n: usize) -> String {
    let mut out = String::new();
    for p in procs {
        let text = p.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        out.push_str(&format!("----- {} ({})\n", p.name, p.log.display()));
        for l in &lines[from..] {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Starts `synnefo api` on a free port; waits until it listens and answers
/// `/healthz`. Returns its base URL.
async fn start_api(
    procs: &mut Vec<Proc>,
    name: &str,
    dir: &Path,
    config: &Path,
) -> Result<String, String> {
    // A port taken between our probe and the API's bind: try another.
    for _ in 0..3 {
        let listen = format!("127.0.0.1:{}", free_port());
        procs.push(start(
            name,
            dir,
            config,
            &["api", "--listen", &listen, "--no-console"],
        ));
        let p = procs.last_mut().ok_or("no process")?;
        match p
            .wait_log_line("compute API listening", Duration::from_secs(30))
            .await
        {
            Ok(_) => {}
            Err(e) if e.contains("cannot listen") => {
                procs.pop();
                continue;
            }
            Err(e) => return Err(e),
        }
        let base = format!("http://{listen}");
        let api = ApiClient::new(&base, Duration::from_secs(10));
        return match api.status("/healthz").await? {
            200..=299 => Ok(base),
            s => Err(format!("{base}/healthz: HTTP {s}")),
        };
    }
    Err(format!("{name}: no free port in 3 attempts"))
}

/// One request that must answer `want`: its JSON body.
async fn expect(
    api: &ApiClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
    want: u16,
) -> Result<Value, String> {
    let r = api
        .request(method.clone(), path, body)
        .await
        .map_err(|e| format!("{method} {path}: {}", error_chain(&e)))?;
    if r.status != want {
        return Err(format!(
            "{method} {path}: HTTP {} (wanted {want}): {}",
            r.status,
            r.text()
        ));
    }
    r.json()
}

/// How one create ended.
enum Outcome {
    /// 201: the port's id and address.
    Created(String, Ipv4Addr),
    /// 409 `IpAddressGenerationFailure`.
    Exhausted,
}

/// One port create, retried on a lock-contention `409 Conflict`: the
/// outcome and the number of retries, or what was wrong with the answer.
async fn create_port(api: &ApiClient, network: &str) -> Result<(Outcome, usize), String> {
    let body = json!({"port": {"network_id": network}});
    let path = format!("{N}/ports");
    for retries in 0..=MAX_CONFLICT_RETRIES {
        let r = api
            .request(Method::POST, &path, Some(&body))
            .await
            .map_err(|e| format!("POST {}{path}: {}", api.base(), error_chain(&e)))?;
        let v = r.json()?;
        match (r.status, v["NeutronError"]["type"].as_str()) {
            (201, _) => {
                let port = &v["port"];
                let id = json_id(&port["id"]).ok_or_else(|| format!("201 without id: {v}"))?;
                let ips = port["fixed_ips"].as_array().map_or(0, Vec::len);
                if ips != 1 {
                    return Err(format!("201 with {ips} fixed IPs (wanted 1): {v}"));
                }
                let ip = port["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("201 without an IPv4 address: {v}"))?;
                return Ok((Outcome::Created(id, ip), retries));
            }
            (409, Some("IpAddressGenerationFailure")) => return Ok((Outcome::Exhausted, retries)),
            (409, Some("Conflict")) => continue,
            (s, _) => return Err(format!("POST {}{path}: HTTP {s}: {v}", api.base())),
        }
    }
    Err(format!(
        "POST {}{path}: still 409 Conflict after {MAX_CONFLICT_RETRIES} retries",
        api.base()
    ))
}

/// The ports `api` lists: `(id, address)` of each.
async fn listed_ports(api: &ApiClient) -> Result<Vec<(String, String)>, String> {
    let v = expect(api, Method::GET, &format!("{N}/ports"), None, 200).await?;
    v["ports"]
        .as_array()
        .ok_or_else(|| format!("no ports list: {v}"))?
        .iter()
        .map(|p| {
            let id = json_id(&p["id"]).ok_or_else(|| format!("port without id: {p}"))?;
            let ip = p["fixed_ips"][0]["ip_address"]
                .as_str()
                .ok_or_else(|| format!("port without address: {p}"))?;
            Ok((id, ip.to_string()))
        })
        .collect()
}

async fn run(test: &str, db_url: &str, dir: &Path, procs: &mut Vec<Proc>) -> Result<(), String> {
    // The API never talks to the broker; the settings file carries one
    // like every other test's.
    let config = write_config(dir, db_url, &amqp_url(), &unique_prefix(), "");
    let (user, project, password) = ("race-user", "race-project", "address-race-pw");
    synnefo_json(
        SYNNEFO,
        &config,
        &[
            "admin",
            "users",
            "add",
            user,
            "--password",
            password,
            "--project",
            project,
            "--json",
        ],
    )?;
    let mut bases = Vec::new();
    for name in ["api-a", "api-b"] {
        bases.push(start_api(procs, name, dir, &config).await?);
    }
    let mut clients: Vec<ApiClient> = bases
        .iter()
        .map(|b| ApiClient::new(b, Duration::from_secs(60)))
        .collect();
    let r = clients[0]
        .login(user, password, project)
        .await
        .map_err(|e| format!("login: {}", error_chain(&e)))?;
    let token = clients[0]
        .token()
        .map(str::to_string)
        .ok_or_else(|| format!("login: HTTP {}: {}", r.status, r.text()))?;
    clients[1].set_token(&token);

    // ---- a network and a subnet whose pool holds 150 addresses, on api-a.
    let api = &clients[0];
    let v = expect(
        api,
        Method::POST,
        &format!("{N}/networks"),
        Some(&json!({"network": {"name": "race"}})),
        201,
    )
    .await?;
    let network = json_id(&v["network"]["id"]).ok_or_else(|| format!("no network id: {v}"))?;
    let pool = json!([{"start": POOL.0.to_string(), "end": POOL.1.to_string()}]);
    let v = expect(
        api,
        Method::POST,
        &format!("{N}/subnets"),
        Some(&json!({"subnet": {
            "network_id": network, "cidr": CIDR, "ip_version": 4,
            "allocation_pools": pool}})),
        201,
    )
    .await?;
    if v["subnet"]["allocation_pools"] != pool {
        return Err(format!("subnet pool is not {pool}: {v}"));
    }

    // ---- 200 creates at once, alternating between the APIs.
    let t_race = Instant::now();
    let gate = Arc::new(tokio::sync::Barrier::new(CREATES));
    let mut tasks = Vec::new();
    for i in 0..CREATES {
        let api = clients[i % 2].clone();
        let (gate, network) = (gate.clone(), network.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            create_port(&api, &network).await
        }));
    }
    let mut created: Vec<(String, Ipv4Addr)> = Vec::new();
    let (mut exhausted, mut retries) = (0, 0);
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| format!("task: {e}"))? {
            Ok((Outcome::Created(id, ip), n)) => {
                created.push((id, ip));
                retries += n;
            }
            Ok((Outcome::Exhausted, n)) => {
                exhausted += 1;
                retries += n;
            }
            Err(e) => errors.push(e),
        }
    }
    eprintln!(
        "[{test}] {CREATES} creates in {:.2} s: {} created, {exhausted} IpAddressGenerationFailure, {retries} retries after 409 Conflict, {} bad answers",
        t_race.elapsed().as_secs_f64(),
        created.len(),
        errors.len()
    );
    if !errors.is_empty() {
        return Err(format!(
            "{} answers neither 201 nor IpAddressGenerationFailure, e.g.:\n{}",
            errors.len(),
            errors[..errors.len().min(5)].join("\n")
        ));
    }
    let addresses: BTreeSet<Ipv4Addr> = created.iter().map(|(_, ip)| *ip).collect();
    if addresses.len() != created.len() {
        let mut seen = BTreeSet::new();
        let dups: Vec<_> = created.iter().filter(|(_, ip)| !seen.insert(*ip)).collect();
        return Err(format!("addresses handed out twice: {dups:?}"));
    }
    if let Some(out) = addresses.iter().find(|ip| !(POOL.0..=POOL.1).contains(*ip)) {
        return Err(format!("{out} is outside the pool {POOL:?}"));
    }
    if (created.len(), exhausted) != (POOL_SIZE, CREATES - POOL_SIZE) {
        return Err(format!(
            "{} created and {exhausted} faults (wanted {POOL_SIZE} and {})",
            created.len(),
            CREATES - POOL_SIZE
        ));
    }

    // ---- each API lists the same 150 ports with the same addresses.
    let want: BTreeSet<(String, String)> = created
        .iter()
        .map(|(id, ip)| (id.clone(), ip.to_string()))
        .collect();
    for api in &clients {
        let listed = listed_ports(api).await?;
        let distinct: BTreeSet<&String> = listed.iter().map(|(_, ip)| ip).collect();
        if listed.len() != POOL_SIZE || distinct.len() != POOL_SIZE {
            return Err(format!(
                "{} lists {} ports with {} distinct addresses (wanted {POOL_SIZE})",
                api.base(),
                listed.len(),
                distinct.len()
            ));
        }
        let listed: BTreeSet<(String, String)> = listed.into_iter().collect();
        if listed != want {
            return Err(format!(
                "{} lists other ports than were created: {:?}",
                api.base(),
                listed
                    .symmetric_difference(&want)
                    .take(5)
                    .collect::<Vec<_>>()
            ));
        }
    }
    // Both APIs still run.
    for p in procs.iter_mut() {
        if !p.running() {
            return Err(format!("{} died:\n{}", p.name, p.log_text()));
        }
    }
    Ok(())
}
