//! Networks: what the DB records on each cluster against what the cluster
//! lists, as a pure diff (the service lists and fixes; see
//! [`Networking::reconcile`](crate::service::network::Networking::reconcile)).
//!
//! | finding | flag | fix |
//! |---|---|---|
//! | [`Missing`](NetworkDiscrepancy::Missing): recorded on a cluster that no longer lists it (removed behind our back) | `--fix-stale` | made again and connected |
//! | [`Disconnected`](NetworkDiscrepancy::Disconnected): listed, but not connected to some node group of the cluster | `--fix-stale` | connected again with the network's mode and link |
//! | [`Miswired`](NetworkDiscrepancy::Miswired): connected to a group with another mode or link than the network's | none | an operator's call: reconnecting means disconnecting, which Ganeti refuses while NICs use it, and the wrong link (another VLAN) may carry traffic |
//! | [`Extra`](NetworkDiscrepancy::Extra): a network of ours (`snf-net-<id>`) listed where the DB does not record it | `--fix-orphans` | adopted when the DB knows the network; removed when it does not and no instance uses it; else none |
//! | [`Pool`](NetworkDiscrepancy::Pool): a pool whose free list disagrees with the held addresses | `--fix-unsynced` | free list rebuilt |
//! | the NIC findings of [`super::nics`] | `--fix-stale` (missing), `--fix-orphans` (extra), none (differs) | NIC added, NIC removed |

use serde::{Deserialize, Serialize};

use super::FixClass;
use super::nics::{ExtraNic, MissingNic, NicDiffers, NicFinding};
use crate::ids::{BackendId, VmId};
use crate::network::{GANETI_NETWORK_PREFIX, PoolCheck};
use crate::ports::NetworkInfo;

/// A network as the DB knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedNetwork {
    /// Id.
    pub id: String,
    /// The clusters it is recorded on.
    pub on: Vec<BackendId>,
    /// The Ganeti NIC mode it is connected with.
    pub mode: String,
    /// The link it is connected with.
    pub link: String,
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetworkDiscrepancy {
    /// Recorded on `backend`, not listed there.
    Missing {
        /// The network.
        network_id: String,
        /// The cluster.
        backend: BackendId,
    },
    /// Recorded and listed on `backend`, but not connected to `groups`.
    Disconnected {
        /// The network.
        network_id: String,
        /// The cluster.
        backend: BackendId,
        /// The node groups it is not connected to.
        groups: Vec<String>,
    },
    /// Connected to `group` with another mode or link than the DB's.
    Miswired {
        /// The network.
        network_id: String,
        /// The cluster.
        backend: BackendId,
        /// The node group.
        group: String,
        /// Ganeti's mode.
        mode: String,
        /// Ganeti's link.
        link: String,
        /// The network's mode.
        want_mode: String,
        /// The network's link.
        want_link: String,
    },
    /// Listed on `backend` with our prefix, not recorded there.
    Extra {
        /// The Ganeti name.
        name: String,
        /// The network, if the DB has it.
        network_id: Option<String>,
        /// The cluster.
        backend: BackendId,
        /// Instances with a NIC on it.
        instances: Vec<String>,
    },
    /// A pool whose free list and held addresses disagree.
    Pool(PoolCheck),
    /// A port's or floating IP's NIC the instance lacks.
    MissingNic(MissingNic),
    /// A NIC of ours on an instance the DB does not want there.
    ExtraNic(ExtraNic),
    /// A NIC whose MAC, IPv4, network or name differ from its port's.
    NicDiffers(NicDiffers),
}

impl From<NicFinding> for NetworkDiscrepancy {
    fn from(f: NicFinding) -> Self {
        match f {
            NicFinding::Missing(m) => NetworkDiscrepancy::MissingNic(m),
            NicFinding::Extra(e) => NetworkDiscrepancy::ExtraNic(e),
            NicFinding::Differs(d) => NetworkDiscrepancy::NicDiffers(d),
        }
    }
}

impl NetworkDiscrepancy {
    /// Which flag fixes it ([`FixClass::Manual`]: none does).
    pub fn fix_class(&self) -> FixClass {
        match self {
            NetworkDiscrepancy::Missing { .. }
            | NetworkDiscrepancy::Disconnected { .. }
            | NetworkDiscrepancy::MissingNic(_) => FixClass::Stale,
            NetworkDiscrepancy::Extra {
                network_id: None,
                instances,
                ..
            } if !instances.is_empty() => FixClass::Manual,
            NetworkDiscrepancy::Extra { .. } | NetworkDiscrepancy::ExtraNic(_) => FixClass::Orphans,
            NetworkDiscrepancy::Pool(_) => FixClass::Unsynced,
            NetworkDiscrepancy::Miswired { .. } | NetworkDiscrepancy::NicDiffers(_) => {
                FixClass::Manual
            }
        }
    }

    /// The server concerned, for NIC findings.
    pub fn vm(&self) -> Option<VmId> {
        match self {
            NetworkDiscrepancy::MissingNic(m) => Some(m.vm),
            NetworkDiscrepancy::ExtraNic(e) => Some(e.vm),
            NetworkDiscrepancy::NicDiffers(d) => Some(d.vm),
            _ => None,
        }
    }
}

/// The disagreements between the DB's networks and one cluster's listing;
/// `groups` are the cluster's node groups (`None`: they could not be
/// listed, so connections are not checked).
pub fn diff_backend(
    recorded: &[RecordedNetwork],
    backend: BackendId,
    listed: &[NetworkInfo],
    groups: Option<&[String]>,
) -> Vec<NetworkDiscrepancy> {
    let mut out = Vec::new();
    for n in recorded.iter().filter(|n| n.on.contains(&backend)) {
        let name = crate::network::ganeti_network_name(&n.id);
        let Some(l) = listed.iter().find(|l| l.name == name) else {
            out.push(NetworkDiscrepancy::Missing {
                network_id: n.id.clone(),
                backend,
            });
            continue;
        };
        let Some(groups) = groups else {
            continue;
        };
        let unconnected: Vec<String> = groups
            .iter()
            .filter(|g| !l.groups.iter().any(|(lg, _, _)| lg == *g))
            .cloned()
            .collect();
        if !unconnected.is_empty() {
            out.push(NetworkDiscrepancy::Disconnected {
                network_id: n.id.clone(),
                backend,
                groups: unconnected,
            });
        }
        for (group, mode, link) in &l.groups {
            if *mode != n.mode || *link != n.link {
                out.push(NetworkDiscrepancy::Miswired {
                    network_id: n.id.clone(),
                    backend,
                    group: group.clone(),
                    mode: mode.clone(),
                    link: link.clone(),
                    want_mode: n.mode.clone(),
                    want_link: n.link.clone(),
                });
            }
        }
    }
    for l in listed {
        let Some(id) = l.name.strip_prefix(GANETI_NETWORK_PREFIX) else {
            continue;
        };
        let known = recorded.iter().find(|n| n.id == id);
        if known.is_some_and(|n| n.on.contains(&backend)) {
            continue;
        }
        out.push(NetworkDiscrepancy::Extra {
            name: l.name.clone(),
            network_id: known.map(|n| n.id.clone()),
            backend,
            instances: l.instances.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, groups: &[(&str, &str, &str)]) -> NetworkInfo {
        NetworkInfo {
            name: name.into(),
            groups: groups
                .iter()
                .map(|(g, m, l)| (g.to_string(), m.to_string(), l.to_string()))
                .collect(),
            ..NetworkInfo::default()
        }
    }

    fn rec(id: &str, on: &[BackendId]) -> RecordedNetwork {
        RecordedNetwork {
            id: id.into(),
            on: on.to_vec(),
            mode: "bridged".into(),
            link: "prv3".into(),
        }
    }

    #[test]
    fn missing_extra_and_foreign() {
        let b = BackendId(1);
        let recorded = vec![rec("a", &[b]), rec("b", &[]), rec("c", &[b])];
        let got = diff_backend(
            &recorded,
            b,
            &[
                listed("snf-net-c", &[]),
                listed("snf-net-b", &[]),
                listed("snf-net-zz", &[]),
                listed("public", &[]),
            ],
            None,
        );
        assert_eq!(
            got,
            vec![
                NetworkDiscrepancy::Missing {
                    network_id: "a".into(),
                    backend: b
                },
                NetworkDiscrepancy::Extra {
                    name: "snf-net-b".into(),
                    network_id: Some("b".into()),
                    backend: b,
                    instances: vec![]
                },
                NetworkDiscrepancy::Extra {
                    name: "snf-net-zz".into(),
                    network_id: None,
                    backend: b,
                    instances: vec![]
                },
            ]
        );
        assert!(diff_backend(&recorded[2..], b, &[listed("snf-net-c", &[])], None).is_empty());
    }

    #[test]
    fn a_group_left_out_or_wired_differently_is_found() {
        let b = BackendId(1);
        let groups = ["default".to_string(), "rack2".to_string()];
        let recorded = vec![rec("a", &[b]), rec("b", &[b]), rec("c", &[b])];
        let got = diff_backend(
            &recorded,
            b,
            &[
                // connected everywhere as recorded: clean
                listed(
                    "snf-net-a",
                    &[("default", "bridged", "prv3"), ("rack2", "bridged", "prv3")],
                ),
                // disconnected from every group, not removed
                listed("snf-net-b", &[]),
                // one group left, the other on another bridge
                listed("snf-net-c", &[("rack2", "bridged", "br0")]),
            ],
            Some(&groups),
        );
        assert_eq!(
            got,
            vec![
                NetworkDiscrepancy::Disconnected {
                    network_id: "b".into(),
                    backend: b,
                    groups: groups.to_vec(),
                },
                NetworkDiscrepancy::Disconnected {
                    network_id: "c".into(),
                    backend: b,
                    groups: vec!["default".into()],
                },
                NetworkDiscrepancy::Miswired {
                    network_id: "c".into(),
                    backend: b,
                    group: "rack2".into(),
                    mode: "bridged".into(),
                    link: "br0".into(),
                    want_mode: "bridged".into(),
                    want_link: "prv3".into(),
                },
            ]
        );
        assert_eq!(got[0].fix_class(), FixClass::Stale);
        assert_eq!(got[2].fix_class(), FixClass::Manual);
        // groups unknown: only presence is checked
        assert!(diff_backend(&recorded[1..2], b, &[listed("snf-net-b", &[])], None).is_empty());
    }
}
