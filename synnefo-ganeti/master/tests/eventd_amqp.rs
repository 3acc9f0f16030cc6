//! eventd publishing to the real RabbitMQ: a job written Ganeti's way into
//! a queue directory reaches a consumer of the op queue, one message per
//! status change, decodable by the dispatcher.

use std::sync::Arc;
use std::time::Duration;

use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::messages::{MessageKind, OpStatusMessage};
use synnefo_core::ports::EventBus;
use synnefo_core::state::JobStatus;
use synnefo_core::testing::{amqp_url, service_unavailable};
use synnefo_ganeti_master::eventd::testing::{FakeJob, JobWriter};
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventd_publishes_each_status_change_to_rabbitmq() {
    let prefix = format!("eventdtest{}-", std::process::id());
    let bus = match tokio::time::timeout(
        Duration::from_secs(10),
        AmqpBus::connect(AmqpConfig::new(amqp_url(), prefix)),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return service_unavailable("eventd_amqp", "RabbitMQ", &e.to_string()),
        Err(_) => return service_unavailable("eventd_amqp", "RabbitMQ", "connect timed out"),
    };
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let eventd = Eventd::new(
        EventdConfig::new(&queue, dir.path().join("spool"), "snf-"),
        Arc::new(bus.clone()),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(eventd.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let w = JobWriter::new(&queue);
    let mut job = FakeJob::new(
        42,
        &[
            ("OP_INSTANCE_SHUTDOWN", "snf-9"),
            ("OP_INSTANCE_STARTUP", "snf-9"),
        ],
    );
    let mut got: Vec<OpStatusMessage> = Vec::new();
    let steps: [&[(usize, JobStatus)]; 4] = [
        &[],
        &[(0, JobStatus::Running)],
        &[(0, JobStatus::Success), (1, JobStatus::Running)],
        &[(1, JobStatus::Success)],
    ];
    let mut want = 0;
    for (i, step) in steps.iter().enumerate() {
        for (op, s) in *step {
            job.set_status(*op, *s);
        }
        w.write(&job).unwrap();
        w.write(&job).unwrap(); // a rewrite: nothing more
        want += if i == 0 { 2 } else { step.len() };
        while got.len() < want {
            let batch = tokio::time::timeout(Duration::from_secs(10), sub.recv_batch(16))
                .await
                .expect("message")
                .unwrap();
            let tags: Vec<u64> = batch.iter().map(|d| d.tag).collect();
            for d in &batch {
                synnefo_core::messages::decode(&d.body, "snf-").unwrap();
                got.push(serde_json::from_slice(&d.body).unwrap());
            }
            sub.ack(&tags).await.unwrap();
        }
    }
    let seq: Vec<(u32, &str)> = got
        .iter()
        .map(|m| (m.op_index, m.status.as_str()))
        .collect();
    assert_eq!(
        seq,
        vec![
            (0, "queued"),
            (1, "queued"),
            (0, "running"),
            (0, "success"),
            (1, "running"),
            (1, "success")
        ]
    );
    // Nothing else arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.recv_batch(16))
            .await
            .is_err()
    );
    cancel.cancel();
    let m = task.await.unwrap().unwrap();
    assert_eq!((m.published, m.spooled), (6, 0));
    drop(sub);
    bus.delete_queues().await.unwrap();
    bus.close().await;
}

/// The job files of the Synnefo corpus' lab recording, names moved to
/// `prefix` (instances, networks, NIC and disk names, the firewall tag).
fn lab_file(rel: &str, prefix: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../synnefo-core/tests/fixtures/synnefo-corpus/lab")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.replace("snf-", prefix).into_bytes()
}

/// Network, op and cluster messages of real Ganeti job files, with the
/// instance's state read from Ganeti's `config.data`, reach the queues
/// Synnefo's dispatcher reads (`<p>-events-network`, `-op`, `-cluster`)
/// on the real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_op_and_cluster_messages_reach_synnefos_queues() {
    let prefix = format!("eventdsyn{}-", std::process::id());
    let bus = match tokio::time::timeout(
        Duration::from_secs(10),
        AmqpBus::connect(AmqpConfig::new(amqp_url(), prefix.clone())),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return service_unavailable("eventd_amqp", "RabbitMQ", &e.to_string()),
        Err(_) => return service_unavailable("eventd_amqp", "RabbitMQ", "connect timed out"),
    };
    let mut subs = Vec::new();
    for kind in [
        MessageKind::NetworkStatus,
        MessageKind::OpStatus,
        MessageKind::ClusterStatus,
    ] {
        subs.push((kind, bus.subscribe(kind).await.unwrap()));
    }
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let config_data = dir.path().join("config.data");
    // Ganeti's configuration once the disk grow (job 121) was over.
    std::fs::write(&config_data, lab_file("config/job-121.data", &prefix)).unwrap();
    let mut config = EventdConfig::new(&queue, dir.path().join("spool"), &prefix);
    config.synnefo_kinds = true;
    config.ganeti_config = Some(config_data);
    config.cluster_name = Some("cluster1.lab.test".into());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Eventd::new(config, Arc::new(bus.clone())).run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Each job's versions as Ganeti renamed them into place.
    let w = JobWriter::new(&queue);
    let versions = |id: u64| -> usize {
        std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../synnefo-core/tests/fixtures/synnefo-corpus/lab/queue"),
        )
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("job-{id}.v"))
        })
        .count()
    };
    for id in [115u64, 121, 127] {
        for v in 1..=versions(id) {
            w.write_bytes(id, &lab_file(&format!("queue/job-{id}.v{v}"), &prefix))
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut got: Vec<(MessageKind, serde_json::Value)> = Vec::new();
    for (kind, sub) in &mut subs {
        let want_job = match kind {
            MessageKind::NetworkStatus => 115,
            MessageKind::OpStatus => 121,
            _ => 127,
        };
        // queued, (waiting,) running, success: until this job's success.
        loop {
            let batch = tokio::time::timeout(Duration::from_secs(10), sub.recv_batch(16))
                .await
                .unwrap_or_else(|_| panic!("no {kind:?} message; got {got:#?}"))
                .unwrap();
            let tags: Vec<u64> = batch.iter().map(|d| d.tag).collect();
            let mut done = false;
            for d in &batch {
                let m: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
                // `ganeti.event.cluster` is every deployment's: others' too.
                if m["jobId"] != want_job {
                    continue;
                }
                // What the dispatcher reads of it.
                synnefo_core::messages::decode_any(&d.body, &prefix).unwrap();
                done |= m["status"] == "success";
                got.push((*kind, m));
            }
            sub.ack(&tags).await.unwrap();
            if done {
                break;
            }
        }
    }
    let net: Vec<&serde_json::Value> = got
        .iter()
        .filter(|(k, _)| *k == MessageKind::NetworkStatus)
        .map(|(_, m)| m)
        .collect();
    let last = net.last().unwrap();
    assert_eq!(last["network"], format!("{prefix}net-77"));
    assert_eq!(last["operation"], "OP_NETWORK_ADD");
    assert_eq!(last["job_fields"]["subnet"], "10.99.0.0/24");
    assert_eq!(
        last["job_fields"]["add_reserved_ips"],
        serde_json::json!(["10.99.0.5"])
    );
    let grow = got
        .iter()
        .find(|(k, m)| *k == MessageKind::OpStatus && m["status"] == "success")
        .map(|(_, m)| m)
        .unwrap();
    assert_eq!(grow["operation"], "OP_INSTANCE_GROW_DISK");
    let nic = &grow["instance_nics"][0];
    assert_eq!(nic["name"], format!("{prefix}nic-5"));
    assert_eq!(nic["network"], format!("{prefix}net-77"));
    assert_eq!(nic["firewall"], "protected");
    assert_eq!(grow["instance_disks"][0]["size"], 2048);
    assert!(
        got.iter()
            .any(|(k, m)| *k == MessageKind::ClusterStatus && m["status"] == "success"),
        "{got:#?}"
    );
    cancel.cancel();
    let m = task.await.unwrap().unwrap();
    assert_eq!(m.spooled, 0, "nothing unroutable");
    drop(subs);
    bus.delete_queues().await.unwrap();
    bus.close().await;
}
