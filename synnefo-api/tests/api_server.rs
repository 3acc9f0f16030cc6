//! The router on a real port-0 listener, spoken to over HTTP.

mod api_support;

use api_support::*;
use serde_json::json;

#[tokio::test]
async fn real_listener_round_trip() {
    let c = cloud().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = c.app.clone();
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    let r = http
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"id": "default"}, "password": "alice-pw"}}},
            "scope": {"project": {"name": "project-a", "domain": {"id": "default"}}}
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let tok = r.headers()["x-subject-token"].to_str().unwrap().to_string();

    let r = http
        .post(format!("{base}/compute/v2.1/servers"))
        .header("x-auth-token", &tok)
        .header("openstack-api-version", "compute 2.79")
        .json(&json!({"server": {"name": "net", "imageRef": IMAGE, "flavorRef": "2", "networks": "auto"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["openstack-api-version"], "compute 2.79");
    assert!(r.headers().contains_key("x-openstack-request-id"));
    let id = r.json::<serde_json::Value>().await.unwrap()["server"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = http
        .get(format!("{base}/compute/v2.1/servers/detail"))
        .header("x-auth-token", &tok)
        .header("openstack-api-version", "compute 2.79")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["servers"][0]["id"], id);
    assert_eq!(body["servers"][0]["flavor"]["original_name"], "m1.small");

    token.cancel();
    server.await.unwrap().unwrap();
}
