//! Synnefo's per-network pools (issue 15): `networks.mac_prefix` (a
//! `MAC_FILTERED` network's own MAC prefix) and `network_leases`, the
//! links and MAC prefixes networks hold from their flavor's pool.
//!
//! * `network_leases` is keyed by `(kind, value)`: no two networks ever
//!   hold the same link or prefix, whatever the allocation code does; the
//!   allocation itself runs under the lock of the kind's `counters` row
//!   (`pool:link`, `pool:mac_prefix`, inserted here), so concurrent
//!   network creates in any number of processes serialize per kind.
//! * A lease goes with its network (deleted in the network's delete, and
//!   `ON DELETE CASCADE` as the backstop).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Adds the column, the table and the two lock rows.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261210_000001_network_pools"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Networks {
    Table,
    Id,
    MacPrefix,
}

#[derive(DeriveIden, Clone, Copy)]
enum NetworkLeases {
    Table,
    Kind,
    Value,
    Idx,
    NetworkId,
    Created,
}

#[derive(DeriveIden, Clone, Copy)]
enum Counters {
    Table,
    Name,
    Value,
}

/// The `counters` rows whose lock serializes each kind's allocations.
pub(crate) const LOCK_ROWS: [&str; 2] = ["pool:link", "pool:mac_prefix"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();
        manager
            .alter_table(
                Table::alter()
                    .table(Networks::Table)
                    .add_column(ColumnDef::new(Networks::MacPrefix).string_len(8).null())
                    .to_owned(),
            )
            .await?;

        let mut t = Table::create();
        t.table(NetworkLeases::Table);
        if b == DbBackend::MySql {
            t.engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        let mut created = ColumnDef::new(NetworkLeases::Created);
        if b == DbBackend::MySql {
            created.custom(Alias::new("DATETIME(6)"));
        } else {
            created.timestamp_with_time_zone();
        }
        t.col(
            ColumnDef::new(NetworkLeases::Kind)
                .string_len(16)
                .not_null(),
        )
        .col(
            ColumnDef::new(NetworkLeases::Value)
                .string_len(32)
                .not_null(),
        )
        .col(ColumnDef::new(NetworkLeases::Idx).big_integer().not_null())
        .col(
            ColumnDef::new(NetworkLeases::NetworkId)
                .string_len(36)
                .not_null(),
        )
        .col(created.not_null())
        .primary_key(
            Index::create()
                .col(NetworkLeases::Kind)
                .col(NetworkLeases::Value),
        )
        .foreign_key(
            ForeignKey::create()
                .name("fk_network_leases_network")
                .from(NetworkLeases::Table, NetworkLeases::NetworkId)
                .to(Networks::Table, Networks::Id)
                .on_delete(ForeignKeyAction::Cascade)
                .on_update(ForeignKeyAction::Restrict),
        );
        manager.create_table(t).await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_network_leases_network")
                    .table(NetworkLeases::Table)
                    .col(NetworkLeases::NetworkId)
                    .to_owned(),
            )
            .await?;
        for name in LOCK_ROWS {
            let ins = Query::insert()
                .into_table(Counters::Table)
                .columns([Counters::Name, Counters::Value])
                .values_panic([name.into(), 0i64.into()])
                .to_owned();
            manager.exec_stmt(ins).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(NetworkLeases::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        let del = Query::delete()
            .from_table(Counters::Table)
            .and_where(Expr::col(Counters::Name).is_in(LOCK_ROWS))
            .to_owned();
        manager.exec_stmt(del).await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Networks::Table)
                    .drop_column(Networks::MacPrefix)
                    .to_owned(),
            )
            .await
    }
}
