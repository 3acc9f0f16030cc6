//! Picks the Ganeti cluster for a new VM.
//!
//! [`choose_backend`] is a pure function over the candidates' flags and
//! loads; [`allocate`] gathers the loads through the [`GanetiBackend`]
//! port (never asking a drained or offline cluster) and calls it.
//!
//! Policy: skip drained and offline clusters, clusters whose load could not
//! be read, and clusters without enough free memory for the VM; among the
//! rest prefer the fewest instances, then the most free memory, then the
//! lowest backend id (deterministic).

use std::cmp::Reverse;

use synnefo_core::BackendError;
use synnefo_core::ids::BackendId;
use synnefo_core::model::Backend;
use synnefo_core::ports::{ClusterLoad, GanetiBackend};

/// One cluster as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The cluster (Synnefo's backend id).
    pub id: BackendId,
    /// No new VMs.
    pub drained: bool,
    /// Its RAPI did not answer: the cluster is skipped.
    pub offline: bool,
    /// Its load, `None` if it could not be read.
    pub load: Option<ClusterLoad>,
}

/// The chosen cluster, or `None` if no candidate fits `ram_mib`.
pub fn choose_backend(candidates: &[Candidate], ram_mib: u64) -> Option<BackendId> {
    candidates
        .iter()
        .filter(|c| !c.drained && !c.offline)
        .filter_map(|c| c.load.map(|l| (c.id, l)))
        .filter(|(_, l)| l.mem_free_mib >= ram_mib)
        .min_by_key(|(id, l)| (l.instances, Reverse(l.mem_free_mib), *id))
        .map(|(id, _)| id)
}

/// Reads the load of every usable backend and chooses one.
pub async fn allocate(
    backends: &[Backend],
    ganeti: &dyn GanetiBackend,
    ram_mib: u64,
) -> Result<BackendId, BackendError> {
    let mut candidates = Vec::with_capacity(backends.len());
    for b in backends {
        let usable = !b.drained && !b.offline;
        let load = if usable {
            match ganeti.cluster_load(b.id).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(backend = %b.name, error = %e, "cannot read cluster load; skipping it");
                    None
                }
            }
        } else {
            None
        };
        candidates.push(Candidate {
            id: b.id,
            drained: b.drained,
            offline: b.offline,
            load,
        });
    }
    choose_backend(&candidates, ram_mib).ok_or_else(|| {
        BackendError::NoBackend(format!(
            "none of {} cluster(s) is usable with {ram_mib} MiB free (drained, offline, unreachable or full)",
            backends.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use synnefo_core::ports::MockGanetiBackend;

    fn backend(id: i64, drained: bool, offline: bool) -> Backend {
        Backend {
            id: BackendId(id),
            name: format!("c{id}"),
            host: format!("c{id}.example.org"),
            port: 5080,
            drained,
            offline,
            created: Default::default(),
        }
    }

    fn load(instances: u64, free: u64) -> Option<ClusterLoad> {
        Some(ClusterLoad {
            instances,
            mem_total_mib: 100_000,
            mem_free_mib: free,
        })
    }

    fn cand(id: i64, l: Option<ClusterLoad>) -> Candidate {
        Candidate {
            id: BackendId(id),
            drained: false,
            offline: false,
            load: l,
        }
    }

    #[test]
    fn fewest_instances_then_most_memory_then_lowest_id() {
        let c = [
            cand(1, load(10, 5000)),
            cand(2, load(3, 1000)),
            cand(3, load(3, 4000)),
        ];
        assert_eq!(choose_backend(&c, 512), Some(BackendId(3)));
        let tie = [cand(7, load(3, 4000)), cand(5, load(3, 4000))];
        assert_eq!(choose_backend(&tie, 0), Some(BackendId(5)));
    }

    #[test]
    fn skips_drained_offline_unknown_and_full() {
        let mut drained = cand(1, load(0, 9000));
        drained.drained = true;
        let mut offline = cand(2, load(0, 9000));
        offline.offline = true;
        let unknown = cand(3, None);
        let full = cand(4, load(0, 100));
        let ok = cand(5, load(50, 2000));
        assert_eq!(
            choose_backend(&[drained, offline, unknown, full, ok], 1024),
            Some(BackendId(5))
        );
        assert_eq!(
            choose_backend(&[drained, offline, unknown, full], 1024),
            None
        );
        assert_eq!(choose_backend(&[], 0), None);
    }

    #[tokio::test]
    async fn allocate_never_asks_drained_or_offline_clusters() {
        let mut mock = MockGanetiBackend::new();
        mock.expect_cluster_load()
            .withf(|b| *b == BackendId(3))
            .times(1)
            .returning(|_| {
                Ok(ClusterLoad {
                    instances: 2,
                    mem_total_mib: 8192,
                    mem_free_mib: 4096,
                })
            });
        // Any call for backends 1 or 2 fails the test: no expectation matches.
        let backends = [
            backend(1, true, false),
            backend(2, false, true),
            backend(3, false, false),
        ];
        assert_eq!(
            allocate(&backends, &mock, 1024).await.unwrap(),
            BackendId(3)
        );
    }

    #[tokio::test]
    async fn allocate_skips_unreachable_clusters_and_picks_least_loaded() {
        let mut mock = MockGanetiBackend::new();
        mock.expect_cluster_load().returning(|b| match b.0 {
            1 => Err(BackendError::Unavailable("down".into())),
            2 => Ok(ClusterLoad {
                instances: 9,
                mem_total_mib: 8192,
                mem_free_mib: 6000,
            }),
            _ => Ok(ClusterLoad {
                instances: 4,
                mem_total_mib: 8192,
                mem_free_mib: 2000,
            }),
        });
        let backends = [
            backend(1, false, false),
            backend(2, false, false),
            backend(3, false, false),
        ];
        assert_eq!(
            allocate(&backends, &mock, 1024).await.unwrap(),
            BackendId(3)
        );
        // Nothing has 4 GiB besides backend 2.
        assert_eq!(
            allocate(&backends, &mock, 4096).await.unwrap(),
            BackendId(2)
        );
        assert!(matches!(
            allocate(&backends, &mock, 65536).await,
            Err(BackendError::NoBackend(_))
        ));
    }
}
