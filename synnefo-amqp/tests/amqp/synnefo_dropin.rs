//! Next to Synnefo 0.16-0.20 on one broker: queues declared the way
//! Synnefo's dispatcher declares them (`snf-cyclades-app`
//! `synnefo/logic/dispatcher.py` `_init`, `synnefo/logic/queues.py`,
//! `snf-common` `synnefo/lib/amqp/amqp_puka.py` `queue_declare`) are adopted
//! as they are; every routing key Synnefo's eventd and snf-image's progress
//! monitor publish on is bound; nothing is unroutable or dead-lettered.
//!
//! Each test has its own exchanges (Synnefo's `ganeti.event.cluster` key
//! carries no prefix, so a shared exchange would mix tests).

use crate::common::*;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ExchangeKind};
use synnefo_amqp::{AmqpBus, AmqpConfig, AmqpError, ExistingQueues};
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::EventBus;

/// A config on exchanges of the test's own: `<uuid>-ganeti`, and for our
/// dead letters `<uuid>-ganeti.dead` (our default naming; Synnefo's is
/// `<exchange>-dl`, so the queues' `x-dead-letter-exchange` differ as in
/// issue 17).
fn own_exchanges(prefix: &str) -> AmqpConfig {
    let mut c = config(prefix);
    c.exchange = format!("{}ganeti", prefix);
    c.dead_letter_exchange = format!("{}.dead", c.exchange);
    c
}

fn stem(prefix: &str) -> &str {
    prefix.trim_end_matches('-')
}

/// Synnefo's `(queue, routing key)` pairs (queues.py `BINDINGS`).
fn synnefo_bindings(prefix: &str) -> Vec<(String, String)> {
    let p = stem(prefix);
    vec![
        (format!("{p}-events-op"), format!("ganeti.{p}.event.op")),
        (
            format!("{p}-events-network"),
            format!("ganeti.{p}.event.network"),
        ),
        (
            format!("{p}-events-progress"),
            format!("ganeti.{p}.event.progress"),
        ),
        (format!("{p}-events-cluster"), "ganeti.event.cluster".into()),
    ]
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    t
}

/// Declares exchanges, queues and bindings exactly as Synnefo 0.20's
/// dispatcher does: topic exchanges `E` and `E-dl` (durable, not
/// auto-delete); per queue `Q` durable with `x-ha-policy=all` and
/// `x-dead-letter-exchange=E-dl`, and `Q-dl` durable with
/// `x-ha-policy=all`; `Q` bound to `E` and `Q-dl` to `E-dl` by the same key.
async fn declare_like_synnefo(conn: &Connection, exchange: &str, prefix: &str) {
    let ch = conn.create_channel().await.unwrap();
    let dl = format!("{exchange}-dl");
    for ex in [exchange, dl.as_str()] {
        ch.exchange_declare(
            ex.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (q, key) in synnefo_bindings(prefix) {
        let qdl = format!("{q}-dl");
        ch.queue_declare(
            q.as_str().into(),
            durable,
            table(&[
                ("x-ha-policy", "all"),
                ("x-dead-letter-exchange", dl.as_str()),
            ]),
        )
        .await
        .unwrap();
        ch.queue_declare(
            qdl.as_str().into(),
            durable,
            table(&[("x-ha-policy", "all")]),
        )
        .await
        .unwrap();
        ch.queue_bind(
            q.as_str().into(),
            exchange.into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            qdl.as_str().into(),
            dl.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let _ = ch.close(200, "done".into()).await;
}

/// A confirmed, mandatory publish on a raw channel (panics if unroutable).
async fn publish_raw(ch: &lapin::Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "{exchange}/{key}: {confirm:?}"
    );
}

async fn drop_everything(conn: &Connection, cfg: &AmqpConfig, extra_queues: &[String]) {
    cleanup(cfg).await;
    let ch = conn.create_channel().await.unwrap();
    for q in extra_queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let synnefo_dl = format!("{}-dl", cfg.exchange);
    for ex in [&cfg.exchange, &cfg.dead_letter_exchange, &synnefo_dl] {
        let _ = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// A body of each kind Synnefo's producers send (shapes only matter to the
/// dispatcher; the bus routes by key).
fn bodies_by_key(prefix: &str) -> Vec<(String, String)> {
    let p = stem(prefix);
    vec![
        (
            format!("ganeti.{p}.event.op"),
            format!(
                r#"{{"type":"ganeti-op-status","instance":"{p}-1","operation":"OP_TAGS_SET","status":"success","jobId":7,"logmsg":null,"result":null,"event_time":[1700000000,1],"cluster":"c1","job_fields":{{}}}}"#
            ),
        ),
        (
            format!("ganeti.{p}.event.network"),
            format!(
                r#"{{"type":"ganeti-network-status","network":"{p}-net-3","operation":"OP_NETWORK_CONNECT","status":"success","jobId":8,"logmsg":null,"result":null,"event_time":[1700000000,2],"cluster":"c1","job_fields":{{}}}}"#
            ),
        ),
        (
            format!("ganeti.{p}.event.progress"),
            format!(
                r#"{{"type":"image-copy-progress","progress":42,"instance":"{p}-1","event_time":[1700000000,3]}}"#
            ),
        ),
        (
            "ganeti.event.cluster".to_string(),
            r#"{"type":"ganeti-cluster-status","operation":"OP_CLUSTER_SET_PARAMS","status":"success","jobId":9,"logmsg":null,"result":null,"event_time":[1700000000,4],"cluster":"c1"}"#.to_string(),
        ),
        (
            format!("ganeti.{p}.event.net"),
            format!(r#"{{"type":"ganeti-net-status","instance":"{p}-1","nics":[]}}"#),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_on_queues_synnefo_declared_and_routes_every_key() {
    let prefix = unique_prefix();
    let cfg = own_exchanges(&prefix);
    // Probe the broker first (SKIPPED without one).
    let Some(probe) = connect("starts_on_queues_synnefo_declared_and_routes_every_key", {
        let mut c = cfg.clone();
        c.exchange = format!("{prefix}probe");
        c.dead_letter_exchange = format!("{prefix}probe-dl");
        c.op_queue = format!("{prefix}probe-op");
        c.net_queue = format!("{prefix}probe-net");
        c.dead_queue = format!("{prefix}probe-dead");
        c.synnefo_queues = false;
        c
    })
    .await
    else {
        return;
    };
    probe.delete_queues().await.unwrap();
    probe.close().await;

    let conn = raw(&cfg).await;
    declare_like_synnefo(&conn, &cfg.exchange, &prefix).await;
    let synnefo_dl: Vec<String> = synnefo_bindings(&prefix)
        .into_iter()
        .map(|(q, _)| format!("{q}-dl"))
        .collect();

    // Declaring with our arguments is what RabbitMQ refuses (the issue's
    // PRECONDITION_FAILED) ...
    let mut strict = cfg.clone();
    strict.existing = ExistingQueues::Declare;
    match AmqpBus::connect(strict).await {
        Err(AmqpError::Topology(msg)) => {
            assert!(msg.contains("PRECONDITION_FAILED"), "{msg}");
            assert!(msg.contains("adopt"), "the error names the way out: {msg}");
        }
        other => panic!("expected PRECONDITION_FAILED, got {other:?}"),
    }

    // ... adopting them as they are works: publisher and consumer start.
    let bus = AmqpBus::connect(cfg.clone())
        .await
        .expect("adopts Synnefo's queues");
    let mut sub = bus.subscribe(MessageKind::OpStatus).await.unwrap();

    // Every key Synnefo's eventd / progress monitor publish on, and ours,
    // is routed: a mandatory publish is confirmed, not returned.
    for (key, body) in bodies_by_key(&prefix) {
        bus.publish_with_key(&key, body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    // Our op queue is Synnefo's: the op message arrives there.
    let got = recv_n(&mut sub, 1, 10).await;
    assert!(String::from_utf8_lossy(&got[0].body).contains("OP_TAGS_SET"));
    sub.ack(&[got[0].tag]).await.unwrap();

    let p = stem(&prefix);
    for (q, n) in [
        (format!("{p}-events-network"), 1),
        (format!("{p}-events-progress"), 1),
        (format!("{p}-events-cluster"), 1),
        (format!("{p}-events-net"), 1),
    ] {
        assert_eq!(ready(&conn, &q).await, n, "{q}");
    }
    // Nothing dead-lettered anywhere: Synnefo's -dl queues nor ours.
    for q in synnefo_dl.iter().chain([&cfg.dead_letter_queue()]) {
        assert_eq!(ready(&conn, q).await, 0, "{q}");
    }
    let d = bus.queue_depths().await.unwrap();
    assert_eq!((d.op, d.net, d.dead, d.synnefo), (0, 1, 0, 3));

    // A key nobody binds is still reported, not silently dropped.
    match bus
        .publish_with_key(&format!("ganeti.{p}.event.nosuch"), b"{}")
        .await
    {
        Err(AmqpError::Refused(m)) => assert!(m.contains("unroutable"), "{m}"),
        other => panic!("expected unroutable, got {other:?}"),
    }

    // The adopted queue kept Synnefo's arguments: a message rejected
    // without requeue goes to Synnefo's dead-letter exchange and queue.
    drop(sub);
    bus.close().await;
    let op_q = format!("{p}-events-op");
    let ch = conn.create_channel().await.unwrap();
    publish_raw(
        &ch,
        &cfg.exchange,
        &format!("ganeti.{p}.event.op"),
        b"reject me",
    )
    .await;
    let m = ch
        .basic_get(op_q.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the message is in Synnefo's op queue");
    ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    )
    .await
    .unwrap();
    let dl = format!("{op_q}-dl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ready(&conn, &dl).await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready(&conn, &dl).await, 1, "{dl}");
    drop_everything(&conn, &cfg, &synnefo_dl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_broker_gets_synnefo_keys_bound_too() {
    let prefix = unique_prefix();
    let cfg = own_exchanges(&prefix);
    let Some(bus) = connect("a_fresh_broker_gets_synnefo_keys_bound_too", cfg.clone()).await else {
        return;
    };
    for (key, body) in bodies_by_key(&prefix) {
        bus.publish_with_key(&key, body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let d = bus.queue_depths().await.unwrap();
    assert_eq!((d.op, d.net, d.dead, d.synnefo), (1, 1, 0, 3));
    bus.close().await;
    // Dead letters of the cluster key (no prefix) reach our dead queue.
    let conn = raw(&cfg).await;
    let ch = conn.create_channel().await.unwrap();
    publish_raw(&ch, &cfg.dead_letter_exchange, "ganeti.event.cluster", b"x").await;
    assert_eq!(ready(&conn, &cfg.dead_letter_queue()).await, 1);
    drop_everything(&conn, &cfg, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_synnefo_queues_their_keys_are_unroutable() {
    let prefix = unique_prefix();
    let mut cfg = own_exchanges(&prefix);
    cfg.synnefo_queues = false;
    let Some(bus) = connect(
        "without_synnefo_queues_their_keys_are_unroutable",
        cfg.clone(),
    )
    .await
    else {
        return;
    };
    let p = stem(&prefix);
    bus.publish(MessageKind::OpStatus, b"{}".to_vec())
        .await
        .unwrap();
    match bus
        .publish_with_key(&format!("ganeti.{p}.event.network"), b"{}")
        .await
    {
        Err(AmqpError::Refused(m)) => assert!(m.contains("unroutable"), "{m}"),
        other => panic!("expected unroutable, got {other:?}"),
    }
    bus.close().await;
    let conn = raw(&cfg).await;
    drop_everything(&conn, &cfg, &[]).await;
}

/// The corpus's messages (`synnefo-core/tests/fixtures/synnefo-corpus/`),
/// each with its routing key, moved to `prefix`: `snf` in keys and
/// `snf-` in instance names become the test's own. The heartbeat is left
/// out: Synnefo publishes it without `mandatory` to a queue that exists
/// only during a status check.
fn corpus_messages(prefix: &str) -> Vec<(String, String, Vec<u8>)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../synnefo-core/tests/fixtures/synnefo-corpus/cases");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".message.json"))
        .collect();
    names.sort();
    let p = stem(prefix);
    for path in names {
        let case: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (Some(key), false) = (case["routing_key"].as_str(), case["message"].is_null()) else {
            continue;
        };
        if key == "eventd.heartbeat" {
            continue;
        }
        let key = key.replace("ganeti.snf.", &format!("ganeti.{p}."));
        let mut message = case["message"].clone();
        if let Some(i) = message["instance"].as_str()
            && let Some(rest) = i.strip_prefix("snf-")
        {
            message["instance"] = format!("{prefix}{rest}").into();
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, key, serde_json::to_vec(&message).unwrap()));
    }
    out
}

/// Issue 17's acceptance on a broker set up by Synnefo 0.20's dispatcher:
/// our dispatcher adopts its queues, consumes every kind (op, network,
/// progress, cluster) and reads every message of the corpus; nothing is
/// unroutable, nothing is dead-lettered (ours nor Synnefo's `-dl` queues),
/// nothing is left unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dispatcher_reads_every_corpus_message_on_synnefos_queues() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
    use synnefo_core::store::SeaStore;

    let prefix = unique_prefix();
    let cfg = own_exchanges(&prefix);
    let test = "our_dispatcher_reads_every_corpus_message_on_synnefos_queues";
    let Some(probe) = connect(test, {
        let mut c = cfg.clone();
        c.exchange = format!("{prefix}probe");
        c.dead_letter_exchange = format!("{prefix}probe-dl");
        c.op_queue = format!("{prefix}probe-op");
        c.net_queue = format!("{prefix}probe-net");
        c.dead_queue = format!("{prefix}probe-dead");
        c.synnefo_queues = false;
        c
    })
    .await
    else {
        return;
    };
    probe.delete_queues().await.unwrap();
    probe.close().await;

    let conn = raw(&cfg).await;
    declare_like_synnefo(&conn, &cfg.exchange, &prefix).await;
    let synnefo_dl: Vec<String> = synnefo_bindings(&prefix)
        .into_iter()
        .map(|(q, _)| format!("{q}-dl"))
        .collect();
    let bus = AmqpBus::connect(cfg.clone())
        .await
        .expect("adopts Synnefo's queues");
    let messages = corpus_messages(&prefix);
    assert!(messages.len() >= 30, "{} messages", messages.len());
    for (name, key, body) in &messages {
        bus.publish_with_key(key, body)
            .await
            .unwrap_or_else(|e| panic!("{name} on {key}: {e}"));
    }

    // A database that knows none of the corpus's servers: Synnefo's policy
    // (log, count, ack) for those, our default.
    let store = SeaStore::connect("sqlite::memory:", 1).await.unwrap();
    store.migrate().await.unwrap();
    let mut dc = DispatcherConfig::new(&prefix);
    dc.synnefo_kinds = true;
    let dispatcher = Dispatcher::new(Arc::new(store), Arc::new(bus.clone()), dc);
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let d = dispatcher.clone();
        let cancel = cancel.clone();
        async move { d.run(cancel).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = |m: &synnefo_core::dispatcher::DispatcherMetrics| {
        m.applied + m.ignored + m.recorded + m.unknown_server + m.malformed + m.dead_lettered
    };
    while seen(&dispatcher.metrics()) < messages.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let m = run.await.unwrap().unwrap();
    assert_eq!(seen(&m), messages.len() as u64, "{m:?}");
    assert_eq!((m.dead_lettered, m.malformed), (0, 0), "{m:?}");
    // Every network and cluster message of the corpus (and the op-status
    // cases of untracked opcodes: none in the corpus today). snf-image's
    // progress messages (`image-*`) are applied to their server's build
    // progress, so here they count among the unknown servers.
    let recorded = messages
        .iter()
        .filter(|(_, _, body)| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            v["type"] != "ganeti-op-status"
                && !v["type"].as_str().is_some_and(|t| t.starts_with("image-"))
        })
        .count() as u64;
    assert!(recorded >= 20, "{recorded} network/cluster messages");
    assert_eq!(m.recorded, recorded, "{m:?}");
    assert!(m.unknown_server >= 25, "{m:?}");

    let p = stem(&prefix);
    for q in synnefo_bindings(&prefix)
        .into_iter()
        .map(|(q, _)| q)
        .chain(synnefo_dl.iter().cloned())
        .chain([format!("{p}-events-net"), cfg.dead_letter_queue()])
    {
        assert_eq!(ready(&conn, &q).await, 0, "{q} is not empty");
    }
    bus.close().await;
    drop_everything(&conn, &cfg, &synnefo_dl).await;
}
