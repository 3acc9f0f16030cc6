//! The simulator's HTTP side: an axum router speaking Ganeti's RAPI JSON
//! (same paths, fields, status codes and error bodies as Ganeti 3.0), basic
//! auth, and an HTTPS accept loop on tokio-rustls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::json::{to_py_vec, write_py};
use crate::views::{InstanceView, J_FIELDS};

type S = State<Arc<Shared>>;
type Q = Query<HashMap<String, String>>;

/// The RAPI router: Ganeti 3.0's paths behind the auth and media-type gate.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(|| async { py(&json!(2)) }))
        .route("/2/info", get(info))
        .route(
            "/2/features",
            get(|| async {
                py(&json!([
                    "instance-reinstall-reqv1",
                    "instance-create-reqv1",
                    "node-migrate-reqv1",
                    "node-evac-res1"
                ]))
            }),
        )
        .route("/2/nodes", get(nodes))
        .route("/2/instances", get(instances).post(create))
        .route("/2/instances/{name}", get(instance).delete(remove))
        .route("/2/instances/{name}/startup", axum::routing::put(startup))
        .route("/2/instances/{name}/shutdown", axum::routing::put(shutdown))
        .route("/2/instances/{name}/reboot", axum::routing::post(reboot))
        .route("/2/instances/{name}/modify", axum::routing::put(modify))
        .route("/2/instances/{name}/console", get(console))
        .route("/2/groups", get(groups))
        .route("/2/networks", get(networks).post(network_add))
        .route("/2/networks/{name}", get(network).delete(network_remove))
        .route(
            "/2/networks/{name}/connect",
            axum::routing::put(network_connect),
        )
        .route(
            "/2/networks/{name}/disconnect",
            axum::routing::put(network_disconnect),
        )
        .route("/2/jobs/{id}", get(job).delete(cancel))
        .route("/2/jobs/{id}/wait", get(wait))
        .fallback(|| async { not_found() })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::NOT_IMPLEMENTED,
                "Unsupported method",
                "Server does not support this operation",
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

// ---------------------------------------------------------------- helpers

fn py(v: &impl serde::Serialize) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], to_py_vec(v)).into_response()
}

fn error(status: StatusCode, message: &str, explain: &str) -> Response {
    let body = json!({"code": status.as_u16(), "message": message, "explain": explain});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        to_py_vec(&body),
    )
        .into_response()
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Not Found",
        "Nothing matches the given URI",
    )
}

fn bad_request(msg: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        msg,
        "Bad request syntax or unsupported method",
    )
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A JSON object body; empty means `{}`.
fn body_object(body: &Bytes) -> Result<Map<String, Value>, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(Box::new(bad_request(
            "Invalid body contents, not a dictionary",
        ))),
        Err(e) => Err(Box::new(bad_request(&format!(
            "Unable to parse JSON data: {e}"
        )))),
    }
}

fn job_id_answer(id: u64) -> Response {
    py(&json!(id))
}

// ---------------------------------------------------------------- gate: auth, media type, delay

fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "No permission -- see authorization schemes",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Ganeti Remote API\""),
    );
    r
}

async fn gate(State(shared): S, req: Request, next: Next) -> Response {
    let delay = shared.response_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // GETs that need write access in Ganeti (they block or reveal secrets).
    let needs_write =
        method != Method::GET || path.ends_with("/wait") || path.ends_with("/console");
    let user = match credentials(req.headers()) {
        Some((u, p)) => match shared
            .config
            .users
            .iter()
            .find(|x| x.name == u && x.password == p)
        {
            Some(user) => Some(user.clone()),
            None => return unauthorized(),
        },
        None if req.headers().contains_key(header::AUTHORIZATION) => return unauthorized(),
        None => None,
    };
    if user.is_none() && (needs_write || shared.config.require_authentication) {
        return unauthorized();
    }
    if needs_write && !user.as_ref().is_some_and(|u| u.write) {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The user does not have write access",
        );
    }
    if method != Method::GET {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        let json_ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if has_body && !json_ct {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                "Entity body in unsupported format",
            );
        }
    }
    next.run(req).await
}

// ---------------------------------------------------------------- cluster, nodes, instances

async fn info(State(s): S) -> Response {
    py(&s.read(|st| st.info_json()))
}

async fn nodes(State(s): S, Query(q): Q) -> Response {
    let v = s.read(|st| {
        if flag(&q, "bulk") {
            st.nodes_json()
        } else {
            Value::Array(
                st.nodes
                    .iter()
                    .map(|n| json!({"id": n.cfg.name, "uri": format!("/2/nodes/{}", n.cfg.name)}))
                    .collect(),
            )
        }
    });
    py(&v)
}

async fn instances(State(s): S, Query(q): Q) -> Response {
    let fields: Option<Vec<String>> = q.get("fields").map(|f| {
        f.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let bulk = flag(&q, "bulk");
    let out = s.read(|st| {
        let mut out = Vec::with_capacity(if bulk {
            st.instances.len() * 1100 + 2
        } else {
            st.instances.len() * 60 + 2
        });
        out.push(b'[');
        for (n, inst) in st.instances.values().enumerate() {
            if n > 0 {
                out.extend_from_slice(b", ");
            }
            if bulk {
                let _ = write_py(
                    &mut out,
                    &InstanceView {
                        inst,
                        fields: fields.as_deref(),
                    },
                );
            } else {
                let _ = write_py(
                    &mut out,
                    &json!({"id": inst.name, "uri": format!("/2/instances/{}", inst.name)}),
                );
            }
        }
        out.push(b']');
        out
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(out),
    )
        .into_response()
}

async fn instance(State(s): S, Path(name): Path<String>) -> Response {
    s.read(|st| {
        st.instances
            .get(&name)
            .map(|inst| py(&InstanceView { inst, fields: None }))
    })
    .unwrap_or_else(not_found)
}

async fn console(State(s): S, Path(name): Path<String>) -> Response {
    match s.read(|st| st.console_json(&name)) {
        Some(v) => py(&v),
        // What Ganeti 3.0 really answers for an unknown instance.
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "list index out of range",
            "Server got itself in trouble",
        ),
    }
}

// ---------------------------------------------------------------- writes

async fn create(State(s): S, Query(q): Q, body: Bytes) -> Response {
    let mut b = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match b.remove("__version__") {
        None => return bad_request("Instance creation request version 0 is no longer supported"),
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => return bad_request(&format!("Unsupported request data version {v}")),
    }
    for (old, new) in [("name", "instance_name"), ("os", "os_type")] {
        if let Some(v) = b.remove(old) {
            b.entry(new).or_insert(v);
        }
    }
    for required in ["instance_name", "mode", "disk_template", "disks", "nics"] {
        if b.get(required).is_none_or(Value::is_null) {
            return bad_request(&format!(
                "Parameter 'OP_INSTANCE_CREATE.{required}' fails validation"
            ));
        }
    }
    if b.get("instance_name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return bad_request("Parameter 'OP_INSTANCE_CREATE.instance_name' fails validation");
    }
    if flag(&q, "dry-run") {
        b.insert("dry_run".into(), json!(true));
    }
    job_id_answer(s.mutate(|st| st.submit("OP_INSTANCE_CREATE", "instances", b)))
}

fn simple_job(
    s: &Shared,
    op: &str,
    resource: &str,
    name: String,
    mut extra: Map<String, Value>,
) -> Response {
    extra.insert("instance_name".into(), json!(name));
    job_id_answer(s.mutate(|st| st.submit(op, resource, extra)))
}

async fn remove(State(s): S, Query(q): Q, Path(name): Path<String>) -> Response {
    let mut m = Map::new();
    if flag(&q, "dry-run") {
        m.insert("dry_run".into(), json!(true));
    }
    simple_job(&s, "OP_INSTANCE_REMOVE", "instances_name", name, m)
}

async fn startup(State(s): S, Query(q): Q, Path(name): Path<String>) -> Response {
    let mut m = Map::new();
    m.insert("force".into(), json!(flag(&q, "force")));
    m.insert("no_remember".into(), json!(flag(&q, "no_remember")));
    simple_job(&s, "OP_INSTANCE_STARTUP", "instances_name_startup", name, m)
}

async fn shutdown(State(s): S, Query(q): Q, Path(name): Path<String>, body: Bytes) -> Response {
    let mut m = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if m.get("timeout").is_some_and(|t| !t.is_u64()) {
        return bad_request("Parameter 'OP_INSTANCE_SHUTDOWN.timeout' fails validation");
    }
    m.insert("no_remember".into(), json!(flag(&q, "no_remember")));
    simple_job(
        &s,
        "OP_INSTANCE_SHUTDOWN",
        "instances_name_shutdown",
        name,
        m,
    )
}

async fn reboot(State(s): S, Query(q): Q, Path(name): Path<String>) -> Response {
    let t = q.get("type").cloned().unwrap_or_else(|| "hard".into());
    if !matches!(t.as_str(), "soft" | "hard" | "full") {
        return bad_request(&format!(
            "Parameter 'OP_INSTANCE_REBOOT.reboot_type' fails validation: {t}"
        ));
    }
    let mut m = Map::new();
    m.insert("reboot_type".into(), json!(t));
    m.insert(
        "ignore_secondaries".into(),
        json!(flag(&q, "ignore_secondaries")),
    );
    simple_job(&s, "OP_INSTANCE_REBOOT", "instances_name_reboot", name, m)
}

async fn modify(State(s): S, Path(name): Path<String>, body: Bytes) -> Response {
    match body_object(&body) {
        Ok(m) => simple_job(
            &s,
            "OP_INSTANCE_SET_PARAMS",
            "instances_name_modify",
            name,
            m,
        ),
        Err(r) => *r,
    }
}

// ---------------------------------------------------------------- groups, networks

async fn groups(State(s): S, Query(q): Q) -> Response {
    let v = s.read(|st| st.groups_json());
    if flag(&q, "bulk") {
        return py(&v);
    }
    let names: Vec<Value> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| json!({"name": g["name"], "uri": format!("/2/groups/{}", g["name"].as_str().unwrap_or_default())}))
        .collect();
    py(&names)
}

async fn networks(State(s): S, Query(q): Q) -> Response {
    let bulk = flag(&q, "bulk");
    let v = s.read(|st| {
        st.networks
            .iter()
            .map(|n| {
                if bulk {
                    st.network_json(n)
                } else {
                    json!({"name": n.cfg.name, "uri": format!("/2/networks/{}", n.cfg.name)})
                }
            })
            .collect::<Vec<_>>()
    });
    py(&v)
}

async fn network(State(s): S, Path(name): Path<String>) -> Response {
    s.read(|st| st.network(&name).map(|n| py(&st.network_json(n))))
        .unwrap_or_else(not_found)
}

/// A required opcode parameter that must be a non-empty string.
fn required_str(b: &Map<String, Value>, op: &str, key: &str) -> Result<(), Box<Response>> {
    match b.get(key).and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(Box::new(bad_request(&format!(
            "Parameter '{op}.{key}' fails validation"
        )))),
    }
}

async fn network_add(State(s): S, Query(q): Q, body: Bytes) -> Response {
    let mut b = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Some(v) = b.remove("name") {
        b.entry("network_name").or_insert(v);
    }
    for key in ["network_name", "network"] {
        if let Err(r) = required_str(&b, "OP_NETWORK_ADD", key) {
            return *r;
        }
    }
    b.insert("dry_run".into(), json!(flag(&q, "dry-run")));
    job_id_answer(s.mutate(|st| st.submit("OP_NETWORK_ADD", "networks", b)))
}

async fn network_remove(State(s): S, Query(q): Q, Path(name): Path<String>) -> Response {
    let mut m = Map::new();
    m.insert("network_name".into(), json!(name));
    m.insert("dry_run".into(), json!(flag(&q, "dry-run")));
    job_id_answer(s.mutate(|st| st.submit("OP_NETWORK_REMOVE", "networks_name", m)))
}

async fn network_connect(
    State(s): S,
    Query(q): Q,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let mut b = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    for key in ["group_name", "network_link"] {
        if let Err(r) = required_str(&b, "OP_NETWORK_CONNECT", key) {
            return *r;
        }
    }
    let mode_ok = b
        .get("network_mode")
        .and_then(Value::as_str)
        .is_some_and(|m| matches!(m, "bridged" | "routed" | "openvswitch"));
    if !mode_ok {
        return bad_request("Parameter 'OP_NETWORK_CONNECT.network_mode' fails validation");
    }
    b.insert("network_name".into(), json!(name));
    b.insert("dry_run".into(), json!(flag(&q, "dry-run")));
    job_id_answer(s.mutate(|st| st.submit("OP_NETWORK_CONNECT", "networks_name_connect", b)))
}

async fn network_disconnect(
    State(s): S,
    Query(q): Q,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let mut b = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Err(r) = required_str(&b, "OP_NETWORK_DISCONNECT", "group_name") {
        return *r;
    }
    b.insert("network_name".into(), json!(name));
    b.insert("dry_run".into(), json!(flag(&q, "dry-run")));
    job_id_answer(s.mutate(|st| st.submit("OP_NETWORK_DISCONNECT", "networks_name_disconnect", b)))
}

// ---------------------------------------------------------------- jobs

async fn job(State(s): S, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let v = s.read(|st| st.jobs.get(&id).map(|j| j.rapi_json()));
    match v {
        Some(v) => py(&v),
        None => {
            // Ganeti 3.0: 200, the id echoed, every other field null.
            let mut m = Map::new();
            for f in J_FIELDS {
                m.insert(
                    (*f).into(),
                    if *f == "id" { json!(id) } else { Value::Null },
                );
            }
            py(&Value::Object(m))
        }
    }
}

async fn cancel(State(s): S, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let (ok, msg) = s.mutate(|st| st.cancel(id));
    py(&json!([ok, msg]))
}

async fn wait(State(s): S, Path(id): Path<String>, body: Bytes) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let b = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(fields) = b.get("fields").and_then(Value::as_array).cloned() else {
        return bad_request("The 'fields' parameter should be a list");
    };
    let fields: Vec<String> = fields
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect();
    let prev_info = match b.get("previous_job_info") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(_) => return bad_request("The 'previous_job_info' parameter should be a list"),
    };
    let prev_serial = match b.get("previous_log_serial") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return bad_request("The 'previous_log_serial' parameter should be a number"),
        },
    };
    let deadline = Instant::now() + Duration::from_millis(s.config.wait_timeout_ms);
    loop {
        let mut rx = s.changes.subscribe();
        let answer = s.read(|st| {
            let job = st.jobs.get(&id)?;
            let info: Vec<Value> = fields.iter().map(|f| job.field(f)).collect();
            let logs: Vec<Value> = job
                .ops
                .iter()
                .flat_map(|o| o.log.iter())
                .filter(|e| prev_serial.is_none_or(|p| e.serial > p))
                .map(|e| json!(e))
                .collect();
            let changed =
                prev_info.as_ref() != Some(&info) || !logs.is_empty() || job.status().is_terminal();
            Some(changed.then(|| json!({"job_info": info, "log_entries": logs})))
        });
        match answer {
            None => return not_found(),
            Some(Some(v)) => return py(&v),
            Some(None) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            return py(&Value::Null);
        }
    }
}

// ---------------------------------------------------------------- serving

/// Serves `app` over TLS until `stop` is cancelled.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}
