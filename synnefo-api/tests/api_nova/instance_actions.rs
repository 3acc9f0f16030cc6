//! `os-instance-actions`: what tempest's `test_instance_actions` and
//! `openstack server event list/show` read.

use axum::http::StatusCode;
use serde_json::json;
use synnefo_core::state::OpCode;

use crate::api_support::*;

fn actions(body: &serde_json::Value) -> Vec<String> {
    body["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_accepted_request_is_in_the_history_with_its_request_id() {
    let c = cloud().await;
    let r = post(
        &c.app,
        "/v2.1/servers",
        &c.alice_token,
        create_body("audited"),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    let create_request = r.headers["x-compute-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let job = pending_job(&c.store, &id).await;
    complete(&c.store, &id, OpCode::InstanceCreate, job).await;

    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.alice_token,
        json!({"reboot": {"type": "HARD"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let reboot_request = r.headers["x-compute-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    // refused by the state machine (409): not an action on record
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.alice_token,
        json!({"os-start": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);

    let r = get(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(actions(&r.body), ["reboot", "create"], "newest first");
    let first = &r.body["instanceActions"][1];
    assert_eq!(first["request_id"], create_request.as_str());
    assert_eq!(first["instance_uuid"], id.as_str());
    assert_eq!(first["user_id"], c.alice.id.as_str());
    assert_eq!(first["project_id"], c.pa.id.as_str());
    assert!(first["message"].is_null());
    // 2.1 shape: exactly Nova's keys (tempest's schema forbids others)
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "instance_uuid",
            "message",
            "project_id",
            "request_id",
            "start_time",
            "user_id"
        ]
    );

    let r = get(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions/{reboot_request}"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["instanceAction"]["action"], "reboot");
    assert!(
        r.body["instanceAction"].get("events").is_none(),
        "2.1, not an operator"
    );
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions/{reboot_request}"),
        &c.alice_token,
        "2.58",
    )
    .await;
    let a = &r.body["instanceAction"];
    assert!(a["updated_at"].is_string());
    assert_eq!(a["events"][0]["event"], "ganeti_submit_reboot");
    assert_eq!(a["events"][0]["result"], "Success");
    assert!(a["events"][0].get("traceback").is_none());

    // unknown request, another project's server: 404
    let r = get(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions/req-nope"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions"),
        &c.bob_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(
        &c.app,
        "/v2.1/servers/999999/os-instance-actions",
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // paging from 2.58
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions?limit=1"),
        &c.alice_token,
        "2.58",
    )
    .await;
    assert_eq!(actions(&r.body), ["reboot"]);
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions?marker={reboot_request}"),
        &c.alice_token,
        "2.58",
    )
    .await;
    assert_eq!(actions(&r.body), ["create"]);
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions?marker=req-nope"),
        &c.alice_token,
        "2.58",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// Nova 2.21: a deleted server's history stays readable; before, 404.
#[tokio::test]
async fn a_deleted_servers_history_from_2_21() {
    let c = cloud().await;
    let id = active(&c, &c.alice_token, "gone").await;
    let r = delete(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let path = format!("/v2.1/servers/{id}/os-instance-actions");
    let r = get(&c.app, &path, &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get_v(&c.app, &path, &c.alice_token, "2.21").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(actions(&r.body), ["delete", "create"]);
}

/// Lock and unlock are actions too (no Ganeti job: their event is the
/// change itself).
#[tokio::test]
async fn lock_and_unlock_are_in_the_history() {
    let c = cloud().await;
    let id = active(&c, &c.alice_token, "locked").await;
    for body in [json!({"lock": null}), json!({"unlock": null})] {
        let r = post(
            &c.app,
            &format!("/v2.1/servers/{id}/action"),
            &c.alice_token,
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions"),
        &c.alice_token,
        "2.58",
    )
    .await;
    assert_eq!(actions(&r.body), ["unlock", "lock", "create"]);
    let lock_request = r.body["instanceActions"][1]["request_id"].as_str().unwrap();
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions/{lock_request}"),
        &c.alice_token,
        "2.58",
    )
    .await;
    let e = &r.body["instanceAction"]["events"][0];
    assert_eq!(
        (e["event"].as_str(), e["result"].as_str()),
        (Some("synnefo_lock"), Some("Success"))
    );
    assert!(e["finish_time"].is_string());
}
