//! The NIC rule of network reconciliation (`synnefo_core::reconcile::nics`):
//! a table of findings and guards, and a property over random drift:
//! every NIC dropped, added or altered behind the control plane's back is
//! found as exactly that, and applying the automatic fixes leaves only the
//! report-only differences.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{Nic, Vm};
use synnefo_core::network::{
    FixedIp, FloatingIp, Network, NetworkFlavor, NetworkStatus, Port, PortStatus,
};
use synnefo_core::ports::InstanceInfo;
use synnefo_core::reconcile::nics::{
    NicField, NicFinding, NicGuard, NicInput, NicOwner, NicWiring, ServerNics, WantedNic,
    diff_nics, wanted_nics,
};
use synnefo_core::reconcile::{Guards, StateFix, fixed_state};
use synnefo_core::state::{
    Action, OperState, RebootKind, VmState, record_submitted_job, start_action,
};

const B: BackendId = BackendId(1);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 10, 12, 0, 0).unwrap()
}

fn guards() -> Guards {
    Guards {
        stuck_after: TimeDelta::minutes(15),
    }
}

fn started() -> VmState {
    fixed_state(
        &VmState::new_build(),
        StateFix::OperState(OperState::Started),
    )
    .unwrap()
}

fn vm(id: i64, state: VmState) -> Vm {
    Vm {
        id: VmId(id),
        user_id: "u".into(),
        project_id: "p".into(),
        name: format!("vm{id}"),
        flavor_id: FlavorId(1),
        image_id: "img".into(),
        backend_id: Some(B),
        state,
        metadata: Default::default(),
        created: t0() - TimeDelta::days(1),
        updated: t0() - TimeDelta::days(1),
        last_reconciled: None,
        version: 1,
    }
}

fn network(id: &str) -> Network {
    Network {
        id: id.into(),
        name: id.into(),
        project_id: Some("p".into()),
        shared: false,
        external: false,
        flavor: NetworkFlavor::MacFiltered,
        mode: "bridged".into(),
        link: "br0".into(),
        mac_prefix: None,
        status: NetworkStatus::Active,
        admin_state_up: true,
        created: t0(),
        updated: t0(),
    }
}

/// Network `net` has an IPv4 subnet (a Ganeti network), `plain` does not.
fn wiring() -> HashMap<String, NicWiring> {
    [
        ("net".to_string(), NicWiring::of(&network("net"), true)),
        ("plain".to_string(), NicWiring::of(&network("plain"), false)),
        ("ext".to_string(), NicWiring::of(&network("ext"), true)),
    ]
    .into()
}

fn port(n: u8, network: &str, changed: DateTime<Utc>) -> Port {
    Port {
        id: format!("p{n}"),
        network_id: network.into(),
        project_id: Some("p".into()),
        name: String::new(),
        device_id: "1".into(),
        device_owner: "compute:nova".into(),
        mac: format!("ae:00:00:00:00:{n:02x}"),
        fixed_ips: if network == "plain" {
            vec![]
        } else {
            vec![FixedIp {
                subnet_id: "s".into(),
                ip: format!("10.0.0.{n}").parse().unwrap(),
            }]
        },
        status: PortStatus::Active,
        admin_state_up: true,
        created: changed,
        updated: changed,
    }
}

fn floating(n: u8, port: &str) -> FloatingIp {
    FloatingIp {
        id: format!("f{n}"),
        project_id: "p".into(),
        network_id: "ext".into(),
        subnet_id: "es".into(),
        address: format!("192.0.2.{n}").parse::<IpAddr>().unwrap(),
        port_id: Some(port.into()),
        fixed_ip: None,
        mac: Some(format!("ae:00:00:00:01:{n:02x}")),
        description: String::new(),
        created: t0() - TimeDelta::days(1),
        updated: t0() - TimeDelta::days(1),
    }
}

/// The NIC Ganeti would have for `w`, at `index`.
fn nic_of(w: &WantedNic) -> (Nic, Option<String>) {
    let (network, mode, link) = match &w.wiring {
        NicWiring::Network { network } => (Some(network.clone()), None, None),
        NicWiring::Link { mode, link } => (None, Some(mode.clone()), Some(link.clone())),
    };
    (
        Nic {
            index: 0,
            ip: w.ip.clone(),
            mac: Some(w.mac.clone()),
            network,
            link,
            mode,
        },
        Some(w.name.clone()),
    )
}

fn instance(id: i64, nics: Vec<(Nic, Option<String>)>) -> InstanceInfo {
    let (mut list, names): (Vec<Nic>, Vec<Option<String>>) = nics.into_iter().unzip();
    for (i, n) in list.iter_mut().enumerate() {
        n.index = i as i32;
    }
    InstanceInfo {
        name: format!("snf-{id}"),
        admin_up: true,
        running: true,
        status: "running".into(),
        vcpus: Some(1),
        ram_mib: Some(128),
        nics: list,
        nic_names: names,
        pnode: None,
        disk_template: None,
        tags: vec![],
        mtime: None,
    }
}

fn run(
    servers: &[(Vm, InstanceInfo, Vec<WantedNic>)],
    owners: &HashMap<String, DateTime<Utc>>,
    g: Guards,
) -> synnefo_core::reconcile::nics::NicDiff {
    let checks: Vec<ServerNics<'_>> = servers
        .iter()
        .map(|(v, i, w)| ServerNics {
            vm: v,
            backend: B,
            instance: i,
            wanted: w.clone(),
        })
        .collect();
    diff_nics(&NicInput {
        now: t0(),
        guards: g,
        servers: &checks,
        owners_changed: owners,
    })
}

fn old() -> DateTime<Utc> {
    t0() - TimeDelta::hours(1)
}

#[test]
fn wanted_nics_follow_ports_and_their_floating_ips() {
    let ports = vec![port(1, "net", old()), port(2, "plain", old())];
    let fips: HashMap<String, Vec<FloatingIp>> = [("p1".into(), vec![floating(7, "p1")])].into();
    let w = wanted_nics(&ports, &fips, &wiring());
    let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["snf-nic-p1", "snf-nic-f7", "snf-nic-p2"]);
    assert_eq!(w[0].ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(
        w[0].wiring,
        NicWiring::Network {
            network: "snf-net-net".into()
        }
    );
    assert_eq!(w[1].owner, NicOwner::FloatingIp("f7".into()));
    assert_eq!(w[1].ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(w[2].ip, None);
    assert_eq!(
        w[2].wiring,
        NicWiring::Link {
            mode: "bridged".into(),
            link: "br0".into()
        }
    );
    // a port on the external network carrying a floating IP of it: one
    // NIC, the port's, with the floating address
    let mut carrier = port(4, "ext", old());
    carrier.fixed_ips.clear();
    let carried = floating(8, &carrier.id);
    let fips: HashMap<String, Vec<FloatingIp>> = [(carrier.id.clone(), vec![carried])].into();
    let w = wanted_nics(&[carrier], &fips, &wiring());
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].owner, NicOwner::Port("p4".into()));
    assert_eq!(w[0].ip.as_deref(), Some("192.0.2.8"));
    // a port of a network the run does not know is left out, not guessed
    let w = wanted_nics(&[port(3, "gone", old())], &HashMap::new(), &wiring());
    assert!(w.is_empty());
}

#[test]
fn findings_of_each_kind() {
    let wanted = wanted_nics(
        &[
            port(1, "net", old()),
            port(2, "net", old()),
            port(3, "plain", old()),
            port(4, "net", old()),
            port(5, "net", old()),
            port(6, "net", old()),
        ],
        &HashMap::new(),
        &wiring(),
    );
    let nics = |i: usize| nic_of(&wanted[i]);
    // p1 in sync; p2 missing; p3 on another link; p4 with another IP;
    // p5 unnamed (paired by MAC); p6 on another network
    let mut p3 = nics(2);
    p3.0.link = Some("br9".into());
    let mut p4 = nics(3);
    p4.0.ip = Some("10.0.0.99".into());
    let mut p5 = nics(4);
    p5.1 = None;
    let mut p6 = nics(5);
    p6.0.network = Some("snf-net-other".into());
    let default_nic = (
        Nic {
            index: 0,
            ip: Some("192.0.2.200".into()),
            mac: Some("aa:00:00:12:34:56".into()),
            network: None,
            link: Some("br0".into()),
            mode: Some("bridged".into()),
        },
        None,
    );
    let extra = (
        Nic {
            index: 0,
            ip: Some("10.0.0.50".into()),
            mac: Some("ae:00:00:00:00:50".into()),
            network: Some("snf-net-net".into()),
            link: None,
            mode: None,
        },
        Some("snf-nic-deleted-port".into()),
    );
    let inst = instance(1, vec![nics(0), p3, p4, p5, p6, default_nic, extra]);
    let d = run(
        &[(vm(1, started()), inst, wanted.clone())],
        &HashMap::new(),
        guards(),
    );
    let mut kinds: Vec<(&str, String)> = d.findings.iter().map(|f| (f.kind(), f.nic())).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("extra_nic", "snf-nic-deleted-port".to_string()),
            ("missing_nic", "snf-nic-p2".to_string()),
            ("nic_differs", "snf-nic-p3".to_string()),
            ("nic_differs", "snf-nic-p4".to_string()),
            ("nic_differs", "snf-nic-p5".to_string()),
            ("nic_differs", "snf-nic-p6".to_string()),
        ]
    );
    let fields = |name: &str| -> Vec<NicField> {
        d.findings
            .iter()
            .find_map(|f| match f {
                NicFinding::Differs(x) if x.nic.name == name => Some(x.fields.clone()),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(fields("snf-nic-p3"), [NicField::Network]);
    assert_eq!(fields("snf-nic-p4"), [NicField::Ip]);
    assert_eq!(fields("snf-nic-p5"), [NicField::Name]);
    assert_eq!(fields("snf-nic-p6"), [NicField::Network]);
    assert_eq!(d.stats.foreign_ignored, 1, "the default NIC is not ours");
    assert_eq!(d.stats.servers, 1);
    assert!(d.held.is_empty());
    let extra = d
        .findings
        .iter()
        .find_map(|f| match f {
            NicFinding::Extra(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(extra.identifier(), "snf-nic-deleted-port");
    assert_eq!(extra.nic.index, 6);
}

#[test]
fn in_sync_servers_and_servers_without_ports_are_clean() {
    let ports = vec![port(1, "net", old())];
    let fips: HashMap<String, Vec<FloatingIp>> = [("p1".into(), vec![floating(7, "p1")])].into();
    let wanted = wanted_nics(&ports, &fips, &wiring());
    let inst = instance(1, wanted.iter().map(nic_of).collect());
    // a server made before networks: the default NIC only
    let legacy = instance(
        2,
        vec![(
            Nic {
                index: 0,
                ip: Some("192.0.2.9".into()),
                mac: Some("aa:00:00:00:00:09".into()),
                network: None,
                link: Some("br0".into()),
                mode: Some("bridged".into()),
            },
            None,
        )],
    );
    let d = run(
        &[
            (vm(1, started()), inst, wanted),
            (vm(2, started()), legacy, vec![]),
        ],
        &HashMap::new(),
        guards(),
    );
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert_eq!((d.stats.servers, d.stats.foreign_ignored), (2, 1));
}

#[test]
fn guards_hold_findings_while_something_may_be_in_flight() {
    let recent = t0() - TimeDelta::minutes(2);
    let wanted_old = wanted_nics(&[port(1, "net", old())], &HashMap::new(), &wiring());
    let wanted_new = wanted_nics(&[port(2, "net", recent)], &HashMap::new(), &wiring());
    let extra = |owner: &str| {
        (
            Nic {
                index: 0,
                ip: None,
                mac: Some("ae:00:00:00:00:77".into()),
                network: None,
                link: None,
                mode: None,
            },
            Some(format!("snf-nic-{owner}")),
        )
    };
    // a server with a job in flight
    let busy = record_submitted_job(
        &start_action(&started(), Action::Reboot(RebootKind::Soft)).unwrap(),
        JobId(41),
    );
    let servers = vec![
        (
            vm(1, busy),
            instance(1, vec![extra("x")]),
            wanted_old.clone(),
        ),
        // a port attached two minutes ago whose NIC is not there yet
        (vm(2, started()), instance(2, vec![]), wanted_new),
        // an extra NIC of a port that changed two minutes ago (an attach
        // that failed and unbound it)
        (
            vm(3, started()),
            instance(3, vec![extra("unbound")]),
            vec![],
        ),
        // an extra NIC of a port that changed long ago: reported
        (vm(4, started()), instance(4, vec![extra("stale")]), vec![]),
    ];
    let owners: HashMap<String, DateTime<Utc>> = [
        ("unbound".to_string(), recent),
        ("stale".to_string(), old()),
    ]
    .into();
    let d = run(&servers, &owners, guards());
    let held: Vec<(i64, &str, NicGuard)> = d
        .held
        .iter()
        .map(|h| (h.vm.0, h.finding.as_str(), h.guard))
        .collect();
    assert_eq!(
        held,
        vec![
            (
                1,
                "missing_nic",
                NicGuard::JobInFlight {
                    job: Some(JobId(41))
                }
            ),
            (
                1,
                "extra_nic",
                NicGuard::JobInFlight {
                    job: Some(JobId(41))
                }
            ),
            (2, "missing_nic", NicGuard::RecentlyChanged { at: recent }),
            (3, "extra_nic", NicGuard::RecentlyChanged { at: recent }),
        ]
    );
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].vm(), VmId(4));
    // no age guard: the recent ones are reported too; the job still holds
    let d = run(
        &servers,
        &owners,
        Guards {
            stuck_after: TimeDelta::zero(),
        },
    );
    assert_eq!(d.held.len(), 2);
    assert_eq!(d.findings.len(), 3);
}

#[test]
fn servers_the_server_rules_own_are_not_checked() {
    let wanted = wanted_nics(&[port(1, "net", old())], &HashMap::new(), &wiring());
    let mut elsewhere = vm(3, started());
    elsewhere.backend_id = Some(BackendId(2));
    let deleted_state = fixed_state(&started(), StateFix::Destroyed).unwrap();
    let d = run(
        &[
            (
                vm(1, VmState::new_build()),
                instance(1, vec![]),
                wanted.clone(),
            ),
            (vm(2, deleted_state), instance(2, vec![]), wanted.clone()),
            (elsewhere, instance(3, vec![]), wanted),
        ],
        &HashMap::new(),
        guards(),
    );
    assert!(d.findings.is_empty() && d.held.is_empty());
    assert_eq!((d.stats.servers, d.stats.unchecked), (0, 3));
}

#[test]
fn a_shared_name_is_removed_by_index() {
    let wanted = wanted_nics(&[port(1, "net", old())], &HashMap::new(), &wiring());
    let mut twin = nic_of(&wanted[0]);
    twin.0.mac = Some("ae:00:00:00:00:99".into());
    let inst = instance(1, vec![nic_of(&wanted[0]), twin]);
    let d = run(
        &[(vm(1, started()), inst, wanted)],
        &HashMap::new(),
        guards(),
    );
    match &d.findings[..] {
        [NicFinding::Extra(e)] => {
            assert!(e.name_shared);
            assert_eq!(e.identifier(), "1");
        }
        other => panic!("{other:?}"),
    }
}

/// What happens to each wanted NIC on the Ganeti side.
#[derive(Debug, Clone, Copy)]
enum Drift {
    Kept,
    Dropped,
    NewIp,
    Unnamed,
}

fn drift() -> impl Strategy<Value = Drift> {
    prop_oneof![
        4 => Just(Drift::Kept),
        1 => Just(Drift::Dropped),
        1 => Just(Drift::NewIp),
        1 => Just(Drift::Unnamed),
    ]
}

proptest! {
    /// Random ports (on networks with and without a subnet, some with a
    /// floating IP) and random drift on the Ganeti side: each dropped NIC
    /// is found missing, each stray NIC of ours extra, each altered one
    /// differing in exactly what changed; applying the automatic fixes
    /// (missing added back, extra removed) leaves exactly the differences.
    #[test]
    fn drift_is_found_and_fixes_converge(
        spec in proptest::collection::vec((any::<bool>(), any::<bool>(), drift()), 0..8),
        strays in 0usize..3,
        order in any::<u64>(),
    ) {
        let mut ports = Vec::new();
        let mut fips: HashMap<String, Vec<FloatingIp>> = HashMap::new();
        for (i, (plain, with_fip, _)) in spec.iter().enumerate() {
            let n = i as u8 + 1;
            let p = port(n, if *plain { "plain" } else { "net" }, old());
            if *with_fip {
                fips.insert(p.id.clone(), vec![floating(n, &p.id)]);
            }
            ports.push(p);
        }
        let wanted = wanted_nics(&ports, &fips, &wiring());
        // The drift applies to a port's NIC; floating IP NICs are kept.
        let mut port_drift: HashMap<String, Drift> = HashMap::new();
        for (p, (_, _, d)) in ports.iter().zip(&spec) {
            port_drift.insert(p.ganeti_name(), *d);
        }
        let mut ganeti = Vec::new();
        let (mut missing, mut differs) = (BTreeSet::new(), BTreeSet::new());
        for w in &wanted {
            let d = port_drift.get(&w.name).copied().unwrap_or(Drift::Kept);
            let mut nic = nic_of(w);
            match d {
                Drift::Kept => {}
                Drift::Dropped => {
                    missing.insert(w.name.clone());
                    continue;
                }
                Drift::NewIp => {
                    nic.0.ip = Some("172.16.0.1".into());
                    differs.insert((w.name.clone(), NicField::Ip));
                }
                Drift::Unnamed => {
                    nic.1 = None;
                    differs.insert((w.name.clone(), NicField::Name));
                }
            }
            ganeti.push(nic);
        }
        let mut extra = BTreeSet::new();
        for s in 0..strays {
            let name = format!("snf-nic-stray{s}");
            extra.insert(name.clone());
            ganeti.push((
                Nic { index: 0, ip: None, mac: Some(format!("ae:00:00:00:02:{s:02x}")), network: None, link: None, mode: None },
                Some(name),
            ));
        }
        // Ganeti's NIC order is its own.
        let len = ganeti.len().max(1);
        ganeti.rotate_left((order as usize) % len);
        let server = |nics: Vec<(Nic, Option<String>)>| vec![(vm(1, started()), instance(1, nics), wanted.clone())];
        let d = run(&server(ganeti.clone()), &HashMap::new(), guards());
        let mut got_missing = BTreeSet::new();
        let mut got_extra = BTreeSet::new();
        let mut got_differs = BTreeSet::new();
        for f in &d.findings {
            match f {
                NicFinding::Missing(m) => { got_missing.insert(m.nic.name.clone()); }
                NicFinding::Extra(e) => { got_extra.insert(e.nic.name.clone().unwrap()); }
                NicFinding::Differs(x) => {
                    for field in &x.fields {
                        got_differs.insert((x.nic.name.clone(), *field));
                    }
                }
            }
        }
        prop_assert_eq!(&got_missing, &missing);
        prop_assert_eq!(&got_extra, &extra);
        prop_assert_eq!(&got_differs, &differs);

        // Apply the automatic fixes to the Ganeti side, diff again.
        let mut fixed = ganeti;
        fixed.retain(|(_, name)| !name.as_ref().is_some_and(|n| extra.contains(n)));
        for f in &d.findings {
            if let NicFinding::Missing(m) = f {
                fixed.push(nic_of(&m.nic));
            }
        }
        let again = run(&server(fixed), &HashMap::new(), guards());
        prop_assert!(again.findings.iter().all(|f| matches!(f, NicFinding::Differs(_))));
        prop_assert_eq!(again.findings.len(), d.findings.iter().filter(|f| matches!(f, NicFinding::Differs(_))).count());
    }
}
