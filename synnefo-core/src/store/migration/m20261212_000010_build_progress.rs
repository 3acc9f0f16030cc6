//! Issue 16 items 2 and 7: `vms.build_progress` (the percentage of the
//! image copy snf-image reported while the server builds, Synnefo's
//! `buildpercentage`), `vms.user_data` (Nova's `user_data` as given,
//! base64, sent to snf-image as `cloud_userdata`) and `vm_diagnostics`
//! (Synnefo's `VirtualMachineDiagnostic`: snf-image's info, warning, error
//! and helper messages per server, bounded per server by the dispatcher).
//!
//! `vm_diagnostics` has no foreign key to `vms` (servers are soft-deleted;
//! their diagnostics stay with them). Lookups are by server, newest first
//! (`ix_vm_diagnostics_vm`); a redelivered message is recognised by its
//! server, event time, source and message.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// Adds the two columns and the table.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000010_build_progress"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    BuildProgress,
    UserData,
}

#[derive(DeriveIden, Clone, Copy)]
enum VmDiagnostics {
    Table,
    Id,
    VmId,
    Created,
    Level,
    Source,
    SourceTimeUs,
    Message,
    Details,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .alter_table(
                Table::alter()
                    .table(Vms::Table)
                    .add_column(
                        ColumnDef::new(Vms::BuildProgress)
                            .small_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Vms::Table)
                    .add_column(ColumnDef::new(Vms::UserData).text().null())
                    .to_owned(),
            )
            .await?;
        let mut t = Table::create();
        t.table(VmDiagnostics::Table);
        if backend == DbBackend::MySql {
            t.engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        let mut created = ColumnDef::new(VmDiagnostics::Created);
        if backend == DbBackend::MySql {
            created.custom(Alias::new("DATETIME(6)"));
        } else {
            created.timestamp_with_time_zone();
        }
        created.not_null();
        t.col(
            ColumnDef::new(VmDiagnostics::Id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(VmDiagnostics::VmId).big_integer().not_null())
        .col(created)
        .col(
            ColumnDef::new(VmDiagnostics::Level)
                .string_len(20)
                .not_null(),
        )
        .col(
            ColumnDef::new(VmDiagnostics::Source)
                .string_len(100)
                .not_null(),
        )
        .col(
            ColumnDef::new(VmDiagnostics::SourceTimeUs)
                .big_integer()
                .not_null(),
        )
        .col(
            ColumnDef::new(VmDiagnostics::Message)
                .string_len(255)
                .not_null(),
        )
        .col(ColumnDef::new(VmDiagnostics::Details).text().null());
        manager.create_table(t.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_vm_diagnostics_vm")
                    .table(VmDiagnostics::Table)
                    .col(VmDiagnostics::VmId)
                    .col(VmDiagnostics::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(VmDiagnostics::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for col in [Vms::BuildProgress, Vms::UserData] {
            manager
                .alter_table(Table::alter().table(Vms::Table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
