//! `RapiBackend`'s network operations (create, connect, list, disconnect,
//! remove networks; add and remove NICs) against the simulator over HTTPS,
//! with Ganeti's job semantics: each call submits jobs that succeed, or
//! fail the way Ganeti 3.0 words it.

use std::collections::BTreeMap;
use std::time::Duration;

use synnefo_core::ids::{BackendId, JobId};
use synnefo_core::ports::{
    GanetiBackend, InstanceSpec, JobInfo, NetworkLink, NetworkSpec, NicSpec,
};
use synnefo_core::settings::{ClusterSettings, GanetiSettings, Secret};
use synnefo_core::state::JobStatus;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_sim::{SimHandle, SimLatency, Simulator};

const B: BackendId = BackendId(1);
const T: Duration = Duration::from_secs(10);
const NET: &str = "snf-net-7";

fn settings() -> GanetiSettings {
    GanetiSettings {
        secret_osparams: vec!["img_passwd".into()],
        default_disk_template: "diskless".into(),
        default_nic_mode: "bridged".into(),
        default_nic_link: "br0".into(),
        default_nic_network: String::new(),
        shutdown_timeout_secs: 60,
        hypervisor: String::new(),
        rescue_image: synnefo_core::settings::default_rescue_image(),
        clusters: BTreeMap::new(),
    }
}

async fn setup(hypervisor: &str) -> (SimHandle, RapiBackend, tempfile::TempDir) {
    let sim = Simulator::builder()
        .https()
        .hypervisor(hypervisor)
        .latency(SimLatency::uniform(Duration::from_millis(2)))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.cert_pem().unwrap()).unwrap();
    let cluster = ClusterSettings {
        host: "127.0.0.1".into(),
        port: sim.addr().port(),
        username: "synnefo".into(),
        password: Secret::new("synnefo"),
        https: true,
        ca_file: Some(ca),
        insecure: false,
        timeout_secs: 10,
    };
    let backend = RapiBackend::new(vec![(B, cluster)], settings()).unwrap();
    (sim, backend, dir)
}

fn net_spec() -> NetworkSpec {
    NetworkSpec {
        backend: B,
        name: NET.into(),
        network: "10.20.0.0/24".into(),
        gateway: Some("10.20.0.1".into()),
        network6: None,
        gateway6: None,
        mac_prefix: Some("aa:20:00".into()),
        tags: vec!["nfdhcpd".into()],
    }
}

fn routed() -> NetworkLink {
    NetworkLink {
        mode: "routed".into(),
        link: "100".into(),
        vlan: None,
    }
}

async fn done(g: &dyn GanetiBackend, job: JobId) -> JobInfo {
    let j = g.wait_for_job(B, job, T).await.unwrap();
    assert!(j.status.is_terminal(), "{j:?}");
    j
}

async fn ok(g: &dyn GanetiBackend, job: JobId) -> JobInfo {
    let j = done(g, job).await;
    assert_eq!(j.status, JobStatus::Success, "{:?}", j.error_message());
    j
}

async fn fails(g: &dyn GanetiBackend, job: JobId, words: &str) -> JobInfo {
    let j = done(g, job).await;
    assert_eq!(j.status, JobStatus::Error, "{j:?}");
    let msg = j.error_message().unwrap();
    assert!(msg.contains(words), "{msg:?} does not say {words:?}");
    j
}

fn instance(name: &str, nics: Vec<NicSpec>) -> InstanceSpec {
    InstanceSpec {
        backend: B,
        name: name.into(),
        vcpus: 1,
        ram_mib: 128,
        disk_gib: 0,
        disk_template: "diskless".into(),
        os_type: "snf-image+default".into(),
        osparams: BTreeMap::new(),
        nics,
        hvparams: BTreeMap::new(),
        start: true,
    }
}

fn on_net(ip: &str, mac: Option<&str>, name: &str) -> NicSpec {
    NicSpec {
        network: Some(NET.into()),
        ip: Some(ip.into()),
        mac: mac.map(str::to_string),
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_network_from_creation_to_removal() {
    let (_sim, backend, _dir) = setup("fake").await;
    let g: &dyn GanetiBackend = &backend;
    assert!(g.list_networks(B).await.unwrap().is_empty());

    // Created, not connected: listed with no group; a second one of that name fails.
    let j = ok(g, g.create_network(&net_spec()).await.unwrap()).await;
    assert_eq!(j.ops[0].opcode, "OP_NETWORK_ADD");
    let nets = g.list_networks(B).await.unwrap();
    assert_eq!(nets.len(), 1);
    let n = &nets[0];
    assert_eq!(
        (n.name.as_str(), n.network.as_deref(), n.gateway.as_deref()),
        (NET, Some("10.20.0.0/24"), Some("10.20.0.1"))
    );
    assert_eq!(n.mac_prefix.as_deref(), Some("aa:20:00"));
    assert_eq!(
        n.free_count,
        Some(253),
        "network, broadcast and gateway reserved"
    );
    assert!(n.groups.is_empty() && n.instances.is_empty());
    assert_eq!(n.tags, vec!["nfdhcpd".to_string()]);
    let dup = fails(
        g,
        g.create_network(&net_spec()).await.unwrap(),
        "already exists as a network",
    )
    .await;
    assert_eq!(
        dup.error().unwrap().code.as_ref().map(|c| c.as_str()),
        Some("already_exists")
    );

    // A NIC on a network that is not connected is refused.
    let j = g
        .create_instance(&instance(
            "snf-1",
            vec![on_net("10.20.0.10", None, "snf-nic-1")],
        ))
        .await
        .unwrap();
    fails(g, j, "No netparams found for network snf-net-7").await;

    // Connected to every node group (the one), idempotently.
    let jobs = g.connect_network(B, NET, &routed()).await.unwrap();
    assert_eq!(jobs.len(), 1);
    ok(g, jobs[0]).await;
    let again = g.connect_network(B, NET, &routed()).await.unwrap();
    let j = ok(g, again[0]).await;
    assert_eq!(
        j.ops[0].log,
        vec![" - WARNING: Network 'snf-net-7' is already mapped to group 'default'".to_string()]
    );
    let n = &g.list_networks(B).await.unwrap()[0];
    assert_eq!(
        n.groups,
        vec![("default".into(), "routed".into(), "100".into())]
    );

    // An instance with a fixed IP, MAC and name on it.
    let j = g
        .create_instance(&instance(
            "snf-1",
            vec![on_net("10.20.0.10", Some("aa:20:00:00:00:10"), "snf-nic-1")],
        ))
        .await
        .unwrap();
    ok(g, j).await;
    let i = g.instance_info(B, "snf-1").await.unwrap().unwrap();
    assert_eq!(i.nics.len(), 1);
    assert_eq!(i.nics[0].ip.as_deref(), Some("10.20.0.10"));
    assert_eq!(i.nics[0].mac.as_deref(), Some("aa:20:00:00:00:10"));
    assert_eq!(i.nics[0].network.as_deref(), Some(NET));
    assert_eq!(i.nics[0].mode.as_deref(), Some("routed"));

    // add_nic: a fixed IP, the MAC generated with the network's prefix.
    let j = ok(
        g,
        g.add_nic(B, "snf-1", &on_net("10.20.0.11", None, "snf-nic-2"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        j.ops[0].log,
        vec![
            " - WARNING: Hotplug is not supported: Hotplug is not supported by this hypervisor"
                .to_string(),
            " - INFO: Modification will take place without hotplugging.".to_string(),
            " - INFO: Reserving IP 10.20.0.11 in network snf-net-7".to_string(),
        ]
    );
    let i = g.instance_info(B, "snf-1").await.unwrap().unwrap();
    assert_eq!(i.nics.len(), 2);
    assert_eq!(i.nics[1].ip.as_deref(), Some("10.20.0.11"));
    let mac = i.nics[1].mac.clone().unwrap();
    assert!(mac.starts_with("aa:20:00:"), "{mac}");
    // An address in use is refused as Ganeti words it.
    let taken = g
        .add_nic(B, "snf-1", &on_net("10.20.0.10", None, "snf-nic-3"))
        .await
        .unwrap();
    let j = fails(g, taken, "IP 10.20.0.10 not available in network snf-net-7").await;
    assert_eq!(
        j.error().unwrap().code.as_ref().map(|c| c.as_str()),
        Some("resource_not_unique")
    );
    let n = &g.list_networks(B).await.unwrap()[0];
    assert_eq!(n.instances, vec!["snf-1".to_string()]);
    assert_eq!(n.free_count, Some(251));

    // Neither removed nor disconnected while in use.
    fails(
        g,
        g.remove_network(B, NET).await.unwrap(),
        "Network still connected",
    )
    .await;
    let jobs = g.disconnect_network(B, NET).await.unwrap();
    assert_eq!(jobs.len(), 1);
    fails(g, jobs[0], "Conflicting IP addresses found").await;

    // remove_nic by name: the other NIC stays.
    ok(g, g.remove_nic(B, "snf-1", "snf-nic-2").await.unwrap()).await;
    let i = g.instance_info(B, "snf-1").await.unwrap().unwrap();
    assert_eq!(i.nics.len(), 1);
    assert_eq!(i.nics[0].ip.as_deref(), Some("10.20.0.10"));
    fails(
        g,
        g.remove_nic(B, "snf-1", "snf-nic-2").await.unwrap(),
        "Cannot find NIC with identifier snf-nic-2",
    )
    .await;

    // Once the instance is gone: disconnected, removed.
    ok(g, g.remove(B, "snf-1").await.unwrap()).await;
    for j in g.disconnect_network(B, NET).await.unwrap() {
        ok(g, j).await;
    }
    assert!(g.list_networks(B).await.unwrap()[0].groups.is_empty());
    assert!(g.disconnect_network(B, NET).await.unwrap().is_empty());
    ok(g, g.remove_network(B, NET).await.unwrap()).await;
    assert!(g.list_networks(B).await.unwrap().is_empty());
    fails(
        g,
        g.remove_network(B, NET).await.unwrap(),
        "Network 'snf-net-7' not found",
    )
    .await;
    assert!(matches!(
        g.disconnect_network(B, NET).await,
        Err(synnefo_core::BackendError::NotFound(_))
    ));
}

/// On KVM with the guest running, NICs are hot-plugged: no warning, and
/// Ganeti's `hotplug:done` in the result.
#[tokio::test]
async fn nics_are_hotplugged_on_a_running_kvm_guest() {
    let (_sim, backend, _dir) = setup("kvm").await;
    let g: &dyn GanetiBackend = &backend;
    ok(g, g.create_network(&net_spec()).await.unwrap()).await;
    for j in g.connect_network(B, NET, &routed()).await.unwrap() {
        ok(g, j).await;
    }
    let j = g
        .create_instance(&instance("snf-2", vec![on_net("pool", None, "snf-nic-1")]))
        .await
        .unwrap();
    ok(g, j).await;
    let i = g.instance_info(B, "snf-2").await.unwrap().unwrap();
    assert_eq!(
        i.nics[0].ip.as_deref(),
        Some("10.20.0.2"),
        "first free address"
    );
    let j = ok(
        g,
        g.add_nic(B, "snf-2", &on_net("pool", None, "snf-nic-2"))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        j.ops[0].log.iter().any(|l| l == " - INFO: Hotplug done."),
        "{:?}",
        j.ops[0].log
    );
    let j = ok(g, g.remove_nic(B, "snf-2", "snf-nic-1").await.unwrap()).await;
    assert!(j.ops[0].log.iter().all(|l| !l.contains("WARNING")));
    let i = g.instance_info(B, "snf-2").await.unwrap().unwrap();
    assert_eq!(i.nics.len(), 1);
    assert_eq!(i.nics[0].ip.as_deref(), Some("10.20.0.3"));
}
