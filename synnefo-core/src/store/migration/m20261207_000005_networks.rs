//! Networks (issue 15): `networks`, `network_backends`, `subnets`,
//! `ports`, `floating_ips`, the address pools (`ip_allocations`,
//! `ip_free`), the address history (`ip_history`) and `counters` (the MAC
//! counter).
//!
//! * `ip_allocations` holds every address held, keyed by
//!   `(subnet_id, address)`: the unique key is the backstop that no two
//!   holders ever share an address, whatever the allocation code does.
//! * `subnets.pool_next` is the pool's high-water mark and `ip_free` the
//!   indexes released below it (see `crate::network`): allocation is an
//!   indexed read, whatever the pool's size.
//! * `ip_history` outlives ports, servers and floating IPs (abuse
//!   reports), so it has no foreign keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Creates the network tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000005_networks"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Networks {
    Table,
    Id,
    Name,
    ProjectId,
    Shared,
    External,
    Flavor,
    Mode,
    Link,
    Status,
    AdminStateUp,
    Created,
    Updated,
}

#[derive(DeriveIden, Clone, Copy)]
enum NetworkBackends {
    Table,
    NetworkId,
    BackendId,
    Created,
}

#[derive(DeriveIden, Clone, Copy)]
enum Backends {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum Subnets {
    Table,
    Id,
    NetworkId,
    ProjectId,
    Name,
    IpVersion,
    Cidr,
    Gateway,
    EnableDhcp,
    Pools,
    Dns,
    PoolSize,
    PoolNext,
    Created,
    Updated,
}

#[derive(DeriveIden, Clone, Copy)]
enum Ports {
    Table,
    Id,
    NetworkId,
    ProjectId,
    Name,
    DeviceId,
    DeviceOwner,
    Mac,
    Status,
    AdminStateUp,
    Created,
    Updated,
}

#[derive(DeriveIden, Clone, Copy)]
enum IpAllocations {
    Table,
    SubnetId,
    Address,
    NetworkId,
    Idx,
    PortId,
    FloatingIpId,
    Created,
}

#[derive(DeriveIden, Clone, Copy)]
enum IpFree {
    Table,
    SubnetId,
    Idx,
}

#[derive(DeriveIden, Clone, Copy)]
enum FloatingIps {
    Table,
    Id,
    ProjectId,
    NetworkId,
    SubnetId,
    Address,
    PortId,
    FixedIp,
    Mac,
    Description,
    Created,
    Updated,
}

#[derive(DeriveIden, Clone, Copy)]
enum IpHistory {
    Table,
    Id,
    Address,
    NetworkId,
    PortId,
    FloatingIpId,
    ServerId,
    ProjectId,
    UserId,
    Allocated,
    Released,
}

#[derive(DeriveIden, Clone, Copy)]
enum Counters {
    Table,
    Name,
    Value,
}

fn table(backend: DbBackend, name: impl IntoIden + 'static) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(name);
    if backend == DbBackend::MySql {
        t.engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
    t
}

fn time(backend: DbBackend, col: impl IntoIden + 'static, null: bool) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    if backend == DbBackend::MySql {
        c.custom(Alias::new("DATETIME(6)"));
    } else {
        c.timestamp_with_time_zone();
    }
    if null {
        c.null();
    } else {
        c.not_null();
    }
    c
}

fn id(col: impl IntoIden + 'static) -> ColumnDef {
    ColumnDef::new(col).string_len(36).not_null().to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoTableRef, impl IntoIden + 'static),
    to: (impl IntoTableRef, impl IntoIden + 'static),
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

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden + 'static,
    cols: &[&str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut i = Index::create();
    i.name(name).table(table);
    for c in cols {
        i.col(Alias::new(*c));
    }
    if unique {
        i.unique();
    }
    manager.create_index(i.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();

        let mut t = table(b, Networks::Table);
        t.col(id(Networks::Id).primary_key())
            .col(ColumnDef::new(Networks::Name).string_len(255).not_null())
            .col(ColumnDef::new(Networks::ProjectId).string_len(64).null())
            .col(ColumnDef::new(Networks::Shared).boolean().not_null())
            .col(ColumnDef::new(Networks::External).boolean().not_null())
            .col(ColumnDef::new(Networks::Flavor).string_len(32).not_null())
            .col(ColumnDef::new(Networks::Mode).string_len(16).not_null())
            .col(ColumnDef::new(Networks::Link).string_len(128).not_null())
            .col(ColumnDef::new(Networks::Status).string_len(16).not_null())
            .col(ColumnDef::new(Networks::AdminStateUp).boolean().not_null())
            .col(time(b, Networks::Created, false))
            .col(time(b, Networks::Updated, false));
        manager.create_table(t).await?;
        index(
            manager,
            "ix_networks_project",
            Networks::Table,
            &["project_id"],
            false,
        )
        .await?;

        let mut t = table(b, NetworkBackends::Table);
        t.col(id(NetworkBackends::NetworkId))
            .col(
                ColumnDef::new(NetworkBackends::BackendId)
                    .big_integer()
                    .not_null(),
            )
            .col(time(b, NetworkBackends::Created, false))
            .primary_key(
                Index::create()
                    .col(NetworkBackends::NetworkId)
                    .col(NetworkBackends::BackendId),
            )
            .foreign_key(&mut fk(
                "fk_network_backends_network",
                (NetworkBackends::Table, NetworkBackends::NetworkId),
                (Networks::Table, Networks::Id),
                ForeignKeyAction::Cascade,
            ))
            .foreign_key(&mut fk(
                "fk_network_backends_backend",
                (NetworkBackends::Table, NetworkBackends::BackendId),
                (Backends::Table, Backends::Id),
                ForeignKeyAction::Cascade,
            ));
        manager.create_table(t).await?;

        let mut t = table(b, Subnets::Table);
        t.col(id(Subnets::Id).primary_key())
            .col(id(Subnets::NetworkId))
            .col(ColumnDef::new(Subnets::ProjectId).string_len(64).null())
            .col(ColumnDef::new(Subnets::Name).string_len(255).not_null())
            .col(ColumnDef::new(Subnets::IpVersion).integer().not_null())
            .col(ColumnDef::new(Subnets::Cidr).string_len(64).not_null())
            .col(ColumnDef::new(Subnets::Gateway).string_len(64).null())
            .col(ColumnDef::new(Subnets::EnableDhcp).boolean().not_null())
            .col(ColumnDef::new(Subnets::Pools).text().not_null())
            .col(ColumnDef::new(Subnets::Dns).text().not_null())
            .col(ColumnDef::new(Subnets::PoolSize).big_integer().not_null())
            .col(ColumnDef::new(Subnets::PoolNext).big_integer().not_null())
            .col(time(b, Subnets::Created, false))
            .col(time(b, Subnets::Updated, false))
            .foreign_key(&mut fk(
                "fk_subnets_network",
                (Subnets::Table, Subnets::NetworkId),
                (Networks::Table, Networks::Id),
                ForeignKeyAction::Cascade,
            ));
        manager.create_table(t).await?;
        index(
            manager,
            "uq_subnets_network_version",
            Subnets::Table,
            &["network_id", "ip_version"],
            true,
        )
        .await?;

        let mut t = table(b, Ports::Table);
        t.col(id(Ports::Id).primary_key())
            .col(id(Ports::NetworkId))
            .col(ColumnDef::new(Ports::ProjectId).string_len(64).null())
            .col(ColumnDef::new(Ports::Name).string_len(255).not_null())
            .col(ColumnDef::new(Ports::DeviceId).string_len(64).not_null())
            .col(ColumnDef::new(Ports::DeviceOwner).string_len(64).not_null())
            .col(ColumnDef::new(Ports::Mac).string_len(17).not_null())
            .col(ColumnDef::new(Ports::Status).string_len(16).not_null())
            .col(ColumnDef::new(Ports::AdminStateUp).boolean().not_null())
            .col(time(b, Ports::Created, false))
            .col(time(b, Ports::Updated, false))
            .foreign_key(&mut fk(
                "fk_ports_network",
                (Ports::Table, Ports::NetworkId),
                (Networks::Table, Networks::Id),
                ForeignKeyAction::Restrict,
            ));
        manager.create_table(t).await?;
        index(manager, "uq_ports_mac", Ports::Table, &["mac"], true).await?;
        index(
            manager,
            "ix_ports_device",
            Ports::Table,
            &["device_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_ports_network",
            Ports::Table,
            &["network_id"],
            false,
        )
        .await?;

        let mut t = table(b, FloatingIps::Table);
        t.col(id(FloatingIps::Id).primary_key())
            .col(
                ColumnDef::new(FloatingIps::ProjectId)
                    .string_len(64)
                    .not_null(),
            )
            .col(id(FloatingIps::NetworkId))
            .col(id(FloatingIps::SubnetId))
            .col(
                ColumnDef::new(FloatingIps::Address)
                    .string_len(64)
                    .not_null(),
            )
            .col(ColumnDef::new(FloatingIps::PortId).string_len(36).null())
            .col(ColumnDef::new(FloatingIps::FixedIp).string_len(64).null())
            .col(ColumnDef::new(FloatingIps::Mac).string_len(17).null())
            .col(
                ColumnDef::new(FloatingIps::Description)
                    .string_len(255)
                    .not_null(),
            )
            .col(time(b, FloatingIps::Created, false))
            .col(time(b, FloatingIps::Updated, false))
            .foreign_key(&mut fk(
                "fk_floating_ips_network",
                (FloatingIps::Table, FloatingIps::NetworkId),
                (Networks::Table, Networks::Id),
                ForeignKeyAction::Restrict,
            ));
        manager.create_table(t).await?;
        index(
            manager,
            "ix_floating_ips_project",
            FloatingIps::Table,
            &["project_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_floating_ips_port",
            FloatingIps::Table,
            &["port_id"],
            false,
        )
        .await?;

        let mut t = table(b, IpAllocations::Table);
        t.col(id(IpAllocations::SubnetId))
            .col(
                ColumnDef::new(IpAllocations::Address)
                    .string_len(64)
                    .not_null(),
            )
            .col(id(IpAllocations::NetworkId))
            .col(ColumnDef::new(IpAllocations::Idx).big_integer().null())
            .col(ColumnDef::new(IpAllocations::PortId).string_len(36).null())
            .col(
                ColumnDef::new(IpAllocations::FloatingIpId)
                    .string_len(36)
                    .null(),
            )
            .col(time(b, IpAllocations::Created, false))
            .primary_key(
                Index::create()
                    .col(IpAllocations::SubnetId)
                    .col(IpAllocations::Address),
            )
            .foreign_key(&mut fk(
                "fk_ip_allocations_subnet",
                (IpAllocations::Table, IpAllocations::SubnetId),
                (Subnets::Table, Subnets::Id),
                ForeignKeyAction::Restrict,
            ));
        manager.create_table(t).await?;
        index(
            manager,
            "ix_ip_allocations_port",
            IpAllocations::Table,
            &["port_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_ip_allocations_fip",
            IpAllocations::Table,
            &["floating_ip_id"],
            false,
        )
        .await?;

        let mut t = table(b, IpFree::Table);
        t.col(id(IpFree::SubnetId))
            .col(ColumnDef::new(IpFree::Idx).big_integer().not_null())
            .primary_key(Index::create().col(IpFree::SubnetId).col(IpFree::Idx))
            .foreign_key(&mut fk(
                "fk_ip_free_subnet",
                (IpFree::Table, IpFree::SubnetId),
                (Subnets::Table, Subnets::Id),
                ForeignKeyAction::Cascade,
            ));
        manager.create_table(t).await?;

        let mut t = table(b, IpHistory::Table);
        t.col(
            ColumnDef::new(IpHistory::Id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(IpHistory::Address).string_len(64).not_null())
        .col(id(IpHistory::NetworkId))
        .col(ColumnDef::new(IpHistory::PortId).string_len(36).null())
        .col(
            ColumnDef::new(IpHistory::FloatingIpId)
                .string_len(36)
                .null(),
        )
        .col(ColumnDef::new(IpHistory::ServerId).string_len(64).null())
        .col(ColumnDef::new(IpHistory::ProjectId).string_len(64).null())
        .col(ColumnDef::new(IpHistory::UserId).string_len(64).null())
        .col(time(b, IpHistory::Allocated, false))
        .col(time(b, IpHistory::Released, true));
        manager.create_table(t).await?;
        index(
            manager,
            "ix_ip_history_address",
            IpHistory::Table,
            &["address"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_ip_history_port",
            IpHistory::Table,
            &["port_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_ip_history_fip",
            IpHistory::Table,
            &["floating_ip_id"],
            false,
        )
        .await?;

        let mut t = table(b, Counters::Table);
        t.col(
            ColumnDef::new(Counters::Name)
                .string_len(32)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(Counters::Value).big_integer().not_null());
        manager.create_table(t).await?;
        let ins = Query::insert()
            .into_table(Counters::Table)
            .columns([Counters::Name, Counters::Value])
            .values_panic(["mac".into(), 0i64.into()])
            .to_owned();
        manager.exec_stmt(ins).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Counters::Table.into_iden(),
            IpHistory::Table.into_iden(),
            IpFree::Table.into_iden(),
            IpAllocations::Table.into_iden(),
            FloatingIps::Table.into_iden(),
            Ports::Table.into_iden(),
            Subnets::Table.into_iden(),
            NetworkBackends::Table.into_iden(),
            Networks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
