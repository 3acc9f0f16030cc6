//! `vm_diagnostics`: snf-image's messages about a server's build.

use sea_orm::entity::prelude::*;

/// A row of `vm_diagnostics`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vm_diagnostics")]
pub struct Model {
    /// Row id (increasing: newest last).
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The server.
    pub vm_id: i64,
    /// Stored at.
    pub created: DateTimeUtc,
    /// `DiagnosticLevel::as_str`.
    pub level: String,
    /// `image-info`, `image-helper-task-start`, ...
    pub source: String,
    /// The message's event time, microseconds since the epoch.
    pub source_time_us: i64,
    /// The message.
    pub message: String,
    /// Details (standard error lines).
    #[sea_orm(column_type = "Text", nullable)]
    pub details: Option<String>,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
