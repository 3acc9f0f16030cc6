//! End to end on the built-in Ganeti simulator: the API drives the
//! simulated cluster over RAPI, eventd watches its job queue, the
//! in-process bus carries the notifications, the dispatcher applies them,
//! and the next `GET /servers/ID` shows the result. The console goes
//! through a real in-process vncauthproxy.

mod api_support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use api_support::*;
use axum::http::StatusCode;
use serde_json::json;
use synnefo_api::ApiState;
use synnefo_api::console::{ProxyConfig, VncAuthProxy};
use synnefo_api::consoles::InProcessForwarder;
use synnefo_core::bus::InProcessBus;
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
use synnefo_core::ports::{BackendStore, EventBus, GanetiBackend, Store, VmStore};
use synnefo_core::settings::Settings;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use synnefo_ganeti_sim::{SimConfig, SimLatency, SimNodeConfig, Simulator};
use tokio_util::sync::CancellationToken;

async fn wait_status(c: &Cloud, id: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..200 {
        let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
        last = r.body["server"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {id} stayed {last}, never {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_pipeline_on_the_simulator() {
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
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap();
    let store = sqlite_store().await;
    let cancel = CancellationToken::new();

    // Seed first (the backend row comes from `seed`), then point it at the sim.
    let jobs = Arc::new(AtomicU64::new(0));
    let proxy = VncAuthProxy::start(
        ProxyConfig {
            ctrl_socket: None,
            listen_address: "127.0.0.1".parse().unwrap(),
            ..ProxyConfig::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let sim_client = sim.client().unwrap();
    let proxy_for_api = proxy.clone();
    let ganeti_settings = settings.ganeti.clone();
    let c = cloud_with_state(
        store.clone(),
        move |s: Arc<dyn Store>| {
            // `seed` registered "cluster1" as backend 1.
            let ganeti: Arc<dyn GanetiBackend> = Arc::new(RapiBackend::from_clients(
                vec![(synnefo_core::ids::BackendId(1), sim_client)],
                ganeti_settings,
            ));
            ApiState::new(s, ganeti, config()).with_console(Arc::new(InProcessForwarder {
                handle: proxy_for_api,
                public_host: "127.0.0.1".into(),
            }))
        },
        jobs,
    )
    .await;
    assert_eq!(
        store.list_backends().await.unwrap()[0].id,
        synnefo_core::ids::BackendId(1)
    );

    let bus = Arc::new(InProcessBus::default());
    let bus_dyn: Arc<dyn EventBus> = bus.clone();
    let mut econfig = EventdConfig::new(sim.queue_dir(), dir.path().join("spool"), "snf-");
    econfig.cluster_name = Some("sim1.test".into());
    let eventd = tokio::spawn(Eventd::new(econfig, bus_dyn.clone()).run(cancel.clone()));
    let vm_store: Arc<dyn VmStore> = store.clone();
    let dispatcher = Dispatcher::new(
        vm_store,
        bus_dyn,
        DispatcherConfig::from_settings(&settings),
    );
    let dcancel = cancel.clone();
    let dispatcher = tokio::spawn(async move { dispatcher.run(dcancel).await.map(|_| ()) });

    // Create: BUILD at once, ACTIVE once the job's notifications arrive.
    let r = post_v(
        &c.app,
        "/v2.1/servers",
        &c.alice_token,
        json!({"server": {"name": "sim-vm", "imageRef": IMAGE, "flavorRef": "1", "networks": "auto"}}),
        "2.79",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    wait_status(&c, &id, "ACTIVE").await;

    let action = format!("/v2.1/servers/{id}/action");
    let r = post(&c.app, &action, &c.alice_token, json!({"os-stop": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_status(&c, &id, "SHUTOFF").await;
    let r = post(&c.app, &action, &c.alice_token, json!({"os-start": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_status(&c, &id, "ACTIVE").await;
    let r = post(
        &c.app,
        &action,
        &c.alice_token,
        json!({"reboot": {"type": "SOFT"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_status(&c, &id, "ACTIVE").await;

    // Console: Ganeti's VNC location, forwarded by the real proxy.
    let r = post_v(
        &c.app,
        &format!("/v2.1/servers/{id}/remote-consoles"),
        &c.alice_token,
        json!({"remote_console": {"protocol": "vnc", "type": "novnc"}}),
        "2.6",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(
        r.body["remote_console"]["url"]
            .as_str()
            .unwrap()
            .starts_with("vnc://127.0.0.1:")
    );

    // Delete: gone from the API at once, DESTROYED once Ganeti removed it.
    let r = delete(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let vm_id = id.parse().unwrap();
    let mut destroyed = false;
    for _ in 0..200 {
        let vm = store.vm(vm_id).await.unwrap().unwrap();
        if vm.state.operstate() == synnefo_core::state::OperState::Destroyed {
            destroyed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(destroyed, "the removal job's success reached the DB");

    cancel.cancel();
    let _ = eventd.await;
    let _ = dispatcher.await;
    proxy.shutdown().await;
    sim.shutdown();
}
