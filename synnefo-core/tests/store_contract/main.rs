//! The store contract suite: one set of checks, run against SQLite (in
//! memory and on disk), PostgreSQL and MariaDB/MySQL.
//!
//! Each area of the contract is a test of its own on each backend, on a
//! fresh database (`synnefo_test_support::db::TestDb`: a temporary file for
//! SQLite, a uniquely named database on the servers, dropped afterwards),
//! so the first failure hides no other and test binaries running in
//! parallel never see each other's rows. An unreachable server is reported
//! through `service_unavailable` (a failure under `CI=true`).
//!
//! Server URLs: `SYNNEFO_TEST_DATABASE_URL` (PostgreSQL) and
//! `SYNNEFO_TEST_MYSQL_URL`; the database in the URL is only used to create
//! and drop the per-test database.

#![cfg(feature = "sea-orm-store")]

mod build;
mod concurrency;
mod fixtures;
mod identity;
mod keypairs;
mod net_pools;
mod networks;
mod resize;
mod state;
mod vms;

use build::*;
use concurrency::*;
use fixtures::*;
use identity::*;
use keypairs::*;
use net_pools::*;
use networks::*;
use resize::*;
use sea_orm::ConnectionTrait;
use state::*;
use synnefo_core::StoreError;
use synnefo_core::ports::{VmQuery, VmStore};
use synnefo_core::store::SeaStore;
use synnefo_test_support::db::{TestDb, admin_connect};
use synnefo_test_support::pg_url;
use vms::*;

// ------------------------------------------------------------------ per backend

async fn sqlite_memory(_test: &str) -> Option<TestDb> {
    Some(TestDb::sqlite_memory().await)
}

async fn sqlite_file(_test: &str) -> Option<TestDb> {
    Some(TestDb::sqlite_file().await)
}

async fn postgres(test: &str) -> Option<TestDb> {
    TestDb::postgres(test).await
}

async fn mysql(test: &str) -> Option<TestDb> {
    TestDb::mysql(test).await
}

/// One test per area of the contract, each on a fresh database.
macro_rules! area_tests {
    ($open:ident; $($area:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $area() {
                let test = concat!(module_path!(), "::", stringify!($area));
                let Some(db) = crate::$open(test).await else {
                    return;
                };
                super::$area(&db.store).await;
            }
        )*
    };
}

macro_rules! backend_tests {
    ($module:ident, $open:ident) => {
        mod $module {
            area_tests!($open;
                migrations_are_idempotent,
                identity,
                tokens,
                quotas_and_usage,
                catalog,
                backends,
                vms_and_listing,
                metadata,
                nics,
                state_updates,
                reconciliation,
                vm_generations,
                placement,
                resize_from_backend,
                instance_action_history,
                batch_creates_and_access_ips,
                name_regex_listing,
                concurrent_state_updates,
                quota_race,
                hardening_races,
                keypairs,
                keypair_bound_race,
                server_attrs,
                networks,
                network_pools,
                resize_reservations,
                resize_quota_race,
                build_progress,
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batch_timing() {
                let test = concat!(module_path!(), "::batch_timing");
                let Some(db) = crate::$open(test).await else {
                    return;
                };
                super::batch_timing(&db.store, stringify!($module)).await;
            }
        }
    };
}

/// The address race through two connection pools on one database (two
/// API processes); not on in-memory SQLite, whose pools would be two
/// databases.
macro_rules! race_test {
    ($name:ident, $open:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let test = concat!(module_path!(), "::", stringify!($name));
            let Some(db) = crate::$open(test).await else {
                return;
            };
            let second = SeaStore::connect(&db.url, 8).await.unwrap();
            networks::address_race(&db.store, second).await;
        }
    };
}

race_test!(address_race_sqlite_file, sqlite_file);
race_test!(address_race_postgres, postgres);
race_test!(address_race_mysql, mysql);

/// The lease race (links, and the port bound) through two connection
/// pools on one database.
macro_rules! pool_race_test {
    ($name:ident, $open:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let test = concat!(module_path!(), "::", stringify!($name));
            let Some(db) = crate::$open(test).await else {
                return;
            };
            let second = SeaStore::connect(&db.url, 8).await.unwrap();
            net_pools::pool_race(&db.store, second).await;
        }
    };
}

pool_race_test!(pool_race_sqlite_file, sqlite_file);
pool_race_test!(pool_race_postgres, postgres);
pool_race_test!(pool_race_mysql, mysql);

backend_tests!(sqlite_memory_db, sqlite_memory);
backend_tests!(sqlite_file_db, sqlite_file);
backend_tests!(postgres_db, postgres);
backend_tests!(mysql_db, mysql);

#[tokio::test]
async fn sqlite_file_survives_reopen_and_is_wal() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let s = SeaStore::connect(&url, 2).await.unwrap();
    s.migrate().await.unwrap();
    let t = tenant(&s).await;
    let vm = create(&s, &t, "persisted").await;
    let mode = s
        .connection()
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    s.close().await.unwrap();
    let s = SeaStore::connect(&url, 2).await.unwrap();
    assert!(s.pending_migrations().await.unwrap().is_empty());
    assert_eq!(
        s.vm(vm.id).await.unwrap().map(|v| v.name),
        Some("persisted".to_string())
    );
}

/// A PostgreSQL restart as the pool sees it: every server connection of the
/// database is killed. The next generation read replaces its dead
/// connection and answers; other reads fail at most once per pooled
/// connection (sqlx no longer pings before each acquire) and then recover.
#[tokio::test]
async fn postgres_connections_killed_under_the_store_recover() {
    let test = "postgres_connections_killed_under_the_store_recover";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let s = &db.store;
    let t = tenant(s).await;
    create(s, &t, "before").await;
    let ids = vec![t.project.id.clone()];
    let g = s.vm_generations(&ids).await.unwrap()[&t.project.id];
    let name: String = s
        .connection()
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_database()",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let admin = admin_connect(&pg_url()).await.unwrap();
    let killed = admin
        .query_all(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        ))
        .await
        .unwrap()
        .len();
    let _ = admin.close().await;
    assert!(killed >= 2, "killed {killed} connections");
    assert_eq!(
        s.vm_generations(&ids)
            .await
            .expect("generation read after the kill")[&t.project.id],
        g
    );
    let mut failures = 0;
    loop {
        match s.list_vms(&VmQuery::default()).await {
            Ok(vms) => {
                assert_eq!(vms.len(), 1);
                break;
            }
            Err(StoreError::Database(e)) => {
                failures += 1;
                assert!(failures <= 8, "still failing after {failures} reads: {e}");
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    eprintln!("{test}: {killed} connections killed, {failures} failed reads before recovery");
    create(s, &t, "after").await;
    assert!(s.vm_generations(&ids).await.unwrap()[&t.project.id] > g);
}
