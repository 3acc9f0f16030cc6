//! Issue 16 on the real Ganeti: resize through the API changes what
//! `gnt-instance list` shows (configured `be/vcpus`, `be/maxmem`) and our
//! flavor; resizing a running server (Nova's) reboots it onto the new
//! parameters, which the hypervisor then runs with (`oper_vcpus`,
//! `oper_ram`); a revert of a stopped one goes back.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use serde_json::json;

use crate::*;

/// `gnt-instance list` fields of one instance (memory in MiB, without a
/// unit), split on whitespace.
fn fields(lab: &Lab, inst: &str, fields: &str) -> Result<Vec<String>> {
    Ok(lab
        .gnt(&[
            "gnt-instance",
            "list",
            "--no-headers",
            "--units=m",
            "-o",
            fields,
            inst,
        ])?
        .split_whitespace()
        .map(|f| f.trim_end_matches(['M', 'm']).to_string())
        .collect())
}

/// The DB's flavor of a server (operator's `synnefo server show`).
fn db_flavor(config: &Path, id: &str) -> Result<String> {
    let doc = server_show(config, id)?;
    json_id(&doc["server"]["flavor_id"]).with_context(|| format!("no flavor_id in {doc}"))
}

pub(crate) async fn lifecycle(
    lab: &Lab,
    api_url: &str,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
) -> Result<()> {
    let api = login(api_url, fx).await?;
    // ---- a running server on file-1 (1 vCPU, 128 MiB, a 1 GiB file disk).
    let t0 = Instant::now();
    let s = api.create("lab-resize", &fx.image, &fx.flavor_file).await?;
    let inst = format!("{}{s}", fx.prefix);
    api.wait_status(&s, "ACTIVE", procs).await?;
    let be = fields(lab, &inst, "be/vcpus,be/maxmem,oper_vcpus,oper_ram")?;
    ensure!(be == ["1", "128", "1", "128"], "{inst} before: {be:?}");
    t.record("issue 16: create on file-1 -> ACTIVE", t0.elapsed());

    // ---- Nova's resize of the running server: set-params, then a hard
    // reboot; VERIFY_RESIZE once both ran, the hypervisor on the new size.
    let t0 = Instant::now();
    api.action(&s, json!({"resize": {"flavorRef": fx.flavor_file_2}}))
        .await?;
    let shown = api.wait_status(&s, "VERIFY_RESIZE", procs).await?;
    let params = wait_job(lab, &format!("INSTANCE_SET_PARAMS({inst})")).await?;
    let reboot = wait_job(lab, &format!("INSTANCE_REBOOT({inst})")).await?;
    ensure!(
        reboot > params,
        "reboot job {reboot} not after set-params {params}"
    );
    let be = fields(lab, &inst, "be/vcpus,be/maxmem,oper_vcpus,oper_ram,status")?;
    ensure!(
        be == ["2", "256", "2", "256", "running"],
        "{inst} after a running resize: {be:?}"
    );
    ensure!(
        json_id(&shown["flavor"]["id"]).as_deref() == Some(fx.flavor_file_2.as_str()),
        "the API shows flavor {} in VERIFY_RESIZE",
        shown["flavor"]
    );
    let r = api
        .call(
            "POST",
            &format!("/servers/{s}/action"),
            Some(&json!({"confirmResize": null})),
        )
        .await?;
    ensure!(
        r.status == 204,
        "confirmResize: HTTP {}: {}",
        r.status,
        r.text()
    );
    api.wait_status(&s, "ACTIVE", procs).await?;
    ensure!(
        db_flavor(config, &s)? == fx.flavor_file_2,
        "flavor after confirm"
    );
    t.record(
        "issue 16: resize of a running server -> VERIFY_RESIZE, confirm",
        t0.elapsed(),
    );

    // ---- a stopped server: resize back to file-1, then revert to file-2.
    let t0 = Instant::now();
    api.action(&s, json!({"os-stop": null})).await?;
    api.wait_status(&s, "SHUTOFF", procs).await?;
    api.action(&s, json!({"resize": {"flavorRef": fx.flavor_file}}))
        .await?;
    api.wait_status(&s, "VERIFY_RESIZE", procs).await?;
    let be = fields(lab, &inst, "be/vcpus,be/maxmem,status")?;
    ensure!(
        be == ["1", "128", "ADMIN_down"],
        "{inst} resized while stopped: {be:?}"
    );
    ensure!(
        db_flavor(config, &s)? == fx.flavor_file,
        "flavor in VERIFY_RESIZE"
    );
    api.action(&s, json!({"revertResize": null})).await?;
    api.wait_status(&s, "SHUTOFF", procs).await?;
    let be = fields(lab, &inst, "be/vcpus,be/maxmem,status")?;
    ensure!(be == ["2", "256", "ADMIN_down"], "{inst} reverted: {be:?}");
    ensure!(
        db_flavor(config, &s)? == fx.flavor_file_2,
        "flavor after revert"
    );
    t.record("issue 16: resize of a stopped server, revert", t0.elapsed());

    // ---- done: the server goes.
    let r = api.call("DELETE", &format!("/servers/{s}"), None).await?;
    if r.status != 204 {
        bail!("DELETE /servers/{s}: HTTP {}: {}", r.status, r.text());
    }
    api.wait_status(&s, "DELETED", procs).await?;
    wait_job(lab, &format!("INSTANCE_REMOVE({inst})")).await?;
    Ok(())
}
