//! The simulator replays `scripts/ganeti-lab/record-network-fixtures`
//! and answers as the real Ganeti 3.0.2 of the lab did
//! (`synnefo-ganeti/tests/fixtures/ganeti-3.0-networks/`): for every job
//! the status, the result (errors word for word) and the log lines; the
//! network listings field by field. Only what differs by nature is masked:
//! UUIDs, generated MAC suffixes, timestamps, the node's name.

use std::time::Duration;

use serde_json::{Value, json};
use synnefo_ganeti_sim::{SimConfig, SimHandle, SimLatency, Simulator};

const T: Duration = Duration::from_secs(10);
const NET: &str = "snf-net-rec";
const INST: &str = "snf-951";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/ganeti-3.0-networks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

async fn call(sim: &SimHandle, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = reqwest::Client::new();
    let url = format!("{}{path}", sim.url());
    let req = match method {
        "GET" => c.get(url),
        "POST" => c.post(url),
        "PUT" => c.put(url),
        _ => c.delete(url),
    }
    .basic_auth("synnefo", Some("synnefo"));
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Submits, waits, returns `/2/jobs/ID`.
async fn op(sim: &SimHandle, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, id) = call(sim, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {id}");
    let id = id.as_u64().unwrap();
    sim.client().unwrap().wait_for_job(id, T).await.unwrap();
    call(sim, "GET", &format!("/2/jobs/{id}"), None).await.1
}

/// Masks what differs by nature: UUIDs, the last three octets of MACs,
/// the node's name.
fn mask(v: &Value, uuids: &[String]) -> Value {
    match v {
        Value::String(s) => {
            let mut s = s
                .replace("node1.lab.test", "NODE")
                .replace("node1.sim", "NODE");
            for u in uuids {
                s = s.replace(u.as_str(), "UUID");
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("mac=") {
                let (head, tail) = rest.split_at(i + 4);
                out.push_str(head);
                if tail.len() >= 17 {
                    out.push_str(&tail[..9]);
                    out.push_str("xx:xx:xx");
                    rest = &tail[17..];
                } else {
                    rest = tail;
                }
            }
            out.push_str(rest);
            json!(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| mask(x, uuids)).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), mask(x, uuids))).collect())
        }
        other => other.clone(),
    }
}

fn logs(job: &Value) -> Vec<Value> {
    job["oplog"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[3].clone())
        .collect()
}

/// Compares a job with its recording: opcode, status, result, log lines.
fn same_job(name: &str, sim: &Value, uuids: &[String]) {
    let lab = fixture(name);
    let (sim, lab) = (mask(sim, uuids), mask(&lab, uuids));
    assert_eq!(sim["ops"][0]["OP_ID"], lab["ops"][0]["OP_ID"], "{name}");
    assert_eq!(sim["status"], lab["status"], "{name}: {sim}");
    assert_eq!(sim["opresult"], lab["opresult"], "{name}");
    assert_eq!(logs(&sim), logs(&lab), "{name}");
    assert_eq!(sim["summary"], lab["summary"], "{name}");
}

/// A network listing entry without its times.
fn net_fields(v: &Value, uuids: &[String]) -> Value {
    let mut v = mask(v, uuids);
    for k in ["ctime", "mtime"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[tokio::test]
async fn the_recorded_network_session_replays_the_same() {
    let sim = Simulator::builder()
        .config(SimConfig {
            hypervisor: "fake".into(),
            latency: SimLatency::zero(),
            ..SimConfig::default()
        })
        .start()
        .await
        .unwrap();
    let lab_uuid = fixture("network.json")["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let lab_inst_uuid = fixture("instance-on-network.json")["uuid"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        call(&sim, "GET", "/2/networks?bulk=1", None).await.1,
        fixture("networks-bulk-empty.json")
    );
    let (status, body) = call(&sim, "GET", &format!("/2/networks/{NET}"), None).await;
    assert_eq!((status, body), (404, fixture("network-unknown.json")));
    let groups = call(&sim, "GET", "/2/groups?bulk=1", None).await.1;
    let lab_groups = fixture("groups-bulk.json");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v[0].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&groups), keys(&lab_groups));
    assert_eq!(groups[0]["name"], "default");

    let add = json!({"network_name": NET, "network": "10.15.0.0/24", "gateway": "10.15.0.1",
        "mac_prefix": "aa:15:00", "add_reserved_ips": ["10.15.0.5"], "tags": ["snf-test"],
        "conflicts_check": true});
    let j = op(&sim, "POST", "/2/networks", Some(add.clone())).await;
    let sim_uuid = sim.network_uuid(NET).unwrap();
    let mut uuids = vec![lab_uuid, sim_uuid, lab_inst_uuid];
    same_job("job-network-add.json", &j, &uuids);
    let j = op(&sim, "POST", "/2/networks", Some(add)).await;
    same_job("job-network-add-duplicate.json", &j, &uuids);
    let listed = call(&sim, "GET", "/2/networks?bulk=1", None).await.1;
    assert_eq!(
        net_fields(&listed[0], &uuids),
        net_fields(&fixture("networks-bulk-disconnected.json")[0], &uuids)
    );
    assert_eq!(
        call(&sim, "GET", "/2/networks", None).await.1,
        fixture("networks.json")
    );

    let connect = json!({"group_name": "default", "network_mode": "routed", "network_link": "100",
        "network_vlan": "", "conflicts_check": true});
    let path = format!("/2/networks/{NET}/connect");
    same_job(
        "job-network-connect.json",
        &op(&sim, "PUT", &path, Some(connect.clone())).await,
        &uuids,
    );
    same_job(
        "job-network-connect-again.json",
        &op(&sim, "PUT", &path, Some(connect.clone())).await,
        &uuids,
    );
    let mut other = connect.clone();
    other["group_name"] = json!("nosuchgroup");
    same_job(
        "job-network-connect-unknown-group.json",
        &op(&sim, "PUT", &path, Some(other)).await,
        &uuids,
    );
    same_job(
        "job-network-connect-unknown-network.json",
        &op(
            &sim,
            "PUT",
            "/2/networks/snf-net-none/connect",
            Some(connect),
        )
        .await,
        &uuids,
    );

    let create = json!({"__version__": 1, "mode": "create", "instance_name": INST, "disk_template": "diskless",
        "disks": [], "nics": [{"network": NET, "ip": "10.15.0.10", "name": "snf-nic-1", "mac": "aa:15:00:00:00:10"}],
        "os_type": "noop+default", "osparams": {}, "pnode": "node1.sim", "beparams": {"memory": 128, "vcpus": 1},
        "hypervisor": "fake", "name_check": false, "ip_check": false, "conflicts_check": false, "start": true});
    same_job(
        "job-create-on-network.json",
        &op(&sim, "POST", "/2/instances", Some(create)).await,
        &uuids,
    );
    uuids.push(sim.instance(INST).unwrap().uuid);
    let modify = format!("/2/instances/{INST}/modify");
    let add_nic = |ip: &str, name: &str, mac: Option<&str>| {
        let mut p = json!({"network": NET, "ip": ip, "name": name});
        if let Some(m) = mac {
            p["mac"] = json!(m);
        }
        json!({"nics": [["add", -1, p]], "hotplug_if_possible": true})
    };
    same_job(
        "job-nic-add.json",
        &op(
            &sim,
            "PUT",
            &modify,
            Some(add_nic("10.15.0.11", "snf-nic-2", None)),
        )
        .await,
        &uuids,
    );
    same_job(
        "job-nic-add-ip-taken.json",
        &op(
            &sim,
            "PUT",
            &modify,
            Some(add_nic("10.15.0.10", "snf-nic-3", None)),
        )
        .await,
        &uuids,
    );
    same_job(
        "job-nic-add-pool.json",
        &op(
            &sim,
            "PUT",
            &modify,
            Some(add_nic("pool", "snf-nic-4", Some("aa:15:00:00:00:44"))),
        )
        .await,
        &uuids,
    );
    let inst = call(&sim, "GET", &format!("/2/instances/{INST}"), None)
        .await
        .1;
    let lab_inst = fixture("instance-nics-added.json");
    for f in [
        "nic.names",
        "nic.ips",
        "nic.modes",
        "nic.links",
        "nic.networks",
        "nic.networks.names",
    ] {
        assert_eq!(mask(&inst[f], &uuids), mask(&lab_inst[f], &uuids), "{f}");
    }
    let listed = call(&sim, "GET", "/2/networks?bulk=1", None).await.1;
    assert_eq!(
        net_fields(&listed[0], &uuids),
        net_fields(&fixture("networks-bulk-in-use.json")[0], &uuids)
    );
    let remove_nic = |id: &str| json!({"nics": [["remove", id, {}]], "hotplug_if_possible": true});
    same_job(
        "job-nic-remove.json",
        &op(&sim, "PUT", &modify, Some(remove_nic("snf-nic-2"))).await,
        &uuids,
    );
    same_job(
        "job-nic-remove-unknown.json",
        &op(&sim, "PUT", &modify, Some(remove_nic("snf-nic-9"))).await,
        &uuids,
    );
    let inst = call(&sim, "GET", &format!("/2/instances/{INST}"), None)
        .await
        .1;
    assert_eq!(
        inst["nic.names"],
        fixture("instance-nic-removed.json")["nic.names"]
    );

    let net_path = format!("/2/networks/{NET}");
    let disconnect = format!("/2/networks/{NET}/disconnect");
    let group = json!({"group_name": "default"});
    same_job(
        "job-network-remove-connected.json",
        &op(&sim, "DELETE", &net_path, None).await,
        &uuids,
    );
    same_job(
        "job-network-disconnect-in-use.json",
        &op(&sim, "PUT", &disconnect, Some(group.clone())).await,
        &uuids,
    );
    same_job(
        "job-instance-remove.json",
        &op(&sim, "DELETE", &format!("/2/instances/{INST}"), None).await,
        &uuids,
    );
    same_job(
        "job-network-disconnect.json",
        &op(&sim, "PUT", &disconnect, Some(group.clone())).await,
        &uuids,
    );
    same_job(
        "job-network-disconnect-again.json",
        &op(&sim, "PUT", &disconnect, Some(group)).await,
        &uuids,
    );
    same_job(
        "job-network-remove.json",
        &op(&sim, "DELETE", &net_path, None).await,
        &uuids,
    );
    same_job(
        "job-network-remove-unknown.json",
        &op(&sim, "DELETE", &net_path, None).await,
        &uuids,
    );
    assert_eq!(
        call(&sim, "GET", "/2/networks?bulk=1", None).await.1,
        fixture("networks-bulk-after.json")
    );
}
