//! Shared fixtures of the API integration tests (included with `mod
//! api_support;` by the `api_*` test files; as a test target of its own it
//! holds no tests).
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use synnefo_api::{ApiConfig, ApiState, router};
use synnefo_core::ids::{JobId, VmId};
use synnefo_core::messages::Notification;
use synnefo_core::model::{Flavor, Image, Project, Quota, User};
use synnefo_core::ports::{
    BackendStore, CatalogStore, ConsoleInfo, GanetiBackend, IdentityStore, MockGanetiBackend, Store,
};
use synnefo_core::service::identity::{Identity, hash_password};
use synnefo_core::state::{JobStatus, OpCode, OpStatusEvent};
use synnefo_core::store::SeaStore;
use tower::ServiceExt;

pub const IMAGE: &str = "6b2a1e2f-0d3c-4a4e-9b8f-1c2d3e4f5a6b";
pub const PRIVATE_IMAGE: &str = "7c3b2f30-1e4d-4b5f-8c9a-2d3e4f5a6b7c";

/// A seeded cloud: two projects with one user each.
pub struct Cloud {
    pub store: Arc<SeaStore>,
    pub alice: User,
    pub bob: User,
    pub pa: Project,
    pub pb: Project,
    pub alice_token: String,
    pub bob_token: String,
    pub app: Router,
    pub jobs: Arc<AtomicU64>,
}

pub async fn sqlite_store() -> Arc<SeaStore> {
    let store = SeaStore::connect("sqlite::memory:", 1)
        .await
        .expect("sqlite");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// Seeds users, projects, flavors, images and one backend.
pub async fn seed(store: &Arc<SeaStore>) -> (User, User, Project, Project) {
    let alice = store
        .create_user("alice", &hash_password("alice-pw").unwrap(), false)
        .await
        .unwrap();
    let bob = store
        .create_user("bob", &hash_password("bob-pw").unwrap(), false)
        .await
        .unwrap();
    let pa = store.create_project("project-a").await.unwrap();
    let pb = store.create_project("project-b").await.unwrap();
    store.add_member(&alice.id, &pa.id).await.unwrap();
    store.add_member(&bob.id, &pb.id).await.unwrap();
    for (name, vcpus, ram, disk) in [
        ("m1.tiny", 1, 512, 1),
        ("m1.small", 1, 2048, 20),
        ("m1.large", 4, 8192, 80),
    ] {
        store
            .create_flavor(&Flavor {
                id: synnefo_core::ids::FlavorId(1),
                name: name.into(),
                vcpus,
                ram_mib: ram,
                disk_gib: disk,
                disk_template: "plain".into(),
                is_public: true,
                deleted: false,
            })
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    let mut osparams = BTreeMap::new();
    osparams.insert("img_id".to_string(), "debian".to_string());
    store
        .put_image(&Image {
            id: IMAGE.into(),
            name: "debian-12".into(),
            os_type: "snf-image+default".into(),
            osparams,
            status: "active".into(),
            metadata: BTreeMap::from([("os".to_string(), "debian".to_string())]),
            min_disk_gib: 1,
            min_ram_mib: 256,
            is_public: true,
            owner: None,
            created: now,
            updated: now,
        })
        .await
        .unwrap();
    store
        .put_image(&Image {
            id: PRIVATE_IMAGE.into(),
            name: "bobs-image".into(),
            os_type: "snf-image+default".into(),
            osparams: BTreeMap::new(),
            status: "active".into(),
            metadata: BTreeMap::new(),
            min_disk_gib: 0,
            min_ram_mib: 0,
            is_public: false,
            owner: Some(pb.id.clone()),
            created: now,
            updated: now,
        })
        .await
        .unwrap();
    store
        .upsert_backend("cluster1", "ganeti.example.org", 5080)
        .await
        .unwrap();
    (alice, bob, pa, pb)
}

/// A Ganeti mock that accepts everything with increasing job ids.
pub fn accepting_ganeti(jobs: Arc<AtomicU64>) -> MockGanetiBackend {
    let mut g = MockGanetiBackend::new();
    let j = jobs.clone();
    g.expect_create_instance()
        .returning(move |_| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    let j = jobs.clone();
    g.expect_startup()
        .returning(move |_, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    let j = jobs.clone();
    g.expect_shutdown()
        .returning(move |_, _, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    let j = jobs.clone();
    g.expect_reboot()
        .returning(move |_, _, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    let j = jobs.clone();
    g.expect_remove()
        .returning(move |_, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    g.expect_console().returning(|_, _| {
        Ok(ConsoleInfo {
            kind: "vnc".into(),
            host: Some("node1.example.org".into()),
            port: Some(11000),
            message: None,
        })
    });
    g
}

pub fn config() -> ApiConfig {
    ApiConfig {
        public_url: "http://api.example.org".into(),
        max_body_bytes: 64 * 1024,
        ..ApiConfig::default()
    }
}

pub async fn token(store: &Arc<SeaStore>, user: &User, project: &Project) -> String {
    let id = Identity::new(
        store.clone() as Arc<dyn Store>,
        std::time::Duration::from_secs(3600),
    );
    id.issue(user.clone(), project.clone())
        .await
        .unwrap()
        .secret
}

/// A cloud on SQLite with a given Ganeti.
pub async fn cloud_with(
    store: Arc<SeaStore>,
    ganeti: Arc<dyn GanetiBackend>,
    jobs: Arc<AtomicU64>,
) -> Cloud {
    cloud_with_state(store, |s| ApiState::new(s, ganeti, config()), jobs).await
}

pub async fn cloud_with_state(
    store: Arc<SeaStore>,
    make: impl FnOnce(Arc<dyn Store>) -> ApiState,
    jobs: Arc<AtomicU64>,
) -> Cloud {
    let (alice, bob, pa, pb) = seed(&store).await;
    let alice_token = token(&store, &alice, &pa).await;
    let bob_token = token(&store, &bob, &pb).await;
    let app = router(make(store.clone() as Arc<dyn Store>));
    Cloud {
        store,
        alice,
        bob,
        pa,
        pb,
        alice_token,
        bob_token,
        app,
        jobs,
    }
}

/// The default cloud: SQLite and an accepting Ganeti mock.
pub async fn cloud() -> Cloud {
    let jobs = Arc::new(AtomicU64::new(100));
    let store = sqlite_store().await;
    cloud_with(store, Arc::new(accepting_ganeti(jobs.clone())), jobs).await
}

/// A response, decoded.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

pub async fn send(
    app: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        raw,
    }
}

pub async fn get(app: &Router, path: &str, token: &str) -> Resp {
    send(app, Method::GET, path, Some(token), None, &[]).await
}

pub async fn get_v(app: &Router, path: &str, token: &str, version: &str) -> Resp {
    let h = format!("compute {version}");
    send(
        app,
        Method::GET,
        path,
        Some(token),
        None,
        &[("openstack-api-version", h.as_str())],
    )
    .await
}

pub async fn post(app: &Router, path: &str, token: &str, body: Value) -> Resp {
    send(
        app,
        Method::POST,
        path,
        Some(token),
        Some(serde_json::to_vec(&body).unwrap()),
        &[],
    )
    .await
}

pub async fn post_v(app: &Router, path: &str, token: &str, body: Value, version: &str) -> Resp {
    let h = format!("compute {version}");
    send(
        app,
        Method::POST,
        path,
        Some(token),
        Some(serde_json::to_vec(&body).unwrap()),
        &[("openstack-api-version", h.as_str())],
    )
    .await
}

pub async fn put(app: &Router, path: &str, token: &str, body: Value) -> Resp {
    send(
        app,
        Method::PUT,
        path,
        Some(token),
        Some(serde_json::to_vec(&body).unwrap()),
        &[],
    )
    .await
}

pub async fn delete(app: &Router, path: &str, token: &str) -> Resp {
    send(app, Method::DELETE, path, Some(token), None, &[]).await
}

pub fn create_body(name: &str) -> Value {
    serde_json::json!({"server": {"name": name, "imageRef": IMAGE, "flavorRef": "1"}})
}

/// Creates a server as `token`; returns its id.
pub async fn create(app: &Router, token: &str, name: &str) -> String {
    let r = post(app, "/v2.1/servers", token, create_body(name)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    r.body["server"]["id"].as_str().unwrap().to_string()
}

/// What the dispatcher would do when a job succeeds.
pub async fn complete(store: &Arc<SeaStore>, id: &str, opcode: OpCode, job: u64) {
    let vm: VmId = id.parse().unwrap();
    let n = Notification::OpStatus {
        vm,
        event: OpStatusEvent {
            job_id: JobId(job),
            op_index: 0,
            opcode,
            status: JobStatus::Success,
            log_msg: None,
            error: None,
            time_us: chrono::Utc::now().timestamp_micros(),
        },
        nics: Some(vec![synnefo_core::model::Nic {
            index: 0,
            ip: Some(format!("192.0.2.{}", vm.0 % 250 + 1)),
            mac: Some("aa:00:00:00:00:01".into()),
            network: Some("public".into()),
            link: Some("br0".into()),
            mode: Some("bridged".into()),
        }]),
        beparams: None,
    };
    synnefo_core::service::apply_notification(&**store, &n)
        .await
        .unwrap();
}

/// The job id recorded for a VM's pending action.
pub async fn pending_job(store: &Arc<SeaStore>, id: &str) -> u64 {
    use synnefo_core::ports::VmStore;
    let vm = store.vm(id.parse().unwrap()).await.unwrap().unwrap();
    vm.state
        .action()
        .and_then(|a| a.job_id)
        .map(|j| j.0)
        .unwrap_or(0)
}

/// Creates a server and makes it ACTIVE.
pub async fn active(c: &Cloud, token: &str, name: &str) -> String {
    let id = create(&c.app, token, name).await;
    let job = pending_job(&c.store, &id).await;
    complete(&c.store, &id, OpCode::InstanceCreate, job).await;
    id
}

pub async fn set_quota(store: &Arc<SeaStore>, project: &Project, servers: i64) {
    store
        .set_quota(
            &project.id,
            Quota {
                servers: Some(servers),
                vcpus: None,
                ram_mib: None,
            },
        )
        .await
        .unwrap();
}
