//! `ip_allocations`: every address held, unique per subnet.

use sea_orm::entity::prelude::*;

/// A row of `ip_allocations`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ip_allocations")]
pub struct Model {
    /// Subnet.
    #[sea_orm(primary_key, auto_increment = false)]
    pub subnet_id: String,
    /// Address.
    #[sea_orm(primary_key, auto_increment = false)]
    pub address: String,
    /// Network.
    pub network_id: String,
    /// Index in the pool (NULL: outside the pools).
    pub idx: Option<i64>,
    /// Holding port.
    pub port_id: Option<String>,
    /// Holding floating IP.
    pub floating_ip_id: Option<String>,
    /// Since.
    pub created: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
