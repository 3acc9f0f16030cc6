//! The OpenStack Networking (Neutron) v2.0 subset at `/network`:
//! networks, subnets, ports and floating IPs over
//! [`Networking`].
//!
//! The catalogs advertise `<public url>/network` unversioned: the SDK,
//! tempest and kamaki append `/v2.0` themselves. Handlers extract, call the
//! service, and wrap with [`views`]; list semantics (filters, `fields`,
//! `limit`/`marker`) are in [`query`]. Every failure, including those of
//! authentication, body decoding and routing, is a Neutron fault
//! (`{"NeutronError": {"type", "message", "detail"}}`), and a lookup of
//! anything that is not an id is a 404, which the clients' find-by-name
//! relies on.
//!
//! The same routes are mounted a second time at [`CYCLADES_MOUNT`]
//! (`/cyclades/network`, Synnefo's own path), the Astakos catalog's
//! `cyclades_network` endpoint that kamaki 0.16 uses, in Synnefo's
//! dialect ([`Variant::Cyclades`]): a floating IP create answers 200
//! (Neutron, and so tempest and the `openstack` CLI at `/network`, get
//! 201), a `project` other than the token's is refused (400) rather than
//! ignored, and faults are Synnefo's `{"itemNotFound": {"code", "message"}}`.
//! Kamaki's Synnefo routes are in both: `GET /networks/detail`,
//! `/ports/detail`, `/floatingips/detail`.

mod floating_ips;
mod networks;
mod ports;
pub mod query;
mod subnets;
pub mod views;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router, middleware};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use synnefo_core::error::{BackendError, ServiceError, StoreError};
use synnefo_core::service::compute::Caller;
use synnefo_core::service::network::Networking;

use crate::error::{ApiError, Dialect};
use crate::extract::{Auth, Params};
use crate::state::Shared;

/// Where the routes are mounted.
pub const MOUNT: &str = "/network";

/// Where they are mounted again in Synnefo's dialect, for kamaki (the
/// Astakos catalog's `cyclades_network`; kamaki appends `/v2.0`).
pub const CYCLADES_MOUNT: &str = "/cyclades/network";

/// Which dialect a request came in (set by the [`CYCLADES_MOUNT`]
/// router's layer; extracting it never fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// OpenStack Neutron at [`MOUNT`].
    #[default]
    Neutron,
    /// Synnefo's Cyclades network API at [`CYCLADES_MOUNT`].
    Cyclades,
}

impl Variant {
    /// The path this dialect is mounted at.
    pub fn mount(self) -> &'static str {
        match self {
            Variant::Neutron => MOUNT,
            Variant::Cyclades => CYCLADES_MOUNT,
        }
    }

    /// The status of a successful floating IP create: Neutron's 201,
    /// Synnefo's 200 (kamaki 0.16 checks it).
    pub fn floating_ip_created(self) -> StatusCode {
        match self {
            Variant::Neutron => StatusCode::CREATED,
            Variant::Cyclades => StatusCode::OK,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Variant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Variant>()
            .copied()
            .unwrap_or_default())
    }
}

/// The extensions this subset implements, advertised at
/// `/v2.0/extensions`: `router:external` on networks, and the (read-only)
/// `mtu` attribute.
const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
        "2013-01-14T10:00:00-00:00",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
        "2015-03-25T10:00:00-00:00",
    ),
];

/// The Neutron routes at [`MOUNT`] and the Cyclades ones at
/// [`CYCLADES_MOUNT`].
pub fn routes() -> Router<Shared> {
    Router::new().merge(mounted(MOUNT)).merge(
        mounted(CYCLADES_MOUNT)
            .layer(middleware::map_response(synnefo_faults))
            .layer(Extension(Variant::Cyclades)),
    )
}

/// Every route under `mount`.
fn mounted(mount: &str) -> Router<Shared> {
    let v = |p: &str| format!("{mount}/v2.0{p}");
    Router::new()
        .route(mount, get(versions))
        .route(&format!("{mount}/"), get(versions))
        .route(&v(""), get(resources_doc))
        .route(&v("/"), get(resources_doc))
        .route(&v("/extensions"), get(extensions))
        .route(&v("/extensions/{alias}"), get(extension))
        .route(&v("/networks"), get(networks::list).post(networks::create))
        .route(&v("/networks/detail"), get(networks::list))
        .route(
            &v("/networks/{id}"),
            get(networks::show)
                .put(networks::update)
                .delete(networks::delete),
        )
        .route(&v("/subnets"), get(subnets::list).post(subnets::create))
        .route(
            &v("/subnets/{id}"),
            get(subnets::show)
                .put(subnets::update)
                .delete(subnets::delete),
        )
        .route(&v("/ports"), get(ports::list).post(ports::create))
        .route(&v("/ports/detail"), get(ports::list))
        .route(
            &v("/ports/{id}"),
            get(ports::show).put(ports::update).delete(ports::delete),
        )
        .route(
            &v("/floatingips"),
            get(floating_ips::list).post(floating_ips::create),
        )
        .route(&v("/floatingips/detail"), get(floating_ips::list))
        .route(
            &v("/floatingips/{id}"),
            get(floating_ips::show)
                .put(floating_ips::update)
                .delete(floating_ips::delete),
        )
        .route(&format!("{mount}/{{*rest}}"), any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
}

/// Synnefo's fault name for a status (its `faults` classes, camel-cased).
fn synnefo_fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "notAllowed",
        409 => "conflict",
        413 | 429 => "overLimit",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "internalServerError",
    }
}

/// The Cyclades mount's faults: every [`Fault`] answered again as
/// Synnefo's `{"<name>": {"code", "message"}}`, same status and message.
async fn synnefo_faults(mut resp: Response) -> Response {
    match resp.extensions_mut().remove::<ApiError>() {
        Some(e) => ApiError {
            fault: synnefo_fault_name(e.status),
            ..e
        }
        .in_dialect(Dialect::Compute)
        .into_response(),
        None => resp,
    }
}

// ------------------------------------------------------------ faults

/// A Neutron fault: an [`ApiError`] rendered in [`Dialect::Network`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub ApiError);

impl IntoResponse for Fault {
    /// Neutron's fault; the error rides along in the response's
    /// extensions for the Cyclades mount to answer in its own shape.
    fn into_response(self) -> Response {
        let mut resp = self.0.clone().in_dialect(Dialect::Network).into_response();
        resp.extensions_mut().insert(self.0);
        resp
    }
}

impl From<ApiError> for Fault {
    fn from(e: ApiError) -> Self {
        Fault(e.in_dialect(Dialect::Network))
    }
}

fn fault(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Fault {
    Fault(ApiError::new(status, kind, message).in_dialect(Dialect::Network))
}

/// 400 `BadRequest`.
pub fn bad_request(message: impl Into<String>) -> Fault {
    fault(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The Neutron type of a 404, from the service's message
/// (`"Network X could not be found."`, the store's `"network X"`).
fn not_found_type(m: &str) -> &'static str {
    let lower = m.to_ascii_lowercase();
    if lower.starts_with("network") {
        "NetworkNotFound"
    } else if lower.starts_with("subnet") {
        "SubnetNotFound"
    } else if lower.starts_with("port") {
        "PortNotFound"
    } else if lower.starts_with("floating ip") {
        "FloatingIPNotFound"
    } else if lower.starts_with("external network") {
        "ExternalGatewayForFloatingIPNotFound"
    } else {
        "HTTPNotFound"
    }
}

/// The Neutron type of a conflict, from the service's message.
fn conflict_type(m: &str) -> &'static str {
    if m.contains("ports still in use on the network") {
        "NetworkInUse"
    } else if m.contains("IP allocation from this subnet")
        || m.contains("subnet") && m.contains("in use")
    {
        "SubnetInUse"
    } else if m.contains("The IP address") && m.contains("is in use")
        || m.contains("is the gateway")
    {
        "IpAddressInUse"
    } else if m.contains("already associated") {
        "FloatingIPPortAlreadyAssociated"
    } else if m.starts_with("Port ") && m.contains("in use") {
        "PortInUse"
    } else {
        "Conflict"
    }
}

impl From<ServiceError> for Fault {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadRequest(m) => bad_request(m),
            ServiceError::NotFound(m) => fault(StatusCode::NOT_FOUND, not_found_type(&m), m),
            ServiceError::OverLimit(m) => fault(StatusCode::FORBIDDEN, "OverQuota", m),
            ServiceError::Forbidden(m) => fault(StatusCode::FORBIDDEN, "HTTPForbidden", m),
            ServiceError::Store(StoreError::QuotaExceeded { .. }) => {
                let m = e.to_string();
                fault(StatusCode::FORBIDDEN, "OverQuota", m)
            }
            ServiceError::Store(StoreError::NotFound(m)) => {
                let kind = not_found_type(&m);
                fault(
                    StatusCode::NOT_FOUND,
                    kind,
                    format!("{m} could not be found."),
                )
            }
            ServiceError::Store(StoreError::Integrity(m)) => {
                let kind = conflict_type(&m);
                if m.contains("is not a valid IP for the specified subnet") {
                    return fault(StatusCode::BAD_REQUEST, "InvalidIpForSubnet", m);
                }
                fault(StatusCode::CONFLICT, kind, m)
            }
            ServiceError::Store(StoreError::Exhausted(m))
                if m.contains("No tenant network is available") =>
            {
                // A link pool with nothing left (Neutron's
                // NoNetworkAvailable, a ResourceExhausted).
                fault(StatusCode::SERVICE_UNAVAILABLE, "NoNetworkAvailable", m)
            }
            ServiceError::Store(StoreError::Exhausted(m)) => {
                let kind = if m.contains("MAC") {
                    "MacAddressGenerationFailure"
                } else {
                    "IpAddressGenerationFailure"
                };
                fault(StatusCode::CONFLICT, kind, m)
            }
            ServiceError::Backend(BackendError::NotFound(m)) => fault(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Ganeti does not know it: {m}"),
            ),
            other => Fault::from(ApiError::from(other)),
        }
    }
}

// ------------------------------------------------------------ extractors

/// An authenticated caller; a failure is a Neutron fault.
#[derive(Debug, Clone)]
pub struct NetAuth(pub Auth);

impl NetAuth {
    /// The caller, for the service.
    pub fn caller(&self) -> Caller {
        self.0.caller()
    }
}

impl FromRequestParts<Shared> for NetAuth {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        Auth::from_request_parts(parts, app)
            .await
            .map(NetAuth)
            .map_err(Fault::from)
    }
}

/// The query string; a failure is a Neutron fault.
#[derive(Debug, Clone)]
pub struct NetParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for NetParams {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Params::parse(parts.uri.query())
            .map(NetParams)
            .map_err(Fault::from)
    }
}

/// The `{id}` of a resource path; an undecodable one is a 404.
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(_) => Err(fault(
                StatusCode::NOT_FOUND,
                "HTTPNotFound",
                "The resource could not be found.",
            )),
        }
    }
}

/// A JSON request body (size-limited like every body; malformed: 400).
#[derive(Debug, Clone)]
pub struct NetBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for NetBody {
    type Rejection = Fault;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Fault::from(ApiError::too_large("Request is too large."))
            } else {
                bad_request(format!("Cannot read the request body: {r}"))
            }
        })?;
        let v: Value = crate::extract::decode(&bytes).map_err(Fault::from)?;
        if !v.is_object() {
            return Err(bad_request("The request body must be a JSON object."));
        }
        Ok(NetBody(v))
    }
}

/// The resources of a body: `{"<one>": {...}}` or, when `bulk` and the
/// body has it, `{"<many>": [{...}, ...]}` (Neutron's bulk create). The
/// bool is true for a bulk body.
pub fn items_of<T: DeserializeOwned>(
    body: Value,
    one: &str,
    many: Option<&str>,
) -> Result<(Vec<T>, bool), Fault> {
    let Value::Object(mut m) = body else {
        return Err(bad_request("The request body must be a JSON object."));
    };
    let parse = |v: Value| -> Result<T, Fault> {
        if !v.is_object() {
            return Err(bad_request(format!(
                "Invalid input: '{one}' must be a JSON object."
            )));
        }
        serde_json::from_value(v).map_err(|e| bad_request(format!("Invalid input for {one}: {e}")))
    };
    if let Some(v) = m.remove(one) {
        return Ok((vec![parse(v)?], false));
    }
    if let Some(many) = many
        && let Some(v) = m.remove(many)
    {
        let Value::Array(items) = v else {
            return Err(bad_request(format!(
                "Invalid input: '{many}' must be a list."
            )));
        };
        if items.is_empty() {
            return Err(bad_request(format!("Invalid input: '{many}' is empty.")));
        }
        return Ok((
            items.into_iter().map(parse).collect::<Result<_, _>>()?,
            true,
        ));
    }
    Err(bad_request(format!("Resource body required: '{one}'.")))
}

/// Deserializes a key that may be absent (`None`), null (`Some(None)`) or
/// set (`Some(Some(v))`): `port_id: null` disassociates, `gateway_ip:
/// null` means no gateway.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Parses an IP address of a request field (400 otherwise).
pub fn ip(field: &str, v: &str) -> Result<std::net::IpAddr, Fault> {
    v.trim().parse().map_err(|_| {
        bad_request(format!(
            "Invalid input for {field}. Reason: '{v}' is not a valid IP address."
        ))
    })
}

// ------------------------------------------------------------ helpers

/// The network service.
fn service(app: &Shared) -> Networking {
    app.compute.networking()
}

/// `<public url><mount>/v2.0/<collection>`.
fn collection_url(app: &Shared, v: Variant, collection: &str) -> String {
    format!("{}{}/v2.0/{collection}", app.config.public_url, v.mount())
}

/// A `project` of a create body must be the token's: resources are made
/// in the token's project (Synnefo's `project` picks where to charge).
fn check_project(project: Option<&str>, caller: &Caller, what: &str) -> Result<(), Fault> {
    match project {
        Some(p) if p != caller.project_id => Err(bad_request(format!(
            "{what} are created in the project of the token ({}); for project {p}, authenticate with tenantId {p}.",
            caller.project_id
        ))),
        _ => Ok(()),
    }
}

/// A 201 with a body.
fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// A 204.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ------------------------------------------------------------ discovery

async fn versions(State(app): State<Shared>, v: Variant) -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"href": format!("{}{}/v2.0/", app.config.public_url, v.mount()), "rel": "self"}],
    }]}))
}

async fn resources_doc(State(app): State<Shared>, v: Variant) -> Json<Value> {
    let r = |name: &str, coll: &str| json!({"name": name, "collection": coll, "links": [{"href": collection_url(&app, v, coll), "rel": "self"}]});
    Json(json!({"resources": [
        r("network", "networks"),
        r("subnet", "subnets"),
        r("port", "ports"),
        r("floatingip", "floatingips"),
    ]}))
}

fn extension_body(e: &(&str, &str, &str, &str)) -> Value {
    json!({"alias": e.0, "name": e.1, "description": e.2, "updated": e.3, "links": []})
}

async fn extensions(_auth: NetAuth) -> Json<Value> {
    Json(json!({"extensions": EXTENSIONS.iter().map(extension_body).collect::<Vec<_>>()}))
}

async fn extension(_auth: NetAuth, Id(alias): Id) -> Result<Json<Value>, Fault> {
    EXTENSIONS
        .iter()
        .find(|e| e.0 == alias)
        .map(|e| Json(json!({"extension": extension_body(e)})))
        .ok_or_else(|| {
            fault(
                StatusCode::NOT_FOUND,
                "HTTPNotFound",
                format!("Extension with alias {alias} does not exist"),
            )
        })
}

async fn not_found() -> Fault {
    fault(
        StatusCode::NOT_FOUND,
        "HTTPNotFound",
        "The resource could not be found.",
    )
}

async fn method_not_allowed() -> Fault {
    Fault::from(ApiError::method_not_allowed())
}
