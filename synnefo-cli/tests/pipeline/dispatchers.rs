//! Two `synnefo dispatcher` processes against the real RabbitMQ and
//! PostgreSQL, one of them SIGKILLed mid-stream (twice) and restarted.
//!
//! A publisher injects the op-status messages of create, startup,
//! shutdown, reboot, remove and failing-create lifecycles for many VMs,
//! shuffled and with duplicates, plus garbage and a message about a VM
//! the database does not know. The proof: every VM ends in the state the
//! messages give when applied in order (zero lost, zero regressed), exactly
//! the bad messages are in the dead-letter queue with their reason, nothing
//! is left in the queues, and SIGTERM stops a dispatcher cleanly.
//!
//! Isolation: its own database and instance-name prefix (hence routing
//! keys and queues).

use std::time::{Duration, Instant};

use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::EventBus;
use synnefo_test_support::{amqp_url, service_unavailable};

use crate::support::*;

const TEST: &str = "pipeline_dispatchers";
const VMS: usize = 280;

/// Waits until consumers have taken messages from a backlog of `backlog`.
async fn wait_consuming(bus: &AmqpBus, backlog: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = bus.queue_depths().await.expect("queue depths").op;
        if ready < backlog {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no dispatcher consumed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn publish_all(bus: &AmqpBus, bodies: &[Vec<u8>]) {
    // A few publishers in parallel, as eventd's confirms are pipelined.
    let chunks: Vec<Vec<Vec<u8>>> = bodies
        .chunks(bodies.len().div_ceil(4).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in chunks {
        let bus = bus.clone();
        tasks.spawn(async move {
            for b in chunk {
                bus.publish(MessageKind::OpStatus, b)
                    .await
                    .expect("publish");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("publisher task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_one_killed_mid_stream_lose_nothing() {
    let _heavy = one_at_a_time().await;
    let prefix = unique_prefix();
    let Some(db) = TestDb::postgres(TEST).await else {
        return;
    };
    let store = db.store.clone();
    let mut amqp = AmqpConfig::new(amqp_url(), &prefix);
    amqp.publish_timeout = Duration::from_secs(30);
    let bus = match AmqpBus::connect(amqp).await {
        Ok(b) => b,
        Err(e) => {
            service_unavailable(TEST, "RabbitMQ", &e.to_string());
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // Small batches and prefetch: many batches in flight when the kill lands.
    let config = write_config(
        dir.path(),
        &db.url,
        &amqp_url(),
        &prefix,
        // Synnefo acks what it cannot use; here both kinds are kept as dead
        // letters so the test can see that exactly those were set aside.
        "[dispatcher]\nbatch_size = 32\nunknown_servers = \"dead-letter\"\n\
         malformed_messages = \"dead-letter\"\n",
    );

    let vms = create_vms(&store, VMS).await;
    let work = workload(&prefix, &vms, 1000);
    let seed = std::env::var("PIPELINE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Rng::new(seed);
    let mut bodies = shuffled_with_duplicates(&work.messages, 25, &mut rng);
    // The bad ones: garbage, an opcode Ganeti could not have sent (a
    // well-formed unknown `OP_*` is recorded, not refused), a VM not in the
    // database.
    let unknown_vm = vms.iter().map(|v| v.0).max().unwrap_or(0) + 1_000_000;
    let bad = [
        b"{this is not json".to_vec(),
        op_status(
            &format!("{prefix}{}", vms[0].0),
            1,
            "op frobnicate",
            "success",
            1_000_000,
        ),
        op_status(
            &format!("{prefix}{unknown_vm}"),
            1,
            "OP_INSTANCE_CREATE",
            "success",
            1_000_000,
        ),
    ];
    for (i, b) in bad.iter().enumerate() {
        let at = (i + 1) * bodies.len() / 4;
        bodies.insert(at, b.clone());
    }
    let total = bodies.len();
    eprintln!(
        "{TEST}: seed {seed}, {VMS} VMs, {} messages ({} with duplicates and bad ones)",
        work.messages.len(),
        total
    );

    let args = ["dispatcher", "--prefetch", "64"];
    let started = Instant::now();
    let third = total / 3;

    // 1. A backlog, one dispatcher; SIGKILL it as soon as it is consuming:
    //    it holds up to `prefetch` unacked messages, some mid-transaction.
    publish_all(&bus, &bodies[..third]).await;
    let mut a = start("dispatcher-a", dir.path(), &config, &args);
    wait_consuming(&bus, third as u32).await;
    let pid = a.pid();
    a.kill();
    eprintln!(
        "{TEST}: killed dispatcher-a (pid {pid}) mid-stream after {:?}",
        started.elapsed()
    );

    // 2. More backlog, two dispatchers; SIGKILL one of them mid-stream.
    publish_all(&bus, &bodies[third..2 * third]).await;
    let backlog = bus.queue_depths().await.unwrap().op;
    let mut a = start("dispatcher-a", dir.path(), &config, &args);
    let mut b = start("dispatcher-b", dir.path(), &config, &args);
    wait_consuming(&bus, backlog).await;
    let pid = b.pid();
    b.kill();
    eprintln!(
        "{TEST}: killed dispatcher-b (pid {pid}) mid-stream after {:?}",
        started.elapsed()
    );

    // 3. Restart it; the rest streams in while both consume.
    let mut b = start("dispatcher-b", dir.path(), &config, &args);
    publish_all(&bus, &bodies[2 * third..]).await;
    eprintln!("{TEST}: published {total} in {:?}", started.elapsed());

    let left = wait_converged(&store, &work.expected, Duration::from_secs(120)).await;
    eprintln!("{TEST}: converged after {:?}", started.elapsed());
    if !left.is_empty() {
        eprintln!("--- dispatcher-a ---\n{}", a.log_text());
        eprintln!("--- dispatcher-b ---\n{}", b.log_text());
    }
    assert!(
        left.is_empty(),
        "{} VMs lost or regressed (vm, got, want): {:?}",
        left.len(),
        &left[..left.len().min(20)]
    );

    // Let the last acks land, then check the queues.
    let deadline = Instant::now() + Duration::from_secs(30);
    let depths = loop {
        let d = bus.queue_depths().await.unwrap();
        if (d.op == 0 && d.dead >= bad.len() as u32) || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(depths.op, 0, "messages left unconsumed");
    let dead = bus.dead_letters(100, true).await.unwrap();
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| d.reason.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        dead.len(),
        bad.len(),
        "exactly the bad messages are dead letters: {reasons:?}"
    );
    for d in &dead {
        assert!(
            bad.contains(&d.body),
            "a good message was dead-lettered: {}",
            String::from_utf8_lossy(&d.body)
        );
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("undecodable") && r.contains("malformed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unknown opcode")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("server {unknown_vm}")) && r.contains("not found")),
        "{reasons:?}"
    );

    assert!(b.running(), "dispatcher-b died:\n{}", b.log_text());
    // Graceful stop.
    let mut redelivered = 0;
    for p in [&mut a, &mut b] {
        let st = p.terminate(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({st:?}):\n{}",
            p.name,
            p.log_text()
        );
        let log = p.log_text();
        let line = log
            .lines()
            .find(|l| l.starts_with("dispatcher stopped"))
            .unwrap_or_else(|| panic!("{log}"));
        eprintln!("{TEST}: {}: {line}", p.name);
        redelivered += line
            .split(", ")
            .find_map(|f| f.strip_suffix(" redelivered"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    // The killed consumers' unacked messages came back to the survivors.
    assert!(
        redelivered > 0,
        "no redelivery seen: the kills did not land mid-stream"
    );
    bus.delete_queues().await.unwrap();
    bus.close().await;
    drop(store);
    drop(db);
}
