//! `users`: accounts.

use sea_orm::entity::prelude::*;

/// A row of `users`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Opaque id (32 hex chars).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unique login name.
    #[sea_orm(unique)]
    pub name: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// Disabled users cannot authenticate.
    pub enabled: bool,
    /// Operator.
    pub is_admin: bool,
    /// When created.
    pub created: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
