//! `ports`: servers' NICs as Neutron ports.

use sea_orm::entity::prelude::*;

/// A row of `ports`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ports")]
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
    /// Bound server id, or empty.
    pub device_id: String,
    /// Device owner.
    pub device_owner: String,
    /// MAC (unique).
    pub mac: String,
    /// `PortStatus::as_str`.
    pub status: String,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// Created.
    pub created: DateTimeUtc,
    /// Last changed.
    pub updated: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
