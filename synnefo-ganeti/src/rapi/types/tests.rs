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
