//! `network_backends`: the clusters a network was created on.

use sea_orm::entity::prelude::*;

/// A row of `network_backends`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "network_backends")]
pub struct Model {
    /// Network.
    #[sea_orm(primary_key, auto_increment = false)]
    pub network_id: String,
    /// Cluster.
    #[sea_orm(primary_key, auto_increment = false)]
    pub backend_id: i64,
    /// When it was made there.
    pub created: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
