//! The simulator pipeline the lifecycle tests share: the API over the
//! RAPI simulator (one cluster, `snf-` instances), eventd on its job
//! queue, the in-process bus and the dispatcher, all in this process.
//! [`Options`] says what a test needs beyond that (snf-image's progress
//! messages, a larger request bound, a diagnostics bound); each test adds
//! its own helpers in an `impl Pipeline` of its own.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use synnefo_api::ApiState;
use synnefo_core::bus::InProcessBus;
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
use synnefo_core::ports::{EventBus, GanetiBackend, IdentityStore, Store, VmStore};
use synnefo_core::service::identity::hash_password;
use synnefo_core::settings::Settings;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use synnefo_ganeti_sim::{SimConfig, SimHandle, SimLatency, SimNodeConfig, SimProgress, Simulator};
use tokio_util::sync::CancellationToken;

use crate::api_support::*;

/// What a test needs beyond the plain pipeline.
#[derive(Default)]
pub struct Options {
    /// snf-image's copy percentages during a create (`copy_steps`,
    /// `interval_ms` apart), forwarded to the bus as its
    /// `PROGRESS_MONITOR` does.
    pub progress: Option<(u32, u64)>,
    /// The API's request body bound, when the default is too small.
    pub max_body_bytes: Option<usize>,
    /// The dispatcher's bound on diagnostics per server.
    pub max_diagnostics_per_server: Option<u32>,
}

/// The API, eventd and the dispatcher on one simulated cluster.
pub struct Pipeline {
    pub c: Cloud,
    pub sim: SimHandle,
    /// An operator's token (project `operators`).
    pub admin_token: String,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The plain pipeline.
pub async fn pipeline() -> Pipeline {
    pipeline_with(Options::default()).await
}

/// The pipeline with `opts`.
pub async fn pipeline_with(opts: Options) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::defaults_with("").unwrap();
    let mut sim_config = SimConfig {
        cluster_name: "sim1.test".into(),
        data_dir: Some(dir.path().join("ganeti")),
        nodes: vec![SimNodeConfig {
            name: "node1.sim1.test".into(),
            ip: Some("127.0.0.1".into()),
            ..SimNodeConfig::default()
        }],
        latency: SimLatency::uniform(Duration::from_millis(5)),
        ..SimConfig::default()
    };
    if let Some((copy_steps, interval_ms)) = opts.progress {
        sim_config.progress = SimProgress {
            copy_steps,
            interval_ms,
            diskless: false,
        };
    }
    let sim = Simulator::builder()
        .config(sim_config)
        .start()
        .await
        .unwrap();
    let store = sqlite_store().await;
    let sim_client = sim.client().unwrap();
    let ganeti_settings = settings.ganeti.clone();
    let max_body_bytes = opts.max_body_bytes;
    let c = cloud_with_state(
        store.clone(),
        move |s: Arc<dyn Store>| {
            // `seed` registered "cluster1" as backend 1.
            let ganeti: Arc<dyn GanetiBackend> = Arc::new(RapiBackend::from_clients(
                vec![(synnefo_core::ids::BackendId(1), sim_client)],
                ganeti_settings,
            ));
            let mut api = config();
            if let Some(max) = max_body_bytes {
                api.max_body_bytes = max;
            }
            ApiState::new(s, ganeti, api)
        },
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    let admin = c
        .store
        .create_user("operator", &hash_password("op-pw").unwrap(), true)
        .await
        .unwrap();
    let ops = c.store.create_project("operators").await.unwrap();
    c.store.add_member(&admin.id, &ops.id).await.unwrap();
    let admin_token = token(&c.store, &admin, &ops).await;

    let cancel = CancellationToken::new();
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
    if opts.progress.is_some() {
        // snf-image's PROGRESS_MONITOR on the simulated node
        sim.set_progress_monitor(Some(Arc::new(synnefo_ganeti_master::progress::forwarder(
            bus.clone(),
            "snf-",
            Duration::from_secs(5),
        ))));
    }
    let mut econfig = EventdConfig::new(sim.queue_dir(), dir.path().join("spool"), "snf-");
    econfig.cluster_name = Some("sim1.test".into());
    let eventd = Eventd::new(econfig, bus.clone());
    let ecancel = cancel.clone();
    let eventd = tokio::spawn(async move {
        let _ = eventd.run(ecancel).await;
    });
    let vm_store: Arc<dyn VmStore> = store.clone();
    let mut dconfig = DispatcherConfig::from_settings(&settings);
    if let Some(max) = opts.max_diagnostics_per_server {
        dconfig.max_diagnostics_per_server = max;
    }
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
    /// `GET /v2.1/servers/ID` as `token` at `version`: the server.
    pub async fn show_as(&self, id: &str, token: &str, version: &str) -> Value {
        let r = get_v(&self.c.app, &format!("/v2.1/servers/{id}"), token, version).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["server"].clone()
    }

    /// The server as its owner sees it at 2.79.
    pub async fn show(&self, id: &str) -> Value {
        self.show_as(id, &self.c.alice_token, "2.79").await
    }

    /// Polls until the server's status is `want` (15 s).
    pub async fn wait_status(&self, id: &str, want: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.show(id).await;
            if last["status"] == want {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server {id} stayed {}, never {want}", last["status"]);
    }

    /// `POST /v2.1/servers/ID/action` as the owner.
    pub async fn action(&self, id: &str, body: Value) -> Resp {
        post(
            &self.c.app,
            &format!("/v2.1/servers/{id}/action"),
            &self.c.alice_token,
            body,
        )
        .await
    }

    /// Stops eventd, the dispatcher and the simulator.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.sim.shutdown();
    }
}
