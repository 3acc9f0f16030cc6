//! The row-level pieces of [`VmStore`](crate::ports::VmStore) over sea-orm:
//! loading a VM with its metadata, the versioned (optimistic) update, the
//! generation bumps that keep listing caches exact, NIC and metadata
//! writes, the instance-action log, the quota-checked insert and the
//! dispatcher's multi-row state `UPDATE`. The trait methods in the parent
//! module compose them inside their transactions.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query, UpdateStatement};
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
};

use crate::error::StoreError;
use crate::ids::{FlavorId, VmId};
use crate::model::{ActionLog, BeParams, Flavor, InstanceAction, NewVm, NewVmAttrs, Nic, Vm};
use crate::ports::{VmQuery, VmStateUpdate};
use crate::state::VmState;
use crate::store::convert::{self, STATE_COLUMNS, StateRow, now, ts};
use crate::store::entities::{flavor, instance_action, nic, vm, vm_metadata};
use crate::store::sql::{IN_CHUNK, Sql, db_err, insert_returning_id, insert_stmt};

pub(super) fn server(id: impl std::fmt::Display) -> String {
    format!("server {id}")
}

/// Metadata of `ids`, one query per [`IN_CHUNK`] ids.
pub(super) async fn metadata_of(
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
pub(super) async fn with_metadata(
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

pub(super) async fn load_vm(db: &impl ConnectionTrait, id: i64) -> Result<Option<Vm>, StoreError> {
    let Some(row) = vm::Entity::find_by_id(id).one(db).await.map_err(db_err)? else {
        return Ok(None);
    };
    Ok(with_metadata(db, vec![row]).await?.pop())
}

/// Records a change to a VM that is not a state update: bumps `version` and
/// `updated`. [`StoreError::NotFound`] if there is no such VM.
pub(super) async fn touch(db: &impl ConnectionTrait, id: i64) -> Result<(), StoreError> {
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
pub(super) async fn versioned_update(
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

pub(super) async fn bump_generation_of_vm(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<(), StoreError> {
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
pub(super) async fn bump_generations(
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

pub(super) async fn insert_nics(
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
pub(super) const REQUEST_ID_LEN: usize = 64;
pub(super) const ACTION_LEN: usize = 32;
pub(super) const MESSAGE_LEN: usize = 1024;

pub(super) fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Records an accepted request in a server's history (the caller's
/// transaction). The same request recorded twice for one server keeps one
/// row.
pub(super) async fn insert_action(
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
pub(super) async fn apply_action_log(
    db: &impl ConnectionTrait,
    backend: DbBackend,
    vm: i64,
    log: &ActionLog,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (request_id, column, value) = match log {
        ActionLog::Accepted(a) => return insert_action(db, backend, a).await,
        ActionLog::JobsFailed(jobs) => {
            for (job, reason) in jobs {
                instance_action::Entity::update_many()
                    .col_expr(
                        instance_action::Column::Message,
                        Expr::value(bounded(&format!("Error: {reason}"), MESSAGE_LEN)),
                    )
                    .col_expr(
                        instance_action::Column::Updated,
                        Expr::value(ts(backend, now)),
                    )
                    .filter(instance_action::Column::VmId.eq(vm))
                    .filter(
                        instance_action::Column::JobId.eq(convert::u64_to_i64(job.0, "job id")?),
                    )
                    .exec(db)
                    .await
                    .map_err(db_err)?;
            }
            return Ok(());
        }
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

/// Writes one VM's state update (guarded by its version) with the NICs,
/// flavor and history entry it carries, in the caller's transaction;
/// returns the VM as written.
pub(super) async fn write_state(
    txn: &sea_orm::DatabaseTransaction,
    backend: DbBackend,
    update: &VmStateUpdate,
) -> Result<Vm, StoreError> {
    let id = update.id.0;
    let values = StateRow::new(&update.state)?.values();
    let mut stmt = Query::update();
    stmt.table(vm::Entity);
    for (c, v) in STATE_COLUMNS.iter().zip(values) {
        stmt.value(Alias::new(*c), v);
    }
    versioned_update(txn, id, update.expected_version, stmt).await?;
    if let Some(nics) = &update.nics {
        replace_nics(txn, id, nics).await?;
    }
    if let Some(be) = &update.resize {
        apply_resize(txn, id, be).await?;
    }
    if let Some(image) = &update.image {
        apply_image(txn, id, image).await?;
    }
    if let Some(log) = &update.action_log {
        apply_action_log(txn, backend, id, log, now()).await?;
    }
    if update.state.deleted() {
        crate::store::networks::release_server_ports(txn, update.id).await?;
    }
    load_vm(txn, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(server(id)))
}

/// Locks VM `id`'s row for the rest of the transaction (as the update that
/// follows would); its project. `NotFound` for an unknown VM.
pub(super) async fn lock_vm_row(txn: &impl ConnectionTrait, id: i64) -> Result<String, StoreError> {
    let backend = txn.get_database_backend();
    let mut q = Sql::new(backend);
    q.push("SELECT project_id FROM vms WHERE id = ").bind(id);
    match backend {
        DbBackend::Postgres => q.push(" FOR NO KEY UPDATE"),
        DbBackend::MySql => q.push(" FOR UPDATE"),
        // the caller took SQLite's write lock when it began
        DbBackend::Sqlite => &mut q,
    };
    let row = txn
        .query_one(q.build())
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(server(id)))?;
    row.try_get_by_index(0).map_err(db_err)
}

/// Gives VM `id` the flavor a resize's parameters match (Synnefo's
/// dispatcher does the same on a successful `OP_INSTANCE_SET_PARAMS`), in
/// the caller's transaction. Nothing matching: the flavor stays, logged at
/// WARN; reconciliation reports the difference (`UnsyncedFlavor`).
pub(super) async fn apply_resize(
    db: &impl ConnectionTrait,
    id: i64,
    be: &BeParams,
) -> Result<(), StoreError> {
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

/// Gives VM `id` the image a rebuild wrote, in the caller's transaction.
pub(super) async fn apply_image(
    db: &impl ConnectionTrait,
    id: i64,
    image: &str,
) -> Result<(), StoreError> {
    vm::Entity::update_many()
        .col_expr(vm::Column::ImageId, Expr::value(image.to_string()))
        .filter(vm::Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(super) async fn replace_nics(
    db: &impl ConnectionTrait,
    id: i64,
    nics: &[Nic],
) -> Result<(), StoreError> {
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
    crate::store::networks::ports_reported(db, &macs).await
}

pub(super) async fn upsert_metadata(
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
pub(super) async fn lock_project(
    db: &impl ConnectionTrait,
    project_id: &str,
) -> Result<(), StoreError> {
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
pub(super) async fn insert_vm(
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
        user_data: Set(attrs.user_data.clone()),
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
pub(super) async fn list_by_name_regex(
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
pub(super) struct Winner<'a> {
    pub(super) id: i64,
    /// The version the row is at now (locked).
    pub(super) from_version: i64,
    /// The version after this batch.
    pub(super) to_version: i64,
    pub(super) values: [Value; convert::STATE_COLUMN_COUNT],
    pub(super) nics: Option<&'a [Nic]>,
    /// Resizes of this VM's updates in the batch, applied in input order.
    pub(super) resizes: Vec<BeParams>,
    /// The image the last rebuild of this VM's updates in the batch wrote.
    pub(super) image: Option<&'a str>,
    /// History entries of this VM's updates, in input order.
    pub(super) action_logs: Vec<&'a ActionLog>,
    /// The last update leaves the VM deleted: its ports are released.
    pub(super) deleted: bool,
}

/// The multi-row guarded `UPDATE` for up to [`BATCH_ROWS`] winners.
pub(super) fn batch_update(
    backend: DbBackend,
    rows: &[Winner<'_>],
    now: DateTime<Utc>,
) -> Statement {
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
