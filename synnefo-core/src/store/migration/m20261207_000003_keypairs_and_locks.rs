//! `keypairs` (Nova's `os-keypairs`, per user) and, on `vms`, the key pair
//! names given at create (`key_names`, a JSON array) and the lock
//! (`locked_by`, `locked_reason`; unlocked when `locked_by` is NULL).
//!
//! Key pair names are unique per user (`uq_keypairs_user_name`, which also
//! serves listing a user's key pairs by name). The public key is `TEXT`:
//! an x509 certificate in PEM runs to a few kilobytes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Creates `keypairs` and adds the three `vms` columns.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000003_keypairs_and_locks"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Keypairs {
    Table,
    Id,
    UserId,
    Name,
    Kind,
    Fingerprint,
    PublicKey,
    Created,
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Vms {
    Table,
    KeyNames,
    LockedBy,
    LockedReason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let mut table = Table::create();
        table.table(Keypairs::Table);
        if backend == DbBackend::MySql {
            table
                .engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        let mut created = ColumnDef::new(Keypairs::Created);
        if backend == DbBackend::MySql {
            created.custom(Alias::new("DATETIME(6)"));
        } else {
            created.timestamp_with_time_zone();
        }
        created.not_null();
        table
            .col(
                ColumnDef::new(Keypairs::Id)
                    .big_integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(Keypairs::UserId).string_len(64).not_null())
            .col(ColumnDef::new(Keypairs::Name).string_len(255).not_null())
            .col(ColumnDef::new(Keypairs::Kind).string_len(16).not_null())
            .col(
                ColumnDef::new(Keypairs::Fingerprint)
                    .string_len(255)
                    .not_null(),
            )
            .col(ColumnDef::new(Keypairs::PublicKey).text().not_null())
            .col(created)
            .foreign_key(
                &mut ForeignKey::create()
                    .name("fk_keypairs_user")
                    .from(Keypairs::Table, Keypairs::UserId)
                    .to(Users::Table, Users::Id)
                    .on_delete(ForeignKeyAction::Cascade)
                    .on_update(ForeignKeyAction::Restrict)
                    .to_owned(),
            );
        manager.create_table(table.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_keypairs_user_name")
                    .table(Keypairs::Table)
                    .col(Keypairs::UserId)
                    .col(Keypairs::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let cols = [
            ColumnDef::new(Vms::KeyNames).text().null().to_owned(),
            ColumnDef::new(Vms::LockedBy)
                .string_len(16)
                .null()
                .to_owned(),
            ColumnDef::new(Vms::LockedReason).text().null().to_owned(),
        ];
        for mut col in cols {
            manager
                .alter_table(
                    Table::alter()
                        .table(Vms::Table)
                        .add_column(&mut col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Vms::KeyNames, Vms::LockedBy, Vms::LockedReason] {
            manager
                .alter_table(Table::alter().table(Vms::Table).drop_column(col).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Keypairs::Table).if_exists().to_owned())
            .await
    }
}
