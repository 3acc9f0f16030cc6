//! PostgreSQL going away under running processes loses nothing and kills
//! nothing, on the real services:
//!
//! * the full pipeline (Ganeti simulator -> `synnefo eventd` -> RabbitMQ ->
//!   two `synnefo dispatcher`s -> PostgreSQL) while jobs run: every session
//!   of the test database is killed (`pg_terminate_backend`) twice, then
//!   PostgreSQL is restarted (`pg_ctlcluster ... restart`, fast shutdown),
//!   then the sessions are killed once more. Every VM ends in the state
//!   its jobs lead to, nothing is dead-lettered, the dispatchers retried
//!   (the outage overlapped their work) and kept running, and they stop
//!   cleanly on SIGTERM;
//! * a `synnefo api` process across killed sessions and a PostgreSQL
//!   restart whose outage (11 s) outlasts the pool's acquire timeout (10 s):
//!   during the outage it answers 503 (never a 500, never a dropped
//!   connection), and once the server is back its requests succeed again
//!   within a few seconds, reads and writes; it stops cleanly on SIGTERM.
//!
//! Restarting PostgreSQL needs root and a local cluster (`pg_lsclusters`);
//! without them the tests print a loud SKIPPED line (a failure under
//! `CI=true`). Restarts are serialised with a lock file between test
//! processes (`pipeline_support::pg_restart_lock`), held for each test.

mod pipeline_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_support::{
    Disruption, PgCluster, Proc, SYNNEFO, TestDb, end_to_end_with, kill_connections,
    pg_restart_lock, unique_prefix, write_config,
};
use serde_json::{Value, json};
use synnefo_core::testing::service_unavailable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_survive_killed_sessions_and_a_postgres_restart() {
    end_to_end_with("pipeline_db_restart", 6, Disruption::DatabaseRestart).await;
}

const API_TEST: &str = "api_db_restart";
/// Time the API gets, once PostgreSQL accepts connections again, to answer
/// a request successfully.
const RECOVERY: Duration = Duration::from_secs(5);
/// How long PostgreSQL stays down in the API test: longer than the pool's
/// acquire timeout (10 s), so requests fail instead of only waiting.
const OUTAGE: Duration = Duration::from_secs(11);

/// `synnefo -c CONFIG ARGS --json` that must succeed: its JSON output.
fn synnefo_json(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(SYNNEFO)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("SYNNEFO_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run synnefo");
    assert!(
        out.status.success(),
        "synnefo {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One request's outcome: an HTTP status, or why there was none.
type Answer = Result<u16, String>;

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Answer {
    match http.get(url).header("X-Auth-Token", token).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

/// Keystone v3 password login: (HTTP status, token).
async fn login(http: &reqwest::Client, base: &str) -> (u16, Option<String>) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "restart-user", "domain": {"id": "default"}, "password": "restart-pw"}}},
        "scope": {"project": {"name": "restart-project", "domain": {"id": "default"}}}}});
    match http
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => (
            r.status().as_u16(),
            r.headers()
                .get("x-subject-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ),
        Err(e) => panic!("login: the API dropped the request: {e}"),
    }
}

fn histogram(answers: &[(Duration, Answer)]) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for (_, a) in answers {
        let k = match a {
            Ok(s) => s.to_string(),
            Err(e) => format!("no answer: {e}"),
        };
        *h.entry(k).or_default() += 1;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_survives_a_postgres_restart() {
    let t_lock = Instant::now();
    let _lock = pg_restart_lock();
    eprintln!(
        "{API_TEST}: waited {:?} for the restart lock",
        t_lock.elapsed()
    );
    let t_test = Instant::now();
    let Some((db, store)) = TestDb::create(API_TEST).await else {
        return;
    };
    drop(store);
    let cluster = match PgCluster::serving(&db.url) {
        Ok(c) => c,
        Err(e) => {
            return service_unavailable(
                API_TEST,
                "a PostgreSQL restart (pg_ctlcluster, as root)",
                &e,
            );
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url, &unique_prefix(), "");
    synnefo_json(
        &config,
        &[
            "admin",
            "users",
            "add",
            "restart-user",
            "--password",
            "restart-pw",
            "--project",
            "restart-project",
            "--json",
        ],
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    // Tokens validated against the database on every request.
    let mut api = Proc::start(
        "api",
        dir.path(),
        &config,
        &[
            "api",
            "--listen",
            &listen,
            "--no-console",
            "--token-cache-ms",
            "0",
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api.log_text().contains("compute API listening") {
        assert!(api.running(), "the API exited:\n{}", api.log_text());
        assert!(
            Instant::now() < deadline,
            "the API did not start:\n{}",
            api.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, token) = login(&http, &base).await;
    let token = token.unwrap_or_else(|| panic!("login: HTTP {status}"));
    let servers = format!("{base}/v2.1/servers");
    assert_eq!(get(&http, &servers, &token).await, Ok(200));
    eprintln!("{API_TEST}: API up, logged in: {:?}", t_test.elapsed());

    // A client polling the API throughout: server listings (token check
    // and listing, both in the database) and the health check.
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let (http, token, stop) = (http.clone(), token.clone(), stop.clone());
        let urls = [servers.clone(), format!("{base}/healthz")];
        tokio::spawn(async move {
            let mut answers: Vec<(Duration, Answer)> = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut i = 0usize;
            while !stop.is_cancelled() {
                let t = Instant::now();
                let a = get(&http, &urls[i % 2], &token).await;
                slowest = slowest.max(t.elapsed());
                answers.push((started.elapsed(), a));
                i += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            (answers, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = kill_connections(db.admin_url(), db.name())
        .await
        .expect("pg_terminate_backend");
    eprintln!("{API_TEST}: killed {n} sessions at {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop_at = started.elapsed();
    let c = cluster.clone();
    let down = tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .expect("PostgreSQL stop");
    eprintln!(
        "{API_TEST}: PostgreSQL {}/{} stopped at {stop_at:?} (done at {:?}); down for {OUTAGE:?}",
        cluster.version,
        cluster.name,
        started.elapsed()
    );
    tokio::time::sleep(OUTAGE).await;
    tokio::task::spawn_blocking(move || down.start())
        .await
        .unwrap()
        .expect("PostgreSQL start");
    let back_at = started.elapsed();
    eprintln!("{API_TEST}: PostgreSQL back at {back_at:?}");
    // Keep polling until well past the recovery window.
    tokio::time::sleep(RECOVERY + Duration::from_secs(1)).await;
    stop.cancel();
    let (answers, slowest) = poller.await.unwrap();
    eprintln!(
        "{API_TEST}: {} requests while polling: {:?}; slowest answer {slowest:?} \
         (a request during the outage waits for a connection, up to the pool's acquire timeout)",
        answers.len(),
        histogram(&answers)
    );

    assert!(api.running(), "the API died:\n{}", api.log_text());
    let bad: Vec<&(Duration, Answer)> = answers
        .iter()
        .filter(|(_, a)| !matches!(a, Ok(200 | 503)))
        .collect();
    assert!(
        bad.is_empty(),
        "answers other than 200 and 503 (a 500, a 401 or a dropped connection): {bad:?}\n{}",
        api.log_text()
    );
    let during: Vec<&(Duration, Answer)> = answers
        .iter()
        .filter(|(t, _)| *t > stop_at && *t < back_at)
        .collect();
    assert!(
        during.iter().any(|(_, a)| *a == Ok(503)),
        "no 503 while PostgreSQL was down for {OUTAGE:?}: {during:?}"
    );
    let after: Vec<&(Duration, Answer)> = answers.iter().filter(|(t, _)| *t > back_at).collect();
    let first_ok = after
        .iter()
        .find(|(_, a)| *a == Ok(200))
        .map(|(t, _)| *t - back_at);
    eprintln!(
        "{API_TEST}: first success {first_ok:?} after PostgreSQL was back; 503s after it was back: {}",
        after.iter().filter(|(_, a)| *a == Ok(503)).count()
    );
    assert!(
        first_ok.is_some_and(|d| d <= RECOVERY),
        "no success within {RECOVERY:?} of PostgreSQL being back: {after:?}"
    );
    // Once recovered, it stays recovered: the last second is all 200s.
    let tail: Vec<&(Duration, Answer)> = answers
        .iter()
        .filter(|(t, _)| *t > back_at + RECOVERY)
        .collect();
    assert!(
        !tail.is_empty() && tail.iter().all(|(_, a)| *a == Ok(200)),
        "not all requests succeed {RECOVERY:?} after the restart: {tail:?}"
    );
    // Writes too: a new token is stored.
    let (status, new_token) = login(&http, &base).await;
    assert_eq!(status, 201, "login after the restart");
    assert_eq!(
        get(&http, &servers, new_token.as_deref().unwrap_or_default()).await,
        Ok(200)
    );

    let st = api.terminate(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "the API did not stop cleanly ({st:?}):\n{}",
        api.log_text()
    );
    drop(db);
    eprintln!("{API_TEST}: passed in {:?}", t_test.elapsed());
}
