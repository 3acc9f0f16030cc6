//! `keypairs`: users' key pairs (public halves only).

use sea_orm::entity::prelude::*;

/// A row of `keypairs`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "keypairs")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Owner.
    pub user_id: String,
    /// Name (unique per user).
    pub name: String,
    /// `KeypairType::as_str`.
    pub kind: String,
    /// Nova's fingerprint.
    pub fingerprint: String,
    /// OpenSSH public key line or PEM certificate.
    #[sea_orm(column_type = "Text")]
    pub public_key: String,
    /// Created.
    pub created: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
