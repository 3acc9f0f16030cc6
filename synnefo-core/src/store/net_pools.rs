//! Leases from Synnefo's per-network pools (links, MAC prefixes; see
//! [`crate::network::pools`]) and the per-project port bound, inside the
//! transactions of [`NetworkStore`](crate::ports::NetworkStore).
//!
//! A lease is taken in the transaction that inserts its network: the
//! kind's `counters` row (`pool:link`, `pool:mac_prefix`) is locked first
//! (`UPDATE`: a row lock on PostgreSQL and MySQL, SQLite's write lock),
//! then the values held are read and the lowest free one is recorded in
//! `network_leases`, whose key `(kind, value)` is the backstop. The
//! transaction runs at `READ COMMITTED` on MySQL
//! ([`SeaStore::begin_alloc`]), so the read after the lock sees the
//! previous holder's commit. It is released in the transaction that
//! deletes the network.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DatabaseTransaction};

use super::convert::{now, ts};
use super::sql::{Sql, db_err};
use crate::error::StoreError;
use crate::network::{PoolKind, PoolLease, ResourcePool};

/// The `counters` row whose lock serializes a kind's leases.
fn lock_row(kind: PoolKind) -> String {
    format!("pool:{}", kind.as_str())
}

/// Locks `pool`'s kind and picks the lowest value no network holds:
/// `(index, value)`, or `Exhausted`. The caller records it with
/// [`record`] once its network row exists, in the same transaction.
pub(super) async fn pick(
    txn: &DatabaseTransaction,
    pool: &ResourcePool,
) -> Result<(u32, String), StoreError> {
    let b = txn.get_database_backend();
    let kind = pool.kind();
    let mut lock = Sql::new(b);
    lock.push("UPDATE counters SET value = value + 1 WHERE name = ")
        .bind(lock_row(kind));
    let res = txn.execute(lock.build()).await.map_err(db_err)?;
    if res.rows_affected() == 0 {
        return Err(StoreError::Corrupt(format!(
            "counters: no {} row (run `synnefo db migrate`)",
            lock_row(kind)
        )));
    }
    let mut q = Sql::new(b);
    q.push("SELECT value FROM network_leases WHERE kind = ")
        .bind(kind.as_str());
    let mut taken = HashSet::new();
    for row in txn.query_all(q.build()).await.map_err(db_err)? {
        taken.insert(row.try_get_by_index::<String>(0).map_err(db_err)?);
    }
    pool.first_free(&taken).ok_or_else(|| exhausted(pool))
}

/// The refusal when every value of `pool` is held.
fn exhausted(pool: &ResourcePool) -> StoreError {
    StoreError::Exhausted(match pool.kind() {
        PoolKind::Link => format!(
            "Unable to create the network. No tenant network is available for allocation: every link of the pool {} is in use.",
            pool.describe()
        ),
        PoolKind::MacPrefix => format!(
            "No more MAC prefixes are available for networks: every prefix of the pool {} is in use.",
            pool.describe()
        ),
    })
}

/// Records the lease [`pick`] chose for `network_id`.
pub(super) async fn record(
    txn: &DatabaseTransaction,
    kind: PoolKind,
    idx: u32,
    value: &str,
    network_id: &str,
) -> Result<(), StoreError> {
    let b = txn.get_database_backend();
    let mut ins = Sql::new(b);
    ins.push("INSERT INTO network_leases (kind, value, idx, network_id, created) VALUES (")
        .bind(kind.as_str())
        .push(", ")
        .bind(value)
        .push(", ")
        .bind(i64::from(idx))
        .push(", ")
        .bind(network_id)
        .push(", ")
        .bind(ts(b, now()))
        .push(")");
    txn.execute(ins.build())
        .await
        .map_err(|e| match db_err(e) {
            // The kind's lock makes this unreachable; if another writer
            // got past it anyway, the key refused the second holder.
            StoreError::Integrity(_) => {
                StoreError::Conflict(format!("{} {value} was leased concurrently", kind.as_str()))
            }
            other => other,
        })?;
    Ok(())
}

/// Releases every lease of `network_id` (its delete's transaction).
pub(super) async fn release(txn: &DatabaseTransaction, network_id: &str) -> Result<(), StoreError> {
    let mut d = Sql::new(txn.get_database_backend());
    d.push("DELETE FROM network_leases WHERE network_id = ")
        .bind(network_id);
    txn.execute(d.build()).await.map_err(db_err)?;
    Ok(())
}

/// Every lease of `kind`, by value.
pub(super) async fn leases(
    db: &impl ConnectionTrait,
    kind: PoolKind,
) -> Result<Vec<PoolLease>, StoreError> {
    let mut q = Sql::new(db.get_database_backend());
    q.push("SELECT value, network_id FROM network_leases WHERE kind = ")
        .bind(kind.as_str())
        .push(" ORDER BY idx, value");
    db.query_all(q.build())
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|row| {
            Ok(PoolLease {
                kind,
                value: row.try_get_by_index(0).map_err(db_err)?,
                network_id: row.try_get_by_index(1).map_err(db_err)?,
            })
        })
        .collect()
}

/// Checks a project's port count against `limit` under the project row's
/// lock (taken after the subnets', the order every allocation keeps), so
/// concurrent creates never pass the bound together.
pub(super) async fn check_port_bound(
    txn: &DatabaseTransaction,
    project: &str,
    limit: i64,
) -> Result<(), StoreError> {
    let b = txn.get_database_backend();
    let mut lock = Sql::new(b);
    lock.push("UPDATE projects SET vm_generation = vm_generation WHERE id = ")
        .bind(project);
    txn.execute(lock.build()).await.map_err(db_err)?;
    let mut q = Sql::new(b);
    q.push("SELECT COUNT(*) FROM ports WHERE project_id = ")
        .bind(project);
    let in_use: i64 = match txn.query_one(q.build()).await.map_err(db_err)? {
        Some(row) => row.try_get_by_index::<i64>(0).map_err(db_err)?,
        None => 0,
    };
    if in_use + 1 > limit {
        return Err(StoreError::QuotaExceeded {
            resource: "ports",
            limit,
            in_use,
            requested: 1,
        });
    }
    Ok(())
}
