//! `quotas`: per-project limits (`NULL` = unlimited).

use sea_orm::entity::prelude::*;

/// A row of `quotas`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "quotas")]
pub struct Model {
    /// The project.
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: String,
    /// Max servers.
    pub servers: Option<i64>,
    /// Max vCPUs.
    pub vcpus: Option<i64>,
    /// Max RAM (MiB).
    pub ram_mib: Option<i64>,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
