//! `floating_ips`: addresses of external networks owned by projects.

use sea_orm::entity::prelude::*;

/// A row of `floating_ips`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "floating_ips")]
pub struct Model {
    /// Id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Owner.
    pub project_id: String,
    /// External network.
    pub network_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// The address.
    pub address: String,
    /// Associated port.
    pub port_id: Option<String>,
    /// The port's address it stands for.
    pub fixed_ip: Option<String>,
    /// MAC of the NIC carrying it while associated.
    pub mac: Option<String>,
    /// Description.
    pub description: String,
    /// Created.
    pub created: DateTimeUtc,
    /// Last changed.
    pub updated: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
