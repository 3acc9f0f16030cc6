//! `vms.job_error`, `vms.nics_time_us`: issue 17 item 3, Synnefo's
//! semantics where ours differed.
//!
//! `job_error` keeps Ganeti's error of a failed opcode (JSON of
//! `state::OpError`, as `TEXT`) beside `job_log_msg`, the producer's last
//! log line: Synnefo keeps both. `nics_time_us` is the event time of the
//! NIC report on record, so reports apply in event-time order. Both
//! nullable: rows written before this migration have neither.

use sea_orm_migration::prelude::*;

/// Adds the two nullable columns (one `ALTER TABLE` each: SQLite takes one
/// column per statement).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000002_vm_job_error_nics_time"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    JobError,
    NicsTimeUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Vms::Table)
                    .add_column(ColumnDef::new(Vms::JobError).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Vms::Table)
                    .add_column(ColumnDef::new(Vms::NicsTimeUs).big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Vms::JobError, Vms::NicsTimeUs] {
            manager
                .alter_table(Table::alter().table(Vms::Table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
