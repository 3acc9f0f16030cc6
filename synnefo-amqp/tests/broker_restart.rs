//! Publisher and consumer across a real broker restart
//! (`rabbitmqctl stop_app` / `start_app`; needs root). The broker is
//! restarted no matter how the test ends.

mod common;

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use common::*;
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::EventBus;
use synnefo_core::testing::{in_ci, service_unavailable};

/// Serialises broker restarts between test processes (ours and eventd's).
const LOCK: &str = "/tmp/synnefo-rabbitmq-restart.lock";

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts the broker again when dropped (also on panic).
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["start_app"]) {
            eprintln!("!!!!! could not restart RabbitMQ: {e}");
        }
        let _ = rabbitmqctl(&["await_startup"]);
    }
}

/// Takes the restart lock (released when the file is closed, even if the
/// process dies).
#[allow(clippy::incompatible_msrv)] // File::lock: Rust 1.89; the toolchain is newer.
fn flock(f: &File) {
    if let Err(e) = f.lock() {
        eprintln!("cannot take {LOCK} ({e}); going on without it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_consumer_survive_a_broker_restart() {
    let test = "publisher_and_consumer_survive_a_broker_restart";
    if rabbitmqctl(&["status"]).is_err() {
        if in_ci() {
            panic!("{test}: rabbitmqctl is required under CI");
        }
        eprintln!("\n********** SKIPPED {test}: rabbitmqctl not usable (needs root) **********\n");
        return;
    }
    let prefix = unique_prefix();
    let mut cfg = config(&prefix);
    cfg.publish_timeout = Duration::from_secs(60);
    let Some(bus) = connect(test, cfg.clone()).await else {
        return;
    };
    let lock = match File::create(LOCK) {
        Ok(f) => f,
        Err(e) => {
            service_unavailable(test, "restart lock", &e.to_string());
            return;
        }
    };
    flock(&lock);

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

    let publisher = {
        let guard = Restart;
        rabbitmqctl(&["stop_app"]).expect("stop_app");
        // Published while the broker is down: retried until it is back.
        let b2 = bus.clone();
        let publisher =
            tokio::spawn(
                async move { b2.publish(MessageKind::OpStatus, b"during".to_vec()).await },
            );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !publisher.is_finished(),
            "publish returned while the broker was down"
        );
        drop(guard); // start_app + await_startup
        publisher
    };
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
    let raw = raw().await;
    assert_eq!(ready(&raw, &cfg.queue_name(MessageKind::OpStatus)).await, 0);
    assert!(
        bus.stats().connections >= connections_before + 2,
        "{:?}",
        bus.stats()
    );
    drop(sub);
    cleanup(&cfg).await;
    drop(lock);
}
