//! Allocation: the subnet's lock, the next MAC, taking and holding an
//! address, its history rows (who held which address when), releases, and
//! the paging every listing shares.

use super::*;

/// The pieces of a history row to open.
pub(super) struct Holder<'a> {
    pub(super) network_id: &'a str,
    pub(super) port_id: Option<&'a str>,
    pub(super) floating_ip_id: Option<&'a str>,
    pub(super) server_id: Option<&'a str>,
    pub(super) project_id: Option<&'a str>,
    pub(super) user_id: Option<&'a str>,
}

impl SeaStore {
    /// A transaction for allocations: the write lock on SQLite, `READ
    /// COMMITTED` on MySQL (PostgreSQL's default) so that reads after a
    /// row lock see the lock's previous holder's commit.
    pub(super) async fn begin_alloc(&self) -> Result<DatabaseTransaction, StoreError> {
        match self.db_backend() {
            DbBackend::MySql => self
                .connection()
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await
                .map_err(db_err),
            _ => self.begin_write().await,
        }
    }

    pub(super) async fn lock_subnet(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
    ) -> Result<subnet::Model, StoreError> {
        let mut q = subnet::Entity::find_by_id(id.to_string());
        if self.db_backend() != DbBackend::Sqlite {
            q = q.lock_exclusive();
        }
        q.one(txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("subnet {id}")))
    }

    pub(super) async fn next_mac(
        &self,
        txn: &DatabaseTransaction,
        prefix: &str,
    ) -> Result<String, StoreError> {
        let b = self.db_backend();
        let mut up = Sql::new(b);
        up.push("UPDATE counters SET value = value + 1 WHERE name = ")
            .bind("mac");
        txn.execute(up.build()).await.map_err(db_err)?;
        let mut q = Sql::new(b);
        q.push("SELECT value FROM counters WHERE name = ")
            .bind("mac");
        let row = txn
            .query_one(q.build())
            .await
            .map_err(db_err)?
            .ok_or_else(|| corrupt("counters: no mac row"))?;
        let n: i64 = row.try_get_by_index(0).map_err(db_err)?;
        mac_from_counter(prefix, u64::try_from(n - 1).unwrap_or(u64::MAX))
            .ok_or_else(|| StoreError::Exhausted("No more MAC addresses are available.".into()))
    }

    pub(super) async fn is_held(
        &self,
        txn: &DatabaseTransaction,
        subnet_id: &str,
        addr: IpAddr,
    ) -> Result<bool, StoreError> {
        Ok(
            ip_allocation::Entity::find_by_id((subnet_id.to_string(), addr.to_string()))
                .one(txn)
                .await
                .map_err(db_err)?
                .is_some(),
        )
    }

    /// Takes an address of the locked subnet `s`: `want`, or the lowest
    /// free one. Returns it and its pool index.
    pub(super) async fn take_address(
        &self,
        txn: &DatabaseTransaction,
        s: &subnet::Model,
        ranges: &PoolRanges,
        want: Option<IpAddr>,
    ) -> Result<(IpAddr, Option<i64>), StoreError> {
        let b = self.db_backend();
        if let Some(addr) = want {
            let cidr: crate::network::Cidr = s
                .cidr
                .parse()
                .map_err(|_| corrupt(format!("subnet {}: cidr", s.id)))?;
            let gateway = s.gateway.as_deref().map(|g| ip(g, "gateway")).transpose()?;
            if !cidr.contains(addr)
                || addr == cidr.addr
                || (s.ip_version == 4 && addr == cidr.last())
            {
                return Err(StoreError::Integrity(format!(
                    "IP address {addr} is not a valid IP for the specified subnet."
                )));
            }
            if Some(addr) == gateway {
                return Err(StoreError::Integrity(format!(
                    "IP address {addr} is the gateway of subnet {}.",
                    s.id
                )));
            }
            if self.is_held(txn, &s.id, addr).await? {
                return Err(StoreError::Integrity(format!(
                    "Unable to complete operation for network {}. The IP address {addr} is in use.",
                    s.network_id
                )));
            }
            let idx = ranges.index(addr).map(|i| i as i64);
            if let Some(i) = idx
                && i < s.pool_next
            {
                let mut d = Sql::new(b);
                d.push("DELETE FROM ip_free WHERE subnet_id = ")
                    .bind(s.id.as_str())
                    .push(" AND idx = ")
                    .bind(i);
                txn.execute(d.build()).await.map_err(db_err)?;
            }
            return Ok((addr, idx));
        }
        let mut next = s.pool_next;
        let mut advanced = false;
        let found = loop {
            let mut q = Sql::new(b);
            q.push("SELECT idx FROM ip_free WHERE subnet_id = ")
                .bind(s.id.as_str())
                .push(" ORDER BY idx LIMIT 1");
            let free: Option<i64> = match txn.query_one(q.build()).await.map_err(db_err)? {
                Some(row) => Some(row.try_get_by_index(0).map_err(db_err)?),
                None => None,
            };
            let i = match free {
                Some(i) => {
                    let mut d = Sql::new(b);
                    d.push("DELETE FROM ip_free WHERE subnet_id = ")
                        .bind(s.id.as_str())
                        .push(" AND idx = ")
                        .bind(i);
                    txn.execute(d.build()).await.map_err(db_err)?;
                    i
                }
                None if next < s.pool_size => {
                    next += 1;
                    advanced = true;
                    next - 1
                }
                None => {
                    return Err(StoreError::Exhausted(format!(
                        "No more IP addresses available on network {}.",
                        s.network_id
                    )));
                }
            };
            let addr = ranges
                .address(i as u64)
                .ok_or_else(|| corrupt(format!("subnet {}: index {i} outside its pools", s.id)))?;
            if !self.is_held(txn, &s.id, addr).await? {
                break (addr, i);
            }
        };
        if advanced {
            let mut u = Sql::new(b);
            u.push("UPDATE subnets SET pool_next = ")
                .bind(next)
                .push(" WHERE id = ")
                .bind(s.id.as_str());
            txn.execute(u.build()).await.map_err(db_err)?;
        }
        Ok((found.0, Some(found.1)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn hold(
        &self,
        txn: &DatabaseTransaction,
        subnet_id: &str,
        addr: IpAddr,
        idx: Option<i64>,
        who: &Holder<'_>,
    ) -> Result<(), StoreError> {
        let b = self.db_backend();
        let at = now();
        let am = ip_allocation::ActiveModel {
            subnet_id: Set(subnet_id.to_string()),
            address: Set(addr.to_string()),
            network_id: Set(who.network_id.to_string()),
            idx: Set(idx),
            port_id: Set(who.port_id.map(str::to_string)),
            floating_ip_id: Set(who.floating_ip_id.map(str::to_string)),
            created: Set(at),
        };
        exec_insert(txn, &insert_stmt(b, &am)?)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Integrity(_) => StoreError::Integrity(format!(
                    "Unable to complete operation for network {}. The IP address {addr} is in use.",
                    who.network_id
                )),
                other => other,
            })?;
        open_history(txn, addr, who).await
    }

    pub(super) async fn fixed_ips(
        &self,
        db: &impl ConnectionTrait,
        port_ids: &[String],
    ) -> Result<HashMap<String, Vec<FixedIp>>, StoreError> {
        let mut out: HashMap<String, Vec<FixedIp>> = HashMap::new();
        for chunk in port_ids.chunks(500) {
            let rows = ip_allocation::Entity::find()
                .filter(ip_allocation::Column::PortId.is_in(chunk.iter().cloned()))
                .order_by_asc(ip_allocation::Column::Created)
                .all(db)
                .await
                .map_err(db_err)?;
            for r in rows {
                if let Some(p) = r.port_id.clone() {
                    out.entry(p).or_default().push(FixedIp {
                        ip: ip(&r.address, "fixed ip")?,
                        subnet_id: r.subnet_id,
                    });
                }
            }
        }
        for v in out.values_mut() {
            // IPv4 first, then IPv6, stable otherwise.
            v.sort_by_key(|f| f.ip.is_ipv6());
        }
        Ok(out)
    }

    pub(super) async fn ports_with_ips(
        &self,
        db: &impl ConnectionTrait,
        rows: Vec<port::Model>,
    ) -> Result<Vec<Port>, StoreError> {
        let ids: Vec<String> = rows.iter().map(|p| p.id.clone()).collect();
        let mut ips = self.fixed_ips(db, &ids).await?;
        rows.into_iter()
            .map(|m| {
                let f = ips.remove(&m.id).unwrap_or_default();
                port_of(m, f)
            })
            .collect()
    }

    /// Ids of the networks `project` may see.
    pub(super) fn visible(project: &str) -> sea_orm::Condition {
        sea_orm::Condition::any()
            .add(network::Column::ProjectId.eq(project))
            .add(network::Column::Shared.eq(true))
            .add(network::Column::External.eq(true))
    }
}

pub(super) fn page<E: EntityTrait>(
    mut q: sea_orm::Select<E>,
    id_col: impl ColumnTrait,
    query: &NetQuery,
) -> sea_orm::Select<E> {
    if let Some(ids) = &query.ids {
        q = q.filter(id_col.is_in(ids.iter().cloned()));
    }
    if let Some(m) = &query.marker {
        q = q.filter(id_col.gt(m.clone()));
    }
    q = q.order_by_asc(id_col);
    if let Some(l) = query.limit {
        q = q.limit(l);
    }
    q
}

pub(super) async fn open_history(
    txn: &DatabaseTransaction,
    addr: IpAddr,
    who: &Holder<'_>,
) -> Result<(), StoreError> {
    let am = ip_history::ActiveModel {
        id: sea_orm::ActiveValue::NotSet,
        address: Set(addr.to_string()),
        network_id: Set(who.network_id.to_string()),
        port_id: Set(who.port_id.map(str::to_string)),
        floating_ip_id: Set(who.floating_ip_id.map(str::to_string)),
        server_id: Set(who.server_id.filter(|s| !s.is_empty()).map(str::to_string)),
        project_id: Set(who.project_id.map(str::to_string)),
        user_id: Set(who.user_id.map(str::to_string)),
        allocated: Set(now()),
        released: Set(None),
    };
    exec_insert(txn, &insert_stmt(txn.get_database_backend(), &am)?)
        .await
        .map_err(db_err)
}

/// Closes the open history rows of a port or a floating IP.
pub(super) async fn close_history(
    txn: &DatabaseTransaction,
    column: &str,
    id: &str,
) -> Result<(), StoreError> {
    let b = txn.get_database_backend();
    let mut u = Sql::new(b);
    u.push("UPDATE ip_history SET released = ")
        .bind(ts(b, now()))
        .push(" WHERE released IS NULL AND ")
        .push(column)
        .push(" = ")
        .bind(id);
    txn.execute(u.build()).await.map_err(db_err)?;
    Ok(())
}

/// Gives back the addresses held by a port or a floating IP.
pub(super) async fn release(
    txn: &DatabaseTransaction,
    column: ip_allocation::Column,
    id: &str,
) -> Result<(), StoreError> {
    let b = txn.get_database_backend();
    let held = ip_allocation::Entity::find()
        .filter(column.eq(id))
        .all(txn)
        .await
        .map_err(db_err)?;
    for a in held {
        let mut d = Sql::new(b);
        d.push("DELETE FROM ip_allocations WHERE subnet_id = ")
            .bind(a.subnet_id.as_str())
            .push(" AND address = ")
            .bind(a.address.as_str());
        txn.execute(d.build()).await.map_err(db_err)?;
        if let Some(i) = a.idx {
            // Below the mark it goes to the free list; above it (an
            // address asked for by name) the mark will reach it.
            let mut q = Sql::new(b);
            q.push("INSERT INTO ip_free (subnet_id, idx) SELECT id, ")
                .bind(i)
                .push(" FROM subnets WHERE id = ")
                .bind(a.subnet_id.as_str())
                .push(" AND pool_next > ")
                .bind(i);
            txn.execute(q.build()).await.map_err(db_err)?;
        }
    }
    Ok(())
}

/// Clears a floating IP's association and closes its history row.
pub(super) async fn disassociate(txn: &DatabaseTransaction, id: &str) -> Result<(), StoreError> {
    let b = txn.get_database_backend();
    let f = floating_ip::Entity::find_by_id(id.to_string())
        .one(txn)
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(format!("floating IP {id}")))?;
    let mut u = Sql::new(b);
    u.push("UPDATE floating_ips SET port_id = NULL, fixed_ip = NULL, mac = NULL, updated = ")
        .bind(ts(b, now()))
        .push(" WHERE id = ")
        .bind(id);
    txn.execute(u.build()).await.map_err(db_err)?;
    close_history(txn, "floating_ip_id", id).await?;
    let who = Holder {
        network_id: &f.network_id,
        port_id: None,
        floating_ip_id: Some(id),
        server_id: None,
        project_id: Some(&f.project_id),
        user_id: None,
    };
    open_history(txn, ip(&f.address, "floating ip")?, &who).await
}

/// Releases the ports of a server that is now deleted, in the transaction
/// that writes its deleted state: addresses back to their pools, floating
/// IPs disassociated (they stay the project's), history closed.
pub(crate) async fn release_server_ports(
    txn: &DatabaseTransaction,
    vm: VmId,
) -> Result<(), StoreError> {
    let ports = port::Entity::find()
        .filter(port::Column::DeviceId.eq(vm.to_string()))
        .filter(port::Column::DeviceOwner.eq(crate::network::DEVICE_OWNER_COMPUTE))
        .all(txn)
        .await
        .map_err(db_err)?;
    for p in ports {
        delete_port_in(txn, &p.id).await?;
    }
    Ok(())
}

/// Deletes a port inside `txn` (see [`NetworkStore::delete_port`]).
pub(super) async fn delete_port_in(txn: &DatabaseTransaction, id: &str) -> Result<(), StoreError> {
    release(txn, ip_allocation::Column::PortId, id).await?;
    close_history(txn, "port_id", id).await?;
    let assoc: Vec<String> = floating_ip::Entity::find()
        .filter(floating_ip::Column::PortId.eq(id))
        .all(txn)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|f| f.id)
        .collect();
    for f in &assoc {
        disassociate(txn, f).await?;
    }
    let res = port::Entity::delete_by_id(id.to_string())
        .exec(txn)
        .await
        .map_err(db_err)?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound(format!("port {id}")));
    }
    Ok(())
}

/// Ports whose NIC Ganeti reported (by MAC: unique across the cloud) are
/// `ACTIVE`; one statement per 500 MACs, in the transaction that stores
/// the report.
pub(crate) async fn ports_reported(
    db: &impl ConnectionTrait,
    macs: &[&str],
) -> Result<(), StoreError> {
    let b = db.get_database_backend();
    for chunk in macs.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        let mut u = Sql::new(b);
        u.push("UPDATE ports SET status = ")
            .bind(PortStatus::Active.as_str())
            .push(" WHERE status <> ")
            .bind(PortStatus::Active.as_str())
            .push(" AND mac IN ")
            .bind_list(chunk.iter().map(|m| m.to_ascii_lowercase()));
        db.execute(u.build()).await.map_err(db_err)?;
    }
    Ok(())
}
