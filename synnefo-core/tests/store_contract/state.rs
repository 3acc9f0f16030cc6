//! Areas of the store contract: state updates, reconciliation, listing generations, placement.

use std::collections::BTreeMap;

use chrono::Utc;
use synnefo_core::StoreError;
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{ActionLog, BeParams, InstanceAction, Quota, VmPlacement};
use synnefo_core::ports::{BackendStore, IdentityStore, VmQuery, VmStateUpdate, VmStore};
use synnefo_core::state::{Action, JobStatus, OpCode, RebootKind};
use synnefo_core::store::SeaStore;

use crate::fixtures::*;

pub(crate) async fn state_updates(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "state").await;

    // every field of the state round-trips
    let e1 = ev(
        7,
        OpCode::InstanceCreate,
        JobStatus::Success,
        1_700_000_000_000_001,
    );
    let mut st = applied(&vm.state, &e1).to_stored();
    st.suspended = true;
    st.nics_time_us = Some(1_700_000_000_000_002);
    // a failed job keeps its log line and Ganeti's typed error
    let job = st.job.as_mut().expect("recorded");
    job.status = JobStatus::Error;
    job.error = synnefo_core::state::OpError::from_result(&serde_json::json!([
        "OpExecError",
        ["Could not allocate 'ą' ✓ disk", "insufficient_resources"]
    ]));
    assert!(job.error.is_some());
    st.action = Some(synnefo_core::state::PendingAction {
        action: Action::Reboot(RebootKind::Hard),
        job_id: Some(JobId(u64::from(u32::MAX) + 5)),
    });
    let st = synnefo_core::state::VmState::from_stored(st);
    let up = VmStateUpdate {
        id: vm.id,
        expected_version: vm.version,
        state: st.clone(),
        nics: Some(vec![nic(0, "192.0.2.1")]),
        resize: None,
        action_log: None,
        image: None,
    };
    let v2 = s.update_vm_state(&up).await.unwrap();
    assert_eq!(v2.state, st);
    assert_eq!(v2.version, vm.version + 1);
    assert!(v2.updated >= vm.updated);
    assert_eq!(s.nics(vm.id).await.unwrap(), vec![nic(0, "192.0.2.1")]);
    assert_eq!(s.vm(vm.id).await.unwrap(), Some(v2.clone()));

    // a stale version conflicts and changes nothing
    match s.update_vm_state(&up).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.vm(vm.id).await.unwrap(), Some(v2.clone()));
    let missing = VmStateUpdate {
        id: VmId(i64::MAX),
        ..up.clone()
    };
    assert!(matches!(
        s.update_vm_state(&missing).await,
        Err(StoreError::NotFound(_))
    ));
    // nics: None leaves NICs alone
    let v3 = s
        .update_vm_state(&VmStateUpdate {
            id: vm.id,
            expected_version: v2.version,
            state: v2.state.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        })
        .await
        .unwrap();
    assert_eq!(v3.version, v2.version + 1);
    assert_eq!(s.nics(vm.id).await.unwrap().len(), 1);
    // job ids beyond BIGINT are refused, not wrapped
    let huge = synnefo_test_support::builders::edited(&v3.state, |h| {
        h.last_event = Some(synnefo_core::state::EventPosition {
            job_id: u64::MAX,
            op_index: 0,
            status_rank: 0,
            time_us: 0,
        })
    });
    assert!(matches!(
        s.update_vm_state(&VmStateUpdate {
            id: vm.id,
            expected_version: v3.version,
            state: huge.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        })
        .await,
        Err(StoreError::Integrity(_))
    ));

    // batches
    assert!(s.update_vm_states(&[]).await.unwrap().is_empty());
    let a = create(s, &t, "batch-a").await;
    let b = create(s, &t, "batch-b").await;
    let c = create(s, &t, "batch-c").await;
    let ea = applied(
        &a.state,
        &ev(10, OpCode::InstanceCreate, JobStatus::Success, 1),
    );
    let eb = applied(
        &b.state,
        &ev(11, OpCode::InstanceCreate, JobStatus::Error, 2),
    );
    let ea2 = applied(
        &ea,
        &ev(12, OpCode::InstanceShutdown, JobStatus::Success, 3),
    );
    let batch = vec![
        VmStateUpdate {
            id: a.id,
            expected_version: a.version,
            state: ea.clone(),
            nics: Some(vec![nic(0, "10.1.0.1")]),
            resize: None,
            action_log: None,
            image: None,
        },
        VmStateUpdate {
            id: b.id,
            expected_version: b.version,
            state: eb.clone(),
            nics: Some(vec![]),
            resize: None,
            action_log: None,
            image: None,
        },
        // computed from a stale version: conflicts alone
        VmStateUpdate {
            id: c.id,
            expected_version: c.version - 1,
            state: eb.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        },
        // a second update of `a`, computed from the first one's result
        VmStateUpdate {
            id: a.id,
            expected_version: a.version + 1,
            state: ea2.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        },
        // and a third, stale relative to the second
        VmStateUpdate {
            id: a.id,
            expected_version: a.version + 1,
            state: eb.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        },
        VmStateUpdate {
            id: VmId(i64::MAX),
            expected_version: 1,
            state: eb.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        },
        VmStateUpdate {
            id: c.id,
            expected_version: c.version,
            state: huge,
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        },
    ];
    s.set_nics(b.id, &[nic(0, "10.2.0.1")]).await.unwrap();
    let b = s.vm(b.id).await.unwrap().unwrap();
    let batch: Vec<VmStateUpdate> = batch
        .into_iter()
        .map(|mut u| {
            if u.id == b.id {
                u.expected_version = b.version;
            }
            u
        })
        .collect();
    let res = s.update_vm_states(&batch).await.unwrap();
    let kinds: Vec<&str> = res
        .iter()
        .map(|r| match r {
            Ok(()) => "ok",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::NotFound(_)) => "notfound",
            Err(StoreError::Integrity(_)) => "integrity",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "ok",
            "ok",
            "conflict",
            "ok",
            "conflict",
            "notfound",
            "integrity"
        ]
    );
    let a2 = s.vm(a.id).await.unwrap().unwrap();
    assert_eq!(a2.state, ea2);
    assert_eq!(
        a2.version,
        a.version + 2,
        "two applied updates, two versions"
    );
    assert_eq!(
        s.nics(a.id).await.unwrap(),
        vec![nic(0, "10.1.0.1")],
        "NICs of the first update survive the second"
    );
    let b2 = s.vm(b.id).await.unwrap().unwrap();
    assert_eq!((b2.state.clone(), b2.version), (eb, b.version + 1));
    assert!(
        s.nics(b.id).await.unwrap().is_empty(),
        "Some(vec![]) clears NICs"
    );
    assert_eq!(
        s.vm(c.id).await.unwrap().unwrap(),
        c,
        "conflicting updates write nothing"
    );
}

pub(crate) async fn reconciliation(s: &SeaStore) {
    let t = tenant(s).await;
    // Other suites' VMs exist in this database: work relative to them.
    let mut vms = Vec::new();
    for i in 0..4 {
        vms.push(create(s, &t, &format!("rec-{i}")).await);
    }
    let everyone: Vec<VmId> = s
        .list_vms(&VmQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|v| v.id)
        .collect();
    let t0 = at(1_600_000_000, 0);
    s.mark_reconciled(&everyone, t0).await.unwrap();
    // vms[3] never reconciled, vms[1] long ago, vms[0] recently, vms[2] middle
    s.mark_reconciled(&[vms[1].id], at(1_000_000_000, 0))
        .await
        .unwrap();
    s.mark_reconciled(&[vms[2].id], at(1_500_000_000, 5))
        .await
        .unwrap();
    s.mark_reconciled(&[vms[0].id], at(1_700_000_000, 0))
        .await
        .unwrap();
    let fresh = create(s, &t, "rec-never").await;
    let deleted = create(s, &t, "rec-deleted").await;
    let st = synnefo_test_support::builders::marked_deleted(&deleted.state);
    s.update_vm_state(&VmStateUpdate {
        id: deleted.id,
        expected_version: deleted.version,
        state: st,
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    })
    .await
    .unwrap();

    let got: Vec<VmId> = s
        .least_recently_reconciled(3)
        .await
        .unwrap()
        .iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(
        got,
        vec![fresh.id, vms[1].id, vms[2].id],
        "never first, then oldest; deleted skipped"
    );
    let v1 = s.vm(vms[1].id).await.unwrap().unwrap();
    assert_eq!(v1.last_reconciled, Some(at(1_000_000_000, 0)));
    assert_eq!(
        v1.version, vms[1].version,
        "mark_reconciled does not bump the version"
    );
    assert_eq!(v1.updated, vms[1].updated, "nor `updated`");
    let ids: Vec<VmId> = (0..1100).map(|i| VmId(i + 1)).chain([fresh.id]).collect();
    s.mark_reconciled(&ids, at(1_800_000_000, 0))
        .await
        .expect("long id lists are chunked");
    let got: Vec<VmId> = s
        .least_recently_reconciled(1)
        .await
        .unwrap()
        .iter()
        .map(|v| v.id)
        .collect();
    assert_ne!(got, vec![fresh.id]);
    assert!(s.least_recently_reconciled(0).await.unwrap().is_empty());
}

/// Every committed change to a project's VMs bumps its generation; reads,
/// bookkeeping, failed writes and other projects' changes do not.
pub(crate) async fn vm_generations(s: &SeaStore) {
    let t = tenant(s).await;
    let other = tenant(s).await;
    let generation = |p: &str| {
        let p = p.to_string();
        async move { s.vm_generation(&p).await.expect("generation") }
    };
    let mut g = generation(&t.project.id).await;
    let other_g = generation(&other.project.id).await;
    fn bumped(g: &mut i64, now: i64, what: &str) {
        assert!(
            now > *g,
            "{what} did not bump the generation ({now} <= {g})"
        );
        *g = now;
    }

    let a = create(s, &t, "gen-a").await;
    bumped(&mut g, generation(&t.project.id).await, "create");
    let b = create(s, &t, "gen-b").await;
    bumped(&mut g, generation(&t.project.id).await, "second create");

    let st = applied(
        &a.state,
        &ev(
            1,
            OpCode::InstanceCreate,
            JobStatus::Success,
            1_700_000_000_000_000,
        ),
    );
    let up = VmStateUpdate {
        id: a.id,
        expected_version: a.version,
        state: st.clone(),
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    };
    let a2 = s.update_vm_state(&up).await.unwrap();
    bumped(&mut g, generation(&t.project.id).await, "state update");
    assert!(matches!(
        s.update_vm_state(&up).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(generation(&t.project.id).await, g, "a conflict bumped it");

    let batch = [
        VmStateUpdate {
            id: a.id,
            expected_version: a2.version,
            state: a2.state.clone(),
            nics: Some(vec![nic(0, "192.0.2.9")]),
            resize: None,
            action_log: None,
            image: None,
        },
        VmStateUpdate {
            id: b.id,
            expected_version: b.version,
            state: st.clone(),
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        },
    ];
    let res = s.update_vm_states(&batch).await.unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    bumped(&mut g, generation(&t.project.id).await, "batch update");
    // a batch whose every update conflicts writes nothing
    let res = s.update_vm_states(&batch).await.unwrap();
    assert!(res.iter().all(Result::is_err), "{res:?}");
    assert_eq!(generation(&t.project.id).await, g, "a lost batch bumped it");

    s.rename_vm(a.id, "gen-a2").await.unwrap();
    bumped(&mut g, generation(&t.project.id).await, "rename");
    let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
    s.set_vm_metadata(a.id, &meta, false).await.unwrap();
    bumped(&mut g, generation(&t.project.id).await, "metadata set");
    s.delete_vm_metadata(a.id, "k").await.unwrap();
    bumped(&mut g, generation(&t.project.id).await, "metadata delete");
    assert!(s.delete_vm_metadata(a.id, "k").await.is_err());
    assert_eq!(
        generation(&t.project.id).await,
        g,
        "a failed delete bumped it"
    );
    s.set_nics(b.id, &[nic(0, "192.0.2.10")]).await.unwrap();
    bumped(&mut g, generation(&t.project.id).await, "set NICs");

    // reads and reconciliation bookkeeping leave it alone
    s.list_vms(&VmQuery::default()).await.unwrap();
    s.mark_reconciled(&[a.id, b.id], Utc::now()).await.unwrap();
    assert_eq!(generation(&t.project.id).await, g);
    // a create over quota rolls back with its bump
    let full = Quota {
        servers: Some(0),
        ..Quota::default()
    };
    assert!(s.create_vm(&new_vm(&t, "over"), full).await.is_err());
    assert_eq!(
        generation(&t.project.id).await,
        g,
        "a refused create bumped it"
    );

    assert_eq!(generation(&other.project.id).await, other_g);
    let both = s
        .vm_generations(&[
            t.project.id.clone(),
            other.project.id.clone(),
            "no-such-project".into(),
        ])
        .await
        .unwrap();
    assert_eq!(
        both,
        std::collections::HashMap::from([
            (t.project.id.clone(), g),
            (other.project.id.clone(), other_g)
        ])
    );
    assert!(matches!(
        s.vm_generation("no-such-project").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Reconciliation's flavor and cluster fix: versioned like a state update,
/// moves the listing generation and the project's usage with it.
pub(crate) async fn placement(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "placed").await;
    let bigger = flavor(s, 4, 4096).await;
    let cluster = s
        .upsert_backend(&unique("cluster"), "ganeti.example.org", 5080)
        .await
        .unwrap();
    let generation = s.vm_generation(&t.project.id).await.unwrap();
    let usage = s.usage(&t.project.id).await.unwrap();
    assert_eq!((usage.vcpus, usage.ram_mib), (2, 1024));

    let to = VmPlacement {
        flavor_id: bigger.id,
        backend_id: Some(cluster.id),
    };
    let moved = s.update_vm_placement(vm.id, vm.version, &to).await.unwrap();
    assert_eq!(
        (moved.flavor_id, moved.backend_id),
        (bigger.id, Some(cluster.id))
    );
    assert_eq!(moved.version, vm.version + 1);
    assert_eq!(moved.state, vm.state, "the state is left alone");
    assert_eq!(s.vm(vm.id).await.unwrap(), Some(moved.clone()));
    assert!(s.vm_generation(&t.project.id).await.unwrap() > generation);
    let usage = s.usage(&t.project.id).await.unwrap();
    assert_eq!((usage.vcpus, usage.ram_mib), (4, 4096));

    // A stale version conflicts and changes nothing.
    let back = VmPlacement {
        flavor_id: t.flavor.id,
        backend_id: None,
    };
    assert!(matches!(
        s.update_vm_placement(vm.id, vm.version, &back).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.vm(vm.id).await.unwrap(), Some(moved.clone()));
    assert!(matches!(
        s.update_vm_placement(VmId(i64::MAX), 1, &back).await,
        Err(StoreError::NotFound(_))
    ));
    // An unknown flavor or cluster is refused, and nothing is written.
    for bad in [
        VmPlacement {
            flavor_id: FlavorId(i64::MAX),
            backend_id: None,
        },
        VmPlacement {
            flavor_id: t.flavor.id,
            backend_id: Some(BackendId(i64::MAX)),
        },
    ] {
        let got = s.update_vm_placement(vm.id, moved.version, &bad).await;
        assert!(
            matches!(got, Err(StoreError::Integrity(_))),
            "{bad:?}: {got:?}"
        );
        assert_eq!(s.vm(vm.id).await.unwrap(), Some(moved.clone()));
    }
    let again = s
        .update_vm_placement(vm.id, moved.version, &back)
        .await
        .unwrap();
    assert_eq!((again.flavor_id, again.backend_id), (t.flavor.id, None));
}

/// A resize Ganeti reports (a successful SET_PARAMS's beparams) gives the
/// VM the flavor they match in the same write as its state, on both write
/// paths; parameters no flavor has leave the flavor as it was.
pub(crate) async fn resize_from_backend(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "resized").await;
    let bigger = flavor(s, 4, 4096).await;
    let be = |vcpus: Option<i32>, ram_mib: Option<i32>| {
        Some(BeParams {
            vcpus,
            ram_mib,
            requested: None,
        })
    };

    // one VM, one transaction
    let up = VmStateUpdate {
        id: vm.id,
        expected_version: vm.version,
        state: vm.state.clone(),
        nics: None,
        resize: be(Some(4), Some(4096)),
        action_log: None,
        image: None,
    };
    let v = s.update_vm_state(&up).await.unwrap();
    assert_eq!(v.flavor_id, bigger.id);
    assert_eq!(v.version, vm.version + 1);
    let usage = s.usage(&t.project.id).await.unwrap();
    assert_eq!((usage.vcpus, usage.ram_mib), (4, 4096));

    // the batch path: back to the tenant's flavor, then a resize to
    // parameters no flavor has (3 vCPUs), which keeps it
    let back = VmStateUpdate {
        id: vm.id,
        expected_version: v.version,
        state: v.state.clone(),
        nics: None,
        resize: be(Some(2), Some(1024)),
        action_log: None,
        image: None,
    };
    let odd = VmStateUpdate {
        expected_version: v.version + 1,
        resize: be(Some(3), None),
        ..back.clone()
    };
    let results = s.update_vm_states(&[back, odd]).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let v = s.vm(vm.id).await.unwrap().unwrap();
    assert_eq!(v.flavor_id, t.flavor.id);
    assert_eq!(v.version, vm.version + 3);

    // only RAM given: the vCPUs stay the recorded flavor's
    let v = s
        .update_vm_state(&VmStateUpdate {
            id: vm.id,
            expected_version: v.version,
            state: v.state.clone(),
            nics: None,
            resize: be(None, Some(1024)),
            action_log: None,
            image: None,
        })
        .await
        .unwrap();
    assert_eq!(v.flavor_id, t.flavor.id);
    let usage = s.usage(&t.project.id).await.unwrap();
    assert_eq!((usage.vcpus, usage.ram_mib), (2, 1024));
}

/// The instance-action history: a create request's entry is written with
/// the VM; later entries ride on state writes (accepted, submitted,
/// failed) on both write paths; newest first; a deleted VM keeps it.
pub(crate) async fn instance_action_history(s: &SeaStore) {
    let t = tenant(s).await;
    let mut new = new_vm(&t, "audited");
    new.request_id = Some("req-create".into());
    let vm = s.create_vm(&new, Quota::default()).await.unwrap();
    let h = s.instance_actions(vm.id, 100).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].action.as_str(), h[0].request_id.as_str(), h[0].job_id),
        ("create", "req-create", None)
    );
    assert_eq!(h[0].user_id, t.user.id);
    assert_eq!(h[0].project_id, t.project.id);

    let entry = |request: &str, action: &str, at: i64| InstanceAction {
        vm: vm.id,
        request_id: request.into(),
        action: action.into(),
        user_id: t.user.id.clone(),
        project_id: t.project.id.clone(),
        start_time: at_us(at),
        updated: at_us(at),
        message: None,
        job_id: None,
    };
    let write = |v: &synnefo_core::model::Vm, log: ActionLog| VmStateUpdate {
        id: v.id,
        expected_version: v.version,
        state: v.state.clone(),
        nics: None,
        resize: None,
        action_log: Some(log),
        image: None,
    };
    // the create's job, then a reboot accepted and submitted
    let v = s
        .update_vm_state(&write(
            &vm,
            ActionLog::Submitted {
                request_id: "req-create".into(),
                job_id: JobId(11),
            },
        ))
        .await
        .unwrap();
    let v = s
        .update_vm_state(&write(
            &v,
            ActionLog::Accepted(entry("req-reboot", "reboot", 2_000_000_000_000_000)),
        ))
        .await
        .unwrap();
    let v = s
        .update_vm_state(&write(
            &v,
            ActionLog::Submitted {
                request_id: "req-reboot".into(),
                job_id: JobId(u64::from(u32::MAX) + 12),
            },
        ))
        .await
        .unwrap();
    // the batch path: a stop accepted and refused in one batch
    let accepted = write(
        &v,
        ActionLog::Accepted(entry("req-stop", "stop", 2_000_000_000_000_001)),
    );
    let failed = VmStateUpdate {
        expected_version: v.version + 1,
        action_log: Some(ActionLog::Failed {
            request_id: "req-stop".into(),
            reason: "cluster unreachable: ✗".into(),
        }),
        ..accepted.clone()
    };
    let results = s.update_vm_states(&[accepted, failed]).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // bounded: the newest first
    let newest = s.instance_actions(vm.id, 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].request_id, "req-stop");
    let h = s.instance_actions(vm.id, 100).await.unwrap();
    let summary: Vec<(&str, &str, Option<JobId>, bool)> = h
        .iter()
        .map(|a| {
            (
                a.action.as_str(),
                a.request_id.as_str(),
                a.job_id,
                a.message.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("stop", "req-stop", None, true),
            (
                "reboot",
                "req-reboot",
                Some(JobId(u64::from(u32::MAX) + 12)),
                false
            ),
            ("create", "req-create", Some(JobId(11)), false),
        ]
    );
    assert!(
        h[0].message
            .as_deref()
            .unwrap()
            .contains("cluster unreachable: ✗")
    );
    // `updated` moves with each later write (here to now, before the
    // future start times this test gave the entries)
    assert!(h[0].updated < h[0].start_time && h[1].updated < h[1].start_time);
    // a conflicting write records nothing
    let stale = write(
        &vm,
        ActionLog::Accepted(entry("req-lost", "start", 2_000_000_000_000_002)),
    );
    assert!(matches!(
        s.update_vm_state(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.instance_actions(vm.id, 100).await.unwrap().len(), 3);
    // another VM's history is its own
    let other = create(s, &t, "other").await;
    assert!(s.instance_actions(other.id, 100).await.unwrap().is_empty());
}
