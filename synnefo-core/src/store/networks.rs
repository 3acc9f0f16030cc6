//! [`NetworkStore`] over sea-orm: networks, subnets, ports, floating IPs
//! and the address pools behind them.
//!
//! Allocation (see [`crate::network`] for the index space): the subnet's
//! row is locked (`SELECT ... FOR UPDATE`; SQLite's write lock) and the
//! transaction runs at `READ COMMITTED` on MySQL as on PostgreSQL, so
//! every read after the lock sees what the previous holder of the lock
//! committed. The lowest released index (`ip_free`) is taken, else the
//! high-water mark advances; an index whose address is held already (a
//! port that asked for that very address) is skipped. The primary key of
//! `ip_allocations` is the backstop. The MAC counter row is bumped last,
//! so it is held only until the commit.

use std::collections::HashMap;
use std::net::IpAddr;

use async_trait::async_trait;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, IsolationLevel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::SeaStore;
use super::convert::{now, ts};
use super::entities::{
    floating_ip, ip_allocation, ip_history, network, network_backend, port, subnet,
};
use super::sql::{Sql, db_err, exec_insert, insert_stmt};
use crate::error::StoreError;
use crate::ids::{BackendId, VmId};
use crate::network::{
    AllocationPool, FixedIp, FloatingIp, IpHistoryEntry, Network, NetworkFlavor, NetworkStatus,
    NetworkUpdate, NewNetwork, NewPort, NewSubnet, PoolCheck, PoolKind, PoolLease, PoolRanges,
    PoolUsage, Port, PortStatus, PortUpdate, Subnet, SubnetUpdate, eui64, mac_from_counter,
};
use crate::ports::{NetQuery, NetworkStore};
use sea_orm::ActiveValue::Set;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn network_of(m: network::Model) -> Result<Network, StoreError> {
    Ok(Network {
        flavor: NetworkFlavor::parse(&m.flavor)
            .ok_or_else(|| corrupt(format!("network {}: flavor {:?}", m.id, m.flavor)))?,
        status: NetworkStatus::parse(&m.status)
            .ok_or_else(|| corrupt(format!("network {}: status {:?}", m.id, m.status)))?,
        id: m.id,
        name: m.name,
        project_id: m.project_id,
        shared: m.shared,
        external: m.external,
        mode: m.mode,
        link: m.link,
        mac_prefix: m.mac_prefix,
        admin_state_up: m.admin_state_up,
        created: m.created,
        updated: m.updated,
    })
}

fn ip(s: &str, what: &str) -> Result<IpAddr, StoreError> {
    s.parse()
        .map_err(|_| corrupt(format!("{what}: address {s:?}")))
}

fn subnet_of(m: subnet::Model) -> Result<Subnet, StoreError> {
    let pools: Vec<(String, String)> = serde_json::from_str(&m.pools)
        .map_err(|e| corrupt(format!("subnet {}: pools: {e}", m.id)))?;
    let dns: Vec<String> =
        serde_json::from_str(&m.dns).map_err(|e| corrupt(format!("subnet {}: dns: {e}", m.id)))?;
    Ok(Subnet {
        cidr: m
            .cidr
            .parse()
            .map_err(|_| corrupt(format!("subnet {}: cidr {:?}", m.id, m.cidr)))?,
        gateway: m.gateway.as_deref().map(|g| ip(g, "gateway")).transpose()?,
        allocation_pools: pools
            .iter()
            .map(|(s, e)| {
                Ok(AllocationPool {
                    start: ip(s, "pool")?,
                    end: ip(e, "pool")?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        dns_nameservers: dns.iter().map(|d| ip(d, "dns")).collect::<Result<_, _>>()?,
        id: m.id,
        network_id: m.network_id,
        project_id: m.project_id,
        name: m.name,
        enable_dhcp: m.enable_dhcp,
        created: m.created,
        updated: m.updated,
    })
}

fn port_of(m: port::Model, ips: Vec<FixedIp>) -> Result<Port, StoreError> {
    Ok(Port {
        status: PortStatus::parse(&m.status)
            .ok_or_else(|| corrupt(format!("port {}: status {:?}", m.id, m.status)))?,
        id: m.id,
        network_id: m.network_id,
        project_id: m.project_id,
        name: m.name,
        device_id: m.device_id,
        device_owner: m.device_owner,
        mac: m.mac,
        fixed_ips: ips,
        admin_state_up: m.admin_state_up,
        created: m.created,
        updated: m.updated,
    })
}

fn floating_of(m: floating_ip::Model) -> Result<FloatingIp, StoreError> {
    Ok(FloatingIp {
        address: ip(&m.address, "floating ip")?,
        fixed_ip: m
            .fixed_ip
            .as_deref()
            .map(|a| ip(a, "fixed ip"))
            .transpose()?,
        id: m.id,
        project_id: m.project_id,
        network_id: m.network_id,
        subnet_id: m.subnet_id,
        port_id: m.port_id,
        mac: m.mac,
        description: m.description,
        created: m.created,
        updated: m.updated,
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The pieces of a history row to open.
struct Holder<'a> {
    network_id: &'a str,
    port_id: Option<&'a str>,
    floating_ip_id: Option<&'a str>,
    server_id: Option<&'a str>,
    project_id: Option<&'a str>,
    user_id: Option<&'a str>,
}

impl SeaStore {
    /// A transaction for allocations: the write lock on SQLite, `READ
    /// COMMITTED` on MySQL (PostgreSQL's default) so that reads after a
    /// row lock see the lock's previous holder's commit.
    async fn begin_alloc(&self) -> Result<DatabaseTransaction, StoreError> {
        match self.db_backend() {
            DbBackend::MySql => self
                .connection()
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await
                .map_err(db_err),
            _ => self.begin_write().await,
        }
    }

    async fn lock_subnet(
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

    async fn next_mac(
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

    async fn is_held(
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
    async fn take_address(
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
    async fn hold(
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

    async fn fixed_ips(
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

    async fn ports_with_ips(
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
    fn visible(project: &str) -> sea_orm::Condition {
        sea_orm::Condition::any()
            .add(network::Column::ProjectId.eq(project))
            .add(network::Column::Shared.eq(true))
            .add(network::Column::External.eq(true))
    }
}

fn page<E: EntityTrait>(
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

#[async_trait]
impl NetworkStore for SeaStore {
    async fn create_network(
        &self,
        new: &NewNetwork,
        limit: Option<i64>,
    ) -> Result<Network, StoreError> {
        let b = self.db_backend();
        let txn = self.begin_alloc().await?;
        if let (Some(project), Some(limit)) = (&new.project_id, limit) {
            let mut lock = Sql::new(b);
            lock.push("UPDATE projects SET vm_generation = vm_generation WHERE id = ")
                .bind(project.as_str());
            txn.execute(lock.build()).await.map_err(db_err)?;
            let in_use = network::Entity::find()
                .filter(network::Column::ProjectId.eq(project.as_str()))
                .count(&txn)
                .await
                .map_err(db_err)?;
            let in_use = i64::try_from(in_use).unwrap_or(i64::MAX);
            if in_use + 1 > limit {
                return Err(StoreError::QuotaExceeded {
                    resource: "networks",
                    limit,
                    in_use,
                    requested: 1,
                });
            }
        }
        // Leases after the project's lock (one lock order: project, then
        // each kind's pool).
        let mut leased = Vec::with_capacity(new.pools.len());
        for pool in &new.pools {
            let (idx, value) = super::net_pools::pick(&txn, pool).await?;
            leased.push((pool.kind(), idx, value));
        }
        let leased_value = |kind: PoolKind| {
            leased
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map(|(_, _, v)| v.clone())
        };
        let at = now();
        let n = Network {
            id: new_id(),
            name: new.name.clone(),
            project_id: new.project_id.clone(),
            shared: new.shared,
            external: new.external,
            flavor: new.flavor,
            mode: new.mode.clone(),
            link: leased_value(PoolKind::Link).unwrap_or_else(|| new.link.clone()),
            mac_prefix: leased_value(PoolKind::MacPrefix),
            status: NetworkStatus::Active,
            admin_state_up: new.admin_state_up,
            created: at,
            updated: at,
        };
        let am = network::ActiveModel {
            id: Set(n.id.clone()),
            name: Set(n.name.clone()),
            project_id: Set(n.project_id.clone()),
            shared: Set(n.shared),
            external: Set(n.external),
            flavor: Set(n.flavor.as_str().into()),
            mode: Set(n.mode.clone()),
            link: Set(n.link.clone()),
            mac_prefix: Set(n.mac_prefix.clone()),
            status: Set(n.status.as_str().into()),
            admin_state_up: Set(n.admin_state_up),
            created: Set(at),
            updated: Set(at),
        };
        exec_insert(&txn, &insert_stmt(b, &am)?)
            .await
            .map_err(db_err)?;
        for (kind, idx, value) in &leased {
            super::net_pools::record(&txn, *kind, *idx, value, &n.id).await?;
        }
        txn.commit().await.map_err(db_err)?;
        Ok(n)
    }

    async fn network(&self, id: &str) -> Result<Option<Network>, StoreError> {
        network::Entity::find_by_id(id.to_string())
            .one(self.connection())
            .await
            .map_err(db_err)?
            .map(network_of)
            .transpose()
    }

    async fn list_networks(&self, query: &NetQuery) -> Result<Vec<Network>, StoreError> {
        let mut q = network::Entity::find();
        if let Some(p) = &query.project_id {
            q = q.filter(Self::visible(p));
        }
        if let Some(n) = &query.name {
            q = q.filter(network::Column::Name.eq(n.as_str()));
        }
        if let Some(e) = query.external {
            q = q.filter(network::Column::External.eq(e));
        }
        if let Some(s) = query.shared {
            q = q.filter(network::Column::Shared.eq(s));
        }
        page(q, network::Column::Id, query)
            .all(self.connection())
            .await
            .map_err(db_err)?
            .into_iter()
            .map(network_of)
            .collect()
    }

    async fn update_network(
        &self,
        id: &str,
        update: &NetworkUpdate,
    ) -> Result<Network, StoreError> {
        let b = self.db_backend();
        let mut u = Sql::new(b);
        u.push("UPDATE networks SET updated = ").bind(ts(b, now()));
        if let Some(n) = &update.name {
            u.push(", name = ").bind(n.as_str());
        }
        if let Some(a) = update.admin_state_up {
            u.push(", admin_state_up = ").bind(a);
        }
        if let Some(s) = update.shared {
            u.push(", shared = ").bind(s);
        }
        if let Some(e) = update.external {
            u.push(", external = ").bind(e);
        }
        u.push(" WHERE id = ").bind(id);
        self.connection().execute(u.build()).await.map_err(db_err)?;
        self.network(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("network {id}")))
    }

    async fn set_network_status(&self, id: &str, status: NetworkStatus) -> Result<(), StoreError> {
        let b = self.db_backend();
        let mut u = Sql::new(b);
        u.push("UPDATE networks SET status = ")
            .bind(status.as_str())
            .push(", updated = ")
            .bind(ts(b, now()))
            .push(" WHERE id = ")
            .bind(id);
        self.connection().execute(u.build()).await.map_err(db_err)?;
        Ok(())
    }

    async fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let ports = port::Entity::find()
            .filter(port::Column::NetworkId.eq(id))
            .count(&txn)
            .await
            .map_err(db_err)?;
        let fips = floating_ip::Entity::find()
            .filter(floating_ip::Column::NetworkId.eq(id))
            .count(&txn)
            .await
            .map_err(db_err)?;
        if ports + fips > 0 {
            return Err(StoreError::Integrity(format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
            )));
        }
        super::net_pools::release(&txn, id).await?;
        let res = network::Entity::delete_by_id(id.to_string())
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("network {id}")));
        }
        txn.commit().await.map_err(db_err)
    }

    async fn network_backends(&self, id: &str) -> Result<Vec<BackendId>, StoreError> {
        Ok(network_backend::Entity::find()
            .filter(network_backend::Column::NetworkId.eq(id))
            .order_by_asc(network_backend::Column::BackendId)
            .all(self.connection())
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| BackendId(r.backend_id))
            .collect())
    }

    async fn set_network_backend(
        &self,
        id: &str,
        backend: BackendId,
        present: bool,
    ) -> Result<(), StoreError> {
        let b = self.db_backend();
        if present {
            let mut q = Sql::new(b);
            q.push("INSERT INTO network_backends (network_id, backend_id, created) SELECT id, ")
                .bind(backend.0)
                .push(", ")
                .bind(ts(b, now()))
                .push(" FROM networks WHERE id = ")
                .bind(id)
                .push(" AND NOT EXISTS (SELECT 1 FROM network_backends WHERE network_id = ")
                .bind(id)
                .push(" AND backend_id = ")
                .bind(backend.0)
                .push(")");
            self.connection().execute(q.build()).await.map_err(db_err)?;
        } else {
            network_backend::Entity::delete_many()
                .filter(network_backend::Column::NetworkId.eq(id))
                .filter(network_backend::Column::BackendId.eq(backend.0))
                .exec(self.connection())
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn create_subnet(&self, new: &NewSubnet) -> Result<Subnet, StoreError> {
        let b = self.db_backend();
        let at = now();
        let size = PoolRanges::new(new.cidr, &new.allocation_pools).size();
        let pools: Vec<(String, String)> = new
            .allocation_pools
            .iter()
            .map(|p| (p.start.to_string(), p.end.to_string()))
            .collect();
        let dns: Vec<String> = new.dns_nameservers.iter().map(|d| d.to_string()).collect();
        let s = Subnet {
            id: new_id(),
            network_id: new.network_id.clone(),
            project_id: new.project_id.clone(),
            name: new.name.clone(),
            cidr: new.cidr,
            gateway: new.gateway,
            enable_dhcp: new.enable_dhcp,
            allocation_pools: new.allocation_pools.clone(),
            dns_nameservers: new.dns_nameservers.clone(),
            created: at,
            updated: at,
        };
        let am = subnet::ActiveModel {
            id: Set(s.id.clone()),
            network_id: Set(s.network_id.clone()),
            project_id: Set(s.project_id.clone()),
            name: Set(s.name.clone()),
            ip_version: Set(i32::from(s.cidr.version())),
            cidr: Set(s.cidr.to_string()),
            gateway: Set(s.gateway.map(|g| g.to_string())),
            enable_dhcp: Set(s.enable_dhcp),
            pools: Set(serde_json::to_string(&pools).map_err(corrupt)?),
            dns: Set(serde_json::to_string(&dns).map_err(corrupt)?),
            pool_size: Set(i64::try_from(size).unwrap_or(i64::MAX)),
            pool_next: Set(0),
            created: Set(at),
            updated: Set(at),
        };
        exec_insert(self.connection(), &insert_stmt(b, &am)?)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Integrity(m) if m.contains("already exists") => {
                    StoreError::Integrity(format!(
                        "Network {} already has an IPv{} subnet.",
                        new.network_id,
                        new.cidr.version()
                    ))
                }
                StoreError::Integrity(_) => {
                    StoreError::NotFound(format!("network {}", new.network_id))
                }
                other => other,
            })?;
        Ok(s)
    }

    async fn subnet(&self, id: &str) -> Result<Option<Subnet>, StoreError> {
        subnet::Entity::find_by_id(id.to_string())
            .one(self.connection())
            .await
            .map_err(db_err)?
            .map(subnet_of)
            .transpose()
    }

    async fn list_subnets(&self, query: &NetQuery) -> Result<Vec<Subnet>, StoreError> {
        let mut q = subnet::Entity::find();
        if let Some(p) = &query.project_id {
            let visible: Vec<String> = network::Entity::find()
                .filter(Self::visible(p))
                .all(self.connection())
                .await
                .map_err(db_err)?
                .into_iter()
                .map(|n| n.id)
                .collect();
            q = q.filter(subnet::Column::NetworkId.is_in(visible));
        }
        if let Some(n) = &query.name {
            q = q.filter(subnet::Column::Name.eq(n.as_str()));
        }
        if let Some(n) = &query.network_id {
            q = q.filter(subnet::Column::NetworkId.eq(n.as_str()));
        }
        if let Some(ns) = &query.network_ids {
            q = q.filter(subnet::Column::NetworkId.is_in(ns.iter().cloned()));
        }
        page(q, subnet::Column::Id, query)
            .all(self.connection())
            .await
            .map_err(db_err)?
            .into_iter()
            .map(subnet_of)
            .collect()
    }

    async fn update_subnet(&self, id: &str, update: &SubnetUpdate) -> Result<Subnet, StoreError> {
        let b = self.db_backend();
        let mut u = Sql::new(b);
        u.push("UPDATE subnets SET updated = ").bind(ts(b, now()));
        if let Some(n) = &update.name {
            u.push(", name = ").bind(n.as_str());
        }
        if let Some(d) = update.enable_dhcp {
            u.push(", enable_dhcp = ").bind(d);
        }
        if let Some(dns) = &update.dns_nameservers {
            let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
            u.push(", dns = ")
                .bind(serde_json::to_string(&dns).map_err(corrupt)?);
        }
        u.push(" WHERE id = ").bind(id);
        self.connection().execute(u.build()).await.map_err(db_err)?;
        self.subnet(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("subnet {id}")))
    }

    async fn delete_subnet(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let held = ip_allocation::Entity::find()
            .filter(ip_allocation::Column::SubnetId.eq(id))
            .count(&txn)
            .await
            .map_err(db_err)?;
        if held > 0 {
            return Err(StoreError::Integrity(format!(
                "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
            )));
        }
        let res = subnet::Entity::delete_by_id(id.to_string())
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("subnet {id}")));
        }
        txn.commit().await.map_err(db_err)
    }

    async fn create_port(&self, new: &NewPort) -> Result<Port, StoreError> {
        let b = self.db_backend();
        let txn = self.begin_alloc().await?;
        let id = new_id();
        // Lock the subnets first (in id order: one lock order), before any
        // other read of this transaction.
        let mut wanted: Vec<&crate::network::IpRequest> = new.ips.iter().collect();
        wanted.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));
        let mut locked: HashMap<String, (subnet::Model, PoolRanges)> = HashMap::new();
        for r in &wanted {
            if locked.contains_key(&r.subnet_id) {
                continue;
            }
            let s = self.lock_subnet(&txn, &r.subnet_id).await?;
            if s.network_id != new.network_id {
                return Err(StoreError::Integrity(format!(
                    "Subnet {} is not on network {}.",
                    s.id, new.network_id
                )));
            }
            let sub = subnet_of(s.clone())?;
            let ranges = PoolRanges::new(sub.cidr, &sub.allocation_pools);
            locked.insert(s.id.clone(), (s, ranges));
        }
        if let (Some(project), Some(limit)) = (&new.project_id, new.port_limit) {
            super::net_pools::check_port_bound(&txn, project, limit).await?;
        }
        let net = network::Entity::find_by_id(new.network_id.clone())
            .one(&txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("network {}", new.network_id)))?;
        let mac = self.next_mac(&txn, &new.mac_prefix).await?;
        let at = now();
        let status = if new.device_id.is_empty() {
            PortStatus::Down
        } else {
            PortStatus::Build
        };
        let am = port::ActiveModel {
            id: Set(id.clone()),
            network_id: Set(net.id.clone()),
            project_id: Set(new.project_id.clone()),
            name: Set(new.name.clone()),
            device_id: Set(new.device_id.clone()),
            device_owner: Set(new.device_owner.clone()),
            mac: Set(mac.clone()),
            status: Set(status.as_str().into()),
            admin_state_up: Set(new.admin_state_up),
            created: Set(at),
            updated: Set(at),
        };
        exec_insert(&txn, &insert_stmt(b, &am)?)
            .await
            .map_err(db_err)?;
        let who = Holder {
            network_id: &net.id,
            port_id: Some(&id),
            floating_ip_id: None,
            server_id: Some(&new.device_id),
            project_id: new.project_id.as_deref(),
            user_id: new.user_id.as_deref(),
        };
        let mut fixed = Vec::new();
        for r in &new.ips {
            let Some((s, ranges)) = locked.get_mut(&r.subnet_id) else {
                continue;
            };
            let (addr, idx) = if s.ip_version == 6 {
                let cidr: crate::network::Cidr = s
                    .cidr
                    .parse()
                    .map_err(|_| corrupt(format!("subnet {}: cidr", s.id)))?;
                let a = eui64(&cidr, &mac)
                    .ok_or_else(|| corrupt(format!("subnet {}: no EUI-64 for {mac}", s.id)))?;
                (a, None)
            } else {
                let got = self.take_address(&txn, s, ranges, r.ip).await?;
                if let Some(i) = got.1
                    && i >= s.pool_next
                    && r.ip.is_none()
                {
                    s.pool_next = i + 1;
                }
                got
            };
            self.hold(&txn, &s.id, addr, idx, &who).await?;
            fixed.push(FixedIp {
                subnet_id: s.id.clone(),
                ip: addr,
            });
        }
        txn.commit().await.map_err(db_err)?;
        fixed.sort_by_key(|f| f.ip.is_ipv6());
        Ok(Port {
            id,
            network_id: net.id,
            project_id: new.project_id.clone(),
            name: new.name.clone(),
            device_id: new.device_id.clone(),
            device_owner: new.device_owner.clone(),
            mac,
            fixed_ips: fixed,
            status,
            admin_state_up: new.admin_state_up,
            created: at,
            updated: at,
        })
    }

    async fn port(&self, id: &str) -> Result<Option<Port>, StoreError> {
        let Some(m) = port::Entity::find_by_id(id.to_string())
            .one(self.connection())
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        Ok(self.ports_with_ips(self.connection(), vec![m]).await?.pop())
    }

    async fn list_ports(&self, query: &NetQuery) -> Result<Vec<Port>, StoreError> {
        let mut q = port::Entity::find();
        if let Some(p) = &query.project_id {
            q = q.filter(port::Column::ProjectId.eq(p.as_str()));
        }
        if let Some(n) = &query.name {
            q = q.filter(port::Column::Name.eq(n.as_str()));
        }
        if let Some(n) = &query.network_id {
            q = q.filter(port::Column::NetworkId.eq(n.as_str()));
        }
        if let Some(d) = &query.device_id {
            q = q.filter(port::Column::DeviceId.eq(d.as_str()));
        }
        if let Some(m) = &query.mac {
            q = q.filter(port::Column::Mac.eq(m.to_ascii_lowercase()));
        }
        if let Some(a) = query.address {
            let holders: Vec<String> = ip_allocation::Entity::find()
                .filter(ip_allocation::Column::Address.eq(a.to_string()))
                .all(self.connection())
                .await
                .map_err(db_err)?
                .into_iter()
                .filter_map(|r| r.port_id)
                .collect();
            q = q.filter(port::Column::Id.is_in(holders));
        }
        let rows = page(q, port::Column::Id, query)
            .all(self.connection())
            .await
            .map_err(db_err)?;
        self.ports_with_ips(self.connection(), rows).await
    }

    async fn ports_of(&self, servers: &[VmId]) -> Result<HashMap<VmId, Vec<Port>>, StoreError> {
        let mut out: HashMap<VmId, Vec<Port>> = HashMap::new();
        for chunk in servers.chunks(500) {
            let rows = port::Entity::find()
                .filter(port::Column::DeviceId.is_in(chunk.iter().map(|v| v.to_string())))
                .filter(port::Column::DeviceOwner.eq(crate::network::DEVICE_OWNER_COMPUTE))
                .order_by_asc(port::Column::Created)
                .order_by_asc(port::Column::Id)
                .all(self.connection())
                .await
                .map_err(db_err)?;
            for p in self.ports_with_ips(self.connection(), rows).await? {
                if let Some(vm) = p.server() {
                    out.entry(vm).or_default().push(p);
                }
            }
        }
        Ok(out)
    }

    async fn update_port(&self, id: &str, update: &PortUpdate) -> Result<Port, StoreError> {
        let b = self.db_backend();
        let txn = self.begin_write().await?;
        let mut u = Sql::new(b);
        u.push("UPDATE ports SET updated = ").bind(ts(b, now()));
        if let Some(n) = &update.name {
            u.push(", name = ").bind(n.as_str());
        }
        if let Some(a) = update.admin_state_up {
            u.push(", admin_state_up = ").bind(a);
        }
        if let Some((device, owner)) = &update.device {
            u.push(", device_id = ")
                .bind(device.as_str())
                .push(", device_owner = ")
                .bind(owner.as_str());
        }
        if let Some(s) = update.status {
            u.push(", status = ").bind(s.as_str());
        }
        u.push(" WHERE id = ").bind(id);
        txn.execute(u.build()).await.map_err(db_err)?;
        let m = port::Entity::find_by_id(id.to_string())
            .one(&txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("port {id}")))?;
        if let Some((device, _)) = &update.device {
            // A new holder for the history: close the rows, open new ones.
            let held = ip_allocation::Entity::find()
                .filter(ip_allocation::Column::PortId.eq(id))
                .all(&txn)
                .await
                .map_err(db_err)?;
            close_history(&txn, "port_id", id).await?;
            for a in held {
                let who = Holder {
                    network_id: &m.network_id,
                    port_id: Some(id),
                    floating_ip_id: None,
                    server_id: Some(device),
                    project_id: m.project_id.as_deref(),
                    user_id: None,
                };
                open_history(&txn, ip(&a.address, "fixed ip")?, &who).await?;
            }
        }
        let p = self.ports_with_ips(&txn, vec![m]).await?.pop();
        txn.commit().await.map_err(db_err)?;
        p.ok_or_else(|| StoreError::NotFound(format!("port {id}")))
    }

    async fn delete_port(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.begin_alloc().await?;
        delete_port_in(&txn, id).await?;
        txn.commit().await.map_err(db_err)
    }

    async fn create_floating_ip(
        &self,
        project_id: &str,
        user_id: Option<String>,
        network_id: &str,
        address: Option<IpAddr>,
        description: &str,
        limit: Option<i64>,
    ) -> Result<FloatingIp, StoreError> {
        let b = self.db_backend();
        let txn = self.begin_alloc().await?;
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
        let mut s = self.lock_subnet(&txn, &sid).await?;
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
        let (addr, idx) = self.take_address(&txn, &s, &ranges, address).await?;
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
        self.hold(&txn, &sid, addr, idx, &who).await?;
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

    async fn floating_ip(&self, id: &str) -> Result<Option<FloatingIp>, StoreError> {
        floating_ip::Entity::find_by_id(id.to_string())
            .one(self.connection())
            .await
            .map_err(db_err)?
            .map(floating_of)
            .transpose()
    }

    async fn list_floating_ips(&self, query: &NetQuery) -> Result<Vec<FloatingIp>, StoreError> {
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
            .all(self.connection())
            .await
            .map_err(db_err)?
            .into_iter()
            .map(floating_of)
            .collect()
    }

    async fn associate_floating_ip(
        &self,
        id: &str,
        port: Option<(String, IpAddr)>,
        mac_prefix: &str,
    ) -> Result<FloatingIp, StoreError> {
        let b = self.db_backend();
        let txn = self.begin_write().await?;
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
                    let mac = self.next_mac(&txn, mac_prefix).await?;
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

    async fn delete_floating_ip(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.begin_alloc().await?;
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

    async fn ip_history(
        &self,
        address: IpAddr,
        limit: u64,
    ) -> Result<Vec<IpHistoryEntry>, StoreError> {
        ip_history::Entity::find()
            .filter(ip_history::Column::Address.eq(address.to_string()))
            .order_by_desc(ip_history::Column::Id)
            .limit(limit)
            .all(self.connection())
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

    async fn check_pool(&self, subnet_id: &str, fix: bool) -> Result<PoolCheck, StoreError> {
        let b = self.db_backend();
        let txn = self.begin_alloc().await?;
        let s = self.lock_subnet(&txn, subnet_id).await?;
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

    async fn pool_leases(&self, kind: PoolKind) -> Result<Vec<PoolLease>, StoreError> {
        super::net_pools::leases(self.connection(), kind).await
    }

    async fn pool_usage(&self, subnet_id: &str) -> Result<PoolUsage, StoreError> {
        let s = subnet::Entity::find_by_id(subnet_id.to_string())
            .one(self.connection())
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("subnet {subnet_id}")))?;
        let used = ip_allocation::Entity::find()
            .filter(ip_allocation::Column::SubnetId.eq(subnet_id))
            .filter(ip_allocation::Column::Idx.is_not_null())
            .count(self.connection())
            .await
            .map_err(db_err)?;
        Ok(PoolUsage {
            size: u64::try_from(s.pool_size).unwrap_or(0),
            used,
        })
    }
}

async fn open_history(
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
async fn close_history(
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
async fn release(
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
async fn disassociate(txn: &DatabaseTransaction, id: &str) -> Result<(), StoreError> {
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
async fn delete_port_in(txn: &DatabaseTransaction, id: &str) -> Result<(), StoreError> {
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
