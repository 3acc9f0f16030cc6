//! `RapiBackend` (the `GanetiBackend` port) and the allocator over two
//! simulated clusters reached through the HTTPS client.

use std::collections::BTreeMap;
use std::time::Duration;

use synnefo_core::BackendError;
use synnefo_core::ids::BackendId;
use synnefo_core::model::Backend;
use synnefo_core::ports::{GanetiBackend, InstanceSpec, NicSpec};
use synnefo_core::settings::{ClusterSettings, GanetiSettings, Secret};
use synnefo_core::state::{JobStatus, RebootKind};
use synnefo_ganeti::allocator::allocate;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_sim::{SimHandle, SimLatency, Simulator};

fn settings() -> GanetiSettings {
    GanetiSettings {
        secret_osparams: vec!["img_passwd".into()],
        default_disk_template: "plain".into(),
        default_nic_mode: "bridged".into(),
        default_nic_link: "br0".into(),
        default_nic_network: String::new(),
        shutdown_timeout_secs: 60,
        hypervisor: String::new(),
        rescue_image: synnefo_core::settings::default_rescue_image(),
        clusters: BTreeMap::new(),
    }
}

fn cluster_settings(sim: &SimHandle, dir: &tempfile::TempDir, n: u32) -> ClusterSettings {
    let ca = dir.path().join(format!("ca{n}.pem"));
    std::fs::write(&ca, sim.cert_pem().unwrap()).unwrap();
    ClusterSettings {
        host: "127.0.0.1".into(),
        port: sim.addr().port(),
        username: "synnefo".into(),
        password: Secret::new("synnefo"),
        https: true,
        ca_file: Some(ca),
        insecure: false,
        timeout_secs: 10,
    }
}

fn spec(backend: BackendId, name: &str) -> InstanceSpec {
    InstanceSpec {
        backend,
        name: name.into(),
        vcpus: 2,
        ram_mib: 1024,
        disk_gib: 5,
        disk_template: String::new(),
        os_type: "snf-image+default".into(),
        osparams: BTreeMap::new(),
        nics: vec![NicSpec {
            ip: Some("192.0.2.77".into()),
            ..Default::default()
        }],
        hvparams: BTreeMap::new(),
        start: true,
    }
}

fn backend_row(id: i64, drained: bool) -> Backend {
    Backend {
        id: BackendId(id),
        name: format!("c{id}"),
        host: "127.0.0.1".into(),
        port: 0,
        drained,
        offline: false,
        created: Default::default(),
    }
}

#[tokio::test]
async fn drives_two_clusters_through_the_port() {
    let lat = SimLatency::uniform(Duration::from_millis(2));
    let a = Simulator::builder()
        .https()
        .latency(lat)
        .instances(5)
        .start()
        .await
        .unwrap();
    let b = Simulator::builder()
        .https()
        .latency(lat)
        .instances(2)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = RapiBackend::new(
        vec![
            (BackendId(1), cluster_settings(&a, &dir, 1)),
            (BackendId(2), cluster_settings(&b, &dir, 2)),
        ],
        settings(),
    )
    .unwrap();
    assert_eq!(backend.backend_ids(), [BackendId(1), BackendId(2)]);
    let g: &dyn GanetiBackend = &backend;

    // Allocation reads cluster_load over RAPI: cluster 2 has fewer instances.
    let load = g.cluster_load(BackendId(1)).await.unwrap();
    assert_eq!(load.instances, 5);
    assert!(load.mem_free_mib > 0 && load.mem_free_mib < load.mem_total_mib);
    let chosen = allocate(&[backend_row(1, false), backend_row(2, false)], g, 1024)
        .await
        .unwrap();
    assert_eq!(chosen, BackendId(2));
    assert_eq!(
        allocate(&[backend_row(1, false), backend_row(2, true)], g, 1024)
            .await
            .unwrap(),
        BackendId(1)
    );

    let t = Duration::from_secs(10);
    let job = g.create_instance(&spec(chosen, "snf-42")).await.unwrap();
    let info = g.wait_for_job(chosen, job, t).await.unwrap();
    assert_eq!(info.status, JobStatus::Success);
    assert_eq!(info.ops[0].opcode, "OP_INSTANCE_CREATE");
    assert!(info.end_time_us.is_some());
    let i = g.instance_info(chosen, "snf-42").await.unwrap().unwrap();
    assert_eq!(
        (i.running, i.admin_up, i.vcpus, i.ram_mib),
        (true, true, Some(2), Some(1024))
    );
    assert_eq!(i.nics[0].ip.as_deref(), Some("192.0.2.77"));
    assert_eq!(i.nics[0].mode.as_deref(), Some("bridged"));
    assert_eq!(b.instance("snf-42").unwrap().disks[0].size, 5 * 1024);
    assert!(
        g.instance_info(BackendId(1), "snf-42")
            .await
            .unwrap()
            .is_none()
    );

    let job = g.shutdown(chosen, "snf-42", None).await.unwrap();
    assert_eq!(
        g.wait_for_job(chosen, job, t).await.unwrap().status,
        JobStatus::Success
    );
    let st = g.job_status(chosen, job).await.unwrap();
    assert_eq!(st.status, JobStatus::Success);
    assert!(
        !g.instance_info(chosen, "snf-42")
            .await
            .unwrap()
            .unwrap()
            .running
    );
    // A resize (issue 16): one set-params job with the flavor's CPUs and
    // memory, which the instance then has; the job shows its input and the
    // changes as Ganeti 3.0 lists them (`be/<param>`).
    let job = g.resize(chosen, "snf-42", 4, 2048).await.unwrap();
    let info = g.wait_for_job(chosen, job, t).await.unwrap();
    assert_eq!(
        (info.status, info.ops[0].opcode.as_str()),
        (JobStatus::Success, "OP_INSTANCE_SET_PARAMS")
    );
    let i = g.instance_info(chosen, "snf-42").await.unwrap().unwrap();
    assert_eq!(
        (i.running, i.vcpus, i.ram_mib),
        (false, Some(4), Some(2048))
    );
    assert_eq!(
        (
            b.instance("snf-42").unwrap().minmem,
            b.instance("snf-42").unwrap().maxmem
        ),
        (2048, 2048)
    );
    let raw = b.client().unwrap().job(job.0).await.unwrap();
    let op = &raw.ops.as_ref().unwrap()[0];
    assert_eq!(
        op["beparams"],
        serde_json::json!({"vcpus": 4, "maxmem": 2048, "minmem": 2048})
    );
    let mut changes: Vec<String> = raw.opresult.as_ref().unwrap()[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            r#"["be/maxmem",2048]"#,
            r#"["be/minmem",2048]"#,
            r#"["be/vcpus",4]"#
        ]
    );
    assert!(matches!(
        g.resize(chosen, "snf-42", 0, 2048).await,
        Err(BackendError::Rejected(_))
    ));

    let job = g.startup(chosen, "snf-42").await.unwrap();
    g.wait_for_job(chosen, job, t).await.unwrap();
    let job = g.reboot(chosen, "snf-42", RebootKind::Hard).await.unwrap();
    g.wait_for_job(chosen, job, t).await.unwrap();
    let console = g.console(chosen, "snf-42").await.unwrap();
    assert_eq!(console.kind, "vnc");
    assert!(matches!(
        g.console(chosen, "snf-nosuch").await,
        Err(BackendError::NotFound(_))
    ));
    let listed = g.list_instances(chosen).await.unwrap();
    assert_eq!(listed.len(), 3);

    let job = g.remove(chosen, "snf-42").await.unwrap();
    g.wait_for_job(chosen, job, t).await.unwrap();
    assert!(g.instance_info(chosen, "snf-42").await.unwrap().is_none());

    // A failing job is reported in the JobInfo, with the message.
    let job = g.startup(chosen, "snf-nosuch").await.unwrap();
    let info = g.wait_for_job(chosen, job, t).await.unwrap();
    assert_eq!(info.status, JobStatus::Error);
    assert!(info.error_message().unwrap().contains("not known"));
    assert!(matches!(
        g.job_status(chosen, synnefo_core::ids::JobId(9999)).await,
        Err(BackendError::NotFound(_))
    ));
}

#[tokio::test]
async fn wait_for_job_returns_the_current_state_at_its_deadline() {
    let sim = Simulator::builder()
        .https()
        .single_step(true)
        .start()
        .await
        .unwrap();
    let backend =
        RapiBackend::from_clients(vec![(BackendId(1), sim.client().unwrap())], settings());
    let job = backend.startup(BackendId(1), "snf-1").await.unwrap();
    let info = backend
        .wait_for_job(BackendId(1), job, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(info.status, JobStatus::Queued);
}

#[tokio::test]
async fn bad_credentials_and_unreachable_clusters_map_to_port_errors() {
    let sim = Simulator::builder().https().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cs = cluster_settings(&sim, &dir, 1);
    cs.password = Secret::new("wrong");
    let backend = RapiBackend::new(vec![(BackendId(1), cs.clone())], settings()).unwrap();
    assert!(matches!(
        backend.startup(BackendId(1), "x").await,
        Err(BackendError::Auth(_))
    ));
    cs.port = 1; // nothing listens there
    cs.timeout_secs = 2;
    let backend = RapiBackend::new(vec![(BackendId(1), cs)], settings()).unwrap();
    assert!(matches!(
        backend.cluster_load(BackendId(1)).await,
        Err(BackendError::Unavailable(_))
    ));
}
