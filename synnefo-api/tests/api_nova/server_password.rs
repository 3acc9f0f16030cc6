//! Server passwords: Synnefo's `servers/{id}/password` (the create's admin
//! password, kept in memory for a while, forgotten by `DELETE`) and
//! Nova's `os-server-password` (always `""`: no metadata service posts
//! one), each for the server's owner only.

use axum::http::StatusCode;
use serde_json::json;

use crate::api_support::*;

#[tokio::test]
async fn server_passwords_as_synnefo_and_nova_hand_them_out() {
    let c = cloud().await;
    let r = post(
        &c.app,
        "/v2.1/servers",
        &c.alice_token,
        json!({"server": {"name": "pw", "imageRef": IMAGE, "flavorRef": "1", "adminPass": "Given-Secret-1"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    // a generated one too (Cyclades create)
    let r = post(
        &c.app,
        "/compute/v2.0/servers",
        &c.alice_token,
        json!({"server": {"name": "pw2", "imageRef": IMAGE, "flavorRef": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id2 = r.body["server"]["id"].to_string();
    let generated = r.body["server"]["adminPass"].as_str().unwrap().to_string();

    let synnefo = |id: &str| format!("/compute/v2.0/servers/{id}/password");
    let nova = |id: &str| format!("/v2.1/servers/{id}/os-server-password");
    let r = get(&c.app, &synnefo(&id), &c.alice_token).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"password": "Given-Secret-1"}))
    );
    let r = get(&c.app, &synnefo(&id2), &c.alice_token).await;
    assert_eq!(r.body, json!({"password": generated}));
    // Nova's: never a password here (no metadata service posts one).
    let r = get(&c.app, &nova(&id), &c.alice_token).await;
    assert_eq!(
        (r.status, r.body),
        (StatusCode::OK, json!({"password": ""}))
    );
    // Another project's server is not found, in both dialects.
    for path in [synnefo(&id), nova(&id)] {
        let r = get(&c.app, &path, &c.bob_token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        let r = delete(&c.app, &path, &c.bob_token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = get(&c.app, &synnefo(&id), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK, "bob's DELETE forgot nothing");
    // DELETE forgets it (either dialect): then 404 from Synnefo's.
    let r = delete(&c.app, &synnefo(&id), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, &synnefo(&id), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = delete(&c.app, &nova(&id2), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, &synnefo(&id2), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // unknown servers
    let r = get(&c.app, &synnefo("999999"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&c.app, &nova("999999"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
