//! Key pairs (per user, names unique per user, a bound checked with the
//! insert), and the server attributes that go with them: key pair names
//! stored with a create, the lock.

use std::sync::Arc;

use synnefo_core::StoreError;
use synnefo_core::model::{
    AccessIps, KeypairType, LockedBy, NewKeypair, NewVm, NewVmAttrs, Quota, VmLock,
};
use synnefo_core::ports::{KeypairStore, VmStore};
use synnefo_core::store::SeaStore;

use super::fixtures::{create, new_vm, tenant, unique};

fn key(user: &str, name: &str) -> NewKeypair {
    NewKeypair {
        user_id: user.to_string(),
        name: name.to_string(),
        kind: KeypairType::Ssh,
        fingerprint: "aa:bb".into(),
        public_key: format!("ssh-ed25519 AAAA {name}"),
    }
}

/// Create, list (by name, paged), show, delete; names unique per user and
/// case-sensitive; the per-user bound; another user's key pairs unseen.
pub(crate) async fn keypairs(s: &SeaStore) {
    let t = tenant(s).await;
    let other = tenant(s).await;
    let (u, o) = (t.user.id.as_str(), other.user.id.as_str());
    let k = s.create_keypair(&key(u, "beta"), Some(3)).await.unwrap();
    assert!(k.id > 0);
    assert_eq!(k.kind, KeypairType::Ssh);
    let mut x = key(u, "alpha");
    x.kind = KeypairType::X509;
    x.public_key = "-----BEGIN CERTIFICATE-----\n".repeat(200);
    s.create_keypair(&x, Some(3)).await.unwrap();
    // unique per user, case-sensitive, and the same name for another user
    match s.create_keypair(&key(u, "beta"), Some(3)).await {
        Err(StoreError::Integrity(m)) => assert!(m.contains("beta"), "{m}"),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    s.create_keypair(&key(u, "Beta"), Some(3)).await.unwrap();
    s.create_keypair(&key(o, "beta"), Some(3)).await.unwrap();
    // the bound: three for u
    match s.create_keypair(&key(u, "gamma"), Some(3)).await {
        Err(StoreError::QuotaExceeded {
            resource: "keypairs",
            limit: 3,
            in_use: 3,
            requested: 1,
        }) => {}
        other => panic!("expected the keypair bound, got {other:?}"),
    }
    assert!(matches!(
        s.create_keypair(&key("no-such-user", "k"), None).await,
        Err(StoreError::NotFound(_))
    ));
    let names = |v: Vec<synnefo_core::model::Keypair>| -> Vec<String> {
        v.into_iter().map(|k| k.name).collect()
    };
    assert_eq!(
        names(s.keypairs(u, None, None).await.unwrap()),
        ["Beta", "alpha", "beta"]
    );
    assert_eq!(
        names(s.keypairs(u, Some("Beta".into()), Some(1)).await.unwrap()),
        ["alpha"]
    );
    assert_eq!(names(s.keypairs(o, None, None).await.unwrap()), ["beta"]);
    let got = s.keypair(u, "alpha").await.unwrap().unwrap();
    assert_eq!(got.kind, KeypairType::X509);
    assert_eq!(got.public_key, x.public_key, "long public keys are kept");
    assert_eq!(got.user_id, u);
    assert!(s.keypair(o, "alpha").await.unwrap().is_none());
    s.delete_keypair(u, "beta").await.unwrap();
    assert!(matches!(
        s.delete_keypair(u, "beta").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.keypair(o, "beta").await.unwrap().is_some(), "o's stays");
    // room again under the bound
    s.create_keypair(&key(u, "gamma"), Some(3)).await.unwrap();
}

/// Ten concurrent creates against a bound of four: exactly four stored.
pub(crate) async fn keypair_bound_race(s: &SeaStore) {
    let t = tenant(s).await;
    let s = Arc::new(s.clone());
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (s, u) = (s.clone(), t.user.id.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                match s.create_keypair(&key(&u, &format!("k{i}")), Some(4)).await {
                    Err(StoreError::Conflict(_)) => continue,
                    other => return other,
                }
            }
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(StoreError::QuotaExceeded { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(stored, 4);
    assert_eq!(s.keypairs(&t.user.id, None, None).await.unwrap().len(), 4);
}

/// Key pair names stored with a create, the lock set and lifted, all read
/// back in bulk with the access addresses; every change bumps the version.
pub(crate) async fn server_attrs(s: &SeaStore) {
    let t = tenant(s).await;
    let attrs = NewVmAttrs {
        access: AccessIps {
            v4: Some("192.0.2.9".parse().unwrap()),
            v6: None,
        },
        key_names: vec!["k1".into(), unique("k")],
        user_data: Some("I2Nsb3VkLWNvbmZpZwo=".into()),
    };
    let batch: Vec<NewVm> = (1..=2).map(|i| new_vm(&t, &format!("a-{i}"))).collect();
    let vms = s
        .create_vms_with(&batch, &attrs, Quota::default())
        .await
        .unwrap();
    let plain = create(s, &t, "plain").await;
    let ids = [vms[0].id, vms[1].id, plain.id];
    let got = s.server_attrs_of(&ids).await.unwrap();
    assert_eq!(got[&vms[0].id].key_names, attrs.key_names);
    assert_eq!(got[&vms[1].id].access, attrs.access);
    assert!(got[&vms[0].id].lock.is_none());
    assert!(
        got.get(&plain.id).is_none_or(|a| *a == Default::default()),
        "nothing set: default"
    );
    let before = s.vm(plain.id).await.unwrap().unwrap().version;
    let lock = VmLock {
        by: LockedBy::Admin,
        reason: Some("maintenance ünïcode".into()),
    };
    s.set_vm_lock(plain.id, Some(lock.clone()), None)
        .await
        .unwrap();
    let got = s.server_attrs_of(&[plain.id]).await.unwrap();
    assert_eq!(got[&plain.id].lock, Some(lock));
    assert!(got[&plain.id].key_names.is_empty());
    assert_eq!(s.vm(plain.id).await.unwrap().unwrap().version, before + 1);
    s.set_vm_lock(plain.id, None, None).await.unwrap();
    let got = s.server_attrs_of(&[plain.id]).await.unwrap();
    assert!(got.get(&plain.id).is_none_or(|a| a.lock.is_none()));
    assert!(matches!(
        s.set_vm_lock(synnefo_core::ids::VmId(i64::MAX), None, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.server_attrs_of(&[]).await.unwrap().len(), 0);
}
