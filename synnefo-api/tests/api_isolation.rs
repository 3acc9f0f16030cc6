//! Tenant isolation: project B's token against every endpoint that names
//! one of project A's servers answers 404 (never 403, never data), and A's
//! listings never show B's servers.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use synnefo_core::ports::VmStore;

#[tokio::test]
async fn two_projects_times_every_endpoint() {
    let c = cloud().await;
    let a = active(&c, &c.alice_token, "a-server").await;
    let b = active(&c, &c.bob_token, "b-server").await;
    c.store
        .set_vm_metadata(
            a.parse().unwrap(),
            &[("k".to_string(), "v".to_string())].into(),
            true,
        )
        .await
        .map(|_| ())
        .unwrap_or_else(|e| panic!("{e}"));

    let body = |v: serde_json::Value| Some(serde_json::to_vec(&v).unwrap());
    // (method, path template, body, microversion)
    let cases: Vec<(Method, String, Option<Vec<u8>>, &str)> = vec![
        (Method::GET, "/v2.1/servers/{id}".into(), None, "2.1"),
        (
            Method::GET,
            "/compute/v2.1/servers/{id}".into(),
            None,
            "2.79",
        ),
        (
            Method::PUT,
            "/v2.1/servers/{id}".into(),
            body(json!({"server": {"name": "stolen"}})),
            "2.1",
        ),
        (Method::DELETE, "/v2.1/servers/{id}".into(), None, "2.1"),
        (
            Method::POST,
            "/v2.1/servers/{id}/action".into(),
            body(json!({"reboot": {"type": "SOFT"}})),
            "2.1",
        ),
        (
            Method::POST,
            "/v2.1/servers/{id}/action".into(),
            body(json!({"os-stop": null})),
            "2.1",
        ),
        (
            Method::POST,
            "/v2.1/servers/{id}/action".into(),
            body(json!({"os-start": null})),
            "2.1",
        ),
        (
            Method::POST,
            "/v2.1/servers/{id}/action".into(),
            body(json!({"os-getVNCConsole": {"type": "novnc"}})),
            "2.1",
        ),
        (
            Method::POST,
            "/v2.1/servers/{id}/remote-consoles".into(),
            body(json!({"remote_console": {"protocol": "vnc", "type": "novnc"}})),
            "2.6",
        ),
        (Method::GET, "/v2.1/servers/{id}/ips".into(), None, "2.1"),
        (
            Method::GET,
            "/v2.1/servers/{id}/ips/public".into(),
            None,
            "2.1",
        ),
        (
            Method::GET,
            "/v2.1/servers/{id}/metadata".into(),
            None,
            "2.1",
        ),
        (
            Method::POST,
            "/v2.1/servers/{id}/metadata".into(),
            body(json!({"metadata": {"x": "y"}})),
            "2.1",
        ),
        (
            Method::PUT,
            "/v2.1/servers/{id}/metadata".into(),
            body(json!({"metadata": {}})),
            "2.1",
        ),
        (
            Method::GET,
            "/v2.1/servers/{id}/metadata/k".into(),
            None,
            "2.1",
        ),
        (
            Method::PUT,
            "/v2.1/servers/{id}/metadata/k".into(),
            body(json!({"meta": {"k": "w"}})),
            "2.1",
        ),
        (
            Method::DELETE,
            "/v2.1/servers/{id}/metadata/k".into(),
            None,
            "2.1",
        ),
        (
            Method::GET,
            "/compute/v2.0/servers/{id}".into(),
            None,
            "2.1",
        ),
        (
            Method::PUT,
            "/compute/v2.0/servers/{id}".into(),
            body(json!({"server": {"name": "stolen"}})),
            "2.1",
        ),
        (
            Method::DELETE,
            "/compute/v2.0/servers/{id}".into(),
            None,
            "2.1",
        ),
        (
            Method::POST,
            "/compute/v2.0/servers/{id}/action".into(),
            body(json!({"shutdown": {}})),
            "2.1",
        ),
        (
            Method::POST,
            "/compute/v2.0/servers/{id}/action".into(),
            body(json!({"console": {"type": "vnc"}})),
            "2.1",
        ),
        (
            Method::GET,
            "/compute/v2.0/servers/{id}/metadata".into(),
            None,
            "2.1",
        ),
        (
            Method::GET,
            "/compute/v2.0/servers/{id}/metadata/k".into(),
            None,
            "2.1",
        ),
    ];
    for (token, victim, label) in [
        (&c.bob_token, &a, "bob->a"),
        (&c.alice_token, &b, "alice->b"),
    ] {
        for (method, path, body, v) in &cases {
            let path = path.replace("{id}", victim);
            let h = format!("compute {v}");
            let r = send(
                &c.app,
                method.clone(),
                &path,
                Some(token),
                body.clone(),
                &[("openstack-api-version", h.as_str())],
            )
            .await;
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{label} {method} {path}: {:?}",
                r.body
            );
            assert!(
                !String::from_utf8_lossy(&r.raw).contains("-server"),
                "{label} {path} leaked a name"
            );
        }
    }
    // Nothing changed for the owners.
    let r = get(&c.app, &format!("/v2.1/servers/{a}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["name"], "a-server");
    assert_eq!(r.body["server"]["status"], "ACTIVE");
    assert_eq!(r.body["server"]["metadata"], json!({"k": "v"}));

    // Listings are per project, in every dialect and with every filter.
    for (token, mine, theirs) in [(&c.alice_token, &a, &b), (&c.bob_token, &b, &a)] {
        for path in [
            "/v2.1/servers",
            "/v2.1/servers/detail",
            "/compute/v2.1/servers/detail?status=ACTIVE",
            "/v2.1/servers/detail?name=server",
            "/v2.1/servers/detail?changes-since=2000-01-01",
        ] {
            let r = get(&c.app, path, token).await;
            let ids: Vec<String> = r.body["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(&ids, std::slice::from_ref(mine), "{path}");
        }
        let r = get(&c.app, "/compute/v2.0/servers/detail", token).await;
        let ids: Vec<String> = r.body["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].to_string())
            .collect();
        assert_eq!(&ids, std::slice::from_ref(mine));
        // The other project's id is not a valid page marker.
        let r = get(&c.app, &format!("/v2.1/servers?marker={theirs}"), token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    // Limits are per project.
    let r = get(&c.app, "/v2.1/limits", &c.alice_token).await;
    assert_eq!(r.body["limits"]["absolute"]["totalInstancesUsed"], 1);
}
