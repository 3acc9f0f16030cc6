//! Golden test against answers and job files recorded from a real Ganeti
//! 3.0.2 (`synnefo-ganeti/tests/fixtures/ganeti-3.0/`, see its README):
//!
//! * the simulator's answers carry every key the real ones carry,
//!   recursively (values and ids differ; shapes must not);
//! * the client's typed decoders accept every recorded answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use synnefo_ganeti::rapi::*;
use synnefo_ganeti_sim::{SimHandle, SimLatency, Simulator};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ganeti-3.0")
}

fn fixture(name: &str) -> Value {
    let p = fixtures().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Job ids of the recorded run by name (`jobs.txt`).
fn recorded_jobs() -> BTreeMap<String, u64> {
    std::fs::read_to_string(fixtures().join("jobs.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Keys present in `real` but not in `sim` (recursively), and kind
/// mismatches where both sides have a non-null value.
fn missing(real: &Value, sim: &Value, path: &str, out: &mut Vec<String>) {
    match (real, sim) {
        (Value::Object(r), Value::Object(s)) => {
            for (k, rv) in r {
                let p = format!("{path}.{k}");
                match s.get(k) {
                    None => out.push(p),
                    Some(sv) => missing(rv, sv, &p, out),
                }
            }
        }
        (Value::Array(r), Value::Array(s)) => {
            for (i, (rv, sv)) in r.iter().zip(s.iter()).enumerate() {
                missing(rv, sv, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (r, s) if kind(r) != kind(s) => {
            out.push(format!("{path}: real {} vs sim {}", kind(r), kind(s)))
        }
        _ => {}
    }
}

fn assert_shape(what: &str, real: &Value, sim: &Value) {
    let mut out = Vec::new();
    missing(real, sim, what, &mut out);
    assert!(
        out.is_empty(),
        "the simulator lacks what Ganeti 3.0 sends in {what}:\n  {}",
        out.join("\n  ")
    );
}

async fn get_raw(sim: &SimHandle, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", sim.url()))
        .basic_auth("synnefo", Some("synnefo"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn nic(ip: &str) -> NicRequest {
    NicRequest {
        ip: Some(ip.into()),
        mode: Some("routed".into()),
        link: Some("100".into()),
        ..Default::default()
    }
}

fn create_body(name: &str, start: bool) -> CreateInstanceRequest {
    CreateInstanceRequest {
        version: 1,
        mode: "create".into(),
        instance_name: name.into(),
        disk_template: "diskless".into(),
        disks: vec![],
        nics: vec![nic("192.0.2.91")],
        os_type: "noop+default".into(),
        osparams: Default::default(),
        osparams_secret: Default::default(),
        beparams: BeParamsRequest {
            vcpus: Some(1),
            maxmem: Some(128),
            minmem: Some(128),
        },
        hvparams: Default::default(),
        hypervisor: Some("fake".into()),
        pnode: Some("node1.sim".into()),
        iallocator: None,
        ip_check: false,
        name_check: false,
        conflicts_check: false,
        start,
        tags: vec![],
    }
}

#[tokio::test]
async fn simulator_answers_carry_every_field_of_real_ganeti() {
    let sim = Simulator::builder()
        .hypervisor("fake")
        .latency(SimLatency::zero())
        .start()
        .await
        .unwrap();
    let c = sim.client().unwrap();
    let t = Duration::from_secs(30);

    let create = c
        .create_instance(&create_body("snf-901", true))
        .await
        .unwrap();
    c.wait_for_job_success(create, t).await.unwrap();
    let stopped = c
        .create_instance(&create_body("snf-902", false))
        .await
        .unwrap();
    c.wait_for_job_success(stopped, t).await.unwrap();
    let failed = c.startup("snf-nosuch").await.unwrap();
    c.wait_for_job(failed, t).await.unwrap();
    let shutdown = c
        .shutdown("snf-901", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    c.wait_for_job_success(shutdown, t).await.unwrap();
    let startup = c.startup("snf-901").await.unwrap();
    c.wait_for_job_success(startup, t).await.unwrap();
    let reboot = c
        .reboot("snf-901", synnefo_core::state::RebootKind::Soft)
        .await
        .unwrap();
    c.wait_for_job_success(reboot, t).await.unwrap();
    let modify = ModifyInstanceRequest {
        nics: Some(vec![
            json!(["add", -1, {"ip": "192.0.2.93", "mode": "routed", "link": "100"}]),
        ]),
        ..Default::default()
    };
    let modify = c.modify("snf-901", &modify).await.unwrap();
    c.wait_for_job_success(modify, t).await.unwrap();
    sim.set_single_step(true);
    let canceled = c.shutdown("snf-902", None).await.unwrap();
    assert!(c.cancel_job(canceled).await.unwrap().canceled);
    sim.set_single_step(false);
    let remove = c.remove_instance("snf-902").await.unwrap();
    c.wait_for_job_success(remove, t).await.unwrap();

    let pairs: Vec<(&str, String)> = vec![
        ("info.json", "/2/info".into()),
        ("features.json", "/2/features".into()),
        ("version.json", "/version".into()),
        ("nodes-bulk.json", "/2/nodes?bulk=1".into()),
        ("instances.json", "/2/instances".into()),
        ("instances-bulk.json", "/2/instances?bulk=1".into()),
        (
            "instance-info-after-modify.json",
            "/2/instances/snf-901".into(),
        ),
        ("console-fake.json", "/2/instances/snf-901/console".into()),
        ("job-create.json", format!("/2/jobs/{create}")),
        ("job-create.json", format!("/2/jobs/{stopped}")),
        ("job-failed.json", format!("/2/jobs/{failed}")),
        ("job-shutdown.json", format!("/2/jobs/{shutdown}")),
        ("job-startup.json", format!("/2/jobs/{startup}")),
        ("job-reboot.json", format!("/2/jobs/{reboot}")),
        ("job-modify.json", format!("/2/jobs/{modify}")),
        ("job-canceled.json", format!("/2/jobs/{canceled}")),
        ("job-remove.json", format!("/2/jobs/{remove}")),
        ("job-unknown.json", "/2/jobs/999999".into()),
    ];
    for (file, path) in pairs {
        let (status, body) = get_raw(&sim, &path).await;
        assert_eq!(status, 200, "{path}");
        assert_shape(file, &fixture(file), &body);
    }
    assert_eq!(
        get_raw(&sim, "/2/jobs/999999").await.1,
        fixture("job-unknown.json"),
        "unknown job: same body"
    );
    assert_eq!(
        get_raw(&sim, "/2/instances/snf-nosuch").await,
        (404, fixture("error-404.json"))
    );
    assert_eq!(
        get_raw(&sim, "/2/instances/snf-nosuch/console").await,
        (500, fixture("error-500-console-unknown.json"))
    );

    // /wait answers.
    let req = WaitForJobRequest {
        fields: vec![
            "id".into(),
            "status".into(),
            "opstatus".into(),
            "opresult".into(),
        ],
        previous_job_info: None,
        previous_log_serial: Some(0),
    };
    let change = c.wait_for_job_change(create, &req).await.unwrap().unwrap();
    assert_shape(
        "job-wait.json",
        &fixture("job-wait.json"),
        &serde_json::to_value(&change).unwrap(),
    );
    let fin = WaitForJobRequest {
        fields: vec!["status".into()],
        previous_job_info: Some(vec![json!("success")]),
        previous_log_serial: Some(99),
    };
    let change = c.wait_for_job_change(create, &fin).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&change).unwrap(),
        fixture("job-wait-final.json")
    );
    // Cancel answers.
    assert_eq!(
        serde_json::to_value(c.cancel_job(remove).await.unwrap()).unwrap(),
        json!([false, format!("Job {remove} not found in queue")])
    );

    // Error bodies, byte for byte the same message and explanation.
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/2/info", sim.url()))
        .basic_auth("synnefo", Some("bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"Ganeti Remote API\""
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        fixture("error-401.json")
    );
    let resp = client
        .post(format!("{}/2/instances", sim.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        fixture("error-401-no-credentials.json")
    );
    let resp = client
        .post(format!("{}/2/instances", sim.url()))
        .basic_auth("synnefo", Some("synnefo"))
        .json(&json!({"mode": "create"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        fixture("error-400.json")
    );
    let resp = client
        .post(format!("{}/2/instances", sim.url()))
        .basic_auth("synnefo", Some("synnefo"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        fixture("error-415.json")
    );

    // Job files: the final create (job process) and a job canceled before start (luxid).
    let jobs = recorded_jobs();
    let sim_file = |id: u64| -> Value {
        serde_json::from_slice(&std::fs::read(sim.queue_dir().join(format!("job-{id}"))).unwrap())
            .unwrap()
    };
    let real_create = fixture(&format!("queue/job-{}", jobs["create"]));
    assert_shape("queue/job-create", &real_create, &sim_file(create));
    let real_canceled = fixture(&format!("queue/job-{}", jobs["shutdown-canceled"]));
    assert_shape("queue/job-canceled", &real_canceled, &sim_file(canceled));
    let text = std::fs::read_to_string(sim.queue_dir().join(format!("job-{canceled}"))).unwrap();
    assert!(
        text.starts_with("{\"id\":"),
        "luxid writes compact JSON: {text}"
    );
    let text = std::fs::read_to_string(sim.queue_dir().join(format!("job-{create}"))).unwrap();
    assert!(
        text.starts_with("{\"id\": "),
        "the job process writes Python separators"
    );
    assert_eq!(
        std::fs::read_to_string(sim.queue_dir().join("serial"))
            .unwrap()
            .trim(),
        remove.to_string()
    );
}

/// Ganeti 3.0 takes `DELETE /2/instances/NAME` for an instance it does not
/// have and fails the job in its prerequisites. The recording has that
/// failure for a startup (`failed`: job-failed.json, queue/job-N); a
/// removal fails in the same place (both opcodes expand and lock the
/// instance in `ExpandNames`, `_ExpandAndLockInstance`) with the same error,
/// so the simulator's removal must fail exactly like that recorded job:
/// same result, no log, never executed.
#[tokio::test]
async fn removing_an_unknown_instance_fails_like_ganeti() {
    let sim = Simulator::builder()
        .latency(SimLatency::zero())
        .start()
        .await
        .unwrap();
    let c = sim.client().unwrap();
    let job = c
        .remove_instance("snf-nosuch")
        .await
        .expect("the submit is accepted");
    c.wait_for_job(job, Duration::from_secs(30)).await.unwrap();

    // The opcodes' inputs differ (startup vs remove); everything else may not.
    let without_inputs = |mut v: Value| {
        v["ops"] = Value::Null;
        v
    };
    let real = fixture("job-failed.json");
    let (status, answer) = get_raw(&sim, &format!("/2/jobs/{job}")).await;
    assert_eq!(status, 200);
    assert_shape(
        "job-failed.json (a removal)",
        &without_inputs(real.clone()),
        &without_inputs(answer.clone()),
    );
    assert_eq!(answer["ops"][0]["OP_ID"], "OP_INSTANCE_REMOVE");
    for field in ["status", "opstatus", "oplog", "opresult"] {
        assert_eq!(answer[field], real[field], "{field}");
    }
    assert_eq!(answer["summary"], json!(["INSTANCE_REMOVE(snf-nosuch)"]));
    assert_eq!(
        real["opresult"],
        json!([[
            "OpPrereqError",
            ["Instance 'snf-nosuch' not known", "unknown_entity"]
        ]])
    );

    let real_file = fixture(&format!("queue/job-{}", recorded_jobs()["failed"]));
    let sim_file: Value =
        serde_json::from_slice(&std::fs::read(sim.queue_dir().join(format!("job-{job}"))).unwrap())
            .unwrap();
    let without_input = |mut v: Value| {
        v["ops"][0]["input"] = Value::Null;
        v
    };
    assert_shape(
        "queue/job-failed (a removal)",
        &without_input(real_file.clone()),
        &without_input(sim_file.clone()),
    );
    let (real_op, sim_op) = (&real_file["ops"][0], &sim_file["ops"][0]);
    for field in ["status", "result", "log", "exec_timestamp"] {
        assert_eq!(sim_op[field], real_op[field], "ops[0].{field}");
    }
    assert_eq!(sim_op["input"]["OP_ID"], "OP_INSTANCE_REMOVE");
    assert!(!sim_op["end_timestamp"].is_null() && !sim_file["end_timestamp"].is_null());
}

#[test]
fn the_client_decodes_every_recorded_answer() {
    let dec = |f: &str| std::fs::read(fixtures().join(f)).unwrap();
    assert_eq!(decode::<u32>(&dec("version.json")).unwrap(), 2);
    assert_eq!(
        decode::<Vec<String>>(&dec("features.json")).unwrap().len(),
        4
    );
    let info: ClusterInfo = decode(&dec("info.json")).unwrap();
    assert_eq!(info.software_version, "3.0.2");
    let nodes: Vec<NodeInfo> = decode(&dec("nodes-bulk.json")).unwrap();
    assert_eq!(nodes[0].role.as_deref(), Some("M"));
    assert!(nodes[0].sptotal.is_none() && nodes[0].mtotal.is_some());
    for f in ["instances-bulk.json", "instances-bulk-empty.json"] {
        decode_instances(&dec(f)).unwrap();
    }
    let bulk = decode_instances(&dec("instances-bulk.json")).unwrap();
    let running = bulk
        .iter()
        .find(|i| i.status.as_deref() == Some("running"))
        .unwrap();
    assert!(running.to_info().running && running.to_info().admin_up);
    let down = bulk
        .iter()
        .find(|i| i.status.as_deref() == Some("ADMIN_down"))
        .unwrap();
    assert!(!down.to_info().running && down.oper_ram.is_none());
    for f in [
        "instance-info.json",
        "instance-info-down.json",
        "instance-info-after-modify.json",
    ] {
        let i: Instance = decode(&dec(f)).unwrap();
        assert!(!i.nics().is_empty(), "{f}");
    }
    let console: InstanceConsole = decode(&dec("console-fake.json")).unwrap();
    assert_eq!(console.kind, "msg");
    let mut decoded = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("job-") || !name.ends_with(".json") {
            continue;
        }
        decoded += 1;
        let bytes = dec(&name);
        if name.starts_with("job-cancel") && !name.starts_with("job-canceled") {
            decode::<CancelResult>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("job-wait") && name != "job-waiting.json" {
            if name == "job-wait-sequence.json" {
                decode::<Vec<Option<JobChange>>>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            } else {
                decode::<Option<JobChange>>(&bytes)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .unwrap();
            }
        } else {
            let j: RapiJob = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "job-unknown.json" {
                assert!(j.is_missing());
            } else {
                let info = j.to_job_info().unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(info.ops.len(), 1, "{name}");
                if info.status == synnefo_core::state::JobStatus::Error {
                    assert!(j.failure().is_some(), "{name}");
                }
            }
        }
    }
    assert!(decoded >= 20, "decoded {decoded} job answers");
    let failed: RapiJob = decode(&dec("job-failed.json")).unwrap();
    assert_eq!(
        failed.failure().unwrap().1,
        "OpPrereqError: Instance 'snf-nosuch' not known (unknown_entity)"
    );
    for f in [
        "error-400.json",
        "error-401.json",
        "error-404.json",
        "error-415.json",
        "error-500-console-unknown.json",
    ] {
        let e: ErrorBody = decode(&dec(f)).unwrap();
        assert!(e.code >= 400 && !e.text().is_empty());
    }
}
