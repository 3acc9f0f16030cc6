//! `instance_actions`: the requests that changed a server.

use sea_orm::entity::prelude::*;

/// A row of `instance_actions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instance_actions")]
pub struct Model {
    /// Row id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The server.
    pub vm_id: i64,
    /// The API request id.
    pub request_id: String,
    /// Nova's action name.
    pub action: String,
    /// Who asked.
    pub user_id: String,
    /// In which project.
    pub project_id: String,
    /// Accepted at.
    pub start_time: DateTimeUtc,
    /// Last change.
    pub updated: DateTimeUtc,
    /// Failure message.
    #[sea_orm(column_type = "Text", nullable)]
    pub message: Option<String>,
    /// The Ganeti job.
    pub job_id: Option<i64>,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
