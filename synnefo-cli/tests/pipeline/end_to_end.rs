//! The full pipeline end to end: the Ganeti simulator runs each VM's jobs
//! -> `synnefo eventd` -> RabbitMQ -> two `synnefo dispatcher`s ->
//! PostgreSQL, with or without a disruption while the jobs run. A test
//! that stops or restarts a service does it to a private instance of its
//! own (never the machine's shared PostgreSQL or RabbitMQ).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use synnefo_core::state::OperState;
use synnefo_test_support::db::Server;
use synnefo_test_support::private::{PrivatePostgres, PrivateRabbit};
use synnefo_test_support::{amqp_url, pg_url, service_unavailable};

use crate::support::*;

// ------------------------------------------------------------- end to end

/// What a VM goes through on the simulator, and the state it must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// create -> STARTED
    Create,
    /// create, shutdown -> STOPPED
    Shutdown,
    /// create, shutdown, startup -> STARTED
    Restart,
    /// create, reboot -> STARTED
    Reboot,
    /// create, remove -> DESTROYED (deleted)
    Remove,
    /// a create that fails -> ERROR
    FailedCreate,
}

impl Lifecycle {
    /// All of them.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Create,
        Lifecycle::Shutdown,
        Lifecycle::Restart,
        Lifecycle::Reboot,
        Lifecycle::Remove,
        Lifecycle::FailedCreate,
    ];

    /// The end state `(operstate, deleted)`.
    pub fn expected(self) -> (OperState, bool) {
        match self {
            Lifecycle::Create | Lifecycle::Restart | Lifecycle::Reboot => {
                (OperState::Started, false)
            }
            Lifecycle::Shutdown => (OperState::Stopped, false),
            Lifecycle::Remove => (OperState::Destroyed, true),
            Lifecycle::FailedCreate => (OperState::Error, false),
        }
    }
}

/// Runs one VM's lifecycle on the simulator through RAPI, each job to its
/// end before the next (as the API does with user actions).
pub async fn drive(
    client: &synnefo_ganeti::rapi::RapiClient,
    ganeti: &synnefo_core::settings::GanetiSettings,
    name: &str,
    life: Lifecycle,
) -> Result<(), String> {
    use synnefo_core::ids::BackendId;
    use synnefo_core::ports::{InstanceSpec, NicSpec};
    use synnefo_core::state::RebootKind;
    let wait = Duration::from_secs(60);
    let spec = InstanceSpec {
        backend: BackendId(1),
        name: name.into(),
        vcpus: 1,
        ram_mib: 128,
        disk_gib: 1,
        disk_template: String::new(),
        os_type: "snf-image+default".into(),
        osparams: BTreeMap::new(),
        nics: vec![NicSpec::default()],
        hvparams: BTreeMap::new(),
        start: true,
    };
    let request = synnefo_ganeti::backend::create_request(&spec, ganeti);
    let job = client
        .create_instance(&request)
        .await
        .map_err(|e| format!("{name}: create: {e}"))?;
    let done = client
        .wait_for_job(job, wait)
        .await
        .map_err(|e| format!("{name}: wait create: {e}"))?;
    let status = done.status.clone().unwrap_or_default();
    if life == Lifecycle::FailedCreate {
        return if status == "error" {
            Ok(())
        } else {
            Err(format!("{name}: create ended {status}, wanted error"))
        };
    }
    if status != "success" {
        return Err(format!("{name}: create ended {status}"));
    }
    let jobs: Vec<u64> = match life {
        Lifecycle::Create | Lifecycle::FailedCreate => vec![],
        Lifecycle::Shutdown => vec![
            client
                .shutdown(name, None)
                .await
                .map_err(|e| e.to_string())?,
        ],
        Lifecycle::Restart => {
            let j = client
                .shutdown(name, None)
                .await
                .map_err(|e| e.to_string())?;
            client
                .wait_for_job_success(j, wait)
                .await
                .map_err(|e| format!("{name}: shutdown: {e}"))?;
            vec![client.startup(name).await.map_err(|e| e.to_string())?]
        }
        Lifecycle::Reboot => vec![
            client
                .reboot(name, RebootKind::Soft)
                .await
                .map_err(|e| e.to_string())?,
        ],
        Lifecycle::Remove => vec![
            client
                .remove_instance(name)
                .await
                .map_err(|e| e.to_string())?,
        ],
    };
    for j in jobs {
        client
            .wait_for_job_success(j, wait)
            .await
            .map_err(|e| format!("{name}: job {j}: {e}"))?;
    }
    Ok(())
}

// ------------------------------------------------------------- end to end runs

/// What happens to the services while the jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// Nothing.
    None,
    /// RabbitMQ stopped for a few seconds (`rabbitmqctl stop_app`).
    BrokerRestart,
    /// Every session of the test database killed (`pg_terminate_backend`)
    /// three times, and PostgreSQL itself restarted once in between.
    DatabaseRestart,
    /// eventd SIGKILLed mid-stream and started again only after jobs went
    /// on changing for a few seconds without it.
    EventdRestart,
}

/// [`end_to_end_with`] without a disruption.
pub async fn end_to_end(test: &str, per_lifecycle: usize) {
    end_to_end_with(test, per_lifecycle, Disruption::None).await;
}

/// The services of one run: the shared ones, or a private instance for
/// the one the run disrupts.
struct Services {
    pg: Option<PrivatePostgres>,
    rabbit: Option<PrivateRabbit>,
}

impl Services {
    /// Private instances for what `disruption` stops, or why there are none.
    fn start(disruption: Disruption) -> Result<Services, (String, String)> {
        let pg = match disruption {
            Disruption::DatabaseRestart => Some(
                PrivatePostgres::start()
                    .map_err(|e| ("a private PostgreSQL (initdb, pg_ctl)".to_string(), e))?,
            ),
            _ => None,
        };
        let rabbit = match disruption {
            Disruption::BrokerRestart => Some(
                PrivateRabbit::start()
                    .map_err(|e| ("a private RabbitMQ node (rabbitmq-server)".to_string(), e))?,
            ),
            _ => None,
        };
        Ok(Services { pg, rabbit })
    }

    fn pg_url(&self) -> String {
        self.pg
            .as_ref()
            .map_or_else(pg_url, PrivatePostgres::admin_url)
    }

    fn amqp_url(&self) -> String {
        self.rabbit
            .as_ref()
            .map_or_else(amqp_url, PrivateRabbit::url)
    }
}

/// The full pipeline: the Ganeti simulator runs each VM's jobs -> `synnefo
/// eventd` publishes from its job queue -> RabbitMQ -> two `synnefo
/// dispatcher`s -> PostgreSQL; asserts every VM's final state, with a
/// [`Disruption`] while the jobs run. Under a database restart the
/// dispatchers must also have retried (the outage overlapped their work),
/// never dead-lettered, and stop cleanly.
pub async fn end_to_end_with(test: &str, per_lifecycle: usize, disruption: Disruption) {
    use synnefo_ganeti_sim::Simulator;

    let _heavy = one_at_a_time().await;
    let restart_broker = disruption == Disruption::BrokerRestart;
    let restart_db = disruption == Disruption::DatabaseRestart;
    let t_test = Instant::now();
    let mut services = match tokio::task::spawn_blocking(move || Services::start(disruption))
        .await
        .expect("starting private services")
    {
        Ok(s) => s,
        Err((what, why)) => return service_unavailable(test, &what, &why),
    };
    if services.pg.is_some() || services.rabbit.is_some() {
        eprintln!("{test}: private services up in {:?}", t_test.elapsed());
    }
    let prefix = unique_prefix();
    let Some(db) = TestDb::on_server(test, Server::Postgres, &services.pg_url()).await else {
        return;
    };
    let store = db.store.clone();
    let amqp_url = services.amqp_url();
    let mut amqp = synnefo_amqp::AmqpConfig::new(amqp_url.clone(), &prefix);
    amqp.publish_timeout = Duration::from_secs(30);
    let bus = match synnefo_amqp::AmqpBus::connect(amqp).await {
        Ok(b) => b,
        Err(e) => {
            service_unavailable(test, "RabbitMQ", &e.to_string());
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // Slow jobs when a service restarts, so the outage lands mid-stream
    // (a database restart takes a few seconds: the jobs outlast it).
    let latency = match disruption {
        Disruption::None => synnefo_ganeti_sim::SimLatency::default(),
        Disruption::BrokerRestart | Disruption::EventdRestart => synnefo_ganeti_sim::SimLatency {
            queued_ms: 100,
            waiting_ms: 100,
            running_ms: 1_000,
        },
        Disruption::DatabaseRestart => synnefo_ganeti_sim::SimLatency {
            queued_ms: 100,
            waiting_ms: 100,
            running_ms: 2_500,
        },
    };
    let sim = Simulator::builder()
        .data_dir(dir.path().join("sim"))
        .latency(latency)
        .start()
        .await
        .expect("simulator");
    let config = write_config(
        dir.path(),
        &db.url,
        &amqp_url,
        &prefix,
        "[eventd]\nnode_name = \"test-node\"\ncluster_name = \"sim-cluster\"\n",
    );

    let lives: Vec<Lifecycle> = Lifecycle::ALL
        .iter()
        .flat_map(|l| std::iter::repeat_n(*l, per_lifecycle))
        .collect();
    let vms = create_vms(&store, lives.len()).await;
    let mut expected = BTreeMap::new();
    for (vm, life) in vms.iter().zip(&lives) {
        expected.insert(*vm, life.expected());
        if *life == Lifecycle::FailedCreate {
            sim.fail_instance(&format!("{prefix}{}", vm.0), "simulated create failure");
        }
    }

    let spool = dir.path().join("spool");
    let queue = sim.queue_dir();
    let eventd_args = [
        "eventd",
        "--queue-dir",
        queue.to_str().unwrap_or_default(),
        "--spool-dir",
        spool.to_str().unwrap_or_default(),
        "--always-master",
    ];
    let mut eventd = start("eventd", dir.path(), &config, &eventd_args);
    let mut a = start("dispatcher-a", dir.path(), &config, &["dispatcher"]);
    let mut b = start("dispatcher-b", dir.path(), &config, &["dispatcher"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let client = sim.client().expect("RAPI client");
    let ganeti = synnefo_core::settings::Settings::defaults_with("")
        .expect("defaults")
        .ganeti;
    let mut tasks = tokio::task::JoinSet::new();
    // Under a database disruption the lifecycles start one after another,
    // so notifications flow all the time instead of in bursts and every
    // disruption lands while the dispatchers write.
    let stagger = if restart_db {
        Duration::from_millis(120)
    } else {
        Duration::ZERO
    };
    for (i, (vm, life)) in vms.iter().zip(lives.iter().copied()).enumerate() {
        let (client, ganeti, name) = (client.clone(), ganeti.clone(), format!("{prefix}{}", vm.0));
        let delay = stagger * i as u32;
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            drive(&client, &ganeti, &name, life).await
        });
    }
    if let Some(rabbit) = services.rabbit.as_mut() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::task::block_in_place(|| rabbit.stop_app()).expect("stop_app");
        eprintln!(
            "{test}: private RabbitMQ stopped at {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| rabbit.start_app()).expect("start_app");
        eprintln!("{test}: RabbitMQ back at {:?}", started.elapsed());
    }
    if disruption == Disruption::EventdRestart {
        tokio::time::sleep(Duration::from_millis(400)).await;
        eventd.kill();
        eprintln!("{test}: eventd SIGKILLed at {:?}", started.elapsed());
        // Jobs go on changing in Ganeti's queue while nobody watches it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let left = mismatches(&store, &expected).await.len();
        eprintln!(
            "{test}: {left} of {} VMs not in their final state while eventd is down",
            expected.len()
        );
        assert!(left > 0, "the jobs ended before eventd was killed");
        eventd = start("eventd", dir.path(), &config, &eventd_args);
        eprintln!("{test}: eventd started again at {:?}", started.elapsed());
    }
    if let Some(pg) = &services.pg {
        let kill = |when: &'static str| {
            let db = &db;
            async move {
                let t = started.elapsed();
                let n = db.kill_connections().await.expect("pg_terminate_backend");
                eprintln!("{test}: {when}: killed {n} sessions of the test database at {t:?}");
            }
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        kill("kill 1").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        kill("kill 2").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        eprintln!(
            "{test}: restarting the private PostgreSQL at {:?}",
            started.elapsed()
        );
        let took = tokio::task::block_in_place(|| pg.restart()).expect("PostgreSQL restart");
        eprintln!(
            "{test}: PostgreSQL restarted in {took:?}, back at {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        kill("kill 3").await;
        // Work is left for after the restart: the dispatchers must do it
        // over new sessions (every old one is gone).
        let left = mismatches(&store, &expected).await.len();
        eprintln!(
            "{test}: {left} of {} VMs not in their final state after the restart",
            expected.len()
        );
        assert!(left > 0, "the jobs ended before the database restart");
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("driver task").expect("lifecycle on the simulator");
    }
    eprintln!(
        "{test}: {} lifecycles done on the simulator in {:?}",
        lives.len(),
        started.elapsed()
    );

    let left = wait_converged(&store, &expected, Duration::from_secs(90)).await;
    eprintln!("{test}: converged after {:?}", started.elapsed());
    if !left.is_empty() {
        for p in [&eventd, &a, &b] {
            eprintln!("--- {} ---\n{}", p.name, p.log_text());
        }
    }
    assert!(
        left.is_empty(),
        "{} VMs lost or regressed (vm, got, want): {:?}",
        left.len(),
        &left[..left.len().min(20)]
    );
    for p in [&mut eventd, &mut a, &mut b] {
        assert!(p.running(), "{} died:\n{}", p.name, p.log_text());
    }
    let depths = bus.queue_depths().await.expect("queue depths");
    let dead = bus.dead_letters(100, false).await.expect("dead letters");
    assert_eq!(depths.dead, 0, "dead letters: {dead:?}");
    for p in [&mut eventd, &mut a, &mut b] {
        let st = p.terminate(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({st:?}):\n{}",
            p.name,
            p.log_text()
        );
        if let Some(line) = p.log_text().lines().find(|l| l.contains("stopped")) {
            eprintln!("{test}: {}: {line}", p.name);
        }
    }
    if restart_db {
        // The outage overlapped the dispatchers' work: they retried (the
        // database refused or dropped them), nothing was dead-lettered,
        // and each printed its totals on the way out.
        let mut retries = 0;
        for p in [&a, &b] {
            let totals = dispatcher_totals(&p.log_text())
                .unwrap_or_else(|| panic!("{} printed no totals:\n{}", p.name, p.log_text()));
            assert_eq!(
                totals.get("dead-lettered"),
                Some(&0),
                "{}: {totals:?}",
                p.name
            );
            retries += totals.get("retries").copied().unwrap_or(0);
            for line in p
                .log_text()
                .lines()
                .filter(|l| l.contains("database unavailable"))
                .take(3)
            {
                eprintln!("{test}: {}: {line}", p.name);
            }
        }
        // Retries happen when a session dies under a query; an outage
        // shorter than the pool's acquire timeout only delays the rest.
        eprintln!("{test}: dispatcher batches retried after a database error: {retries}");
    }
    if disruption == Disruption::EventdRestart {
        // The second run found the job files that changed while it was down.
        let log = eventd.log_text();
        let caught_up = log
            .rsplit("catch_up_files: ")
            .next()
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        eprintln!("{test}: the restarted eventd caught up on {caught_up} job files");
        assert!(caught_up > 0, "no catch-up after the restart:\n{log}");
    }
    if restart_broker {
        // The outage overlapped the stream: eventd had to hold messages
        // back, and the dispatchers had to reconnect.
        let log = eventd.log_text();
        let spooled = log
            .split("spooled: ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        // eventd's publishes either waited in the bus's retry loop (the
        // broker came back within its publish timeout) or were spooled.
        let retried = log.contains("publish failed; retrying");
        eprintln!("{test}: eventd spooled {spooled}, retried publishes: {retried}");
        assert!(
            spooled > 0 || retried,
            "the outage did not overlap eventd's publishing:\n{log}"
        );
        for p in [&a, &b] {
            assert!(
                p.log_text().contains("consumer reconnected"),
                "{} did not reconnect:\n{}",
                p.name,
                p.log_text()
            );
        }
    }
    let _ = bus.delete_queues().await;
    bus.close().await;
    sim.shutdown();
    drop(store);
    drop(db);
    eprintln!("{test}: passed in {:?}", t_test.elapsed());
}
