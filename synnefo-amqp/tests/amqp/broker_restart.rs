//! Publisher and consumer across a broker restart. The broker is a
//! RabbitMQ node of the test's own (`PrivateRabbit`: its own node name,
//! ports and data), stopped with `stop_app` and started again with
//! `start_app`; the machine's shared RabbitMQ is never touched. Without
//! `rabbitmq-server` (scripts/private-service-deps installs it) the test
//! prints a loud SKIPPED line (a failure under `CI=true`).

use std::time::Duration;

use synnefo_core::messages::MessageKind;
use synnefo_core::ports::EventBus;
use synnefo_test_support::private::PrivateRabbit;
use synnefo_test_support::service_unavailable;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_consumer_survive_a_broker_restart() {
    let test = "publisher_and_consumer_survive_a_broker_restart";
    let mut rabbit = match tokio::task::spawn_blocking(PrivateRabbit::start)
        .await
        .expect("starting RabbitMQ")
    {
        Ok(r) => r,
        Err(e) => {
            return service_unavailable(test, "a private RabbitMQ node (rabbitmq-server)", &e);
        }
    };
    let prefix = unique_prefix();
    let mut cfg = config_at(&rabbit.url(), &prefix);
    cfg.publish_timeout = Duration::from_secs(60);
    let Some(bus) = connect(test, cfg.clone()).await else {
        return;
    };

    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    for i in 1..=5 {
        bus.publish(MessageKind::OpStatus, format!("before{i}").into_bytes())
            .await
            .unwrap();
    }
    let got = recv_n(&mut sub, 5, 10).await;
    sub.ack(&got[..3].iter().map(|d| d.tag).collect::<Vec<_>>())
        .await
        .unwrap();
    let old_tags: Vec<u64> = got[3..].iter().map(|d| d.tag).collect();
    let connections_before = bus.stats().connections;

    tokio::task::block_in_place(|| rabbit.stop_app()).expect("stop_app");
    // Published while the broker is down: retried until it is back.
    let b2 = bus.clone();
    let publisher =
        tokio::spawn(async move { b2.publish(MessageKind::OpStatus, b"during".to_vec()).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !publisher.is_finished(),
        "publish returned while the broker was down"
    );
    tokio::task::block_in_place(|| rabbit.start_app()).expect("start_app");
    tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publish finished after the restart")
        .unwrap()
        .expect("publish confirmed after the restart");

    // The same subscription goes on: the two unacked messages are
    // redelivered, then the one published during the outage.
    let after = recv_n(&mut sub, 3, 60).await;
    let mut names = bodies(&after);
    names.sort();
    assert_eq!(names, ["before4", "before5", "during"]);
    for d in &after {
        assert_eq!(d.redelivered, d.body.starts_with(b"before"), "{d:?}");
    }
    // Acks of the previous channel's deliveries are dropped, not misapplied.
    sub.ack(&old_tags).await.unwrap();
    sub.ack(&after.iter().map(|d| d.tag).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_quiet(&mut sub, 300).await;
    let raw = raw(&cfg).await;
    assert_eq!(ready(&raw, &cfg.queue_name(MessageKind::OpStatus)).await, 0);
    assert!(
        bus.stats().connections >= connections_before + 2,
        "{:?}",
        bus.stats()
    );
    drop(sub);
    cleanup(&cfg).await;
    bus.close().await;
    drop(rabbit);
}
