//! `tokens`: issued API tokens, keyed by the secret's SHA-256 digest.

use sea_orm::entity::prelude::*;

/// A row of `tokens`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tokens")]
pub struct Model {
    /// Hex SHA-256 of the secret.
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    /// Owner.
    pub user_id: String,
    /// Scoped project.
    pub project_id: String,
    /// Issued at.
    pub issued: DateTimeUtc,
    /// Expires at.
    pub expires: DateTimeUtc,
    /// Revoked.
    pub revoked: bool,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
