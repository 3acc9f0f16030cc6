//! Astakos, as astakosclient 0.19 (kamaki 0.16's identity client) reads
//! it: the v2.0 token call with its service catalog, and the account API
//! at `/account/v1.0` (quotas, resources, projects, user catalogs).
//!
//! * `POST /identity/v2.0/tokens`: `{"auth":{"token":{"id":T}}}` (kamaki,
//!   on every command) or `passwordCredentials` (optionally with
//!   `tenantName`/`tenantId`) answers `{"access": {token, user,
//!   serviceCatalog}}`; an empty body answers the catalog alone (Astakos'
//!   public mode, astakosclient's `get_endpoints`). astakosclient finds the
//!   account API as the `astakos_account` service with an endpoint of
//!   `versionId` `v1.0`, and reads `publicURL` and `SNF:uiURL` from that
//!   *endpoint*; every endpoint here carries both.
//! * `GET /account/v1.0/quotas`: `{project_id: {resource: {limit, usage,
//!   pending, project_limit, project_usage, project_pending}}}` for the
//!   caller's projects ([`synnefo_core::service::account`] says how each
//!   number is computed).
//! * `GET /account/v1.0/resources`: the accounted resources (no token
//!   needed, as in Astakos).
//! * `GET /account/v1.0/projects[?name=&state=&owner=&mode=]` and
//!   `GET /account/v1.0/projects/{id}`: the caller's projects.
//! * `POST /account/v1.0/user_catalogs`: `{"uuids": [...]}` /
//!   `{"displaynames": [...]}` to `{"uuid_catalog", "displayname_catalog"}`
//!   for users who share a project with the caller.
//!
//! Everything else Astakos serves under `/account/v1.0` (project
//! applications and actions, memberships, commissions, service calls,
//! feedback) is a 404 naming what is served.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use synnefo_core::service::account::{
    Account, Holding, PRACTICALLY_INFINITE, ProjectFilter, ProjectInfo, ProjectMode,
};
use synnefo_core::service::identity::{Authenticated, ProjectSelector, UserSelector};

use crate::error::ApiError;
use crate::extract::{Auth, Params, decode};
use crate::nova::views::iso;
use crate::state::Shared;

/// The account API's path.
pub const ACCOUNT: &str = "/account/v1.0";

/// Routes of Astakos' identity and account services.
pub fn routes() -> Router<Shared> {
    let mut r = Router::new();
    let both = |r: Router<Shared>, path: &str, m: MethodRouter<Shared>| {
        r.route(path, m.clone()).route(&format!("{path}/"), m)
    };
    r = both(r, "/identity/v2.0/tokens", post(tokens));
    r = both(r, &format!("{ACCOUNT}/quotas"), get(quotas));
    r = both(r, &format!("{ACCOUNT}/resources"), get(resources));
    r = both(r, &format!("{ACCOUNT}/projects"), get(projects));
    r = both(r, &format!("{ACCOUNT}/projects/{{id}}"), get(project));
    r = both(r, &format!("{ACCOUNT}/user_catalogs"), post(user_catalogs));
    r = both(
        r,
        &format!("{ACCOUNT}/projects/memberships"),
        any(unsupported),
    );
    r.route(ACCOUNT, any(unsupported))
        .route(&format!("{ACCOUNT}/"), any(unsupported))
        .route(&format!("{ACCOUNT}/{{*rest}}"), any(unsupported))
}

async fn unsupported() -> ApiError {
    ApiError::not_found(
        "This cloud's account API serves quotas, resources, projects (list and show) and \
         user_catalogs; project applications, memberships, commissions and service calls \
         are not supported (an operator manages projects with `synnefo admin`).",
    )
}

fn account(app: &Shared) -> Account {
    Account::new(app.compute.store().clone())
}

// ---------------------------------------------------------------- tokens

/// Astakos token request.
#[derive(Debug, Deserialize)]
pub struct TokensRequest {
    auth: TokensAuth,
}

/// `auth`.
#[derive(Debug, Deserialize)]
pub struct TokensAuth {
    #[serde(default)]
    token: Option<TokenId>,
    #[serde(rename = "passwordCredentials", default)]
    password: Option<PasswordCredentials>,
    #[serde(rename = "tenantName", default)]
    tenant_name: Option<String>,
    #[serde(rename = "tenantId", default)]
    tenant_id: Option<String>,
}

/// `{"id": T}`.
#[derive(Debug, Deserialize)]
pub struct TokenId {
    id: String,
}

/// `{"username", "password"}`.
#[derive(Debug, Deserialize)]
pub struct PasswordCredentials {
    username: String,
    password: String,
}

/// One catalog entry: the service, and one endpoint carrying `publicURL`,
/// `versionId` and `SNF:uiURL` (astakosclient reads the last two from the
/// endpoint, older Astakos clients from the service).
fn service(app: &Shared, name: &str, kind: &str, version: &str, path: &str) -> Value {
    let ui = format!("{}/ui", app.config.public_url);
    json!({
        "name": name,
        "type": kind,
        "SNF:uiURL": ui,
        "endpoints": [{
            "publicURL": format!("{}{path}", app.config.public_url),
            "versionId": version,
            "region": app.config.region,
            "SNF:uiURL": ui,
        }],
        "endpoints_links": [],
    })
}

/// The service catalog: Cyclades compute and network, the account API and
/// this identity service. The network URL is Synnefo's own
/// (`cyclades_network` at `/cyclades/network`, unversioned: kamaki appends
/// `/v2.0`), the Neutron routes in Synnefo's dialect
/// ([`crate::neutron::Variant::Cyclades`]).
pub fn catalog(app: &Shared) -> Value {
    json!([
        service(app, "cyclades_compute", "compute", "v2.0", "/compute/v2.0"),
        service(
            app,
            "cyclades_network",
            "network",
            "v2.0",
            crate::neutron::CYCLADES_MOUNT
        ),
        service(app, "astakos_account", "account", "v1.0", ACCOUNT),
        service(
            app,
            "astakos_identity",
            "identity",
            "v2.0",
            "/identity/v2.0"
        ),
    ])
}

fn access(app: &Shared, auth: &Authenticated, secret: &str) -> Value {
    json!({"access": {
        "token": {
            "id": secret,
            "expires": crate::keystone::expires_iso(auth),
            "tenant": {"id": auth.project.id, "name": auth.project.name},
        },
        "user": {
            "id": auth.user.id,
            "name": auth.user.name,
            "roles": [{"id": 1, "name": "default"}],
            "roles_links": [],
            "projects": [auth.project.id],
        },
        "serviceCatalog": catalog(app),
    }})
}

async fn tokens(
    State(app): State<Shared>,
    peer: crate::extract::Peer,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        // Astakos' public mode: no credentials, the catalog alone.
        return Ok(Json(json!({"access": {"serviceCatalog": catalog(&app)}})));
    }
    let a = decode::<TokensRequest>(&body)?.auth;
    let project = match (a.tenant_id, a.tenant_name) {
        (Some(id), _) => Some(ProjectSelector::Id(id)),
        (None, Some(n)) => Some(ProjectSelector::Name(n)),
        _ => None,
    };
    match (a.token, a.password) {
        (Some(t), _) => {
            let auth = app.identity.validate(&t.id).await?;
            // Astakos names tenants by user uuid as well as by project.
            let wanted_other = match &project {
                Some(ProjectSelector::Id(id)) => id != &auth.project.id && id != &auth.user.id,
                Some(ProjectSelector::Name(n)) => n != &auth.project.name && n != &auth.user.id,
                None => false,
            };
            if wanted_other {
                return Err(ApiError::unauthorized(
                    "The token does not belong to that tenant.",
                ));
            }
            Ok(Json(access(&app, &auth, &t.id)))
        }
        (None, Some(p)) => {
            let issued = app
                .identity
                .password_auth_from(
                    peer.0,
                    &UserSelector::Name(p.username),
                    &p.password,
                    project.as_ref(),
                )
                .await?;
            Ok(Json(access(&app, &issued.auth, &issued.secret)))
        }
        (None, None) => Err(ApiError::bad_request(
            "Expecting token or passwordCredentials in auth.",
        )),
    }
}

// ---------------------------------------------------------------- account

fn holding(h: &Holding) -> Value {
    json!({
        "limit": h.limit,
        "usage": h.usage,
        "pending": h.pending,
        "project_limit": h.project_limit,
        "project_usage": h.project_usage,
        "project_pending": h.project_pending,
    })
}

async fn quotas(State(app): State<Shared>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let all = account(&app).quotas(&auth.0.user).await?;
    let mut out = Map::new();
    for pq in &all {
        let per: Map<String, Value> = pq
            .holdings
            .iter()
            .map(|(r, h)| (r.name.to_string(), holding(h)))
            .collect();
        out.insert(pq.project.id.clone(), Value::Object(per));
    }
    Ok(Json(Value::Object(out)))
}

async fn resources(State(app): State<Shared>) -> Json<Value> {
    let out: Map<String, Value> = account(&app)
        .resources()
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                json!({
                    "unit": r.unit,
                    "description": r.description,
                    "service_type": r.service_type,
                    "service_origin": r.service_origin,
                    "ui_visible": true,
                    "api_visible": true,
                    "allow_in_projects": true,
                }),
            )
        })
        .collect();
    Json(Value::Object(out))
}

/// Astakos' project description. Projects here are created by an
/// operator: no owner, no end date, closed join and leave policies
/// (membership is managed by the operator), private, and no member cap.
fn project_body(p: &ProjectInfo) -> Value {
    let resources: Map<String, Value> = p
        .limits()
        .into_iter()
        .map(|(r, l)| {
            (
                r.name.to_string(),
                json!({"member_capacity": l, "project_capacity": l}),
            )
        })
        .collect();
    json!({
        "id": p.project.id,
        "state": "active",
        "creation_date": iso(&p.project.created),
        "name": p.project.name,
        "owner": null,
        "homepage": "",
        "description": "",
        "end_date": null,
        "join_policy": "closed",
        "leave_policy": "closed",
        "max_members": PRACTICALLY_INFINITE,
        "private": true,
        "base_project": false,
        "system_project": false,
        "resources": resources,
    })
}

fn project_filter(p: &Params) -> Result<ProjectFilter, ApiError> {
    for (k, _) in &p.0 {
        if !matches!(k.as_str(), "name" | "state" | "owner" | "mode") {
            return Err(ApiError::bad_request(format!("Unrecognized filter {k}")));
        }
    }
    Ok(ProjectFilter {
        name: p.get("name").map(str::to_string),
        state: p.get("state").map(str::to_string),
        owner: p.get("owner").map(str::to_string),
        mode: match p.get("mode") {
            None => ProjectMode::Default,
            Some(m) => ProjectMode::parse(m)?,
        },
    })
}

async fn projects(
    State(app): State<Shared>,
    auth: Auth,
    p: Params,
) -> Result<Json<Value>, ApiError> {
    let f = project_filter(&p)?;
    let list = account(&app).projects(&auth.0.user, &f).await?;
    Ok(Json(Value::Array(list.iter().map(project_body).collect())))
}

async fn project(
    State(app): State<Shared>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = account(&app).project(&auth.0.user, &id).await?;
    Ok(Json(project_body(&p)))
}

/// `POST user_catalogs` body (either list may be absent or null; null
/// entries name nobody, as in Astakos: kamaki asks about the owner of an
/// ownerless image that way).
#[derive(Debug, Deserialize)]
pub struct CatalogRequest {
    #[serde(default)]
    uuids: Option<Vec<Option<String>>>,
    #[serde(default)]
    displaynames: Option<Vec<Option<String>>>,
}

fn named(list: Option<Vec<Option<String>>>) -> Vec<String> {
    list.unwrap_or_default().into_iter().flatten().collect()
}

async fn user_catalogs(
    State(app): State<Shared>,
    auth: Auth,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: CatalogRequest = decode(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "Request body should be json formatted: {}",
            e.message
        ))
    })?;
    let acc = account(&app);
    let user = &auth.0.user;
    let uuids = acc.usernames(user, &named(req.uuids)).await?;
    let names = acc.user_ids(user, &named(req.displaynames)).await?;
    Ok(Json(
        json!({"uuid_catalog": uuids, "displayname_catalog": names}),
    ))
}
