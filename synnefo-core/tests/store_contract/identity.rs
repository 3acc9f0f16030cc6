//! Areas of the store contract: migrations, identity, tokens, quotas and usage, the catalog, backends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use synnefo_core::StoreError;
use synnefo_core::ids::{BackendId, FlavorId};
use synnefo_core::model::{Image, Quota, Token, Usage};
use synnefo_core::ports::{BackendStore, CatalogStore, IdentityStore, VmStateUpdate, VmStore};
use synnefo_core::state::{Action, start_action};
use synnefo_core::store::SeaStore;

use crate::fixtures::*;

pub(crate) async fn migrations_are_idempotent(s: &SeaStore) {
    assert!(s.pending_migrations().await.unwrap().is_empty());
    s.migrate().await.expect("second migrate is a no-op");
}

pub(crate) async fn identity(s: &SeaStore) {
    let name = unique("alice");
    let u = s.create_user(&name, "hash1", true).await.unwrap();
    assert_eq!(u.id.len(), 32);
    assert!(u.enabled && u.is_admin);
    assert_eq!(s.user(&u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(s.user_by_name(&name).await.unwrap(), Some(u.clone()));
    assert_eq!(
        s.user_by_name(&name.to_uppercase()).await.unwrap(),
        None,
        "names are case-sensitive"
    );
    assert_eq!(s.user("nope").await.unwrap(), None);
    assert!(matches!(
        s.create_user(&name, "h", false).await,
        Err(StoreError::Integrity(_))
    ));
    assert!(s.list_users().await.unwrap().contains(&u));

    let u2 = s
        .update_user(&u.id, Some("hash2".into()), Some(false))
        .await
        .unwrap();
    assert_eq!((u2.password_hash.as_str(), u2.enabled), ("hash2", false));
    let u3 = s.update_user(&u.id, None, None).await.unwrap();
    assert_eq!(u3, u2, "no-op update");
    let u4 = s.update_user(&u.id, None, Some(false)).await.unwrap();
    assert_eq!(u4, u2, "update to the same value");
    assert!(matches!(
        s.update_user("nope", None, Some(true)).await,
        Err(StoreError::NotFound(_))
    ));

    let pname = unique("proj");
    let p = s.create_project(&pname).await.unwrap();
    assert_eq!(s.project(&p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(s.project_by_name(&pname).await.unwrap(), Some(p.clone()));
    assert!(matches!(
        s.create_project(&pname).await,
        Err(StoreError::Integrity(_))
    ));
    assert!(s.list_projects().await.unwrap().contains(&p));

    let p2 = s.create_project(&unique("proj")).await.unwrap();
    assert!(s.user_projects(&u.id).await.unwrap().is_empty());
    s.add_member(&u.id, &p.id).await.unwrap();
    s.add_member(&u.id, &p.id)
        .await
        .expect("add_member is idempotent");
    s.add_member(&u.id, &p2.id).await.unwrap();
    let mut got: Vec<String> = s
        .user_projects(&u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    got.sort();
    let mut want = vec![p.id.clone(), p2.id.clone()];
    want.sort();
    assert_eq!(got, want);
    assert!(matches!(
        s.add_member("nope", &p.id).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn tokens(s: &SeaStore) {
    let t = tenant(s).await;
    let issued = at(1_700_000_000, 123_456);
    let tok = |digest: &str, expires: DateTime<Utc>| Token {
        digest: digest.to_string(),
        user_id: t.user.id.clone(),
        project_id: t.project.id.clone(),
        issued,
        expires,
        revoked: false,
    };
    let d1 = format!("{:0>64}", unique("d1").replace('-', ""));
    let d2 = format!("{:0>64}", unique("d2").replace('-', ""));
    let d3 = format!("{:0>64}", unique("d3").replace('-', ""));
    let t1 = tok(&d1, at(1_700_000_100, 0));
    let t2 = tok(&d2, at(1_700_000_200, 999_999));
    let t3 = tok(&d3, at(4_102_444_800, 0)); // 2100: beyond MySQL TIMESTAMP
    for t in [&t1, &t2, &t3] {
        s.store_token(t).await.unwrap();
    }
    assert_eq!(s.token(&d1).await.unwrap(), Some(t1.clone()));
    assert_eq!(
        s.token(&d3).await.unwrap(),
        Some(t3.clone()),
        "far-future expiry round-trips"
    );
    assert!(matches!(
        s.store_token(&t1).await,
        Err(StoreError::Integrity(_))
    ));
    let mut orphan = tok("00ff", t1.expires);
    orphan.user_id = "nobody".into();
    assert!(matches!(
        s.store_token(&orphan).await,
        Err(StoreError::NotFound(_))
    ));

    s.revoke_token(&d1).await.unwrap();
    s.revoke_token(&d1).await.expect("revoke is idempotent");
    s.revoke_token("unknown")
        .await
        .expect("revoking an unknown token is a no-op");
    assert!(s.token(&d1).await.unwrap().unwrap().revoked);
    assert!(!s.token(&d2).await.unwrap().unwrap().revoked);

    // expires < before: t1 and t2, not t3; exact boundary is kept.
    assert_eq!(
        s.purge_expired_tokens(at(1_700_000_200, 999_999))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.token(&d1).await.unwrap(), None);
    assert!(s.token(&d2).await.unwrap().is_some());
    assert_eq!(
        s.purge_expired_tokens(at(1_700_000_201, 0)).await.unwrap(),
        1
    );
    assert!(s.token(&d3).await.unwrap().is_some());
}

pub(crate) async fn quotas_and_usage(s: &SeaStore) {
    let t = tenant(s).await;
    assert_eq!(
        s.quota(&t.project.id).await.unwrap(),
        Quota::default(),
        "unlimited by default"
    );
    let q = Quota {
        servers: Some(2),
        vcpus: Some(3),
        ram_mib: None,
    };
    s.set_quota(&t.project.id, q).await.unwrap();
    assert_eq!(s.quota(&t.project.id).await.unwrap(), q);
    let q2 = Quota {
        servers: Some(3),
        vcpus: Some(5),
        ram_mib: Some(4096),
    };
    s.set_quota(&t.project.id, q2).await.unwrap();
    assert_eq!(
        s.quota(&t.project.id).await.unwrap(),
        q2,
        "set_quota replaces"
    );
    assert!(matches!(
        s.set_quota("nope", q).await,
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(s.usage(&t.project.id).await.unwrap(), Usage::default());
    let a = s.create_vm(&new_vm(&t, "a"), q2).await.unwrap();
    s.create_vm(&new_vm(&t, "b"), q2).await.unwrap();
    assert_eq!(
        s.usage(&t.project.id).await.unwrap(),
        Usage {
            servers: 2,
            vcpus: 4,
            ram_mib: 2048
        }
    );
    // a third 2-vCPU server would need 6 > 5 vCPUs
    match s.create_vm(&new_vm(&t, "c"), q2).await {
        Err(StoreError::QuotaExceeded {
            resource,
            limit,
            in_use,
            requested,
        }) => assert_eq!((resource, limit, in_use, requested), ("vcpus", 5, 4, 2)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    // deleting frees quota
    let del = start_action(&a.state, Action::Destroy).unwrap();
    s.update_vm_state(&VmStateUpdate {
        id: a.id,
        expected_version: a.version,
        state: del,
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    })
    .await
    .unwrap();
    assert_eq!(s.usage(&t.project.id).await.unwrap().servers, 1);
    s.create_vm(&new_vm(&t, "c"), q2)
        .await
        .expect("fits after the delete");

    let mut nv = new_vm(&t, "x");
    nv.project_id = "no-such-project".into();
    assert!(matches!(
        s.create_vm(&nv, Quota::default()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn catalog(s: &SeaStore) {
    let f = flavor(s, 4, 8192).await;
    assert!(f.id.0 > 0);
    assert_eq!(s.flavor(f.id).await.unwrap(), Some(f.clone()));
    assert_eq!(s.flavor(FlavorId(i64::MAX)).await.unwrap(), None);
    let mut dup = f.clone();
    dup.id = FlavorId(0);
    assert!(matches!(
        s.create_flavor(&dup).await,
        Err(StoreError::Integrity(_))
    ));
    let mut deleted = dup.clone();
    deleted.name = unique("old-flavor");
    deleted.deleted = true;
    let deleted = s.create_flavor(&deleted).await.unwrap();
    let all = s.list_flavors().await.unwrap();
    assert!(
        all.contains(&f) && all.contains(&deleted),
        "deleted flavors are listed"
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));

    let id = uuid::Uuid::new_v4().to_string();
    let mut img = Image {
        id: id.clone(),
        name: "Debian 12".into(),
        os_type: "snf-image+default".into(),
        osparams: BTreeMap::from([
            ("img_format".into(), "diskdump".into()),
            ("img_id".into(), "debian".into()),
        ]),
        status: "ACTIVE".into(),
        metadata: BTreeMap::from([
            ("OS".into(), "debian".into()),
            ("quote".into(), "\"ü\" \\ '".into()),
        ]),
        min_disk_gib: 2,
        min_ram_mib: 512,
        is_public: true,
        owner: None,
        created: at(1_700_000_000, 1),
        updated: at(1_700_000_000, 1),
    };
    assert_eq!(s.put_image(&img).await.unwrap(), img);
    assert_eq!(s.image(&id).await.unwrap(), Some(img.clone()));
    img.name = "Debian 12.1".into();
    img.metadata.clear();
    img.owner = Some("p".into());
    img.updated = at(1_700_000_500, 0);
    assert_eq!(s.put_image(&img).await.unwrap(), img, "put_image replaces");
    assert_eq!(s.image(&id).await.unwrap(), Some(img.clone()));
    assert!(s.list_images().await.unwrap().contains(&img));
    assert_eq!(s.image("nope").await.unwrap(), None);
}

pub(crate) async fn backends(s: &SeaStore) {
    let name = unique("cluster");
    let b = s
        .upsert_backend(&name, "ganeti1.example.org", 5080)
        .await
        .unwrap();
    assert_eq!(
        (b.host.as_str(), b.port, b.drained, b.offline),
        ("ganeti1.example.org", 5080, false, false)
    );
    let b2 = s
        .upsert_backend(&name, "ganeti2.example.org", 65535)
        .await
        .unwrap();
    assert_eq!(b2.id, b.id, "upsert keeps the id");
    assert_eq!(
        (b2.host.as_str(), b2.port, b2.created),
        ("ganeti2.example.org", 65535, b.created)
    );
    assert_eq!(s.backend(b.id).await.unwrap(), Some(b2.clone()));
    assert_eq!(s.backend(BackendId(i64::MAX)).await.unwrap(), None);

    let d = s.set_backend_flags(b.id, Some(true), None).await.unwrap();
    assert!(d.drained && !d.offline);
    let o = s.set_backend_flags(b.id, None, Some(true)).await.unwrap();
    assert!(o.drained && o.offline);
    let same = s
        .set_backend_flags(b.id, Some(true), Some(true))
        .await
        .unwrap();
    assert_eq!(same, o);
    let none = s.set_backend_flags(b.id, None, None).await.unwrap();
    assert_eq!(none, o);
    let back = s
        .set_backend_flags(b.id, Some(false), Some(false))
        .await
        .unwrap();
    assert!(!back.drained && !back.offline);
    assert!(matches!(
        s.set_backend_flags(BackendId(i64::MAX), Some(true), None)
            .await,
        Err(StoreError::NotFound(_))
    ));

    let other = s
        .upsert_backend(&unique("cluster"), "g3", 5080)
        .await
        .unwrap();
    let empty = s
        .upsert_backend(&unique("cluster"), "g4", 5080)
        .await
        .unwrap();
    let all = s.list_backends().await.unwrap();
    assert!(all.iter().any(|x| x.id == b.id) && all.iter().any(|x| x.id == other.id));

    let t = tenant(s).await;
    let big = flavor(s, 4, 4096).await;
    for (backend, fl) in [(b.id, &t.flavor), (b.id, &big), (other.id, &t.flavor)] {
        let mut nv = new_vm(&t, "placed");
        nv.backend_id = Some(backend);
        nv.flavor = fl.clone();
        s.create_vm(&nv, Quota::default()).await.unwrap();
    }
    // a deleted VM does not count
    let mut nv = new_vm(&t, "gone");
    nv.backend_id = Some(other.id);
    let gone = s.create_vm(&nv, Quota::default()).await.unwrap();
    let st = synnefo_test_support::builders::marked_deleted(&gone.state);
    s.update_vm_state(&VmStateUpdate {
        id: gone.id,
        expected_version: gone.version,
        state: st,
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    })
    .await
    .unwrap();
    let usage = s.backend_usage().await.unwrap();
    assert_eq!(
        usage.get(&b.id),
        Some(&Usage {
            servers: 2,
            vcpus: 6,
            ram_mib: 5120
        })
    );
    assert_eq!(
        usage.get(&other.id),
        Some(&Usage {
            servers: 1,
            vcpus: 2,
            ram_mib: 1024
        })
    );
    assert_eq!(
        usage.get(&empty.id),
        Some(&Usage::default()),
        "backends without servers are listed"
    );
}
