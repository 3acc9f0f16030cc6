//! Helpers for the tests against a real RabbitMQ (the shared one of
//! `amqp_url()`, or a test's private node).

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::ports::{Delivery, Subscription};
use synnefo_test_support::{amqp_url, service_unavailable};

/// A prefix no other test uses, so each test has its own queues.
pub fn unique_prefix() -> String {
    synnefo_test_support::unique("t") + "-"
}

/// A test configuration on the shared broker: short backoffs.
pub fn config(prefix: &str) -> AmqpConfig {
    config_at(&amqp_url(), prefix)
}

/// A test configuration on the broker of `url`: short backoffs.
pub fn config_at(url: &str, prefix: &str) -> AmqpConfig {
    let mut c = AmqpConfig::new(url, prefix);
    c.min_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(500);
    c.publish_timeout = Duration::from_secs(5);
    c.prefetch = 100;
    c
}

/// Connects, or reports the broker unavailable (SKIPPED, or a failure under CI).
pub async fn connect(test: &str, cfg: AmqpConfig) -> Option<AmqpBus> {
    match AmqpBus::connect(cfg).await {
        Ok(b) => Some(b),
        Err(e) => {
            service_unavailable(test, "RabbitMQ", &e.to_string());
            None
        }
    }
}

/// A raw lapin connection to the broker of `cfg`, for inspecting queues.
pub async fn raw(cfg: &AmqpConfig) -> Connection {
    Connection::connect(&cfg.uri, ConnectionProperties::default())
        .await
        .expect("raw connection")
}

/// Messages ready in a queue.
pub async fn ready(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    q.message_count()
}

/// Takes one message from a queue (auto-ack).
pub async fn get(conn: &Connection, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

/// Deletes the test's queues.
pub async fn cleanup(cfg: &AmqpConfig) {
    let conn = raw(cfg).await;
    let ch = conn.create_channel().await.unwrap();
    for q in cfg.bindings().into_iter().map(|b| b.queue) {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// Receives until `n` deliveries arrived (or panics after `secs`).
pub async fn recv_n(sub: &mut Box<dyn Subscription>, n: usize, secs: u64) -> Vec<Delivery> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sub.recv_batch(n - out.len())).await {
            Ok(Ok(b)) => out.extend(b),
            Ok(Err(e)) => panic!("recv_batch: {e}"),
            Err(_) => panic!("only {} of {n} deliveries within {secs}s", out.len()),
        }
    }
    out
}

/// Asserts nothing arrives for a while.
pub async fn assert_quiet(sub: &mut Box<dyn Subscription>, ms: u64) {
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(ms), sub.recv_batch(10)).await {
        panic!("expected no delivery, got {:?}", r.map(|b| b.len()));
    }
}

/// The bodies as strings.
pub fn bodies(d: &[Delivery]) -> Vec<String> {
    d.iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect()
}
