//! Pool checks: an IPv4 subnet's bitmap of allocations against its
//! ports and floating IPs (fixed on request), and leases and usage for
//! operators.

use super::*;

pub(super) async fn check_pool(
    store: &SeaStore,
    subnet_id: &str,
    fix: bool,
) -> Result<PoolCheck, StoreError> {
    let b = store.db_backend();
    let txn = store.begin_alloc().await?;
    let s = store.lock_subnet(&txn, subnet_id).await?;
    let mut q = Sql::new(b);
    q.push("SELECT idx FROM ip_free WHERE subnet_id = ")
        .bind(subnet_id);
    let mut free = std::collections::BTreeSet::new();
    for row in txn.query_all(q.build()).await.map_err(db_err)? {
        free.insert(row.try_get_by_index::<i64>(0).map_err(db_err)?);
    }
    let held: std::collections::BTreeSet<i64> = ip_allocation::Entity::find()
        .filter(ip_allocation::Column::SubnetId.eq(subnet_id))
        .all(&txn)
        .await
        .map_err(db_err)?
        .into_iter()
        .filter_map(|a| a.idx)
        .collect();
    let mut check = PoolCheck {
        subnet_id: subnet_id.to_string(),
        ..PoolCheck::default()
    };
    for i in 0..s.pool_next {
        match (free.contains(&i), held.contains(&i)) {
            (true, true) => check.double.push(i as u64),
            (false, false) => check.leaked.push(i as u64),
            _ => {}
        }
    }
    if fix && !check.is_clean() {
        for i in &check.double {
            let mut d = Sql::new(b);
            d.push("DELETE FROM ip_free WHERE subnet_id = ")
                .bind(subnet_id)
                .push(" AND idx = ")
                .bind(*i as i64);
            txn.execute(d.build()).await.map_err(db_err)?;
        }
        for chunk in check.leaked.chunks(500) {
            let mut ins = Sql::new(b);
            ins.push("INSERT INTO ip_free (subnet_id, idx) VALUES ");
            for (k, i) in chunk.iter().enumerate() {
                if k > 0 {
                    ins.push(", ");
                }
                ins.push("(")
                    .bind(subnet_id)
                    .push(", ")
                    .bind(*i as i64)
                    .push(")");
            }
            txn.execute(ins.build()).await.map_err(db_err)?;
        }
        check.fixed = true;
    }
    txn.commit().await.map_err(db_err)?;
    Ok(check)
}

pub(super) async fn pool_leases(
    store: &SeaStore,
    kind: PoolKind,
) -> Result<Vec<PoolLease>, StoreError> {
    crate::store::net_pools::leases(store.connection(), kind).await
}

pub(super) async fn pool_usage(store: &SeaStore, subnet_id: &str) -> Result<PoolUsage, StoreError> {
    let s = subnet::Entity::find_by_id(subnet_id.to_string())
        .one(store.connection())
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(format!("subnet {subnet_id}")))?;
    let used = ip_allocation::Entity::find()
        .filter(ip_allocation::Column::SubnetId.eq(subnet_id))
        .filter(ip_allocation::Column::Idx.is_not_null())
        .count(store.connection())
        .await
        .map_err(db_err)?;
    Ok(PoolUsage {
        size: u64::try_from(s.pool_size).unwrap_or(0),
        used,
    })
}
