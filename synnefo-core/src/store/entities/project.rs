//! `projects`: tenants.

use sea_orm::entity::prelude::*;

/// A row of `projects`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "projects")]
pub struct Model {
    /// Opaque id (32 hex chars).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// When created.
    pub created: DateTimeUtc,
    /// Bumped with every change to one of the project's VMs.
    pub vm_generation: i64,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
