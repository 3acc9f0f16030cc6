//! PostgreSQL going away under running processes loses nothing and kills
//! nothing. Each test restarts a private PostgreSQL cluster of its own
//! (`initdb`/`pg_ctl` on a free port), never the machine's shared one:
//!
//! * the full pipeline (Ganeti simulator -> `synnefo eventd` -> RabbitMQ ->
//!   two `synnefo dispatcher`s -> PostgreSQL) while jobs run: every session
//!   of the test database is killed (`pg_terminate_backend`) twice, then
//!   PostgreSQL is restarted (fast shutdown), then the sessions are killed
//!   once more. Every VM ends in the state its jobs lead to, nothing is
//!   dead-lettered, the dispatchers retried (the outage overlapped their
//!   work) and kept running, and they stop cleanly on SIGTERM;
//! * a `synnefo api` process across killed sessions and a PostgreSQL
//!   restart whose outage (11 s) outlasts the pool's acquire timeout (10 s):
//!   during the outage it answers 503 (never a 500, never a dropped
//!   connection), and once the server is back its requests succeed again
//!   within a few seconds, reads and writes; it stops cleanly on SIGTERM.
//!
//! Without `initdb`/`pg_ctl` (scripts/private-service-deps installs them)
//! the tests print a loud SKIPPED line (a failure under `CI=true`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use synnefo_test_support::api::ApiClient;
use synnefo_test_support::db::Server;
use synnefo_test_support::private::PrivatePostgres;
use synnefo_test_support::process::synnefo_json;
use synnefo_test_support::service_unavailable;
use synnefo_test_support::wait::free_port;

use crate::end_to_end::{Disruption, end_to_end_with};
use crate::support::*;

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

/// One request's outcome: an HTTP status, or why there was none.
type Answer = Result<u16, String>;

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
    let _heavy = one_at_a_time().await;
    let t_test = Instant::now();
    let pg = match tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("starting PostgreSQL")
    {
        Ok(pg) => pg,
        Err(e) => {
            return service_unavailable(API_TEST, "a private PostgreSQL (initdb, pg_ctl)", &e);
        }
    };
    let Some(db) = TestDb::on_server(API_TEST, Server::Postgres, &pg.admin_url()).await else {
        return;
    };
    db.store.close().await.ok();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url,
        &synnefo_test_support::amqp_url(),
        &unique_prefix(),
        "",
    );
    synnefo_json(
        SYNNEFO,
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
    )
    .expect("add the user");
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    // Tokens validated against the database on every request.
    let mut api = start(
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
    api.wait_log_line("compute API listening", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("the API did not start: {e}"));
    let mut client = ApiClient::new(&base, Duration::from_secs(20));
    let r = client
        .login("restart-user", "restart-pw", "restart-project")
        .await
        .expect("login: the API dropped the request");
    assert_eq!(r.status, 201, "login: {}", r.text());
    let servers = "/v2.1/servers";
    assert_eq!(client.status(servers).await, Ok(200));
    eprintln!("{API_TEST}: API up, logged in: {:?}", t_test.elapsed());

    // A client polling the API throughout: server listings (token check
    // and listing, both in the database) and the health check.
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let (client, stop) = (client.clone(), stop.clone());
        let paths = [servers, "/healthz"];
        tokio::spawn(async move {
            let mut answers: Vec<(Duration, Answer)> = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut i = 0usize;
            while !stop.is_cancelled() {
                let t = Instant::now();
                let a = client.status(paths[i % 2]).await;
                slowest = slowest.max(t.elapsed());
                answers.push((started.elapsed(), a));
                i += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            (answers, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = db.kill_connections().await.expect("pg_terminate_backend");
    eprintln!("{API_TEST}: killed {n} sessions at {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop_at = started.elapsed();
    tokio::task::block_in_place(|| pg.stop()).expect("PostgreSQL stop");
    eprintln!(
        "{API_TEST}: the private PostgreSQL stopped at {stop_at:?} (done at {:?}); down for {OUTAGE:?}",
        started.elapsed()
    );
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| pg.start_again()).expect("PostgreSQL start");
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
    let mut again = ApiClient::new(&base, Duration::from_secs(20));
    let r = again
        .login("restart-user", "restart-pw", "restart-project")
        .await
        .expect("login after the restart");
    assert_eq!(r.status, 201, "login after the restart: {}", r.text());
    assert_eq!(again.status(servers).await, Ok(200));

    let st = api.terminate(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "the API did not stop cleanly ({st:?}):\n{}",
        api.log_text()
    );
    drop(db);
    eprintln!("{API_TEST}: passed in {:?}", t_test.elapsed());
}
