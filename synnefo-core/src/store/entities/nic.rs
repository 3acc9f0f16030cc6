//! `nics`: a VM's network interfaces as Ganeti reports them.

use sea_orm::entity::prelude::*;

/// A row of `nics`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nics")]
pub struct Model {
    /// The VM.
    #[sea_orm(primary_key, auto_increment = false)]
    pub vm_id: i64,
    /// Position on the VM.
    #[sea_orm(primary_key, auto_increment = false)]
    pub index: i32,
    /// Address.
    pub ip: Option<String>,
    /// MAC.
    pub mac: Option<String>,
    /// Ganeti network.
    pub network: Option<String>,
    /// Link.
    pub link: Option<String>,
    /// Mode.
    pub mode: Option<String>,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
