//! Issue 17 on the real Ganeti: what an operator does behind the API
//! (`gnt-instance add-tags`, `grow-disk`, `modify -B`) goes through our
//! pipeline (eventd in the lab -> RabbitMQ -> dispatchers -> PostgreSQL)
//! with nothing dead-lettered, eventd's messages carry what Synnefo's
//! eventd sends (the instance's NICs with name, network, firewall; its
//! disks; boot parameters; the op's inputs), and `modify -B` changes the
//! server's flavor with no reconciliation.
//!
//! A copy of every op-status message and every dead letter of the run is
//! read from two queues of our own (`<stem>-spy-op`, `<stem>-spy-dead`),
//! bound like the dispatchers' queues: the dispatchers keep consuming the
//! real ones.
//!
//! Ganeti 3.0 has no snapshot opcode (`OP_INSTANCE_SNAPSHOT` exists only in
//! GRNET's Ganeti), so no job can make eventd publish one; what can be
//! checked is the rest of the way: Synnefo's snapshot message for this
//! server, published on the run's routing key, is read by our dispatchers,
//! recorded as the server's last job (nothing else changes) and never
//! dead-lettered.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use synnefo_amqp::{AmqpBus, AmqpConfig};
use synnefo_core::messages::MessageKind;
use synnefo_core::ports::{EventBus, Subscription};
use synnefo_test_support::amqp_url;

use crate::*;

/// A copy of the run's op-status messages and dead letters.
struct Spy {
    bus: AmqpBus,
    ops: Box<dyn Subscription>,
    /// Messages read so far.
    seen: Vec<Value>,
}

impl Spy {
    async fn start(prefix: &str) -> Result<Spy> {
        let stem = prefix.trim_end_matches('-');
        let mut config = AmqpConfig::new(amqp_url(), prefix);
        config.op_queue = format!("{stem}-spy-op");
        config.net_queue = format!("{stem}-spy-net");
        config.dead_queue = format!("{stem}-spy-dead");
        config.synnefo_queues = false;
        let bus = AmqpBus::connect(config)
            .await
            .context("connecting the spy")?;
        // Subscribing declares and binds the spy's queues.
        let ops = bus
            .subscribe(MessageKind::OpStatus)
            .await
            .context("spy subscription")?;
        Ok(Spy {
            bus,
            ops,
            seen: Vec::new(),
        })
    }

    /// Waits for an op-status message about `instance` with this opcode
    /// and status (read ones included).
    async fn wait_op(&mut self, instance: &str, opcode: &str, status: &str) -> Result<Value> {
        self.wait_for(&format!("{opcode} {status} about {instance}"), |m| {
            m["instance"] == instance && m["operation"] == opcode && m["status"] == status
        })
        .await
    }

    /// Waits for the message of Ganeti job `job` in `status`.
    async fn wait_job_status(&mut self, job: u64, status: &str) -> Result<Value> {
        self.wait_for(&format!("job {job} {status}"), |m| {
            m["jobId"] == job && m["status"] == status
        })
        .await
    }

    /// Waits for the first message (read ones included) that `want` accepts.
    async fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            if let Some(m) = self.seen.iter().find(|m| want(m)) {
                return Ok(m.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "no message {what} within {STATE_TIMEOUT:?}; seen: {:#?}",
                self.seen
            );
            let batch = match tokio::time::timeout(left, self.ops.recv_batch(64)).await {
                Ok(b) => b.map_err(|e| anyhow!("spy: {e}"))?,
                Err(_) => continue,
            };
            let tags: Vec<u64> = batch.iter().map(|d| d.tag).collect();
            for d in batch {
                self.seen
                    .push(serde_json::from_slice(&d.body).with_context(|| {
                        format!("eventd sent a body that is not JSON: {:?}", d.body)
                    })?);
            }
            self.ops
                .ack(&tags)
                .await
                .map_err(|e| anyhow!("spy ack: {e}"))?;
        }
    }

    /// Every dead letter of the run so far (a copy; the real dead-letter
    /// queue is read by `synnefo admin queue inspect`).
    async fn dead_letters(&self) -> Result<Vec<String>> {
        Ok(self
            .bus
            .dead_letters(1000, false)
            .await?
            .into_iter()
            .map(|d| {
                format!(
                    "{} ({}): {}",
                    d.routing_key,
                    d.reason.unwrap_or_default(),
                    String::from_utf8_lossy(&d.body)
                )
            })
            .collect())
    }

    async fn close(self) -> Result<()> {
        drop(self.ops);
        self.bus.delete_queues().await?;
        self.bus.close().await;
        Ok(())
    }
}

/// The DB's flavor of a server.
fn db_flavor(config: &Path, id: &str) -> Result<String> {
    let doc = server_show(config, id)?;
    json_id(&doc["server"]["flavor_id"]).with_context(|| format!("no flavor_id in {doc}"))
}

/// What every op-status message of Synnefo's eventd has, with its shape.
fn check_common(m: &Value, job: u64) -> Result<()> {
    ensure!(m["type"] == "ganeti-op-status", "{m}");
    ensure!(m["jobId"] == job, "job {job}: {m}");
    ensure!(m["cluster"] == "cluster1.lab.test", "cluster: {m}");
    let t = m["event_time"].as_array().map(Vec::len);
    ensure!(t == Some(2), "event_time: {m}");
    ensure!(
        m["logmsg"].is_string() || m["logmsg"].is_null(),
        "logmsg: {m}"
    );
    ensure!(m.get("result").is_some(), "result: {m}");
    ensure!(m["job_fields"].is_object(), "job_fields: {m}");
    Ok(())
}

/// The instance's state as Ganeti has it, in Synnefo's shapes: NICs with
/// name, network (by name), ip, mac, mode, link, uuid and the firewall of
/// the tag; disks with name, size (MiB), uuid; both boot parameters (null
/// on the fake hypervisor).
fn check_instance_state(
    m: &Value,
    nic_name: &str,
    ip: &str,
    disk_mib: u64,
    firewall: Option<&str>,
) -> Result<()> {
    let nics = m["instance_nics"]
        .as_array()
        .with_context(|| format!("no instance_nics: {m}"))?;
    ensure!(nics.len() == 1, "one NIC expected: {m}");
    let n = &nics[0];
    ensure!(n["name"] == nic_name, "NIC name: {n}");
    ensure!(n["network"] == LAB_NETWORK, "NIC network: {n}");
    ensure!(n["ip"] == ip, "NIC ip: {n}");
    ensure!(
        n["mac"].as_str().is_some_and(|s| s.len() == 17),
        "NIC mac: {n}"
    );
    ensure!(
        n["mode"] == "routed" && n["link"] == "100",
        "NIC mode/link: {n}"
    );
    ensure!(n["uuid"].is_string(), "NIC uuid: {n}");
    match firewall {
        Some(f) => ensure!(n["firewall"] == f, "NIC firewall: {n}"),
        None => ensure!(n.get("firewall").is_none(), "NIC firewall: {n}"),
    }
    let disks = m["instance_disks"]
        .as_array()
        .with_context(|| format!("no instance_disks: {m}"))?;
    ensure!(disks.len() == 1, "one disk expected: {m}");
    ensure!(disks[0]["size"] == disk_mib, "disk size: {m}");
    ensure!(
        disks[0]["uuid"].is_string() && disks[0].get("name").is_some(),
        "disk: {m}"
    );
    ensure!(
        m["instance_hvparams"] == json!({"boot_order": null, "cdrom_image_path": null}),
        "instance_hvparams (fake hypervisor: none): {m}"
    );
    Ok(())
}

pub(crate) async fn issue17(
    lab: &Lab,
    api_url: &str,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
) -> Result<()> {
    let api = login(api_url, fx).await?;
    let mut spy = Spy::start(&fx.prefix).await?;
    let result = steps(lab, &api, config, fx, procs, t, &mut spy).await;
    let closed = spy.close().await;
    result?;
    closed
}

async fn steps(
    lab: &Lab,
    api: &Api,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
    spy: &mut Spy,
) -> Result<()> {
    // ---- a server with a disk (1 vCPU, 128 MiB, 1 GiB file disk).
    let t0 = Instant::now();
    let s = api
        .create("lab-issue17", &fx.image, &fx.flavor_file)
        .await?;
    let inst = format!("{}{s}", fx.prefix);
    api.wait_status(&s, "ACTIVE", procs).await?;
    let create = wait_job(lab, &format!("INSTANCE_CREATE({inst})")).await?;
    t.record("issue 17: create with a file disk -> ACTIVE", t0.elapsed());
    let ip = lab
        .gnt(&[
            "gnt-instance",
            "list",
            "--no-headers",
            "-o",
            "nic.ips",
            &inst,
        ])?
        .trim()
        .to_string();
    ensure!(ip.starts_with(LAB_SUBNET_PREFIX), "{inst} has {ip:?}");
    let m = spy.wait_job_status(create, "success").await?;
    check_common(&m, create)?;
    ensure!(
        m["job_fields"]["beparams"]["vcpus"] == 1
            && m["job_fields"].get("hvparams").is_some()
            && m["job_fields"].get("osparams_secret").is_none(),
        "create job_fields: {m}"
    );
    ensure!(
        m["instance_nics"][0]["ip"] == ip.as_str(),
        "the create's message has the address Ganeti chose ({ip}): {m}"
    );

    // The NIC Synnefo would have named: Ganeti matches the firewall tag by name.
    let nic_name = format!("{}nic-fw", fx.prefix);
    lab.gnt(&[
        "gnt-instance",
        "modify",
        "--net",
        &format!("0:modify,name={nic_name}"),
        &inst,
    ])?;
    let rename = wait_job(lab, &format!("INSTANCE_SET_PARAMS({inst})")).await?;
    let m = spy.wait_job_status(rename, "success").await?;
    check_common(&m, rename)?;
    check_instance_state(&m, &nic_name, &ip, 1024, None)?;

    // ---- a tag set: Synnefo 0.20's eventd publishes nothing for it; the
    // pipeline goes on, and the tag shows in the NIC's firewall next time.
    let t0 = Instant::now();
    lab.gnt(&[
        "gnt-instance",
        "add-tags",
        &inst,
        &format!("synnefo:network:{nic_name}:protected"),
        "lab:issue17",
    ])?;
    let tags = wait_job(lab, "TAGS_SET").await?;
    t.record("issue 17: gnt-instance add-tags", t0.elapsed());

    // ---- a snapshot: no such opcode in Ganeti 3.0. Synnefo's message for
    // one (as its eventd on GRNET's Ganeti sends it) goes through the
    // broker and the dispatchers: recorded as the server's last job, never
    // dead-lettered. It borrows the tag job's id (a real id, about which
    // eventd published nothing), so job order stays Ganeti's.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let snapshot = json!({
        "type": "ganeti-op-status", "instance": inst, "operation": "OP_INSTANCE_SNAPSHOT",
        "status": "success", "jobId": tags, "logmsg": null, "result": null,
        "event_time": [now.as_secs(), now.subsec_micros()], "cluster": "cluster1.lab.test",
        "job_fields": {"disks": [[0, {"snapshot_name": "lab-snap",
            "snapshot_info": "{\"snapshot_id\": \"00000000-0000-4000-8000-000000000017\"}"}]]},
    });
    spy.bus
        .publish(MessageKind::OpStatus, serde_json::to_vec(&snapshot)?)
        .await
        .map_err(|e| anyhow!("publishing the snapshot message: {e}"))?;
    spy.wait_op(&inst, "OP_INSTANCE_SNAPSHOT", "success")
        .await?;
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let doc = server_show(config, &s)?;
        let st = &doc["server"]["state"];
        if st["job"]["job_id"] == tags {
            ensure!(
                st["operstate"] == "STARTED" && st["job"].to_string().contains("SNAPSHOT"),
                "{doc}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the snapshot message (job {tags}) is not recorded: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ---- a disk grow.
    let t0 = Instant::now();
    lab.gnt(&["gnt-instance", "grow-disk", &inst, "0", "1G"])?;
    let grow = wait_job(lab, &format!("INSTANCE_GROW_DISK({inst})")).await?;
    let m = spy.wait_job_status(grow, "success").await?;
    t.record(
        "issue 17: gnt-instance grow-disk -> eventd's message",
        t0.elapsed(),
    );
    check_common(&m, grow)?;
    ensure!(m["job_fields"] == json!({}), "grow-disk job_fields: {m}");
    check_instance_state(&m, &nic_name, &ip, 2048, Some("protected"))?;
    // The dispatcher records the job; the server stays as it was.
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let doc = server_show(config, &s)?;
        let st = &doc["server"]["state"];
        if st["job"]["job_id"] == grow {
            ensure!(
                st["operstate"] == "STARTED" && st["job"].to_string().contains("GROW_DISK"),
                "{doc}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the grow-disk job {grow} is not recorded: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        db_flavor(config, &s)? == fx.flavor_file,
        "a disk grow changed the flavor"
    );

    // ---- gnt-instance modify -B: the flavor follows, no reconciliation.
    let t0 = Instant::now();
    lab.gnt(&["gnt-instance", "modify", "-B", "vcpus=2,maxmem=256", &inst])?;
    let modify = {
        let js = jobs(lab, &format!("INSTANCE_SET_PARAMS({inst})"))?;
        let (id, status, log) = js.last().cloned().context("no SET_PARAMS job")?;
        ensure!(status == "success", "modify -B job {id}: {status} {log}");
        ensure!(id > rename, "modify -B job {id} not after {rename}");
        id
    };
    let deadline = Instant::now() + STATE_TIMEOUT;
    while db_flavor(config, &s)? != fx.flavor_file_2 {
        procs.check_alive()?;
        ensure!(
            Instant::now() < deadline,
            "the server's flavor did not follow modify -B: {}",
            server_show(config, &s)?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.record(
        "issue 17: gnt-instance modify -B -> new flavor in the DB",
        t0.elapsed(),
    );
    let m = spy.wait_job_status(modify, "success").await?;
    check_common(&m, modify)?;
    ensure!(
        m["job_fields"]["beparams"] == json!({"vcpus": 2, "maxmem": 256}),
        "modify -B job_fields: {m}"
    );
    check_instance_state(&m, &nic_name, &ip, 2048, Some("protected"))?;
    let body = api.server(&s).await?.context("the server is gone")?;
    ensure!(
        json_id(&body["flavor"]["id"]).as_deref() == Some(fx.flavor_file_2.as_str()),
        "the API shows flavor {} after modify -B",
        body["flavor"]
    );

    // ---- nothing dead-lettered in the whole run (both queues: ours, the copy).
    let dead = spy.dead_letters().await?;
    ensure!(dead.is_empty(), "dead letters: {dead:#?}");
    let out = synnefo(config, &["admin", "queue", "inspect", "--json"])?;
    let v: Value =
        serde_json::from_str(&out).with_context(|| format!("queue inspect printed {out:?}"))?;
    let n = v
        .as_array()
        .map(Vec::len)
        .or_else(|| v["dead_letters"].as_array().map(Vec::len));
    ensure!(n == Some(0), "synnefo admin queue inspect: {v}");

    // ---- done: the server goes.
    let r = api.call("DELETE", &format!("/servers/{s}"), None).await?;
    if r.status != 204 {
        bail!("DELETE /servers/{s}: HTTP {}: {}", r.status, r.text());
    }
    api.wait_status(&s, "DELETED", procs).await?;
    wait_job(lab, &format!("INSTANCE_REMOVE({inst})")).await?;
    wait_operstate(config, &s, "DESTROYED").await?;
    Ok(())
}
