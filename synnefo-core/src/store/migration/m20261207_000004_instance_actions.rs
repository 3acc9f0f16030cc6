//! `instance_actions`: every accepted request that changed a server
//! (Nova's instance actions, `os-instance-actions`), written in the same
//! transaction as the state change it asks for.
//!
//! One row per (server, request): a multi-create request has one row per
//! server it created. No foreign key to `vms`: servers are soft-deleted, and
//! the history outlives them by design. Lookups are by server, newest first
//! (`ix_instance_actions_vm`).

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// Creates the table and its index.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000004_instance_actions"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum InstanceActions {
    Table,
    Id,
    VmId,
    RequestId,
    Action,
    UserId,
    ProjectId,
    StartTime,
    Updated,
    Message,
    JobId,
}

/// A non-null timestamp with microseconds, as the initial migration makes
/// them (`DATETIME(6)` holding UTC on MySQL).
fn ts(backend: DbBackend, col: InstanceActions) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    if backend == DbBackend::MySql {
        c.custom(Alias::new("DATETIME(6)"));
    } else {
        c.timestamp_with_time_zone();
    }
    c.not_null();
    c
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let mut t = Table::create();
        t.table(InstanceActions::Table);
        if backend == DbBackend::MySql {
            t.engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        t.col(
            ColumnDef::new(InstanceActions::Id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(
            ColumnDef::new(InstanceActions::VmId)
                .big_integer()
                .not_null(),
        )
        .col(
            ColumnDef::new(InstanceActions::RequestId)
                .string_len(64)
                .not_null(),
        )
        .col(
            ColumnDef::new(InstanceActions::Action)
                .string_len(32)
                .not_null(),
        )
        .col(
            ColumnDef::new(InstanceActions::UserId)
                .string_len(64)
                .not_null(),
        )
        .col(
            ColumnDef::new(InstanceActions::ProjectId)
                .string_len(64)
                .not_null(),
        )
        .col(ts(backend, InstanceActions::StartTime))
        .col(ts(backend, InstanceActions::Updated))
        .col(ColumnDef::new(InstanceActions::Message).text().null())
        .col(ColumnDef::new(InstanceActions::JobId).big_integer().null());
        manager.create_table(t.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_instance_actions_vm_request")
                    .table(InstanceActions::Table)
                    .col(InstanceActions::VmId)
                    .col(InstanceActions::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(InstanceActions::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
