//! Areas of the store contract: VMs and their listing, metadata, NICs.

use std::collections::BTreeMap;

use chrono::Utc;
use synnefo_core::StoreError;
use synnefo_core::ids::VmId;
use synnefo_core::model::{AccessIps, NameRegex, NewVm, Nic, Quota, Vm};
use synnefo_core::ports::{BackendStore, IdentityStore, VmQuery, VmStateUpdate, VmStore};
use synnefo_core::state::{Action, OperState, VmState, start_action};
use synnefo_core::store::SeaStore;

use crate::fixtures::*;

pub(crate) async fn vms_and_listing(s: &SeaStore) {
    let t = tenant(s).await;
    let other = tenant(s).await;
    let backend = s
        .upsert_backend(&unique("cluster"), "g", 5080)
        .await
        .unwrap();
    let f2 = flavor(s, 1, 512).await;

    let mut nv = new_vm(&t, "Web-1");
    nv.metadata = BTreeMap::from([("role".into(), "web".into()), ("env".into(), "prod".into())]);
    nv.backend_id = Some(backend.id);
    let before = Utc::now() - chrono::Duration::seconds(1);
    let web1 = s.create_vm(&nv, Quota::default()).await.unwrap();
    assert_eq!(web1.state, VmState::new_build());
    assert_eq!(web1.state.operstate(), OperState::Build);
    assert_eq!(web1.metadata, nv.metadata);
    assert_eq!(web1.backend_id, Some(backend.id));
    assert_eq!(web1.last_reconciled, None);
    assert!(web1.created >= before && web1.created == web1.updated);
    assert_eq!(
        s.vm(web1.id).await.unwrap(),
        Some(web1.clone()),
        "create returns what is stored"
    );

    let web2 = create(s, &t, "web-2").await;
    let mut nv = new_vm(&t, "db-1");
    nv.flavor = f2.clone();
    nv.image_id = "img-2".into();
    let db1 = s.create_vm(&nv, Quota::default()).await.unwrap();
    let foreign = create(s, &other, "web-3").await;
    let deleted = create(s, &t, "web-deleted").await;
    let del_state = start_action(&deleted.state, Action::Destroy).unwrap();
    let deleted = s
        .update_vm_state(&VmStateUpdate {
            id: deleted.id,
            expected_version: deleted.version,
            state: del_state,
            nics: None,
            resize: None,
            action_log: None,
            image: None,
        })
        .await
        .unwrap();
    assert!(deleted.state.deleted());
    assert!(
        web1.id < web2.id && web2.id < db1.id && db1.id < foreign.id && foreign.id < deleted.id
    );

    assert_eq!(s.vm(VmId(i64::MAX)).await.unwrap(), None);
    assert_eq!(
        s.vm(deleted.id).await.unwrap().map(|v| v.id),
        Some(deleted.id),
        "deleted VMs are still loadable"
    );
    let got: Vec<VmId> = s
        .vms(&[db1.id, VmId(i64::MAX), web1.id, db1.id])
        .await
        .unwrap()
        .iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(got, vec![web1.id, db1.id]);
    assert_eq!(s.vms(&[]).await.unwrap(), vec![]);
    let many: Vec<VmId> = (1..=1200).map(VmId).collect();
    assert!(
        s.vms(&many).await.unwrap().len() >= 5,
        "id lists longer than one IN chunk"
    );

    let ids = |vms: Vec<Vm>| vms.into_iter().map(|v| v.id).collect::<Vec<_>>();
    let mine = |q: VmQuery| VmQuery {
        project_id: Some(t.project.id.clone()),
        ..q
    };
    assert_eq!(
        ids(s.list_vms(&mine(VmQuery::default())).await.unwrap()),
        vec![web1.id, web2.id, db1.id]
    );
    assert_eq!(
        ids(s
            .list_vms(&mine(VmQuery {
                include_deleted: true,
                ..Default::default()
            }))
            .await
            .unwrap()),
        vec![web1.id, web2.id, db1.id, deleted.id]
    );
    assert_eq!(
        ids(s
            .list_vms(&mine(VmQuery {
                newest_first: true,
                ..Default::default()
            }))
            .await
            .unwrap()),
        vec![db1.id, web2.id, web1.id]
    );
    // metadata comes with listed VMs
    let listed = s.list_vms(&mine(VmQuery::default())).await.unwrap();
    assert_eq!(listed[0].metadata, web1.metadata);
    assert!(listed[1].metadata.is_empty());

    // name filters: substring is case-sensitive, exact is exact
    let q = |f: fn(&mut VmQuery)| {
        let mut q = mine(VmQuery::default());
        f(&mut q);
        q
    };
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.name_contains = Some("web".into())))
            .await
            .unwrap()),
        vec![web2.id]
    );
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.name_contains = Some("eb-".into())))
            .await
            .unwrap()),
        vec![web1.id, web2.id]
    );
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.name_contains = Some("%".into())))
            .await
            .unwrap()),
        vec![],
        "no LIKE wildcards"
    );
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.name_exact = Some("web-2".into())))
            .await
            .unwrap()),
        vec![web2.id]
    );
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.name_exact = Some("WEB-2".into())))
            .await
            .unwrap()),
        vec![]
    );
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.name_exact = Some("web".into())))
            .await
            .unwrap()),
        vec![]
    );
    // operstates
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.operstates = Some(vec![OperState::Build])))
            .await
            .unwrap())
        .len(),
        3
    );
    assert_eq!(
        ids(s
            .list_vms(&q(
                |q| q.operstates = Some(vec![OperState::Started, OperState::Error])
            ))
            .await
            .unwrap()),
        vec![]
    );
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.operstates = Some(vec![])))
            .await
            .unwrap()),
        vec![]
    );
    // flavor, image, backend
    let mut fq = mine(VmQuery::default());
    fq.flavor_id = Some(f2.id);
    assert_eq!(ids(s.list_vms(&fq).await.unwrap()), vec![db1.id]);
    assert_eq!(
        ids(s
            .list_vms(&q(|q| q.image_id = Some("img-2".into())))
            .await
            .unwrap()),
        vec![db1.id]
    );
    let bq = VmQuery {
        backend_id: Some(backend.id),
        ..Default::default()
    };
    assert_eq!(ids(s.list_vms(&bq).await.unwrap()), vec![web1.id]);
    // all projects (operator view)
    let all = ids(s.list_vms(&VmQuery::default()).await.unwrap());
    assert!(all.contains(&foreign.id) && all.contains(&web1.id) && !all.contains(&deleted.id));

    // pagination, both directions
    let page = |marker: Option<VmId>, newest_first: bool| {
        mine(VmQuery {
            marker,
            newest_first,
            limit: Some(2),
            ..Default::default()
        })
    };
    let p1 = ids(s.list_vms(&page(None, false)).await.unwrap());
    assert_eq!(p1, vec![web1.id, web2.id]);
    let p2 = ids(s.list_vms(&page(Some(web2.id), false)).await.unwrap());
    assert_eq!(p2, vec![db1.id]);
    assert_eq!(
        ids(s.list_vms(&page(Some(db1.id), false)).await.unwrap()),
        vec![]
    );
    let n1 = ids(s.list_vms(&page(None, true)).await.unwrap());
    assert_eq!(n1, vec![db1.id, web2.id]);
    assert_eq!(
        ids(s.list_vms(&page(Some(web2.id), true)).await.unwrap()),
        vec![web1.id]
    );
    assert_eq!(
        ids(s.list_vms(&q(|q| q.limit = Some(0))).await.unwrap()),
        vec![]
    );

    // changes-since, at microsecond precision
    let renamed = s.rename_vm(web2.id, "web-2b").await.unwrap();
    assert_eq!(renamed.name, "web-2b");
    assert_eq!(
        renamed.version,
        web2.version + 1,
        "rename bumps the version"
    );
    assert!(renamed.updated >= web2.updated);
    let mut cq = mine(VmQuery::default());
    cq.changes_since = Some(renamed.updated);
    assert_eq!(ids(s.list_vms(&cq).await.unwrap()), vec![web2.id]);
    cq.changes_since = Some(renamed.updated + chrono::Duration::microseconds(1));
    assert_eq!(ids(s.list_vms(&cq).await.unwrap()), vec![]);
    cq.changes_since = Some(deleted.updated);
    cq.include_deleted = true;
    assert_eq!(
        ids(s.list_vms(&cq).await.unwrap()),
        vec![web2.id, deleted.id]
    );
    assert!(matches!(
        s.rename_vm(VmId(i64::MAX), "x").await,
        Err(StoreError::NotFound(_))
    ));

    let n = s.count_vms().await.unwrap();
    create(s, &t, "one-more").await;
    assert_eq!(s.count_vms().await.unwrap(), n + 1);
}

pub(crate) async fn metadata(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "meta").await;
    let m = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };

    let got = s
        .set_vm_metadata(vm.id, &m(&[("a", "1"), ("b", "2")]), false)
        .await
        .unwrap();
    assert_eq!(got, m(&[("a", "1"), ("b", "2")]));
    let got = s
        .set_vm_metadata(vm.id, &m(&[("b", "20"), ("c", "3")]), false)
        .await
        .unwrap();
    assert_eq!(
        got,
        m(&[("a", "1"), ("b", "20"), ("c", "3")]),
        "merge overwrites and adds"
    );
    let got = s
        .set_vm_metadata(vm.id, &m(&[("A", "x"), ("z", "ünï \"q\"")]), true)
        .await
        .unwrap();
    assert_eq!(
        got,
        m(&[("A", "x"), ("z", "ünï \"q\"")]),
        "replace drops the rest; keys are case-sensitive"
    );
    let long = "v".repeat(5000);
    let got = s
        .set_vm_metadata(vm.id, &m(&[("long", &long)]), false)
        .await
        .unwrap();
    assert_eq!(got.get("long"), Some(&long));
    s.delete_vm_metadata(vm.id, "A").await.unwrap();
    assert!(matches!(
        s.delete_vm_metadata(vm.id, "A").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_vm_metadata(VmId(i64::MAX), "A").await,
        Err(StoreError::NotFound(_))
    ));
    let stored = s.vm(vm.id).await.unwrap().unwrap();
    assert_eq!(stored.metadata, m(&[("long", &long), ("z", "ünï \"q\"")]));
    assert_eq!(
        stored.version,
        vm.version + 5,
        "each metadata change bumps the version; a failed delete does not"
    );
    let cleared = s
        .set_vm_metadata(vm.id, &BTreeMap::new(), true)
        .await
        .unwrap();
    assert!(cleared.is_empty());
    assert!(matches!(
        s.set_vm_metadata(VmId(i64::MAX), &m(&[("a", "1")]), false)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn nics(s: &SeaStore) {
    let t = tenant(s).await;
    let a = create(s, &t, "nic-a").await;
    let b = create(s, &t, "nic-b").await;
    let c = create(s, &t, "nic-c").await;
    assert!(s.nics(a.id).await.unwrap().is_empty());
    let two = vec![nic(1, "10.0.0.2"), nic(0, "10.0.0.1")];
    s.set_nics(a.id, &two).await.unwrap();
    assert_eq!(
        s.nics(a.id).await.unwrap(),
        vec![nic(0, "10.0.0.1"), nic(1, "10.0.0.2")],
        "index order"
    );
    let bare = Nic {
        index: 0,
        ip: None,
        mac: None,
        network: None,
        link: None,
        mode: None,
    };
    s.set_nics(b.id, std::slice::from_ref(&bare)).await.unwrap();
    s.set_nics(a.id, &[nic(0, "2001:db8::1")]).await.unwrap();
    assert_eq!(
        s.nics(a.id).await.unwrap(),
        vec![nic(0, "2001:db8::1")],
        "set_nics replaces"
    );
    let all = s
        .nics_of(&[a.id, b.id, c.id, VmId(i64::MAX)])
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[&a.id], vec![nic(0, "2001:db8::1")]);
    assert_eq!(all[&b.id], vec![bare]);
    assert!(all[&c.id].is_empty());
    assert!(all[&VmId(i64::MAX)].is_empty());
    assert!(s.nics_of(&[]).await.unwrap().is_empty());
    assert!(matches!(
        s.set_nics(VmId(i64::MAX), &[]).await,
        Err(StoreError::NotFound(_))
    ));
    s.set_nics(a.id, &[]).await.unwrap();
    assert!(s.nics(a.id).await.unwrap().is_empty());
}

/// `create_vms`: one transaction, quota judged on the whole batch, input
/// order; access addresses stored, read back in bulk and changed.
pub(crate) async fn batch_creates_and_access_ips(s: &SeaStore) {
    let t = tenant(s).await;
    let quota = Quota {
        servers: Some(4),
        vcpus: None,
        ram_mib: None,
    };
    s.set_quota(&t.project.id, quota).await.unwrap();
    let ips = AccessIps {
        v4: Some("192.0.2.7".parse().unwrap()),
        v6: Some("2001:db8::7".parse().unwrap()),
    };
    let batch: Vec<NewVm> = (1..=3).map(|i| new_vm(&t, &format!("b-{i}"))).collect();
    let vms = s.create_vms(&batch, &ips, quota).await.unwrap();
    let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["b-1", "b-2", "b-3"]);
    assert!(vms.windows(2).all(|w| w[0].id < w[1].id));
    // 3 + 2 > 4: nothing of the second batch is stored
    let two: Vec<NewVm> = (4..=5).map(|i| new_vm(&t, &format!("b-{i}"))).collect();
    match s.create_vms(&two, &AccessIps::default(), quota).await {
        Err(StoreError::QuotaExceeded {
            resource: "servers",
            requested: 2,
            in_use: 3,
            ..
        }) => {}
        other => panic!("expected servers quota exceeded, got {other:?}"),
    }
    assert_eq!(s.usage(&t.project.id).await.unwrap().servers, 3);
    assert!(s.create_vms(&[], &ips, quota).await.unwrap().is_empty());
    // a batch across projects is refused
    let other = tenant(s).await;
    let mixed = vec![new_vm(&t, "m-1"), new_vm(&other, "m-2")];
    assert!(matches!(
        s.create_vms(&mixed, &ips, Quota::default()).await,
        Err(StoreError::Integrity(_))
    ));

    let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
    let plain = create(s, &other, "no-access-ips").await;
    let mut all = ids.clone();
    all.push(plain.id);
    let got = s.access_ips_of(&all).await.unwrap();
    assert_eq!(got.len(), 3, "a VM without access addresses is absent");
    assert!(ids.iter().all(|id| got[id] == ips));
    let before = s.vm(ids[0]).await.unwrap().unwrap().version;
    let v4_only = AccessIps {
        v4: Some("198.51.100.1".parse().unwrap()),
        v6: None,
    };
    s.set_access_ips(ids[0], &v4_only).await.unwrap();
    assert_eq!(s.access_ips_of(&ids[..1]).await.unwrap()[&ids[0]], v4_only);
    assert_eq!(s.vm(ids[0]).await.unwrap().unwrap().version, before + 1);
    s.set_access_ips(ids[0], &AccessIps::default())
        .await
        .unwrap();
    assert!(s.access_ips_of(&ids[..1]).await.unwrap().is_empty());
    assert!(matches!(
        s.set_access_ips(VmId(i64::MAX), &ips).await,
        Err(StoreError::NotFound(_))
    ));
}

/// `name_regex`: searched anywhere in the name, other filters, order,
/// marker and limit applied as without it.
pub(crate) async fn name_regex_listing(s: &SeaStore) {
    let t = tenant(s).await;
    let mut vms = Vec::new();
    for name in ["web-1", "web-2", "db-1", "web-10", "aaaa"] {
        vms.push(create(s, &t, name).await);
    }
    let list = |pattern: &str, f: fn(&mut VmQuery)| {
        let mut q = VmQuery {
            project_id: Some(t.project.id.clone()),
            name_regex: Some(NameRegex::new(pattern).unwrap()),
            newest_first: true,
            ..VmQuery::default()
        };
        f(&mut q);
        q
    };
    let names = |v: Vec<Vm>| v.into_iter().map(|v| v.name).collect::<Vec<_>>();
    let got = s.list_vms(&list(r"^web-\d$", |_| {})).await.unwrap();
    assert_eq!(names(got), ["web-2", "web-1"]);
    let got = s.list_vms(&list("eb", |_| {})).await.unwrap();
    assert_eq!(
        names(got),
        ["web-10", "web-2", "web-1"],
        "unanchored search"
    );
    let got = s
        .list_vms(&list("eb", |q| q.limit = Some(2)))
        .await
        .unwrap();
    assert_eq!(names(got), ["web-10", "web-2"]);
    let marker = vms[3].id;
    let mut q = list("eb", |_| {});
    q.marker = Some(marker);
    let got = s.list_vms(&q).await.unwrap();
    assert_eq!(names(got), ["web-2", "web-1"]);
    let got = s
        .list_vms(&list("1$", |q| q.newest_first = false))
        .await
        .unwrap();
    assert_eq!(names(got), ["web-1", "db-1"]);
    let got = s.list_vms(&list("(a+)+$", |_| {})).await.unwrap();
    assert_eq!(names(got), ["aaaa"]);
    assert!(s.list_vms(&list("^WEB", |_| {})).await.unwrap().is_empty());
}
