//! The scenario on the real cluster: a user's servers through their whole
//! life, drift repaired by reconciliation, and what Ganeti says about it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use synnefo_test_support::api::ApiClient;

use crate::*;

// ------------------------------------------------------------------ the scenario

/// Issues a Keystone token (password method, project scope) and finds the
/// compute endpoint in the catalog.
pub(crate) async fn login(api_url: &str, fx: &Fixture) -> Result<Api> {
    login_service(api_url, fx, "compute", "").await
}

/// Issues a Keystone token and finds the public endpoint of service `kind`
/// (`compute`, `network`) in the catalog; `suffix` is appended to it (the
/// network endpoint is unversioned: `/v2.0`).
pub(crate) async fn login_service(
    api_url: &str,
    fx: &Fixture,
    kind: &str,
    suffix: &str,
) -> Result<Api> {
    let mut identity = ApiClient::new(api_url, Duration::from_secs(60));
    let r = identity
        .login(&fx.user, &fx.password, &fx.project)
        .await
        .context("POST /identity/v3/auth/tokens")?;
    ensure!(
        r.status == 201,
        "POST /identity/v3/auth/tokens: HTTP {}: {}",
        r.status,
        r.text()
    );
    let token = identity.token().context("no X-Subject-Token")?.to_string();
    let v = r.json().map_err(|e| anyhow!(e))?;
    let endpoint = v["token"]["catalog"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|svc| svc["type"] == kind)
        .and_then(|svc| {
            svc["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["interface"] == "public")
        })
        .and_then(|e| e["url"].as_str())
        .with_context(|| format!("no public {kind} endpoint in the catalog: {v}"))?
        .trim_end_matches('/')
        .to_string();
    let mut client = ApiClient::new(&format!("{endpoint}{suffix}"), Duration::from_secs(60));
    client.set_token(&token);
    Ok(Api { client })
}

/// Ganeti's jobs with this summary (e.g. `INSTANCE_STARTUP(lab1-3)`): (id, status, oplog).
pub(crate) fn jobs(lab: &Lab, summary: &str) -> Result<Vec<(u64, String, String)>> {
    let out = lab.gnt(&[
        "gnt-job",
        "list",
        "--no-headers",
        "--separator=|",
        "-o",
        "id,status,summary,oplog",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '|');
            let id = f.next()?.trim().parse().ok()?;
            let status = f.next()?.trim().to_string();
            let sum = f.next()?.trim();
            let log = f.next().unwrap_or("").to_string();
            (sum == summary).then_some((id, status, log))
        })
        .collect())
}

/// Waits for the last Ganeti job with this summary to end; it must have
/// succeeded with no hook failure in its log. Returns its id.
pub(crate) async fn wait_job(lab: &Lab, summary: &str) -> Result<u64> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let js = jobs(lab, summary)?;
        if let Some((id, status, log)) = js.last() {
            match status.as_str() {
                "success" => {
                    ensure!(
                        !(log.contains("WARNING") && log.contains("failed")),
                        "a hook failed in Ganeti job {id} {summary}: {log}"
                    );
                    return Ok(*id);
                }
                "error" | "canceled" => bail!("Ganeti job {id} {summary} ended {status}: {log}"),
                _ => {}
            }
        }
        ensure!(
            Instant::now() < deadline,
            "Ganeti job {summary} not over after {STATE_TIMEOUT:?}: {js:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The DB's view of a server (`synnefo server show --json`), deleted ones included.
pub(crate) fn server_show(config: &Path, id: &str) -> Result<Value> {
    let out = synnefo(config, &["server", "show", id, "--json"])?;
    serde_json::from_str(&out)
        .with_context(|| format!("synnefo server show --json printed {out:?}"))
}

/// Waits until the DB records `operstate` for a server.
pub(crate) async fn wait_operstate(config: &Path, id: &str, operstate: &str) -> Result<()> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let doc = server_show(config, id)?;
        if doc["server"]["state"]["operstate"] == operstate {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "server {id} not {operstate} in the DB: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `synnefo reconcile --all --json`: (exit code, report).
pub(crate) fn reconcile_run(config: &Path, extra: &[&str]) -> Result<(Option<i32>, Value)> {
    let mut args = vec!["reconcile", "--all", "--json", "--no-progress"];
    args.extend_from_slice(extra);
    let out = synnefo_command(config)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running synnefo reconcile")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "synnefo {} ({}) printed no JSON report:\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), report))
}

/// [`reconcile_run`], whose exit code must be `code` (0 clean or all
/// fixed, 1 discrepancies remain).
pub(crate) fn reconcile(config: &Path, extra: &[&str], code: i32) -> Result<Value> {
    let (got, report) = reconcile_run(config, extra)?;
    ensure!(
        got == Some(code),
        "synnefo reconcile {} exited {got:?}, expected {code}; report: {report:#}",
        extra.join(" ")
    );
    Ok(report)
}

/// (kind, vm) of each discrepancy of a report, sorted.
pub(crate) fn discrepancies(report: &Value) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = report["discrepancies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("?").to_string(),
                json_id(&d["vm"]).unwrap_or_default(),
            )
        })
        .collect();
    d.sort();
    d
}

pub(crate) async fn scenario(
    lab: &Lab,
    api_url: &str,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
) -> Result<()> {
    let name_of = |id: &str| format!("{}{id}", fx.prefix);

    let t0 = Instant::now();
    let api = login(api_url, fx).await?;
    t.record("keystone token", t0.elapsed());

    // ---- create -> ACTIVE, with the address Ganeti picked from the pool.
    let t0 = Instant::now();
    let (s1, admin_pass) = api
        .create_with_password("lab-one", &fx.image, &fx.flavor)
        .await?;
    t.record("POST /servers (202; RAPI create submitted)", t0.elapsed());
    let inst1 = name_of(&s1);
    let server = api.wait_status(&s1, "ACTIVE", procs).await?;
    t.record(
        "create -> ACTIVE (job, eventd, RabbitMQ, dispatcher)",
        t0.elapsed(),
    );
    wait_job(lab, &format!("INSTANCE_CREATE({inst1})")).await?;
    ensure!(
        lab.instance_status(&inst1)? == "running",
        "Ganeti does not run {inst1}"
    );
    let ganeti_ips = lab.gnt(&[
        "gnt-instance",
        "list",
        "--no-headers",
        "-o",
        "nic.ips",
        &inst1,
    ])?;
    let ganeti_ip = ganeti_ips.trim().to_string();
    ensure!(
        ganeti_ip.starts_with(LAB_SUBNET_PREFIX),
        "Ganeti gave {inst1} the address {ganeti_ip:?}"
    );
    let ips = wait_ips(&api, config, &s1, 1, procs)
        .await
        .map_err(|e| e.context(format!("server body was {server}")))?;
    ensure!(
        ips == vec![ganeti_ip.clone()],
        "the API shows {ips:?}, Ganeti {ganeti_ip}"
    );
    t.record("create -> ACTIVE with its IP", t0.elapsed());
    // The admin password reached Ganeti as osparams_secret: no file of
    // Ganeti's (job queue, archive, config) holds it.
    let leaks = files_containing(
        &PathBuf::from(env_var("SYNNEFO_TEST_GANETI_DATA_DIR")?),
        &admin_pass,
    );
    ensure!(
        leaks.is_empty(),
        "the admin password is stored by Ganeti in {leaks:?}"
    );

    // ---- stop -> SHUTOFF.
    let t0 = Instant::now();
    api.action(&s1, json!({"os-stop": null})).await?;
    api.wait_status(&s1, "SHUTOFF", procs).await?;
    t.record("os-stop -> SHUTOFF", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_SHUTDOWN({inst1})")).await?;
    ensure!(
        lab.instance_status(&inst1)? == "ADMIN_down",
        "{inst1} is not ADMIN_down in Ganeti"
    );

    // ---- start -> ACTIVE (Ganeti runs instance-start-post: the hook).
    let t0 = Instant::now();
    api.action(&s1, json!({"os-start": null})).await?;
    api.wait_status(&s1, "ACTIVE", procs).await?;
    t.record("os-start -> ACTIVE", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_STARTUP({inst1})")).await?;
    ensure!(
        lab.instance_status(&inst1)? == "running",
        "{inst1} is not running in Ganeti"
    );

    // ---- reboot -> ACTIVE (REBOOT while the job runs).
    let t0 = Instant::now();
    api.action(&s1, json!({"reboot": {"type": "SOFT"}})).await?;
    api.wait_status(&s1, "ACTIVE", procs).await?;
    t.record("reboot SOFT -> ACTIVE", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_REBOOT({inst1})")).await?;

    // ---- delete -> 404.
    let t0 = Instant::now();
    let r = api.call("DELETE", &format!("/servers/{s1}"), None).await?;
    ensure!(
        r.status == 204,
        "DELETE /servers/{s1}: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&s1, "DELETED", procs).await?;
    t.record("delete -> 404 (at once)", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_REMOVE({inst1})")).await?;
    wait_operstate(config, &s1, "DESTROYED").await?;
    t.record(
        "delete -> remove job done, DESTROYED in the DB",
        t0.elapsed(),
    );
    ensure!(
        lab.instances(&inst1)?.iter().all(|n| n != &inst1),
        "{inst1} is still in Ganeti"
    );

    // ---- a create Ganeti rejects -> ERROR with Ganeti's message as the fault.
    let t0 = Instant::now();
    let s2 = api
        .create("lab-too-big", &fx.image, &fx.flavor_too_big)
        .await?;
    let server = api.wait_status(&s2, "ERROR", procs).await?;
    t.record("rejected create -> ERROR", t0.elapsed());
    let fault = server["fault"]["message"].as_str().unwrap_or_default();
    ensure!(
        // Which check refuses first depends on the allocator (hail) or the
        // instance policy; either way the fault is Ganeti's own message.
        ["violates policy", "iallocator", "OpPrereqError"]
            .iter()
            .any(|m| fault.contains(m))
            && !fault.starts_with("Ganeti job"),
        "the fault does not carry Ganeti's message (the failed job's result): {server}"
    );
    let js = jobs(lab, &format!("INSTANCE_CREATE({})", name_of(&s2)))?;
    ensure!(
        js.last().is_some_and(|j| j.1 == "error"),
        "Ganeti's create job of {s2} did not fail: {js:?}"
    );
    let r = api.call("DELETE", &format!("/servers/{s2}"), None).await?;
    ensure!(
        r.status == 204,
        "DELETE /servers/{s2}: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&s2, "DELETED", procs).await?;

    // ---- reconciliation against the real cluster.
    let t0 = Instant::now();
    let a = api.create("lab-stale", &fx.image, &fx.flavor).await?;
    let b = api.create("lab-unsynced", &fx.image, &fx.flavor).await?;
    api.wait_status(&a, "ACTIVE", procs).await?;
    api.wait_status(&b, "ACTIVE", procs).await?;
    wait_ips(&api, config, &b, 1, procs).await?;
    t.record("2 creates in parallel -> ACTIVE", t0.elapsed());
    let (inst_a, inst_b) = (name_of(&a), name_of(&b));

    // Nothing may tell the DB what happens now: eventd stops (a Ganeti
    // master without its watcher, or a lost broker). The hook still runs.
    procs.stop("eventd")?;

    // The hook alone: a NIC added by hand reaches the DB only through the
    // instance-modify-post hook (eventd is down).
    let t0 = Instant::now();
    lab.gnt(&[
        "gnt-instance",
        "modify",
        "--net",
        &format!("add:network={LAB_NETWORK},ip=pool"),
        &inst_b,
    ])?;
    let ips = wait_ips(&api, config, &b, 2, procs)
        .await
        .context("the hook's ganeti-net-status never arrived")?;
    let ganeti_ips = lab.gnt(&[
        "gnt-instance",
        "list",
        "--no-headers",
        "-o",
        "nic.ips",
        &inst_b,
    ])?;
    let mut want: Vec<String> = ganeti_ips.trim().split(',').map(String::from).collect();
    want.sort();
    ensure!(
        ips == want,
        "after the NIC add the API shows {ips:?}, Ganeti {want:?}"
    );
    t.record(
        "gnt-instance modify --net add -> hook -> 2 IPs in the API",
        t0.elapsed(),
    );
    wait_job(lab, &format!("INSTANCE_SET_PARAMS({inst_b})")).await?;

    // Drift behind our back.
    let t0 = Instant::now();
    lab.gnt(&["gnt-instance", "remove", "-f", &inst_a])?;
    lab.gnt(&["gnt-instance", "shutdown", &inst_b])?;
    let orphan_id = "999999";
    let orphan = name_of(orphan_id);
    lab.gnt(&[
        "gnt-instance",
        "add",
        "-t",
        "diskless",
        "-o",
        "noop+default",
        "-n",
        &lab.node,
        "-H",
        "fake",
        "-B",
        "memory=128,vcpus=1",
        "--net",
        &format!("0:network={LAB_NETWORK},ip=pool"),
        "--no-name-check",
        "--no-ip-check",
        &orphan,
    ])?;
    t.record("drift: gnt-instance remove, shutdown, add", t0.elapsed());

    let t0 = Instant::now();
    let report = reconcile(config, &[], 1)?;
    t.record("synnefo reconcile --all (report)", t0.elapsed());
    let mut want = vec![
        ("orphan".to_string(), orphan_id.to_string()),
        ("stale".to_string(), a.clone()),
        ("unsynced_operstate".to_string(), b.clone()),
    ];
    want.sort();
    ensure!(
        discrepancies(&report) == want,
        "reconcile reported {:?}, expected exactly {want:?}; report: {report:#}",
        discrepancies(&report)
    );

    let t0 = Instant::now();
    let report = reconcile(
        config,
        &["--fix-stale", "--fix-orphans", "--fix-unsynced"],
        0,
    )?;
    t.record("synnefo reconcile --all --fix-* (repair)", t0.elapsed());
    let fixes = report["fixes"].as_array().cloned().unwrap_or_default();
    ensure!(
        fixes.len() == 3 && fixes.iter().all(|f| f["result"] == "done"),
        "not every fix was done: {report:#}"
    );
    ensure!(
        api.server(&a).await?.is_none(),
        "server {a} (removed behind our back) still exists"
    );
    let sb = api
        .server(&b)
        .await?
        .with_context(|| format!("server {b} vanished"))?;
    ensure!(
        sb["status"] == "SHUTOFF",
        "server {b} is not SHUTOFF after the fix: {sb}"
    );

    // The orphan's removal is a Ganeti job: wait for it, then a clean report.
    let t0 = Instant::now();
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (_, report) = reconcile_run(config, &[])?;
        let left = discrepancies(&report);
        if left.is_empty() && lab.instances(&orphan)?.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still not clean after the fixes: {left:?}; {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    t.record("orphan removed, reconcile report clean", t0.elapsed());

    // eventd comes back and catches up on the jobs it missed; the last
    // server goes through the API, and the final report is still clean.
    let t0 = Instant::now();
    let mut eventd = lab.command(SYNNEFO);
    scrub_env(&mut eventd);
    eventd
        .env("SYNNEFO_CONFIG", "/etc/synnefo/synnefo.toml")
        .arg("eventd");
    procs.spawn("eventd-2", eventd, &procs_log_dir(procs)?)?;
    let r = api.call("DELETE", &format!("/servers/{b}"), None).await?;
    ensure!(
        r.status == 204,
        "DELETE /servers/{b}: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&b, "DELETED", procs).await?;
    wait_job(lab, &format!("INSTANCE_REMOVE({inst_b})")).await?;
    wait_operstate(config, &b, "DESTROYED").await?;
    t.record(
        "eventd restarted (catch-up), delete -> DESTROYED",
        t0.elapsed(),
    );
    let left = lab.instances(&fx.prefix)?;
    ensure!(left.is_empty(), "instances left in Ganeti: {left:?}");
    let report = reconcile(config, &[], 0)?;
    ensure!(
        discrepancies(&report).is_empty(),
        "final report not clean: {report:#}"
    );
    procs.check_alive()?;
    Ok(())
}

/// Where the processes' logs go.
pub(crate) fn procs_log_dir(procs: &Procs) -> Result<PathBuf> {
    procs
        .logs
        .first()
        .and_then(|(_, p)| p.parent())
        .map(Path::to_path_buf)
        .context("no log directory")
}

/// Waits until the API shows `n` addresses for a server, all from the lab
/// network; returns them sorted.
pub(crate) async fn wait_ips(
    api: &Api,
    config: &Path,
    id: &str,
    n: usize,
    procs: &mut Procs,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let server = api
            .server(id)
            .await?
            .with_context(|| format!("server {id} vanished"))?;
        let mut ips = server_ips(&server);
        if ips.len() == n {
            ips.sort();
            ensure!(
                ips.iter().all(|ip| ip.starts_with(LAB_SUBNET_PREFIX)),
                "server {id} has addresses outside {LAB_SUBNET}: {ips:?}"
            );
            return Ok(ips);
        }
        procs.check_alive()?;
        if Instant::now() > deadline {
            let db = server_show(config, id)
                .map_or_else(|e| format!("{e:#}"), |d| d["nics"].to_string());
            bail!(
                "server {id} does not show {n} address(es) after {STATE_TIMEOUT:?}; NICs in the DB: {db}; server: {server}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
