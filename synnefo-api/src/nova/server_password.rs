//! Nova's `os-server-password` (`GET` and `DELETE
//! /servers/{id}/os-server-password`).
//!
//! Nova hands out the password a guest agent posted to the metadata
//! service, encrypted with the server's key pair; this cloud has no
//! metadata service, so no guest ever posts one and `GET` answers Nova's
//! "no password": `{"password": ""}` (after checking the server is the
//! caller's: 404 otherwise). The admin password of a create is in the
//! create's answer (`adminPass`) and, for a while, in plain text from
//! Synnefo's `servers/{id}/password` (Cyclades API); `DELETE` (204)
//! forgets that one too, as Nova's clears its own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::Auth;
use crate::state::Shared;

/// `GET /servers/{id}/os-server-password`.
pub async fn show(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.compute.server(&auth.caller(), &id).await?;
    Ok(Json(json!({"password": ""})))
}

/// `DELETE /servers/{id}/os-server-password`: 204.
pub async fn clear(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.compute
        .delete_server_password(&auth.caller(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
