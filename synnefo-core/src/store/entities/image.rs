//! `images`: OS images; OS parameters and metadata as JSON text.

use sea_orm::entity::prelude::*;

/// A row of `images`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "images")]
pub struct Model {
    /// UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Ganeti OS.
    pub os_type: String,
    /// Ganeti OS parameters, a JSON object of strings.
    #[sea_orm(column_type = "Text")]
    pub osparams: String,
    /// `ACTIVE`, `DELETED`, ...
    pub status: String,
    /// Metadata, a JSON object of strings.
    #[sea_orm(column_type = "Text")]
    pub metadata: String,
    /// Minimum disk (GiB).
    pub min_disk_gib: i32,
    /// Minimum RAM (MiB).
    pub min_ram_mib: i32,
    /// Listed to everyone.
    pub is_public: bool,
    /// Owning project.
    pub owner: Option<String>,
    /// Created.
    pub created: DateTimeUtc,
    /// Updated.
    pub updated: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
