//! eventd watching the job queue the Ganeti simulator writes (RAPI jobs
//! run step by step): one message per status change, in order, and a
//! failing job's error reaches the bus with its result.

use std::sync::Arc;
use std::time::Duration;

use synnefo_core::state::{JobStatus, RebootKind};
use synnefo_ganeti_master::eventd::testing::RecordingBus;
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use synnefo_ganeti_sim::{NewSimInstance, Simulator};
use tokio_util::sync::CancellationToken;

fn rank(s: &str) -> u8 {
    s.parse::<JobStatus>()
        .map(JobStatus::rank)
        .unwrap_or(u8::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_jobs_are_published_status_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::builder()
        .single_step(true)
        .data_dir(dir.path().join("sim"))
        .start()
        .await
        .unwrap();
    sim.add_instance_directly(NewSimInstance {
        name: "snf-1".into(),
        running: false,
        ..NewSimInstance::default()
    });
    let bus = Arc::new(RecordingBus::new());
    let mut config = EventdConfig::new(sim.queue_dir(), dir.path().join("spool"), "snf-");
    config.tick = Duration::from_millis(20);
    let cancel = CancellationToken::new();
    let eventd = tokio::spawn(Eventd::new(config, bus.clone()).run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = sim.client().unwrap();

    // Startup, one simulator step at a time.
    let job = client.startup("snf-1").await.unwrap();
    assert!(
        bus.wait_for(1, Duration::from_secs(5)).await,
        "queued published"
    );
    for _ in 0..10 {
        let before = bus.len();
        if sim.step_job(job) {
            assert!(
                bus.wait_for(before + 1, Duration::from_secs(5)).await,
                "each step is one status change"
            );
        } else {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let msgs = bus.op_messages();
    let statuses: Vec<&str> = msgs.iter().map(|m| m.status.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"queued"));
    assert_eq!(statuses.last(), Some(&"success"));
    assert!(
        statuses.windows(2).all(|w| rank(w[0]) < rank(w[1])),
        "in order, no repeats: {statuses:?}"
    );
    assert!(
        msgs.iter().all(|m| m.job_id == job
            && m.instance == "snf-1"
            && m.operation == "OP_INSTANCE_STARTUP")
    );

    // A failing reboot: its error and result are published.
    sim.fail_next_jobs(1, "boom");
    let before = bus.len();
    let job2 = client.reboot("snf-1", RebootKind::Hard).await.unwrap();
    assert!(bus.wait_for(before + 1, Duration::from_secs(5)).await);
    sim.run_until_idle();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !bus
        .op_messages()
        .iter()
        .any(|m| m.job_id == job2 && m.status == "error")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "error published: {:?}",
            bus.op_messages()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = bus
        .op_messages()
        .into_iter()
        .find(|m| m.job_id == job2 && m.status == "error")
        .unwrap();
    assert!(err.result.to_string().contains("boom"), "{}", err.result);
    assert_eq!(err.operation, "OP_INSTANCE_REBOOT");

    cancel.cancel();
    let m = eventd.await.unwrap().unwrap();
    assert_eq!(m.parse_errors, 0);
    let keys: Vec<_> = bus
        .op_messages()
        .iter()
        .map(|m| (m.job_id, m.op_index, m.status.clone()))
        .collect();
    let unique: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no duplicates: {keys:?}");
}
