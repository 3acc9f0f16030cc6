//! `subnets`: address ranges of networks, with their pool's high-water mark.

use sea_orm::entity::prelude::*;

/// A row of `subnets`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subnets")]
pub struct Model {
    /// Id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Network.
    pub network_id: String,
    /// Owner.
    pub project_id: Option<String>,
    /// Name.
    pub name: String,
    /// 4 or 6.
    pub ip_version: i32,
    /// CIDR.
    pub cidr: String,
    /// Gateway.
    pub gateway: Option<String>,
    /// DHCP.
    pub enable_dhcp: bool,
    /// Allocation pools, JSON `[[start, end], ...]`.
    #[sea_orm(column_type = "Text")]
    pub pools: String,
    /// DNS servers, JSON array.
    #[sea_orm(column_type = "Text")]
    pub dns: String,
    /// Addresses in the pools.
    pub pool_size: i64,
    /// High-water mark: every index below was handed out at least once.
    pub pool_next: i64,
    /// Created.
    pub created: DateTimeUtc,
    /// Last changed.
    pub updated: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
