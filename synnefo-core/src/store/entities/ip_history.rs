//! `ip_history`: who held which address when.

use sea_orm::entity::prelude::*;

/// A row of `ip_history`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ip_history")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Address.
    pub address: String,
    /// Network.
    pub network_id: String,
    /// Port.
    pub port_id: Option<String>,
    /// Floating IP.
    pub floating_ip_id: Option<String>,
    /// Server.
    pub server_id: Option<String>,
    /// Project.
    pub project_id: Option<String>,
    /// User.
    pub user_id: Option<String>,
    /// From.
    pub allocated: DateTimeUtc,
    /// Until.
    pub released: Option<DateTimeUtc>,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
