//! `projects.vm_generation`: a per-project change counter for the VMs.
//!
//! Bumped in the same transaction as every change to one of the project's
//! VMs, so an API process can tell with one primary-key read whether a
//! server listing it rendered earlier is still exact, whichever process or
//! dispatcher made the change (see `VmStore::vm_generation`).

use sea_orm_migration::prelude::*;

/// Adds `projects.vm_generation BIGINT NOT NULL DEFAULT 0`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000001_project_vm_generation"
    }
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    VmGeneration,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Projects::Table)
                    .add_column(
                        ColumnDef::new(Projects::VmGeneration)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Projects::Table)
                    .drop_column(Projects::VmGeneration)
                    .to_owned(),
            )
            .await
    }
}
