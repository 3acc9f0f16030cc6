//! Networks through our API on the real cluster (issue 15): a Neutron
//! network and subnet, a server on it (Nova `networks`), a NIC attached and
//! detached while it runs (`os-interface`), and a Ganeti network removed
//! behind our back, reported and made again by `synnefo reconcile
//! --networks`; what Ganeti itself says is checked at every step.
//!
//! The network exists on the cluster only once the server needs it
//! (`snf-net-<id>`, made by the create); its NICs are `snf-nic-<port id>`
//! with the port's address and MAC. The lab has no bridge: the test's
//! settings wire the private flavor `routed` on link `100`
//! ([`crate::host_settings`]).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use crate::*;

/// The subnet of the test's network: Ganeti bookkeeping only (the fake
/// hypervisor configures nothing).
const NET_CIDR: &str = "10.78.0.0/24";
/// Its address prefix.
const NET_PREFIX: &str = "10.78.0.";

/// The steps; whatever happens, the server's instance and the Ganeti
/// network are gone from the lab afterwards (by `gnt-*` when a step fails;
/// the database is dropped by the caller).
pub(crate) async fn api_networks(
    lab: &Lab,
    api_url: &str,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
) -> Result<()> {
    let mut made: Option<String> = None;
    let result = steps(lab, api_url, config, fx, procs, t, &mut made).await;
    if result.is_err()
        && let Some(id) = made
    {
        let name = ganeti_name(&id);
        if let Err(e) = remove_instances(&lab.ns, &fx.prefix) {
            eprintln!("[{TEST}] cleanup: instances: {e:#}");
        }
        if ganeti_networks(lab).is_ok_and(|l| l.contains(&name)) {
            let _ = lab.gnt(&["gnt-network", "disconnect", &name]);
            if let Err(e) = lab.gnt(&["gnt-network", "remove", &name]) {
                eprintln!("[{TEST}] cleanup: {name}: {e:#}");
            }
        }
    }
    result
}

fn ganeti_name(network_id: &str) -> String {
    format!("snf-net-{network_id}")
}

/// Names of the lab's Ganeti networks.
fn ganeti_networks(lab: &Lab) -> Result<Vec<String>> {
    Ok(lab
        .gnt(&["gnt-network", "list", "--no-headers", "-o", "name"])?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The Ganeti network exists, on `cidr`, connected to the node group
/// `default` in mode `routed` on link `100`.
fn ensure_connected(lab: &Lab, name: &str) -> Result<()> {
    let list = ganeti_networks(lab)?;
    ensure!(
        list.iter().any(|n| n == name),
        "{name} is not in gnt-network list: {list:?}"
    );
    let info = lab.gnt(&["gnt-network", "info", name])?;
    ensure!(
        info.contains(NET_CIDR) && info.contains("default") && info.contains("routed"),
        "gnt-network info {name} does not show {NET_CIDR} connected routed to default:\n{info}"
    );
    Ok(())
}

/// A NIC as Ganeti has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GanetiNic {
    ip: String,
    mac: String,
    name: String,
}

/// The NICs of one instance, by `gnt-instance list -o nic.count`, then
/// `nic.ip/N,nic.mac/N,nic.name/N` (the list fields `nic.ips`, `nic.macs`
/// print comma-joined, but `nic.names` prints a Python list).
fn ganeti_nics(lab: &Lab, inst: &str) -> Result<Vec<GanetiNic>> {
    let list = |fields: &str| {
        lab.gnt(&[
            "gnt-instance",
            "list",
            "--no-headers",
            "--separator=|",
            "-o",
            fields,
            inst,
        ])
        .map(|out| out.trim().to_string())
    };
    let count = list("nic.count")?;
    let count: usize = count
        .parse()
        .with_context(|| format!("nic.count of {inst}: {count:?}"))?;
    let mut nics = Vec::new();
    for i in 0..count {
        let line = list(&format!("nic.ip/{i},nic.mac/{i},nic.name/{i}"))?;
        let cols: Vec<&str> = line.split('|').collect();
        let [ip, mac, name] = cols[..] else {
            bail!("cannot read NIC {i} of {inst} from {line:?}");
        };
        nics.push(GanetiNic {
            ip: ip.to_string(),
            mac: mac.to_string(),
            name: name.to_string(),
        });
    }
    Ok(nics)
}

/// The NIC a port should be in Ganeti: its IPv4 address, its MAC, `snf-nic-<id>`.
fn nic_of_port(port: &Value) -> Result<GanetiNic> {
    let ip = port["fixed_ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["ip_address"].as_str())
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .with_context(|| format!("port without an IPv4 address: {port}"))?;
    ensure!(
        ip.starts_with(NET_PREFIX),
        "port address {ip} is not from {NET_CIDR}: {port}"
    );
    let id = port["id"]
        .as_str()
        .or_else(|| port["port_id"].as_str())
        .with_context(|| format!("port without an id: {port}"))?;
    let mac = port["mac_address"]
        .as_str()
        .or_else(|| port["mac_addr"].as_str())
        .with_context(|| format!("port without a MAC: {port}"))?;
    Ok(GanetiNic {
        ip: ip.to_string(),
        mac: mac.to_string(),
        name: format!("snf-nic-{id}"),
    })
}

/// `synnefo reconcile --networks --json EXTRA...`, whose exit code must be `code`.
fn reconcile_networks(config: &Path, extra: &[&str], code: i32) -> Result<Value> {
    let mut args = vec!["reconcile", "--networks", "--json"];
    args.extend_from_slice(extra);
    let out = synnefo_command(config)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running synnefo reconcile --networks")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "synnefo {} ({}) printed no JSON report:\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    ensure!(
        out.status.code() == Some(code),
        "synnefo {} exited {:?}, expected {code}; report: {report:#}; stderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(report)
}

async fn steps(
    lab: &Lab,
    api_url: &str,
    config: &Path,
    fx: &Fixture,
    procs: &mut Procs,
    t: &mut Timings,
    made: &mut Option<String>,
) -> Result<()> {
    let nova = login(api_url, fx).await?;
    let neutron = login_service(api_url, fx, "network", "/v2.0").await?;

    // ---- a network and a subnet: nothing on Ganeti yet.
    let t0 = Instant::now();
    let net = neutron.create_network("lab-net").await?;
    *made = Some(net.clone());
    let subnet = neutron.create_subnet(&net, NET_CIDR).await?;
    ensure!(
        subnet["cidr"] == NET_CIDR && subnet["gateway_ip"] == format!("{NET_PREFIX}1"),
        "subnet: {subnet}"
    );
    let gname = ganeti_name(&net);
    ensure!(
        !ganeti_networks(lab)?.contains(&gname),
        "{gname} is on Ganeti before any server needs it"
    );
    t.record("Neutron: POST /networks + /subnets", t0.elapsed());

    // ---- a server on it: the network is made on the cluster, the NIC
    // carries the port's address and MAC.
    let t0 = Instant::now();
    let server = nova
        .create_on_networks(
            "lab-net-server",
            &fx.image,
            &fx.flavor,
            json!([{"uuid": net}]),
        )
        .await?;
    t.record(
        "POST /servers on it (202; snf-net made + connected)",
        t0.elapsed(),
    );
    let inst = format!("{}{server}", fx.prefix);
    let body = nova.wait_status(&server, "ACTIVE", procs).await?;
    t.record("create on the network -> ACTIVE", t0.elapsed());
    wait_job(lab, &format!("INSTANCE_CREATE({inst})")).await?;
    ensure_connected(lab, &gname)?;
    let ports = neutron.ports(&format!("device_id={server}")).await?;
    ensure!(ports.len() == 1, "ports of {server}: {ports:?}");
    let first = nic_of_port(&ports[0])?;
    let first_id = ports[0]["id"].as_str().unwrap_or_default().to_string();
    ensure!(
        ports[0]["network_id"] == net.as_str(),
        "port on another network: {}",
        ports[0]
    );
    let nics = ganeti_nics(lab, &inst)?;
    ensure!(
        nics == [first.clone()],
        "Ganeti's NICs of {inst}: {nics:?}; the port: {first:?}"
    );
    let info = lab.gnt(&["gnt-instance", "info", &inst])?;
    ensure!(
        info.contains(&first.ip) && info.contains(&gname) && info.contains(&first.mac),
        "gnt-instance info {inst} does not show {first:?} on {gname}:\n{info}"
    );
    let ips = server_ips(&body);
    ensure!(
        ips == [first.ip.clone()],
        "the API shows {ips:?} for {server}, the port has {}",
        first.ip
    );
    t.record(
        "... + wait_job + gnt-* checks (snf-net, NIC = port)",
        t0.elapsed(),
    );
    // Ganeti's report (eventd -> dispatcher) marks the port ACTIVE by its MAC.
    let t0 = Instant::now();
    wait_port_status(&neutron, &first_id, "ACTIVE", procs).await?;
    t.record("port ACTIVE (Ganeti's report, by MAC)", t0.elapsed());

    // ---- a second port attached while the server runs.
    let t0 = Instant::now();
    let v = nova
        .expect(
            "POST",
            &format!("/servers/{server}/os-interface"),
            Some(&json!({"interfaceAttachment": {"net_id": net}})),
            200,
        )
        .await?;
    let att = &v["interfaceAttachment"];
    let second = nic_of_port(att)?;
    let second_id = att["port_id"].as_str().unwrap_or_default().to_string();
    ensure!(second.ip != first.ip, "the same address twice: {att}");
    t.record("os-interface attach (job awaited)", t0.elapsed());
    let nics = ganeti_nics(lab, &inst)?;
    ensure!(
        nics.len() == 2 && nics.contains(&first) && nics.contains(&second),
        "Ganeti's NICs of {inst} after the attach: {nics:?}; want {first:?} and {second:?}"
    );
    let listed = nova
        .expect("GET", &format!("/servers/{server}/os-interface"), None, 200)
        .await?;
    ensure!(
        listed["interfaceAttachments"]
            .as_array()
            .is_some_and(|a| a.len() == 2),
        "os-interface list: {listed}"
    );
    wait_job(lab, &format!("INSTANCE_SET_PARAMS({inst})")).await?;

    // ---- and detached again.
    let t0 = Instant::now();
    nova.expect(
        "DELETE",
        &format!("/servers/{server}/os-interface/{second_id}"),
        None,
        202,
    )
    .await?;
    t.record("os-interface detach (job awaited)", t0.elapsed());
    let nics = ganeti_nics(lab, &inst)?;
    ensure!(
        nics == [first.clone()],
        "Ganeti's NICs of {inst} after the detach: {nics:?}; want only {first:?}"
    );
    let ports = neutron.ports(&format!("device_id={server}")).await?;
    ensure!(
        ports.len() == 1 && ports[0]["id"] == first_id.as_str(),
        "ports of {server} after the detach: {ports:?}"
    );

    // The servers' reconciliation agrees with a server whose NICs are
    // ports (once the detach's report is in).
    let t0 = Instant::now();
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (code, report) = reconcile_run(config, &[])?;
        if code == Some(0) && discrepancies(&report).is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "synnefo reconcile --all not clean with a server on a network (exit {code:?}): {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    t.record("synnefo reconcile --all clean (server on it)", t0.elapsed());

    // ---- the server goes; its port with it.
    let t0 = Instant::now();
    nova.expect("DELETE", &format!("/servers/{server}"), None, 204)
        .await?;
    nova.wait_status(&server, "DELETED", procs).await?;
    wait_job(lab, &format!("INSTANCE_REMOVE({inst})")).await?;
    wait_operstate(config, &server, "DESTROYED").await?;
    let left = neutron.ports(&format!("network_id={net}")).await?;
    ensure!(left.is_empty(), "ports left on {net}: {left:?}");
    t.record("delete -> DESTROYED, port released", t0.elapsed());

    // ---- the network removed behind our back.
    let t0 = Instant::now();
    lab.gnt(&["gnt-network", "disconnect", &gname])?;
    lab.gnt(&["gnt-network", "remove", &gname])?;
    ensure!(
        !ganeti_networks(lab)?.contains(&gname),
        "{gname} still listed after gnt-network remove"
    );
    t.record("drift: gnt-network disconnect + remove", t0.elapsed());

    let t0 = Instant::now();
    let report = reconcile_networks(config, &[], 1)?;
    t.record("synnefo reconcile --networks (report)", t0.elapsed());
    let found = report["discrepancies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        found.len() == 1 && found[0]["kind"] == "missing" && found[0]["network_id"] == net.as_str(),
        "expected exactly one `missing` discrepancy for {net}; report: {report:#}"
    );

    let t0 = Instant::now();
    let report = reconcile_networks(config, &["--fix-stale"], 0)?;
    t.record("synnefo reconcile --networks --fix-stale", t0.elapsed());
    ensure!(
        report["fixed"] == json!([0]) && report["failed"] == json!([]),
        "the fix was not done: {report:#}"
    );
    ensure_connected(lab, &gname)?;
    let report = reconcile_networks(config, &[], 0)?;
    ensure!(
        report["discrepancies"] == json!([]),
        "not clean after the fix: {report:#}"
    );

    // ---- the network deleted through the API: gone from the cluster.
    let t0 = Instant::now();
    neutron
        .expect("DELETE", &format!("/networks/{net}"), None, 204)
        .await?;
    t.record(
        "Neutron: DELETE /networks (Ganeti jobs awaited)",
        t0.elapsed(),
    );
    ensure!(
        neutron.network(&net).await?.is_none(),
        "network {net} still shown after its delete"
    );
    ensure!(
        !ganeti_networks(lab)?.contains(&gname),
        "{gname} is still on Ganeti after the network's delete"
    );
    *made = None;
    procs.check_alive()
}

/// Polls until the port's status is `want`.
async fn wait_port_status(api: &Api, id: &str, want: &str, procs: &mut Procs) -> Result<()> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let v = api
            .expect("GET", &format!("/ports/{id}"), None, 200)
            .await?;
        if v["port"]["status"] == want {
            return Ok(());
        }
        procs.check_alive()?;
        if Instant::now() > deadline {
            bail!("port {id} not {want} after {STATE_TIMEOUT:?}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
