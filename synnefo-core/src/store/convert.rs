//! Rows <-> domain types. Every decode is checked: a value that does not
//! fit the domain is [`StoreError::Corrupt`], never a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Timelike, Utc};
use sea_orm::{DbBackend, Value};

use super::entities::{backend, flavor, image, nic, project, token, user, vm};
use crate::error::StoreError;
use crate::ids::{BackendId, FlavorId, JobId, VmId};
use crate::model::{Backend, Flavor, Image, Nic, Project, Token, User, Vm};
use crate::state::{
    Action, BackendJob, EventPosition, JobStatus, OpCode, OpError, OperState, PendingAction,
    Rebuild, Rescue, RescueStage, Resize, ResizeStage, Restart, RestartStep, StoredVmState,
    VmState,
};

/// Longest job log message stored (bytes); longer ones are cut at a char
/// boundary so one chatty Ganeti error cannot fail a dispatcher batch.
pub(crate) const MAX_LOG_MSG: usize = 16 * 1024;

/// `t` truncated to microseconds, the precision every backend stores.
pub(crate) fn trunc_us(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

/// Now, truncated to microseconds.
pub(crate) fn now() -> DateTime<Utc> {
    trunc_us(Utc::now())
}

/// A timestamp as a bound value, truncated to microseconds.
///
/// sqlx sends `DateTime<Utc>` to MySQL as a `TIMESTAMP` parameter, which
/// MariaDB turns into NULL outside 1970..2038; our MySQL columns are
/// `DATETIME(6)` holding UTC, so bind a naive UTC `DATETIME` there.
pub(crate) fn ts(backend: DbBackend, t: DateTime<Utc>) -> Value {
    portable(
        backend,
        Value::ChronoDateTimeUtc(Some(Box::new(trunc_us(t)))),
    )
}

/// `v` as it must be bound on `backend` (see [`ts`]): UTC timestamps become
/// naive UTC `DATETIME`s on MySQL; everything else is unchanged.
pub(crate) fn portable(backend: DbBackend, v: Value) -> Value {
    match v {
        Value::ChronoDateTimeUtc(t) if backend == DbBackend::MySql => {
            Value::ChronoDateTime(t.map(|t| Box::new(trunc_us(*t).naive_utc())))
        }
        Value::ChronoDateTimeUtc(Some(t)) => Value::ChronoDateTimeUtc(Some(Box::new(trunc_us(*t)))),
        other => other,
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn u64_to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Integrity(format!("{what} {v} does not fit a signed 64-bit column"))
    })
}

fn i64_to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative {what} {v}")))
}

pub(crate) fn user(m: user::Model) -> User {
    User {
        id: m.id,
        name: m.name,
        password_hash: m.password_hash,
        enabled: m.enabled,
        is_admin: m.is_admin,
        created: m.created,
    }
}

pub(crate) fn project(m: project::Model) -> Project {
    Project {
        id: m.id,
        name: m.name,
        created: m.created,
    }
}

pub(crate) fn token(m: token::Model) -> Token {
    Token {
        digest: m.digest,
        user_id: m.user_id,
        project_id: m.project_id,
        issued: m.issued,
        expires: m.expires,
        revoked: m.revoked,
    }
}

pub(crate) fn flavor(m: flavor::Model) -> Flavor {
    Flavor {
        id: FlavorId(m.id),
        name: m.name,
        vcpus: m.vcpus,
        ram_mib: m.ram_mib,
        disk_gib: m.disk_gib,
        disk_template: m.disk_template,
        is_public: m.is_public,
        deleted: m.deleted,
    }
}

/// A VM row's access-address columns, parsed.
pub(crate) fn access_ips(
    id: i64,
    v4: Option<String>,
    v6: Option<String>,
) -> Result<crate::model::AccessIps, StoreError> {
    let bad = |col: &str, v: &str| corrupt(format!("vm {id}: {col} {v:?} is not an address"));
    Ok(crate::model::AccessIps {
        v4: v4
            .map(|v| v.parse().map_err(|_| bad("access_ipv4", &v)))
            .transpose()?,
        v6: v6
            .map(|v| v.parse().map_err(|_| bad("access_ipv6", &v)))
            .transpose()?,
    })
}

pub(crate) fn to_json(map: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(map).map_err(|e| StoreError::Integrity(format!("cannot encode map: {e}")))
}

fn from_json(s: &str, what: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("{what}: {e}")))
}

pub(crate) fn image(m: image::Model) -> Result<Image, StoreError> {
    Ok(Image {
        osparams: from_json(&m.osparams, "image osparams")?,
        metadata: from_json(&m.metadata, "image metadata")?,
        id: m.id,
        name: m.name,
        os_type: m.os_type,
        status: m.status,
        min_disk_gib: m.min_disk_gib,
        min_ram_mib: m.min_ram_mib,
        is_public: m.is_public,
        owner: m.owner,
        created: m.created,
        updated: m.updated,
    })
}

pub(crate) fn backend(m: backend::Model) -> Result<Backend, StoreError> {
    Ok(Backend {
        id: BackendId(m.id),
        port: u16::try_from(m.port).map_err(|_| corrupt(format!("backend port {}", m.port)))?,
        name: m.name,
        host: m.host,
        drained: m.drained,
        offline: m.offline,
        created: m.created,
    })
}

pub(crate) fn nic(m: nic::Model) -> Nic {
    Nic {
        index: m.index,
        ip: m.ip,
        mac: m.mac,
        network: m.network,
        link: m.link,
        mode: m.mode,
    }
}

pub(crate) fn nic_row(vm_id: VmId, n: &Nic) -> nic::ActiveModel {
    use sea_orm::ActiveValue::Set;
    nic::ActiveModel {
        vm_id: Set(vm_id.0),
        index: Set(n.index),
        ip: Set(n.ip.clone()),
        mac: Set(n.mac.clone()),
        network: Set(n.network.clone()),
        link: Set(n.link.clone()),
        mode: Set(n.mode.clone()),
    }
}

fn position(
    job: Option<i64>,
    op: Option<i64>,
    rank: Option<i16>,
    time: Option<i64>,
    what: &str,
) -> Result<Option<EventPosition>, StoreError> {
    match (job, op, rank, time) {
        (None, None, None, None) => Ok(None),
        (Some(job), Some(op), Some(rank), Some(time_us)) => Ok(Some(EventPosition {
            job_id: i64_to_u64(job, what)?,
            op_index: u32::try_from(op).map_err(|_| corrupt(format!("{what} op index {op}")))?,
            status_rank: u8::try_from(rank)
                .map_err(|_| corrupt(format!("{what} status rank {rank}")))?,
            time_us,
        })),
        _ => Err(corrupt(format!("{what}: partially NULL"))),
    }
}

/// The VM state stored in a row.
pub(crate) fn vm_state(m: &vm::Model) -> Result<VmState, StoreError> {
    let operstate = OperState::from_str(&m.operstate).map_err(corrupt)?;
    let action = match &m.action {
        None => None,
        Some(a) => Some(PendingAction {
            action: Action::parse(a).ok_or_else(|| corrupt(format!("unknown action {a:?}")))?,
            job_id: m
                .action_job_id
                .map(|j| i64_to_u64(j, "action job id").map(JobId))
                .transpose()?,
        }),
    };
    let job = match (&m.job_id, &m.job_opcode, &m.job_status) {
        (None, None, None) => None,
        (id, Some(opcode), Some(status)) => Some(BackendJob {
            // A refused create has no job id: NULL, or 0 in rows written
            // when one was required (Ganeti numbers its jobs from 1).
            job_id: match id {
                None | Some(0) => None,
                Some(id) => Some(JobId(i64_to_u64(*id, "job id")?)),
            },
            opcode: OpCode::from_str(opcode).map_err(corrupt)?,
            status: JobStatus::from_str(status).map_err(corrupt)?,
            log_msg: m.job_log_msg.clone(),
            error: match &m.job_error {
                Some(j) => Some(
                    serde_json::from_str(j)
                        .map_err(|e| corrupt(format!("vm {}: job error {e}", m.id)))?,
                ),
                None => None,
            },
        }),
        _ => {
            return Err(corrupt(format!("vm {}: job columns partially NULL", m.id)));
        }
    };
    let job_of = |v: Option<i64>, what: &str| -> Result<Option<JobId>, StoreError> {
        v.map(|j| i64_to_u64(j, what).map(JobId)).transpose()
    };
    let resize = match (
        &m.resize_stage,
        m.resize_from_flavor_id,
        m.resize_to_flavor_id,
        m.resize_confirm,
    ) {
        (None, None, None, None) => None,
        (Some(stage), Some(from), Some(to), Some(confirm)) => Some(Resize {
            from: FlavorId(from),
            to: FlavorId(to),
            stage: ResizeStage::parse(stage)
                .ok_or_else(|| corrupt(format!("vm {}: resize stage {stage:?}", m.id)))?,
            confirm,
            job_id: job_of(m.resize_job_id, "resize job id")?,
            floor: job_of(m.resize_floor_job_id, "resize floor job id")?,
            restart: match (&m.resize_restart, m.resize_reboot_job_id) {
                (None, None) => None,
                (Some(step), job) => Some(Restart {
                    job_id: job_of(job, "resize reboot job id")?,
                    step: RestartStep::parse(step)
                        .ok_or_else(|| corrupt(format!("vm {}: resize restart {step:?}", m.id)))?,
                }),
                (None, Some(_)) => {
                    return Err(corrupt(format!(
                        "vm {}: a resize reboot job without a restart",
                        m.id
                    )));
                }
            },
        }),
        _ => {
            return Err(corrupt(format!(
                "vm {}: resize columns partially NULL",
                m.id
            )));
        }
    };
    let rebuild = match (&m.rebuild_image_id, m.rebuild_start) {
        (None, None) => None,
        (Some(image), Some(start)) => Some(Rebuild {
            image: image.clone(),
            start,
            job_id: job_of(m.rebuild_job_id, "rebuild job id")?,
            floor: job_of(m.rebuild_floor_job_id, "rebuild floor job id")?,
        }),
        _ => {
            return Err(corrupt(format!(
                "vm {}: rebuild columns partially NULL",
                m.id
            )));
        }
    };
    let rescue = match &m.rescue_stage {
        None if m.rescue_job_id.is_none() && m.rescue_floor_job_id.is_none() => None,
        None => {
            return Err(corrupt(format!(
                "vm {}: rescue columns without a stage",
                m.id
            )));
        }
        Some(stage) => Some(Rescue {
            stage: RescueStage::parse(stage)
                .ok_or_else(|| corrupt(format!("vm {}: rescue stage {stage:?}", m.id)))?,
            job_id: job_of(m.rescue_job_id, "rescue job id")?,
            floor: job_of(m.rescue_floor_job_id, "rescue floor job id")?,
        }),
    };
    Ok(VmState::from_stored(StoredVmState {
        operstate,
        deleted: m.deleted,
        suspended: m.suspended,
        action,
        job,
        last_event: position(
            m.last_event_job_id,
            m.last_event_op_index,
            m.last_event_status_rank,
            m.last_event_time_us,
            "last_event",
        )?,
        state_event: position(
            m.state_event_job_id,
            m.state_event_op_index,
            m.state_event_status_rank,
            m.state_event_time_us,
            "state_event",
        )?,
        nics_time_us: m.nics_time_us,
        resize,
        rebuild,
        rescue,
    }))
}

/// A row and its metadata as a [`Vm`].
pub(crate) fn vm(m: vm::Model, metadata: BTreeMap<String, String>) -> Result<Vm, StoreError> {
    Ok(Vm {
        state: vm_state(&m)?,
        id: VmId(m.id),
        user_id: m.user_id,
        project_id: m.project_id,
        name: m.name,
        flavor_id: FlavorId(m.flavor_id),
        image_id: m.image_id,
        backend_id: m.backend_id.map(BackendId),
        metadata,
        created: m.created,
        updated: m.updated,
        last_reconciled: m.last_reconciled,
        version: m.version,
    })
}

/// How many `vms` columns hold a [`VmState`].
pub(crate) const STATE_COLUMN_COUNT: usize = 34;

/// The `vms` columns that hold [`VmState`], in the order of [`StateRow::values`].
pub(crate) const STATE_COLUMNS: [&str; STATE_COLUMN_COUNT] = [
    "operstate",
    "deleted",
    "suspended",
    "action",
    "action_job_id",
    "job_id",
    "job_opcode",
    "job_status",
    "job_log_msg",
    "last_event_job_id",
    "last_event_op_index",
    "last_event_status_rank",
    "last_event_time_us",
    "state_event_job_id",
    "state_event_op_index",
    "state_event_status_rank",
    "state_event_time_us",
    "job_error",
    "nics_time_us",
    "resize_from_flavor_id",
    "resize_to_flavor_id",
    "resize_stage",
    "resize_confirm",
    "resize_job_id",
    "resize_floor_job_id",
    "resize_restart",
    "resize_reboot_job_id",
    "rebuild_image_id",
    "rebuild_start",
    "rebuild_job_id",
    "rebuild_floor_job_id",
    "rescue_stage",
    "rescue_job_id",
    "rescue_floor_job_id",
];

/// [`VmState`] flattened into the `vms` columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateRow {
    pub operstate: String,
    pub deleted: bool,
    pub suspended: bool,
    pub action: Option<String>,
    pub action_job_id: Option<i64>,
    pub job_id: Option<i64>,
    pub job_opcode: Option<String>,
    pub job_status: Option<String>,
    pub job_log_msg: Option<String>,
    pub last_event: [Option<i64>; 4],
    pub state_event: [Option<i64>; 4],
    pub job_error: Option<String>,
    pub nics_time_us: Option<i64>,
    /// `from`, `to`, `job_id`, `floor` of the resize (all NULL without one).
    pub resize_ids: [Option<i64>; 4],
    pub resize_stage: Option<String>,
    pub resize_confirm: Option<bool>,
    /// The restart's step and reboot job (NULL without one).
    pub resize_restart: Option<String>,
    pub resize_reboot_job_id: Option<i64>,
    pub rebuild_image_id: Option<String>,
    pub rebuild_start: Option<bool>,
    /// `job_id`, `floor` of the rebuild (NULL without one).
    pub rebuild_jobs: [Option<i64>; 2],
    pub rescue_stage: Option<String>,
    /// `job_id`, `floor` of the rescue (NULL without one).
    pub rescue_ids: [Option<i64>; 2],
}

fn position_columns(p: Option<EventPosition>, what: &str) -> Result<[Option<i64>; 4], StoreError> {
    Ok(match p {
        None => [None; 4],
        Some(p) => [
            Some(u64_to_i64(p.job_id, what)?),
            Some(i64::from(p.op_index)),
            Some(i64::from(p.status_rank)),
            Some(p.time_us),
        ],
    })
}

fn truncate_log(s: &str) -> String {
    if s.len() <= MAX_LOG_MSG {
        return s.to_string();
    }
    let mut end = MAX_LOG_MSG;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn opt_string(s: Option<String>) -> Value {
    Value::String(s.map(Box::new))
}

fn rank_value(r: Option<i64>) -> Value {
    // ranks are 0..=4 (`JobStatus::rank`), so the narrowing cannot fail
    Value::SmallInt(r.and_then(|r| i16::try_from(r).ok()))
}

impl StateRow {
    /// Flattens a state; job ids that do not fit `BIGINT` are refused.
    pub(crate) fn new(state: &VmState) -> Result<StateRow, StoreError> {
        let s = state.to_stored();
        let job_id = match s.job.as_ref().and_then(|j| j.job_id) {
            Some(j) => Some(u64_to_i64(j.0, "job id")?),
            None => None,
        };
        let action_job_id = match s.action.and_then(|a| a.job_id) {
            Some(j) => Some(u64_to_i64(j.0, "action job id")?),
            None => None,
        };
        Ok(StateRow {
            operstate: s.operstate.as_str().to_string(),
            deleted: s.deleted,
            suspended: s.suspended,
            action: s.action.map(|a| a.action.as_str().to_string()),
            action_job_id,
            job_id,
            job_opcode: s.job.as_ref().map(|j| j.opcode.as_str().to_string()),
            job_status: s.job.as_ref().map(|j| j.status.as_str().to_string()),
            job_log_msg: s
                .job
                .as_ref()
                .and_then(|j| j.log_msg.as_deref())
                .map(truncate_log),
            last_event: position_columns(s.last_event, "last_event job id")?,
            state_event: position_columns(s.state_event, "state_event job id")?,
            job_error: match s.job.as_ref().and_then(|j| j.error.as_ref()) {
                // the message bounded like the log line
                Some(e) => Some(
                    serde_json::to_string(&OpError {
                        message: truncate_log(&e.message),
                        class: truncate_log(&e.class),
                        code: e.code.clone(),
                    })
                    .map_err(|e| StoreError::Integrity(format!("job error: {e}")))?,
                ),
                None => None,
            },
            nics_time_us: s.nics_time_us,
            resize_ids: match s.resize {
                None => [None; 4],
                Some(r) => [
                    Some(r.from.0),
                    Some(r.to.0),
                    r.job_id
                        .map(|j| u64_to_i64(j.0, "resize job id"))
                        .transpose()?,
                    r.floor
                        .map(|j| u64_to_i64(j.0, "resize floor job id"))
                        .transpose()?,
                ],
            },
            resize_stage: s.resize.map(|r| r.stage.as_str().to_string()),
            resize_confirm: s.resize.map(|r| r.confirm),
            resize_restart: s
                .resize
                .and_then(|r| r.restart)
                .map(|x| x.step.as_str().to_string()),
            resize_reboot_job_id: s
                .resize
                .and_then(|r| r.restart)
                .and_then(|x| x.job_id)
                .map(|j| u64_to_i64(j.0, "resize reboot job id"))
                .transpose()?,
            rebuild_image_id: s.rebuild.as_ref().map(|r| r.image.clone()),
            rebuild_start: s.rebuild.as_ref().map(|r| r.start),
            rebuild_jobs: match &s.rebuild {
                None => [None; 2],
                Some(r) => [
                    r.job_id
                        .map(|j| u64_to_i64(j.0, "rebuild job id"))
                        .transpose()?,
                    r.floor
                        .map(|j| u64_to_i64(j.0, "rebuild floor job id"))
                        .transpose()?,
                ],
            },
            rescue_stage: s.rescue.map(|r| r.stage.as_str().to_string()),
            rescue_ids: match s.rescue {
                None => [None; 2],
                Some(r) => [
                    r.job_id
                        .map(|j| u64_to_i64(j.0, "rescue job id"))
                        .transpose()?,
                    r.floor
                        .map(|j| u64_to_i64(j.0, "rescue floor job id"))
                        .transpose()?,
                ],
            },
        })
    }

    /// The column values, in the order of [`STATE_COLUMNS`].
    pub(crate) fn values(self) -> [Value; STATE_COLUMN_COUNT] {
        let [le0, le1, le2, le3] = self.last_event;
        let [se0, se1, se2, se3] = self.state_event;
        let [rfrom, rto, rjob, rfloor] = self.resize_ids;
        let [bjob, bfloor] = self.rebuild_jobs;
        let [qjob, qfloor] = self.rescue_ids;
        [
            Value::String(Some(Box::new(self.operstate))),
            Value::Bool(Some(self.deleted)),
            Value::Bool(Some(self.suspended)),
            opt_string(self.action),
            Value::BigInt(self.action_job_id),
            Value::BigInt(self.job_id),
            opt_string(self.job_opcode),
            opt_string(self.job_status),
            opt_string(self.job_log_msg),
            Value::BigInt(le0),
            Value::BigInt(le1),
            rank_value(le2),
            Value::BigInt(le3),
            Value::BigInt(se0),
            Value::BigInt(se1),
            rank_value(se2),
            Value::BigInt(se3),
            opt_string(self.job_error),
            Value::BigInt(self.nics_time_us),
            Value::BigInt(rfrom),
            Value::BigInt(rto),
            opt_string(self.resize_stage),
            Value::Bool(self.resize_confirm),
            Value::BigInt(rjob),
            Value::BigInt(rfloor),
            opt_string(self.resize_restart),
            Value::BigInt(self.resize_reboot_job_id),
            opt_string(self.rebuild_image_id),
            Value::Bool(self.rebuild_start),
            Value::BigInt(bjob),
            Value::BigInt(bfloor),
            opt_string(self.rescue_stage),
            Value::BigInt(qjob),
            Value::BigInt(qfloor),
        ]
    }

    /// A new `vms` row in this state.
    pub(crate) fn into_active_model(self, am: &mut vm::ActiveModel) {
        use sea_orm::ActiveValue::Set;
        let [le0, le1, le2, le3] = self.last_event;
        let [se0, se1, se2, se3] = self.state_event;
        am.operstate = Set(self.operstate);
        am.deleted = Set(self.deleted);
        am.suspended = Set(self.suspended);
        am.action = Set(self.action);
        am.action_job_id = Set(self.action_job_id);
        am.job_id = Set(self.job_id);
        am.job_opcode = Set(self.job_opcode);
        am.job_status = Set(self.job_status);
        am.job_log_msg = Set(self.job_log_msg);
        am.last_event_job_id = Set(le0);
        am.last_event_op_index = Set(le1);
        am.last_event_status_rank = Set(le2.and_then(|r| i16::try_from(r).ok()));
        am.last_event_time_us = Set(le3);
        am.state_event_job_id = Set(se0);
        am.state_event_op_index = Set(se1);
        am.state_event_status_rank = Set(se2.and_then(|r| i16::try_from(r).ok()));
        am.state_event_time_us = Set(se3);
        am.job_error = Set(self.job_error);
        am.nics_time_us = Set(self.nics_time_us);
        let [rfrom, rto, rjob, rfloor] = self.resize_ids;
        am.resize_from_flavor_id = Set(rfrom);
        am.resize_to_flavor_id = Set(rto);
        am.resize_stage = Set(self.resize_stage);
        am.resize_confirm = Set(self.resize_confirm);
        am.resize_job_id = Set(rjob);
        am.resize_floor_job_id = Set(rfloor);
        am.resize_restart = Set(self.resize_restart);
        am.resize_reboot_job_id = Set(self.resize_reboot_job_id);
        let [bjob, bfloor] = self.rebuild_jobs;
        am.rebuild_image_id = Set(self.rebuild_image_id);
        am.rebuild_start = Set(self.rebuild_start);
        am.rebuild_job_id = Set(bjob);
        am.rebuild_floor_job_id = Set(bfloor);
        let [qjob, qfloor] = self.rescue_ids;
        am.rescue_stage = Set(self.rescue_stage);
        am.rescue_job_id = Set(qjob);
        am.rescue_floor_job_id = Set(qfloor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s` written to a row's columns and read back.
    fn through_columns(s: &VmState) -> vm::Model {
        let row = StateRow::new(s).unwrap();
        assert_eq!(row.clone().values().len(), STATE_COLUMNS.len());
        let mut am = <vm::ActiveModel as sea_orm::ActiveModelTrait>::default();
        row.into_active_model(&mut am);
        vm::Model {
            id: 1,
            user_id: "u".into(),
            project_id: "p".into(),
            name: "n".into(),
            flavor_id: 1,
            image_id: "i".into(),
            backend_id: None,
            operstate: am.operstate.unwrap(),
            deleted: am.deleted.unwrap(),
            suspended: am.suspended.unwrap(),
            action: am.action.unwrap(),
            action_job_id: am.action_job_id.unwrap(),
            job_id: am.job_id.unwrap(),
            job_opcode: am.job_opcode.unwrap(),
            job_status: am.job_status.unwrap(),
            job_log_msg: am.job_log_msg.unwrap(),
            last_event_job_id: am.last_event_job_id.unwrap(),
            last_event_op_index: am.last_event_op_index.unwrap(),
            last_event_status_rank: am.last_event_status_rank.unwrap(),
            last_event_time_us: am.last_event_time_us.unwrap(),
            state_event_job_id: am.state_event_job_id.unwrap(),
            state_event_op_index: am.state_event_op_index.unwrap(),
            state_event_status_rank: am.state_event_status_rank.unwrap(),
            state_event_time_us: am.state_event_time_us.unwrap(),
            created: now(),
            updated: now(),
            last_reconciled: None,
            version: 1,
            access_ipv4: None,
            access_ipv6: None,
            job_error: am.job_error.unwrap(),
            nics_time_us: am.nics_time_us.unwrap(),
            key_names: None,
            locked_by: None,
            locked_reason: None,
            resize_from_flavor_id: am.resize_from_flavor_id.unwrap(),
            resize_to_flavor_id: am.resize_to_flavor_id.unwrap(),
            resize_stage: am.resize_stage.unwrap(),
            resize_confirm: am.resize_confirm.unwrap(),
            resize_restart: am.resize_restart.unwrap(),
            resize_reboot_job_id: am.resize_reboot_job_id.unwrap(),
            resize_job_id: am.resize_job_id.unwrap(),
            resize_floor_job_id: am.resize_floor_job_id.unwrap(),
            rebuild_image_id: am.rebuild_image_id.unwrap(),
            rebuild_start: am.rebuild_start.unwrap(),
            rebuild_job_id: am.rebuild_job_id.unwrap(),
            rebuild_floor_job_id: am.rebuild_floor_job_id.unwrap(),
            rescue_stage: am.rescue_stage.unwrap(),
            rescue_job_id: am.rescue_job_id.unwrap(),
            rescue_floor_job_id: am.rescue_floor_job_id.unwrap(),
            build_progress: 0,
            user_data: None,
        }
    }

    #[test]
    fn state_round_trips_through_columns() {
        let mut s = VmState::new_build().to_stored();
        s.action = Some(PendingAction {
            action: Action::Create,
            job_id: Some(JobId(7)),
        });
        s.job = Some(BackendJob {
            job_id: Some(JobId(7)),
            opcode: OpCode::InstanceCreate,
            status: JobStatus::Error,
            log_msg: Some("* creating instance disks...".into()),
            error: OpError::from_result(&serde_json::json!([
                "OpPrereqError",
                ["Instance 'snf-1' not known", "unknown_entity"]
            ])),
        });
        assert!(s.job.as_ref().unwrap().error.is_some());
        s.last_event = Some(EventPosition {
            job_id: 7,
            op_index: 2,
            status_rank: 2,
            time_us: 99,
        });
        s.nics_time_us = Some(98);
        let plain = VmState::from_stored(s.clone());
        assert_eq!(vm_state(&through_columns(&plain)).unwrap(), plain);
        // Every resize stage, with and without its job and floor.
        let restarts =
            std::iter::once(None).chain(RestartStep::ALL.into_iter().flat_map(|step| {
                [None, Some(JobId(22))].map(|job_id| Some(Restart { job_id, step }))
            }));
        for restart in restarts {
            for stage in ResizeStage::ALL {
                for (job_id, floor) in [(None, None), (Some(JobId(21)), Some(JobId(14)))] {
                    s.resize = Some(Resize {
                        from: FlavorId(1),
                        to: FlavorId(3),
                        stage,
                        confirm: stage != ResizeStage::Resizing,
                        job_id,
                        floor,
                        restart,
                    });
                    let with = VmState::from_stored(s.clone());
                    assert_eq!(vm_state(&through_columns(&with)).unwrap(), with);
                }
            }
        }
        // Every rescue stage, with and without its job and floor.
        for stage in RescueStage::ALL {
            for (job_id, floor) in [(None, None), (Some(JobId(28)), Some(JobId(21)))] {
                let mut r = s.clone();
                r.rescue = Some(Rescue {
                    stage,
                    job_id,
                    floor,
                });
                let with = VmState::from_stored(r);
                assert_eq!(vm_state(&through_columns(&with)).unwrap(), with);
            }
        }
        // A rescue job without its stage is corrupt.
        let mut stray = through_columns(&VmState::from_stored(s.clone()));
        stray.rescue_job_id = Some(28);
        assert!(matches!(vm_state(&stray), Err(StoreError::Corrupt(_))));
        // A resize half written is corrupt, never half read.
        let mut half = through_columns(&VmState::from_stored(s));
        half.resize_confirm = None;
        assert!(matches!(vm_state(&half), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_refused_create_has_no_job_id() {
        let s = crate::state::create_refused(&VmState::new_build(), "no space".into()).unwrap();
        let m = through_columns(&s);
        assert_eq!(m.job_id, None);
        assert_eq!(m.job_opcode.as_deref(), Some("OP_INSTANCE_CREATE"));
        let back = vm_state(&m).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.job().unwrap().job_id, None);
        // rows written before job ids became optional recorded 0
        let legacy = vm::Model {
            job_id: Some(0),
            ..m
        };
        assert_eq!(vm_state(&legacy).unwrap(), s);
    }

    #[test]
    fn oversized_job_ids_are_refused_not_wrapped() {
        let mut s = VmState::new_build().to_stored();
        s.last_event = Some(EventPosition {
            job_id: u64::MAX,
            op_index: 0,
            status_rank: 0,
            time_us: 0,
        });
        let s = VmState::from_stored(s);
        assert!(matches!(StateRow::new(&s), Err(StoreError::Integrity(_))));
    }

    #[test]
    fn long_log_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_LOG_MSG);
        let t = truncate_log(&s);
        assert!(t.len() <= MAX_LOG_MSG);
        assert!(s.starts_with(&t));
    }

    #[test]
    fn timestamps_are_truncated_to_microseconds() {
        let t = DateTime::from_timestamp(1, 123_456_789).unwrap();
        assert_eq!(trunc_us(t).nanosecond(), 123_456_000);
    }
}
