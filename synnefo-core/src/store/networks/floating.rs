//! Floating IPs: allocated from a public network's pool under the subnet's
//! lock, associated with a port (the NIC's MAC bumped on a new one),
//! released with their history closed; and the history of an address.

use super::*;

pub(super) async fn create_floating_ip(
    store: &SeaStore,
    project_id: &str,
    user_id: Option<String>,
    network_id: &str,
    address: Option<IpAddr>,
    description: &str,
    limit: Option<i64>,
) -> Result<FloatingIp, StoreError> {
    let b = store.db_backend();
    let txn = store.begin_alloc().await?;
    // The external network's IPv4 subnet, locked first.
    let sid = {
        let mut q = Sql::new(b);
        q.push("SELECT id FROM subnets WHERE network_id = ")
            .bind(network_id)
            .push(" AND ip_version = 4");
        match txn.query_one(q.build()).await.map_err(db_err)? {
            Some(row) => row.try_get_by_index::<String>(0).map_err(db_err)?,
            None => {
                return Err(StoreError::Exhausted(format!(
                    "No more IP addresses available on network {network_id}: it has no IPv4 subnet."
                )));
            }
        }
    };
    let mut s = store.lock_subnet(&txn, &sid).await?;
    if let Some(limit) = limit {
        let mut lock = Sql::new(b);
        lock.push("UPDATE projects SET vm_generation = vm_generation WHERE id = ")
            .bind(project_id);
        txn.execute(lock.build()).await.map_err(db_err)?;
        let in_use = floating_ip::Entity::find()
            .filter(floating_ip::Column::ProjectId.eq(project_id))
            .count(&txn)
            .await
            .map_err(db_err)?;
        let in_use = i64::try_from(in_use).unwrap_or(i64::MAX);
        if in_use + 1 > limit {
            return Err(StoreError::QuotaExceeded {
                resource: "floating_ips",
                limit,
                in_use,
                requested: 1,
            });
        }
    }
    let sub = subnet_of(s.clone())?;
    let ranges = PoolRanges::new(sub.cidr, &sub.allocation_pools);
    let (addr, idx) = store.take_address(&txn, &s, &ranges, address).await?;
    if let Some(i) = idx {
        s.pool_next = s.pool_next.max(i + 1);
    }
    let id = new_id();
    let at = now();
    let am = floating_ip::ActiveModel {
        id: Set(id.clone()),
        project_id: Set(project_id.to_string()),
        network_id: Set(network_id.to_string()),
        subnet_id: Set(sid.clone()),
        address: Set(addr.to_string()),
        port_id: Set(None),
        fixed_ip: Set(None),
        mac: Set(None),
        description: Set(description.to_string()),
        created: Set(at),
        updated: Set(at),
    };
    exec_insert(&txn, &insert_stmt(b, &am)?)
        .await
        .map_err(db_err)?;
    let who = Holder {
        network_id,
        port_id: None,
        floating_ip_id: Some(&id),
        server_id: None,
        project_id: Some(project_id),
        user_id: user_id.as_deref(),
    };
    store.hold(&txn, &sid, addr, idx, &who).await?;
    txn.commit().await.map_err(db_err)?;
    Ok(FloatingIp {
        id,
        project_id: project_id.to_string(),
        network_id: network_id.to_string(),
        subnet_id: sid,
        address: addr,
        port_id: None,
        fixed_ip: None,
        mac: None,
        description: description.to_string(),
        created: at,
        updated: at,
    })
}

pub(super) async fn floating_ip(
    store: &SeaStore,
    id: &str,
) -> Result<Option<FloatingIp>, StoreError> {
    floating_ip::Entity::find_by_id(id.to_string())
        .one(store.connection())
        .await
        .map_err(db_err)?
        .map(floating_of)
        .transpose()
}

pub(super) async fn list_floating_ips(
    store: &SeaStore,
    query: &NetQuery,
) -> Result<Vec<FloatingIp>, StoreError> {
    let mut q = floating_ip::Entity::find();
    if let Some(p) = &query.project_id {
        q = q.filter(floating_ip::Column::ProjectId.eq(p.as_str()));
    }
    if let Some(n) = &query.network_id {
        q = q.filter(floating_ip::Column::NetworkId.eq(n.as_str()));
    }
    if let Some(a) = query.address {
        q = q.filter(floating_ip::Column::Address.eq(a.to_string()));
    }
    if let Some(p) = &query.port_id {
        q = q.filter(floating_ip::Column::PortId.eq(p.as_str()));
    }
    if let Some(ps) = &query.port_ids {
        q = q.filter(floating_ip::Column::PortId.is_in(ps.iter().cloned()));
    }
    page(q, floating_ip::Column::Id, query)
        .all(store.connection())
        .await
        .map_err(db_err)?
        .into_iter()
        .map(floating_of)
        .collect()
}

pub(super) async fn associate_floating_ip(
    store: &SeaStore,
    id: &str,
    port: Option<(String, IpAddr)>,
    mac_prefix: &str,
) -> Result<FloatingIp, StoreError> {
    let b = store.db_backend();
    let txn = store.begin_write().await?;
    let f = floating_ip::Entity::find_by_id(id.to_string())
        .one(&txn)
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(format!("floating IP {id}")))?;
    match port {
        None => {
            if f.port_id.is_some() {
                disassociate(&txn, id).await?;
            }
        }
        Some((port_id, fixed)) => {
            if let Some(p) = &f.port_id
                && p != &port_id
            {
                return Err(StoreError::Integrity(format!(
                    "Cannot associate floating IP {} ({id}) with port {port_id}: it is already associated with port {p}.",
                    f.address
                )));
            }
            if f.port_id.is_none() {
                let p = port::Entity::find_by_id(port_id.clone())
                    .one(&txn)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| StoreError::NotFound(format!("port {port_id}")))?;
                let mac = store.next_mac(&txn, mac_prefix).await?;
                let mut u = Sql::new(b);
                u.push("UPDATE floating_ips SET port_id = ")
                    .bind(port_id.as_str())
                    .push(", fixed_ip = ")
                    .bind(fixed.to_string())
                    .push(", mac = ")
                    .bind(mac.as_str())
                    .push(", updated = ")
                    .bind(ts(b, now()))
                    .push(" WHERE id = ")
                    .bind(id);
                txn.execute(u.build()).await.map_err(db_err)?;
                let who = Holder {
                    network_id: &f.network_id,
                    port_id: Some(&port_id),
                    floating_ip_id: Some(id),
                    server_id: Some(&p.device_id),
                    project_id: Some(&f.project_id),
                    user_id: None,
                };
                close_history(&txn, "floating_ip_id", id).await?;
                open_history(&txn, ip(&f.address, "floating ip")?, &who).await?;
            }
        }
    }
    let out = floating_ip::Entity::find_by_id(id.to_string())
        .one(&txn)
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(format!("floating IP {id}")))?;
    txn.commit().await.map_err(db_err)?;
    floating_of(out)
}

pub(super) async fn delete_floating_ip(store: &SeaStore, id: &str) -> Result<(), StoreError> {
    let txn = store.begin_alloc().await?;
    release(&txn, ip_allocation::Column::FloatingIpId, id).await?;
    close_history(&txn, "floating_ip_id", id).await?;
    let res = floating_ip::Entity::delete_by_id(id.to_string())
        .exec(&txn)
        .await
        .map_err(db_err)?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound(format!("floating IP {id}")));
    }
    txn.commit().await.map_err(db_err)
}

pub(super) async fn ip_history(
    store: &SeaStore,
    address: IpAddr,
    limit: u64,
) -> Result<Vec<IpHistoryEntry>, StoreError> {
    ip_history::Entity::find()
        .filter(ip_history::Column::Address.eq(address.to_string()))
        .order_by_desc(ip_history::Column::Id)
        .limit(limit)
        .all(store.connection())
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|h| {
            Ok(IpHistoryEntry {
                address: ip(&h.address, "history")?,
                network_id: h.network_id,
                port_id: h.port_id,
                floating_ip_id: h.floating_ip_id,
                server_id: h.server_id,
                project_id: h.project_id,
                user_id: h.user_id,
                allocated: h.allocated,
                released: h.released,
            })
        })
        .collect()
}
