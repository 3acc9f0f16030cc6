//! The store under concurrent writers: optimistic concurrency, the quota race, a batch's timing.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

use synnefo_core::StoreError;
use synnefo_core::ids::{JobId, VmId};
use synnefo_core::model::{AccessIps, NewVm, Quota, Token};
use synnefo_core::ports::{IdentityStore, VmStateUpdate, VmStore};
use synnefo_core::state::{
    JobStatus, OpCode, OpStatusEvent, OperState, Transition, apply_op_status,
};
use synnefo_core::store::SeaStore;

use crate::fixtures::*;

/// Loads, applies `event`, writes with the loaded version; on `Conflict`
/// reloads and re-applies. Returns (versions written, conflicts seen).
pub(crate) async fn apply_until_done(
    s: &SeaStore,
    id: VmId,
    event: &OpStatusEvent,
) -> (Vec<i64>, u32) {
    let mut conflicts = 0;
    let mut written = Vec::new();
    loop {
        let vm = s.vm(id).await.unwrap().unwrap();
        let next = match apply_op_status(&vm.state, event) {
            Transition::Applied(next) => next,
            Transition::Ignored(_) => return (written, conflicts),
        };
        match s
            .update_vm_state(&VmStateUpdate {
                id,
                expected_version: vm.version,
                state: next,
                nics: None,
                resize: None,
                action_log: None,
                image: None,
            })
            .await
        {
            Ok(stored) => {
                assert_eq!(stored.version, vm.version + 1);
                written.push(stored.version);
                return (written, conflicts);
            }
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// Two tasks race to apply different events to the same VMs; each retries
/// on `Conflict`. Every version is won by exactly one writer, and the end
/// state holds both events (equal to applying them in order).
pub(crate) async fn concurrent_state_updates(s: &SeaStore) {
    let t = tenant(s).await;
    let rounds = 40;
    let mut total_conflicts = 0;
    for round in 0..rounds {
        let vm = create(s, &t, &format!("race-{round}")).await;
        // A: the create succeeded (sets operstate); B: a later job is running
        // (sets the job fields). Whichever order they land in, both count.
        let a = ev(100, OpCode::InstanceCreate, JobStatus::Success, 10);
        let b = OpStatusEvent {
            op_index: 1,
            ..ev(101, OpCode::InstanceSetParams, JobStatus::Running, 20)
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |e: OpStatusEvent| {
            let s = s.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                apply_until_done(&s, vm.id, &e).await
            })
        };
        let (ha, hb) = (spawn(a.clone()), spawn(b.clone()));
        let (wa, ca) = ha.await.unwrap();
        let (wb, cb) = hb.await.unwrap();
        total_conflicts += ca + cb;
        let mut versions: Vec<i64> = wa.iter().chain(wb.iter()).copied().collect();
        versions.sort_unstable();
        assert_eq!(
            versions,
            vec![vm.version + 1, vm.version + 2],
            "one winner per version"
        );
        let stored = s.vm(vm.id).await.unwrap().unwrap();
        let expected = applied(&applied(&vm.state, &a), &b);
        assert_eq!(
            stored.state, expected,
            "round {round}: both updates reflected"
        );
        assert_eq!(stored.state.operstate(), OperState::Started);
        assert_eq!(stored.state.job().and_then(|j| j.job_id), Some(JobId(101)));
    }
    eprintln!(
        "concurrent_state_updates: {total_conflicts} conflicts over {rounds} rounds, all retried"
    );

    // The same through batches: two dispatchers write overlapping batches.
    let n = 60;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(create(s, &t, &format!("batch-race-{i}")).await.id);
    }
    let a = ev(200, OpCode::InstanceCreate, JobStatus::Success, 10);
    let b = OpStatusEvent {
        op_index: 1,
        ..ev(201, OpCode::InstanceSetParams, JobStatus::Running, 20)
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let spawn = |e: OpStatusEvent, reverse: bool| {
        let s = s.clone();
        let barrier = barrier.clone();
        let mut ids = ids.clone();
        if reverse {
            ids.reverse();
        }
        tokio::spawn(async move {
            barrier.wait().await;
            let mut pending = ids;
            let mut conflicts = 0u32;
            while !pending.is_empty() {
                let vms = s.vms(&pending).await.unwrap();
                let updates: Vec<VmStateUpdate> = vms
                    .iter()
                    .filter_map(|vm| match apply_op_status(&vm.state, &e) {
                        Transition::Applied(next) => Some(VmStateUpdate {
                            id: vm.id,
                            expected_version: vm.version,
                            state: next,
                            nics: None,
                            resize: None,
                            action_log: None,
                            image: None,
                        }),
                        Transition::Ignored(_) => None,
                    })
                    .collect();
                let res = match s.update_vm_states(&updates).await {
                    Ok(res) => res,
                    // whole-batch contention (deadlock victim, busy): retry all
                    Err(StoreError::Conflict(_)) => {
                        conflicts += 1;
                        continue;
                    }
                    Err(e) => panic!("batch failed: {e}"),
                };
                pending = updates
                    .iter()
                    .zip(res)
                    .filter_map(|(u, r)| match r {
                        Ok(()) => None,
                        Err(StoreError::Conflict(_)) => {
                            conflicts += 1;
                            Some(u.id)
                        }
                        Err(e) => panic!("update failed: {e}"),
                    })
                    .collect();
            }
            conflicts
        })
    };
    let (ha, hb) = (spawn(a.clone(), false), spawn(b.clone(), true));
    let conflicts = ha.await.unwrap() + hb.await.unwrap();
    for vm in s.vms(&ids).await.unwrap() {
        assert_eq!(vm.state.operstate(), OperState::Started, "vm {}", vm.id);
        assert_eq!(
            vm.state.job().and_then(|j| j.job_id),
            Some(JobId(201)),
            "vm {}",
            vm.id
        );
        assert_eq!(vm.version, 3, "vm {}: exactly two writes", vm.id);
    }
    eprintln!("concurrent batches: {conflicts} conflicts, all retried");
}

/// 50 concurrent creates against a quota of 20 servers: exactly 20 win.
pub(crate) async fn quota_race(s: &SeaStore) {
    let t = tenant(s).await;
    let quota = Quota {
        servers: Some(20),
        vcpus: None,
        ram_mib: None,
    };
    s.set_quota(&t.project.id, quota).await.unwrap();
    let nv = new_vm(&t, "racer");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        let nv = nv.clone();
        tasks.push(tokio::spawn(async move { s.create_vm(&nv, quota).await }));
    }
    let (mut ok, mut exceeded) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::QuotaExceeded {
                resource: "servers",
                ..
            }) => exceeded += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, exceeded), (20, 30));
    assert_eq!(s.usage(&t.project.id).await.unwrap().servers, 20);

    // Batches: 12 concurrent batches of 3 against 20 servers: exactly 6
    // batches are stored whole, the others not at all.
    let t = tenant(s).await;
    s.set_quota(&t.project.id, quota).await.unwrap();
    let batch: Vec<NewVm> = (0..3).map(|i| new_vm(&t, &format!("batch-{i}"))).collect();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let s = s.clone();
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            s.create_vms(&batch, &AccessIps::default(), quota).await
        }));
    }
    let (mut ok, mut exceeded) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(vms) => {
                assert_eq!(vms.len(), 3);
                ok += 1
            }
            Err(StoreError::QuotaExceeded {
                resource: "servers",
                ..
            }) => exceeded += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, exceeded), (6, 6));
    assert_eq!(s.usage(&t.project.id).await.unwrap().servers, 18);
}

/// Issue 19: the metadata limit holds under concurrent merges (checked in
/// the write's transaction after the VM row is locked); revoking a token
/// revokes those rescoped from it (same user and expiry, issued no
/// earlier) and nothing else; a new password revokes the user's tokens,
/// other user changes do not.
pub(crate) async fn hardening_races(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "meta-race").await;
    let mut tasks = Vec::new();
    for w in 0..30 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let items: BTreeMap<String, String> = (0..100)
                .map(|k| (format!("k{w}-{k}"), "v".to_string()))
                .collect();
            s.set_vm_metadata(vm.id, &items, false).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(m) => {
                assert!(m.len() <= 128, "a merge returned {} items", m.len());
                ok += 1
            }
            Err(StoreError::QuotaExceeded { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let kept = s.vm(vm.id).await.unwrap().unwrap().metadata.len();
    assert!(
        kept <= 128,
        "{kept} metadata items after 30 concurrent merges"
    );
    assert_eq!((ok, refused), (1, 29), "exactly one merge of 100 fits");

    let tok = |digest: &str, issued: DateTime<Utc>, expires: DateTime<Utc>| Token {
        digest: digest.to_string(),
        user_id: t.user.id.clone(),
        project_id: t.project.id.clone(),
        issued,
        expires,
        revoked: false,
    };
    let digest = |p: &str| format!("{:0>64}", unique(p).replace('-', ""));
    let (parent, child, other) = (digest("p"), digest("c"), digest("o"));
    let expires = at(4_000_000_000, 250_000);
    s.store_token(&tok(&parent, at(1_700_000_000, 1), expires))
        .await
        .unwrap();
    s.store_token(&tok(&child, at(1_700_000_005, 7), expires))
        .await
        .unwrap();
    s.store_token(&tok(&other, at(1_700_000_010, 0), at(4_000_000_001, 0)))
        .await
        .unwrap();
    s.revoke_token(&parent).await.unwrap();
    assert!(s.token(&child).await.unwrap().unwrap().revoked, "cascade");
    assert!(!s.token(&other).await.unwrap().unwrap().revoked);

    s.update_user(&t.user.id, None, Some(true)).await.unwrap();
    assert!(!s.token(&other).await.unwrap().unwrap().revoked);
    s.update_user(&t.user.id, Some("$argon2id$new".into()), None)
        .await
        .unwrap();
    assert!(
        s.token(&other).await.unwrap().unwrap().revoked,
        "a new password revokes the user's tokens"
    );
}

/// Times a dispatcher-sized batch (printed; not asserted).
pub(crate) async fn batch_timing(s: &SeaStore, label: &str) {
    let t = tenant(s).await;
    let mut vms = Vec::new();
    for i in 0..256 {
        vms.push(create(s, &t, &format!("bench-{i}")).await);
    }
    let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
    let mut best = Duration::MAX;
    for round in 0..5u64 {
        let current = s.vms(&ids).await.unwrap();
        let updates: Vec<VmStateUpdate> = current
            .iter()
            .map(|vm| VmStateUpdate {
                id: vm.id,
                expected_version: vm.version,
                state: applied(
                    &vm.state,
                    &OpStatusEvent {
                        op_index: 0,
                        ..ev(
                            1000 + round,
                            OpCode::InstanceSetParams,
                            JobStatus::Running,
                            1,
                        )
                    },
                ),
                nics: if round % 2 == 0 {
                    Some(vec![nic(0, "10.9.0.1")])
                } else {
                    None
                },
                resize: None,
                action_log: None,
                image: None,
            })
            .collect();
        let start = Instant::now();
        let res = s.update_vm_states(&updates).await.unwrap();
        best = best.min(start.elapsed());
        assert!(res.iter().all(|r| r.is_ok()));
    }
    let start = Instant::now();
    let current = s.vms(&ids).await.unwrap();
    let load = start.elapsed();
    let start = Instant::now();
    for vm in current.iter().take(64) {
        s.update_vm_state(&VmStateUpdate {
            id: vm.id,
            expected_version: vm.version,
            state: vm.state.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        })
        .await
        .unwrap();
    }
    let single = start.elapsed() / 64;
    eprintln!(
        "TIMING {label}: update_vm_states(256) best {:?} ({:.0} updates/s); vms(256) {:?}; update_vm_state {:?} each",
        best,
        256.0 / best.as_secs_f64(),
        load,
        single
    );
}
