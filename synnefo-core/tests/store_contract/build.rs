//! Area of the store contract: snf-image's build progress (only while
//! BUILD, only upwards, the version untouched, the project's generation
//! bumped) and diagnostics (deduplicated, bounded per server, newest
//! first), and the user data a create stores.

use synnefo_core::StoreError;
use synnefo_core::ids::VmId;
use synnefo_core::messages::{DiagnosticLevel, NewDiagnostic};
use synnefo_core::model::{BuildWrite, NewVmAttrs, Quota};
use synnefo_core::ports::{VmStateUpdate, VmStore};
use synnefo_core::state::{JobStatus, OpCode};
use synnefo_core::store::SeaStore;

use crate::fixtures::*;

fn d(source: &str, message: &str) -> NewDiagnostic {
    NewDiagnostic {
        level: DiagnosticLevel::Info,
        source: source.into(),
        message: message.into(),
        details: Some("ünïcode ✓".into()),
    }
}

pub(crate) async fn build_progress(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "building").await;
    let progress = |id| async move {
        s.server_attrs_of(&[id])
            .await
            .unwrap()
            .get(&id)
            .map_or(0, |a| a.build_progress)
    };
    assert_eq!(progress(vm.id).await, 0);
    let generation = s.vm_generation(&t.project.id).await.unwrap();
    assert_eq!(
        s.record_build_progress(vm.id, 40).await.unwrap(),
        BuildWrite::Applied
    );
    assert_eq!(progress(vm.id).await, 40);
    assert!(s.vm_generation(&t.project.id).await.unwrap() > generation);
    // duplicates and older percentages change nothing
    for p in [40, 12, 0] {
        assert_eq!(
            s.record_build_progress(vm.id, p).await.unwrap(),
            BuildWrite::Ignored,
            "{p}"
        );
    }
    assert_eq!(
        s.record_build_progress(vm.id, 70).await.unwrap(),
        BuildWrite::Applied
    );
    let stored = s.vm(vm.id).await.unwrap().unwrap();
    assert_eq!(stored.version, vm.version, "not a state write");
    assert_eq!(stored.state, vm.state);
    // once the create succeeded, nothing moves it
    let done = applied(
        &stored.state,
        &ev(
            5,
            OpCode::InstanceCreate,
            JobStatus::Success,
            1_700_000_000_000_000,
        ),
    );
    s.update_vm_state(&VmStateUpdate {
        id: vm.id,
        expected_version: stored.version,
        state: done,
        nics: None,
        resize: None,
        image: None,
        action_log: None,
    })
    .await
    .unwrap();
    assert_eq!(
        s.record_build_progress(vm.id, 90).await.unwrap(),
        BuildWrite::Ignored
    );
    assert_eq!(progress(vm.id).await, 70);
    assert!(matches!(
        s.record_build_progress(VmId(i64::MAX), 10).await,
        Err(StoreError::NotFound(_))
    ));

    // diagnostics: stored once, newest first, the newest 3 kept
    let other = create(s, &t, "other").await;
    for i in 0..5i64 {
        let w = s
            .record_diagnostic(
                vm.id,
                1_700_000_000_000_000 + i,
                &d("image-info", &format!("m{i}")),
                3,
            )
            .await
            .unwrap();
        assert_eq!(w, BuildWrite::Applied);
    }
    assert_eq!(
        s.record_diagnostic(vm.id, 1_700_000_000_000_004, &d("image-info", "m4"), 3)
            .await
            .unwrap(),
        BuildWrite::Ignored,
        "a redelivery"
    );
    s.record_diagnostic(other.id, 1, &d("image-error", "x"), 3)
        .await
        .unwrap();
    let list = s.diagnostics(vm.id, 100).await.unwrap();
    let msgs: Vec<&str> = list.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(msgs, ["m4", "m3", "m2"]);
    assert_eq!(list[0].details.as_deref(), Some("ünïcode ✓"));
    assert_eq!(list[0].level, DiagnosticLevel::Info);
    assert_eq!(
        list[0].source_time.timestamp_micros(),
        1_700_000_000_000_004
    );
    assert_eq!(s.diagnostics(vm.id, 1).await.unwrap().len(), 1);
    let latest = s
        .latest_diagnostics(&[vm.id, other.id, VmId(i64::MAX)])
        .await
        .unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[&vm.id].message, "m4");
    assert_eq!(latest[&other.id].message, "x");
    assert!(matches!(
        s.record_diagnostic(VmId(i64::MAX), 1, &d("image-info", "x"), 3)
            .await,
        Err(StoreError::NotFound(_))
    ));

    // user data: stored with a create, read in bulk
    let attrs = NewVmAttrs {
        user_data: Some("I2Nsb3VkLWNvbmZpZwo=".into()),
        ..NewVmAttrs::default()
    };
    let with = s
        .create_vms_with(&[new_vm(&t, "ud")], &attrs, Quota::default())
        .await
        .unwrap();
    let got = s.user_data_of(&[with[0].id, vm.id]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[&with[0].id], "I2Nsb3VkLWNvbmZpZwo=");
}
