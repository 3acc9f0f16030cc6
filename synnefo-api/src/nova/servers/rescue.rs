//! Nova's `rescue` and `unrescue` server actions.
//!
//! Bodies as Nova's schemas have them (`{"rescue": null | {"adminPass":
//! "...", "rescue_image_ref": "<uuid>"}}`, `{"unrescue": null}`), answers
//! 200 and 202. The rules are Synnefo's (a stopped server: see
//! `synnefo_core::state::start_rescue`); the server boots the cloud's
//! rescue image (`[ganeti] rescue_image`), a live image with its own login,
//! so no password is set and the answer has no `adminPass` (Nova's answer
//! when it does not hand out passwords); an `adminPass` is validated and
//! not used, a `rescue_image_ref` is refused (400: there is one rescue
//! image). Refusals as Nova words them: 409 "Cannot 'rescue' instance ID
//! while it is in vm_state active" (`InstanceInvalidState`), 409 for a
//! locked server.

use serde_json::Value;
use synnefo_core::ServiceError;
use synnefo_core::error::ActionError;
use synnefo_core::service::compute::Caller;

use super::super::views;
use crate::error::ApiError;
use crate::state::Shared;

/// Checks a `rescue` argument against Nova's schema.
pub(super) fn rescue_arg(arg: &Value) -> Result<(), ApiError> {
    let o = match arg {
        Value::Null => return Ok(()),
        Value::Object(o) => o,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute rescue. Value: {other}. {other} is not of type 'object', 'null'"
            )));
        }
    };
    if let Some(extra) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "adminPass" | "rescue_image_ref"))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute rescue. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    if let Some(p) = o.get("adminPass")
        && !p.is_string()
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute adminPass. Value: {p}. {p} is not of type 'string'"
        )));
    }
    match o.get("rescue_image_ref") {
        None => Ok(()),
        Some(Value::String(r)) if uuid::Uuid::parse_str(r).is_ok() => {
            Err(ApiError::bad_request(format!(
                "Image {r} cannot be used to rescue a server: this cloud boots its own rescue image (omit rescue_image_ref)."
            )))
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute rescue_image_ref. Value: {other}. {other} is not a 'uuid'"
        ))),
    }
}

/// Runs `rescue` or `unrescue` (`name`) for the caller; refusals worded as
/// Nova words them.
pub(super) async fn run(
    app: &Shared,
    caller: &Caller,
    id: &str,
    name: &'static str,
) -> Result<(), ApiError> {
    let done = match name {
        "rescue" => app.compute.rescue(caller, id).await,
        _ => app.compute.unrescue(caller, id).await,
    };
    match done {
        Ok(_) => Ok(()),
        Err(ServiceError::Action(a)) if in_invalid_state(&a) => {
            Err(invalid_state(app, caller, id, name).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// Refusals Nova words as an invalid `vm_state` or `task_state`.
fn in_invalid_state(a: &ActionError) -> bool {
    matches!(
        a,
        ActionError::InvalidState { .. }
            | ActionError::Pending { .. }
            | ActionError::Resizing { .. }
            | ActionError::Rescue { .. }
            | ActionError::BuildInProgress
            | ActionError::Suspended
    )
}

/// Nova's 409 for a request the server's state does not allow: the
/// `vm_state` when it is not the one the request accepts (`stopped` for a
/// rescue, `rescued` for an unrescue), else the `task_state`.
async fn invalid_state(app: &Shared, caller: &Caller, id: &str, name: &str) -> ApiError {
    let vm = match app.compute.server(caller, id).await {
        Ok(vm) => vm,
        Err(e) => return e.into(),
    };
    let (vm_state, task_state, power) = views::nova_states(&vm);
    let wanted = if name == "rescue" {
        "stopped"
    } else {
        "rescued"
    };
    let (attr, state) = match task_state {
        Some(task) if vm_state == wanted => ("task_state", task),
        _ if vm.state.suspended() && vm_state == wanted => ("vm_state", "suspended"),
        // a rescued server that runs: Synnefo unrescues it stopped
        _ if vm_state == wanted && power == 1 => ("power_state", "running"),
        _ => ("vm_state", vm_state),
    };
    ApiError::conflict(format!(
        "Cannot '{name}' instance {} while it is in {attr} {state}",
        vm.id
    ))
}
