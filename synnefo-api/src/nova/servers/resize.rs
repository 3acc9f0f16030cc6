//! Nova's `resize`, `confirmResize` and `revertResize` server actions.
//!
//! Bodies as Nova's schemas have them (`{"resize": {"flavorRef": ...,
//! "OS-DCF:diskConfig": "AUTO"|"MANUAL"}}`, `{"confirmResize": null}`,
//! `{"revertResize": null}`), answers 202, 204 and 202. The rules are
//! Synnefo's (a stopped server; same disk size and template: see
//! `synnefo_core::state::start_resize`), the refusals worded as Nova words
//! them: a state that does not allow the request is 409 "Cannot 'resize'
//! instance ID while it is in vm_state active" (Nova's
//! `InstanceInvalidState`), the same flavor 400 "When resizing, instances
//! must change flavor!", another disk 400 "Server disk was unable to be
//! resized because: ...", an unknown flavor 400 "Flavor X could not be
//! found.", over quota 403 "Quota exceeded for cores: ...".

use serde_json::Value;
use synnefo_core::ServiceError;
use synnefo_core::error::ActionError;
use synnefo_core::service::compute::{Caller, ResizeConfirm};

use super::super::views;
use crate::error::ApiError;
use crate::state::Shared;

/// The `flavorRef` of a `resize` body (a string or an integer, as Nova's
/// `flavor_ref` parameter type), checked against Nova's schema.
pub(super) fn resize_flavor_ref(arg: &Value) -> Result<String, ApiError> {
    let bad = |what: String| {
        ApiError::bad_request(format!("Invalid input for field/attribute resize. {what}"))
    };
    let Value::Object(o) = arg else {
        return Err(bad(format!("Value: {arg}. {arg} is not of type 'object'")));
    };
    if let Some(extra) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "flavorRef" | "OS-DCF:diskConfig"))
    {
        return Err(bad(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    if let Some(dc) = o.get("OS-DCF:diskConfig")
        && !matches!(dc.as_str(), Some("AUTO" | "MANUAL"))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute OS-DCF:diskConfig. Value: {dc}. {dc} is not one of ['AUTO', 'MANUAL']"
        )));
    }
    match o.get("flavorRef") {
        None => Err(bad(format!(
            "Value: {arg}. 'flavorRef' is a required property"
        ))),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute flavorRef. Value: {other}. {other} is not valid under any of the given schemas"
        ))),
    }
}

/// An action whose value Nova's schema requires to be `null`
/// (`unrescue`); `confirmResize` and `revertResize` take any value.
pub(super) fn null_arg(name: &str, arg: &Value) -> Result<(), ApiError> {
    if arg.is_null() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {name}. Value: {arg}. {arg} is not of type 'null'"
        )))
    }
}

/// Runs `resize`, `confirmResize` or `revertResize` (`name`) for the
/// caller; refusals worded as Nova words them.
pub(super) async fn run(
    app: &Shared,
    caller: &Caller,
    id: &str,
    name: &'static str,
    flavor_ref: Option<String>,
) -> Result<(), ApiError> {
    let done = match (name, flavor_ref) {
        ("resize", Some(f)) => app
            .compute
            .resize(caller, id, &f, ResizeConfirm::Owner)
            .await
            .map(|_| ()),
        ("confirmResize", _) => app.compute.confirm_resize(caller, id).await.map(|_| ()),
        ("revertResize", _) => app.compute.revert_resize(caller, id).await.map(|_| ()),
        _ => {
            return Err(ApiError::bad_request(format!(
                "There is no such action: {name}"
            )));
        }
    };
    match done {
        Ok(()) => Ok(()),
        Err(ServiceError::Action(a)) if in_invalid_state(&a) => {
            Err(invalid_state(app, caller, id, name).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// Refusals Nova words as an invalid `vm_state` or `task_state`.
pub(super) fn in_invalid_state(a: &ActionError) -> bool {
    matches!(
        a,
        ActionError::InvalidState { .. }
            | ActionError::Pending { .. }
            | ActionError::Resizing { .. }
            | ActionError::NotResized { .. }
            | ActionError::BuildInProgress
            | ActionError::Suspended
    )
}

/// Nova's 409 for a request the server's state does not allow: the
/// `vm_state` when it is not one the request accepts (`stopped` for a
/// resize, `resized` for a confirm or revert), else the `task_state`.
async fn invalid_state(app: &Shared, caller: &Caller, id: &str, name: &str) -> ApiError {
    let vm = match app.compute.server(caller, id).await {
        Ok(vm) => vm,
        Err(e) => return e.into(),
    };
    let (vm_state, task_state, _) = views::nova_states(&vm);
    let wanted = if name == "resize" {
        "stopped"
    } else {
        "resized"
    };
    let (attr, state) = match task_state {
        Some(task) if vm_state == wanted => ("task_state", task),
        _ if vm.state.suspended() && vm_state == wanted => ("vm_state", "suspended"),
        _ => ("vm_state", vm_state),
    };
    ApiError::conflict(format!(
        "Cannot '{name}' instance {} while it is in {attr} {state}",
        vm.id
    ))
}
