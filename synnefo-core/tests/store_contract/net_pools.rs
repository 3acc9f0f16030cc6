//! Synnefo's per-network pools (issue 15): links and MAC prefixes leased
//! in the network's inserting transaction (lowest free first, never one
//! value to two networks, released with the network), ports carrying
//! their network's MAC prefix, the per-project port bound, subnets read
//! for a set of networks, and the lease race across two connection pools.

use std::collections::HashSet;
use std::sync::Arc;

use synnefo_core::StoreError;
use synnefo_core::network::{
    LinkPool, MacPrefixPool, NetworkFlavor, NewNetwork, NewPort, PoolKind, ResourcePool,
};
use synnefo_core::ports::{NetQuery, NetworkStore};
use synnefo_core::store::SeaStore;

use super::fixtures::tenant;
use super::networks::subnet;

fn vlan(project: Option<&str>, name: &str, size: u32) -> NewNetwork {
    NewNetwork {
        name: name.into(),
        project_id: project.map(str::to_string),
        shared: false,
        external: false,
        flavor: NetworkFlavor::PhysicalVlan,
        mode: "bridged".into(),
        link: "unused".into(),
        admin_state_up: true,
        pools: vec![ResourcePool::Link(LinkPool::new("prv", size).unwrap())],
    }
}

fn filtered(project: &str, name: &str) -> NewNetwork {
    NewNetwork {
        name: name.into(),
        project_id: Some(project.into()),
        shared: false,
        external: false,
        flavor: NetworkFlavor::MacFiltered,
        mode: "bridged".into(),
        link: "br0".into(),
        admin_state_up: true,
        pools: vec![ResourcePool::MacPrefix(
            MacPrefixPool::new("ae:10:00", 2).unwrap(),
        )],
    }
}

fn subnetless_port(network_id: &str, project: &str, limit: Option<i64>) -> NewPort {
    NewPort {
        network_id: network_id.into(),
        project_id: Some(project.into()),
        user_id: None,
        name: String::new(),
        device_id: String::new(),
        device_owner: String::new(),
        ips: vec![],
        admin_state_up: true,
        mac_prefix: "aa:00:00".into(),
        port_limit: limit,
    }
}

/// Links and MAC prefixes: the lowest free value, released with the
/// network and handed out again, a clean refusal when none is left; ports
/// of a MAC-filtered network carry its prefix; the port bound; subnets of
/// a set of networks.
pub(crate) async fn network_pools(s: &SeaStore) {
    let t = tenant(s).await;
    let p = t.project.id.as_str();

    // links, lowest first; a network without pools keeps its link
    let a = s
        .create_network(&vlan(Some(p), "a", 3), None)
        .await
        .unwrap();
    let b = s
        .create_network(&vlan(Some(p), "b", 3), None)
        .await
        .unwrap();
    let c = s
        .create_network(&vlan(Some(p), "c", 3), None)
        .await
        .unwrap();
    assert_eq!(
        [&a, &b, &c].map(|n| n.link.as_str()),
        ["prv0", "prv1", "prv2"]
    );
    assert_eq!(s.network(&b.id).await.unwrap().unwrap().link, "prv1");
    match s.create_network(&vlan(Some(p), "d", 3), None).await {
        Err(StoreError::Exhausted(m)) => {
            assert!(
                m.contains("No tenant network is available") && m.contains("prv0..prv2"),
                "{m}"
            )
        }
        other => panic!("expected the pool to be exhausted, got {other:?}"),
    }
    let mut plain = vlan(Some(p), "plain", 3);
    plain.pools.clear();
    let plain = s.create_network(&plain, None).await.unwrap();
    assert_eq!((plain.link.as_str(), plain.mac_prefix), ("unused", None));
    // released with its network, handed out again (lowest first)
    s.delete_network(&b.id).await.unwrap();
    let leases = s.pool_leases(PoolKind::Link).await.unwrap();
    assert_eq!(
        leases.iter().map(|l| l.value.as_str()).collect::<Vec<_>>(),
        ["prv0", "prv2"]
    );
    assert_eq!(leases[1].network_id, c.id);
    let again = s
        .create_network(&vlan(Some(p), "e", 3), None)
        .await
        .unwrap();
    assert_eq!(again.link, "prv1");
    // a failed create (the project's bound) leases nothing
    assert!(matches!(
        s.create_network(&vlan(Some(p), "over", 10), Some(1)).await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    assert_eq!(s.pool_leases(PoolKind::Link).await.unwrap().len(), 3);

    // MAC prefixes, and ports carrying them
    let f1 = s.create_network(&filtered(p, "f1"), None).await.unwrap();
    let f2 = s.create_network(&filtered(p, "f2"), None).await.unwrap();
    assert_eq!(f1.mac_prefix.as_deref(), Some("ae:10:00"));
    assert_eq!(f2.mac_prefix.as_deref(), Some("ae:10:01"));
    assert_eq!(f1.link, "br0", "a MAC prefix pool leaves the link alone");
    match s.create_network(&filtered(p, "f3"), None).await {
        Err(StoreError::Exhausted(m)) => assert!(m.contains("MAC prefixes"), "{m}"),
        other => panic!("expected the pool to be exhausted, got {other:?}"),
    }
    let mut req = subnetless_port(&f2.id, p, None);
    req.mac_prefix = f2.port_mac_prefix("aa:00:00").to_string();
    let port = s.create_port(&req).await.unwrap();
    assert!(port.mac.starts_with("ae:10:01:"), "{}", port.mac);
    assert!(port.fixed_ips.is_empty());
    s.delete_port(&port.id).await.unwrap();
    s.delete_network(&f1.id).await.unwrap();
    let f4 = s.create_network(&filtered(p, "f4"), None).await.unwrap();
    assert_eq!(
        f4.mac_prefix.as_deref(),
        Some("ae:10:00"),
        "released, reused"
    );

    // the port bound, counted per project in the inserting transaction
    let other = tenant(s).await;
    let q = other.project.id.as_str();
    for _ in 0..2 {
        s.create_port(&subnetless_port(&plain.id, q, Some(2)))
            .await
            .unwrap();
    }
    assert!(matches!(
        s.create_port(&subnetless_port(&plain.id, q, Some(2))).await,
        Err(StoreError::QuotaExceeded {
            resource: "ports",
            limit: 2,
            in_use: 2,
            requested: 1
        })
    ));
    // another project's ports do not count; no bound, no refusal
    s.create_port(&subnetless_port(&plain.id, p, Some(1)))
        .await
        .unwrap();
    s.create_port(&subnetless_port(&plain.id, q, None))
        .await
        .unwrap();

    // subnets of a set of networks
    let sa = s
        .create_subnet(&subnet(&a.id, "10.81.0.0/24", None))
        .await
        .unwrap();
    let sc = s
        .create_subnet(&subnet(&c.id, "10.82.0.0/24", None))
        .await
        .unwrap();
    s.create_subnet(&subnet(&again.id, "10.83.0.0/24", None))
        .await
        .unwrap();
    let got: HashSet<String> = s
        .list_subnets(&NetQuery {
            network_ids: Some(vec![a.id.clone(), c.id.clone(), "nonexistent".into()]),
            ..NetQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(got, [sa.id, sc.id].into());
}

/// 30 concurrent creates of PHYSICAL_VLAN networks on a 20-link pool
/// through two stores (two API processes): 20 distinct links and 10 clean
/// refusals, never one link twice; then the same for ports against the
/// project's port bound.
pub(crate) async fn pool_race(first: &SeaStore, second: SeaStore) {
    let t = tenant(first).await;
    let stores = [Arc::new(first.clone()), Arc::new(second)];
    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = stores[i % 2].clone();
        let req = vlan(Some(&t.project.id), &format!("race{i}"), 20);
        tasks.push(tokio::spawn(async move {
            loop {
                match s.create_network(&req, None).await {
                    // lock waits and deadlocks: retried, as the API's caller would
                    Err(StoreError::Conflict(_)) => continue,
                    other => return other,
                }
            }
        }));
    }
    let mut links = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(n) => links.push(n.link),
            Err(StoreError::Exhausted(_)) => exhausted += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let distinct: HashSet<&String> = links.iter().collect();
    assert_eq!(distinct.len(), links.len(), "a link was leased twice");
    assert_eq!((links.len(), exhausted), (20, 10));
    let leased = first.pool_leases(PoolKind::Link).await.unwrap();
    assert_eq!(leased.len(), 20);

    // the port bound under the same race: 12 creates, bound 5
    let mut plain = vlan(Some(&t.project.id), "ports", 20);
    plain.pools.clear();
    let n = first.create_network(&plain, None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = stores[i % 2].clone();
        let req = subnetless_port(&n.id, &t.project.id, Some(5));
        tasks.push(tokio::spawn(async move {
            loop {
                match s.create_port(&req).await {
                    Err(StoreError::Conflict(_)) => continue,
                    other => return other,
                }
            }
        }));
    }
    let (mut made, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => made += 1,
            Err(StoreError::QuotaExceeded { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((made, refused), (5, 7));
}
