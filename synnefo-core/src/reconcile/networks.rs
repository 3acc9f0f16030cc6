//! Networks: what the DB records on each cluster against what the cluster
//! lists, as a pure diff (the service lists and fixes; see
//! [`Networking::reconcile`](crate::service::network::Networking::reconcile)).
//!
//! Three kinds, mapped to the server flags: a network recorded on a
//! cluster that no longer lists it (removed behind our back: `stale`, fixed
//! by making it again), a network of ours (`snf-net-<id>`) listed where the
//! DB does not record it (`orphan`: adopted when the DB knows the network,
//! removed when it does not and no instance uses it), and a pool whose
//! free list disagrees with the held addresses (`unsynced`, fixed by
//! rebuilding the free list).

use serde::{Deserialize, Serialize};

use crate::ids::BackendId;
use crate::network::{GANETI_NETWORK_PREFIX, PoolCheck};
use crate::ports::NetworkInfo;

/// A network as the DB knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedNetwork {
    /// Id.
    pub id: String,
    /// The clusters it is recorded on.
    pub on: Vec<BackendId>,
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
}

/// The disagreements between the DB's networks and one cluster's listing.
pub fn diff_backend(
    recorded: &[RecordedNetwork],
    backend: BackendId,
    listed: &[NetworkInfo],
) -> Vec<NetworkDiscrepancy> {
    let mut out = Vec::new();
    for n in recorded {
        let name = crate::network::ganeti_network_name(&n.id);
        if n.on.contains(&backend) && !listed.iter().any(|l| l.name == name) {
            out.push(NetworkDiscrepancy::Missing {
                network_id: n.id.clone(),
                backend,
            });
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

    fn listed(name: &str) -> NetworkInfo {
        NetworkInfo {
            name: name.into(),
            ..NetworkInfo::default()
        }
    }

    #[test]
    fn missing_extra_and_foreign() {
        let b = BackendId(1);
        let recorded = vec![
            RecordedNetwork {
                id: "a".into(),
                on: vec![b],
            },
            RecordedNetwork {
                id: "b".into(),
                on: vec![],
            },
            RecordedNetwork {
                id: "c".into(),
                on: vec![b],
            },
        ];
        let got = diff_backend(
            &recorded,
            b,
            &[
                listed("snf-net-c"),
                listed("snf-net-b"),
                listed("snf-net-zz"),
                listed("public"),
            ],
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
        assert!(diff_backend(&recorded[2..], b, &[listed("snf-net-c")]).is_empty());
    }
}
