//! `networks`: networks (issue 15).

use sea_orm::entity::prelude::*;

/// A row of `networks`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "networks")]
pub struct Model {
    /// Id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner (NULL: the operator's).
    pub project_id: Option<String>,
    /// Shared with every project.
    pub shared: bool,
    /// `router:external`.
    pub external: bool,
    /// `NetworkFlavor::as_str`.
    pub flavor: String,
    /// Ganeti mode.
    pub mode: String,
    /// Ganeti link.
    pub link: String,
    /// Its ports' MAC prefix (NULL: the cloud's).
    pub mac_prefix: Option<String>,
    /// `NetworkStatus::as_str`.
    pub status: String,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// Created.
    pub created: DateTimeUtc,
    /// Last changed.
    pub updated: DateTimeUtc,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
