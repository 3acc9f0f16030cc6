//! The initial schema: identity, catalog, backends, VMs, metadata, NICs.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Creates every table and index of the first release.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260101_000001_initial"
    }
}

/// Length of opaque string ids (user/project ids, image UUIDs).
const ID_LEN: u32 = 64;
/// Length of names and hosts.
const NAME_LEN: u32 = 255;
/// Length of short enum-like strings (operstate, status, action, opcode).
const TAG_LEN: u32 = 64;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    PasswordHash,
    Enabled,
    IsAdmin,
    Created,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    Name,
    Created,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    UserId,
    ProjectId,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Digest,
    UserId,
    ProjectId,
    Issued,
    Expires,
    Revoked,
}

#[derive(DeriveIden)]
enum Quotas {
    Table,
    ProjectId,
    Servers,
    Vcpus,
    RamMib,
}

#[derive(DeriveIden)]
enum Flavors {
    Table,
    Id,
    Name,
    Vcpus,
    RamMib,
    DiskGib,
    DiskTemplate,
    IsPublic,
    Deleted,
}

#[derive(DeriveIden)]
enum Images {
    Table,
    Id,
    Name,
    OsType,
    Osparams,
    Status,
    Metadata,
    MinDiskGib,
    MinRamMib,
    IsPublic,
    Owner,
    Created,
    Updated,
}

#[derive(DeriveIden)]
enum Backends {
    Table,
    Id,
    Name,
    Host,
    Port,
    Drained,
    Offline,
    Created,
}

#[derive(DeriveIden)]
enum Vms {
    Table,
    Id,
    UserId,
    ProjectId,
    Name,
    FlavorId,
    ImageId,
    BackendId,
    Operstate,
    Deleted,
    Suspended,
    Action,
    ActionJobId,
    JobId,
    JobOpcode,
    JobStatus,
    JobLogMsg,
    LastEventJobId,
    LastEventOpIndex,
    LastEventStatusRank,
    LastEventTimeUs,
    StateEventJobId,
    StateEventOpIndex,
    StateEventStatusRank,
    StateEventTimeUs,
    Created,
    Updated,
    LastReconciled,
    Version,
}

#[derive(DeriveIden)]
enum VmMetadata {
    Table,
    VmId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum Nics {
    Table,
    VmId,
    Index,
    Ip,
    Mac,
    Network,
    Link,
    Mode,
}

/// Per-backend column and table helpers.
struct Schema {
    backend: DbBackend,
}

impl Schema {
    /// `CREATE TABLE` with the MySQL table options (InnoDB, utf8mb4, binary
    /// collation) where they apply.
    fn table(&self, name: impl IntoIden + 'static) -> TableCreateStatement {
        let mut t = Table::create();
        t.table(name);
        if self.backend == DbBackend::MySql {
            t.engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        t
    }

    /// A non-null timestamp column with microsecond precision.
    fn ts(&self, col: impl IntoIden + 'static) -> ColumnDef {
        let mut c = self.ts_base(col);
        c.not_null();
        c
    }

    /// A nullable timestamp column with microsecond precision.
    fn ts_null(&self, col: impl IntoIden + 'static) -> ColumnDef {
        let mut c = self.ts_base(col);
        c.null();
        c
    }

    fn ts_base(&self, col: impl IntoIden + 'static) -> ColumnDef {
        let mut c = ColumnDef::new(col);
        if self.backend == DbBackend::MySql {
            c.custom(Alias::new("DATETIME(6)"));
        } else {
            c.timestamp_with_time_zone();
        }
        c
    }
}

fn string(col: impl IntoIden + 'static, len: u32) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.string_len(len).not_null();
    c
}

fn string_null(col: impl IntoIden + 'static, len: u32) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.string_len(len).null();
    c
}

fn boolean(col: impl IntoIden + 'static) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.boolean().not_null();
    c
}

fn int(col: impl IntoIden + 'static) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.integer().not_null();
    c
}

fn bigint_null(col: impl IntoIden + 'static) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.big_integer().null();
    c
}

fn smallint_null(col: impl IntoIden + 'static) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.small_integer().null();
    c
}

fn fk(
    name: &str,
    from: (impl IntoIden + 'static, impl IntoIden + 'static),
    to: (impl IntoIden + 'static, impl IntoIden + 'static),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Restrict)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let s = Schema {
            backend: manager.get_database_backend(),
        };

        manager
            .create_table(
                s.table(Users::Table)
                    .col(string(Users::Id, ID_LEN).primary_key())
                    .col(string(Users::Name, NAME_LEN).unique_key())
                    .col(ColumnDef::new(Users::PasswordHash).text().not_null())
                    .col(boolean(Users::Enabled))
                    .col(boolean(Users::IsAdmin))
                    .col(s.ts(Users::Created))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Projects::Table)
                    .col(string(Projects::Id, ID_LEN).primary_key())
                    .col(string(Projects::Name, NAME_LEN).unique_key())
                    .col(s.ts(Projects::Created))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Memberships::Table)
                    .col(string(Memberships::UserId, ID_LEN))
                    .col(string(Memberships::ProjectId, ID_LEN))
                    .primary_key(
                        Index::create()
                            .col(Memberships::UserId)
                            .col(Memberships::ProjectId),
                    )
                    .foreign_key(&mut fk(
                        "fk_memberships_user",
                        (Memberships::Table, Memberships::UserId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_memberships_project",
                        (Memberships::Table, Memberships::ProjectId),
                        (Projects::Table, Projects::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_memberships_project")
                    .table(Memberships::Table)
                    .col(Memberships::ProjectId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Tokens::Table)
                    .col(string(Tokens::Digest, 128).primary_key())
                    .col(string(Tokens::UserId, ID_LEN))
                    .col(string(Tokens::ProjectId, ID_LEN))
                    .col(s.ts(Tokens::Issued))
                    .col(s.ts(Tokens::Expires))
                    .col(boolean(Tokens::Revoked))
                    .foreign_key(&mut fk(
                        "fk_tokens_user",
                        (Tokens::Table, Tokens::UserId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_tokens_project",
                        (Tokens::Table, Tokens::ProjectId),
                        (Projects::Table, Projects::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_tokens_user")
                    .table(Tokens::Table)
                    .col(Tokens::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_tokens_project")
                    .table(Tokens::Table)
                    .col(Tokens::ProjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_tokens_expires")
                    .table(Tokens::Table)
                    .col(Tokens::Expires)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Quotas::Table)
                    .col(string(Quotas::ProjectId, ID_LEN).primary_key())
                    .col(bigint_null(Quotas::Servers))
                    .col(bigint_null(Quotas::Vcpus))
                    .col(bigint_null(Quotas::RamMib))
                    .foreign_key(&mut fk(
                        "fk_quotas_project",
                        (Quotas::Table, Quotas::ProjectId),
                        (Projects::Table, Projects::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Flavors::Table)
                    .col(
                        ColumnDef::new(Flavors::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(Flavors::Name, NAME_LEN).unique_key())
                    .col(int(Flavors::Vcpus))
                    .col(int(Flavors::RamMib))
                    .col(int(Flavors::DiskGib))
                    .col(string(Flavors::DiskTemplate, TAG_LEN))
                    .col(boolean(Flavors::IsPublic))
                    .col(boolean(Flavors::Deleted))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Images::Table)
                    .col(string(Images::Id, ID_LEN).primary_key())
                    .col(string(Images::Name, NAME_LEN))
                    .col(string(Images::OsType, NAME_LEN))
                    .col(ColumnDef::new(Images::Osparams).text().not_null())
                    .col(string(Images::Status, TAG_LEN))
                    .col(ColumnDef::new(Images::Metadata).text().not_null())
                    .col(int(Images::MinDiskGib))
                    .col(int(Images::MinRamMib))
                    .col(boolean(Images::IsPublic))
                    .col(string_null(Images::Owner, ID_LEN))
                    .col(s.ts(Images::Created))
                    .col(s.ts(Images::Updated))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Backends::Table)
                    .col(
                        ColumnDef::new(Backends::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(Backends::Name, NAME_LEN).unique_key())
                    .col(string(Backends::Host, NAME_LEN))
                    .col(int(Backends::Port))
                    .col(boolean(Backends::Drained))
                    .col(boolean(Backends::Offline))
                    .col(s.ts(Backends::Created))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                s.table(Vms::Table)
                    .col(
                        ColumnDef::new(Vms::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(Vms::UserId, ID_LEN))
                    .col(string(Vms::ProjectId, ID_LEN))
                    .col(string(Vms::Name, NAME_LEN))
                    .col(ColumnDef::new(Vms::FlavorId).big_integer().not_null())
                    .col(string(Vms::ImageId, ID_LEN))
                    .col(bigint_null(Vms::BackendId))
                    .col(string(Vms::Operstate, TAG_LEN))
                    .col(boolean(Vms::Deleted))
                    .col(boolean(Vms::Suspended))
                    .col(string_null(Vms::Action, TAG_LEN))
                    .col(bigint_null(Vms::ActionJobId))
                    .col(bigint_null(Vms::JobId))
                    .col(string_null(Vms::JobOpcode, TAG_LEN))
                    .col(string_null(Vms::JobStatus, TAG_LEN))
                    .col(ColumnDef::new(Vms::JobLogMsg).text().null())
                    .col(bigint_null(Vms::LastEventJobId))
                    .col(bigint_null(Vms::LastEventOpIndex))
                    .col(smallint_null(Vms::LastEventStatusRank))
                    .col(bigint_null(Vms::LastEventTimeUs))
                    .col(bigint_null(Vms::StateEventJobId))
                    .col(bigint_null(Vms::StateEventOpIndex))
                    .col(smallint_null(Vms::StateEventStatusRank))
                    .col(bigint_null(Vms::StateEventTimeUs))
                    .col(s.ts(Vms::Created))
                    .col(s.ts(Vms::Updated))
                    .col(s.ts_null(Vms::LastReconciled))
                    .col(ColumnDef::new(Vms::Version).big_integer().not_null())
                    .foreign_key(&mut fk(
                        "fk_vms_user",
                        (Vms::Table, Vms::UserId),
                        (Users::Table, Users::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_vms_project",
                        (Vms::Table, Vms::ProjectId),
                        (Projects::Table, Projects::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_vms_flavor",
                        (Vms::Table, Vms::FlavorId),
                        (Flavors::Table, Flavors::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_vms_backend",
                        (Vms::Table, Vms::BackendId),
                        (Backends::Table, Backends::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        // servers list of a tenant: WHERE project_id = ? AND deleted = ? ORDER BY id
        manager
            .create_index(
                Index::create()
                    .name("idx_vms_project_deleted_id")
                    .table(Vms::Table)
                    .col(Vms::ProjectId)
                    .col(Vms::Deleted)
                    .col(Vms::Id)
                    .to_owned(),
            )
            .await?;
        // reconciliation per cluster and backend_usage
        manager
            .create_index(
                Index::create()
                    .name("idx_vms_backend_deleted")
                    .table(Vms::Table)
                    .col(Vms::BackendId)
                    .col(Vms::Deleted)
                    .to_owned(),
            )
            .await?;
        // staggered reconciliation: least recently reconciled first
        if s.backend == DbBackend::Postgres {
            // PostgreSQL sorts NULLs last by default; the index must match
            // the query's `NULLS FIRST` to be used for the ordering.
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE INDEX idx_vms_last_reconciled ON vms (last_reconciled ASC NULLS FIRST, id)",
                )
                .await?;
        } else {
            manager
                .create_index(
                    Index::create()
                        .name("idx_vms_last_reconciled")
                        .table(Vms::Table)
                        .col(Vms::LastReconciled)
                        .col(Vms::Id)
                        .to_owned(),
                )
                .await?;
        }
        // changes-since
        manager
            .create_index(
                Index::create()
                    .name("idx_vms_updated")
                    .table(Vms::Table)
                    .col(Vms::Updated)
                    .to_owned(),
            )
            .await?;

        // (vm_id, key) is the primary key: it also serves lookups by vm_id.
        manager
            .create_table(
                s.table(VmMetadata::Table)
                    .col(ColumnDef::new(VmMetadata::VmId).big_integer().not_null())
                    .col(string(VmMetadata::Key, NAME_LEN))
                    .col(ColumnDef::new(VmMetadata::Value).text().not_null())
                    .primary_key(Index::create().col(VmMetadata::VmId).col(VmMetadata::Key))
                    .foreign_key(&mut fk(
                        "fk_vm_metadata_vm",
                        (VmMetadata::Table, VmMetadata::VmId),
                        (Vms::Table, Vms::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        // (vm_id, index) is the primary key: it also serves lookups by vm_id.
        manager
            .create_table(
                s.table(Nics::Table)
                    .col(ColumnDef::new(Nics::VmId).big_integer().not_null())
                    .col(int(Nics::Index))
                    .col(string_null(Nics::Ip, TAG_LEN))
                    .col(string_null(Nics::Mac, TAG_LEN))
                    .col(string_null(Nics::Network, NAME_LEN))
                    .col(string_null(Nics::Link, NAME_LEN))
                    .col(string_null(Nics::Mode, TAG_LEN))
                    .primary_key(Index::create().col(Nics::VmId).col(Nics::Index))
                    .foreign_key(&mut fk(
                        "fk_nics_vm",
                        (Nics::Table, Nics::VmId),
                        (Vms::Table, Vms::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Nics::Table.into_iden(),
            VmMetadata::Table.into_iden(),
            Vms::Table.into_iden(),
            Backends::Table.into_iden(),
            Images::Table.into_iden(),
            Flavors::Table.into_iden(),
            Quotas::Table.into_iden(),
            Tokens::Table.into_iden(),
            Memberships::Table.into_iden(),
            Projects::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
