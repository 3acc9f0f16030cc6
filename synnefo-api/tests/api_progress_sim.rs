//! Issue 16 items 7 and 2 end to end on the Ganeti simulator: a create
//! with `user_data` reaches Ganeti as snf-image's `cloud_userdata` OS
//! parameter; while the create job runs its OS scripts the simulator
//! writes snf-image's monitor messages to its progress monitor, which
//! publishes them as Synnefo's `snf-progress-monitor` does; the dispatcher
//! raises the server's build progress (seen between 0 and 100 while
//! BUILD, 100 once ACTIVE) and stores the other messages as the server's
//! diagnostics (Cyclades' `GET /servers/ID/diagnostics`, newest first).

mod api_support;
mod sim_pipeline;

use std::time::Duration;

use api_support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sim_pipeline::{Options, Pipeline, pipeline_with};

/// The pipeline with snf-image's monitor on the simulated node: creates
/// report `copy_steps` copy percentages, `interval_ms` apart; room for a
/// request just over Nova's user_data bound; at most 7 diagnostics a
/// server.
async fn pipeline(copy_steps: u32, interval_ms: u64) -> Pipeline {
    pipeline_with(Options {
        progress: Some((copy_steps, interval_ms)),
        max_body_bytes: Some(256 * 1024),
        max_diagnostics_per_server: Some(7),
    })
    .await
}

const USER_DATA: &str = "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6CiAgLSB0b3VjaCAvdG1wL29rCg==";

#[tokio::test]
async fn build_progress_rises_while_building_and_diagnostics_are_kept() {
    let p = pipeline(4, 150).await;
    let r = post_v(
        &p.c.app,
        "/v2.1/servers",
        &p.c.alice_token,
        json!({"server": {"name": "pb", "imageRef": IMAGE, "flavorRef": "1",
            "networks": "auto", "user_data": USER_DATA}}),
        "2.79",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();

    // Watch it build: the progress Nova and Cyclades show.
    let mut seen: Vec<i64> = Vec::new();
    let mut cyclades_seen: Vec<i64> = Vec::new();
    let mut last = Value::Null;
    for _ in 0..400 {
        last = p.show_as(&id, &p.c.alice_token, "2.79").await;
        let cyc = get(
            &p.c.app,
            &format!("/compute/v2.0/servers/{id}"),
            &p.c.alice_token,
        )
        .await
        .body["server"]
            .clone();
        if last["status"] == "BUILD" {
            seen.push(last["progress"].as_i64().unwrap());
        }
        if cyc["status"] == "BUILD" {
            cyclades_seen.push(cyc["progress"].as_i64().unwrap());
        }
        if last["status"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["status"], "ACTIVE", "{last}");
    assert_eq!(last["progress"], 100);
    assert!(
        seen.iter().any(|p| *p > 0 && *p < 100),
        "an intermediate percentage while BUILD: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "never lower: {seen:?}"
    );
    assert!(
        cyclades_seen.iter().any(|p| *p > 0 && *p < 100),
        "Cyclades too: {cyclades_seen:?}"
    );

    // user_data reached Ganeti as snf-image's cloud_userdata
    let inst = p.sim.instance(&format!("snf-{id}")).expect("instance");
    assert_eq!(
        inst.osparams.get("cloud_userdata").and_then(Value::as_str),
        Some(USER_DATA),
        "{:?}",
        inst.osparams
    );
    // ... and is served back to operators from 2.3 only
    let admin_view = p.show_as(&id, &p.admin_token, "2.3").await;
    assert_eq!(admin_view["OS-EXT-SRV-ATTR:user_data"], USER_DATA);
    let older = p.show_as(&id, &p.admin_token, "2.2").await;
    assert!(older.get("OS-EXT-SRV-ATTR:user_data").is_none());
    let owner = p.show_as(&id, &p.c.alice_token, "2.79").await;
    assert!(owner.get("OS-EXT-SRV-ATTR:user_data").is_none());
    let listed = get_v(
        &p.c.app,
        "/v2.1/servers/detail?all_tenants=1",
        &p.admin_token,
        "2.3",
    )
    .await;
    let mine = listed.body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(mine["OS-EXT-SRV-ATTR:user_data"], USER_DATA);

    // Diagnostics: the newest 7 of the 10 non-copy messages, newest first,
    // in Synnefo's shape (the dispatcher may still be on the last ones).
    let mut diags = Value::Null;
    for _ in 0..100 {
        let r = get(
            &p.c.app,
            &format!("/compute/v2.0/servers/{id}/diagnostics"),
            &p.c.alice_token,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        diags = r.body;
        if diags[0]["message"] == "Image customization finished successfully." {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = diags.as_array().unwrap();
    assert_eq!(list.len(), 7, "{diags:#}");
    assert_eq!(
        list[0]["message"], "Image customization finished successfully.",
        "{diags:#}"
    );
    assert_eq!(list[0]["source"], "image-info");
    assert_eq!(list[0]["level"], "DEBUG");
    assert!(list[0]["details"].is_null());
    assert!(list[0]["created"].as_str().unwrap().ends_with("+00:00"));
    assert!(list[0]["source_date"].is_string());
    assert_eq!(list[1]["source"], "image-helper-task-end");
    assert_eq!(list[1]["message"], "MountImage");
    assert_eq!(list[2]["source"], "image-helper-task-start");
    assert!(
        !list.iter().any(|d| d["source"] == "image-copy-progress"),
        "no entries for copy progress"
    );
    // Cyclades' server view shows the newest one
    let cyc = get(
        &p.c.app,
        &format!("/compute/v2.0/servers/{id}"),
        &p.c.alice_token,
    )
    .await;
    assert_eq!(cyc.body["server"]["diagnostics"], json!([list[0].clone()]));
    assert_eq!(cyc.body["server"]["progress"], 100);
    // another project sees nothing
    let r = get(
        &p.c.app,
        &format!("/compute/v2.0/servers/{id}/diagnostics"),
        &p.c.bob_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    p.stop().await;
}

#[tokio::test]
async fn user_data_is_checked_before_anything_is_made() {
    let p = pipeline(0, 0).await;
    let create = |u: Value| {
        json!({"server": {"name": "ud", "imageRef": IMAGE, "flavorRef": "1",
            "networks": "auto", "user_data": u}})
    };
    for (bad, want) in [
        (json!("not base64!"), "is not a 'base64'"),
        (json!("YWJj="), "is not a 'base64'"),
        // one character over Nova's maxLength
        (json!(format!("{}=", "QUFB".repeat(16384))), "too long"),
    ] {
        let r = post_v(
            &p.c.app,
            "/v2.1/servers",
            &p.c.alice_token,
            create(bad.clone()),
            "2.79",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        let msg = r.body["badRequest"]["message"].as_str().unwrap();
        assert!(msg.contains("user_data") && msg.contains(want), "{msg}");
        // Cyclades: the same rules
        let r = post(
            &p.c.app,
            "/compute/v2.0/servers",
            &p.c.alice_token,
            json!({"server": {"name": "ud", "imageRef": IMAGE, "flavorRef": 1, "user_data": bad}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    }
    assert_eq!(p.sim.instance_count(), 0, "nothing reached Ganeti");
    // No build messages configured: the server still ends ACTIVE at 100,
    // and without user_data there is no cloud_userdata.
    let r = post(
        &p.c.app,
        "/compute/v2.0/servers",
        &p.c.alice_token,
        json!({"server": {"name": "plain", "imageRef": IMAGE, "flavorRef": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].to_string();
    let mut last = Value::Null;
    for _ in 0..300 {
        last = p.show_as(&id, &p.c.alice_token, "2.1").await;
        if last["status"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (last["status"].clone(), last["progress"].clone()),
        (json!("ACTIVE"), json!(100))
    );
    let inst = p.sim.instance(&format!("snf-{id}")).unwrap();
    assert!(!inst.osparams.contains_key("cloud_userdata"));
    let r = get(
        &p.c.app,
        &format!("/compute/v2.0/servers/{id}/diagnostics"),
        &p.c.alice_token,
    )
    .await;
    assert_eq!(r.body, json!([]));
    p.stop().await;
}
