//! 50 parallel creates against a quota of 20 servers create exactly 20,
//! on SQLite and on PostgreSQL (the store reserves quota atomically).

mod api_support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use api_support::*;
use axum::http::StatusCode;
use synnefo_core::ports::{IdentityStore, VmStore};
use synnefo_core::store::SeaStore;

async fn fifty_against_twenty(store: Arc<SeaStore>) {
    let jobs = Arc::new(AtomicU64::new(1));
    let c = cloud_with(store, Arc::new(accepting_ganeti(jobs.clone())), jobs).await;
    set_quota(&c.store, &c.pa, 20).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let app = c.app.clone();
        let token = c.alice_token.clone();
        tasks.push(tokio::spawn(async move {
            post(&app, "/v2.1/servers", &token, create_body(&format!("c{i}"))).await
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::FORBIDDEN => {
                assert!(
                    r.body["forbidden"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("Quota exceeded"),
                    "{:?}",
                    r.body
                );
                refused += 1
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!((created, refused), (20, 30));
    assert_eq!(c.store.usage(&c.pa.id).await.unwrap().servers, 20);
    let r = get(&c.app, "/v2.1/servers?limit=100", &c.alice_token).await;
    assert_eq!(r.body["servers"].as_array().unwrap().len(), 20);
    assert_eq!(c.store.count_vms().await.unwrap(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_holds_under_concurrency_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/q.db?mode=rwc", dir.path().display());
    let store = SeaStore::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();
    fifty_against_twenty(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_holds_under_concurrency_postgres() {
    let url = synnefo_core::testing::pg_url();
    let store = match SeaStore::connect(&url, 16).await {
        Ok(s) => s,
        Err(e) => {
            return synnefo_core::testing::service_unavailable(
                "quota_holds_under_concurrency_postgres",
                "PostgreSQL",
                &e.to_string(),
            );
        }
    };
    // A private schema-less database per run: drop what earlier runs left.
    use sea_orm::ConnectionTrait;
    let db = store.connection();
    let _ = db
        .execute_unprepared("DROP SCHEMA IF EXISTS api_quota CASCADE")
        .await;
    db.execute_unprepared("CREATE SCHEMA api_quota")
        .await
        .unwrap();
    drop(store);
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3Dapi_quota");
    let store = SeaStore::connect(&scoped, 16).await.unwrap();
    store.migrate().await.unwrap();
    fifty_against_twenty(Arc::new(store)).await;
}
