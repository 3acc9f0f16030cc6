//! `vms.access_ipv4`, `vms.access_ipv6`: Nova's `accessIPv4`/`accessIPv6`.
//!
//! Addresses the server's owner declares it is reachable at; the API
//! stores them (validated, in canonical text form) and echoes them.
//! `VARCHAR(45)` holds the longest IPv6 text form (with an embedded IPv4).

use sea_orm_migration::prelude::*;

/// Adds the two nullable columns (one `ALTER TABLE` each: SQLite takes one
/// column per statement).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000001_vm_access_ips"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    AccessIpv4,
    AccessIpv6,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Vms::AccessIpv4, Vms::AccessIpv6] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Vms::Table)
                        .add_column(ColumnDef::new(col).string_len(45).null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Vms::AccessIpv4, Vms::AccessIpv6] {
            manager
                .alter_table(Table::alter().table(Vms::Table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
