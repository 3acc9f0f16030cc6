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

mod alloc;
mod floating;
mod pools;
mod rows;

use alloc::*;
pub(crate) use alloc::{ports_reported, release_server_ports};
use rows::*;

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
        floating::create_floating_ip(
            self,
            project_id,
            user_id,
            network_id,
            address,
            description,
            limit,
        )
        .await
    }

    async fn floating_ip(&self, id: &str) -> Result<Option<FloatingIp>, StoreError> {
        floating::floating_ip(self, id).await
    }

    async fn list_floating_ips(&self, query: &NetQuery) -> Result<Vec<FloatingIp>, StoreError> {
        floating::list_floating_ips(self, query).await
    }

    async fn associate_floating_ip(
        &self,
        id: &str,
        port: Option<(String, IpAddr)>,
        mac_prefix: &str,
    ) -> Result<FloatingIp, StoreError> {
        floating::associate_floating_ip(self, id, port, mac_prefix).await
    }

    async fn delete_floating_ip(&self, id: &str) -> Result<(), StoreError> {
        floating::delete_floating_ip(self, id).await
    }

    async fn ip_history(
        &self,
        address: IpAddr,
        limit: u64,
    ) -> Result<Vec<IpHistoryEntry>, StoreError> {
        floating::ip_history(self, address, limit).await
    }

    async fn check_pool(&self, subnet_id: &str, fix: bool) -> Result<PoolCheck, StoreError> {
        pools::check_pool(self, subnet_id, fix).await
    }

    async fn pool_leases(&self, kind: PoolKind) -> Result<Vec<PoolLease>, StoreError> {
        pools::pool_leases(self, kind).await
    }

    async fn pool_usage(&self, subnet_id: &str) -> Result<PoolUsage, StoreError> {
        pools::pool_usage(self, subnet_id).await
    }
}
