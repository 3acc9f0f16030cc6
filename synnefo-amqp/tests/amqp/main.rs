//! The AMQP bus against the real RabbitMQ: publish/consume/ack, confirms,
//! dead letters with their reason, redelivery of unacked messages, quorum
//! queues; across a restart of a private broker (`broker_restart`); and
//! next to Synnefo's own queue declarations (`synnefo_dropin`).

mod broker_restart;
mod common;
mod synnefo_dropin;

use std::time::Duration;

use common::*;
use lapin::types::AMQPValue;
use synnefo_amqp::{AmqpBus, AmqpError, ExistingQueues, REASON_HEADER};
use synnefo_core::BusError;
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::EventBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_ack() {
    let prefix = unique_prefix();
    let cfg = config(&prefix);
    let Some(bus) = connect("publish_consume_ack", cfg.clone()).await else {
        return;
    };
    // Published before any consumer exists: the publisher declared the
    // queues, so nothing is dropped as unroutable.
    for i in 0..10 {
        bus.publish(MessageKind::OpStatus, format!("op{i}").into_bytes())
            .await
            .unwrap();
    }
    bus.publish(MessageKind::NetStatus, b"net0".to_vec())
        .await
        .unwrap();
    let raw = raw(&cfg).await;
    // Confirmed means stored: the count is right the moment publish returns.
    assert_eq!(
        ready(&raw, &cfg.queue_name(MessageKind::OpStatus)).await,
        10
    );
    assert_eq!(
        ready(&raw, &cfg.queue_name(MessageKind::NetStatus)).await,
        1
    );

    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let got = recv_n(&mut sub, 10, 10).await;
    assert_eq!(
        bodies(&got),
        (0..10).map(|i| format!("op{i}")).collect::<Vec<_>>(),
        "in order"
    );
    assert!(
        got.iter()
            .all(|d| d.kind == MessageKind::OpStatus && !d.redelivered)
    );
    let tags: Vec<u64> = got.iter().map(|d| d.tag).collect();
    sub.ack(&tags).await.unwrap();
    assert!(
        matches!(sub.ack(&tags[..1]).await, Err(BusError::Other(_))),
        "a double ack is refused"
    );
    drop(sub);

    // Acked means gone: a new consumer gets nothing.
    let mut again = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    assert_quiet(&mut again, 300).await;

    let mut net = bus.subscribe(MessageKind::NetStatus).await.unwrap();
    let n = recv_n(&mut net, 1, 10).await;
    assert_eq!(bodies(&n), ["net0"]);
    net.ack(&[n[0].tag]).await.unwrap();
    assert!(bus.stats().published >= 11);
    drop((again, net));
    cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_persistent_json() {
    let prefix = unique_prefix();
    let cfg = config(&prefix);
    let Some(bus) = connect("messages_are_persistent_json", cfg.clone()).await else {
        return;
    };
    bus.publish(MessageKind::OpStatus, b"{}".to_vec())
        .await
        .unwrap();
    let raw = raw(&cfg).await;
    let m = get(&raw, &cfg.queue_name(MessageKind::OpStatus))
        .await
        .expect("a message");
    assert_eq!(*m.delivery.properties.delivery_mode(), Some(2));
    assert_eq!(
        m.delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        m.delivery.routing_key.as_str(),
        format!("ganeti.{}.event.op", prefix.trim_end_matches('-'))
    );
    assert_eq!(m.delivery.exchange.as_str(), "ganeti");
    cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_the_reason() {
    let prefix = unique_prefix();
    let cfg = config(&prefix);
    let Some(bus) = connect("dead_letters_keep_the_reason", cfg.clone()).await else {
        return;
    };
    bus.publish(MessageKind::OpStatus, b"garbage{".to_vec())
        .await
        .unwrap();
    bus.publish(MessageKind::OpStatus, b"fine".to_vec())
        .await
        .unwrap();
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let got = recv_n(&mut sub, 2, 10).await;
    sub.dead_letter(
        got[0].tag,
        "undecodable ganeti-op-status message: malformed message: EOF",
    )
    .await
    .unwrap();
    sub.ack(&[got[1].tag]).await.unwrap();

    let raw = raw(&cfg).await;
    assert_eq!(ready(&raw, &cfg.queue_name(MessageKind::OpStatus)).await, 0);
    let dead = get(&raw, &cfg.dead_letter_queue())
        .await
        .expect("the dead letter");
    assert_eq!(dead.delivery.data, b"garbage{");
    let headers = dead.delivery.properties.headers().clone().expect("headers");
    let reason = headers.inner().get(REASON_HEADER).expect("reason header");
    match reason {
        AMQPValue::LongString(s) => {
            assert_eq!(
                s.to_string(),
                "undecodable ganeti-op-status message: malformed message: EOF"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(headers.inner().contains_key("x-synnefo-queue"));
    assert_eq!(*dead.delivery.properties.delivery_mode(), Some(2));
    assert!(
        get(&raw, &cfg.dead_letter_queue()).await.is_none(),
        "exactly one dead letter"
    );
    assert_eq!(bus.stats().dead_lettered, 1);
    drop(sub);
    cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_back_after_the_consumer_drops() {
    let prefix = unique_prefix();
    let cfg = config(&prefix);
    let Some(bus) = connect("unacked_messages_come_back", cfg.clone()).await else {
        return;
    };
    for i in 1..=10 {
        bus.publish(MessageKind::OpStatus, format!("m{i}").into_bytes())
            .await
            .unwrap();
    }
    let mut a = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let got = recv_n(&mut a, 10, 10).await;
    // A contiguous run (one multiple ack) plus a straggler (single ack);
    // a multiple ack must not swallow m6.
    let tags: Vec<u64> = [0, 1, 2, 3, 4, 6].iter().map(|&i| got[i].tag).collect();
    a.ack(&tags).await.unwrap();
    a.requeue(got[7].tag).await.unwrap();
    drop(a);

    let mut b = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let back = recv_n(&mut b, 4, 10).await;
    let mut names = bodies(&back);
    names.sort();
    assert_eq!(names, ["m10", "m6", "m8", "m9"]);
    assert!(back.iter().all(|d| d.redelivered));
    b.ack(&back.iter().map(|d| d.tag).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_quiet(&mut b, 300).await;
    drop(b);
    cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_split_the_queue() {
    let prefix = unique_prefix();
    let mut cfg = config(&prefix);
    cfg.prefetch = 5;
    let Some(bus) = connect("competing_consumers_split_the_queue", cfg.clone()).await else {
        return;
    };
    let mut a = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let mut b = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    for i in 0..10 {
        bus.publish(MessageKind::OpStatus, format!("{i}").into_bytes())
            .await
            .unwrap();
    }
    // Prefetch 5 each: neither can hold all ten.
    let ga = recv_n(&mut a, 5, 10).await;
    let gb = recv_n(&mut b, 5, 10).await;
    let mut all: Vec<u32> = bodies(&ga)
        .iter()
        .chain(bodies(&gb).iter())
        .map(|s| s.parse().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    a.ack(&ga.iter().map(|d| d.tag).collect::<Vec<_>>())
        .await
        .unwrap();
    b.ack(&gb.iter().map(|d| d.tag).collect::<Vec<_>>())
        .await
        .unwrap();
    drop((a, b));
    cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_are_declared_on_request() {
    let prefix = unique_prefix();
    let mut cfg = config(&prefix);
    cfg.quorum_queues = true;
    let Some(bus) = connect("quorum_queues_are_declared_on_request", cfg.clone()).await else {
        return;
    };
    bus.publish(MessageKind::OpStatus, b"q".to_vec())
        .await
        .unwrap();
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let got = recv_n(&mut sub, 1, 10).await;
    sub.ack(&[got[0].tag]).await.unwrap();

    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", "type"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            for q in [
                cfg.queue_name(MessageKind::OpStatus),
                cfg.dead_letter_queue(),
            ] {
                let line = text
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(q.as_str()));
                assert!(
                    line.is_some_and(|l| l.contains("quorum")),
                    "{q} is not a quorum queue:\n{text}"
                );
            }
        }
        other => eprintln!("rabbitmqctl unavailable ({other:?}); queue type not checked"),
    }

    // Switching the setting on existing queues: adopted as they are by
    // default; a clear topology error when told to declare.
    let mut classic = cfg.clone();
    classic.quorum_queues = false;
    let adopted = AmqpBus::connect(classic.clone()).await.unwrap();
    adopted.close().await;
    classic.existing = ExistingQueues::Declare;
    match AmqpBus::connect(classic).await {
        Err(AmqpError::Topology(msg)) => assert!(msg.contains("quorum_queues"), "{msg}"),
        other => panic!("expected a topology error, got {other:?}"),
    }
    drop(sub);
    cleanup(&cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_reported_not_hung_on() {
    let mut cfg = config(&unique_prefix());
    cfg.uri = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    cfg.publish_timeout = Duration::from_millis(500);
    assert!(matches!(
        AmqpBus::connect(cfg.clone()).await,
        Err(AmqpError::Connect { .. })
    ));
    let lazy = AmqpBus::new_lazy(cfg).unwrap();
    let t = std::time::Instant::now();
    let err = lazy
        .publish(MessageKind::OpStatus, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(lazy.stats().publish_retries >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_bus_says_so() {
    let prefix = unique_prefix();
    let cfg = config(&prefix);
    let Some(bus) = connect("a_closed_bus_says_so", cfg.clone()).await else {
        return;
    };
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let waiting = tokio::spawn(async move { sub.recv_batch(10).await.map(|b| b.len()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.close().await;
    assert!(matches!(waiting.await.unwrap(), Err(BusError::Closed)));
    assert!(matches!(
        bus.publish(MessageKind::OpStatus, vec![]).await,
        Err(BusError::Closed)
    ));
    cleanup(&cfg).await;
}

/// `synnefo admin queue inspect|retry`'s library calls: a dead letter is
/// read with its key and reason and left in place; a retry puts it back on
/// its original queue and takes it off the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_inspected_then_retried_onto_their_queue() {
    let prefix = unique_prefix();
    let cfg = config(&prefix);
    let Some(bus) = connect(
        "dead_letters_are_inspected_then_retried_onto_their_queue",
        cfg.clone(),
    )
    .await
    else {
        return;
    };
    for body in ["first", "second"] {
        bus.publish(MessageKind::OpStatus, body.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    for d in recv_n(&mut sub, 2, 10).await {
        sub.dead_letter(d.tag, "cannot apply: test").await.unwrap();
    }
    drop(sub);
    let raw = raw(&cfg).await;
    let dlq = cfg.dead_letter_queue();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ready(&raw, &dlq).await < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let seen = bus.dead_letters(10, false).await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].body, b"first");
    assert_eq!(seen[0].routing_key, cfg.routing_key(MessageKind::OpStatus));
    assert_eq!(seen[0].reason.as_deref(), Some("cannot apply: test"));
    assert_eq!(ready(&raw, &dlq).await, 2, "inspecting leaves them");

    assert_eq!(bus.retry_dead_letters(1).await.unwrap(), 1, "bounded");
    assert_eq!(bus.retry_dead_letters(10).await.unwrap(), 1);
    assert_eq!(ready(&raw, &dlq).await, 0);
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();
    let back = recv_n(&mut sub, 2, 10).await;
    assert_eq!(bodies(&back), ["first", "second"], "oldest first");
    sub.ack(&back.iter().map(|d| d.tag).collect::<Vec<_>>())
        .await
        .unwrap();
    drop(sub);
    cleanup(&cfg).await;
}
