//! The sea-orm store: [`SeaStore`] implements every store port
//! ([`IdentityStore`](crate::ports::IdentityStore),
//! [`CatalogStore`](crate::ports::CatalogStore),
//! [`BackendStore`](crate::ports::BackendStore),
//! [`KeypairStore`](crate::ports::KeypairStore),
//! [`VmStore`](crate::ports::VmStore)) over SQLite, PostgreSQL and
//! MySQL/MariaDB, with the schema in [`migration`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), synnefo_core::StoreError> {
//! use synnefo_core::ports::VmStore;
//! use synnefo_core::store::SeaStore;
//!
//! let store = SeaStore::connect("sqlite:///var/lib/synnefo/synnefo.db", 8).await?;
//! store.migrate().await?;
//! println!("{} servers", store.count_vms().await?);
//! # Ok(()) }
//! ```
//!
//! # Why it is built this way
//!
//! * **Optimistic concurrency on VMs.** Several dispatchers consume the same
//!   queue, and the API starts actions on the VMs they update. Each writer
//!   reads a VM, runs the pure state machine, and writes back with
//!   `UPDATE vms SET ... , version = version + 1 WHERE id = ? AND version = ?`.
//!   Zero rows means someone else wrote first: [`StoreError::Conflict`], the
//!   caller reloads and re-applies. No lock is held while the state machine
//!   runs, nothing is ever overwritten blindly, and the same code works on
//!   all three databases (no `SERIALIZABLE` retry semantics to emulate).
//!   Every change to a VM row (rename, metadata, NICs) bumps `version` and
//!   `updated`; only `last_reconciled` (bookkeeping) does not.
//! * **Batches are one transaction and one multi-row `UPDATE`.** The
//!   dispatcher's hot path writes up to hundreds of state changes at once.
//!   [`VmStore::update_vm_states`](crate::ports::VmStore::update_vm_states)
//!   locks the rows (`SELECT ... ORDER BY id FOR [NO KEY] UPDATE`, in id
//!   order so concurrent batches cannot deadlock), decides per update
//!   whether its version still matches (in input order, so two updates of
//!   one VM in one batch behave as if applied one after the other), and
//!   writes all winners with one
//!   `WITH v(...) AS (VALUES ...) UPDATE vms ... FROM v` (PostgreSQL,
//!   SQLite) or `UPDATE vms JOIN (SELECT ... UNION ALL ...) v` (MySQL) per
//!   [`BATCH_ROWS`] rows, then replaces the NICs of all of them with one
//!   `DELETE` and one multi-row `INSERT`. Five round trips for 256 updates
//!   instead of 256.
//! * **Quota checks cannot be raced.** `create_vm` first locks the project's
//!   row by bumping its `vm_generation` (an `UPDATE` takes the row lock on
//!   PostgreSQL and MySQL and SQLite's single write lock), then sums the
//!   usage and inserts: concurrent creates of one project are serialized,
//!   creates of different projects are not.
//! * **Every VM write bumps its project's `vm_generation`** in the same
//!   transaction, after the VM rows are locked (VM rows, then project rows
//!   in id order: one lock order, no deadlocks). API processes compare that
//!   one number with the generation a cached listing was rendered at: a
//!   primary-key read instead of re-reading hundreds of VMs, and exact
//!   across any number of processes ([`VmStore::vm_generation`](crate::ports::VmStore::vm_generation)).
//!   The batch path bumps each project once per batch, as its last
//!   statement, so the project row is held only until the commit.
//! * **SQLite transactions that read before they write take the write lock
//!   first.** sea-orm opens `BEGIN DEFERRED` transactions; in WAL mode a
//!   reader that later upgrades to a writer after someone else committed
//!   fails with `SQLITE_BUSY` at once, whatever the busy timeout. Starting
//!   with a write makes SQLite wait (busy timeout) instead.
//! * **Timestamps are truncated to microseconds** before they are stored,
//!   the precision of PostgreSQL and MySQL `DATETIME(6)`, so a value reads
//!   back identically on every backend.
//! * **Lock and deadlock errors map to [`StoreError::Conflict`]** (retry),
//!   unique and foreign-key violations to [`StoreError::Integrity`], a row
//!   that does not decode to [`StoreError::Corrupt`]. Nothing here panics on
//!   data.

mod backends;
mod catalog;
mod convert;
pub mod entities;
mod generations;
mod identity;
mod keypairs;
pub mod migration;
mod net_pools;
mod networks;
mod sql;
mod vms;

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqlxSqliteConnector, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::error::StoreError;
pub use migration::Migrator;
use sql::db_err;
pub use vms::BATCH_ROWS;

/// How long SQLite waits for the write lock before giving up (`SQLITE_BUSY`,
/// reported as [`StoreError::Conflict`]).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The sea-orm implementation of [`crate::ports::Store`].
///
/// Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct SeaStore {
    db: DatabaseConnection,
    generations: std::sync::Arc<generations::GenerationReader>,
}

impl SeaStore {
    /// Connects to `url` (`sqlite:`, `postgres:`/`postgresql:`, `mysql:`)
    /// with a pool of at most `max_connections`.
    ///
    /// SQLite: the file is created if missing, WAL journal mode, a busy
    /// timeout of [`SQLITE_BUSY_TIMEOUT`], foreign keys on. An in-memory
    /// database (`sqlite::memory:`) lives in a single pooled connection that
    /// is never recycled (other connections would see other databases).
    ///
    /// Does not create the schema: call [`SeaStore::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<SeaStore, StoreError> {
        Self::connect_with_timeout(url, max_connections, Duration::from_secs(10)).await
    }

    /// [`SeaStore::connect`], waiting at most `timeout` to connect to a
    /// PostgreSQL or MySQL server and to get a pooled connection
    /// (`database.connect_timeout_secs`). SQLite ignores it: its pool
    /// waits up to a minute behind long writes, its writers
    /// [`SQLITE_BUSY_TIMEOUT`].
    pub async fn connect_with_timeout(
        url: &str,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<SeaStore, StoreError> {
        let max_connections = max_connections.max(1);
        let timeout = timeout.max(Duration::from_secs(1));
        if url.starts_with("sqlite:") {
            return Self::connect_sqlite(url, max_connections).await;
        }
        let mut opts = ConnectOptions::new(url.to_string());
        opts.max_connections(max_connections)
            .min_connections(0)
            .connect_timeout(timeout)
            // also bounds the retries of the first connect to a down server
            .acquire_timeout(timeout)
            .sqlx_logging(false);
        let db = Database::connect(opts)
            .await
            .map_err(|e| StoreError::Database(format!("cannot connect: {e}")))?;
        Ok(SeaStore::from_connection(db))
    }

    async fn connect_sqlite(url: &str, max_connections: u32) -> Result<SeaStore, StoreError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad SQLite URL: {e}")))?
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        if !in_memory {
            opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
        }
        let pool_opts = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(max_connections)
        };
        // A SQLite connection is a file handle that cannot go stale: skip
        // sqlx's ping before each acquire (a round trip to the connection's
        // worker thread, as costly as the query itself for point reads).
        let pool = pool_opts
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Database(format!("cannot open SQLite database: {e}")))?;
        Ok(SeaStore::from_connection(
            SqlxSqliteConnector::from_sqlx_sqlite_pool(pool),
        ))
    }

    /// Wraps an existing sea-orm connection (pool settings are the caller's;
    /// for SQLite enable foreign keys).
    pub fn from_connection(db: DatabaseConnection) -> SeaStore {
        SeaStore {
            db,
            generations: Default::default(),
        }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database this is.
    pub fn db_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Applies every pending migration (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// Names of the migrations not applied yet.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let pending = Migrator::get_pending_migrations(&self.db)
            .await
            .map_err(db_err)?;
        Ok(pending.iter().map(|m| m.name().to_string()).collect())
    }

    /// Closes the pool (for every clone of this store).
    pub async fn close(&self) -> Result<(), StoreError> {
        // the pool waits for every connection to come back
        self.generations.release().await;
        self.db.clone().close().await.map_err(db_err)
    }

    /// Begins a transaction that is going to write. On SQLite it takes the
    /// database write lock at once (see the module docs); elsewhere it is a
    /// plain `BEGIN`.
    async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        if self.db_backend() == DbBackend::Sqlite {
            txn.execute_unprepared("UPDATE vms SET version = version WHERE 1 = 0")
                .await
                .map_err(db_err)?;
        }
        Ok(txn)
    }
}
