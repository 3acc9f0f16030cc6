//! The RAPI client suite (named `rapi_real*` so `scripts/ganeti-lab/test`
//! runs it against the lab). Every test in the first half runs against a
//! target: the simulator over HTTPS (self-signed certificate generated per
//! test) by default, or a real Ganeti RAPI when `SYNNEFO_TEST_RAPI_URL` is
//! set:
//!
//! ```sh
//! eval "$(scripts/ganeti-lab/env)"      # after sudo scripts/ganeti-lab/up
//! cargo test -p synnefo-ganeti --test rapi_real
//! ```
//!
//! Variables: `SYNNEFO_TEST_RAPI_URL`, `SYNNEFO_TEST_RAPI_USER`,
//! `SYNNEFO_TEST_RAPI_PASSWORD`, `SYNNEFO_TEST_RAPI_CA` (CA PEM) or
//! `SYNNEFO_TEST_RAPI_CERT` (pinned certificate PEM), and for creates
//! `SYNNEFO_TEST_RAPI_NODE`, `SYNNEFO_TEST_RAPI_OS` (default
//! `noop+default`), `SYNNEFO_TEST_RAPI_HYPERVISOR` (default `fake`),
//! `SYNNEFO_TEST_RAPI_NIC_MODE`/`_LINK` (default `routed`/`100`) and
//! `SYNNEFO_TEST_RAPI_IP_BASE` (default `192.0.2.`; hosts .160-.239 are used).
//! The second half needs the simulator's knobs and runs only against it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use synnefo_core::state::{JobStatus, RebootKind};
use synnefo_ganeti::RapiError;
use synnefo_ganeti::rapi::endpoints::Endpoint;
use synnefo_ganeti::rapi::*;
use synnefo_ganeti_sim::{SimHandle, SimLatency, Simulator};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

struct Target {
    client: RapiClient,
    config: RapiConfig,
    sim: Option<SimHandle>,
    node: Option<String>,
    os: String,
    hypervisor: Option<String>,
    nic_mode: String,
    nic_link: String,
    ip_base: String,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

async fn target() -> Target {
    if let Some(url) = env("SYNNEFO_TEST_RAPI_URL") {
        let mut cfg = RapiConfig::new(url).timeout(Duration::from_secs(60));
        if let Some(u) = env("SYNNEFO_TEST_RAPI_USER") {
            cfg = cfg.credentials(u, env("SYNNEFO_TEST_RAPI_PASSWORD").unwrap_or_default());
        }
        if let Some(pem) = env("SYNNEFO_TEST_RAPI_CA").or_else(|| env("SYNNEFO_TEST_RAPI_CERT")) {
            cfg = cfg.ca_pem(std::fs::read(&pem).expect("read SYNNEFO_TEST_RAPI_CA/CERT"));
        }
        return Target {
            client: RapiClient::new(cfg.clone()).expect("client"),
            config: cfg,
            sim: None,
            node: env("SYNNEFO_TEST_RAPI_NODE"),
            os: env("SYNNEFO_TEST_RAPI_OS").unwrap_or_else(|| "noop+default".into()),
            hypervisor: Some(env("SYNNEFO_TEST_RAPI_HYPERVISOR").unwrap_or_else(|| "fake".into())),
            nic_mode: env("SYNNEFO_TEST_RAPI_NIC_MODE").unwrap_or_else(|| "routed".into()),
            nic_link: env("SYNNEFO_TEST_RAPI_NIC_LINK").unwrap_or_else(|| "100".into()),
            ip_base: env("SYNNEFO_TEST_RAPI_IP_BASE").unwrap_or_else(|| "192.0.2.".into()),
        };
    }
    sim_target(
        Simulator::builder()
            .https()
            .latency(SimLatency::uniform(Duration::from_millis(5))),
    )
    .await
}

async fn sim_target(b: synnefo_ganeti_sim::SimBuilder) -> Target {
    let sim = b.start().await.expect("simulator");
    let cfg = sim.client_config();
    Target {
        client: RapiClient::new(cfg.clone()).expect("client"),
        config: cfg,
        node: None,
        os: "noop+default".into(),
        hypervisor: None,
        nic_mode: "routed".into(),
        nic_link: "100".into(),
        ip_base: "192.0.2.".into(),
        sim: Some(sim),
    }
}

impl Target {
    fn is_sim(&self) -> bool {
        self.sim.is_some()
    }

    /// A name unique to this run (real clusters keep what a failed run left).
    fn name(&self, what: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 10_000;
        format!("snf-t{what}{pid}x{n}")
    }

    fn ip(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed) + std::process::id() % 40;
        format!("{}{}", self.ip_base, 160 + n % 80)
    }

    fn create_body(&self, name: &str, start: bool) -> CreateInstanceRequest {
        CreateInstanceRequest {
            version: 1,
            mode: "create".into(),
            instance_name: name.into(),
            disk_template: "diskless".into(),
            disks: vec![],
            nics: vec![NicRequest {
                ip: Some(self.ip()),
                mode: Some(self.nic_mode.clone()),
                link: Some(self.nic_link.clone()),
                ..Default::default()
            }],
            os_type: self.os.clone(),
            osparams: Default::default(),
            osparams_secret: Default::default(),
            beparams: BeParamsRequest {
                vcpus: Some(1),
                maxmem: Some(128),
                minmem: Some(128),
            },
            hvparams: Default::default(),
            hypervisor: self.hypervisor.clone(),
            pnode: self.node.clone(),
            iallocator: None,
            ip_check: false,
            name_check: false,
            conflicts_check: false,
            start,
            tags: vec![],
        }
    }

    async fn create(&self, name: &str, start: bool) -> RapiJob {
        let id = self
            .client
            .create_instance(&self.create_body(name, start))
            .await
            .expect("submit create");
        self.client
            .wait_for_job_success(id, JOB_TIMEOUT)
            .await
            .expect("create succeeds")
    }

    async fn cleanup(&self, name: &str) {
        if let Ok(id) = self.client.remove_instance(name).await {
            let _ = self.client.wait_for_job(id, JOB_TIMEOUT).await;
        }
    }
}

// ====================================================================== both targets

#[tokio::test]
async fn version_info_features() {
    let t = target().await;
    assert_eq!(t.client.version().await.unwrap(), 2);
    let info = t.client.info().await.unwrap();
    assert!(!info.name.is_empty() && !info.master.is_empty());
    assert!(
        info.software_version.starts_with('3') || t.is_sim(),
        "{}",
        info.software_version
    );
    assert!(info.extra.contains_key("hvparams") && info.extra.contains_key("ipolicy"));
    let features = t.client.features().await.unwrap();
    assert!(
        features.iter().any(|f| f == "instance-create-reqv1"),
        "{features:?}"
    );
}

#[tokio::test]
async fn nodes_bulk() {
    let t = target().await;
    let nodes = t.client.nodes().await.unwrap();
    assert!(!nodes.is_empty());
    let master = nodes
        .iter()
        .find(|n| n.role.as_deref() == Some("M"))
        .expect("a master node");
    assert!(master.mtotal.unwrap_or(0) > 0 && master.mfree.is_some());
    assert!(master.uuid.is_some() && master.group_uuid.is_some());
}

#[tokio::test]
async fn instance_lifecycle_covers_every_write_endpoint() {
    let t = target().await;
    let name = t.name("life");
    let created = t.create(&name, true).await;
    assert_eq!(created.job_status().unwrap(), JobStatus::Success);
    assert_eq!(
        created.ops.as_ref().unwrap()[0]["OP_ID"],
        "OP_INSTANCE_CREATE"
    );
    assert!(
        created.opresult.as_ref().unwrap()[0].is_array(),
        "create result is the node list"
    );
    assert!(!created.log_messages().is_empty(), "create logs its steps");
    assert!(
        created.received_ts.is_some() && created.start_ts.is_some() && created.end_ts.is_some()
    );

    let i = t.client.instance(&name).await.unwrap();
    assert_eq!(
        (i.status.as_deref(), i.admin_state.as_deref(), i.oper_state),
        (Some("running"), Some("up"), Some(true))
    );
    assert_eq!(i.beparams.maxmem, Some(128));
    assert_eq!(i.nics().len(), 1);
    let all = t.client.instances().await.unwrap();
    assert!(all.iter().any(|x| x.name == name));
    let restricted = t
        .client
        .instances_with_fields(&["name", "status"])
        .await
        .unwrap();
    assert!(restricted.iter().any(|x| x.name == name));

    let id = t
        .client
        .shutdown(&name, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let job = t
        .client
        .wait_for_job_success(id, JOB_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(job.ops.as_ref().unwrap()[0]["timeout"], 30);
    let i = t.client.instance(&name).await.unwrap();
    assert_eq!(
        (i.status.as_deref(), i.oper_state),
        (Some("ADMIN_down"), Some(false))
    );

    let id = t.client.startup(&name).await.unwrap();
    t.client
        .wait_for_job_success(id, JOB_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        t.client.instance(&name).await.unwrap().status.as_deref(),
        Some("running")
    );

    for kind in [RebootKind::Soft, RebootKind::Hard] {
        let id = t.client.reboot(&name, kind).await.unwrap();
        let job = t
            .client
            .wait_for_job_success(id, JOB_TIMEOUT)
            .await
            .unwrap();
        let want = if kind == RebootKind::Soft {
            "soft"
        } else {
            "hard"
        };
        assert_eq!(job.ops.as_ref().unwrap()[0]["reboot_type"], want);
    }

    let modify = ModifyInstanceRequest {
        nics: Some(vec![
            json!(["add", -1, {"ip": t.ip(), "mode": t.nic_mode, "link": t.nic_link}]),
        ]),
        ..Default::default()
    };
    let id = t.client.modify(&name, &modify).await.unwrap();
    let job = t
        .client
        .wait_for_job_success(id, JOB_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        job.ops.as_ref().unwrap()[0]["OP_ID"],
        "OP_INSTANCE_SET_PARAMS"
    );
    assert_eq!(t.client.instance(&name).await.unwrap().nics().len(), 2);

    let console = t.client.console(&name).await.unwrap();
    if t.is_sim() {
        assert_eq!(console.kind, "vnc");
        assert!(console.host.is_some() && console.port.is_some());
    } else {
        assert!(
            matches!(console.kind.as_str(), "msg" | "vnc" | "spice"),
            "{console:?}"
        );
    }

    let id = t.client.remove_instance(&name).await.unwrap();
    t.client
        .wait_for_job_success(id, JOB_TIMEOUT)
        .await
        .unwrap();
    assert!(matches!(
        t.client.instance(&name).await,
        Err(RapiError::NotFound(_))
    ));
}

#[tokio::test]
async fn stopped_create_and_wait_for_changes() {
    let t = target().await;
    let name = t.name("wait");
    let id = t
        .client
        .create_instance(&t.create_body(&name, false))
        .await
        .unwrap();
    // First long poll without previous info answers at once with the fields.
    let req = WaitForJobRequest {
        fields: vec![
            "id".into(),
            "status".into(),
            "opstatus".into(),
            "opresult".into(),
        ],
        previous_job_info: None,
        previous_log_serial: None,
    };
    let change = t
        .client
        .wait_for_job_change(id, &req)
        .await
        .unwrap()
        .expect("a change");
    assert_eq!(change.job_info.len(), 4);
    assert_eq!(change.job_info[0], json!(id));
    // Follow it to the end with the typed helper.
    let mut seen_logs = 0;
    let mut req = WaitForJobRequest {
        previous_job_info: Some(change.job_info.clone()),
        previous_log_serial: change.log_entries.last().map(|e| e.serial),
        ..req
    };
    seen_logs += change.log_entries.len();
    let deadline = Instant::now() + JOB_TIMEOUT;
    while Instant::now() < deadline {
        let Some(c) = t.client.wait_for_job_change(id, &req).await.unwrap() else {
            continue;
        };
        seen_logs += c.log_entries.len();
        if let Some(last) = c.log_entries.last() {
            req.previous_log_serial = Some(last.serial);
        }
        let done = c.job_info[1] == "success" || c.job_info[1] == "error";
        req.previous_job_info = Some(c.job_info);
        if done {
            break;
        }
    }
    assert_eq!(req.previous_job_info.as_ref().unwrap()[1], "success");
    assert!(seen_logs >= 3, "saw {seen_logs} log entries");
    let i = t.client.instance(&name).await.unwrap();
    assert_eq!(
        (i.status.as_deref(), i.admin_state.as_deref()),
        (Some("ADMIN_down"), Some("down"))
    );
    assert_eq!(i.oper_ram, None);
    t.cleanup(&name).await;
}

#[tokio::test]
async fn unknown_job_and_instance_are_not_found() {
    let t = target().await;
    assert!(matches!(
        t.client.job(987_654).await,
        Err(RapiError::NotFound(_))
    ));
    assert!(matches!(
        t.client.instance("snf-nosuch-instance").await,
        Err(RapiError::NotFound(_))
    ));
}

#[tokio::test]
async fn failed_job_carries_error_and_result() {
    let t = target().await;
    let id = t
        .client
        .startup("snf-nosuch-instance")
        .await
        .expect("submit is accepted");
    match t.client.wait_for_job_success(id, JOB_TIMEOUT).await {
        Err(RapiError::JobFailed {
            job_id,
            message,
            result,
            ..
        }) => {
            assert_eq!(job_id, id);
            assert_eq!(result[0], "OpPrereqError");
            assert_eq!(result[1][1], "unknown_entity");
            assert!(message.contains("not known"), "{message}");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    let info = t.client.job(id).await.unwrap().to_job_info().unwrap();
    assert_eq!(info.status, JobStatus::Error);
    assert!(info.error_message().unwrap().contains("not known"));
}

#[tokio::test]
async fn cancel_of_a_finished_job_is_refused() {
    let t = target().await;
    let id = t.client.startup("snf-nosuch-instance").await.unwrap();
    let _ = t.client.wait_for_job(id, JOB_TIMEOUT).await.unwrap();
    let r = t.client.cancel_job(id).await.unwrap();
    assert!(!r.canceled, "{r:?}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_error() {
    let t = target().await;
    let bad = RapiClient::new(t.config.clone().credentials("synnefo", "wrong-password")).unwrap();
    match bad.info().await {
        Err(RapiError::Auth { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let mut anon = t.config.clone();
    anon.username = None;
    anon.password = None;
    let anon = RapiClient::new(anon).unwrap();
    match anon.startup("snf-nosuch-instance").await {
        Err(RapiError::Auth { status: 401, .. }) => {}
        other => panic!("writes need credentials, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_certificate_is_refused() {
    let t = target().await;
    if !t.config.url.starts_with("https") {
        return;
    }
    let other =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cfg = t.config.clone().ca_pem(other.cert.pem().into_bytes());
    let client = RapiClient::new(RapiConfig {
        get_retries: 0,
        ..cfg
    })
    .unwrap();
    match client.version().await {
        Err(RapiError::Tls(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // No CA configured: the system roots do not know a self-signed RAPI certificate either.
    let mut plain = t.config.clone();
    plain.ca_pem = None;
    plain.get_retries = 0;
    assert!(matches!(
        RapiClient::new(plain).unwrap().version().await,
        Err(RapiError::Tls(_))
    ));
}

#[tokio::test]
async fn create_without_version_is_a_bad_request() {
    struct RawCreate(Value);
    impl Endpoint for RawCreate {
        type Response = Value;
        fn method(&self) -> reqwest::Method {
            reqwest::Method::POST
        }
        fn path(&self) -> String {
            "/2/instances".into()
        }
        fn body(&self) -> Result<Option<Value>, RapiError> {
            Ok(Some(self.0.clone()))
        }
    }
    let t = target().await;
    let mut body = serde_json::to_value(t.create_body("snf-never", true)).unwrap();
    body.as_object_mut().unwrap().remove("__version__");
    match t.client.call(&RawCreate(body)).await {
        Err(RapiError::BadRequest(msg)) => assert!(msg.contains("version 0"), "{msg}"),
        other => panic!("expected 400, got {other:?}"),
    }
}

// ====================================================================== simulator only

async fn sim() -> Target {
    sim_target(
        Simulator::builder()
            .https()
            .latency(SimLatency::uniform(Duration::from_millis(5))),
    )
    .await
}

fn h(t: &Target) -> &SimHandle {
    t.sim.as_ref().unwrap()
}

#[tokio::test]
async fn failed_create_keeps_its_log() {
    let t = sim().await;
    h(&t).fail_opcode("OP_INSTANCE_CREATE", "disk creation failed on node1.sim");
    let id = t
        .client
        .create_instance(&t.create_body("snf-77", true))
        .await
        .unwrap();
    match t.client.wait_for_job_success(id, JOB_TIMEOUT).await {
        Err(RapiError::JobFailed {
            message,
            result,
            log,
            ..
        }) => {
            assert_eq!(
                result,
                json!(["OpExecError", ["disk creation failed on node1.sim"]])
            );
            assert!(message.contains("disk creation failed"));
            // Like Ganeti: the allocator's choice (no pnode), then the
            // execution's lines up to the failure.
            assert!(
                log.first()
                    .is_some_and(|l| l.starts_with(" - INFO: Selected nodes for instance snf-77")),
                "{log:?}"
            );
            assert!(
                log.iter().any(|l| l == "* creating instance disks..."),
                "{log:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(h(&t).instance("snf-77").is_none());
    let core: synnefo_core::BackendError = RapiError::JobFailed {
        job_id: id,
        message: "m".into(),
        error: None,
        result: Value::Null,
        log: vec![],
    }
    .into();
    assert!(matches!(core, synnefo_core::BackendError::JobFailed { .. }));
}

#[tokio::test]
async fn next_n_jobs_and_per_instance_failures() {
    let t = sim().await;
    t.create("snf-1", true).await;
    h(&t).fail_next_jobs(1, "boom");
    let a = t.client.startup("snf-1").await.unwrap();
    let b = t.client.startup("snf-1").await.unwrap();
    assert!(matches!(
        t.client.wait_for_job_success(a, JOB_TIMEOUT).await,
        Err(RapiError::JobFailed { .. })
    ));
    t.client.wait_for_job_success(b, JOB_TIMEOUT).await.unwrap();
    h(&t).fail_instance("snf-1", "node down");
    let c = t.client.shutdown("snf-1", None).await.unwrap();
    assert!(matches!(
        t.client.wait_for_job_success(c, JOB_TIMEOUT).await,
        Err(RapiError::JobFailed { .. })
    ));
    h(&t).clear_failures();
    let d = t.client.shutdown("snf-1", None).await.unwrap();
    t.client.wait_for_job_success(d, JOB_TIMEOUT).await.unwrap();
}

#[tokio::test]
async fn slow_answers_time_out() {
    let t = sim().await;
    h(&t).set_response_delay(Duration::from_secs(3));
    let mut cfg = t.config.clone().timeout(Duration::from_millis(300));
    cfg.get_retries = 1;
    cfg.retry_backoff = Duration::from_millis(10);
    let client = RapiClient::new(cfg).unwrap();
    let started = Instant::now();
    match client.version().await {
        Err(e @ RapiError::Timeout(_)) => assert!(e.is_transient()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // One retry for a GET: two attempts of 300 ms, well under the 3 s delay.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A write is not retried.
    let started = Instant::now();
    assert!(matches!(
        client.startup("snf-1").await,
        Err(RapiError::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(900));
    h(&t).set_response_delay(Duration::ZERO);
    // wait_for_job gives up at its own deadline.
    h(&t).set_single_step(true);
    let id = t.client.startup("snf-1").await.unwrap();
    match t.client.wait_for_job(id, Duration::from_millis(300)).await {
        Err(RapiError::Timeout(m)) => assert!(m.contains("queued"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancel_queued_and_waiting_jobs() {
    let t = sim_target(Simulator::builder().https().single_step(true)).await;
    let s = h(&t);
    let queued = t.client.startup("snf-1").await.unwrap();
    let r = t.client.cancel_job(queued).await.unwrap();
    assert!(r.canceled);
    assert_eq!(r.message, format!("Dequeued job {queued}"));
    let job = t.client.job(queued).await.unwrap();
    assert_eq!(job.status.as_deref(), Some("canceled"));
    assert!(job.start_ts.is_none() && job.end_ts.is_some());

    let waiting = t.client.startup("snf-1").await.unwrap();
    assert!(s.step_job(waiting));
    assert_eq!(s.job_status(waiting), Some(JobStatus::Waiting));
    assert!(t.client.cancel_job(waiting).await.unwrap().canceled);
    assert_eq!(s.job_status(waiting), Some(JobStatus::Canceling));
    s.run_until_idle();
    assert_eq!(s.job_status(waiting), Some(JobStatus::Canceled));

    let running = t.client.startup("snf-1").await.unwrap();
    s.step_job(running);
    s.step_job(running);
    assert_eq!(
        s.job_status(running),
        Some(JobStatus::Error),
        "unknown instance fails its prerequisites"
    );
    assert!(!t.client.cancel_job(running).await.unwrap().canceled);
}

#[tokio::test]
async fn plain_http_and_read_only_users() {
    let t = sim_target(Simulator::builder().add_user("reader", "r", false)).await;
    assert!(t.config.url.starts_with("http://"));
    let reader =
        RapiClient::new(RapiConfig::new(t.config.url.clone()).credentials("reader", "r")).unwrap();
    assert_eq!(reader.version().await.unwrap(), 2);
    assert!(matches!(
        reader.startup("x").await,
        Err(RapiError::Auth { status: 403, .. })
    ));
    // Unsupported media type on a body without the JSON content type.
    let resp = reqwest::Client::new()
        .post(format!("{}/2/instances", t.config.url))
        .basic_auth("synnefo", Some("synnefo"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.message, "Unsupported Media Type");
}
