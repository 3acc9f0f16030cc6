use super::*;
use crate::ids::{FlavorId, JobId};
use crate::messages::Notification;
use crate::ports::MockVmStore;
use crate::state::{JobStatus, OpCode, OpStatusEvent, OperState};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
        assert_eq!(one.state.operstate, OperState::Stopped);
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
