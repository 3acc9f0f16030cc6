//! The Synnefo conformance corpus (`tests/fixtures/synnefo-corpus/`, see
//! its README): what Synnefo 0.16-0.20's eventd publishes for each job file
//! recorded on the real Ganeti lab, and what Synnefo 0.20's dispatcher
//! does with it.
//!
//! Today's assertions: every op-status message parses with our wire type
//! and decodes right (VM, job, opcode, status, time); every message of
//! every kind is read by the dispatcher's decoder (applied or recorded,
//! never an error, so never dead-lettered); our wire types keep every
//! field of every op, network and cluster message; a ledger pins which
//! kinds are only recorded. Closing a gap makes a ledger test fail until
//! the ledger is updated: the gap list can only shrink knowingly.
//!
//! The other way round (our eventd publishing these same messages for the
//! same job files) is `synnefo-ganeti/master/tests/synnefo_corpus.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use synnefo_core::EventError;
use synnefo_core::messages::{
    BuildReport, ClusterStatusMessage, Decoded, NetworkStatusMessage, Notification,
    OpStatusMessage, ProgressMessage, Record, decode_any,
};

struct Case {
    name: String,
    routing_key: Option<String>,
    synthetic: bool,
    message: Value,
    expected: Value,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synnefo-corpus/cases");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".message.json").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let read = |suffix: &str| -> Value {
                let p = dir.join(format!("{name}.{suffix}.json"));
                let text =
                    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            let m = read("message");
            Case {
                routing_key: m["routing_key"].as_str().map(str::to_string),
                synthetic: m["synthetic"].as_bool().expect("synthetic flag"),
                message: m["message"].clone(),
                expected: read("expected"),
                name,
            }
        })
        .collect()
}

fn op_cases(all: &[Case]) -> impl Iterator<Item = &Case> {
    all.iter()
        .filter(|c| c.message["type"] == "ganeti-op-status")
}

#[test]
fn the_corpus_is_complete_and_consistent() {
    let all = corpus();
    assert!(all.len() >= 30, "{} cases", all.len());
    let recorded = all.iter().filter(|c| !c.synthetic).count();
    assert!(recorded >= 25, "{recorded} recorded cases");
    let statuses: BTreeSet<&str> = op_cases(&all)
        .filter_map(|c| c.message["status"].as_str())
        .collect();
    for s in [
        "queued", "waiting", "running", "success", "error", "canceled",
    ] {
        assert!(statuses.contains(s), "no case with status {s}");
    }
    // Recorded on the real Ganeti (not made up): every network opcode
    // Cyclades runs, a failed one, a cluster modify, the heartbeat, and
    // the instance ops of issue 17 (tags publish nothing).
    let recorded_ops: BTreeSet<String> = all
        .iter()
        .filter(|c| !c.synthetic && !c.message.is_null())
        .map(|c| {
            let op = c.message["operation"].as_str().unwrap_or("heartbeat");
            format!("{op} {}", c.message["status"].as_str().unwrap_or("waiting"))
        })
        .collect();
    for want in [
        "OP_NETWORK_ADD success",
        "OP_NETWORK_ADD error",
        "OP_NETWORK_CONNECT success",
        "OP_NETWORK_SET_PARAMS success",
        "OP_NETWORK_DISCONNECT success",
        "OP_NETWORK_REMOVE success",
        "OP_CLUSTER_SET_PARAMS success",
        "OP_INSTANCE_GROW_DISK success",
        "OP_INSTANCE_SET_PARAMS success",
        "heartbeat waiting",
    ] {
        assert!(recorded_ops.contains(want), "no recorded case for {want}");
    }
    assert!(
        all.iter()
            .any(|c| c.name.contains("tags_set") && c.message.is_null() && !c.synthetic),
        "a recorded tag set that publishes nothing"
    );
    for c in &all {
        assert!(
            c.expected["outcome"].is_string(),
            "{}: expected.outcome",
            c.name
        );
        if c.message.is_null() {
            assert!(c.routing_key.is_none(), "{}", c.name);
            continue;
        }
        // Synnefo's dispatcher acks every message of the corpus: nothing
        // in it is a dead letter for Synnefo, so none may be for us.
        if c.routing_key.as_deref() != Some("eventd.heartbeat") {
            assert_eq!(c.expected["ack"], "ack", "{}", c.name);
        }
        let key = c.routing_key.as_deref().unwrap();
        let t = c.message["type"].as_str().unwrap();
        let want = match t {
            "ganeti-op-status" => "ganeti.snf.event.op",
            "ganeti-network-status" => "ganeti.snf.event.network",
            "ganeti-cluster-status" => "ganeti.event.cluster",
            "eventd-heartbeat" => "eventd.heartbeat",
            t if t.starts_with("image-") => "ganeti.snf.event.progress",
            other => panic!("{}: unexpected type {other}", c.name),
        };
        assert_eq!(key, want, "{}", c.name);
    }
}

#[test]
fn every_op_status_message_parses_and_decodes_right() {
    for c in op_cases(&corpus()) {
        let m = &c.message;
        let parsed: OpStatusMessage = serde_json::from_value(m.clone())
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", c.name));
        assert_eq!(parsed.job_id, m["jobId"].as_u64().unwrap(), "{}", c.name);
        let body = serde_json::to_vec(m).unwrap();
        match decode_any(&body, "snf-") {
            Ok(Decoded::Apply(Notification::OpStatus {
                vm,
                event,
                nics,
                beparams,
            })) => {
                assert_eq!(vm.0, c.expected["vm_id"].as_i64().unwrap(), "{}", c.name);
                // The new flavor Synnefo's dispatcher looks up: same vcpus
                // and RAM as the parameters we read (absent: no resize).
                let want = c.expected.get("flavor_from_beparams").and_then(|f| {
                    f.as_object().map(|f| {
                        (
                            f.get("cpu").and_then(Value::as_i64),
                            f.get("ram").and_then(Value::as_i64),
                        )
                    })
                });
                let got = beparams.map(|b| (b.vcpus.map(i64::from), b.ram_mib.map(i64::from)));
                assert_eq!(got, want, "{}: beparams", c.name);
                assert_eq!(event.job_id.0, parsed.job_id, "{}", c.name);
                assert_eq!(event.opcode.as_str(), m["operation"], "{}", c.name);
                assert_eq!(
                    event.status.to_string(),
                    m["status"].as_str().unwrap(),
                    "{}",
                    c.name
                );
                let t = &m["event_time"];
                assert_eq!(
                    event.time_us,
                    t[0].as_i64().unwrap() * 1_000_000 + t[1].as_i64().unwrap(),
                    "{}",
                    c.name
                );
                assert_eq!(
                    nics.map(|n| n.len()),
                    m["instance_nics"].as_array().map(|a| a.len()),
                    "{}",
                    c.name
                );
            }
            // Not `<prefix><digits>`: Synnefo logs and acks; so do we.
            Err(EventError::ForeignInstance(_)) => {
                assert!(c.expected["vm_id"].is_null(), "{}", c.name);
                assert_eq!(c.expected["ack"], "ack", "{}", c.name);
            }
            other => panic!("{}: {other:?}", c.name),
        }
    }
}

/// Every message of the corpus is read by our dispatcher's decoder: applied
/// (a server changes) or recorded (understood, acknowledged, nothing to
/// change here); none is an error, so none would be dead-lettered or logged
/// as unreadable, as none is by Synnefo's dispatcher.
#[test]
fn every_message_synnefo_publishes_is_read() {
    let mut recorded = BTreeMap::new();
    let mut applied_progress = BTreeSet::new();
    for c in corpus() {
        if c.message.is_null() {
            continue;
        }
        let body = serde_json::to_vec(&c.message).unwrap();
        match decode_any(&body, "snf-") {
            Ok(Decoded::Apply(_)) => {}
            Ok(Decoded::Progress(p)) => {
                // What update_build_progress does with it.
                assert_eq!(Some(p.vm.0), c.expected["vm_id"].as_i64(), "{}", c.name);
                let t = &c.message["event_time"];
                assert_eq!(
                    p.time_us,
                    t[0].as_i64().unwrap() * 1_000_000 + t[1].as_i64().unwrap(),
                    "{}",
                    c.name
                );
                match &p.report {
                    BuildReport::Copy { percent } => assert_eq!(
                        Some(i64::from(*percent)),
                        c.expected["build_percentage"].as_i64(),
                        "{}",
                        c.name
                    ),
                    BuildReport::Diagnostic(d) => {
                        let want = &c.expected["diagnostic"];
                        assert_eq!(d.level.as_str(), want["level"], "{}", c.name);
                        assert_eq!(d.source, want["source"].as_str().unwrap(), "{}", c.name);
                        assert_eq!(d.message, want["message"].as_str().unwrap(), "{}", c.name);
                        assert_eq!(d.details.as_deref(), want["details"].as_str(), "{}", c.name);
                    }
                }
                applied_progress.insert(c.message["type"].as_str().unwrap().to_string());
            }
            Ok(Decoded::Record(r)) => {
                if let Some(vm) = c.expected["vm_id"].as_i64() {
                    match &r {
                        Record::Progress { vm: got, .. } | Record::Op { vm: got, .. } => {
                            assert_eq!(got.0, vm, "{}", c.name)
                        }
                        _ => {}
                    }
                }
                recorded.insert(c.message["type"].as_str().unwrap().to_string(), r.label());
            }
            Err(EventError::ForeignInstance(_)) => {}
            Err(e) => panic!("{}: {e}", c.name),
        }
    }
    // What the corpus holds that changes no server here yet: networks
    // (issue 15), cluster parameters. Build progress and diagnostics
    // (issue 16) are applied.
    assert_eq!(
        recorded,
        BTreeMap::from([
            ("eventd-heartbeat".to_string(), "cluster"),
            ("ganeti-cluster-status".to_string(), "cluster"),
            ("ganeti-network-status".to_string(), "network"),
        ])
    );
    assert_eq!(
        applied_progress,
        BTreeSet::from(
            [
                "image-copy-progress",
                "image-error",
                "image-helper",
                "image-info"
            ]
            .map(String::from)
        )
    );
}

/// Paths (`key`, `instance_nics[].key`, ...) present (and not null) in
/// `before` and missing in `after`, at any depth.
fn dropped(before: &Value, after: &Value, path: &str, out: &mut BTreeSet<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    None if !v.is_null() => {
                        out.insert(p);
                    }
                    None => {}
                    Some(av) => dropped(v, av, &p, out),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (bv, av) in b.iter().zip(a) {
                dropped(bv, av, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Our wire types keep every field Synnefo's eventd sends: a message read
/// and written again by our types is the same message (`op_index` and
/// `null`s aside), for the op, network and cluster messages.
#[test]
fn our_wire_types_keep_every_field() {
    let mut ledger: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for c in corpus() {
        let t = c.message["type"].as_str().unwrap_or("").to_string();
        let back = match t.as_str() {
            "ganeti-op-status" => serde_json::to_value(
                serde_json::from_value::<OpStatusMessage>(c.message.clone()).unwrap(),
            ),
            "ganeti-network-status" => serde_json::to_value(
                serde_json::from_value::<NetworkStatusMessage>(c.message.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name)),
            ),
            "ganeti-cluster-status" => serde_json::to_value(
                serde_json::from_value::<ClusterStatusMessage>(c.message.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name)),
            ),
            t if t.starts_with("image-") => serde_json::to_value(
                serde_json::from_value::<ProgressMessage>(c.message.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name)),
            ),
            _ => continue,
        }
        .unwrap();
        *kinds.entry(t).or_default() += 1;
        let mut out = BTreeSet::new();
        dropped(&c.message, &back, "", &mut out);
        for f in out {
            ledger.entry(f).or_default().insert(c.name.clone());
        }
    }
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    // Ledger (issue 17): empty since NIC name/uuid/firewall, disks and
    // hvparams are typed (`InstanceNic`, `InstanceDisk`, `InstanceHvParams`).
    assert!(ledger.is_empty(), "{ledger:#?}");
    let nics_with_names = op_cases(&corpus())
        .filter(|c| {
            c.message["instance_nics"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|n| n["name"].is_string() && n["uuid"].is_string())
            })
        })
        .count();
    assert!(
        nics_with_names >= 4,
        "named NICs in {nics_with_names} cases"
    );
}
