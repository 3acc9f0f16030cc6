//! eventd against a real directory and real inotify: job files written the
//! way Ganeti writes them (temp file + rename, several rewrites per op),
//! a bus that records (and fails on demand), restarts and master switches.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use synnefo_core::messages::OpStatusMessage;
use synnefo_core::state::JobStatus;
use synnefo_ganeti_master::eventd::testing::{FakeJob, JobWriter, RecordingBus, write_master_file};
use synnefo_ganeti_master::eventd::{
    Eventd, EventdConfig, EventdError, MasterMode, Metrics, MetricsSnapshot,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<Result<MetricsSnapshot, EventdError>>,
    metrics: Arc<Metrics>,
}

impl Running {
    async fn stop(self) -> MetricsSnapshot {
        self.cancel.cancel();
        self.handle.await.expect("eventd task").expect("eventd run")
    }
}

fn config(queue: &Path, spool: &Path) -> EventdConfig {
    let mut c = EventdConfig::new(queue, spool, "snf-");
    c.cluster_name = Some("c1".into());
    c.tick = Duration::from_millis(20);
    c.retry_backoff = (Duration::from_millis(5), Duration::from_millis(50));
    c.publish_timeout = Duration::from_secs(2);
    c
}

async fn start(config: EventdConfig, bus: Arc<RecordingBus>) -> Running {
    let eventd = Eventd::new(config, bus);
    let metrics = eventd.metrics();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(eventd.run(cancel.clone()));
    // Let it set up its watch and finish the start-up catch-up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Running {
        cancel,
        handle,
        metrics,
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn key(m: &OpStatusMessage) -> (u64, u32, String) {
    (m.job_id, m.op_index, m.status.clone())
}

fn keys(ms: &[OpStatusMessage]) -> Vec<(u64, u32, String)> {
    ms.iter().map(key).collect()
}

fn k(job: u64, op: u32, status: &str) -> (u64, u32, String) {
    (job, op, status.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_op_job_written_like_ganeti_gives_exactly_one_message_per_status_change() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, spool) = (dir.path().join("queue"), dir.path().join("spool"));
    std::fs::create_dir_all(&queue).unwrap();
    let bus = Arc::new(RecordingBus::new());
    let ev = start(config(&queue, &spool), bus.clone()).await;
    let w = JobWriter::new(&queue);

    // Temp files lying around (Ganeti's are renamed; these never are).
    std::fs::write(queue.join("job-1-4242-7.tmp"), b"{\"id\": 1, \"ops\": [").unwrap();
    std::fs::write(queue.join("job-1abcdef.new"), b"garbage").unwrap();

    let mut job = FakeJob::new(
        1,
        &[
            ("OP_INSTANCE_SHUTDOWN", "snf-7"),
            ("OP_INSTANCE_STARTUP", "snf-7"),
        ],
    );
    let mut expected = Vec::new();
    // Each step: change statuses, then write the file several times (Ganeti
    // rewrites it for every log line), then wait for the messages.
    type Step = (
        &'static [(usize, JobStatus)],
        &'static [(u32, &'static str)],
    );
    let steps: &[Step] = &[
        (&[], &[(0, "queued"), (1, "queued")]),
        (&[(0, JobStatus::Waiting)], &[(0, "waiting")]),
        (&[(0, JobStatus::Running)], &[(0, "running")]),
        (
            &[(0, JobStatus::Success), (1, JobStatus::Running)],
            &[(0, "success"), (1, "running")],
        ),
        (&[(1, JobStatus::Success)], &[(1, "success")]),
    ];
    for (changes, want) in steps {
        for (op, status) in *changes {
            job.set_status(*op, *status);
        }
        for i in 0..3 {
            job.log(0, &format!("log line {i}"));
            w.write(&job).unwrap();
        }
        expected.extend(want.iter().map(|(op, s)| k(1, *op, s)));
        assert!(
            bus.wait_for(expected.len(), WAIT).await,
            "waiting for {expected:?}, got {:?}",
            keys(&bus.op_messages())
        );
    }
    // Jobs that are not ours publish nothing.
    let mut other = FakeJob::new(
        2,
        &[("OP_INSTANCE_STARTUP", "web-1"), ("OP_CLUSTER_VERIFY", "")],
    );
    other.set_status(0, JobStatus::Success);
    other.set_status(1, JobStatus::Success);
    w.write(&other).unwrap();
    wait_until("job 2 read", || ev.metrics.snapshot().ops_skipped >= 2).await;
    // The finished job moves to the archive: nothing either.
    w.archive(1).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let got = bus.op_messages();
    assert_eq!(keys(&got), expected);
    let last = got.last().unwrap();
    assert_eq!(
        (
            last.instance.as_str(),
            last.operation.as_str(),
            last.cluster.as_deref()
        ),
        ("snf-7", "OP_INSTANCE_STARTUP", Some("c1"))
    );
    // logmsg: the op's last log line in the file read (the first write of a
    // status, unless eventd read a later rewrite); op 1 never logged.
    assert!(
        got[0]
            .logmsg
            .as_deref()
            .is_some_and(|l| l.starts_with("log line ")),
        "{:?}",
        got[0].logmsg
    );
    assert!(
        got.iter()
            .filter(|m| m.op_index == 1)
            .all(|m| m.logmsg.is_none())
    );
    let m = ev.stop().await;
    assert_eq!(m.published as usize, expected.len());
    assert_eq!(m.parse_errors, 0);
    // Every read is a status-changing read (one per step), a suppressed
    // rewrite, or job 2; rewrites in quick succession may be read once.
    let reads = m.job_files_read - m.duplicates_suppressed;
    assert!((6..=7).contains(&reads), "{m:?}");
    assert!(m.temp_files_ignored >= 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_job_files_are_counted_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, spool) = (dir.path().join("queue"), dir.path().join("spool"));
    std::fs::create_dir_all(&queue).unwrap();
    let bus = Arc::new(RecordingBus::new());
    let ev = start(config(&queue, &spool), bus.clone()).await;
    let w = JobWriter::new(&queue);
    for (id, body) in [
        (3u64, &b"{\"id\": 3, \"ops\": ["[..]),
        (4, br#"{"id": 5, "ops": []}"#),
        (6, br#"{"id": 6, "ops": [{"input": {"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": "snf-1"}, "status": "exploded"}]}"#),
    ] {
        w.write_bytes(id, body).unwrap();
    }
    wait_until("three parse errors", || {
        ev.metrics.snapshot().parse_errors >= 3
    })
    .await;
    // A good rewrite of a bad file is published.
    let mut j = FakeJob::new(6, &[("OP_INSTANCE_STARTUP", "snf-1")]);
    j.set_status(0, JobStatus::Success);
    w.write(&j).unwrap();
    assert!(bus.wait_for(1, WAIT).await);
    assert_eq!(keys(&bus.op_messages()), vec![k(6, 0, "success")]);
    let m = ev.stop().await;
    assert!(m.parse_errors >= 3, "each read of a bad file counts: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_spools_and_replays_in_order_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, spool) = (dir.path().join("queue"), dir.path().join("spool"));
    std::fs::create_dir_all(&queue).unwrap();
    let bus = Arc::new(RecordingBus::new());
    let ev = start(config(&queue, &spool), bus.clone()).await;
    let w = JobWriter::new(&queue);
    let mut jobs: Vec<FakeJob> = (10..14)
        .map(|id| {
            FakeJob::new(
                id,
                &[
                    ("OP_INSTANCE_REBOOT", "snf-3"),
                    ("OP_INSTANCE_STARTUP", "snf-4"),
                ],
            )
        })
        .collect();
    let mut handled = 0u64;
    // Step every job through its statuses, waiting for eventd to hand off
    // each change (published or spooled) before the next one.
    let step = |jobs: &mut Vec<FakeJob>, s: usize| {
        for j in jobs.iter_mut() {
            match s {
                0 => {}
                1 => j.set_status(0, JobStatus::Running),
                2 => {
                    j.set_status(0, JobStatus::Success);
                    j.set_status(1, JobStatus::Running);
                }
                _ => j.set_status(1, JobStatus::Success),
            }
            w.write(j).unwrap();
        }
    };
    let per_step = [8u64, 4, 8, 4];
    step(&mut jobs, 0);
    handled += per_step[0];
    assert!(bus.wait_for(handled as usize, WAIT).await);
    bus.set_failing(true);
    for (s, n) in per_step.iter().enumerate().take(3).skip(1) {
        step(&mut jobs, s);
        handled += n;
        wait_until("spooled", || {
            let m = ev.metrics.snapshot();
            m.published + m.spooled - m.replayed >= handled
        })
        .await;
    }
    assert_eq!(bus.len(), 8, "nothing published while the broker is down");
    assert!(ev.metrics.snapshot().spool_depth > 0);
    bus.set_failing(false);
    step(&mut jobs, 3);
    handled += per_step[3];
    assert!(bus.wait_for(handled as usize, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = keys(&bus.op_messages());
    assert_eq!(got.len() as u64, handled, "{got:?}");
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        got.len(),
        "no duplicates"
    );
    // Per job: the statuses in the order they happened.
    for id in 10..14 {
        let seq: Vec<(u32, String)> = got
            .iter()
            .filter(|(j, _, _)| *j == id)
            .map(|(_, o, s)| (*o, s.clone()))
            .collect();
        let want: Vec<(u32, String)> = [
            (0, "queued"),
            (1, "queued"),
            (0, "running"),
            (0, "success"),
            (1, "running"),
            (1, "success"),
        ]
        .iter()
        .map(|(o, s)| (*o, s.to_string()))
        .collect();
        assert_eq!(seq, want, "job {id}");
    }
    let m = ev.stop().await;
    assert_eq!(m.spool_depth, 0);
    assert_eq!(m.replayed, m.spooled);
    assert_eq!(std::fs::metadata(spool.join("spool.log")).unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_still_spooled_at_shutdown_are_replayed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, spool) = (dir.path().join("queue"), dir.path().join("spool"));
    std::fs::create_dir_all(&queue).unwrap();
    let down = Arc::new(RecordingBus::new());
    down.set_failing(true);
    let mut cfg = config(&queue, &spool);
    cfg.shutdown_grace = Duration::from_millis(50);
    let ev = start(cfg.clone(), down.clone()).await;
    let w = JobWriter::new(&queue);
    let mut j = FakeJob::new(20, &[("OP_INSTANCE_CREATE", "snf-9")]);
    w.write(&j).unwrap();
    wait_until("spooled", || ev.metrics.snapshot().spooled >= 1).await;
    let m = ev.stop().await;
    assert_eq!((m.spool_depth, m.published), (1, 0));

    let up = Arc::new(RecordingBus::new());
    let ev = start(cfg, up.clone()).await;
    j.set_status(0, JobStatus::Success);
    w.write(&j).unwrap();
    assert!(up.wait_for(2, WAIT).await);
    assert_eq!(
        keys(&up.op_messages()),
        vec![k(20, 0, "queued"), k(20, 0, "success")],
        "spool first, then newer"
    );
    ev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_catches_up_on_what_changed_while_down_without_republishing() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, spool) = (dir.path().join("queue"), dir.path().join("spool"));
    std::fs::create_dir_all(&queue).unwrap();
    let w = JobWriter::new(&queue);
    // Old history: a job finished and archived before eventd ever ran,
    // older than the first-start archive window: not republished.
    let mut ancient = FakeJob::new(1, &[("OP_INSTANCE_CREATE", "snf-1")]);
    ancient.set_status(0, JobStatus::Success);
    w.write(&ancient).unwrap();
    w.archive(1).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    let f = std::fs::File::options()
        .write(true)
        .open(queue.join("archive/0/job-1"))
        .unwrap();
    f.set_modified(old).unwrap();
    std::fs::File::open(queue.join("archive/0"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    let bus = Arc::new(RecordingBus::new());
    let ev = start(config(&queue, &spool), bus.clone()).await;
    let mut a = FakeJob::new(30, &[("OP_INSTANCE_STARTUP", "snf-1")]);
    w.write(&a).unwrap();
    a.set_status(0, JobStatus::Running);
    w.write(&a).unwrap();
    wait_until("running published", || {
        keys(&bus.op_messages()).contains(&k(30, 0, "running"))
    })
    .await;
    ev.stop().await;
    let before = bus.len();

    // While eventd is down: job 30 finishes, 31 runs start to end, 32
    // finishes and is archived, 33 is only queued.
    a.set_status(0, JobStatus::Success);
    w.write(&a).unwrap();
    let mut b = FakeJob::new(31, &[("OP_INSTANCE_SHUTDOWN", "snf-2")]);
    b.set_status(0, JobStatus::Success);
    w.write(&b).unwrap();
    let mut c = FakeJob::new(32, &[("OP_INSTANCE_REMOVE", "snf-3")]);
    c.set_status(0, JobStatus::Error);
    w.write(&c).unwrap();
    w.archive(32).unwrap();
    let d = FakeJob::new(33, &[("OP_INSTANCE_REBOOT", "snf-4")]);
    w.write(&d).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let ev = start(config(&queue, &spool), bus.clone()).await;
    assert!(bus.wait_for(before + 4, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = keys(&bus.op_messages());
    let mut after = got[before..].to_vec();
    after.sort();
    assert_eq!(
        after,
        vec![
            k(30, 0, "success"),
            k(31, 0, "success"),
            k(32, 0, "error"),
            k(33, 0, "queued")
        ]
    );
    assert!(
        !got.contains(&k(1, 0, "success")),
        "the ancient archived job is not republished"
    );
    let m = ev.stop().await;
    assert!(m.catch_up_files >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_switch_between_two_eventds_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let master = dir.path().join("ssconf_master_node");
    write_master_file(&master, "node-a.example.org").unwrap();
    let node = |name: &str| {
        let mut c = config(&queue, &dir.path().join(format!("spool-{name}")));
        c.master = MasterMode::File {
            path: master.clone(),
            node_name: name.into(),
        };
        c.handover_slack = Duration::ZERO;
        c
    };
    let (bus_a, bus_b) = (Arc::new(RecordingBus::new()), Arc::new(RecordingBus::new()));
    let a = start(node("node-a"), bus_a.clone()).await;
    let b = start(node("node-b.example.org"), bus_b.clone()).await;
    assert!(a.metrics.snapshot().master && !b.metrics.snapshot().master);
    let w = JobWriter::new(&queue);
    let published = |bus_a: &RecordingBus, bus_b: &RecordingBus| {
        let mut all = keys(&bus_a.op_messages());
        all.extend(keys(&bus_b.op_messages()));
        all
    };

    let mut expected = Vec::new();
    let mut jobs: Vec<FakeJob> = (100..106)
        .map(|id| FakeJob::new(id, &[("OP_INSTANCE_STARTUP", "snf-5")]))
        .collect();
    let statuses = [
        JobStatus::Queued,
        JobStatus::Waiting,
        JobStatus::Running,
        JobStatus::Success,
    ];
    // A stream of interleaved changes over six jobs; the master moves from
    // a to b half-way through.
    let mut n = 0;
    for (round, status) in statuses.iter().enumerate() {
        for j in jobs.iter_mut() {
            if n == 12 {
                // Ganeti's master-failover stops the old master's job
                // processing before the switch; a short quiet moment also
                // keeps changes clear of coarse file timestamps.
                tokio::time::sleep(Duration::from_millis(20)).await;
                write_master_file(&master, "node-b.example.org").unwrap();
            }
            n += 1;
            if round > 0 {
                j.set_status(0, *status);
            }
            w.write(j).unwrap();
            let want = k(j.id, 0, status.as_str());
            expected.push(want.clone());
            wait_until("the change published by someone", || {
                published(&bus_a, &bus_b).contains(&want)
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (got_a, got_b) = (keys(&bus_a.op_messages()), keys(&bus_b.op_messages()));
    let mut all = got_a.clone();
    all.extend(got_b.iter().cloned());
    all.sort();
    expected.sort();
    assert_eq!(
        all, expected,
        "every change exactly once (a: {got_a:?}, b: {got_b:?})"
    );
    assert_eq!(got_a.len(), 12, "a published until the switch");
    assert_eq!(got_b.len(), 12, "b published after it");
    let (ma, mb) = (a.stop().await, b.stop().await);
    assert!(!ma.master && mb.master);
    assert_eq!(mb.takeovers, 1);
    assert!((1..=12).contains(&ma.observed_not_owned), "{ma:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_takes_over_publishes_what_the_old_master_left_within_the_slack() {
    // The old master died just before the switch: changes within the
    // slack before the switch are published again by the new master.
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let master = dir.path().join("ssconf_master_node");
    write_master_file(&master, "node-a").unwrap();
    let mut c = config(&queue, &dir.path().join("spool-b"));
    c.master = MasterMode::File {
        path: master.clone(),
        node_name: "node-b".into(),
    };
    c.handover_slack = Duration::from_secs(2);
    let bus = Arc::new(RecordingBus::new());
    let b = start(c, bus.clone()).await;
    let w = JobWriter::new(&queue);
    let mut j = FakeJob::new(7, &[("OP_INSTANCE_SHUTDOWN", "snf-8")]);
    j.set_status(0, JobStatus::Success);
    w.write(&j).unwrap();
    wait_until("observed", || b.metrics.snapshot().observed_not_owned >= 1).await;
    assert!(bus.is_empty(), "not master yet");
    write_master_file(&master, "node-b").unwrap();
    assert!(bus.wait_for(1, WAIT).await);
    assert_eq!(keys(&bus.op_messages()), vec![k(7, 0, "success")]);
    let m = b.stop().await;
    assert!(m.master && m.takeovers == 1);
}
