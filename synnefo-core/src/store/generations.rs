//! [`VmStore::vm_generations`](crate::ports::VmStore::vm_generations) on a
//! connection of its own.
//!
//! API processes read a project's generation on every listing request
//! (one read per batch of requests; see synnefo-api's `listing` module),
//! so this read is the hottest query of a busy API. Through the pool each
//! query also pays an acquire and sqlx's ping when the connection is given
//! back: two round trips for one point read. A connection kept for these
//! reads pays one. It is only kept when the pool has room to spare (an
//! in-memory SQLite database lives in a one-connection pool), and a
//! connection that fails is dropped and replaced once before the error is
//! reported.

use std::collections::HashMap;

use sea_orm::DatabaseConnection;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, MySql, Postgres, Sqlite};

use super::sql::IN_CHUNK;
use crate::error::StoreError;

/// Pools smaller than this are not given a dedicated connection.
const MIN_POOL_FOR_DEDICATED: u32 = 4;

/// A lazily acquired connection for generation reads.
#[derive(Debug, Default)]
pub(crate) struct GenerationReader {
    conn: tokio::sync::Mutex<Option<Dedicated>>,
}

#[derive(Debug)]
enum Dedicated {
    Postgres(PoolConnection<Postgres>),
    MySql(PoolConnection<MySql>),
    Sqlite(PoolConnection<Sqlite>),
}

fn db_error(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl GenerationReader {
    /// Reads the generations of `ids` on the dedicated connection, or
    /// `None` when this pool gets none (the caller then uses the pool).
    pub(crate) async fn read(
        &self,
        db: &DatabaseConnection,
        ids: &[String],
    ) -> Option<Result<HashMap<String, i64>, StoreError>> {
        let mut conn = self.conn.lock().await;
        let mut last_error = None;
        for _ in 0..2 {
            if conn.is_none() {
                match acquire(db).await? {
                    Ok(c) => *conn = Some(c),
                    Err(e) => return Some(Err(e)),
                }
            }
            let c = conn.as_mut()?;
            match query(c, ids).await {
                Ok(map) => return Some(Ok(map)),
                Err(e) => {
                    // possibly a connection that died while idle: replace it
                    *conn = None;
                    last_error = Some(e);
                }
            }
        }
        last_error.map(|e| Err(db_error(e)))
    }
}

impl GenerationReader {
    /// Gives the dedicated connection back to the pool.
    pub(crate) async fn release(&self) {
        self.conn.lock().await.take();
    }
}

impl Drop for GenerationReader {
    fn drop(&mut self) {
        // Giving a connection back spawns a task; without a runtime (a
        // store dropped after its runtime) sqlx would panic: let it go.
        if tokio::runtime::Handle::try_current().is_err()
            && let Some(conn) = self.conn.get_mut().take()
        {
            std::mem::forget(conn);
        }
    }
}

/// A dedicated connection, if the pool can spare one: pinged once, so that
/// a pooled connection that died while idle is not taken.
async fn acquire(db: &DatabaseConnection) -> Option<Result<Dedicated, StoreError>> {
    Some(match db {
        DatabaseConnection::SqlxPostgresPoolConnection(_) => {
            live(db.get_postgres_connection_pool())
                .await?
                .map(Dedicated::Postgres)
        }
        DatabaseConnection::SqlxMySqlPoolConnection(_) => live(db.get_mysql_connection_pool())
            .await?
            .map(Dedicated::MySql),
        DatabaseConnection::SqlxSqlitePoolConnection(_) => live(db.get_sqlite_connection_pool())
            .await?
            .map(Dedicated::Sqlite),
        _ => return None,
    })
}

/// A connection of `pool` that answers a ping; `None` if the pool is too
/// small to give one away.
async fn live<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Option<Result<PoolConnection<DB>, StoreError>> {
    use sqlx::Connection as _;
    let max = pool.options().get_max_connections();
    if max < MIN_POOL_FOR_DEDICATED {
        return None;
    }
    let mut last = None;
    // every pooled connection may be dead (after a server restart)
    for _ in 0..=max {
        let mut conn = match pool.acquire().await {
            Ok(c) => c,
            Err(e) => return Some(Err(db_error(e))),
        };
        match conn.ping().await {
            Ok(()) => return Some(Ok(conn)),
            Err(e) => {
                conn.close_on_drop();
                last = Some(e);
            }
        }
    }
    last.map(|e| Err(db_error(e)))
}

fn in_list(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ", ?" });
    }
    s
}

async fn query(c: &mut Dedicated, ids: &[String]) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    match c {
        // one statement whatever the number of ids (prepared once)
        Dedicated::Postgres(conn) => {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT id, vm_generation FROM projects WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(&mut **conn)
                    .await?;
            out.extend(rows);
        }
        Dedicated::MySql(conn) => {
            for chunk in ids.chunks(IN_CHUNK) {
                let sql = format!(
                    "SELECT id, vm_generation FROM projects WHERE id IN ({})",
                    in_list(chunk.len())
                );
                // `utf8mb4_bin` columns come back as VARBINARY
                let mut q = sqlx::query_as::<_, (Vec<u8>, i64)>(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                for (id, generation) in q.fetch_all(&mut **conn).await? {
                    let id = String::from_utf8(id).map_err(|e| sqlx::Error::Decode(e.into()))?;
                    out.insert(id, generation);
                }
            }
        }
        Dedicated::Sqlite(conn) => {
            for chunk in ids.chunks(IN_CHUNK) {
                let sql = format!(
                    "SELECT id, vm_generation FROM projects WHERE id IN ({})",
                    in_list(chunk.len())
                );
                let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                out.extend(q.fetch_all(&mut **conn).await?);
            }
        }
    }
    Ok(out)
}
