//! Build progress and diagnostics (issue 16 item 7): written outside the
//! state machine, each in one short transaction, never touching the VM's
//! state columns or its version (so they never conflict with a state
//! write), and bumping the project's VM generation when they change what a
//! server view shows.

use std::collections::HashMap;

use chrono::DateTime;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::super::SeaStore;
use super::super::convert::{now, ts};
use super::super::entities::{vm, vm_diagnostic};
use super::super::sql::{IN_CHUNK, db_err, insert_returning_id, insert_stmt};
use super::rows::lock_project;
use crate::error::StoreError;
use crate::ids::VmId;
use crate::messages::{DiagnosticLevel, NewDiagnostic};
use crate::model::{BuildWrite, Diagnostic};
use crate::state::OperState;

/// The VM's project, operstate and deletion flag, if it exists.
async fn vm_facts(
    db: &impl ConnectionTrait,
    id: VmId,
) -> Result<(String, String, bool), StoreError> {
    vm::Entity::find_by_id(id.0)
        .select_only()
        .columns([
            vm::Column::ProjectId,
            vm::Column::Operstate,
            vm::Column::Deleted,
        ])
        .into_tuple::<(String, String, bool)>()
        .one(db)
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(format!("server {id}")))
}

fn time_of(us: i64) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Integrity(format!("event time {us} out of range")))
}

fn diagnostic(r: vm_diagnostic::Model) -> Result<Diagnostic, StoreError> {
    Ok(Diagnostic {
        vm: VmId(r.vm_id),
        created: r.created,
        level: DiagnosticLevel::parse(&r.level).ok_or_else(|| {
            StoreError::Corrupt(format!("diagnostic {}: level {:?}", r.id, r.level))
        })?,
        source: r.source,
        source_time: time_of(r.source_time_us)
            .map_err(|_| StoreError::Corrupt(format!("diagnostic {}: time", r.id)))?,
        message: r.message,
        details: r.details,
    })
}

impl SeaStore {
    /// See [`crate::ports::VmStore::record_build_progress`].
    pub(super) async fn build_progress(
        &self,
        id: VmId,
        percent: u8,
    ) -> Result<BuildWrite, StoreError> {
        let percent = i16::from(percent.min(100));
        let txn = self.db.begin().await.map_err(db_err)?;
        let (project, _, _) = vm_facts(&txn, id).await?;
        let backend = txn.get_database_backend();
        // Only a building server's, only upwards: the condition is judged
        // on the row as committed when the update runs, so a create's
        // success written meanwhile wins.
        let changed = vm::Entity::update_many()
            .col_expr(vm::Column::BuildProgress, Expr::value(percent))
            .col_expr(vm::Column::Updated, Expr::value(ts(backend, now())))
            .filter(vm::Column::Id.eq(id.0))
            .filter(vm::Column::Operstate.eq(OperState::Build.as_str()))
            .filter(vm::Column::Deleted.eq(false))
            .filter(vm::Column::BuildProgress.lt(percent))
            .exec(&txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        if changed == 0 {
            txn.rollback().await.map_err(db_err)?;
            return Ok(BuildWrite::Ignored);
        }
        lock_project(&txn, &project).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(BuildWrite::Applied)
    }

    /// See [`crate::ports::VmStore::record_diagnostic`].
    pub(super) async fn add_diagnostic(
        &self,
        id: VmId,
        time_us: i64,
        d: &NewDiagnostic,
        keep: u32,
    ) -> Result<BuildWrite, StoreError> {
        time_of(time_us)?;
        let txn = self.db.begin().await.map_err(db_err)?;
        let (project, _, deleted) = vm_facts(&txn, id).await?;
        if deleted {
            txn.rollback().await.map_err(db_err)?;
            return Ok(BuildWrite::Ignored);
        }
        // Serialize with other writers of this project's servers (and make
        // listings see the change): the project row is the lock.
        lock_project(&txn, &project).await?;
        let seen = vm_diagnostic::Entity::find()
            .select_only()
            .column(vm_diagnostic::Column::Id)
            .filter(vm_diagnostic::Column::VmId.eq(id.0))
            .filter(vm_diagnostic::Column::SourceTimeUs.eq(time_us))
            .filter(vm_diagnostic::Column::Source.eq(d.source.as_str()))
            .filter(vm_diagnostic::Column::Message.eq(d.message.as_str()))
            .into_tuple::<i64>()
            .one(&txn)
            .await
            .map_err(db_err)?;
        if seen.is_some() {
            txn.rollback().await.map_err(db_err)?;
            return Ok(BuildWrite::Ignored);
        }
        let backend = txn.get_database_backend();
        let am = vm_diagnostic::ActiveModel {
            id: NotSet,
            vm_id: Set(id.0),
            created: Set(now()),
            level: Set(d.level.as_str().to_string()),
            source: Set(d.source.clone()),
            source_time_us: Set(time_us),
            message: Set(d.message.clone()),
            details: Set(d.details.clone()),
        };
        insert_returning_id(&txn, insert_stmt(backend, &am)?, vm_diagnostic::Column::Id).await?;
        // Keep the newest `keep` (by arrival, Synnefo's order).
        let keep = u64::from(keep.max(1));
        let beyond: Vec<i64> = vm_diagnostic::Entity::find()
            .select_only()
            .column(vm_diagnostic::Column::Id)
            .filter(vm_diagnostic::Column::VmId.eq(id.0))
            .order_by_desc(vm_diagnostic::Column::Id)
            .offset(keep)
            .limit(IN_CHUNK as u64)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(db_err)?;
        if !beyond.is_empty() {
            vm_diagnostic::Entity::delete_many()
                .filter(vm_diagnostic::Column::Id.is_in(beyond))
                .exec(&txn)
                .await
                .map_err(db_err)?;
        }
        txn.commit().await.map_err(db_err)?;
        Ok(BuildWrite::Applied)
    }

    /// See [`crate::ports::VmStore::diagnostics`].
    pub(super) async fn vm_diagnostics(
        &self,
        id: VmId,
        limit: u64,
    ) -> Result<Vec<Diagnostic>, StoreError> {
        vm_diagnostic::Entity::find()
            .filter(vm_diagnostic::Column::VmId.eq(id.0))
            .order_by_desc(vm_diagnostic::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(diagnostic)
            .collect()
    }

    /// See [`crate::ports::VmStore::latest_diagnostics`].
    pub(super) async fn vm_latest_diagnostics(
        &self,
        ids: &[VmId],
    ) -> Result<HashMap<VmId, Diagnostic>, StoreError> {
        let mut out = HashMap::new();
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        for chunk in ids.chunks(IN_CHUNK) {
            // The newest id per server, then those rows: two indexed reads.
            let newest: Vec<(i64, i64)> = vm_diagnostic::Entity::find()
                .select_only()
                .column(vm_diagnostic::Column::VmId)
                .expr(Expr::col(vm_diagnostic::Column::Id).max())
                .filter(vm_diagnostic::Column::VmId.is_in(chunk.iter().copied()))
                .group_by(vm_diagnostic::Column::VmId)
                .into_tuple::<(i64, i64)>()
                .all(&self.db)
                .await
                .map_err(db_err)?;
            let wanted: Vec<i64> = newest.into_iter().map(|(_, id)| id).collect();
            if wanted.is_empty() {
                continue;
            }
            for r in vm_diagnostic::Entity::find()
                .filter(vm_diagnostic::Column::Id.is_in(wanted))
                .all(&self.db)
                .await
                .map_err(db_err)?
            {
                let d = diagnostic(r)?;
                out.insert(d.vm, d);
            }
        }
        Ok(out)
    }

    /// See [`crate::ports::VmStore::user_data_of`].
    pub(super) async fn vm_user_data(
        &self,
        ids: &[VmId],
    ) -> Result<HashMap<VmId, String>, StoreError> {
        let mut out = HashMap::new();
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        for chunk in ids.chunks(IN_CHUNK) {
            let rows: Vec<(i64, String)> = vm::Entity::find()
                .select_only()
                .columns([vm::Column::Id, vm::Column::UserData])
                .filter(vm::Column::Id.is_in(chunk.iter().copied()))
                .filter(vm::Column::UserData.is_not_null())
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(db_err)?;
            out.extend(rows.into_iter().map(|(id, u)| (VmId(id), u)));
        }
        Ok(out)
    }
}
