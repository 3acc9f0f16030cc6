//! Decoding of recorded and edge-case answers.

use super::*;
use crate::error::RapiError;
use serde_json::json;
use synnefo_core::state::JobStatus;

#[test]
fn job_ids_are_numbers_or_strings() {
    let a: WireJobId = serde_json::from_value(json!(42)).unwrap();
    let b: WireJobId = serde_json::from_value(json!("42")).unwrap();
    assert_eq!(a, b);
    assert!(serde_json::from_value::<WireJobId>(json!("x")).is_err());
    assert!(serde_json::from_value::<WireJobId>(json!(-1)).is_err());
    assert_eq!(serde_json::to_value(a).unwrap(), json!(42));
}

#[test]
fn log_entries_decode() {
    let e: LogEntry =
        serde_json::from_value(json!([3, [1795555493, 45112], "message", "hi"])).unwrap();
    assert_eq!(e.serial, 3);
    assert_eq!(e.time.as_micros(), 1_795_555_493_045_112);
    assert_eq!(e.text(), "hi");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!([3, [1795555493, 45112], "message", "hi"])
    );
    assert!(serde_json::from_value::<LogEntry>(json!([1])).is_err());
}

#[test]
fn missing_job_is_all_null() {
    let j: RapiJob = serde_json::from_value(json!({"id": 999999, "ops": null, "status": null, "summary": null,
        "opstatus": null, "received_ts": null, "start_ts": null, "end_ts": null, "oplog": null, "opresult": null}))
    .unwrap();
    assert!(j.is_missing());
}

#[test]
fn failed_job_message() {
    let j: RapiJob = serde_json::from_value(json!({"id": 5, "status": "error",
        "ops": [{"OP_ID": "OP_INSTANCE_STARTUP"}], "opstatus": ["error"],
        "opresult": [["OpPrereqError", ["Instance 'x' not known", "unknown_entity"]]],
        "oplog": [[[1, [1, 2], "message", "starting"]]]}))
    .unwrap();
    let (result, msg) = j.failure().unwrap();
    assert_eq!(result[0], "OpPrereqError");
    assert_eq!(
        msg,
        "OpPrereqError: Instance 'x' not known (unknown_entity)"
    );
    let info = j.to_job_info().unwrap();
    assert_eq!(info.status, JobStatus::Error);
    assert_eq!(info.ops[0].opcode, "OP_INSTANCE_STARTUP");
    assert_eq!(info.ops[0].log, vec!["starting".to_string()]);
}

#[test]
fn unknown_status_is_an_error() {
    let j: RapiJob = serde_json::from_value(json!({"id": 5, "status": "weird"})).unwrap();
    assert!(matches!(j.to_job_info(), Err(RapiError::Decode(_))));
}

#[test]
fn cancel_results() {
    let c: CancelResult = serde_json::from_value(json!([true, "Job 3 will be canceled"])).unwrap();
    assert!(c.canceled);
    let c: CancelResult =
        serde_json::from_value(json!([false, "Job 3 is no longer waiting in the queue"])).unwrap();
    assert!(!c.canceled);
}

#[test]
fn admin_state_old_and_new() {
    let i: Instance = serde_json::from_value(json!({"name": "a", "admin_state": true})).unwrap();
    assert_eq!(i.admin_state.as_deref(), Some("up"));
    let i: Instance =
        serde_json::from_value(json!({"name": "a", "admin_state": "down", "nic.ips": null}))
            .unwrap();
    assert_eq!(i.admin_state.as_deref(), Some("down"));
    assert!(i.nic_ips.is_empty());
}

const NET_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ganeti-3.0-networks"
);

fn net_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{NET_FIXTURES}/{name}")).unwrap()
}

#[test]
fn recorded_networks_decode() {
    let empty: Vec<Network> =
        crate::rapi::decode(&net_fixture("networks-bulk-empty.json")).unwrap();
    assert!(empty.is_empty());
    let nets: Vec<Network> =
        crate::rapi::decode(&net_fixture("networks-bulk-in-use.json")).unwrap();
    let n = &nets[0];
    assert_eq!(n.name, "snf-net-rec");
    assert_eq!(n.network.as_deref(), Some("10.15.0.0/24"));
    assert_eq!(
        n.group_list,
        vec![NetworkGroup {
            group: "default".into(),
            mode: "routed".into(),
            link: "100".into(),
            vlan: String::new(),
        }]
    );
    let info = n.to_info();
    assert_eq!(
        info.groups,
        vec![("default".into(), "routed".into(), "100".into())]
    );
    assert_eq!(info.instances, vec!["snf-951".to_string()]);
    assert_eq!(info.free_count, Some(249));
    assert_eq!(info.tags, vec!["snf-test".to_string()]);
    let one: Network = crate::rapi::decode(&net_fixture("network.json")).unwrap();
    assert_eq!(one.uuid, n.uuid);
    let groups: Vec<NodeGroup> = crate::rapi::decode(&net_fixture("groups-bulk.json")).unwrap();
    assert_eq!(groups[0].name, "default");
    assert_eq!(groups[0].node_list, vec!["node1.lab.test".to_string()]);
    assert!(groups[0].extra.contains_key("ipolicy"));
    // Three-item connections (older Ganeti) decode too; two items do not.
    let g: NetworkGroup = serde_json::from_value(json!(["g", "bridged", "br0"])).unwrap();
    assert_eq!(g.vlan, "");
    assert!(serde_json::from_value::<NetworkGroup>(json!(["g", "bridged"])).is_err());
}

#[test]
fn recorded_nic_names_decode() {
    let i: Instance = crate::rapi::decode(&net_fixture("instance-nics-added.json")).unwrap();
    assert_eq!(
        i.nic_names,
        vec![
            Some("snf-nic-1".to_string()),
            Some("snf-nic-2".to_string()),
            Some("snf-nic-4".to_string())
        ]
    );
    let nics = i.to_info().nics;
    assert_eq!(nics[1].ip.as_deref(), Some("10.15.0.11"));
    assert_eq!(nics[1].network.as_deref(), Some("snf-net-rec"));
}
