//! Networks (issue 15): networks, subnets, ports and floating IPs, the
//! address pools (never one address twice, released addresses reused,
//! exhaustion a clean error), the address history, ports released with
//! their server, and the allocation race across two connection pools.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use synnefo_core::StoreError;
use synnefo_core::network::{
    IpRequest, NetworkFlavor, NewNetwork, NewPort, NewSubnet, PortStatus, SubnetRequest,
    plan_subnet,
};
use synnefo_core::ports::{NetQuery, NetworkStore, VmStateUpdate, VmStore};
use synnefo_core::store::SeaStore;

use super::fixtures::{create, nic, tenant};

fn network(project: Option<&str>, name: &str, external: bool) -> NewNetwork {
    NewNetwork {
        name: name.into(),
        project_id: project.map(str::to_string),
        shared: external,
        external,
        flavor: NetworkFlavor::MacFiltered,
        mode: "bridged".into(),
        link: "br0".into(),
        admin_state_up: true,
        pools: vec![],
    }
}

pub(crate) fn subnet(network_id: &str, cidr: &str, pools: Option<Vec<(&str, &str)>>) -> NewSubnet {
    let req = SubnetRequest {
        cidr: cidr.into(),
        allocation_pools: pools.map(|p| {
            p.into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        }),
        ..SubnetRequest::default()
    };
    let (cidr, gateway, allocation_pools, dns_nameservers) = plan_subnet(&req).unwrap();
    NewSubnet {
        network_id: network_id.into(),
        project_id: None,
        name: String::new(),
        cidr,
        gateway,
        enable_dhcp: true,
        allocation_pools,
        dns_nameservers,
    }
}

fn port(network_id: &str, project: &str, subnet_id: &str, ip: Option<&str>) -> NewPort {
    NewPort {
        network_id: network_id.into(),
        project_id: Some(project.into()),
        user_id: None,
        name: String::new(),
        device_id: String::new(),
        device_owner: String::new(),
        ips: vec![IpRequest {
            subnet_id: subnet_id.into(),
            ip: ip.map(|i| i.parse().unwrap()),
        }],
        admin_state_up: true,
        mac_prefix: "aa:00:00".into(),
        port_limit: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Networks, subnets, ports and floating IPs, with every rule the store
/// keeps.
pub(crate) async fn networks(s: &SeaStore) {
    let t = tenant(s).await;
    let other = tenant(s).await;
    let p = t.project.id.as_str();

    // networks: the project's bound, visibility
    let n = s
        .create_network(&network(Some(p), "private", false), Some(2))
        .await
        .unwrap();
    s.create_network(&network(Some(p), "second", false), Some(2))
        .await
        .unwrap();
    assert!(matches!(
        s.create_network(&network(Some(p), "third", false), Some(2))
            .await,
        Err(StoreError::QuotaExceeded {
            resource: "networks",
            limit: 2,
            in_use: 2,
            ..
        })
    ));
    let public = s
        .create_network(&network(None, "public", true), None)
        .await
        .unwrap();
    let seen = |project: &str| NetQuery {
        project_id: Some(project.to_string()),
        ..NetQuery::default()
    };
    let mine: HashSet<String> = s
        .list_networks(&seen(p))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(
        mine,
        ["private", "second", "public"].map(String::from).into()
    );
    let theirs: Vec<String> = s
        .list_networks(&seen(&other.project.id))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(theirs, vec!["public".to_string()]);

    // subnets: one per IP version
    let sn = s
        .create_subnet(&subnet(&n.id, "10.9.0.0/29", None))
        .await
        .unwrap();
    assert!(matches!(
        s.create_subnet(&subnet(&n.id, "10.10.0.0/24", None)).await,
        Err(StoreError::Integrity(_))
    ));
    let v6 = s
        .create_subnet(&subnet(&n.id, "2001:db8:9::/64", None))
        .await
        .unwrap();
    assert_eq!(s.pool_usage(&sn.id).await.unwrap().size, 5); // .2 to .6

    // ports: addresses in pool order, the IPv6 one from the MAC
    let mut both = port(&n.id, p, &sn.id, None);
    both.ips.push(IpRequest {
        subnet_id: v6.id.clone(),
        ip: None,
    });
    let a = s.create_port(&both).await.unwrap();
    assert_eq!(a.fixed_ips[0].ip, ip("10.9.0.2"));
    assert!(a.fixed_ips[1].ip.is_ipv6(), "{:?}", a.fixed_ips);
    assert_eq!(a.status, PortStatus::Down);
    let b = s.create_port(&port(&n.id, p, &sn.id, None)).await.unwrap();
    assert_eq!(b.fixed_ips[0].ip, ip("10.9.0.3"));
    assert_ne!(a.mac, b.mac);
    // an address asked for by name, above the mark: skipped later
    let c = s
        .create_port(&port(&n.id, p, &sn.id, Some("10.9.0.5")))
        .await
        .unwrap();
    assert_eq!(c.fixed_ips[0].ip, ip("10.9.0.5"));
    for (taken, why) in [
        ("10.9.0.5", "in use"),
        ("10.9.0.1", "gateway"),
        ("10.9.0.7", "valid"),
    ] {
        match s.create_port(&port(&n.id, p, &sn.id, Some(taken))).await {
            Err(StoreError::Integrity(m)) => assert!(m.contains(why), "{taken}: {m}"),
            other => panic!("{taken}: expected a refusal, got {other:?}"),
        }
    }
    let d = s.create_port(&port(&n.id, p, &sn.id, None)).await.unwrap();
    assert_eq!(d.fixed_ips[0].ip, ip("10.9.0.4"));
    let e = s.create_port(&port(&n.id, p, &sn.id, None)).await.unwrap();
    assert_eq!(
        e.fixed_ips[0].ip,
        ip("10.9.0.6"),
        "10.9.0.5 is held: skipped"
    );
    assert!(matches!(
        s.create_port(&port(&n.id, p, &sn.id, None)).await,
        Err(StoreError::Exhausted(_))
    ));
    assert_eq!(s.pool_usage(&sn.id).await.unwrap().used, 5);
    // released addresses come back, lowest first
    s.delete_port(&d.id).await.unwrap();
    s.delete_port(&b.id).await.unwrap();
    let again = s.create_port(&port(&n.id, p, &sn.id, None)).await.unwrap();
    assert_eq!(again.fixed_ips[0].ip, ip("10.9.0.3"));
    let history = s.ip_history(ip("10.9.0.3"), 10).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].released.is_none() && history[1].released.is_some());
    assert_eq!(history[1].port_id.as_deref(), Some(b.id.as_str()));
    // filters
    let by_ip = s
        .list_ports(&NetQuery {
            address: Some(ip("10.9.0.6")),
            ..NetQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_ip.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![e.id.as_str()]
    );

    // a server's ports: ACTIVE once Ganeti reports the NIC, released with it
    let vm = create(s, &t, "with-ports").await;
    let mut bound = port(&n.id, p, &sn.id, None);
    bound.device_id = vm.id.to_string();
    bound.device_owner = synnefo_core::network::DEVICE_OWNER_COMPUTE.into();
    s.delete_port(&a.id).await.unwrap();
    let vp = s.create_port(&bound).await.unwrap();
    assert_eq!(vp.status, PortStatus::Build);
    assert_eq!(s.ports_of(&[vm.id]).await.unwrap()[&vm.id].len(), 1);
    let mut reported = nic(0, &vp.fixed_ips[0].ip.to_string());
    reported.mac = Some(vp.mac.clone());
    let vm = s
        .update_vm_state(&VmStateUpdate {
            id: vm.id,
            expected_version: vm.version,
            state: vm.state.clone(),
            nics: Some(vec![reported]),
            resize: None,
            action_log: None,
            image: None,
        })
        .await
        .unwrap();
    assert_eq!(
        s.port(&vp.id).await.unwrap().unwrap().status,
        PortStatus::Active
    );

    // floating IPs: from the external network's pool, associated, kept
    // by the project when the server goes
    let psn = s
        .create_subnet(&subnet(&public.id, "192.0.2.0/29", None))
        .await
        .unwrap();
    let f = s
        .create_floating_ip(p, None, &public.id, None, "mine", Some(1))
        .await
        .unwrap();
    assert_eq!(f.address, ip("192.0.2.2"));
    assert!(matches!(
        s.create_floating_ip(p, None, &public.id, None, "", Some(1))
            .await,
        Err(StoreError::QuotaExceeded {
            resource: "floating_ips",
            ..
        })
    ));
    let fa = s
        .associate_floating_ip(&f.id, Some((vp.id.clone(), vp.fixed_ips[0].ip)), "aa:00:00")
        .await
        .unwrap();
    assert_eq!(fa.port_id.as_deref(), Some(vp.id.as_str()));
    assert!(fa.mac.is_some());
    assert!(matches!(
        s.associate_floating_ip(&f.id, Some((c.id.clone(), c.fixed_ips[0].ip)), "aa:00:00")
            .await,
        Err(StoreError::Integrity(_))
    ));
    let gone = synnefo_test_support::builders::marked_deleted(&vm.state);
    s.update_vm_state(&VmStateUpdate {
        id: vm.id,
        expected_version: vm.version,
        state: gone,
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    })
    .await
    .unwrap();
    assert!(
        s.port(&vp.id).await.unwrap().is_none(),
        "the server's port went with it"
    );
    let kept = s.floating_ip(&f.id).await.unwrap().unwrap();
    assert_eq!(kept.port_id, None, "disassociated, still the project's");
    assert_eq!(s.pool_usage(&psn.id).await.unwrap().used, 1);
    // in use: no delete
    assert!(matches!(
        s.delete_network(&public.id).await,
        Err(StoreError::Integrity(_))
    ));
    s.delete_floating_ip(&f.id).await.unwrap();
    assert_eq!(s.pool_usage(&psn.id).await.unwrap().used, 0);
    assert!(matches!(
        s.delete_subnet(&sn.id).await,
        Err(StoreError::Integrity(_))
    ));
    for port in [again, c, e] {
        s.delete_port(&port.id).await.unwrap();
    }
    s.delete_network(&n.id).await.unwrap();
    assert!(
        s.subnet(&sn.id).await.unwrap().is_none(),
        "subnets go with their network"
    );
    s.delete_network(&public.id).await.unwrap();
}

/// 200 concurrent port creates on a /24 whose pool holds 150 addresses,
/// through two stores (two connection pools, as two API processes):
/// 150 distinct addresses and 50 clean "no more addresses", never one
/// address twice.
pub(crate) async fn address_race(first: &SeaStore, second: SeaStore) {
    let t = tenant(first).await;
    let n = first
        .create_network(&network(Some(&t.project.id), "race", false), None)
        .await
        .unwrap();
    let sn = first
        .create_subnet(&subnet(
            &n.id,
            "10.77.0.0/24",
            Some(vec![("10.77.0.10", "10.77.0.159")]),
        ))
        .await
        .unwrap();
    let stores = [Arc::new(first.clone()), Arc::new(second)];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = stores[i % 2].clone();
        let req = port(&n.id, &t.project.id, &sn.id, None);
        tasks.push(tokio::spawn(async move {
            loop {
                match s.create_port(&req).await {
                    // lock waits and deadlocks: retried, as the API's caller would
                    Err(StoreError::Conflict(_)) => continue,
                    other => return other,
                }
            }
        }));
    }
    let mut got = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(p) => got.push(p.fixed_ips[0].ip),
            Err(StoreError::Exhausted(_)) => exhausted += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let distinct: HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "an address was handed out twice");
    assert_eq!((got.len(), exhausted), (150, 50));
    assert_eq!(first.pool_usage(&sn.id).await.unwrap().used, 150);
}
