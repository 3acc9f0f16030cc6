//! Personality files on create (Nova before 2.57, and Cyclades with
//! Synnefo's owner/group/mode): validated, bounded by `api.max_personality`
//! and `api.max_personality_bytes`, and sent to snf-image as its
//! `img_personality` OS parameter.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api_support::*;
use crate::keypairs_locks::recording_ganeti;

fn file(path: &str, text: &str) -> Value {
    use base64::Engine as _;
    json!({"path": path, "contents": base64::engine::general_purpose::STANDARD.encode(text)})
}

fn body_with(name: &str, personality: Value) -> Value {
    let mut b = create_body(name);
    b["server"]["personality"] = personality;
    b
}

#[tokio::test]
async fn personality_reaches_snf_image_within_its_limits() {
    let jobs = Arc::new(AtomicU64::new(100));
    let specs = Arc::new(Mutex::new(Vec::new()));
    let c = cloud_with(
        sqlite_store().await,
        Arc::new(recording_ganeti(jobs.clone(), specs.clone())),
        jobs,
    )
    .await;
    let token = &c.alice_token;

    // Two files: 202, and snf-image gets both as given.
    let files = json!([file("/etc/motd", "hello\n"), file("/root/.profile", "x=1")]);
    let r = post(
        &c.app,
        "/v2.1/servers",
        token,
        body_with("p-1", files.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    {
        let specs = specs.lock().unwrap();
        let sent: Value = serde_json::from_str(&specs[0].osparams["img_personality"]).unwrap();
        assert_eq!(sent, files);
    }

    // Refusals create nothing.
    let too_many: Vec<Value> = (0..6).map(|i| file(&format!("/f{i}"), "x")).collect();
    let r = post(
        &c.app,
        "/v2.1/servers",
        token,
        body_with("p-2", json!(too_many)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(
        r.body
            .to_string()
            .contains("Personality file limit exceeded")
    );
    let big = "y".repeat(10_241);
    let r = post(
        &c.app,
        "/v2.1/servers",
        token,
        body_with("p-3", json!([file("/big", &big)])),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.body.to_string().contains("too long"));
    let exact = "y".repeat(10_240);
    for (bad, why) in [
        (
            json!([{"path": "/a", "contents": "not base64!"}]),
            "cannot be decoded",
        ),
        (
            json!([{"path": "relative", "contents": ""}]),
            "absolute path",
        ),
        (json!([{"path": "/a"}]), "'contents' is a required property"),
        (
            json!([{"path": "/a", "contents": "", "owner": "root"}]),
            "'owner' was unexpected",
        ),
        (json!(["/a"]), "is not of type 'object'"),
    ] {
        let r = post(
            &c.app,
            "/v2.1/servers",
            token,
            body_with("p-4", bad.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert!(r.body.to_string().contains(why), "{bad}: {:?}", r.body);
    }
    assert_eq!(
        specs.lock().unwrap().len(),
        1,
        "no refused request reached Ganeti"
    );
    // exactly at the bound is fine
    let r = post(
        &c.app,
        "/v2.1/servers",
        token,
        body_with("p-5", json!([file("/ok", &exact)])),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);

    // Gone from 2.57 on, as in Nova.
    let r = post_v(
        &c.app,
        "/v2.1/servers",
        token,
        body_with("p-6", json!([])),
        "2.57",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Limits show the bounds before 2.57.
    let r = get(&c.app, "/v2.1/limits", token).await;
    assert_eq!(r.body["limits"]["absolute"]["maxPersonality"], 5);
    assert_eq!(r.body["limits"]["absolute"]["maxPersonalitySize"], 10240);

    // Cyclades: Synnefo's owner, group and mode pass through.
    let mut f = file("/home/user/.ssh/config", "Host *\n");
    f["owner"] = json!("user");
    f["group"] = json!("user");
    f["mode"] = json!(0o600);
    let r = post(
        &c.app,
        "/compute/v2.0/servers",
        token,
        json!({"server": {"name": "p-7", "imageRef": IMAGE, "flavorRef": 1, "personality": [f.clone()]}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let sent = specs.lock().unwrap().last().unwrap().osparams["img_personality"].clone();
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent, json!([f]));
    // and a bad mode is a 400
    let mut bad = file("/x", "");
    bad["mode"] = json!(0o1777);
    let r = post(
        &c.app,
        "/compute/v2.0/servers",
        token,
        json!({"server": {"name": "p-8", "imageRef": IMAGE, "flavorRef": 1, "personality": [bad]}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
}
