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
