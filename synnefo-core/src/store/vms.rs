//! [`VmStore`] over sea-orm: VMs, their metadata and NICs, optimistic
//! concurrency and the batched state writes of the dispatcher.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, NullOrdering, OnConflict, Order, Query, UpdateStatement};
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
    Value,
};

use super::SeaStore;
use super::convert::{self, STATE_COLUMNS, StateRow, now, ts};
use super::entities::{flavor, instance_action, nic, vm, vm_metadata};
use super::identity::project_usage;
use super::sql::{IN_CHUNK, Sql, db_err, insert_returning_id, insert_stmt};
use crate::error::StoreError;
use crate::ids::{FlavorId, VmId};
use crate::model::{
    AccessIps, ActionLog, BeParams, Flavor, InstanceAction, LockedBy, NewVm, NewVmAttrs, Nic,
    Quota, ServerAttrs, Usage, Vm, VmLock, VmPlacement,
};
use crate::ports::{VmQuery, VmStateUpdate, VmStore};
use crate::state::VmState;

/// Rows per multi-row `UPDATE` in [`VmStore::update_vm_states`]: 256 rows of
/// 20 values stay well under every backend's bound-parameter limit.
pub const BATCH_ROWS: usize = 256;

fn server(id: impl std::fmt::Display) -> String {
    format!("server {id}")
}

/// Metadata of `ids`, one query per [`IN_CHUNK`] ids.
async fn metadata_of(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<HashMap<i64, BTreeMap<String, String>>, StoreError> {
    let mut out: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let rows = vm_metadata::Entity::find()
            .filter(vm_metadata::Column::VmId.is_in(chunk.iter().copied()))
            .all(db)
            .await
            .map_err(db_err)?;
        for r in rows {
            out.entry(r.vm_id).or_default().insert(r.key, r.value);
        }
    }
    Ok(out)
}

/// Rows to VMs, with their metadata loaded in bulk (no N+1).
async fn with_metadata(
    db: &impl ConnectionTrait,
    rows: Vec<vm::Model>,
) -> Result<Vec<Vm>, StoreError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut meta = metadata_of(db, &ids).await?;
    rows.into_iter()
        .map(|r| {
            let m = meta.remove(&r.id).unwrap_or_default();
            convert::vm(r, m)
        })
        .collect()
}

async fn load_vm(db: &impl ConnectionTrait, id: i64) -> Result<Option<Vm>, StoreError> {
    let Some(row) = vm::Entity::find_by_id(id).one(db).await.map_err(db_err)? else {
        return Ok(None);
    };
    Ok(with_metadata(db, vec![row]).await?.pop())
}

/// Records a change to a VM that is not a state update: bumps `version` and
/// `updated`. [`StoreError::NotFound`] if there is no such VM.
async fn touch(db: &impl ConnectionTrait, id: i64) -> Result<(), StoreError> {
    let res = vm::Entity::update_many()
        .col_expr(vm::Column::Version, Expr::col(vm::Column::Version).add(1))
        .col_expr(
            vm::Column::Updated,
            Expr::value(ts(db.get_database_backend(), now())),
        )
        .filter(vm::Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound(server(id)));
    }
    bump_generation_of_vm(db, id).await
}

/// Bumps `projects.vm_generation` of the project VM `id` belongs to. Every
/// write to a VM, its NICs or metadata calls this in its transaction, after
/// the VM row is locked (VM row, then project row: the one lock order).
/// Runs `stmt`, an UPDATE of some of one VM's columns, only if the VM is
/// still at `expected_version`: bumps its version, `updated` and its
/// project's listing generation; `NotFound` or `Conflict` otherwise.
async fn versioned_update(
    txn: &impl ConnectionTrait,
    id: i64,
    expected_version: i64,
    mut stmt: UpdateStatement,
) -> Result<(), StoreError> {
    let backend = txn.get_database_backend();
    stmt.value(vm::Column::Version, Expr::col(vm::Column::Version).add(1))
        .value(vm::Column::Updated, ts(backend, now()))
        .and_where(vm::Column::Id.eq(id))
        .and_where(vm::Column::Version.eq(expected_version));
    let res = txn.execute(backend.build(&stmt)).await.map_err(db_err)?;
    if res.rows_affected() == 0 {
        let current = vm::Entity::find_by_id(id).one(txn).await.map_err(db_err)?;
        return Err(match current {
            None => StoreError::NotFound(server(id)),
            Some(row) => StoreError::Conflict(format!(
                "{} (now at version {}, change computed from {expected_version})",
                server(id),
                row.version,
            )),
        });
    }
    bump_generation_of_vm(txn, id).await
}

async fn bump_generation_of_vm(db: &impl ConnectionTrait, id: i64) -> Result<(), StoreError> {
    let mut q = Sql::new(db.get_database_backend());
    q.push(
        "UPDATE projects SET vm_generation = vm_generation + 1 \
         WHERE id = (SELECT project_id FROM vms WHERE id = ",
    )
    .bind(id)
    .push(")");
    db.execute(q.build()).await.map_err(db_err)?;
    Ok(())
}

/// Bumps `projects.vm_generation` of several projects, locking their rows
/// in id order first so that concurrent batches cannot deadlock.
async fn bump_generations(
    db: &impl ConnectionTrait,
    project_ids: &[&str],
) -> Result<(), StoreError> {
    let backend = db.get_database_backend();
    let mut ids = project_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(IN_CHUNK) {
        let lock = match backend {
            DbBackend::Postgres => Some("FOR NO KEY UPDATE"),
            DbBackend::MySql => Some("FOR UPDATE"),
            // one writer at a time already
            DbBackend::Sqlite => None,
        };
        if let (Some(lock), true) = (lock, chunk.len() > 1) {
            let mut q = Sql::new(backend);
            q.push("SELECT id FROM projects WHERE id IN ")
                .bind_list(chunk.iter().copied())
                .push(" ORDER BY id ")
                .push(lock);
            db.query_all(q.build()).await.map_err(db_err)?;
        }
        let mut q = Sql::new(backend);
        q.push("UPDATE projects SET vm_generation = vm_generation + 1 WHERE id IN ")
            .bind_list(chunk.iter().copied());
        db.execute(q.build()).await.map_err(db_err)?;
    }
    Ok(())
}

async fn insert_nics(
    db: &impl ConnectionTrait,
    rows: Vec<nic::ActiveModel>,
) -> Result<(), StoreError> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<nic::ActiveModel> = rows.by_ref().take(IN_CHUNK).collect();
        nic::Entity::insert_many(chunk)
            .exec_without_returning(db)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Longest request id, action name and message stored (the columns'
/// bounds; request ids are `req-<uuid>`, 40 bytes).
const REQUEST_ID_LEN: usize = 64;
const ACTION_LEN: usize = 32;
const MESSAGE_LEN: usize = 1024;

fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Records an accepted request in a server's history (the caller's
/// transaction). The same request recorded twice for one server keeps one
/// row.
async fn insert_action(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    a: &InstanceAction,
) -> Result<(), StoreError> {
    let am = instance_action::ActiveModel {
        id: NotSet,
        vm_id: Set(a.vm.0),
        request_id: Set(bounded(&a.request_id, REQUEST_ID_LEN)),
        action: Set(bounded(&a.action, ACTION_LEN)),
        user_id: Set(bounded(&a.user_id, REQUEST_ID_LEN)),
        project_id: Set(bounded(&a.project_id, REQUEST_ID_LEN)),
        start_time: Set(a.start_time),
        updated: Set(a.updated),
        message: Set(a.message.as_deref().map(|m| bounded(m, MESSAGE_LEN))),
        job_id: Set(match a.job_id {
            Some(j) => Some(convert::u64_to_i64(j.0, "job id")?),
            None => None,
        }),
    };
    let mut stmt = insert_stmt(backend, &am)?;
    stmt.on_conflict(
        OnConflict::columns([
            instance_action::Column::VmId,
            instance_action::Column::RequestId,
        ])
        .update_column(instance_action::Column::Updated)
        .to_owned(),
    );
    db.execute(backend.build(&stmt)).await.map_err(db_err)?;
    Ok(())
}

/// Applies a state write's history entry to server `vm` (the caller's
/// transaction).
async fn apply_action_log(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    vm: i64,
    log: &ActionLog,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (request_id, column, value) = match log {
        ActionLog::Accepted(a) => return insert_action(db, backend, a).await,
        ActionLog::Submitted { request_id, job_id } => (
            request_id,
            instance_action::Column::JobId,
            Value::BigInt(Some(convert::u64_to_i64(job_id.0, "job id")?)),
        ),
        ActionLog::Failed { request_id, reason } => (
            request_id,
            instance_action::Column::Message,
            Value::String(Some(Box::new(bounded(
                &format!("Error: {reason}"),
                MESSAGE_LEN,
            )))),
        ),
    };
    instance_action::Entity::update_many()
        .col_expr(column, Expr::value(value))
        .col_expr(
            instance_action::Column::Updated,
            Expr::value(ts(backend, now)),
        )
        .filter(instance_action::Column::VmId.eq(vm))
        .filter(instance_action::Column::RequestId.eq(bounded(request_id, REQUEST_ID_LEN)))
        .exec(db)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Gives VM `id` the flavor a resize's parameters match (Synnefo's
/// dispatcher does the same on a successful `OP_INSTANCE_SET_PARAMS`), in
/// the caller's transaction. Nothing matching: the flavor stays, logged at
/// WARN; reconciliation reports the difference (`UnsyncedFlavor`).
async fn apply_resize(db: &impl ConnectionTrait, id: i64, be: &BeParams) -> Result<(), StoreError> {
    let Some(row) = vm::Entity::find_by_id(id).one(db).await.map_err(db_err)? else {
        return Ok(());
    };
    let catalogue: Vec<Flavor> = flavor::Entity::find()
        .all(db)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(convert::flavor)
        .collect();
    let recorded = FlavorId(row.flavor_id);
    match be.new_flavor(&catalogue, recorded) {
        Some(to) => {
            vm::Entity::update_many()
                .col_expr(vm::Column::FlavorId, Expr::value(to.0))
                .filter(vm::Column::Id.eq(id))
                .exec(db)
                .await
                .map_err(db_err)?;
        }
        None => {
            let current = catalogue.iter().find(|f| f.id == recorded);
            let changed = current.is_some_and(|f| {
                be.vcpus.is_some_and(|v| v != f.vcpus) || be.ram_mib.is_some_and(|r| r != f.ram_mib)
            });
            if changed {
                tracing::warn!(
                    server = id,
                    flavor = recorded.0,
                    vcpus = ?be.vcpus,
                    ram_mib = ?be.ram_mib,
                    "Ganeti resized the server to parameters no flavor has; the flavor stays until an operator adds one (reconciliation reports it)"
                );
            }
        }
    }
    Ok(())
}

async fn replace_nics(db: &impl ConnectionTrait, id: i64, nics: &[Nic]) -> Result<(), StoreError> {
    nic::Entity::delete_many()
        .filter(nic::Column::VmId.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    insert_nics(
        db,
        nics.iter().map(|n| convert::nic_row(VmId(id), n)).collect(),
    )
    .await?;
    let macs: Vec<&str> = nics.iter().filter_map(|n| n.mac.as_deref()).collect();
    super::networks::ports_reported(db, &macs).await
}

async fn upsert_metadata(
    db: &impl ConnectionTrait,
    id: i64,
    items: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let items: Vec<(&String, &String)> = items.iter().collect();
    for chunk in items.chunks(IN_CHUNK) {
        let mut stmt = Query::insert();
        stmt.into_table(vm_metadata::Entity).columns([
            vm_metadata::Column::VmId,
            vm_metadata::Column::Key,
            vm_metadata::Column::Value,
        ]);
        for (k, v) in chunk {
            stmt.values([id.into(), (*k).clone().into(), (*v).clone().into()])
                .map_err(|e| StoreError::Database(e.to_string()))?;
        }
        stmt.on_conflict(
            OnConflict::columns([vm_metadata::Column::VmId, vm_metadata::Column::Key])
                .update_column(vm_metadata::Column::Value)
                .to_owned(),
        );
        let backend = db.get_database_backend();
        db.execute(backend.build(&stmt)).await.map_err(db_err)?;
    }
    Ok(())
}

/// Takes the lock that serializes creates within one project (see the
/// module docs of [`super`]) by bumping its `vm_generation` (the create is a
/// change to the project's VMs); [`StoreError::NotFound`] if there is no
/// such project.
async fn lock_project(db: &impl ConnectionTrait, project_id: &str) -> Result<(), StoreError> {
    let mut q = Sql::new(db.get_database_backend());
    q.push("UPDATE projects SET vm_generation = vm_generation + 1 WHERE id = ")
        .bind(project_id);
    if db.execute(q.build()).await.map_err(db_err)?.rows_affected() > 0 {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("project {project_id}")))
    }
}

/// Inserts one new VM (BUILD, version 1) and its metadata; the caller
/// holds the project lock and has checked the quota.
async fn insert_vm(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    new: &NewVm,
    attrs: &NewVmAttrs,
    now: DateTime<Utc>,
) -> Result<Vm, StoreError> {
    let state = VmState::new_build();
    let access_ips = &attrs.access;
    let key_names = if attrs.key_names.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&attrs.key_names)
                .map_err(|e| StoreError::Integrity(format!("cannot encode key names: {e}")))?,
        )
    };
    let mut am = vm::ActiveModel {
        id: NotSet,
        user_id: Set(new.user_id.clone()),
        project_id: Set(new.project_id.clone()),
        name: Set(new.name.clone()),
        flavor_id: Set(new.flavor.id.0),
        image_id: Set(new.image_id.clone()),
        backend_id: Set(new.backend_id.map(|b| b.0)),
        created: Set(now),
        updated: Set(now),
        last_reconciled: Set(None),
        version: Set(1),
        access_ipv4: Set(access_ips.v4.map(|a| a.to_string())),
        access_ipv6: Set(access_ips.v6.map(|a| a.to_string())),
        key_names: Set(key_names),
        ..Default::default()
    };
    StateRow::new(&state)?.into_active_model(&mut am);
    let id = insert_returning_id(txn, insert_stmt(backend, &am)?, vm::Column::Id).await?;
    upsert_metadata(txn, id, &new.metadata).await?;
    if let Some(request_id) = &new.request_id {
        let create = InstanceAction {
            vm: VmId(id),
            request_id: request_id.clone(),
            action: "create".into(),
            user_id: new.user_id.clone(),
            project_id: new.project_id.clone(),
            start_time: now,
            updated: now,
            message: None,
            job_id: None,
        };
        insert_action(txn, backend, &create).await?;
    }
    Ok(Vm {
        id: VmId(id),
        user_id: new.user_id.clone(),
        project_id: new.project_id.clone(),
        name: new.name.clone(),
        flavor_id: new.flavor.id,
        image_id: new.image_id.clone(),
        backend_id: new.backend_id,
        state,
        metadata: new.metadata.clone(),
        created: now,
        updated: now,
        last_reconciled: None,
        version: 1,
    })
}

/// [`VmStore::list_vms`] with a name regex: the (id, name) pairs that pass
/// the SQL conditions, in page order, are matched here (the regex dialects
/// of SQLite, PostgreSQL and MySQL differ, and SQLite has none), then the
/// first `limit` matches are loaded. Matching is linear in each name's
/// length ([`crate::model::NameRegex`]), so the cost is one narrow scan of
/// the rows the other filters leave.
async fn list_by_name_regex(
    db: &impl ConnectionTrait,
    cond: Condition,
    re: &crate::model::NameRegex,
    query: &VmQuery,
) -> Result<Vec<Vm>, StoreError> {
    let mut select = vm::Entity::find()
        .select_only()
        .columns([vm::Column::Id, vm::Column::Name])
        .filter(cond);
    select = if query.newest_first {
        select.order_by_desc(vm::Column::Id)
    } else {
        select.order_by_asc(vm::Column::Id)
    };
    let pairs: Vec<(i64, String)> = select.into_tuple().all(db).await.map_err(db_err)?;
    let limit = query
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let ids: Vec<i64> = pairs
        .into_iter()
        .filter(|(_, name)| re.is_match(name))
        .map(|(id, _)| id)
        .take(limit)
        .collect();
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IN_CHUNK) {
        let part = vm::Entity::find()
            .filter(vm::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await
            .map_err(db_err)?;
        rows.extend(part);
    }
    if query.newest_first {
        rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
    } else {
        rows.sort_unstable_by_key(|r| r.id);
    }
    with_metadata(db, rows).await
}

/// One VM's final write in a batch.
struct Winner<'a> {
    id: i64,
    /// The version the row is at now (locked).
    from_version: i64,
    /// The version after this batch.
    to_version: i64,
    values: [Value; 19],
    nics: Option<&'a [Nic]>,
    /// Resizes of this VM's updates in the batch, applied in input order.
    resizes: Vec<BeParams>,
    /// History entries of this VM's updates, in input order.
    action_logs: Vec<&'a ActionLog>,
    /// The last update leaves the VM deleted: its ports are released.
    deleted: bool,
}

/// The multi-row guarded `UPDATE` for up to [`BATCH_ROWS`] winners.
fn batch_update(backend: DbBackend, rows: &[Winner<'_>], now: DateTime<Utc>) -> Statement {
    let mut q = Sql::new(backend);
    match backend {
        DbBackend::Postgres | DbBackend::Sqlite => {
            q.push("WITH v(id, expected, new_version");
            for c in STATE_COLUMNS {
                q.push(", ").push(c);
            }
            q.push(") AS (VALUES ");
            for (i, w) in rows.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(")
                    .bind(w.id)
                    .push(", ")
                    .bind(w.from_version)
                    .push(", ")
                    .bind(w.to_version);
                for v in w.values.iter() {
                    q.push(", ").bind(v.clone());
                }
                q.push(")");
            }
            q.push(") UPDATE vms SET ");
            for c in STATE_COLUMNS {
                q.push(c).push(" = v.").push(c).push(", ");
            }
            q.push("version = v.new_version, updated = ").bind(now);
            q.push(" FROM v WHERE vms.id = v.id AND vms.version = v.expected");
        }
        DbBackend::MySql => {
            q.push("UPDATE vms JOIN (");
            for (i, w) in rows.iter().enumerate() {
                if i == 0 {
                    q.push("SELECT ")
                        .bind(w.id)
                        .push(" AS id, ")
                        .bind(w.from_version)
                        .push(" AS expected, ");
                    q.bind(w.to_version).push(" AS new_version");
                    for (c, v) in STATE_COLUMNS.iter().zip(w.values.iter()) {
                        q.push(", ").bind(v.clone()).push(" AS ").push(c);
                    }
                } else {
                    q.push(" UNION ALL SELECT ")
                        .bind(w.id)
                        .push(", ")
                        .bind(w.from_version)
                        .push(", ")
                        .bind(w.to_version);
                    for v in w.values.iter() {
                        q.push(", ").bind(v.clone());
                    }
                }
            }
            q.push(") v ON vms.id = v.id AND vms.version = v.expected SET ");
            for c in STATE_COLUMNS {
                q.push("vms.").push(c).push(" = v.").push(c).push(", ");
            }
            q.push("vms.version = v.new_version, vms.updated = ")
                .bind(now);
        }
    }
    q.build()
}

#[async_trait]
impl VmStore for SeaStore {
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
                ])
                .filter(vm::Column::Id.is_in(chunk.iter().copied()))
                .filter(
                    Condition::any()
                        .add(vm::Column::AccessIpv4.is_not_null())
                        .add(vm::Column::AccessIpv6.is_not_null())
                        .add(vm::Column::KeyNames.is_not_null())
                        .add(vm::Column::LockedBy.is_not_null()),
                )
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(db_err)?;
            for (id, v4, v6, key_names, locked_by, reason) in rows {
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
        let id = update.id.0;
        let values = StateRow::new(&update.state)?.values();
        let txn = self.db.begin().await.map_err(db_err)?;
        let mut stmt = Query::update();
        stmt.table(vm::Entity);
        for (c, v) in STATE_COLUMNS.iter().zip(values) {
            stmt.value(Alias::new(*c), v);
        }
        versioned_update(&txn, id, update.expected_version, stmt).await?;
        if let Some(nics) = &update.nics {
            replace_nics(&txn, id, nics).await?;
        }
        if let Some(be) = &update.resize {
            apply_resize(&txn, id, be).await?;
        }
        if let Some(log) = &update.action_log {
            apply_action_log(&txn, self.db_backend(), id, log, now()).await?;
        }
        if update.state.deleted {
            super::networks::release_server_ports(&txn, update.id).await?;
        }
        let vm = load_vm(&txn, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(server(id)))?;
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
            let from_version = prev.as_ref().map_or(at, |p| p.from_version);
            let nics = u.nics.as_deref().or(prev.as_ref().and_then(|p| p.nics));
            let (mut resizes, mut action_logs) =
                prev.map(|p| (p.resizes, p.action_logs)).unwrap_or_default();
            resizes.extend(u.resize);
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
                    action_logs,
                    deleted: u.state.deleted,
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
