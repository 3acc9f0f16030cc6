//! Area of the store contract: a resize's state round-trips, its quota
//! reservation is checked in the write that makes it, and the usage counts
//! the larger of a resize's flavors until the resize is over.

use synnefo_core::StoreError;
use synnefo_core::model::{BeParams, Flavor, Quota, Usage, Vm};
use synnefo_core::ports::{IdentityStore, VmStateUpdate, VmStore};
use synnefo_core::state::{
    OperState, ResizeStage, StoredVmState, VmState, confirm_resize, record_submitted_job,
    start_resize,
};
use synnefo_core::store::SeaStore;

use crate::fixtures::*;

fn update(vm: &Vm, state: VmState) -> VmStateUpdate {
    VmStateUpdate {
        id: vm.id,
        expected_version: vm.version,
        state,
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    }
}

/// A stopped VM of the tenant's project, of `flavor`.
async fn stopped(s: &SeaStore, t: &Tenant, name: &str, flavor: &Flavor) -> Vm {
    let mut new = t.new_vm(name);
    new.flavor = flavor.clone();
    let vm = s.create_vm(&new, Quota::default()).await.unwrap();
    let state = VmState::from_stored(StoredVmState::settled(OperState::Stopped));
    s.update_vm_state(&update(&vm, state)).await.unwrap()
}

pub(crate) async fn resize_reservations(s: &SeaStore) {
    let t = tenant(s).await;
    let small = flavor(s, 1, 512).await;
    let big = flavor(s, 2, 1024).await;
    let a = stopped(s, &t, "a", &small).await;
    let b = stopped(s, &t, "b", &small).await;
    let usage = |servers, vcpus, ram_mib| Usage {
        servers,
        vcpus,
        ram_mib,
    };
    assert_eq!(s.usage(&t.project.id).await.unwrap(), usage(2, 2, 1024));
    let quota = Quota {
        servers: None,
        vcpus: Some(3),
        ram_mib: None,
    };

    // Resizing `a` to `big` reserves the delta at once.
    let resizing = start_resize(&a.state, &small, &big, true).unwrap();
    let a = s
        .update_vm_state_within(&update(&a, resizing.clone()), quota)
        .await
        .unwrap();
    assert_eq!(a.state, resizing, "the resize round-trips");
    assert_eq!(
        a.flavor_id, small.id,
        "the flavor follows Ganeti, not the request"
    );
    assert_eq!(s.usage(&t.project.id).await.unwrap(), usage(2, 3, 1536));

    // `b` would need a fourth vCPU: refused, nothing written.
    let b_resizing = start_resize(&b.state, &small, &big, true).unwrap();
    match s
        .update_vm_state_within(&update(&b, b_resizing.clone()), quota)
        .await
    {
        Err(StoreError::QuotaExceeded {
            resource,
            limit,
            in_use,
            requested,
        }) => assert_eq!((resource, limit, in_use, requested), ("vcpus", 3, 3, 1)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(s.vm(b.id).await.unwrap().unwrap(), b, "b untouched");
    assert_eq!(s.usage(&t.project.id).await.unwrap(), usage(2, 3, 1536));

    // The job succeeds: Ganeti's parameters give `a` the new flavor; the
    // old one stays held while the owner may revert.
    let submitted = record_submitted_job(&a.state, synnefo_core::ids::JobId(21));
    let verifying = applied(
        &submitted,
        &ev(
            21,
            synnefo_core::state::OpCode::InstanceSetParams,
            synnefo_core::state::JobStatus::Success,
            1_700_000_000_000_021,
        ),
    );
    assert_eq!(
        verifying.resize().map(|r| r.stage),
        Some(ResizeStage::Verifying)
    );
    let a = s
        .update_vm_state(&VmStateUpdate {
            resize: Some(BeParams {
                vcpus: Some(2),
                ram_mib: Some(1024),
                requested: synnefo_core::state::target_flavor(&a.state),
            }),
            ..update(&a, verifying)
        })
        .await
        .unwrap();
    assert_eq!(a.flavor_id, big.id);
    assert_eq!(s.usage(&t.project.id).await.unwrap(), usage(2, 3, 1536));

    // Confirmed: only the new flavor counts.
    let a = s
        .update_vm_state(&update(&a, confirm_resize(&a.state).unwrap()))
        .await
        .unwrap();
    assert_eq!(a.state.resize(), None);
    assert_eq!(s.usage(&t.project.id).await.unwrap(), usage(2, 3, 1536));

    // A resize that does not grow a resource is not checked against it: a
    // project over a lowered limit can still shrink.
    let tight = Quota {
        servers: Some(1),
        vcpus: Some(1),
        ram_mib: Some(512),
    };
    let down = start_resize(&a.state, &big, &small, false).unwrap();
    let a = s
        .update_vm_state_within(&update(&a, down), tight)
        .await
        .expect("a downsize never needs more");
    assert_eq!(s.usage(&t.project.id).await.unwrap(), usage(2, 3, 1536));
    // `b` still does not fit (a's resize holds `big` until it is over)
    assert!(matches!(
        s.update_vm_state_within(&update(&b, b_resizing), quota)
            .await
            .map(|_| ()),
        Err(StoreError::QuotaExceeded { .. })
    ));
    // and a stale version is a conflict, as for any state write
    let mut stale = update(&a, a.state.clone());
    stale.expected_version -= 1;
    assert!(matches!(
        s.update_vm_state_within(&stale, Quota::default()).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Two resizes racing for the last vCPU of a project: exactly one gets it.
pub(crate) async fn resize_quota_race(s: &SeaStore) {
    let t = tenant(s).await;
    let small = flavor(s, 1, 512).await;
    let big = flavor(s, 2, 512).await;
    let quota = Quota {
        servers: None,
        vcpus: Some(3),
        ram_mib: None,
    };
    for round in 0..5 {
        let a = stopped(s, &t, &format!("race-a{round}"), &small).await;
        let b = stopped(s, &t, &format!("race-b{round}"), &small).await;
        let ua = update(&a, start_resize(&a.state, &small, &big, true).unwrap());
        let ub = update(&b, start_resize(&b.state, &small, &big, true).unwrap());
        let (ra, rb) = tokio::join!(
            s.update_vm_state_within(&ua, quota),
            s.update_vm_state_within(&ub, quota)
        );
        let won = [ra.is_ok(), rb.is_ok()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
        for r in [ra, rb] {
            if let Err(e) = r {
                assert!(matches!(e, StoreError::QuotaExceeded { .. }), "{e:?}");
            }
        }
        assert_eq!(s.usage(&t.project.id).await.unwrap().vcpus, 3);
        // both deleted: the next round starts from nothing
        for id in [a.id, b.id] {
            let vm = s.vm(id).await.unwrap().unwrap();
            let gone = synnefo_core::state::destroyed_without_ganeti(&vm.state);
            s.update_vm_state(&update(&vm, gone)).await.unwrap();
        }
        assert_eq!(s.usage(&t.project.id).await.unwrap().vcpus, 0);
    }
}
