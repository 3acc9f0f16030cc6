//! Keystone v3 subset at `/identity/v3`: enough for python-openstackclient
//! and openstacksdk with a normal `clouds.yaml` (password method, project
//! scope by name or id in the `Default` domain, the token method to
//! rescope, validation and revocation).
//!
//! The catalog lists this process's compute (`/compute/v2.1`), image
//! (`/image`), identity (`/identity`) and network (`/network`, unversioned)
//! endpoints at the public URL.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::service::identity::{Authenticated, Issued, ProjectSelector, UserSelector};

use crate::error::{ApiError, Dialect};
use crate::extract::{IdentityBody, Params, Peer};
use crate::nova::views::iso;
use crate::state::Shared;

/// The only domain.
pub const DOMAIN_ID: &str = "default";
/// Its name.
pub const DOMAIN_NAME: &str = "Default";
/// Identity API version advertised.
pub const VERSION: &str = "v3.14";

/// Routes under `/identity`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route(
            "/identity/v3/auth/tokens",
            get(validate).head(check).post(issue).delete(revoke),
        )
}

fn version_doc(app: &Shared) -> Value {
    json!({
        "id": VERSION,
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", app.config.public_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn versions(State(app): State<Shared>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [version_doc(&app)]}})),
    )
        .into_response()
}

async fn version(State(app): State<Shared>) -> Json<Value> {
    Json(json!({ "version": version_doc(&app) }))
}

/// `POST /v3/auth/tokens` body.
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    auth: AuthBody,
}

/// `auth`.
#[derive(Debug, Deserialize)]
pub struct AuthBody {
    identity: IdentityMethods,
    #[serde(default)]
    scope: Option<Value>,
}

/// `auth.identity`.
#[derive(Debug, Deserialize)]
pub struct IdentityMethods {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordBody>,
    #[serde(default)]
    token: Option<TokenBody>,
}

/// `identity.password`.
#[derive(Debug, Deserialize)]
pub struct PasswordBody {
    user: UserBody,
}

/// `identity.password.user`.
#[derive(Debug, Deserialize)]
pub struct UserBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<DomainRef>,
    password: String,
}

/// `identity.token`.
#[derive(Debug, Deserialize)]
pub struct TokenBody {
    id: String,
}

/// `{"id"}` or `{"name"}` of a domain.
#[derive(Debug, Deserialize)]
pub struct DomainRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg).in_dialect(Dialect::Identity)
}

fn unauthorized() -> ApiError {
    ApiError::unauthorized(synnefo_core::service::identity::AUTH_FAILED)
        .in_dialect(Dialect::Identity)
}

fn check_domain(d: &Option<DomainRef>) -> Result<(), ApiError> {
    match d {
        None => Ok(()),
        Some(DomainRef { id: Some(id), .. }) if id == DOMAIN_ID => Ok(()),
        Some(DomainRef {
            name: Some(n),
            id: None,
        }) if n == DOMAIN_NAME => Ok(()),
        Some(_) => Err(unauthorized()),
    }
}

fn project_selector(scope: &Option<Value>) -> Result<Option<ProjectSelector>, ApiError> {
    let Some(scope) = scope else { return Ok(None) };
    if scope.get("system").is_some() || scope.get("domain").is_some() {
        return Err(unauthorized());
    }
    let Some(p) = scope.get("project") else {
        return Err(bad("Invalid scope: expected a project."));
    };
    if let Some(d) = p.get("domain") {
        let d: DomainRef =
            serde_json::from_value(d.clone()).map_err(|e| bad(format!("Invalid domain: {e}")))?;
        check_domain(&Some(d))?;
    }
    match (
        p.get("id").and_then(Value::as_str),
        p.get("name").and_then(Value::as_str),
    ) {
        (Some(id), _) => Ok(Some(ProjectSelector::Id(id.to_string()))),
        (None, Some(n)) => Ok(Some(ProjectSelector::Name(n.to_string()))),
        _ => Err(bad("Invalid scope: the project needs an id or a name.")),
    }
}

fn catalog(app: &Shared) -> Value {
    let url = &app.config.public_url;
    let region = &app.config.region;
    let svc = |id: &str, kind: &str, name: &str, path: &str| {
        json!({
            "id": id,
            "type": kind,
            "name": name,
            "endpoints": [{
                "id": format!("{id}-public"),
                "interface": "public",
                "region": region,
                "region_id": region,
                "url": format!("{url}{path}"),
            }],
        })
    };
    json!([
        svc(
            "0c5e3fd0a5b14c3b8e4a1a7f8c2d9e01",
            "compute",
            "nova",
            "/compute/v2.1"
        ),
        svc(
            "0c5e3fd0a5b14c3b8e4a1a7f8c2d9e02",
            "image",
            "glance",
            "/image"
        ),
        svc(
            "0c5e3fd0a5b14c3b8e4a1a7f8c2d9e03",
            "identity",
            "keystone",
            "/identity"
        ),
        // unversioned: the SDK, tempest and kamaki append `/v2.0`
        svc(
            "0c5e3fd0a5b14c3b8e4a1a7f8c2d9e04",
            "network",
            "neutron",
            crate::neutron::MOUNT
        ),
    ])
}

fn token_body(app: &Shared, auth: &Authenticated, methods: &[&str], with_catalog: bool) -> Value {
    let domain = json!({"id": DOMAIN_ID, "name": DOMAIN_NAME});
    let mut roles = vec![
        json!({"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "member"}),
        json!({"id": "0d3c1f2b7a1e4d3f9b8c7a6e5d4c3b2a", "name": "reader"}),
    ];
    if auth.user.is_admin {
        roles.push(json!({"id": "5b4a3c2d1e0f4a9b8c7d6e5f4a3b2c1d", "name": "admin"}));
    }
    let mut token = json!({
        "methods": methods,
        "user": {"domain": domain, "id": auth.user.id, "name": auth.user.name, "password_expires_at": null},
        "audit_ids": [auth.token.digest[..22].to_string()],
        "expires_at": auth.token.expires.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "issued_at": auth.token.issued.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "project": {"domain": domain, "id": auth.project.id, "name": auth.project.name},
        "is_domain": false,
        "roles": roles,
    });
    if with_catalog {
        token["catalog"] = catalog(app);
    }
    json!({ "token": token })
}

fn with_subject(mut resp: Response, secret: &str) -> Response {
    if let Ok(h) = HeaderValue::from_str(secret) {
        resp.headers_mut().insert("x-subject-token", h);
    }
    resp
}

async fn issue(
    State(app): State<Shared>,
    peer: Peer,
    p: Params,
    IdentityBody(req): IdentityBody<AuthRequest>,
) -> Result<Response, ApiError> {
    let id = req.auth.identity;
    let project = project_selector(&req.auth.scope)?;
    let issued: Issued = if id.methods.iter().any(|m| m == "password") {
        let pw = id
            .password
            .ok_or_else(|| bad("Expecting to find password in identity."))?;
        check_domain(&pw.user.domain)?;
        let user = match (pw.user.id, pw.user.name) {
            (Some(uid), _) => UserSelector::Id(uid),
            (None, Some(name)) => UserSelector::Name(name),
            _ => return Err(bad("Expecting to find id or name in user.")),
        };
        app.identity
            .password_auth_from(peer.0, &user, &pw.user.password, project.as_ref())
            .await
            .map_err(|e| ApiError::from(e).in_dialect(Dialect::Identity))?
    } else if id.methods.iter().any(|m| m == "token") {
        let t = id
            .token
            .ok_or_else(|| bad("Expecting to find token in identity."))?;
        let current = app
            .identity
            .validate(&t.id)
            .await
            .map_err(|_| unauthorized())?;
        // Keystone keeps the parent's expiry: rescoping never extends a
        // session, and revoking the parent revokes this one.
        app.identity
            .rescope(&current, project.as_ref())
            .await
            .map_err(|e| match e {
                synnefo_core::ServiceError::Unauthorized(_) => unauthorized(),
                other => ApiError::from(other).in_dialect(Dialect::Identity),
            })?
    } else {
        return Err(unauthorized());
    };
    let methods: Vec<&str> = id.methods.iter().map(String::as_str).collect();
    let body = token_body(&app, &issued.auth, &methods, p.get("nocatalog").is_none());
    Ok(with_subject(
        (StatusCode::CREATED, Json(body)).into_response(),
        &issued.secret,
    ))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The caller (X-Auth-Token) and the subject (X-Subject-Token): a caller
/// may inspect its own user's tokens; operators any token.
async fn subject(app: &Shared, h: &HeaderMap) -> Result<(Authenticated, String), ApiError> {
    let caller_token = header(h, "x-auth-token").ok_or_else(unauthorized)?;
    let caller = app
        .identity
        .validate(caller_token)
        .await
        .map_err(|_| unauthorized())?;
    let subject_token =
        header(h, "x-subject-token").ok_or_else(|| bad("X-Subject-Token is required."))?;
    let not_found = || ApiError::not_found("Could not find token.").in_dialect(Dialect::Identity);
    let subject = app
        .identity
        .validate(subject_token)
        .await
        .map_err(|_| not_found())?;
    if !caller.user.is_admin && caller.user.id != subject.user.id {
        return Err(
            ApiError::forbidden("You are not authorized to perform the requested action.")
                .in_dialect(Dialect::Identity),
        );
    }
    Ok((subject, subject_token.to_string()))
}

async fn validate(
    State(app): State<Shared>,
    h: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let (subject, secret) = subject(&app, &h).await?;
    let body = token_body(&app, &subject, &["password"], p.get("nocatalog").is_none());
    Ok(with_subject(Json(body).into_response(), &secret))
}

async fn check(State(app): State<Shared>, h: HeaderMap) -> Result<StatusCode, ApiError> {
    subject(&app, &h).await.map(|_| StatusCode::OK)
}

async fn revoke(State(app): State<Shared>, h: HeaderMap) -> Result<StatusCode, ApiError> {
    let (_, secret) = subject(&app, &h).await?;
    app.identity
        .revoke(&secret)
        .await
        .map_err(|e| ApiError::from(e).in_dialect(Dialect::Identity))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `iso` helper re-exported for the Astakos adapter.
pub fn expires_iso(a: &Authenticated) -> String {
    iso(&a.token.expires)
}
