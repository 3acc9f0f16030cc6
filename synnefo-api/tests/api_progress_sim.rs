//! Issue 16 items 7 and 2 end to end on the Ganeti simulator: a create
//! with `user_data` reaches Ganeti as snf-image's `cloud_userdata` OS
//! parameter; while the create job runs its OS scripts the simulator
//! writes snf-image's monitor messages to its progress monitor, which
//! publishes them as Synnefo's `snf-progress-monitor` does; the dispatcher
//! raises the server's build progress (seen between 0 and 100 while
//! BUILD, 100 once ACTIVE) and stores the other messages as the server's
//! diagnostics (Cyclades' `GET /servers/ID/diagnostics`, newest first).

mod api_support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use api_support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use synnefo_api::ApiState;
use synnefo_core::bus::InProcessBus;
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
use synnefo_core::model::User;
use synnefo_core::ports::{EventBus, GanetiBackend, IdentityStore, Store, VmStore};
use synnefo_core::service::identity::hash_password;
use synnefo_core::settings::Settings;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use synnefo_ganeti_sim::{SimConfig, SimHandle, SimLatency, SimNodeConfig, SimProgress, Simulator};
use tokio_util::sync::CancellationToken;

struct Pipeline {
    c: Cloud,
    sim: SimHandle,
    admin_token: String,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The API, eventd, the progress monitor and the dispatcher on one
/// simulated cluster whose creates report `copy_steps` copy percentages,
/// `interval_ms` apart.
async fn pipeline(copy_steps: u32, interval_ms: u64) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::defaults_with("").unwrap();
    let sim = Simulator::builder()
        .config(SimConfig {
            cluster_name: "sim1.test".into(),
            data_dir: Some(dir.path().join("ganeti")),
            nodes: vec![SimNodeConfig {
                name: "node1.sim1.test".into(),
                ip: Some("127.0.0.1".into()),
                ..SimNodeConfig::default()
            }],
            latency: SimLatency::uniform(Duration::from_millis(5)),
            progress: SimProgress {
                copy_steps,
                interval_ms,
                diskless: false,
            },
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap();
    let store = sqlite_store().await;
    let sim_client = sim.client().unwrap();
    let ganeti_settings = settings.ganeti.clone();
    let c = cloud_with_state(
        store.clone(),
        move |s: Arc<dyn Store>| {
            let ganeti: Arc<dyn GanetiBackend> = Arc::new(RapiBackend::from_clients(
                vec![(synnefo_core::ids::BackendId(1), sim_client)],
                ganeti_settings,
            ));
            // room for a request just over Nova's user_data bound
            let api = synnefo_api::ApiConfig {
                max_body_bytes: 256 * 1024,
                ..config()
            };
            ApiState::new(s, ganeti, api)
        },
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    let admin: User = c
        .store
        .create_user("operator", &hash_password("op-pw").unwrap(), true)
        .await
        .unwrap();
    let ops = c.store.create_project("operators").await.unwrap();
    c.store.add_member(&admin.id, &ops.id).await.unwrap();
    let admin_token = token(&c.store, &admin, &ops).await;

    let cancel = CancellationToken::new();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
    // snf-image's PROGRESS_MONITOR on the simulated node
    sim.set_progress_monitor(Some(Arc::new(synnefo_ganeti_master::progress::forwarder(
        bus.clone(),
        "snf-",
        Duration::from_secs(5),
    ))));
    let mut econfig = EventdConfig::new(sim.queue_dir(), dir.path().join("spool"), "snf-");
    econfig.cluster_name = Some("sim1.test".into());
    let eventd = Eventd::new(econfig, bus.clone());
    let ecancel = cancel.clone();
    let eventd = tokio::spawn(async move {
        let _ = eventd.run(ecancel).await;
    });
    let vm_store: Arc<dyn VmStore> = store.clone();
    let mut dconfig = DispatcherConfig::from_settings(&settings);
    dconfig.max_diagnostics_per_server = 7;
    assert!(
        dconfig
            .kinds()
            .contains(&synnefo_core::messages::MessageKind::Progress)
    );
    let dispatcher = Dispatcher::new(vm_store, bus, dconfig);
    let dcancel = cancel.clone();
    let dispatcher = tokio::spawn(async move {
        let _ = dispatcher.run(dcancel).await;
    });
    Pipeline {
        c,
        sim,
        admin_token,
        cancel,
        tasks: vec![eventd, dispatcher],
        _dir: dir,
    }
}

impl Pipeline {
    async fn show(&self, id: &str, token: &str, version: &str) -> Value {
        let r = get_v(&self.c.app, &format!("/v2.1/servers/{id}"), token, version).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["server"].clone()
    }

    async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
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
        last = p.show(&id, &p.c.alice_token, "2.79").await;
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
    let admin_view = p.show(&id, &p.admin_token, "2.3").await;
    assert_eq!(admin_view["OS-EXT-SRV-ATTR:user_data"], USER_DATA);
    let older = p.show(&id, &p.admin_token, "2.2").await;
    assert!(older.get("OS-EXT-SRV-ATTR:user_data").is_none());
    let owner = p.show(&id, &p.c.alice_token, "2.79").await;
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
        last = p.show(&id, &p.c.alice_token, "2.1").await;
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
