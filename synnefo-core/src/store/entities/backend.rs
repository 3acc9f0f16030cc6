//! `backends`: Ganeti clusters.

use sea_orm::entity::prelude::*;

/// A row of `backends`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backends")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// RAPI host.
    pub host: String,
    /// RAPI port.
    pub port: i32,
    /// No new VMs.
    pub drained: bool,
    /// Unreachable.
    pub offline: bool,
    /// Created.
    pub created: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
