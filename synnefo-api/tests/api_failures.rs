//! Bad input never reaches Ganeti and is never a 500; Ganeti failures are
//! rolled back or recorded as the docs say (mockall asserts what is, and
//! what is not, called).

mod api_support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use api_support::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use synnefo_core::error::BackendError;
use synnefo_core::ids::JobId;
use synnefo_core::ports::{MockGanetiBackend, VmStore};
use synnefo_core::state::OperState;

/// A Ganeti that must never be called.
fn untouchable() -> MockGanetiBackend {
    let mut g = MockGanetiBackend::new();
    g.expect_create_instance().never();
    g.expect_startup().never();
    g.expect_shutdown().never();
    g.expect_reboot().never();
    g.expect_remove().never();
    g
}

#[tokio::test]
async fn bad_create_requests_are_400s_and_never_reach_ganeti() {
    let store = sqlite_store().await;
    let c = cloud_with(store, Arc::new(untouchable()), Arc::new(AtomicU64::new(1))).await;
    let long = "x".repeat(256);
    let bad_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"server\": ".to_vec()),
        ("not json", b"hello".to_vec()),
        ("empty", b"".to_vec()),
        ("array", b"[]".to_vec()),
        ("wrong type name", serde_json::to_vec(&json!({"server": {"name": 5, "imageRef": IMAGE, "flavorRef": "1"}})).unwrap()),
        ("wrong type flavor", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": [1]}})).unwrap()),
        ("unknown key", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "bogus": 1}})).unwrap()),
        ("missing flavor", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE}})).unwrap()),
        ("unknown flavor", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "99"}})).unwrap()),
        ("non-numeric flavor", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "m1.tiny"}})).unwrap()),
        ("unknown image", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": "nope", "flavorRef": "1"}})).unwrap()),
        ("foreign private image", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": PRIVATE_IMAGE, "flavorRef": "1"}})).unwrap()),
        ("empty name", serde_json::to_vec(&json!({"server": {"name": "", "imageRef": IMAGE, "flavorRef": "1"}})).unwrap()),
        ("blank name", serde_json::to_vec(&json!({"server": {"name": "  ", "imageRef": IMAGE, "flavorRef": "1"}})).unwrap()),
        ("long name", serde_json::to_vec(&json!({"server": {"name": long, "imageRef": IMAGE, "flavorRef": "1"}})).unwrap()),
        ("control chars", serde_json::to_vec(&json!({"server": {"name": "a\u{7}b", "imageRef": IMAGE, "flavorRef": "1"}})).unwrap()),
        ("zero count", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "min_count": 0}})).unwrap()),
        ("bad count", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "max_count": "three"}})).unwrap()),
        ("min over max", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "min_count": 3, "max_count": 2}})).unwrap()),
        ("bad access ip", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "accessIPv4": "1.1.1.1.1"}})).unwrap()),
        ("v6 as access v4", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "accessIPv4": "::1"}})).unwrap()),
        ("networks list", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "networks": [{"uuid": "x"}]}})).unwrap()),
        ("key pair", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "key_name": "k"}})).unwrap()),
        ("bad az", serde_json::to_vec(&json!({"server": {"name": "a", "imageRef": IMAGE, "flavorRef": "1", "availability_zone": "mars"}})).unwrap()),
        ("no image", serde_json::to_vec(&json!({"server": {"name": "a", "flavorRef": "1"}})).unwrap()),
    ];
    for (what, body) in bad_bodies {
        let r = send(
            &c.app,
            Method::POST,
            "/v2.1/servers",
            Some(&c.alice_token),
            Some(body),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.body);
        assert_eq!(r.body["badRequest"]["code"], 400, "{what}");
        assert!(!r.body["badRequest"]["message"].as_str().unwrap().is_empty());
    }
    // From 2.37 networks is required (and "auto" is fine, but Ganeti is
    // untouchable here, so only check the refusal).
    let r = post_v(
        &c.app,
        "/v2.1/servers",
        &c.alice_token,
        create_body("a"),
        "2.37",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Huge bodies are 413, not 500.
    let huge = format!("{{\"server\": {{\"name\": \"{}\"}}}}", "x".repeat(100_000));
    let r = send(
        &c.app,
        Method::POST,
        "/v2.1/servers",
        Some(&c.alice_token),
        Some(huge.into_bytes()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["overLimit"]["code"], 413);
    // Nothing was stored.
    let r = get(&c.app, "/v2.1/servers", &c.alice_token).await;
    assert_eq!(r.body["servers"], json!([]));
}

#[tokio::test]
async fn bad_actions_are_400s() {
    let jobs = Arc::new(AtomicU64::new(1));
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(accepting_ganeti(jobs.clone())),
        jobs,
    )
    .await;
    let id = active(&c, &c.alice_token, "x").await;
    let path = format!("/v2.1/servers/{id}/action");
    for body in [
        json!({}),
        json!({"reboot": {}}),
        json!({"reboot": {"type": "GENTLE"}}),
        json!({"os-start": null, "os-stop": null}),
        json!({"resize": {}}),
        json!({"resize": {"flavorRef": "2", "size": 1}}),
        json!({"os-getVNCConsole": {"type": "bogus"}}),
    ] {
        let r = post(&c.app, &path, &c.alice_token, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
    }
    // Nova's schema takes any value for confirmResize (tempest sends {}):
    // the request reaches the state check, 409 on a server not resized.
    let r = post(&c.app, &path, &c.alice_token, json!({"confirmResize": {}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        json!({"server": {"name": ""}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        json!({"server": {"nom": "x"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}/metadata"),
        &c.alice_token,
        json!({"metadata": {"k": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}/metadata"),
        &c.alice_token,
        json!({"metadata": {"": "v"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn build_in_progress_refuses_actions_without_calling_ganeti() {
    let mut g = MockGanetiBackend::new();
    g.expect_create_instance()
        .times(1)
        .returning(|_| Ok(JobId(7)));
    g.expect_startup().never();
    g.expect_shutdown().never();
    g.expect_reboot().never();
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(g),
        Arc::new(AtomicU64::new(1)),
    )
    .await;
    let id = create(&c.app, &c.alice_token, "b").await;
    for body in [
        json!({"os-stop": null}),
        json!({"os-start": null}),
        json!({"reboot": {"type": "SOFT"}}),
    ] {
        let r = post(
            &c.app,
            &format!("/v2.1/servers/{id}/action"),
            &c.alice_token,
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    }
}

#[tokio::test]
async fn ganeti_refusing_a_create_puts_the_server_in_error_with_a_fault() {
    let mut g = MockGanetiBackend::new();
    g.expect_create_instance().times(1).returning(|_| {
        Err(BackendError::Rejected(
            "Instance name snf-1 already in use".into(),
        ))
    });
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(g),
        Arc::new(AtomicU64::new(1)),
    )
    .await;
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, create_body("dup")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["status"], "ERROR");
    assert_eq!(r.body["server"]["fault"]["code"], 500);
    assert!(
        r.body["server"]["fault"]["message"]
            .as_str()
            .unwrap()
            .contains("already in use")
    );
}

#[tokio::test]
async fn ganeti_unreachable_on_create_rolls_back_and_frees_quota() {
    let mut g = MockGanetiBackend::new();
    g.expect_create_instance()
        .times(1)
        .returning(|_| Err(BackendError::Unavailable("connection refused".into())));
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(g),
        Arc::new(AtomicU64::new(1)),
    )
    .await;
    set_quota(&c.store, &c.pa, 1).await;
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, create_body("x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["serviceUnavailable"]["code"], 503);
    let r = get(&c.app, "/v2.1/servers", &c.alice_token).await;
    assert_eq!(r.body["servers"], json!([]));
    let r = get(&c.app, "/v2.1/limits", &c.alice_token).await;
    assert_eq!(r.body["limits"]["absolute"]["totalInstancesUsed"], 0);
}

#[tokio::test]
async fn ganeti_unreachable_on_an_action_rolls_the_action_back() {
    let mut g = MockGanetiBackend::new();
    g.expect_create_instance().returning(|_| Ok(JobId(10)));
    g.expect_shutdown()
        .times(1)
        .returning(|_, _, _| Err(BackendError::Unavailable("timeout".into())));
    g.expect_remove()
        .times(1)
        .returning(|_, _| Err(BackendError::Unavailable("timeout".into())));
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(g),
        Arc::new(AtomicU64::new(1)),
    )
    .await;
    let id = active(&c, &c.alice_token, "x").await;
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.alice_token,
        json!({"os-stop": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let vm = c.store.vm(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(vm.state.action(), None, "the pending stop is rolled back");
    assert_eq!(vm.state.operstate(), OperState::Started);
    let r = delete(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a failed delete leaves the server visible"
    );
    assert_eq!(r.body["server"]["status"], "ACTIVE");
}

#[tokio::test]
async fn deleting_what_ganeti_does_not_have_destroys_it() {
    let mut g = MockGanetiBackend::new();
    g.expect_create_instance().returning(|_| Ok(JobId(10)));
    g.expect_remove()
        .times(1)
        .returning(|_, i| Err(BackendError::NotFound(i.to_string())));
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(g),
        Arc::new(AtomicU64::new(1)),
    )
    .await;
    let id = active(&c, &c.alice_token, "x").await;
    let r = delete(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let vm = c.store.vm(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(vm.state.operstate(), OperState::Destroyed);
    assert!(vm.state.deleted());
}

#[tokio::test]
async fn no_usable_backend_is_503_and_stores_nothing() {
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(untouchable()),
        Arc::new(AtomicU64::new(1)),
    )
    .await;
    use synnefo_core::ports::BackendStore;
    for b in c.store.list_backends().await.unwrap() {
        c.store
            .set_backend_flags(b.id, Some(true), None)
            .await
            .unwrap();
    }
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, create_body("x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(c.store.count_vms().await.unwrap(), 0);
}

#[tokio::test]
async fn the_clis_image_to_local_mapping_is_accepted_other_mappings_are_not() {
    let jobs = Arc::new(AtomicU64::new(1));
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(accepting_ganeti(jobs.clone())),
        jobs,
    )
    .await;
    // What python-openstackclient 10 sends for `server create --image X`.
    let bdm = json!([{"uuid": IMAGE, "boot_index": 0, "source_type": "image", "destination_type": "local", "delete_on_termination": true}]);
    let body = json!({"server": {"name": "osc", "imageRef": IMAGE, "flavorRef": "1", "networks": "auto",
        "min_count": 1, "max_count": 1, "block_device_mapping_v2": bdm}});
    let r = post_v(&c.app, "/v2.1/servers", &c.alice_token, body, "2.79").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    // The image may come from the mapping alone.
    let body = json!({"server": {"name": "osc2", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": bdm}});
    let r = post_v(&c.app, "/v2.1/servers", &c.alice_token, body, "2.79").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["image"]["id"], IMAGE);
    for bad in [
        json!([{"uuid": "vol", "boot_index": 0, "source_type": "volume", "destination_type": "volume"}]),
        json!([{"uuid": IMAGE, "boot_index": 0, "source_type": "image", "destination_type": "volume", "volume_size": 10}]),
    ] {
        let body = json!({"server": {"name": "x", "imageRef": IMAGE, "flavorRef": "1", "networks": "auto", "block_device_mapping_v2": bad}});
        let r = post_v(&c.app, "/v2.1/servers", &c.alice_token, body, "2.79").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    }
}
