//! `os-instance-actions`: the requests that changed a server, as Nova
//! lists them (`openstack server event list/show`).
//!
//! The history is written by the compute service in the same transaction
//! as the state change each request makes (see `synnefo_core::model::
//! InstanceAction`); this module only renders it. Nova's shapes: the action
//! fields of 2.1, `updated_at` and paging (`limit`, `marker`,
//! `changes-since`) from 2.58, a deleted server's history from 2.21.
//! Events (one per action: the Ganeti job submitted, or its refusal, or the
//! failure of the job once it ended) are
//! shown to operators always and to everyone from 2.51, without a
//! traceback for non-operators, as Nova's policy has it.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use synnefo_core::model::InstanceAction;

use crate::error::ApiError;
use crate::extract::{Auth, Params};
use crate::microversion::Version;
use crate::state::Shared;

/// Longest page (`limit` above it is capped, as Nova caps at its
/// `max_limit`).
const MAX_LIMIT: usize = 1000;

fn action_view(a: &InstanceAction, v: Version) -> Value {
    let mut o = json!({
        "action": a.action,
        "instance_uuid": a.vm.to_string(),
        "message": a.message.as_ref().map(|_| "Error"),
        "project_id": a.project_id,
        "request_id": a.request_id,
        "start_time": iso_micro(&a.start_time),
        "user_id": a.user_id,
    });
    if v.at_least(58) {
        o["updated_at"] = json!(iso_micro(&a.updated));
    }
    o
}

/// Nova's action timestamps (`2018-04-25T01:26:29.000000`).
fn iso_micro(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The action's one event: the Ganeti job it submitted, or the refusal
/// (or the job's failure); for a lock, an unlock or a resize's confirmation
/// (no Ganeti job), the change itself.
fn events(a: &InstanceAction, admin: bool, v: Version) -> Value {
    let needs_job = !matches!(a.action.as_str(), "lock" | "unlock" | "confirmResize");
    let name = if needs_job {
        format!("ganeti_submit_{}", a.action)
    } else {
        format!("synnefo_{}", a.action)
    };
    let (result, traceback) = match &a.message {
        Some(m) => ("Error", Some(m.clone())),
        None if a.job_id.is_some() || !needs_job => ("Success", None),
        None => ("In progress", None),
    };
    let mut e = json!({
        "event": name,
        "start_time": iso_micro(&a.start_time),
        "finish_time": if result == "In progress" {
            Value::Null
        } else {
            json!(iso_micro(&a.updated))
        },
        "result": result,
    });
    if admin {
        e["traceback"] = json!(traceback);
    }
    if v.at_least(62) {
        e["hostId"] = json!("");
        if admin {
            e["host"] = json!("");
        }
    }
    json!([e])
}

/// `GET /servers/{id}/os-instance-actions`.
pub async fn list(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    params: Params,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth.caller();
    let mut actions = app
        .compute
        .instance_actions(&caller, &id, v.at_least(21))
        .await?;
    if v.at_least(58) {
        if let Some(since) = params.get("changes-since") {
            let t = DateTime::parse_from_rfc3339(since)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid input for query parameters changes-since. Value: {since}."
                    ))
                })?
                .with_timezone(&Utc);
            actions.retain(|a| a.updated >= t);
        }
        if let Some(marker) = params.get("marker") {
            let at = actions
                .iter()
                .position(|a| a.request_id == marker)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("Marker {marker} could not be found."))
                })?;
            actions.drain(..=at);
        }
        let limit = params
            .limit()?
            .map_or(MAX_LIMIT, |l| (l as usize).min(MAX_LIMIT));
        actions.truncate(limit);
    }
    Ok(Json(json!({
        "instanceActions": actions.iter().map(|a| action_view(a, v)).collect::<Vec<_>>()
    })))
}

/// `GET /servers/{id}/os-instance-actions/{request_id}`.
pub async fn show(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Path((id, request_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth.caller();
    let a = app
        .compute
        .instance_action(&caller, &id, &request_id, v.at_least(21))
        .await?;
    let mut o = action_view(&a, v);
    if caller.is_admin || v.at_least(51) {
        o["events"] = events(&a, caller.is_admin, v);
    }
    Ok(Json(json!({ "instanceAction": o })))
}
