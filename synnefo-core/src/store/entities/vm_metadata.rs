//! `vm_metadata`: user key/values of a VM.

use sea_orm::entity::prelude::*;

/// A row of `vm_metadata`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vm_metadata")]
pub struct Model {
    /// The VM.
    #[sea_orm(primary_key, auto_increment = false)]
    pub vm_id: i64,
    /// Key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Value.
    #[sea_orm(column_type = "Text")]
    pub value: String,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
