//! [`VmStore`] over sea-orm: VMs, their metadata and NICs, optimistic
//! concurrency and the batched state writes of the dispatcher.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, NullOrdering, Order, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use super::SeaStore;
use super::convert::{self, StateRow, now, ts};
use super::entities::{instance_action, nic, vm, vm_metadata};
use super::identity::project_usage;
use super::sql::{IN_CHUNK, Sql, db_err};
use crate::error::StoreError;
use crate::ids::VmId;
use crate::model::{
    AccessIps, InstanceAction, LockedBy, NewVm, NewVmAttrs, Nic, Quota, ServerAttrs, Usage, Vm,
    VmLock, VmPlacement,
};
use crate::ports::{VmQuery, VmStateUpdate, VmStore};

/// Rows per multi-row `UPDATE` in [`VmStore::update_vm_states`]: 256 rows of
/// 28 values (7168) stay well under every backend's bound-parameter limit
/// (SQLite's 32766 the lowest).
pub const BATCH_ROWS: usize = 256;

mod build;
mod rows;
use rows::*;

#[async_trait]
impl VmStore for SeaStore {
    async fn record_build_progress(
        &self,
        id: VmId,
        percent: u8,
    ) -> Result<crate::model::BuildWrite, StoreError> {
        self.build_progress(id, percent).await
    }

    async fn record_diagnostic(
        &self,
        id: VmId,
        time_us: i64,
        diagnostic: &crate::messages::NewDiagnostic,
        keep: u32,
    ) -> Result<crate::model::BuildWrite, StoreError> {
        self.add_diagnostic(id, time_us, diagnostic, keep).await
    }

    async fn diagnostics(
        &self,
        id: VmId,
        limit: u64,
    ) -> Result<Vec<crate::model::Diagnostic>, StoreError> {
        self.vm_diagnostics(id, limit).await
    }

    async fn latest_diagnostics(
        &self,
        ids: &[VmId],
    ) -> Result<HashMap<VmId, crate::model::Diagnostic>, StoreError> {
        self.vm_latest_diagnostics(ids).await
    }

    async fn user_data_of(&self, ids: &[VmId]) -> Result<HashMap<VmId, String>, StoreError> {
        self.vm_user_data(ids).await
    }

    async fn create_vm(&self, new: &NewVm, quota: Quota) -> Result<Vm, StoreError> {
        let mut vms = self
            .create_vms_with(std::slice::from_ref(new), &NewVmAttrs::default(), quota)
            .await?;
        vms.pop()
            .ok_or_else(|| StoreError::Database("create stored no VM".into()))
    }

    async fn create_vms_with(
        &self,
        new: &[NewVm],
        attrs: &NewVmAttrs,
        quota: Quota,
    ) -> Result<Vec<Vm>, StoreError> {
        let Some(first) = new.first() else {
            return Ok(Vec::new());
        };
        if new.iter().any(|n| n.project_id != first.project_id) {
            return Err(StoreError::Integrity(
                "one batch of new VMs spans several projects".into(),
            ));
        }
        let txn = self.db.begin().await.map_err(db_err)?;
        lock_project(&txn, &first.project_id).await?;
        let usage = project_usage(&txn, &first.project_id).await?;
        let mut wanted = Usage {
            servers: 0,
            vcpus: 0,
            ram_mib: 0,
        };
        for n in new {
            wanted.servers += 1;
            wanted.vcpus += i64::from(n.flavor.vcpus);
            wanted.ram_mib += i64::from(n.flavor.ram_mib);
        }
        quota.check(usage, wanted)?;
        let now = now();
        let mut out = Vec::with_capacity(new.len());
        for n in new {
            out.push(insert_vm(&txn, self.db_backend(), n, attrs, now).await?);
        }
        txn.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn access_ips_of(&self, ids: &[VmId]) -> Result<HashMap<VmId, AccessIps>, StoreError> {
        let mut out = HashMap::new();
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        for chunk in ids.chunks(IN_CHUNK) {
            let rows: Vec<(i64, Option<String>, Option<String>)> = vm::Entity::find()
                .select_only()
                .columns([
                    vm::Column::Id,
                    vm::Column::AccessIpv4,
                    vm::Column::AccessIpv6,
                ])
                .filter(vm::Column::Id.is_in(chunk.iter().copied()))
                .filter(
                    Condition::any()
                        .add(vm::Column::AccessIpv4.is_not_null())
                        .add(vm::Column::AccessIpv6.is_not_null()),
                )
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(db_err)?;
            for (id, v4, v6) in rows {
                out.insert(VmId(id), convert::access_ips(id, v4, v6)?);
            }
        }
        Ok(out)
    }

    async fn server_attrs_of(
        &self,
        ids: &[VmId],
    ) -> Result<HashMap<VmId, ServerAttrs>, StoreError> {
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            i16,
        );
        let mut out = HashMap::new();
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        for chunk in ids.chunks(IN_CHUNK) {
            let rows: Vec<Row> = vm::Entity::find()
                .select_only()
                .columns([
                    vm::Column::Id,
                    vm::Column::AccessIpv4,
                    vm::Column::AccessIpv6,
                    vm::Column::KeyNames,
                    vm::Column::LockedBy,
                    vm::Column::LockedReason,
                    vm::Column::BuildProgress,
                ])
                .filter(vm::Column::Id.is_in(chunk.iter().copied()))
                .filter(
                    Condition::any()
                        .add(vm::Column::AccessIpv4.is_not_null())
                        .add(vm::Column::AccessIpv6.is_not_null())
                        .add(vm::Column::KeyNames.is_not_null())
                        .add(vm::Column::LockedBy.is_not_null())
                        .add(vm::Column::BuildProgress.gt(0)),
                )
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(db_err)?;
            for (id, v4, v6, key_names, locked_by, reason, progress) in rows {
                let key_names = match key_names {
                    None => Vec::new(),
                    Some(s) => serde_json::from_str(&s).map_err(|e| {
                        StoreError::Corrupt(format!("vm {id}: key_names {s:?}: {e}"))
                    })?,
                };
                let lock = match locked_by {
                    None => None,
                    Some(by) => Some(VmLock {
                        by: LockedBy::parse(&by).ok_or_else(|| {
                            StoreError::Corrupt(format!("vm {id}: locked_by {by:?}"))
                        })?,
                        reason,
                    }),
                };
                out.insert(
                    VmId(id),
                    ServerAttrs {
                        access: convert::access_ips(id, v4, v6)?,
                        key_names,
                        lock,
                        build_progress: u8::try_from(progress.clamp(0, 100)).unwrap_or(0),
                    },
                );
            }
        }
        Ok(out)
    }

    async fn set_vm_lock(
        &self,
        id: VmId,
        lock: Option<VmLock>,
        action: Option<InstanceAction>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let (by, reason) = match lock {
            Some(l) => (Some(l.by.as_str().to_string()), l.reason),
            None => (None, None),
        };
        let res = vm::Entity::update_many()
            .col_expr(vm::Column::LockedBy, Expr::value(by))
            .col_expr(vm::Column::LockedReason, Expr::value(reason))
            .filter(vm::Column::Id.eq(id.0))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(server(id)));
        }
        if let Some(a) = &action {
            insert_action(&txn, self.db_backend(), a).await?;
        }
        touch(&txn, id.0).await?;
        txn.commit().await.map_err(db_err)
    }

    async fn set_access_ips(&self, id: VmId, ips: &AccessIps) -> Result<(), StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let res = vm::Entity::update_many()
            .col_expr(
                vm::Column::AccessIpv4,
                Expr::value(ips.v4.map(|a| a.to_string())),
            )
            .col_expr(
                vm::Column::AccessIpv6,
                Expr::value(ips.v6.map(|a| a.to_string())),
            )
            .filter(vm::Column::Id.eq(id.0))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(server(id)));
        }
        touch(&txn, id.0).await?;
        txn.commit().await.map_err(db_err)
    }

    async fn vm(&self, id: VmId) -> Result<Option<Vm>, StoreError> {
        load_vm(&self.db, id.0).await
    }

    /// In id order.
    async fn vms(&self, ids: &[VmId]) -> Result<Vec<Vm>, StoreError> {
        let mut ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let part = vm::Entity::find()
                .filter(vm::Column::Id.is_in(chunk.iter().copied()))
                .order_by_asc(vm::Column::Id)
                .all(&self.db)
                .await
                .map_err(db_err)?;
            rows.extend(part);
        }
        with_metadata(&self.db, rows).await
    }

    async fn list_vms(&self, query: &VmQuery) -> Result<Vec<Vm>, StoreError> {
        let backend = self.db_backend();
        let mut cond = Condition::all();
        if let Some(p) = &query.project_id {
            cond = cond.add(vm::Column::ProjectId.eq(p.as_str()));
        }
        if !query.include_deleted {
            cond = cond.add(vm::Column::Deleted.eq(false));
        }
        if let Some(s) = &query.name_contains {
            // case-sensitive substring on every backend (MySQL tables use a
            // binary collation; SQLite's LIKE would ignore case)
            let expr = match backend {
                DbBackend::Postgres => Expr::cust_with_values("strpos(name, $1) > 0", [s.clone()]),
                _ => Expr::cust_with_values("instr(name, ?) > 0", [s.clone()]),
            };
            cond = cond.add(expr);
        }
        if let Some(n) = &query.name_exact {
            cond = cond.add(vm::Column::Name.eq(n.as_str()));
        }
        if let Some(states) = &query.operstates {
            cond = cond.add(vm::Column::Operstate.is_in(states.iter().map(|s| s.as_str())));
        }
        if let Some(f) = query.flavor_id {
            cond = cond.add(vm::Column::FlavorId.eq(f.0));
        }
        if let Some(i) = &query.image_id {
            cond = cond.add(vm::Column::ImageId.eq(i.as_str()));
        }
        if let Some(b) = query.backend_id {
            cond = cond.add(vm::Column::BackendId.eq(b.0));
        }
        if let Some(t) = query.changes_since {
            cond = cond.add(vm::Column::Updated.gte(ts(backend, t)));
        }
        if let Some(m) = query.marker {
            cond = cond.add(if query.newest_first {
                vm::Column::Id.lt(m.0)
            } else {
                vm::Column::Id.gt(m.0)
            });
        }
        if let Some(re) = &query.name_regex {
            return list_by_name_regex(&self.db, cond, re, query).await;
        }
        let mut select = vm::Entity::find().filter(cond);
        select = if query.newest_first {
            select.order_by_desc(vm::Column::Id)
        } else {
            select.order_by_asc(vm::Column::Id)
        };
        if let Some(limit) = query.limit {
            select = select.limit(limit);
        }
        let rows = select.all(&self.db).await.map_err(db_err)?;
        with_metadata(&self.db, rows).await
    }

    async fn count_vms(&self) -> Result<u64, StoreError> {
        vm::Entity::find()
            .filter(vm::Column::Deleted.eq(false))
            .count(&self.db)
            .await
            .map_err(db_err)
    }

    async fn update_vm_state(&self, update: &VmStateUpdate) -> Result<Vm, StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let vm = write_state(&txn, self.db_backend(), update).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(vm)
    }

    async fn update_vm_state_within(
        &self,
        update: &VmStateUpdate,
        quota: Quota,
    ) -> Result<Vm, StoreError> {
        let backend = self.db_backend();
        let txn = self.begin_write().await?;
        // The VM row, then its project's (the one lock order): concurrent
        // reservations in one project are serialized on the project row.
        let project = lock_vm_row(&txn, update.id.0).await?;
        lock_project(&txn, &project).await?;
        let before = project_usage(&txn, &project).await?;
        let vm = write_state(&txn, backend, update).await?;
        let after = project_usage(&txn, &project).await?;
        let grown = |resource, limit: Option<i64>, was: i64, now: i64| match limit {
            Some(limit) if now > was && now > limit => Err(StoreError::QuotaExceeded {
                resource,
                limit,
                in_use: was,
                requested: now - was,
            }),
            _ => Ok(()),
        };
        // dropping `txn` on an error rolls the write back
        grown("servers", quota.servers, before.servers, after.servers)?;
        grown("vcpus", quota.vcpus, before.vcpus, after.vcpus)?;
        grown("ram", quota.ram_mib, before.ram_mib, after.ram_mib)?;
        txn.commit().await.map_err(db_err)?;
        Ok(vm)
    }

    async fn update_vm_placement(
        &self,
        id: VmId,
        expected_version: i64,
        placement: &VmPlacement,
    ) -> Result<Vm, StoreError> {
        let id = id.0;
        let txn = self.db.begin().await.map_err(db_err)?;
        let mut stmt = Query::update();
        stmt.table(vm::Entity)
            .value(vm::Column::FlavorId, placement.flavor_id.0)
            .value(vm::Column::BackendId, placement.backend_id.map(|b| b.0));
        versioned_update(&txn, id, expected_version, stmt).await?;
        let vm = load_vm(&txn, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(server(id)))?;
        txn.commit().await.map_err(db_err)?;
        Ok(vm)
    }

    async fn instance_actions(
        &self,
        id: VmId,
        limit: u64,
    ) -> Result<Vec<InstanceAction>, StoreError> {
        let rows = instance_action::Entity::find()
            .filter(instance_action::Column::VmId.eq(id.0))
            .order_by_desc(instance_action::Column::StartTime)
            .order_by_desc(instance_action::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|r| {
                Ok(InstanceAction {
                    vm: VmId(r.vm_id),
                    request_id: r.request_id,
                    action: r.action,
                    user_id: r.user_id,
                    project_id: r.project_id,
                    start_time: r.start_time,
                    updated: r.updated,
                    message: r.message,
                    job_id: match r.job_id {
                        Some(j) => Some(crate::ids::JobId(u64::try_from(j).map_err(|_| {
                            StoreError::Corrupt(format!("instance action job id {j}"))
                        })?)),
                        None => None,
                    },
                })
            })
            .collect()
    }

    /// Updates are judged in input order, as if applied one by one: a second
    /// update of the same VM in one batch applies only if it was computed
    /// from the version the first one produced. A VM that does not exist
    /// gets `NotFound`, a state that cannot be stored `Integrity`; neither
    /// affects the other updates. The outer `Err` means nothing was written.
    async fn update_vm_states(
        &self,
        updates: &[VmStateUpdate],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db_backend();
        let txn = self.begin_write().await?;

        // Lock the rows in id order and read their versions.
        let mut ids: Vec<i64> = updates.iter().map(|u| u.id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut current: HashMap<i64, i64> = HashMap::with_capacity(ids.len());
        let mut project_of: HashMap<i64, String> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let mut q = Sql::new(backend);
            q.push("SELECT id, version, project_id FROM vms WHERE id IN ")
                .bind_list(chunk.iter().copied())
                .push(" ORDER BY id");
            match backend {
                // the lock an UPDATE that keeps the key takes: FK checks of
                // concurrent NIC/metadata inserts are not blocked by it
                DbBackend::Postgres => q.push(" FOR NO KEY UPDATE"),
                DbBackend::MySql => q.push(" FOR UPDATE"),
                // SQLite: begin_write already holds the database write lock
                DbBackend::Sqlite => &mut q,
            };
            for row in txn.query_all(q.build()).await.map_err(db_err)? {
                let id: i64 = row.try_get_by_index(0).map_err(db_err)?;
                current.insert(id, row.try_get_by_index(1).map_err(db_err)?);
                project_of.insert(id, row.try_get_by_index(2).map_err(db_err)?);
            }
        }

        // Judge each update against the version it would meet.
        let mut winners: BTreeMap<i64, Winner<'_>> = BTreeMap::new();
        let mut results = Vec::with_capacity(updates.len());
        for u in updates {
            let id = u.id.0;
            let Some(&at) = current.get(&id) else {
                results.push(Err(StoreError::NotFound(server(id))));
                continue;
            };
            if at != u.expected_version {
                results.push(Err(StoreError::Conflict(format!(
                    "{} (at version {at}, update computed from {})",
                    server(id),
                    u.expected_version
                ))));
                continue;
            }
            let values = match StateRow::new(&u.state) {
                Ok(row) => row.values(),
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            current.insert(id, at + 1);
            let prev = winners.remove(&id);
            let prev_image = prev.as_ref().and_then(|p| p.image);
            let from_version = prev.as_ref().map_or(at, |p| p.from_version);
            let nics = u.nics.as_deref().or(prev.as_ref().and_then(|p| p.nics));
            let (mut resizes, mut action_logs) =
                prev.map(|p| (p.resizes, p.action_logs)).unwrap_or_default();
            resizes.extend(u.resize);
            let image = u.image.as_deref().or(prev_image);
            action_logs.extend(u.action_log.as_ref());
            winners.insert(
                id,
                Winner {
                    id,
                    from_version,
                    to_version: at + 1,
                    values,
                    nics,
                    resizes,
                    image,
                    action_logs,
                    deleted: u.state.deleted(),
                },
            );
            results.push(Ok(()));
        }

        // Write the winners, BATCH_ROWS per statement.
        let now = now();
        let winners: Vec<Winner<'_>> = winners.into_values().collect();
        for chunk in winners.chunks(BATCH_ROWS) {
            let res = txn
                .execute(batch_update(backend, chunk, now))
                .await
                .map_err(db_err)?;
            if res.rows_affected() != chunk.len() as u64 {
                return Err(StoreError::Conflict(format!(
                    "batch update wrote {} of {} locked rows",
                    res.rows_affected(),
                    chunk.len()
                )));
            }
        }

        // Replace the NICs of the VMs that got new ones.
        let with_nics: Vec<&Winner<'_>> = winners.iter().filter(|w| w.nics.is_some()).collect();
        for chunk in with_nics.chunks(IN_CHUNK) {
            nic::Entity::delete_many()
                .filter(nic::Column::VmId.is_in(chunk.iter().map(|w| w.id)))
                .exec(&txn)
                .await
                .map_err(db_err)?;
        }
        let rows: Vec<nic::ActiveModel> = with_nics
            .iter()
            .flat_map(|w| {
                w.nics
                    .unwrap_or_default()
                    .iter()
                    .map(|n| convert::nic_row(VmId(w.id), n))
            })
            .collect();
        insert_nics(&txn, rows).await?;
        let macs: Vec<&str> = with_nics
            .iter()
            .flat_map(|w| w.nics.unwrap_or_default().iter())
            .filter_map(|n| n.mac.as_deref())
            .collect();
        super::networks::ports_reported(&txn, &macs).await?;

        // Resizes Ganeti reported (rare: one statement each).
        for w in winners.iter() {
            for be in &w.resizes {
                apply_resize(&txn, w.id, be).await?;
            }
            if let Some(image) = w.image {
                apply_image(&txn, w.id, image).await?;
            }
            for log in &w.action_logs {
                apply_action_log(&txn, backend, w.id, log, now).await?;
            }
            if w.deleted {
                super::networks::release_server_ports(&txn, VmId(w.id)).await?;
            }
        }

        // Last, so the project rows stay locked only until the commit.
        let projects: Vec<&str> = winners
            .iter()
            .filter_map(|w| project_of.get(&w.id).map(String::as_str))
            .collect();
        bump_generations(&txn, &projects).await?;

        txn.commit().await.map_err(db_err)?;
        Ok(results)
    }

    async fn rename_vm(&self, id: VmId, name: &str) -> Result<Vm, StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let res = vm::Entity::update_many()
            .col_expr(vm::Column::Name, Expr::value(name))
            .col_expr(vm::Column::Version, Expr::col(vm::Column::Version).add(1))
            .col_expr(
                vm::Column::Updated,
                Expr::value(ts(self.db_backend(), now())),
            )
            .filter(vm::Column::Id.eq(id.0))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(server(id)));
        }
        bump_generation_of_vm(&txn, id.0).await?;
        let vm = load_vm(&txn, id.0)
            .await?
            .ok_or_else(|| StoreError::NotFound(server(id)))?;
        txn.commit().await.map_err(db_err)?;
        Ok(vm)
    }

    async fn set_vm_metadata(
        &self,
        id: VmId,
        items: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        touch(&txn, id.0).await?;
        if replace {
            vm_metadata::Entity::delete_many()
                .filter(vm_metadata::Column::VmId.eq(id.0))
                .exec(&txn)
                .await
                .map_err(db_err)?;
        }
        upsert_metadata(&txn, id.0, items).await?;
        let out = metadata_of(&txn, &[id.0])
            .await?
            .remove(&id.0)
            .unwrap_or_default();
        // Checked inside the transaction, after `touch` locked the VM row:
        // concurrent merges of one VM are serialized, so the limit holds
        // whatever their interleaving. Dropping `txn` rolls back.
        let limit = crate::service::compute::MAX_SERVER_META;
        if out.len() > limit {
            return Err(StoreError::QuotaExceeded {
                resource: "metadata items",
                limit: limit as i64,
                in_use: (out.len() - items.len().min(out.len())) as i64,
                requested: items.len() as i64,
            });
        }
        txn.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn delete_vm_metadata(&self, id: VmId, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        touch(&txn, id.0).await?;
        let res = vm_metadata::Entity::delete_many()
            .filter(vm_metadata::Column::VmId.eq(id.0))
            .filter(vm_metadata::Column::Key.eq(key))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            // dropping `txn` rolls the version bump back
            return Err(StoreError::NotFound(format!(
                "metadata key {key:?} of {}",
                server(id)
            )));
        }
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn nics(&self, id: VmId) -> Result<Vec<Nic>, StoreError> {
        let rows = nic::Entity::find()
            .filter(nic::Column::VmId.eq(id.0))
            .order_by_asc(nic::Column::Index)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(convert::nic).collect())
    }

    /// Every requested id is in the map (with no NICs if it has none).
    async fn nics_of(&self, ids: &[VmId]) -> Result<HashMap<VmId, Vec<Nic>>, StoreError> {
        let mut out: HashMap<VmId, Vec<Nic>> = ids.iter().map(|&i| (i, Vec::new())).collect();
        let mut ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(IN_CHUNK) {
            let rows = nic::Entity::find()
                .filter(nic::Column::VmId.is_in(chunk.iter().copied()))
                .order_by_asc(nic::Column::VmId)
                .order_by_asc(nic::Column::Index)
                .all(&self.db)
                .await
                .map_err(db_err)?;
            for r in rows {
                out.entry(VmId(r.vm_id)).or_default().push(convert::nic(r));
            }
        }
        Ok(out)
    }

    async fn set_nics(&self, id: VmId, nics: &[Nic]) -> Result<(), StoreError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        touch(&txn, id.0).await?;
        replace_nics(&txn, id.0, nics).await?;
        txn.commit().await.map_err(db_err)
    }

    async fn vm_generation(&self, project_id: &str) -> Result<i64, StoreError> {
        let mut q = Sql::new(self.db_backend());
        q.push("SELECT vm_generation FROM projects WHERE id = ")
            .bind(project_id);
        let row = self
            .db
            .query_one(q.build())
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("project {project_id}")))?;
        row.try_get_by_index(0).map_err(db_err)
    }

    async fn vm_generations(
        &self,
        project_ids: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        if let Some(read) = self.generations.read(&self.db, project_ids).await {
            return read;
        }
        let mut out = HashMap::with_capacity(project_ids.len());
        for chunk in project_ids.chunks(IN_CHUNK) {
            let mut q = Sql::new(self.db_backend());
            q.push("SELECT id, vm_generation FROM projects WHERE id IN ")
                .bind_list(chunk.iter().map(String::as_str));
            for row in self.db.query_all(q.build()).await.map_err(db_err)? {
                out.insert(
                    row.try_get_by_index(0).map_err(db_err)?,
                    row.try_get_by_index(1).map_err(db_err)?,
                );
            }
        }
        Ok(out)
    }

    async fn least_recently_reconciled(&self, limit: u64) -> Result<Vec<Vm>, StoreError> {
        let mut select = vm::Entity::find().filter(vm::Column::Deleted.eq(false));
        // NULL (never reconciled) first. MySQL and SQLite sort NULL first in
        // ascending order already (and can then use the index as is).
        select = if self.db_backend() == DbBackend::Postgres {
            select.order_by_with_nulls(vm::Column::LastReconciled, Order::Asc, NullOrdering::First)
        } else {
            select.order_by_asc(vm::Column::LastReconciled)
        };
        let rows = select
            .order_by_asc(vm::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        with_metadata(&self.db, rows).await
    }

    /// Does not bump `version` or `updated`: reconciliation bookkeeping must
    /// not make concurrent state updates conflict.
    async fn mark_reconciled(&self, ids: &[VmId], at: DateTime<Utc>) -> Result<(), StoreError> {
        let at = ts(self.db_backend(), at);
        for chunk in ids.chunks(IN_CHUNK) {
            vm::Entity::update_many()
                .col_expr(vm::Column::LastReconciled, Expr::value(at.clone()))
                .filter(vm::Column::Id.is_in(chunk.iter().map(|i| i.0)))
                .exec(&self.db)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }
}
