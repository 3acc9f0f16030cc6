//! `vms.rescue_*`: rescue mode (issue 16 item 5), the state machine's
//! `state::Rescue` column by column.
//!
//! `rescue_stage` is `rescuing`, `rescued` or `unrescuing` (NULL: not in
//! rescue mode, every row written before this migration),
//! `rescue_job_id` the running stage's Ganeti job once recorded,
//! `rescue_floor_job_id` the newest job the VM had seen when the stage
//! started.

use sea_orm_migration::prelude::*;

/// Adds the three nullable columns (one `ALTER TABLE` each: SQLite takes
/// one column per statement).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000002_vm_rescue"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    RescueStage,
    RescueJobId,
    RescueFloorJobId,
}

const COLUMNS: [Vms; 3] = [Vms::RescueStage, Vms::RescueJobId, Vms::RescueFloorJobId];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            let mut def = ColumnDef::new(col);
            match col {
                Vms::RescueStage => def.string_len(16),
                _ => def.big_integer(),
            };
            manager
                .alter_table(
                    Table::alter()
                        .table(Vms::Table)
                        .add_column(def.null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            manager
                .alter_table(Table::alter().table(Vms::Table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
