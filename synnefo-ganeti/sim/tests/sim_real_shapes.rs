//! The simulator behaves like the real Ganeti 3.0.2 of the lab where the
//! lab found it did not (docs/ganeti-lab.md, "Shape differences between the
//! simulator and real Ganeti"): address pools, network parameters, network
//! UUIDs in the listing, unknown networks, OS and OS parameter checks, the
//! instance policy, and log lines written before a failure.

use std::time::Duration;

use serde_json::{Value, json};
use synnefo_ganeti::rapi::*;
use synnefo_ganeti_sim::{
    SimConfig, SimHandle, SimLatency, SimNetworkConfig, SimOsConfig, Simulator,
};

const T: Duration = Duration::from_secs(10);
const NET: &str = "synnefo-lab";

/// The lab's network: 198.51.100.0/24, no gateway, connected routed/100.
fn lab_net() -> SimNetworkConfig {
    SimNetworkConfig {
        mode: "routed".into(),
        link: "100".into(),
        ..SimNetworkConfig::new(NET, "198.51.100.0/24")
    }
}

async fn sim_with(networks: Vec<SimNetworkConfig>, single_step: bool) -> SimHandle {
    Simulator::builder()
        .config(SimConfig {
            networks,
            hypervisor: "fake".into(),
            latency: SimLatency::zero(),
            single_step,
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap()
}

fn pool_nic() -> NicRequest {
    NicRequest {
        network: Some(NET.into()),
        ip: Some("pool".into()),
        ..Default::default()
    }
}

/// What Synnefo sends (see `backend::create_request`), on node1.sim.
fn body(name: &str, nics: Vec<NicRequest>) -> CreateInstanceRequest {
    let mut secret = std::collections::BTreeMap::new();
    secret.insert("img_passwd".to_string(), "s3cret".to_string());
    CreateInstanceRequest {
        version: 1,
        mode: "create".into(),
        instance_name: name.into(),
        disk_template: "diskless".into(),
        disks: vec![],
        nics,
        os_type: "noop+default".into(),
        osparams: [("img_id".to_string(), "debian".to_string())].into(),
        osparams_secret: SecretOsParams(secret),
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
        start: true,
        tags: vec![],
    }
}

async fn get(sim: &SimHandle, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", sim.url()))
        .basic_auth("synnefo", Some("synnefo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Submits a create, waits for its end; the raw `/2/jobs/ID`.
async fn create(sim: &SimHandle, b: &CreateInstanceRequest) -> Value {
    let c = sim.client().unwrap();
    let id = c.create_instance(b).await.unwrap();
    c.wait_for_job(id, T).await.unwrap();
    get(sim, &format!("/2/jobs/{id}")).await
}

fn log_lines(job: &Value) -> Vec<String> {
    job["oplog"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[3].as_str().unwrap().to_string())
        .collect()
}

async fn bulk_entry(sim: &SimHandle, name: &str) -> Value {
    get(sim, "/2/instances?bulk=1")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed"))
}

const INHERITS: &str = " - INFO: NIC/0 inherits netparams ['100', 'routed', '']";

/// 1-3: the first free address, the network's parameters, UUIDs in
/// `nic.networks` and names in `nic.networks.names`; the op input keeps
/// `"ip": "pool"`.
#[tokio::test]
async fn pool_address_and_netparams_come_from_the_network() {
    let sim = sim_with(vec![lab_net()], false).await;
    let uuid = sim.network_uuid(NET).unwrap();
    let job = create(&sim, &body("snf-1", vec![pool_nic()])).await;
    assert_eq!(job["status"], "success", "{job}");
    let logs = log_lines(&job);
    assert_eq!(
        logs[..2],
        [
            INHERITS.to_string(),
            " - INFO: Chose IP 198.51.100.1 from network synnefo-lab".to_string()
        ],
        "{logs:?}"
    );
    assert_eq!(
        job["ops"][0]["nics"],
        json!([{"network": NET, "ip": "pool"}])
    );

    let i = bulk_entry(&sim, "snf-1").await;
    assert_eq!(i["nic.ips"], json!(["198.51.100.1"]));
    assert_eq!(i["nic.modes"], json!(["routed"]));
    assert_eq!(i["nic.links"], json!(["100"]));
    assert_eq!(i["nic.networks"], json!([uuid]));
    assert_eq!(i["nic.networks.names"], json!([NET]));
    assert_eq!(i["nic.bridges"], json!([null]));
    let typed = sim.client().unwrap().instance("snf-1").await.unwrap();
    assert_eq!(typed.nic_ips, vec![Some("198.51.100.1".to_string())]);

    // The next create gets the next address; a NIC outside any network
    // keeps its own mode/link and shows no network.
    let plain = NicRequest {
        ip: Some("192.0.2.50".into()),
        mode: Some("bridged".into()),
        link: Some("br0".into()),
        ..Default::default()
    };
    let job = create(&sim, &body("snf-2", vec![plain, pool_nic()])).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        log_lines(&job)[..2],
        [
            " - INFO: NIC/1 inherits netparams ['100', 'routed', '']".to_string(),
            " - INFO: Chose IP 198.51.100.2 from network synnefo-lab".to_string()
        ]
    );
    let i = bulk_entry(&sim, "snf-2").await;
    assert_eq!(i["nic.ips"], json!(["192.0.2.50", "198.51.100.2"]));
    assert_eq!(i["nic.modes"], json!(["bridged", "routed"]));
    assert_eq!(i["nic.networks"], json!([null, uuid]));
    assert_eq!(i["nic.networks.names"], json!([null, NET]));

    // A fixed address in the network is taken from the pool too; removing
    // an instance gives its address back.
    let fixed = NicRequest {
        network: Some(NET.into()),
        ip: Some("198.51.100.3".into()),
        ..Default::default()
    };
    let job = create(&sim, &body("snf-3", vec![fixed])).await;
    assert_eq!(log_lines(&job)[0], INHERITS);
    assert!(!log_lines(&job)[1].contains("Chose IP"));
    let c = sim.client().unwrap();
    let rm = c.remove_instance("snf-1").await.unwrap();
    c.wait_for_job(rm, T).await.unwrap();
    let job = create(&sim, &body("snf-4", vec![pool_nic()])).await;
    assert_eq!(
        log_lines(&job)[1],
        " - INFO: Chose IP 198.51.100.1 from network synnefo-lab"
    );
    let job = create(&sim, &body("snf-5", vec![pool_nic()])).await;
    assert_eq!(
        log_lines(&job)[1],
        " - INFO: Chose IP 198.51.100.4 from network synnefo-lab"
    );
}

/// The gateway, `reserved_ips` and node addresses are never handed out;
/// creates in flight hold their address (Ganeti's temporary reservations).
#[tokio::test]
async fn pool_skips_reserved_addresses_and_addresses_of_running_jobs() {
    let net = SimNetworkConfig {
        gateway: Some("198.51.100.1".into()),
        reserved_ips: vec!["198.51.100.3".into()],
        ..lab_net()
    };
    let sim = Simulator::builder()
        .config(SimConfig {
            networks: vec![net],
            nodes: vec![synnefo_ganeti_sim::SimNodeConfig {
                name: "node1.sim".into(),
                ip: Some("198.51.100.4".into()),
                ..Default::default()
            }],
            single_step: true,
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap();
    let c = sim.client().unwrap();
    let a = c
        .create_instance(&body("snf-a", vec![pool_nic()]))
        .await
        .unwrap();
    let b = c
        .create_instance(&body("snf-b", vec![pool_nic()]))
        .await
        .unwrap();
    // Both pass their prerequisites before either adds its instance.
    for id in [a, b] {
        while sim.job_status(id) != Some(synnefo_core::state::JobStatus::Running) {
            assert!(sim.step_job(id));
        }
    }
    sim.run_until_idle();
    for id in [a, b] {
        assert_eq!(c.job(id).await.unwrap().status.as_deref(), Some("success"));
    }
    assert_eq!(
        c.instance("snf-a").await.unwrap().nic_ips,
        vec![Some("198.51.100.2".to_string())]
    );
    assert_eq!(
        c.instance("snf-b").await.unwrap().nic_ips,
        vec![Some("198.51.100.5".to_string())]
    );
}

/// An exhausted pool fails the create in its prerequisites, after the
/// netparams line (LUInstanceCreate.CheckPrereq).
#[tokio::test]
async fn an_exhausted_pool_fails_the_create() {
    // A /30: network, broadcast and two hosts.
    let net = SimNetworkConfig {
        subnet: "198.51.100.0/30".into(),
        ..lab_net()
    };
    let sim = sim_with(vec![net], false).await;
    for name in ["snf-1", "snf-2"] {
        assert_eq!(
            create(&sim, &body(name, vec![pool_nic()])).await["status"],
            "success"
        );
    }
    let job = create(&sim, &body("snf-3", vec![pool_nic()])).await;
    assert_eq!(job["status"], "error");
    assert_eq!(
        job["opresult"][0],
        json!([
            "OpPrereqError",
            [
                "Unable to get a free IP for NIC 0 from the address pool",
                "wrong_state"
            ]
        ])
    );
    assert_eq!(log_lines(&job), [INHERITS]);
    assert!(sim.instance("snf-3").is_none());
}

/// 4: a NIC naming a network the cluster does not have; a network NIC with
/// mode/link; `ip: pool` without a network (ComputeNics / LookupNetwork).
#[tokio::test]
async fn bad_network_nics_are_refused_like_ganeti() {
    let sim = sim_with(vec![lab_net()], false).await;
    let cases = [
        (
            NicRequest {
                network: Some("nosuch".into()),
                ip: Some("pool".into()),
                ..Default::default()
            },
            json!([
                "OpPrereqError",
                ["Network 'nosuch' not found", "unknown_entity"]
            ]),
        ),
        (
            NicRequest {
                mode: Some("routed".into()),
                ..pool_nic()
            },
            json!([
                "OpPrereqError",
                [
                    "If network is given, no mode or link is allowed to be passed",
                    "wrong_input"
                ]
            ]),
        ),
        (
            NicRequest {
                ip: Some("pool".into()),
                ..Default::default()
            },
            json!([
                "OpPrereqError",
                [
                    "if ip=pool, parameter network must be passed too",
                    "wrong_input"
                ]
            ]),
        ),
    ];
    for (i, (nic, want)) in cases.into_iter().enumerate() {
        let job = create(&sim, &body(&format!("snf-{i}"), vec![nic])).await;
        assert_eq!(job["status"], "error");
        assert_eq!(job["opresult"][0], want);
        assert_eq!(job["oplog"], json!([[]]), "nothing logged");
        assert!(job["end_ts"].is_array());
    }
    // Without networks at all (the default), a network NIC is refused too.
    let bare = sim_with(vec![], false).await;
    let job = create(&bare, &body("snf-x", vec![pool_nic()])).await;
    assert_eq!(
        job["opresult"][0],
        json!([
            "OpPrereqError",
            ["Network 'synnefo-lab' not found", "unknown_entity"]
        ])
    );
}

/// 5 and 7: OS parameters are checked against the OS's `parameters.list`
/// (secret ones too) and fail with OpExecError after the network lines;
/// unknown OS and variant fail with OpPrereqError.
#[tokio::test]
async fn os_and_os_parameters_are_checked() {
    // The lab's OS before it declared img_passwd.
    let sim = Simulator::builder()
        .config(SimConfig {
            networks: vec![lab_net()],
            os: vec![SimOsConfig {
                name: "noop".into(),
                variants: vec!["default".into()],
                parameters: vec!["delay".into(), "img_id".into()],
            }],
            latency: SimLatency::zero(),
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap();
    let job = create(&sim, &body("snf-1", vec![pool_nic()])).await;
    assert_eq!(job["status"], "error");
    assert_eq!(
        job["opresult"][0],
        json!([
            "OpExecError",
            [
                "OS Parameters validation failed on node node1.sim: The following parameters are not supported by the OS noop: img_passwd"
            ]
        ])
    );
    // The log holds what came before the failure, not the error.
    assert_eq!(
        log_lines(&job),
        [
            INHERITS,
            " - INFO: Chose IP 198.51.100.1 from network synnefo-lab"
        ]
    );
    assert_eq!(
        job["ops"][0]["osparams_secret"],
        json!({"img_passwd": null})
    );
    assert!(sim.instance("snf-1").is_none());
    // The failed create's address is free again.
    let mut ok = body("snf-2", vec![pool_nic()]);
    ok.osparams_secret = SecretOsParams(Default::default());
    let job = create(&sim, &ok).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        log_lines(&job)[1],
        " - INFO: Chose IP 198.51.100.1 from network synnefo-lab"
    );
    // Several unknown parameters, public and private, sorted.
    let mut two = body("snf-3", vec![]);
    two.osparams.insert("zz".into(), "1".into());
    let job = create(&sim, &two).await;
    assert_eq!(
        job["opresult"][0][1][0],
        "OS Parameters validation failed on node node1.sim: The following parameters are not supported by the OS noop: img_passwd, zz"
    );
    assert_eq!(job["oplog"], json!([[]]));

    let mut other = body("snf-4", vec![]);
    other.os_type = "debootstrap+default".into();
    let job = create(&sim, &other).await;
    assert_eq!(
        job["opresult"][0],
        json!([
            "OpPrereqError",
            [
                "OS 'debootstrap+default' not in supported OS list for node node1.sim: Directory for OS debootstrap not found in search path",
                "wrong_input"
            ]
        ])
    );
    other.os_type = "noop+minimal".into();
    let job = create(&sim, &other).await;
    assert_eq!(
        job["opresult"][0],
        json!(["OpPrereqError", ["Unsupported OS variant", "wrong_input"]])
    );
    other.os_type = "noop".into();
    let job = create(&sim, &other).await;
    assert_eq!(
        job["opresult"][0],
        json!([
            "OpPrereqError",
            ["OS name must include a variant", "wrong_input"]
        ])
    );
}

/// The default OS list takes what Synnefo sends to both OSes.
#[tokio::test]
async fn default_oses_take_what_synnefo_sends() {
    let sim = sim_with(vec![], false).await;
    for (name, os) in [("snf-1", "noop+default"), ("snf-2", "snf-image+default")] {
        let mut b = body(name, vec![NicRequest::default()]);
        b.os_type = os.into();
        for k in ["img_format", "img_properties", "img_personality"] {
            b.osparams.insert(k.into(), "x".into());
        }
        let job = create(&sim, &b).await;
        assert_eq!(job["status"], "success", "{job}");
    }
}

/// 6: a disk outside [1024 MiB, 1 TiB] fails in the prerequisites with
/// exactly the recorded message (group UUID aside) and no log line.
#[tokio::test]
async fn instance_policy_limits_disk_sizes() {
    let sim = sim_with(vec![], false).await;
    let nodes = get(&sim, "/2/nodes?bulk=1").await;
    let group = nodes[0]["group.uuid"].as_str().unwrap().to_string();

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/ganeti-3.0/job-create-failed.json"
    );
    let real: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let real_msg = real["opresult"][0][1][0].as_str().unwrap();
    let real_group = real_msg
        .strip_prefix("Instance allocation to group ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap();

    let with_disk = |name: &str, size: u64| {
        let mut b = body(name, vec![NicRequest::default()]);
        b.disk_template = "file".into();
        b.disks = vec![DiskRequest {
            size,
            mode: None,
            name: None,
        }];
        b
    };
    let job = create(&sim, &with_disk("snf-904", 16)).await;
    assert_eq!(job["status"], "error");
    assert_eq!(job["opresult"][0][0], real["opresult"][0][0]);
    assert_eq!(
        job["opresult"][0][1],
        json!([real_msg.replace(real_group, &group), "wrong_input"])
    );
    assert_eq!(job["oplog"], real["oplog"]);
    assert_eq!(job["oplog"], json!([[]]));

    let job = create(&sim, &with_disk("snf-big", 2 * 1024 * 1024)).await;
    assert_eq!(
        job["opresult"][0][1][0],
        format!(
            "Instance allocation to group {group} (default) violates policy: disk-size/0 value 2097152 is not in range [1024, 1048576]"
        )
    );
    for size in [1024, 1024 * 1024] {
        let job = create(&sim, &with_disk(&format!("snf-{size}"), size)).await;
        assert_eq!(job["status"], "success", "{job}");
    }
    let mut ignored = with_disk("snf-ignored", 16);
    ignored.disks[0].size = 16;
    let c = sim.client().unwrap();
    let mut raw = serde_json::to_value(&ignored).unwrap();
    raw["ignore_ipolicy"] = json!(true);
    let id: u64 = reqwest::Client::new()
        .post(format!("{}/2/instances", sim.url()))
        .basic_auth("synnefo", Some("synnefo"))
        .json(&raw)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = c.wait_for_job(id, T).await.unwrap();
    assert_eq!(job.status.as_deref(), Some("success"));
}

/// A NIC added by a modify takes its address from the pool too.
#[tokio::test]
async fn modify_nic_add_uses_the_pool() {
    let sim = sim_with(vec![lab_net()], false).await;
    let uuid = sim.network_uuid(NET).unwrap();
    assert_eq!(
        create(&sim, &body("snf-1", vec![pool_nic()])).await["status"],
        "success"
    );
    let c = sim.client().unwrap();
    let id: u64 = reqwest::Client::new()
        .put(format!("{}/2/instances/snf-1/modify", sim.url()))
        .basic_auth("synnefo", Some("synnefo"))
        .json(&json!({"nics": [["add", {"network": NET, "ip": "pool"}]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    c.wait_for_job(id, T).await.unwrap();
    let job = get(&sim, &format!("/2/jobs/{id}")).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        log_lines(&job),
        [" - INFO: Chose IP 198.51.100.2 from network synnefo-lab"]
    );
    // Ganeti names the network as the request did (recorded:
    // ganeti-3.0-networks/job-nic-add-pool.json).
    let change = job["opresult"][0][0][1].as_str().unwrap();
    assert!(
        change.ends_with(",ip=198.51.100.2,mode=routed,link=100,network=synnefo-lab"),
        "{change}"
    );
    let i = bulk_entry(&sim, "snf-1").await;
    assert_eq!(i["nic.ips"], json!(["198.51.100.1", "198.51.100.2"]));
    assert_eq!(i["nic.networks"], json!([uuid, uuid]));
}

#[tokio::test]
async fn a_bad_network_config_does_not_start() {
    let err = Simulator::builder()
        .config(SimConfig {
            networks: vec![SimNetworkConfig::new("n", "198.51.100.0/33")],
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("subnet"), "{err}");
}

/// The recorded create jobs' log lines, with the instance name replaced.
fn recorded_log(fixture: &str, name: &str) -> Vec<String> {
    let path = format!(
        "{}/../tests/fixtures/ganeti-3.0/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let job: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let recorded = job["ops"][0]["instance_name"].as_str().unwrap().to_string();
    log_lines(&job)
        .into_iter()
        .map(|l| l.replace(&recorded, name))
        .collect()
}

/// A create's log lines are the recorded ones: diskless and started, and
/// with a 1 GiB `file` disk, not started (disks announced, synced, OS
/// create scripts run).
#[tokio::test]
async fn create_log_lines_are_the_recorded_ones() {
    let sim = sim_with(vec![], false).await;
    let diskless = create(&sim, &body("snf-901", vec![])).await;
    assert_eq!(diskless["status"], "success", "{diskless}");
    assert_eq!(
        log_lines(&diskless),
        recorded_log("job-create.json", "snf-901")
    );

    let mut b = body("snf-903", vec![]);
    b.disk_template = "file".into();
    b.disks = vec![DiskRequest {
        size: 1024,
        mode: None,
        name: None,
    }];
    b.start = false;
    let with_disk = create(&sim, &b).await;
    assert_eq!(with_disk["status"], "success", "{with_disk}");
    assert_eq!(
        log_lines(&with_disk),
        recorded_log("job-create-file-disk.json", "snf-903")
    );
}

/// Without a `pnode` the allocator's choice is logged first, as Ganeti's
/// `LUInstanceCreate` does (`via iallocator <op's or the default>`).
#[tokio::test]
async fn the_allocators_choice_is_logged() {
    let sim = sim_with(vec![], false).await;
    let mut b = body("snf-904", vec![]);
    b.pnode = None;
    let job = create(&sim, &b).await;
    assert_eq!(job["status"], "success", "{job}");
    let logs = log_lines(&job);
    let node = bulk_entry(&sim, "snf-904").await["pnode"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        logs[0],
        format!(" - INFO: Selected nodes for instance snf-904 via iallocator hail: {node}")
    );
    assert_eq!(logs[1..], recorded_log("job-create.json", "snf-904")[..]);
}
