//! `flavors`: hardware templates.

use sea_orm::entity::prelude::*;

/// A row of `flavors`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "flavors")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// vCPUs.
    pub vcpus: i32,
    /// RAM (MiB).
    pub ram_mib: i32,
    /// Disk (GiB).
    pub disk_gib: i32,
    /// Ganeti disk template.
    pub disk_template: String,
    /// Listed to everyone.
    pub is_public: bool,
    /// Hidden from new creates.
    pub deleted: bool,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
