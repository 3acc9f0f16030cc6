//! `synnefo reconcile --networks` end to end (issue 15): the RAPI
//! simulator as the cluster, a fresh PostgreSQL database, servers with
//! ports and a floating IP attached through the network service (real
//! Ganeti jobs), then drift behind the control plane's back (a port's NIC
//! removed, a stray NIC of ours and a foreign NIC added, a NIC's address
//! changed, a network disconnected from its node group), then the binary:
//! the guard holds fresh ports, the report (exit 1), the fix (the NIC
//! added back, the stray removed, the network connected again; the
//! changed NIC left for an operator), and clean once that is repaired.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{Flavor, NewVm, Quota, Vm};
use synnefo_core::network::{NetworkFlavor, Port, SubnetRequest};
use synnefo_core::ports::{
    BackendStore, CatalogStore, GanetiBackend, IdentityStore, NetworkStore, NicSpec, Store,
    VmStateUpdate, VmStore,
};
use synnefo_core::reconcile::{StateFix, fixed_state};
use synnefo_core::service::compute::{Caller, ComputeConfig};
use synnefo_core::service::network::{CreateNetwork, CreatePort, Networking};
use synnefo_core::settings::Settings;
use synnefo_core::state::{OperState, VmState};
use synnefo_core::store::SeaStore;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_sim::{NewSimInstance, SimHandle, Simulator};
use synnefo_test_support::db::TestDb;

const SYNNEFO: &str = env!("CARGO_BIN_EXE_synnefo");

struct World {
    _db: TestDb,
    store: SeaStore,
    sim: SimHandle,
    ganeti: Arc<RapiBackend>,
    backend: BackendId,
    net: Networking,
    caller: Caller,
    flavor: Flavor,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

async fn world(test: &str) -> Option<World> {
    let db = TestDb::postgres(test).await?;
    let store = db.store.clone();
    let sim = Simulator::builder().start().await.expect("simulator");
    let backend = store
        .upsert_backend("sim", "127.0.0.1", sim.addr().port())
        .await
        .unwrap()
        .id;
    let settings = Settings::defaults_with("").unwrap();
    let ganeti = Arc::new(RapiBackend::from_clients(
        [(backend, sim.client().unwrap())],
        settings.ganeti.clone(),
    ));
    let user = store
        .create_user("alice", "$argon2id$fake", false)
        .await
        .unwrap();
    let project = store.create_project("alice").await.unwrap();
    let flavor = store
        .create_flavor(&Flavor {
            id: FlavorId(0),
            name: "small".into(),
            vcpus: 1,
            ram_mib: 128,
            disk_gib: 1,
            disk_template: "diskless".into(),
            is_public: true,
            deleted: false,
        })
        .await
        .unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let net = Networking::new(
        shared,
        ganeti.clone(),
        ComputeConfig::from_settings(&settings).network,
        settings.backend_prefix_id.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url, sim.addr().port());
    Some(World {
        _db: db,
        store,
        sim,
        ganeti,
        backend,
        net,
        caller: Caller {
            user_id: user.id,
            project_id: project.id,
            is_admin: false,
            request_id: None,
        },
        flavor,
        _dir: dir,
        config,
    })
}

fn write_config(dir: &Path, db_url: &str, port: u16) -> PathBuf {
    let path = dir.join("synnefo.toml");
    let text = format!(
        r#"data_dir = "{data}"
backend_prefix_id = "snf-"

[database]
url = "{db_url}"

[ganeti.clusters.sim]
host = "127.0.0.1"
port = {port}
https = false
username = "synnefo"
password = "synnefo"
timeout_secs = 10

[log]
level = "warn"
"#,
        data = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl World {
    /// A STARTED server on the simulator, with an instance and no NIC.
    async fn server(&self) -> Vm {
        let vm = self
            .store
            .create_vm(
                &NewVm {
                    user_id: self.caller.user_id.clone(),
                    project_id: self.caller.project_id.clone(),
                    name: "vm".into(),
                    flavor: self.flavor.clone(),
                    image_id: "img".into(),
                    backend_id: Some(self.backend),
                    metadata: BTreeMap::new(),
                    request_id: None,
                },
                Quota::default(),
            )
            .await
            .unwrap();
        let started = fixed_state(
            &VmState::new_build(),
            StateFix::OperState(OperState::Started),
        )
        .expect("BUILD -> STARTED");
        let vm = self
            .store
            .update_vm_state(&VmStateUpdate {
                id: vm.id,
                expected_version: vm.version,
                state: started,
                nics: None,
                resize: None,
                action_log: None,
                image: None,
            })
            .await
            .unwrap();
        self.sim.add_instance_directly(NewSimInstance {
            name: instance(vm.id),
            nic_ips: vec![],
            ..NewSimInstance::default()
        });
        vm
    }

    /// A port on `network` attached to `vm` through the service (a NIC
    /// added on the cluster).
    async fn attach(&self, vm: &Vm, network: &str) -> Port {
        self.net
            .create_port(
                &self.caller,
                CreatePort {
                    network_id: network.into(),
                    device_id: Some(vm.id.to_string()),
                    ..CreatePort::default()
                },
            )
            .await
            .expect("port attached")
    }

    /// A job submitted behind the control plane's back, run to success.
    async fn behind_our_back(&self, job: JobId) {
        let info = self
            .ganeti
            .wait_for_job(self.backend, job, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            info.status,
            synnefo_core::state::JobStatus::Success,
            "{info:?}"
        );
    }

    /// The NICs of `vm`'s instance as `(name, mac, ip)`.
    fn nics(&self, vm: VmId) -> Vec<(Option<String>, String, Option<String>)> {
        self.sim
            .instance(&instance(vm))
            .expect("instance")
            .nics
            .into_iter()
            .map(|n| (n.name, n.mac, n.ip))
            .collect()
    }

    fn reconcile(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, stdout) = self.reconcile_text(&all);
        let report =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("JSON report ({e}): {stdout}"));
        (code, report)
    }

    /// `synnefo reconcile --networks <args>`: exit code and stdout.
    fn reconcile_text(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["reconcile", "--networks"];
        all.extend_from_slice(args);
        self.synnefo(&all)
    }

    /// `synnefo <args>` with this world's settings: exit code and stdout.
    fn synnefo(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(SYNNEFO)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SYNNEFO_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run synnefo reconcile");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            eprintln!("synnefo {args:?} stderr:\n{stderr}");
        }
        (out.status.code().unwrap_or(-1), stdout)
    }
}

fn instance(vm: VmId) -> String {
    format!("snf-{vm}")
}

/// `(kind, detail)` of each discrepancy, sorted: the NIC's name for NIC
/// findings, the network for network findings.
fn kinds(report: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let detail = match d["kind"].as_str().unwrap() {
                "missing_nic" | "nic_differs" => d["nic"]["name"].as_str().unwrap().to_string(),
                "extra_nic" => d["nic"]["name"].as_str().unwrap_or("-").to_string(),
                _ => d["network_id"].as_str().unwrap_or("-").to_string(),
            };
            (d["kind"].as_str().unwrap().to_string(), detail)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nics_and_connections_reported_fixed_and_clean() {
    let Some(w) = world("nics_and_connections_reported_fixed_and_clean").await else {
        return;
    };
    // A private network (MAC_FILTERED: its own MAC prefix), a public one
    // for floating IPs, and an idle network made on the cluster.
    let private = w
        .net
        .create_network(
            &w.caller,
            CreateNetwork {
                name: "private".into(),
                ..CreateNetwork::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(private.flavor, NetworkFlavor::MacFiltered);
    let prefix = private.mac_prefix.clone().expect("a prefix from the pool");
    w.net
        .create_subnet(
            &w.caller,
            &private.id,
            "v4".into(),
            SubnetRequest {
                cidr: "10.50.0.0/24".into(),
                ..SubnetRequest::default()
            },
        )
        .await
        .unwrap();
    w.net
        .create_public_network(
            "public",
            NetworkFlavor::IpLessRouted,
            None,
            SubnetRequest {
                cidr: "192.0.2.0/24".into(),
                ..SubnetRequest::default()
            },
        )
        .await
        .unwrap();
    let idle = w
        .net
        .create_network(
            &w.caller,
            CreateNetwork {
                name: "idle".into(),
                ..CreateNetwork::default()
            },
        )
        .await
        .unwrap();
    w.net
        .create_subnet(
            &w.caller,
            &idle.id,
            "v4".into(),
            SubnetRequest {
                cidr: "10.60.0.0/24".into(),
                ..SubnetRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(w.net.ensure_on_backend(&idle, w.backend).await.unwrap());

    // Server A: one port and a floating IP on it; server B: two ports.
    let a = w.server().await;
    let p1 = w.attach(&a, &private.id).await;
    assert!(p1.mac.starts_with(&prefix), "{} / {prefix}", p1.mac);
    let fip = w
        .net
        .create_floating_ip(&w.caller, None, None, Some(&p1.id), "")
        .await
        .unwrap();
    let b = w.server().await;
    let p2 = w.attach(&b, &private.id).await;
    let p3 = w.attach(&b, &private.id).await;
    assert_eq!(
        w.nics(a.id).len(),
        2,
        "the port's NIC and the floating IP's"
    );
    assert_eq!(w.nics(b.id).len(), 2);

    // The operators' view of the leases: each MAC_FILTERED network its
    // own prefix.
    let (code, out) = w.synnefo(&["admin", "networks", "leases", "--json"]);
    assert_eq!(code, 0, "{out}");
    let leases: Value = serde_json::from_str(&out).unwrap();
    let mut got: Vec<(String, String, String)> = leases
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["value"].as_str().unwrap().to_string(),
                l["network_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        ("mac_prefix".to_string(), prefix.clone(), private.id.clone()),
        (
            "mac_prefix".to_string(),
            idle.mac_prefix.clone().unwrap(),
            idle.id.clone(),
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    assert_ne!(idle.mac_prefix.as_deref(), Some(prefix.as_str()));

    // In sync.
    let (code, report) = w.reconcile(&["--stuck-after", "0"]);
    assert_eq!(code, 0, "{report:#}");
    assert!(kinds(&report).is_empty(), "{report:#}");
    assert_eq!(report["nic_stats"]["servers"], 2);

    // Drift behind our back.
    let job = w
        .ganeti
        .remove_nic(w.backend, &instance(a.id), &p1.ganeti_name())
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let job = w
        .ganeti
        .add_nic(
            w.backend,
            &instance(b.id),
            &NicSpec {
                network: Some(private.ganeti_name()),
                ip: Some("10.50.0.200".into()),
                mac: Some("ae:7f:00:00:00:01".into()),
                name: Some("snf-nic-stray".into()),
                ..NicSpec::default()
            },
        )
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let job = w
        .ganeti
        .add_nic(
            w.backend,
            &instance(b.id),
            &NicSpec {
                mode: Some("bridged".into()),
                link: Some("br0".into()),
                ..NicSpec::default()
            },
        )
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let job = w
        .ganeti
        .remove_nic(w.backend, &instance(b.id), &p3.ganeti_name())
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let job = w
        .ganeti
        .add_nic(
            w.backend,
            &instance(b.id),
            &NicSpec {
                network: Some(private.ganeti_name()),
                ip: Some("10.50.0.201".into()),
                mac: Some(p3.mac.clone()),
                name: Some(p3.ganeti_name()),
                ..NicSpec::default()
            },
        )
        .await
        .unwrap();
    w.behind_our_back(job).await;
    for job in w
        .ganeti
        .disconnect_network(w.backend, &idle.ganeti_name())
        .await
        .unwrap()
    {
        w.behind_our_back(job).await;
    }

    // The ports were attached moments ago: with the default guard the
    // findings about them are held; the stray NIC (no such port) and the
    // network are reported.
    let (code, report) = w.reconcile(&[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        kinds(&report),
        vec![
            ("disconnected".into(), idle.id.clone()),
            ("extra_nic".into(), "snf-nic-stray".into()),
        ],
        "{report:#}"
    );
    let mut held: Vec<String> = report["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["finding"].as_str().unwrap(),
                h["nic"].as_str().unwrap()
            )
        })
        .collect();
    held.sort();
    assert_eq!(
        held,
        vec![
            format!("missing_nic {}", p1.ganeti_name()),
            format!("nic_differs {}", p3.ganeti_name()),
        ]
    );

    // 1. Report.
    let (code, report) = w.reconcile(&["--stuck-after", "0"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        kinds(&report),
        vec![
            ("disconnected".into(), idle.id.clone()),
            ("extra_nic".into(), "snf-nic-stray".into()),
            ("missing_nic".into(), p1.ganeti_name()),
            ("nic_differs".into(), p3.ganeti_name()),
        ],
        "{report:#}"
    );
    assert_eq!(report["nic_stats"]["foreign_ignored"], 1, "{report:#}");
    let differs = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "nic_differs")
        .unwrap();
    assert_eq!(differs["fields"], serde_json::json!(["ip"]));
    assert!(report["fixed"].as_array().unwrap().is_empty());
    assert_eq!(w.nics(a.id).len(), 1, "report-only");
    let (code, text) = w.reconcile_text(&["--stuck-after", "0"]);
    assert_eq!(code, 1, "{text}");
    for line in [
        format!(
            "found (--fix-stale): server {} ({}): no NIC {}",
            a.id,
            instance(a.id),
            p1.ganeti_name()
        ),
        format!(
            "found (--fix-stale): cluster {}: network {} is not connected to node group(s) default",
            w.backend, idle.id
        ),
        "found (--fix-orphans): server".to_string(),
        format!("found (report only): server {} ({}): NIC", b.id, instance(b.id)),
        "networks: 4 discrepancies, 0 fixed, 0 failed, 0 held, 0 clusters unlisted; 2 servers' NICs checked, 1 foreign NICs ignored".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }

    // 2. Fix: everything but the NIC that differs (report only).
    let (code, report) = w.reconcile(&["--stuck-after", "0", "--fix-all"]);
    assert_eq!(code, 1, "the differing NIC remains: {report:#}");
    assert_eq!(report["fixed"].as_array().unwrap().len(), 3, "{report:#}");
    assert!(
        report["failed"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let a_nics = w.nics(a.id);
    let back = a_nics
        .iter()
        .find(|(name, _, _)| name.as_deref() == Some(p1.ganeti_name().as_str()))
        .expect("p1's NIC added back");
    assert_eq!(back.1, p1.mac);
    assert_eq!(
        back.2.as_deref(),
        Some(p1.fixed_ips[0].ip.to_string().as_str())
    );
    assert!(
        a_nics.iter().any(
            |(name, _, ip)| name.as_deref() == Some(fip.ganeti_nic_name().as_str())
                && ip.as_deref() == Some(fip.address.to_string().as_str())
        ),
        "the floating IP's NIC untouched: {a_nics:?}"
    );
    let b_nics = w.nics(b.id);
    assert!(
        !b_nics
            .iter()
            .any(|(name, _, _)| name.as_deref() == Some("snf-nic-stray")),
        "stray removed: {b_nics:?}"
    );
    assert!(
        b_nics.iter().any(|(name, _, _)| name.is_none()),
        "the foreign NIC untouched: {b_nics:?}"
    );
    assert!(
        b_nics
            .iter()
            .any(|(name, _, _)| name.as_deref() == Some(p2.ganeti_name().as_str()))
    );
    let listed = w.ganeti.list_networks(w.backend).await.unwrap();
    let idle_listed = listed
        .iter()
        .find(|n| n.name == idle.ganeti_name())
        .unwrap();
    assert_eq!(
        idle_listed.groups,
        vec![("default".to_string(), idle.mode.clone(), idle.link.clone())]
    );

    // 3. An operator repairs the differing NIC; then clean.
    let (code, report) = w.reconcile(&["--stuck-after", "0"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        kinds(&report),
        vec![("nic_differs".into(), p3.ganeti_name())]
    );
    let job = w
        .ganeti
        .remove_nic(w.backend, &instance(b.id), &p3.ganeti_name())
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let spec = w
        .net
        .nic_specs(w.backend, std::slice::from_ref(&p3))
        .await
        .unwrap();
    let job = w
        .ganeti
        .add_nic(w.backend, &instance(b.id), &spec[0])
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let (code, report) = w.reconcile(&["--stuck-after", "0"]);
    assert_eq!(code, 0, "{report:#}");
    assert!(kinds(&report).is_empty());

    // 4. A detach touches its port before Ganeti removes the NIC, so a
    // run meanwhile holds the port instead of adding its NIC back: a port
    // unchanged for years, its detach failing on the cluster, then its
    // NIC gone as if the removal had run after all.
    use sea_orm::ConnectionTrait;
    w.store
        .connection()
        .execute_unprepared(&format!(
            "UPDATE ports SET updated = '2020-01-01 00:00:00+00' WHERE id = '{}'",
            p2.id
        ))
        .await
        .unwrap();
    w.sim
        .fail_next_jobs(1, "simulated: the hypervisor refused the unplug");
    let err = w
        .net
        .delete_port(&w.caller, &p2.id)
        .await
        .expect_err("the removal job fails");
    assert!(err.to_string().contains("refused the unplug"), "{err}");
    let touched = w.store.port(&p2.id).await.unwrap().expect("kept");
    assert!(
        touched.updated.timestamp() > 1_700_000_000,
        "touched before the NIC removal: {}",
        touched.updated
    );
    let job = w
        .ganeti
        .remove_nic(w.backend, &instance(b.id), &p2.ganeti_name())
        .await
        .unwrap();
    w.behind_our_back(job).await;
    let (code, report) = w.reconcile(&[]);
    assert_eq!(code, 0, "held, not reported: {report:#}");
    assert_eq!(report["held"][0]["finding"], "missing_nic", "{report:#}");
    assert_eq!(report["held"][0]["nic"], p2.ganeti_name().as_str());
    assert_eq!(report["held"][0]["guard"], "recently_changed");
}
