use super::*;
use crate::ids::{FlavorId, JobId};
use crate::messages::Notification;
use crate::ports::MockVmStore;
use crate::state::{JobStatus, OpCode, OpStatusEvent, OperState};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn vm(id: i64, version: i64) -> Vm {
    Vm {
        id: VmId(id),
        user_id: "u".into(),
        project_id: "p".into(),
        name: format!("vm{id}"),
        flavor_id: FlavorId(1),
        image_id: "img".into(),
        backend_id: None,
        state: VmState::new_build(),
        metadata: BTreeMap::new(),
        created: Utc::now(),
        updated: Utc::now(),
        last_reconciled: None,
        version,
    }
}

fn op(vm: i64, job: u64, opcode: OpCode, status: JobStatus) -> Notification {
    Notification::OpStatus {
        vm: VmId(vm),
        event: OpStatusEvent {
            job_id: JobId(job),
            op_index: 0,
            opcode,
            status,
            log_msg: None,
            error: None,
            time_us: job as i64 * 100 + status.rank() as i64,
        },
        nics: None,
        beparams: None,
    }
}

#[tokio::test]
async fn modify_vm_retries_after_losing_a_race() {
    let mut store = MockVmStore::new();
    let loads = Arc::new(AtomicUsize::new(0));
    let l = loads.clone();
    store.expect_vm().returning(move |_| {
        let n = l.fetch_add(1, Ordering::SeqCst) as i64;
        Ok(Some(vm(1, n)))
    });
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    store.expect_update_vm_state().returning(move |u| {
        if w.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(StoreError::Conflict("vm 1".into()))
        } else {
            assert_eq!(
                u.expected_version, 1,
                "recomputed from the reloaded version"
            );
            let mut v = vm(1, 2);
            v.state = u.state.clone();
            Ok(v)
        }
    });
    let n = op(1, 5, OpCode::InstanceCreate, JobStatus::Success);
    assert_eq!(
        apply_notification(&store, &n).await.unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(writes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_vms_are_not_found() {
    let mut store = MockVmStore::new();
    store.expect_vm().returning(|_| Ok(None));
    store.expect_update_vm_state().times(0);
    let err = apply_notification(
        &store,
        &op(9, 1, OpCode::InstanceStartup, JobStatus::Success),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServiceError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_batch_is_one_read_and_one_write() {
    let mut store = MockVmStore::new();
    store.expect_vms().times(1).returning(|ids| {
        Ok(ids
            .iter()
            .filter(|i| i.0 != 3)
            .map(|i| vm(i.0, 0))
            .collect())
    });
    store.expect_update_vm_states().times(1).returning(|ups| {
        assert_eq!(ups.len(), 2, "one update per VM, events folded");
        let one = ups.iter().find(|u| u.id == VmId(1)).unwrap();
        assert_eq!(one.state.operstate(), OperState::Stopped);
        Ok(ups.iter().map(|_| Ok(())).collect())
    });
    store.expect_vm().times(0);
    let batch = vec![
        op(1, 1, OpCode::InstanceCreate, JobStatus::Success),
        op(2, 2, OpCode::InstanceCreate, JobStatus::Running),
        op(1, 3, OpCode::InstanceShutdown, JobStatus::Success),
        op(1, 3, OpCode::InstanceShutdown, JobStatus::Success),
        op(3, 4, OpCode::InstanceCreate, JobStatus::Success),
    ];
    let out = apply_notifications(&store, &batch).await.unwrap();
    assert!(matches!(out[0], Ok(ApplyOutcome::Applied)));
    assert!(matches!(out[2], Ok(ApplyOutcome::Applied)));
    assert!(
        matches!(out[3], Ok(ApplyOutcome::Ignored(_))),
        "duplicate within the batch"
    );
    assert!(
        matches!(out[4], Err(ServiceError::NotFound(_))),
        "VM 3 is not in the store"
    );
}

#[tokio::test]
async fn a_batch_with_only_duplicates_writes_nothing() {
    let mut store = MockVmStore::new();
    let n = op(1, 1, OpCode::InstanceCreate, JobStatus::Success);
    let mut current = vm(1, 3);
    if let Transition::Applied(s) = apply_op_status(
        &current.state,
        match &n {
            Notification::OpStatus { event, .. } => event,
            _ => unreachable!(),
        },
    ) {
        current.state = s;
    }
    store
        .expect_vms()
        .returning(move |_| Ok(vec![current.clone()]));
    store.expect_update_vm_states().times(0);
    let out = apply_notifications(&store, &[n]).await.unwrap();
    assert!(matches!(out[0], Ok(ApplyOutcome::Ignored(_))));
}

fn nic(ip: &str) -> Nic {
    Nic {
        index: 0,
        ip: Some(ip.into()),
        mac: Some("aa:00:00:00:00:01".into()),
        network: Some("public".into()),
        link: None,
        mode: Some("routed".into()),
    }
}

/// Issue 17 item 3, as Synnefo's callbacks have it: a removal that ends
/// the server deletes its NICs; a hook's NIC report arriving after that
/// (reordered) does not bring them back; before it, NICs follow the hook.
#[test]
fn a_removed_server_loses_its_nics_and_a_late_report_does_not_restore_them() {
    let v = vm(1, 1);
    let created = match change_for(
        &v,
        &v.state,
        &op(1, 1, OpCode::InstanceCreate, JobStatus::Success),
    ) {
        Some(c) => c.state,
        None => panic!("create applies"),
    };
    let report = Notification::NetStatus {
        vm: VmId(1),
        nics: vec![nic("192.0.2.5")],
        time_us: Some(150),
    };
    let running = change_for(&v, &created, &report).expect("NICs follow the hook");
    assert_eq!(running.nics.as_deref(), Some(&[nic("192.0.2.5")][..]));

    let removed = change_for(
        &v,
        &created,
        &op(1, 2, OpCode::InstanceRemove, JobStatus::Success),
    )
    .expect("the removal applies");
    assert_eq!(removed.state.operstate(), OperState::Destroyed);
    assert_eq!(removed.nics, Some(Vec::new()), "NIC rows deleted");
    assert!(
        change_for(&v, &removed.state, &report).is_none(),
        "a late NIC report changes nothing on a removed server"
    );
    // A duplicate of the removal changes nothing (and so deletes nothing twice).
    assert!(
        change_for(
            &v,
            &removed.state,
            &op(1, 2, OpCode::InstanceRemove, JobStatus::Success)
        )
        .is_none()
    );
    // A failed op other than a removal keeps the NICs as they are.
    let failed = change_for(
        &v,
        &created,
        &op(1, 3, OpCode::InstanceReboot, JobStatus::Error),
    )
    .expect("recorded");
    assert_eq!(failed.nics, None);
}

fn resize(vm: i64, job: u64, vcpus: Option<i32>, ram_mib: Option<i32>) -> Notification {
    match op(vm, job, OpCode::InstanceSetParams, JobStatus::Success) {
        Notification::OpStatus {
            vm, event, nics, ..
        } => Notification::OpStatus {
            vm,
            event,
            nics,
            beparams: Some(BeParams {
                vcpus,
                ram_mib,
                requested: None,
            }),
        },
        other => other,
    }
}

/// Issue 17 item 3: a resize Ganeti reports carries its parameters to the
/// store (which takes the flavor from them) only from an event the state
/// machine applies: a stale or duplicate one never undoes a later resize.
#[test]
fn a_reported_resize_reaches_the_store_only_from_an_applied_event() {
    let v = vm(1, 1);
    let created = change_for(
        &v,
        &v.state,
        &op(1, 1, OpCode::InstanceCreate, JobStatus::Success),
    )
    .expect("create applies")
    .state;
    let first = change_for(&v, &created, &resize(1, 5, Some(4), None)).expect("applies");
    assert_eq!(
        first.resize,
        Some(BeParams {
            vcpus: Some(4),
            ram_mib: None,
            requested: None,
        })
    );
    let second = change_for(&v, &first.state, &resize(1, 6, None, Some(4096))).expect("applies");
    // the older resize, delivered again after the newer one: nothing
    assert!(change_for(&v, &second.state, &resize(1, 5, Some(4), None)).is_none());
    assert!(change_for(&v, &second.state, &resize(1, 6, None, Some(4096))).is_none());
    // other ops carry no resize
    let stopped = change_for(
        &v,
        &second.state,
        &op(1, 7, OpCode::InstanceShutdown, JobStatus::Success),
    )
    .expect("applies");
    assert_eq!(stopped.resize, None);
}

/// A running server's resize: its reboot job (submitted after the
/// set-params job, so numbered above it) may be seen before the set-params
/// job ends; the set-params job still gives the flavor, being the resize's
/// own.
#[test]
fn a_running_resize_takes_the_flavor_of_its_own_job_after_news_of_its_reboot() {
    let v = vm(1, 1);
    let created = change_for(
        &v,
        &v.state,
        &op(1, 1, OpCode::InstanceCreate, JobStatus::Success),
    )
    .expect("create applies")
    .state;
    assert_eq!(created.operstate(), OperState::Started);
    let flavor = |id: i64, vcpus: i32, ram_mib: i32| crate::model::Flavor {
        id: FlavorId(id),
        name: format!("f{id}"),
        vcpus,
        ram_mib,
        disk_gib: 1,
        disk_template: "plain".into(),
        is_public: true,
        deleted: false,
    };
    let resizing = crate::state::record_submitted_job(
        &crate::state::start_resize(&created, &flavor(1, 1, 512), &flavor(2, 4, 4096), true)
            .unwrap(),
        JobId(5),
    );
    let queued_reboot = change_for(
        &v,
        &resizing,
        &op(1, 6, OpCode::InstanceReboot, JobStatus::Waiting),
    )
    .expect("the reboot's news applies")
    .state;
    let params = change_for(&v, &queued_reboot, &resize(1, 5, Some(4), Some(4096)))
        .expect("the set-params job applies");
    assert_eq!(
        params.resize,
        Some(BeParams {
            vcpus: Some(4),
            ram_mib: Some(4096),
            requested: Some(FlavorId(2)),
        })
    );
    // Another set-params job (not the resize's, not the newest): no
    // flavor from it.
    assert!(
        change_for(&v, &params.state, &resize(1, 3, Some(2), None))
            .and_then(|c| c.resize)
            .is_none()
    );
}

/// Two resizes of one VM in one batch reach the store as what Ganeti
/// holds after both.
#[tokio::test]
async fn a_batch_folds_two_resizes_of_one_vm() {
    let mut store = MockVmStore::new();
    let mut v = vm(1, 1);
    v.state = match apply_op_status(
        &v.state,
        match &op(1, 1, OpCode::InstanceCreate, JobStatus::Success) {
            Notification::OpStatus { event, .. } => event,
            _ => unreachable!(),
        },
    ) {
        crate::state::Transition::Applied(s) => s,
        other => panic!("{other:?}"),
    };
    let loaded = v.clone();
    store
        .expect_vms()
        .returning(move |_| Ok(vec![loaded.clone()]));
    let written = Arc::new(Mutex::new(Vec::new()));
    let w = written.clone();
    store.expect_update_vm_states().returning(move |ups| {
        w.lock().unwrap().extend(ups.iter().map(|u| u.resize));
        Ok(ups.iter().map(|_| Ok(())).collect())
    });
    let batch = [resize(1, 5, Some(4), None), resize(1, 6, None, Some(4096))];
    let out = apply_notifications(&store, &batch).await.unwrap();
    assert!(
        out.iter().all(|r| matches!(r, Ok(ApplyOutcome::Applied))),
        "{out:?}"
    );
    assert_eq!(
        *written.lock().unwrap(),
        vec![Some(BeParams {
            vcpus: Some(4),
            ram_mib: Some(4096),
            requested: None,
        })]
    );
}

fn net_report(time_us: i64, ip: &str) -> Notification {
    Notification::NetStatus {
        vm: VmId(1),
        nics: vec![nic(ip)],
        time_us: Some(time_us),
    }
}

/// Issue 17 item 3: NIC reports (the hook's, and those a successful op
/// carries) take effect in event-time order, as Synnefo's `backendtime`
/// check has it: an older one arriving late changes nothing.
#[test]
fn nic_reports_apply_in_event_time_order() {
    let v = vm(1, 1);
    let mut state = change_for(
        &v,
        &v.state,
        &op(1, 1, OpCode::InstanceCreate, JobStatus::Success),
    )
    .expect("create applies")
    .state;
    let newer = change_for(&v, &state, &net_report(1_000, "192.0.2.2")).expect("applies");
    assert_eq!(newer.nics.as_deref(), Some(&[nic("192.0.2.2")][..]));
    state = newer.state;
    assert!(
        change_for(&v, &state, &net_report(900, "192.0.2.1")).is_none(),
        "older"
    );
    assert!(
        change_for(&v, &state, &net_report(1_000, "192.0.2.2")).is_none(),
        "same"
    );
    // a successful op older than the report on record: its state applies,
    // its NICs do not
    let mut reboot = op(1, 2, OpCode::InstanceReboot, JobStatus::Success);
    if let Notification::OpStatus { event, nics, .. } = &mut reboot {
        event.time_us = 950;
        *nics = Some(vec![nic("192.0.2.9")]);
    }
    let c = change_for(&v, &state, &reboot).expect("the reboot applies");
    assert_eq!(c.nics, None);
    // one newer than it: both apply
    if let Notification::OpStatus { event, .. } = &mut reboot {
        event.job_id = JobId(3);
        event.time_us = 1_100;
    }
    let c = change_for(&v, &state, &reboot).expect("applies");
    assert_eq!(c.nics.as_deref(), Some(&[nic("192.0.2.9")][..]));
    assert_eq!(c.state.nics_time_us(), Some(1_100));
    // a report without a time (an old hook) cannot be ordered: taken
    let untimed = Notification::NetStatus {
        vm: VmId(1),
        nics: vec![nic("192.0.2.7")],
        time_us: None,
    };
    let c = change_for(&v, &c.state, &untimed).expect("taken");
    assert_eq!(c.state.nics_time_us(), Some(1_100), "the guard stays");
}

proptest::proptest! {
    /// Any arrival order of NIC reports with distinct times, with
    /// duplicates, leaves the newest report's NICs.
    #[test]
    fn any_order_of_nic_reports_leaves_the_newest(
        times in proptest::collection::btree_set(1i64..1_000_000, 1..10),
        seed in proptest::prelude::any::<u64>(),
        dups in 0usize..5,
    ) {
        let v = vm(1, 1);
        let times: Vec<i64> = times.into_iter().collect();
        let mut reports: Vec<(i64, String)> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, format!("192.0.2.{}", i + 1)))
            .collect();
        for d in 0..dups {
            reports.push(reports[d % times.len()].clone());
        }
        let mut x = seed | 1;
        for i in (1..reports.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (x >> 33) as usize % (i + 1);
            reports.swap(i, j);
        }
        let mut state = v.state.clone();
        let mut nics = None;
        for (t, ip) in &reports {
            if let Some(c) = change_for(&v, &state, &net_report(*t, ip)) {
                state = c.state;
                nics = c.nics;
            }
        }
        let newest = times.len();
        proptest::prop_assert_eq!(nics, Some(vec![nic(&format!("192.0.2.{newest}"))]));
        proptest::prop_assert_eq!(state.nics_time_us(), times.last().copied());
    }
}
