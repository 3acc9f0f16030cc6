//! `vms.rebuild_*`: a rebuild under way (issue 16 item 4), the state
//! machine's `state::Rebuild` column by column.
//!
//! `rebuild_image_id` is the image being written (the server's `image_id`
//! once the job succeeds), `rebuild_start` whether the job starts the
//! server again (it was running), `rebuild_job_id` the reinstall job once
//! recorded, `rebuild_floor_job_id` the newest job the VM had seen when the
//! rebuild started. All NULL when there is no rebuild (every row written
//! before this migration).

use sea_orm_migration::prelude::*;

/// Adds the four nullable columns (one `ALTER TABLE` each: SQLite takes
/// one column per statement).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000001_vm_rebuild"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    RebuildImageId,
    RebuildStart,
    RebuildJobId,
    RebuildFloorJobId,
}

const COLUMNS: [Vms; 4] = [
    Vms::RebuildImageId,
    Vms::RebuildStart,
    Vms::RebuildJobId,
    Vms::RebuildFloorJobId,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            let mut def = ColumnDef::new(col);
            match col {
                // as long as `vms.image_id`
                Vms::RebuildImageId => def.string_len(64),
                Vms::RebuildStart => def.boolean(),
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
