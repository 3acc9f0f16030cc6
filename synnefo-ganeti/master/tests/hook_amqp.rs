//! The hook against the real RabbitMQ: the recorded Ganeti environment
//! becomes one confirmed `ganeti-net-status` message that a consumer of the
//! net queue decodes for VM 1 with the NIC Ganeti reported.

use std::time::Duration;

use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::ids::VmId;
use synnefo_core::messages::{MessageKind, Notification, decode};
use synnefo_core::ports::EventBus;
use synnefo_core::testing::{amqp_url, service_unavailable};
use synnefo_ganeti_master::hook::{self, HookOutcome};

fn recorded_env() -> Vec<(String, String)> {
    include_str!("../src/hook/testdata/hook-env-instance-start-post.txt")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_hook_environment_reaches_rabbitmq_as_net_status() {
    let prefix = format!("hooktest{}-", std::process::id());
    let config = AmqpConfig::new(amqp_url(), prefix.clone());
    let bus = match tokio::time::timeout(Duration::from_secs(10), AmqpBus::connect(config)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return service_unavailable("hook_amqp", "RabbitMQ", &e.to_string()),
        Err(_) => return service_unavailable("hook_amqp", "RabbitMQ", "connect timed out"),
    };
    let mut sub = bus.subscribe(MessageKind::NetStatus).await.unwrap();
    // The message names snf-1; the queue is this test's own (prefix).
    let out = hook::run(recorded_env(), &bus, "snf-", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(out, HookOutcome::Publish(_)), "{out:?}");
    let batch = tokio::time::timeout(Duration::from_secs(10), sub.recv_batch(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 1);
    match decode(&batch[0].body, "snf-").unwrap() {
        Notification::NetStatus { vm, nics, time_us } => {
            assert_eq!(vm, VmId(1));
            assert_eq!(nics.len(), 1);
            assert_eq!(nics[0].ip.as_deref(), Some("192.0.2.51"));
            assert_eq!(nics[0].mac.as_deref(), Some("aa:00:00:c6:c6:59"));
            assert!(time_us.is_some());
        }
        other => panic!("{other:?}"),
    }
    sub.ack(&[batch[0].tag]).await.unwrap();
    drop(sub);
    bus.delete_queues().await.unwrap();
    bus.close().await;
}
