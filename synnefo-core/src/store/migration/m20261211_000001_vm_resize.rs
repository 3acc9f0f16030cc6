//! `vms.resize_*`: a resize under way or awaiting confirmation (issue 16
//! item 3), the state machine's `state::Resize` column by column.
//!
//! `resize_from_flavor_id` / `resize_to_flavor_id` are the flavors before
//! and after: the project's usage counts, for each resource, the larger of
//! the two (and of the recorded flavor) while a resize is on record, so a
//! revert never needs a quota check and concurrent resizes cannot
//! over-commit. `resize_stage` is `resizing`, `verifying` or `reverting`,
//! `resize_confirm` whether a success waits for the owner (Nova) or not
//! (Synnefo), `resize_job_id` the running stage's Ganeti job once
//! recorded, `resize_floor_job_id` the newest job the VM had seen when the
//! stage started. `resize_restart` is the step of a running server's
//! restart (`waiting`, `params_set`, `rebooted`; NULL for a stopped
//! server) and `resize_reboot_job_id` its reboot job once recorded. All
//! NULL when there is no resize (every row written before this migration).

use sea_orm_migration::prelude::*;

/// Adds the eight nullable columns (one `ALTER TABLE` each: SQLite takes one
/// column per statement).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261211_000001_vm_resize"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    ResizeFromFlavorId,
    ResizeToFlavorId,
    ResizeStage,
    ResizeConfirm,
    ResizeJobId,
    ResizeFloorJobId,
    ResizeRestart,
    ResizeRebootJobId,
}

const COLUMNS: [Vms; 8] = [
    Vms::ResizeFromFlavorId,
    Vms::ResizeToFlavorId,
    Vms::ResizeStage,
    Vms::ResizeConfirm,
    Vms::ResizeJobId,
    Vms::ResizeFloorJobId,
    Vms::ResizeRestart,
    Vms::ResizeRebootJobId,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in COLUMNS {
            let mut def = ColumnDef::new(col);
            match col {
                Vms::ResizeStage | Vms::ResizeRestart => def.string_len(16),
                Vms::ResizeConfirm => def.boolean(),
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
