//! `vms`: virtual machines, with the state machine's fields flattened.
//!
//! [`crate::state::VmState`] is stored column by column (not as JSON) so the
//! API and reconciliation can filter and index on operstate and deleted,
//! and so that a batch of state updates is one multi-row `UPDATE`.

use sea_orm::entity::prelude::*;

/// A row of `vms`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vms")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Creator.
    pub user_id: String,
    /// Owning project.
    pub project_id: String,
    /// Display name.
    pub name: String,
    /// Flavor.
    pub flavor_id: i64,
    /// Image.
    pub image_id: String,
    /// Ganeti cluster.
    pub backend_id: Option<i64>,
    /// `OperState::as_str`.
    pub operstate: String,
    /// Soft-deleted.
    pub deleted: bool,
    /// Suspended.
    pub suspended: bool,
    /// Pending action (`Action::as_str`).
    pub action: Option<String>,
    /// Job submitted for the pending action.
    pub action_job_id: Option<i64>,
    /// Last reported backend job id.
    pub job_id: Option<i64>,
    /// Its opcode.
    pub job_opcode: Option<String>,
    /// Its status.
    pub job_status: Option<String>,
    /// Its log message.
    #[sea_orm(column_type = "Text", nullable)]
    pub job_log_msg: Option<String>,
    /// `last_event.job_id`.
    pub last_event_job_id: Option<i64>,
    /// `last_event.op_index`.
    pub last_event_op_index: Option<i64>,
    /// `last_event.status_rank`.
    pub last_event_status_rank: Option<i16>,
    /// `last_event.time_us`.
    pub last_event_time_us: Option<i64>,
    /// `state_event.job_id`.
    pub state_event_job_id: Option<i64>,
    /// `state_event.op_index`.
    pub state_event_op_index: Option<i64>,
    /// `state_event.status_rank`.
    pub state_event_status_rank: Option<i16>,
    /// `state_event.time_us`.
    pub state_event_time_us: Option<i64>,
    /// Created.
    pub created: DateTimeUtc,
    /// Last changed.
    pub updated: DateTimeUtc,
    /// Last reconciled.
    pub last_reconciled: Option<DateTimeUtc>,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// `accessIPv4` (canonical text form).
    pub access_ipv4: Option<String>,
    /// `accessIPv6` (canonical text form).
    pub access_ipv6: Option<String>,
    /// Ganeti's error of the failed job on record (JSON of `OpError`).
    #[sea_orm(column_type = "Text", nullable)]
    pub job_error: Option<String>,
    /// `nics_time_us`: event time of the NIC report on record.
    pub nics_time_us: Option<i64>,
    /// Key pair names given at create (JSON array), if any.
    #[sea_orm(column_type = "Text", nullable)]
    pub key_names: Option<String>,
    /// `LockedBy::as_str` while locked; NULL when unlocked.
    pub locked_by: Option<String>,
    /// Why it is locked (Nova 2.73).
    #[sea_orm(column_type = "Text", nullable)]
    pub locked_reason: Option<String>,
    /// `resize.from`: the flavor before a resize on record.
    pub resize_from_flavor_id: Option<i64>,
    /// `resize.to`: the flavor it asked for.
    pub resize_to_flavor_id: Option<i64>,
    /// `ResizeStage::as_str`; NULL without a resize.
    pub resize_stage: Option<String>,
    /// `resize.confirm`.
    pub resize_confirm: Option<bool>,
    /// `resize.job_id`.
    pub resize_job_id: Option<i64>,
    /// `resize.floor`.
    pub resize_floor_job_id: Option<i64>,
    /// `RestartStep::as_str` of `resize.restart`; NULL without a restart.
    pub resize_restart: Option<String>,
    /// `resize.restart.job_id`: the reboot job once recorded.
    pub resize_reboot_job_id: Option<i64>,
    /// `rebuild.image`: the image a rebuild under way writes; NULL without
    /// a rebuild.
    pub rebuild_image_id: Option<String>,
    /// `rebuild.start`.
    pub rebuild_start: Option<bool>,
    /// `rebuild.job_id`.
    pub rebuild_job_id: Option<i64>,
    /// `rebuild.floor`.
    pub rebuild_floor_job_id: Option<i64>,
    /// `RescueStage::as_str`; NULL when not in rescue mode.
    pub rescue_stage: Option<String>,
    /// `rescue.job_id`.
    pub rescue_job_id: Option<i64>,
    /// `rescue.floor`.
    pub rescue_floor_job_id: Option<i64>,
    /// Percent of the image copied while building (Synnefo's
    /// `buildpercentage`).
    pub build_progress: i16,
    /// Nova's `user_data` as given at create (base64), if any.
    #[sea_orm(column_type = "Text", nullable)]
    pub user_data: Option<String>,
}

/// No navigable relations: the store joins explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
