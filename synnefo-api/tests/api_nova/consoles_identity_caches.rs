//! The compute API's consoles, Keystone's password flow, the operations
//! endpoints, and the caches that must never hide a write.

use axum::http::{Method, StatusCode};
use serde_json::json;
use synnefo_core::state::OpCode;

use crate::api_support::*;

#[tokio::test]
async fn consoles_by_microversion() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use synnefo_core::service::compute::{ConsoleForwarder, ProxyEndpoint};

    struct Fwd;
    #[async_trait::async_trait]
    impl ConsoleForwarder for Fwd {
        async fn forward(
            &self,
            host: &str,
            port: u16,
            password: &str,
            _label: &str,
        ) -> Result<ProxyEndpoint, synnefo_core::ServiceError> {
            assert_eq!((host, port), ("node1.example.org", 11000));
            assert_eq!(password.len(), 12);
            Ok(ProxyEndpoint {
                host: "vnc.example.org".into(),
                port: 25901,
            })
        }
    }
    let jobs = Arc::new(AtomicU64::new(1));
    let store = sqlite_store().await;
    let g = Arc::new(accepting_ganeti(jobs.clone()));
    let c = cloud_with_state(
        store,
        move |s| {
            let mut cfg = config();
            cfg.novnc_url = Some("http://vnc.example.org:6080/console.html".into());
            synnefo_api::ApiState::new(s, g, cfg).with_console(Arc::new(Fwd))
        },
        jobs,
    )
    .await;
    let building = create(&c.app, &c.alice_token, "b").await;
    let id = active(&c, &c.alice_token, "c").await;
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.alice_token,
        json!({"os-getVNCConsole": {"type": "novnc"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["console"]["type"], "novnc");
    // Nova's form, the one-time password as the token; never the port.
    let url = r.body["console"]["url"].as_str().unwrap();
    let token = url
        .strip_prefix("http://vnc.example.org:6080/console.html?path=%3Ftoken%3D")
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 12, "{url}");
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()), "{url}");
    assert!(!url.contains("25901") && !url.contains("password"), "{url}");
    let r = post_v(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.alice_token,
        json!({"os-getVNCConsole": {"type": "novnc"}}),
        "2.6",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "os-getVNCConsole is gone from 2.6"
    );
    let body = json!({"remote_console": {"protocol": "vnc", "type": "novnc"}});
    let r = post_v(
        &c.app,
        &format!("/v2.1/servers/{id}/remote-consoles"),
        &c.alice_token,
        body.clone(),
        "2.6",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["remote_console"]["protocol"], "vnc");
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/remote-consoles"),
        &c.alice_token,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "remote-consoles needs 2.6");
    let r = post_v(
        &c.app,
        &format!("/v2.1/servers/{building}/remote-consoles"),
        &c.alice_token,
        body,
        "2.6",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = post_v(
        &c.app,
        &format!("/v2.1/servers/{id}/remote-consoles"),
        &c.alice_token,
        json!({"remote_console": {"protocol": "spice", "type": "spice-html5"}}),
        "2.6",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn keystone_password_flow() {
    let c = cloud().await;
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"}, "password": "alice-pw"}}},
        "scope": {"project": {"name": "project-a", "domain": {"id": "default"}}}
    }});
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(serde_json::to_vec(&body).unwrap()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = r.headers["x-subject-token"].to_str().unwrap().to_string();
    let t = &r.body["token"];
    assert_eq!(t["project"]["name"], "project-a");
    assert_eq!(t["user"]["domain"]["id"], "default");
    let catalog = t["catalog"].as_array().unwrap();
    let compute = catalog.iter().find(|s| s["type"] == "compute").unwrap();
    assert_eq!(
        compute["endpoints"][0]["url"],
        "http://api.example.org/compute/v2.1"
    );
    assert_eq!(compute["endpoints"][0]["interface"], "public");
    assert!(catalog.iter().any(|s| s["type"] == "image"));
    // The token works on compute and validates.
    let r = get(&c.app, "/compute/v2.1/servers", &token).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(
        &c.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        Some(&token),
        None,
        &[("x-subject-token", token.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token"]["user"]["name"], "alice");
    // Bob may not inspect alice's token.
    let r = send(
        &c.app,
        Method::GET,
        "/identity/v3/auth/tokens",
        Some(&c.bob_token),
        None,
        &[("x-subject-token", token.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Revoked tokens stop working.
    let r = send(
        &c.app,
        Method::DELETE,
        "/identity/v3/auth/tokens",
        Some(&c.alice_token),
        None,
        &[("x-subject-token", token.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, "/compute/v2.1/servers", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Wrong password, unknown user, foreign project, other domain: 401 in Keystone's shape.
    for (user, pw, project, domain) in [
        ("alice", "nope", "project-a", "Default"),
        ("mallory", "x", "project-a", "Default"),
        ("alice", "alice-pw", "project-b", "Default"),
        ("alice", "alice-pw", "project-a", "Other"),
    ] {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": domain}, "password": pw}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}
        }});
        let r = send(
            &c.app,
            Method::POST,
            "/identity/v3/auth/tokens",
            None,
            Some(serde_json::to_vec(&body).unwrap()),
            &[],
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{user}/{project}/{domain}"
        );
        assert_eq!(r.body["error"]["code"], 401);
    }
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v3/auth/tokens",
        None,
        Some(b"{nope".to_vec()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], 400);
    let r = send(&c.app, Method::GET, "/identity", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(r.body["versions"]["values"][0]["id"], "v3.14");
}

#[tokio::test]
async fn operations_endpoints() {
    let c = cloud().await;
    let r = send(&c.app, Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    get(&c.app, "/v2.1/servers", &c.alice_token).await;
    let r = send(&c.app, Method::GET, "/metrics", None, None, &[]).await;
    let text = String::from_utf8(r.raw).unwrap();
    assert!(
        text.contains(
            "synnefo_api_requests_total{method=\"GET\",route=\"/v2.1/servers\",status=\"200\"} 1"
        ),
        "{text}"
    );
    let r = send(&c.app, Method::GET, "/openapi.json", None, None, &[]).await;
    assert_eq!(r.body["openapi"], "3.1.0");
    assert!(r.body["paths"]["/v2.1/servers/{id}"]["get"].is_object());
    let r = send(&c.app, Method::GET, "/no/such/path", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["code"], 404);
    let r = send(
        &c.app,
        Method::PATCH,
        "/v2.1/servers",
        Some(&c.alice_token),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn caches_never_hide_this_process_writes() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;
    let jobs = Arc::new(AtomicU64::new(1));
    let g = Arc::new(accepting_ganeti(jobs.clone()));
    let c = cloud_with_state(
        sqlite_store().await,
        move |s| {
            let mut cfg = config();
            cfg.list_cache_bytes = 1 << 20;
            cfg.token_cache_ttl = Some(Duration::from_secs(60));
            synnefo_api::ApiState::new(s, g, cfg)
        },
        jobs,
    )
    .await;
    let r = get(&c.app, "/v2.1/servers/detail", &c.alice_token).await;
    assert_eq!(r.body["servers"], json!([]));
    let id = create(&c.app, &c.alice_token, "fresh").await;
    let r = get(&c.app, "/v2.1/servers/detail", &c.alice_token).await;
    assert_eq!(
        r.body["servers"][0]["id"], id,
        "the create cleared the cached page"
    );
    // Bob's page is his own even with the cache on.
    let r = get(&c.app, "/v2.1/servers/detail", &c.bob_token).await;
    assert_eq!(r.body["servers"], json!([]));
    // A token revoked through this process stops at once.
    let r = send(
        &c.app,
        Method::DELETE,
        "/identity/v3/auth/tokens",
        Some(&c.alice_token),
        None,
        &[("x-subject-token", c.alice_token.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, "/v2.1/servers/detail", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Two API processes over one database, listing cache on in both: every
/// write, through either process or straight to the store as a dispatcher
/// does, shows in the other's next listing. No TTL, no coordination.
#[tokio::test]
async fn listing_cache_is_exact_across_processes() {
    use synnefo_core::ports::VmStore;
    let c = cloud().await;
    let other = synnefo_api::router(synnefo_api::ApiState::new(
        c.store.clone() as std::sync::Arc<dyn synnefo_core::ports::Store>,
        std::sync::Arc::new(accepting_ganeti(c.jobs.clone())),
        config(),
    ));
    let detail = |app: &axum::Router| {
        let (app, token) = (app.clone(), c.alice_token.clone());
        async move { get(&app, "/v2.1/servers/detail", &token).await.body }
    };
    assert_eq!(detail(&other).await["servers"], json!([]));

    let id = create(&c.app, &c.alice_token, "first").await;
    let page = detail(&other).await;
    assert_eq!(page["servers"][0]["id"], id.as_str());
    assert_eq!(page["servers"][0]["status"], "BUILD");
    assert_eq!(
        detail(&other).await,
        page,
        "a repeated read is the same page"
    );

    // the dispatcher's write, straight to the store
    let job = pending_job(&c.store, &id).await;
    complete(&c.store, &id, OpCode::InstanceCreate, job).await;
    let page = detail(&other).await;
    assert_eq!(page["servers"][0]["status"], "ACTIVE");
    assert!(
        page["servers"][0]["addresses"]["public"].is_array(),
        "{page}"
    );

    // a rename and metadata through the first process
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        json!({"server": {"name": "renamed"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(detail(&other).await["servers"][0]["name"], "renamed");
    let r = get(&other, "/v2.1/servers", &c.alice_token).await;
    assert_eq!(r.body["servers"][0]["name"], "renamed");
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/metadata"),
        &c.alice_token,
        json!({"metadata": {"role": "db"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        detail(&other).await["servers"][0]["metadata"],
        json!({"role": "db"})
    );
    // and one more straight to the store
    let vm: synnefo_core::ids::VmId = id.parse().unwrap();
    c.store
        .set_vm_metadata(
            vm,
            &std::collections::BTreeMap::from([("role".to_string(), "web".to_string())]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        detail(&other).await["servers"][0]["metadata"],
        json!({"role": "web"})
    );
    // a second server, created through the other process
    let second = create(&other, &c.alice_token, "second").await;
    let page = detail(&c.app).await;
    let ids: Vec<_> = page["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![second, id]);
    // Bob's project has its own pages
    let r = get(&other, "/v2.1/servers/detail", &c.bob_token).await;
    assert_eq!(r.body["servers"], json!([]));
}
