//! Load harness: dispatcher throughput on RabbitMQ + PostgreSQL against a
//! raw lapin consume+ack loop over the same messages, in the same run.
//!
//! ```text
//! cargo run --release -p synnefo-examples --example dispatcher_load -- \
//!     [--messages 100000] [--vms 2000] [--batch-size 256] [--prefetch 512] [--consumers 1] [--rounds 1]
//! ```
//!
//! Each round:
//! 1. a fresh PostgreSQL database with `--vms` VMs in BUILD;
//! 2. `--messages` op-status messages (each VM: create, then shutdown /
//!    startup / reboot jobs, each queued -> running -> success), VMs
//!    interleaved, published to the VMs' op queue (confirmed, persistent);
//! 3. **(a) baseline**: a raw lapin consumer drains the queue with one
//!    `basic.ack` per message (prefetch as given), nothing else;
//! 4. the same messages are published again;
//! 5. **(b) dispatcher**: `synnefo_core::dispatcher::Dispatcher` over
//!    `AmqpBus` and `SeaStore`: decode, state machine, one read and one
//!    write transaction per batch, acks only after the commit (multiple
//!    acks where contiguous);
//! 6. prints both rates and the ratio b/a, and checks every VM's final
//!    state.
//!
//! Uses `SYNNEFO_TEST_DATABASE_URL` / `SYNNEFO_TEST_AMQP_URL` (defaults:
//! the local PostgreSQL and RabbitMQ).
//!
//! ## Figures (2-core machine shared with other builds; RabbitMQ 3.10,
//! PostgreSQL 15 with `synchronous_commit = on`; 100,000 messages over
//! 2,000 VMs, 3 rounds each, release build)
//!
//! | dispatcher setting | (a) raw, mean | (b) dispatcher, mean | b/a median (min-max) | store time per batch |
//! |---|---|---|---|---|
//! | batch 256, prefetch 512, 1 consumer | 16,251 msg/s | 10,036 msg/s | 0.64 (0.52-0.69) | 17-25 ms |
//! | batch 512, prefetch 1024, 1 consumer | 12,372 msg/s | 9,811 msg/s | 0.73 (0.70-1.00) | 43-53 ms |
//! | batch 256, prefetch 512, 2 consumers | 14,636 msg/s | 11,307 msg/s | 0.79 (0.63-0.95) | 32-38 ms |
//!
//! The dispatcher is bound by the store: a batch's write transaction ends
//! in a WAL flush (about 11-20 ms here for 256 rows), its read takes 3-9 ms.
//! Two consumers per queue overlap one batch's commit with the next one's
//! read, hence `synnefo dispatcher --consumers 2` by default. The raw loop
//! swings between 7k and 20k msg/s with the machine's other load, which is
//! why each round measures both, back to back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sea_orm::{ConnectionTrait, Database};
use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
use synnefo_core::ids::{FlavorId, VmId};
use synnefo_core::messages::MessageKind;
use synnefo_core::model::{Flavor, NewVm, Quota};
use synnefo_core::ports::{CatalogStore, EventBus, IdentityStore, VmStore};
use synnefo_core::state::OperState;
use synnefo_core::store::SeaStore;
use synnefo_core::testing::{amqp_url, pg_url};
use tokio_util::sync::CancellationToken;

struct Opts {
    messages: usize,
    vms: usize,
    batch_size: usize,
    prefetch: u16,
    consumers: usize,
    rounds: usize,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        messages: 100_000,
        vms: 2_000,
        batch_size: 256,
        prefetch: 512,
        consumers: 1,
        rounds: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .with_context(|| format!("{flag} {value}: not a number"))?;
        match flag.as_str() {
            "--messages" => o.messages = n,
            "--vms" => o.vms = n,
            "--batch-size" => o.batch_size = n.max(1),
            "--prefetch" => {
                o.prefetch = u16::try_from(n.max(1)).context("--prefetch: at most 65535")?
            }
            "--consumers" => o.consumers = n.max(1),
            "--rounds" => o.rounds = n.max(1),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

fn with_database(url: &str, db: &str) -> String {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[host_start..]
        .find('/')
        .map_or(url.len(), |i| host_start + i);
    format!("{}/{db}", &url[..host_end])
}

/// A fresh database; dropped by [`drop_db`].
async fn create_db() -> Result<(String, String)> {
    let admin = Database::connect(&pg_url()).await.context("PostgreSQL")?;
    let name = format!("synnefo_load_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    Ok((with_database(&pg_url(), &name), name))
}

async fn drop_db(name: &str) {
    if let Ok(admin) = Database::connect(&pg_url()).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        let _ = admin.close().await;
    }
}

async fn create_vms(store: &SeaStore, n: usize) -> Result<Vec<VmId>> {
    let user = store.create_user("load", "$argon2id$fake", false).await?;
    let project = store.create_project("load").await?;
    store.add_member(&user.id, &project.id).await?;
    let flavor = store
        .create_flavor(&Flavor {
            id: FlavorId(0),
            name: "load".into(),
            vcpus: 1,
            ram_mib: 128,
            disk_gib: 1,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        })
        .await?;
    // A few creators in parallel: this is setup, not what is measured.
    let store = Arc::new(store.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let per = n.div_ceil(8);
    for w in 0..8 {
        let (store, user, project, flavor) = (
            store.clone(),
            user.id.clone(),
            project.id.clone(),
            flavor.clone(),
        );
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in (w * per)..((w + 1) * per).min(n) {
                let nv = NewVm {
                    user_id: user.clone(),
                    project_id: project.clone(),
                    name: format!("vm{i}"),
                    flavor: flavor.clone(),
                    image_id: "img".into(),
                    backend_id: None,
                    metadata: BTreeMap::new(),
                    request_id: None,
                };
                ids.push(store.create_vm(&nv, Quota::default()).await?.id);
            }
            Ok::<_, synnefo_core::StoreError>(ids)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort();
    Ok(all)
}

/// Messages: per VM a create then shutdown/startup/reboot jobs, three
/// statuses each; VMs interleaved. Returns the bodies and the expected
/// final operstate per VM.
fn workload(prefix: &str, vms: &[VmId], n: usize) -> (Vec<Vec<u8>>, BTreeMap<VmId, OperState>) {
    const CYCLE: [(&str, OperState); 3] = [
        ("OP_INSTANCE_SHUTDOWN", OperState::Stopped),
        ("OP_INSTANCE_STARTUP", OperState::Started),
        ("OP_INSTANCE_REBOOT", OperState::Started),
    ];
    let per_vm = n.div_ceil(vms.len().max(1));
    let jobs_per_vm = per_vm.div_ceil(3);
    // Per VM: (body, operstate once this message is applied).
    let mut per: Vec<Vec<(Vec<u8>, OperState)>> = vec![Vec::new(); vms.len()];
    let mut job = 0u64;
    for (v, vm) in vms.iter().enumerate() {
        let name = format!("{prefix}{}", vm.0);
        let mut state = OperState::Build;
        for j in 0..jobs_per_vm {
            job += 1;
            let (opcode, target) = if j == 0 {
                ("OP_INSTANCE_CREATE", OperState::Started)
            } else {
                CYCLE[(j - 1) % 3]
            };
            for (s, status) in ["queued", "running", "success"].iter().enumerate() {
                let t = 1_700_000_000_000_000i64 + (job as i64) * 10 + s as i64;
                if *status == "success" {
                    state = target;
                }
                per[v].push((
                    serde_json::to_vec(&serde_json::json!({
                        "type": "ganeti-op-status", "instance": name, "operation": opcode,
                        "jobId": job, "status": status, "logmsg": null, "result": null,
                        "event_time": [t / 1_000_000, t % 1_000_000], "cluster": "load",
                    }))
                    .unwrap_or_default(),
                    state,
                ));
            }
        }
    }
    // Interleave the VMs, keep each VM's own order, cut at n.
    let mut out = Vec::with_capacity(n);
    let mut expected: BTreeMap<VmId, OperState> =
        vms.iter().map(|v| (*v, OperState::Build)).collect();
    let mut i = 0;
    'outer: loop {
        let mut any = false;
        for (v, msgs) in per.iter().enumerate() {
            if out.len() == n {
                break 'outer;
            }
            if let Some((m, state)) = msgs.get(i) {
                out.push(m.clone());
                expected.insert(vms[v], *state);
                any = true;
            }
        }
        if !any {
            break;
        }
        i += 1;
    }
    (out, expected)
}

async fn publish_all(bus: &AmqpBus, bodies: &[Vec<u8>]) -> Result<Duration> {
    // 64 confirms in flight; publisher k sends messages k, k+64, ... so the
    // queue keeps (nearly) the generation order, as eventd's stream does.
    const PUBLISHERS: usize = 64;
    let t = Instant::now();
    let bodies = Arc::new(bodies.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..PUBLISHERS {
        let (bus, bodies) = (bus.clone(), bodies.clone());
        tasks.spawn(async move {
            for b in bodies.iter().skip(k).step_by(PUBLISHERS) {
                bus.publish(MessageKind::OpStatus, b.clone()).await?;
            }
            Ok::<_, synnefo_core::BusError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(t.elapsed())
}

/// (a) The baseline: consume `n` messages, one `basic.ack` per message.
async fn raw_consume(queue: &str, n: usize, prefetch: u16) -> Result<Duration> {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "raw-baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .context("raw consumer stalled")?
            .context("consumer cancelled")??;
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await?;
        got += 1;
    }
    let elapsed = t.elapsed();
    conn.close(200, "done".into()).await?;
    Ok(elapsed)
}

async fn round(o: &Opts, r: usize, store: &SeaStore, vms: &[VmId]) -> Result<(f64, f64)> {
    let prefix = format!("load{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    {
        let (bodies, expected) = workload(&prefix, vms, o.messages);

        let mut amqp = AmqpConfig::new(amqp_url(), &prefix);
        amqp.prefetch = o.prefetch;
        amqp.publish_timeout = Duration::from_secs(60);
        let bus = AmqpBus::connect(amqp).await?;
        let queue = bus.config().queue_name(MessageKind::OpStatus);

        // (a) baseline
        let p = publish_all(&bus, &bodies).await?;
        eprintln!(
            "round {r}: published {} in {p:.1?} ({:.0} msg/s)",
            bodies.len(),
            bodies.len() as f64 / p.as_secs_f64()
        );
        let a = raw_consume(&queue, bodies.len(), o.prefetch).await?;
        let a_rate = bodies.len() as f64 / a.as_secs_f64();

        // (b) the dispatcher
        publish_all(&bus, &bodies).await?;
        let mut cfg = DispatcherConfig::new(&prefix);
        cfg.batch_size = o.batch_size;
        cfg.consumers_per_kind = o.consumers;
        let dispatcher = Dispatcher::new(Arc::new(store.clone()), Arc::new(bus.clone()), cfg);
        let cancel = CancellationToken::new();
        let t = Instant::now();
        let run = tokio::spawn({
            let (d, c) = (dispatcher.clone(), cancel.clone());
            async move { d.run(c).await }
        });
        let n = bodies.len() as u64;
        loop {
            let m = dispatcher.metrics();
            if m.applied + m.ignored + m.dead_lettered >= n {
                break;
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("dispatcher stalled: {m:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let b = t.elapsed();
        cancel.cancel();
        let m = run.await??;
        let b_rate = n as f64 / b.as_secs_f64();

        // Where a batch's store time goes (VMs already settled; rewriting
        // their state only bumps versions).
        let sample: Vec<VmId> = vms.iter().take(o.batch_size).copied().collect();
        let t = Instant::now();
        for _ in 0..10 {
            store.vms(&sample).await?;
        }
        let read_ms = t.elapsed().as_secs_f64() * 100.0;
        eprintln!(
            "round {r}: store.vms() of {} VMs: {read_ms:.1} ms (the read half of a batch)",
            sample.len()
        );
        let mut write_ms = 0.0;
        for _ in 0..10 {
            let updates: Vec<synnefo_core::ports::VmStateUpdate> = store
                .vms(&sample)
                .await?
                .into_iter()
                .map(|v| synnefo_core::ports::VmStateUpdate {
                    id: v.id,
                    expected_version: v.version,
                    state: v.state,
                    nics: None,
                    resize: None,
                    action_log: None,
                    image: None,
                })
                .collect();
            let t = Instant::now();
            store.update_vm_states(&updates).await?;
            write_ms += t.elapsed().as_secs_f64() * 100.0;
        }
        eprintln!(
            "round {r}: store.update_vm_states() of {} VMs: {write_ms:.1} ms (the write half)",
            sample.len()
        );

        let mut wrong = 0;
        let ids: Vec<VmId> = expected.keys().copied().collect();
        for chunk in ids.chunks(1000) {
            for vm in store.vms(chunk).await? {
                if expected.get(&vm.id) != Some(&vm.state.operstate()) {
                    wrong += 1;
                }
            }
        }
        println!(
            "round {r}: (a) raw consume+ack {a_rate:>8.0} msg/s | (b) dispatcher {b_rate:>8.0} msg/s | b/a = {:.2} | \
             batches {} (avg {:.0} msgs, {:.1} ms in the store each), applied {}, ignored {}, dead {}, retries {}, wrong VMs {wrong}/{}",
            b_rate / a_rate,
            m.batches,
            n as f64 / m.batches.max(1) as f64,
            m.apply_micros as f64 / 1000.0 / m.batches.max(1) as f64,
            m.applied,
            m.ignored,
            m.dead_lettered,
            m.retries,
            expected.len()
        );
        bus.delete_queues().await?;
        bus.close().await;
        if wrong > 0 || m.dead_lettered > 0 {
            bail!(
                "{wrong} VMs in the wrong state, {} dead letters",
                m.dead_lettered
            );
        }
        Ok((a_rate, b_rate))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = opts()?;
    println!(
        "dispatcher_load: {} messages over {} VMs, batch {}, prefetch {}, {} consumer(s), {} round(s)",
        o.messages, o.vms, o.batch_size, o.prefetch, o.consumers, o.rounds
    );
    let (db_url, db_name) = create_db().await?;
    let result = async {
        let store = SeaStore::connect(&db_url, 8).await?;
        store.migrate().await?;
        let t = Instant::now();
        let vms = create_vms(&store, o.vms * o.rounds).await?;
        eprintln!("{} VMs created in {:.1?}", vms.len(), t.elapsed());
        let mut rates = Vec::new();
        for (r, set) in vms.chunks(o.vms).enumerate() {
            rates.push(round(&o, r + 1, &store, set).await?);
        }
        Ok::<_, anyhow::Error>(rates)
    }
    .await;
    drop_db(&db_name).await;
    let rates = result?;
    if rates.len() > 1 {
        let mut ratios: Vec<f64> = rates.iter().map(|(a, b)| b / a).collect();
        ratios.sort_by(f64::total_cmp);
        let (a, b): (f64, f64) = rates
            .iter()
            .fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b));
        let k = rates.len() as f64;
        println!(
            "over {} rounds: mean (a) {:.0} msg/s, mean (b) {:.0} msg/s; b/a per round min {:.2}, median {:.2}, max {:.2}",
            rates.len(),
            a / k,
            b / k,
            ratios[0],
            ratios[ratios.len() / 2],
            ratios[ratios.len() - 1]
        );
    }
    Ok(())
}
