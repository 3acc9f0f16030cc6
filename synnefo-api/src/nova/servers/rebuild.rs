//! Nova's `rebuild` server action, and `changePassword`.
//!
//! `{"rebuild": {"imageRef": ..., "adminPass", "name", "metadata",
//! "personality" (before 2.57), "key_name" (from 2.54), "description"
//! (from 2.19, null only: servers here have no description),
//! "OS-DCF:diskConfig", "preserve_ephemeral" (false only)}}`, answered 202
//! with the server (`REBUILD`) and its new `adminPass`, as Nova answers.
//! Refusals as Nova words them: a state that does not allow it is 409
//! "Cannot 'rebuild' instance ID while it is in vm_state/task_state X", an
//! unknown image 400 "Image X could not be found.".
//!
//! `changePassword` is refused with 409: snf-image sets the password only
//! when it writes the disk (create, rebuild); nothing changes the password
//! of a running guest.

use std::collections::BTreeMap;

use serde_json::Value;
use synnefo_core::ServiceError;
use synnefo_core::service::compute::{Caller, RebuildServer};

use super::super::views;
use crate::error::ApiError;
use crate::microversion::Version;
use crate::state::Shared;

fn invalid(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute {what}"))
}

fn string_field(o: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!(
            "{key}. Value: {other}. {other} is not of type 'string'"
        ))),
    }
}

/// The `rebuild` body, checked against Nova's schema for version `v`.
pub(super) fn rebuild_request(arg: &Value, v: Version) -> Result<RebuildServer, ApiError> {
    let Value::Object(o) = arg else {
        return Err(invalid(format!(
            "rebuild. Value: {arg}. {arg} is not of type 'object'"
        )));
    };
    let mut allowed = vec![
        "imageRef",
        "adminPass",
        "name",
        "metadata",
        "OS-DCF:diskConfig",
        "preserve_ephemeral",
        "accessIPv4",
        "accessIPv6",
    ];
    if !v.at_least(57) {
        allowed.push("personality");
    }
    if v.at_least(19) {
        allowed.push("description");
    }
    if v.at_least(54) {
        allowed.push("key_name");
    }
    if let Some(extra) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "rebuild. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let image_ref = match string_field(o, "imageRef")? {
        Some(s) if !s.is_empty() => s,
        Some(_) => return Err(invalid("imageRef. Value: . '' is too short")),
        None => {
            return Err(invalid(format!(
                "rebuild. Value: {arg}. 'imageRef' is a required property"
            )));
        }
    };
    if let Some(dc) = o.get("OS-DCF:diskConfig")
        && !matches!(dc.as_str(), Some("AUTO" | "MANUAL"))
    {
        return Err(invalid(format!(
            "OS-DCF:diskConfig. Value: {dc}. {dc} is not one of ['AUTO', 'MANUAL']"
        )));
    }
    match o.get("preserve_ephemeral") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(ApiError::bad_request(
                "preserve_ephemeral is not supported: servers here have no ephemeral disk",
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "preserve_ephemeral. Value: {other}. {other} is not of type 'boolean'"
            )));
        }
    }
    match o.get("description") {
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "Servers here have no description: only null is accepted",
            ));
        }
    }
    for key in ["accessIPv4", "accessIPv6"] {
        if o.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "{key} cannot be changed by a rebuild here; use PUT /servers/ID"
            )));
        }
    }
    let metadata = match o.get("metadata") {
        None => None,
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    other => {
                        return Err(invalid(format!(
                            "metadata. Value: {other}. {other} is not of type 'string'"
                        )));
                    }
                }
            }
            Some(out)
        }
        Some(other) => {
            return Err(invalid(format!(
                "metadata. Value: {other}. {other} is not of type 'object'"
            )));
        }
    };
    let personality = match o.get("personality") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => super::create::personality_files(items, false)?,
        Some(other) => {
            return Err(invalid(format!(
                "personality. Value: {other}. {other} is not of type 'array'"
            )));
        }
    };
    let key_names = match o.get("key_name") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(other) => {
            return Err(invalid(format!(
                "key_name. Value: {other}. {other} is not of type 'string', 'null'"
            )));
        }
    };
    Ok(RebuildServer {
        image_ref,
        admin_pass: string_field(o, "adminPass")?,
        name: string_field(o, "name")?,
        metadata,
        personality,
        key_names,
    })
}

/// Runs a rebuild; Nova's 409 for a state that does not allow it.
pub(super) async fn run(
    app: &Shared,
    caller: &Caller,
    id: &str,
    req: RebuildServer,
) -> Result<synnefo_core::service::compute::RebuiltServer, ApiError> {
    match app.compute.rebuild(caller, id, req).await {
        Ok(done) => Ok(done),
        Err(ServiceError::Action(a)) if super::resize::in_invalid_state(&a) => {
            let vm = app.compute.server(caller, id).await?;
            let (vm_state, task_state, _) = views::nova_states(&vm);
            let (attr, state) = match task_state {
                Some(task) => ("task_state", task),
                None if vm.state.suspended() => ("vm_state", "suspended"),
                None => ("vm_state", vm_state),
            };
            Err(ApiError::conflict(format!(
                "Cannot 'rebuild' instance {} while it is in {attr} {state}",
                vm.id
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// `changePassword`: the server is looked up first (404 as in Nova), then
/// refused with 409.
pub(super) async fn change_password(
    app: &Shared,
    caller: &Caller,
    id: &str,
    arg: &Value,
) -> Result<(), ApiError> {
    match arg.get("adminPass") {
        Some(Value::String(_)) => {}
        _ => {
            return Err(invalid(format!(
                "changePassword. Value: {arg}. 'adminPass' is a required property"
            )));
        }
    }
    let vm = app.compute.server(caller, id).await?;
    Err(ApiError::conflict(format!(
        "Cannot change the password of instance {}: the image's OS definition (snf-image) sets the password only when it writes the disk; rebuild the server with adminPass instead",
        vm.id
    )))
}
