//! Ganeti networks and NICs through `RapiBackend` (the `GanetiBackend`
//! port) on the real cluster: create a network, connect it to every node
//! group, see it listed, an instance with a NIC on it at a fixed address,
//! a NIC hot-added (the fake hypervisor cannot: Ganeti adds it for the next
//! boot) and removed by name, then disconnect and remove the network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use synnefo_core::ids::{BackendId, JobId};
use synnefo_core::ports::{GanetiBackend, InstanceSpec, NetworkLink, NetworkSpec, NicSpec};
use synnefo_core::settings::{ClusterSettings, GanetiSettings, Secret};
use synnefo_core::state::JobStatus;
use synnefo_ganeti::backend::RapiBackend;

use crate::{Lab, TEST, Timings};

const B: BackendId = BackendId(1);
/// Jobs take 0.5-2 s on the lab; generous for a loaded machine.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// Ganeti bookkeeping only (the fake hypervisor configures nothing).
const SUBNET: &str = "10.77.0.0/24";

fn backend(lab: &Lab) -> Result<RapiBackend> {
    let cluster = ClusterSettings {
        host: "127.0.0.1".into(),
        port: lab.rapi_port,
        username: lab.rapi_user.clone(),
        password: Secret::new(&lab.rapi_password),
        https: true,
        ca_file: Some(lab.rapi_cert.clone()),
        insecure: false,
        timeout_secs: 60,
    };
    let settings = GanetiSettings {
        secret_osparams: vec!["img_passwd".into()],
        default_disk_template: "diskless".into(),
        default_nic_mode: "routed".into(),
        default_nic_link: "100".into(),
        default_nic_network: String::new(),
        shutdown_timeout_secs: 30,
        hypervisor: "fake".into(),
        rescue_image: synnefo_core::settings::default_rescue_image(),
        clusters: BTreeMap::new(),
    };
    RapiBackend::new(vec![(B, cluster)], settings).context("RapiBackend for the lab")
}

async fn succeeds(g: &dyn GanetiBackend, job: JobId, what: &str) -> Result<Vec<String>> {
    let j = g.wait_for_job(B, job, JOB_TIMEOUT).await?;
    if j.status != JobStatus::Success {
        bail!(
            "{what}: job {} ended {:?}: {:?}",
            job.0,
            j.status,
            j.error_message()
        );
    }
    Ok(j.ops.iter().flat_map(|o| o.log.clone()).collect())
}

/// The network steps; the network and the instance are removed again
/// whatever happens (by `gnt-*` inside the lab if the port fails).
pub(crate) async fn network_ops(lab: &Lab, prefix: &str, t: &mut Timings) -> Result<()> {
    let net = format!("{prefix}net");
    let inst = format!("{prefix}nic1");
    let result = steps(lab, &net, &inst, t).await;
    if result.is_err() {
        let _ = lab.gnt(&["gnt-instance", "remove", "-f", &inst]);
        let _ = lab.gnt(&["gnt-network", "disconnect", &net]);
        let _ = lab.gnt(&["gnt-network", "remove", &net]);
    }
    result
}

async fn steps(lab: &Lab, net: &str, inst: &str, t: &mut Timings) -> Result<()> {
    let backend = backend(lab)?;
    let g: &dyn GanetiBackend = &backend;

    let t0 = Instant::now();
    let spec = NetworkSpec {
        backend: B,
        name: net.into(),
        network: SUBNET.into(),
        gateway: Some("10.77.0.1".into()),
        network6: None,
        gateway6: None,
        mac_prefix: Some("aa:77:00".into()),
        tags: vec!["synnefo-lab-test".into()],
    };
    succeeds(g, g.create_network(&spec).await?, "create network").await?;
    let link = NetworkLink {
        mode: "routed".into(),
        link: "100".into(),
        vlan: None,
    };
    let jobs = g.connect_network(B, net, &link).await?;
    ensure!(!jobs.is_empty(), "connect_network submitted no job");
    for j in jobs {
        succeeds(g, j, "connect network").await?;
    }
    let listed = g.list_networks(B).await?;
    let n = listed
        .iter()
        .find(|n| n.name == net)
        .with_context(|| format!("{net} not in list_networks: {listed:?}"))?;
    ensure!(n.network.as_deref() == Some(SUBNET), "{n:?}");
    ensure!(
        n.groups
            .iter()
            .any(|(_, mode, link)| mode == "routed" && link == "100"),
        "{net} not connected: {n:?}"
    );
    t.record("RapiBackend: create + connect a network", t0.elapsed());

    let t0 = Instant::now();
    let nic = |ip: &str, name: &str| NicSpec {
        network: Some(net.to_string()),
        ip: Some(ip.into()),
        name: Some(name.into()),
        ..Default::default()
    };
    let create = InstanceSpec {
        backend: B,
        name: inst.into(),
        vcpus: 1,
        ram_mib: 128,
        disk_gib: 0,
        disk_template: "diskless".into(),
        os_type: "noop+default".into(),
        osparams: BTreeMap::new(),
        nics: vec![nic("10.77.0.10", "snf-nic-1")],
        hvparams: BTreeMap::new(),
        start: true,
    };
    succeeds(g, g.create_instance(&create).await?, "create instance").await?;
    let i = g
        .instance_info(B, inst)
        .await?
        .with_context(|| format!("{inst} missing"))?;
    ensure!(
        i.nics.len() == 1 && i.nics[0].ip.as_deref() == Some("10.77.0.10"),
        "NICs of {inst}: {:?}",
        i.nics
    );
    ensure!(i.nics[0].network.as_deref() == Some(net), "{:?}", i.nics);
    t.record("RapiBackend: instance with a fixed IP on it", t0.elapsed());

    let t0 = Instant::now();
    let log = succeeds(
        g,
        g.add_nic(B, inst, &nic("10.77.0.11", "snf-nic-2")).await?,
        "add_nic",
    )
    .await?;
    eprintln!("[{TEST}] add_nic log: {log:?}");
    let i = g.instance_info(B, inst).await?.context("instance gone")?;
    ensure!(
        i.nics.len() == 2 && i.nics[1].ip.as_deref() == Some("10.77.0.11"),
        "NICs after add_nic: {:?}",
        i.nics
    );
    let mac = i.nics[1].mac.clone().unwrap_or_default();
    ensure!(
        mac.starts_with("aa:77:00:"),
        "MAC {mac} not from the network's prefix"
    );
    succeeds(g, g.remove_nic(B, inst, "snf-nic-2").await?, "remove_nic").await?;
    let i = g.instance_info(B, inst).await?.context("instance gone")?;
    ensure!(
        i.nics.len() == 1 && i.nics[0].ip.as_deref() == Some("10.77.0.10"),
        "NICs after remove_nic: {:?}",
        i.nics
    );
    t.record("RapiBackend: add_nic + remove_nic", t0.elapsed());

    let t0 = Instant::now();
    succeeds(g, g.remove(B, inst).await?, "remove instance").await?;
    for j in g.disconnect_network(B, net).await? {
        succeeds(g, j, "disconnect network").await?;
    }
    succeeds(g, g.remove_network(B, net).await?, "remove network").await?;
    ensure!(
        !g.list_networks(B).await?.iter().any(|n| n.name == net),
        "{net} still listed"
    );
    t.record("RapiBackend: disconnect + remove the network", t0.elapsed());
    Ok(())
}
