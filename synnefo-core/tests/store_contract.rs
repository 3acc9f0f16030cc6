//! The store contract suite: one set of checks, run against SQLite
//! (in memory and on disk), PostgreSQL and MariaDB/MySQL.
//!
//! Each test gets a fresh database: a temporary file for SQLite, and for
//! the servers a uniquely named database created for the run and dropped
//! afterwards (also when the test fails), so test binaries running in
//! parallel never see each other's rows. An unreachable server is reported
//! through `testing::service_unavailable` (a failure under `CI=true`).
//!
//! Server URLs: `SYNNEFO_TEST_DATABASE_URL` (PostgreSQL) and
//! `SYNNEFO_TEST_MYSQL_URL`; the database in the URL is only used to create
//! and drop the per-run database.

#![cfg(feature = "sea-orm-store")]
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use synnefo_core::StoreError;
use synnefo_core::ids::{BackendId, FlavorId, JobId, VmId};
use synnefo_core::model::{
    AccessIps, Flavor, Image, NameRegex, NewVm, Nic, Project, Quota, Token, Usage, User, Vm,
    VmPlacement,
};
use synnefo_core::ports::{
    BackendStore, CatalogStore, IdentityStore, VmQuery, VmStateUpdate, VmStore,
};
use synnefo_core::state::{
    Action, JobStatus, OpCode, OpStatusEvent, OperState, RebootKind, Transition, VmState,
    apply_op_status, start_action,
};
use synnefo_core::store::SeaStore;
use synnefo_core::testing;

// ------------------------------------------------------------------ databases

enum Cleanup {
    None,
    File(#[allow(dead_code)] tempfile::TempDir),
    Server { admin_url: String, drop_sql: String },
}

/// A store on a fresh, migrated database that is removed on drop.
struct TestDb {
    store: SeaStore,
    cleanup: Cleanup,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Server {
            admin_url,
            drop_sql,
        } = std::mem::replace(&mut self.cleanup, Cleanup::None)
        {
            // Drop may run on a runtime thread (or during a panic): do the
            // async cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(db) = admin_connect(&admin_url).await {
                        if let Err(e) = db.execute_unprepared(&drop_sql).await {
                            eprintln!("cleanup failed ({drop_sql}): {e}");
                        }
                        let _ = db.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// An admin connection that gives up quickly on a down server.
async fn admin_connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(opts).await
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..]
        .find('/')
        .map_or(base.len(), |i| host_start + i);
    format!("{}/{db}{query}", &base[..host_end])
}

async fn sqlite_memory() -> TestDb {
    let store = SeaStore::connect("sqlite::memory:", 4)
        .await
        .expect("open in-memory SQLite");
    store.migrate().await.expect("migrate");
    TestDb {
        store,
        cleanup: Cleanup::None,
    }
}

async fn sqlite_file() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("synnefo.db").display());
    let store = SeaStore::connect(&url, 8).await.expect("open SQLite file");
    store.migrate().await.expect("migrate");
    TestDb {
        store,
        cleanup: Cleanup::File(dir),
    }
}

fn random_db_name() -> String {
    format!("synnefo_test_{}", uuid::Uuid::new_v4().simple())
}

async fn server_db(
    test: &str,
    service: &str,
    admin_url: String,
    create: &str,
    drop: &str,
) -> Option<TestDb> {
    let admin = match admin_connect(&admin_url).await {
        Ok(db) => db,
        Err(e) => {
            testing::service_unavailable(test, service, &e.to_string());
            return None;
        }
    };
    let name = random_db_name();
    admin
        .execute_unprepared(&create.replace("{db}", &name))
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot create database {name}: {e}"));
    let _ = admin.close().await;
    let db = TestDb {
        store: SeaStore::connect(&with_database(&admin_url, &name), 8)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot connect to {name}: {e}")),
        cleanup: Cleanup::Server {
            admin_url,
            drop_sql: drop.replace("{db}", &name),
        },
    };
    db.store.migrate().await.expect("migrate");
    Some(db)
}

async fn postgres(test: &str) -> Option<TestDb> {
    server_db(
        test,
        "PostgreSQL",
        testing::pg_url(),
        "CREATE DATABASE {db}",
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)",
    )
    .await
}

async fn mysql(test: &str) -> Option<TestDb> {
    server_db(
        test,
        "MariaDB/MySQL",
        testing::mysql_url(),
        "CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "DROP DATABASE IF EXISTS {db}",
    )
    .await
}

// ------------------------------------------------------------------ fixtures

struct Tenant {
    user: User,
    project: Project,
    flavor: Flavor,
}

async fn flavor(s: &SeaStore, vcpus: i32, ram_mib: i32) -> Flavor {
    s.create_flavor(&Flavor {
        id: FlavorId(0),
        name: unique("flavor"),
        vcpus,
        ram_mib,
        disk_gib: 10,
        disk_template: "plain".into(),
        is_public: true,
        deleted: false,
    })
    .await
    .expect("create flavor")
}

async fn tenant(s: &SeaStore) -> Tenant {
    let user = s
        .create_user(&unique("user"), "$argon2id$fake", false)
        .await
        .expect("create user");
    let project = s
        .create_project(&unique("project"))
        .await
        .expect("create project");
    s.add_member(&user.id, &project.id)
        .await
        .expect("add member");
    Tenant {
        flavor: flavor(s, 2, 1024).await,
        user,
        project,
    }
}

fn new_vm(t: &Tenant, name: &str) -> NewVm {
    NewVm {
        user_id: t.user.id.clone(),
        project_id: t.project.id.clone(),
        name: name.to_string(),
        flavor: t.flavor.clone(),
        image_id: "img-1".into(),
        backend_id: None,
        metadata: BTreeMap::new(),
    }
}

async fn create(s: &SeaStore, t: &Tenant, name: &str) -> Vm {
    s.create_vm(&new_vm(t, name), Quota::default())
        .await
        .expect("create vm")
}

fn ev(job: u64, op: OpCode, status: JobStatus, time_us: i64) -> OpStatusEvent {
    OpStatusEvent {
        job_id: JobId(job),
        op_index: 0,
        opcode: op,
        status,
        log_msg: Some(format!("{op} {status}")),
        error: None,
        time_us,
    }
}

fn applied(state: &VmState, e: &OpStatusEvent) -> VmState {
    match apply_op_status(state, e) {
        Transition::Applied(s) => s,
        Transition::Ignored(why) => panic!("event ignored: {why:?}"),
    }
}

fn nic(index: i32, ip: &str) -> Nic {
    Nic {
        index,
        ip: Some(ip.into()),
        mac: Some(format!("aa:00:00:00:00:{index:02x}")),
        network: Some("public".into()),
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

fn at(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1000)
        .single()
        .expect("valid time")
}

// ------------------------------------------------------------------ the suite

async fn migrations_are_idempotent(s: &SeaStore) {
    assert!(s.pending_migrations().await.unwrap().is_empty());
    s.migrate().await.expect("second migrate is a no-op");
}

async fn identity(s: &SeaStore) {
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

async fn tokens(s: &SeaStore) {
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

async fn quotas_and_usage(s: &SeaStore) {
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

async fn catalog(s: &SeaStore) {
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

async fn backends(s: &SeaStore) {
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
    let mut st = gone.state.clone();
    st.deleted = true;
    s.update_vm_state(&VmStateUpdate {
        id: gone.id,
        expected_version: gone.version,
        state: st,
        nics: None,
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

async fn vms_and_listing(s: &SeaStore) {
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
    assert_eq!(web1.state.operstate, OperState::Build);
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
        })
        .await
        .unwrap();
    assert!(deleted.state.deleted);
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

async fn metadata(s: &SeaStore) {
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

async fn nics(s: &SeaStore) {
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

async fn state_updates(s: &SeaStore) {
    let t = tenant(s).await;
    let vm = create(s, &t, "state").await;

    // every field of the state round-trips
    let e1 = ev(
        7,
        OpCode::InstanceCreate,
        JobStatus::Success,
        1_700_000_000_000_001,
    );
    let mut st = applied(&vm.state, &e1);
    st.suspended = true;
    st.action = Some(synnefo_core::state::PendingAction {
        action: Action::Reboot(RebootKind::Hard),
        job_id: Some(JobId(u64::from(u32::MAX) + 5)),
    });
    let up = VmStateUpdate {
        id: vm.id,
        expected_version: vm.version,
        state: st.clone(),
        nics: Some(vec![nic(0, "192.0.2.1")]),
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
        })
        .await
        .unwrap();
    assert_eq!(v3.version, v2.version + 1);
    assert_eq!(s.nics(vm.id).await.unwrap().len(), 1);
    // job ids beyond BIGINT are refused, not wrapped
    let mut huge = v3.state.clone();
    huge.last_event = Some(synnefo_core::state::EventPosition {
        job_id: u64::MAX,
        op_index: 0,
        status_rank: 0,
        time_us: 0,
    });
    assert!(matches!(
        s.update_vm_state(&VmStateUpdate {
            id: vm.id,
            expected_version: v3.version,
            state: huge.clone(),
            nics: None
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
        },
        VmStateUpdate {
            id: b.id,
            expected_version: b.version,
            state: eb.clone(),
            nics: Some(vec![]),
        },
        // computed from a stale version: conflicts alone
        VmStateUpdate {
            id: c.id,
            expected_version: c.version - 1,
            state: eb.clone(),
            nics: None,
        },
        // a second update of `a`, computed from the first one's result
        VmStateUpdate {
            id: a.id,
            expected_version: a.version + 1,
            state: ea2.clone(),
            nics: None,
        },
        // and a third, stale relative to the second
        VmStateUpdate {
            id: a.id,
            expected_version: a.version + 1,
            state: eb.clone(),
            nics: None,
        },
        VmStateUpdate {
            id: VmId(i64::MAX),
            expected_version: 1,
            state: eb.clone(),
            nics: None,
        },
        VmStateUpdate {
            id: c.id,
            expected_version: c.version,
            state: huge,
            nics: None,
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

async fn reconciliation(s: &SeaStore) {
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
    let mut st = deleted.state.clone();
    st.deleted = true;
    s.update_vm_state(&VmStateUpdate {
        id: deleted.id,
        expected_version: deleted.version,
        state: st,
        nics: None,
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
async fn vm_generations(s: &SeaStore) {
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
        },
        VmStateUpdate {
            id: b.id,
            expected_version: b.version,
            state: st.clone(),
            nics: None,
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

async fn contract(s: &SeaStore) {
    migrations_are_idempotent(s).await;
    identity(s).await;
    tokens(s).await;
    quotas_and_usage(s).await;
    catalog(s).await;
    backends(s).await;
    vms_and_listing(s).await;
    metadata(s).await;
    nics(s).await;
    state_updates(s).await;
    reconciliation(s).await;
    vm_generations(s).await;
    placement(s).await;
    batch_creates_and_access_ips(s).await;
    name_regex_listing(s).await;
}

/// `create_vms`: one transaction, quota judged on the whole batch, input
/// order; access addresses stored, read back in bulk and changed.
async fn batch_creates_and_access_ips(s: &SeaStore) {
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
async fn name_regex_listing(s: &SeaStore) {
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

/// Reconciliation's flavor and cluster fix: versioned like a state update,
/// moves the listing generation and the project's usage with it.
async fn placement(s: &SeaStore) {
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

// ------------------------------------------------------------------ concurrency

/// Loads, applies `event`, writes with the loaded version; on `Conflict`
/// reloads and re-applies. Returns (versions written, conflicts seen).
async fn apply_until_done(s: &SeaStore, id: VmId, event: &OpStatusEvent) -> (Vec<i64>, u32) {
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
async fn concurrent_state_updates(s: &SeaStore) {
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
        assert_eq!(stored.state.operstate, OperState::Started);
        assert_eq!(
            stored.state.job.as_ref().map(|j| j.job_id),
            Some(JobId(101))
        );
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
        assert_eq!(vm.state.operstate, OperState::Started, "vm {}", vm.id);
        assert_eq!(
            vm.state.job.as_ref().map(|j| j.job_id),
            Some(JobId(201)),
            "vm {}",
            vm.id
        );
        assert_eq!(vm.version, 3, "vm {}: exactly two writes", vm.id);
    }
    eprintln!("concurrent batches: {conflicts} conflicts, all retried");
}

/// 50 concurrent creates against a quota of 20 servers: exactly 20 win.
async fn quota_race(s: &SeaStore) {
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
async fn hardening_races(s: &SeaStore) {
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
async fn batch_timing(s: &SeaStore, label: &str) {
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

// ------------------------------------------------------------------ per backend

macro_rules! backend_tests {
    ($module:ident, $open:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn contract_suite() {
                let Some(db) = $open(concat!(stringify!($module), "::contract_suite")).await else {
                    return;
                };
                contract(&db.store).await;
                batch_timing(&db.store, stringify!($module)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_updates_lose_nothing() {
                let Some(db) = $open(concat!(
                    stringify!($module),
                    "::concurrent_updates_lose_nothing"
                ))
                .await
                else {
                    return;
                };
                concurrent_state_updates(&db.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quota_is_race_free() {
                let Some(db) = $open(concat!(stringify!($module), "::quota_is_race_free")).await
                else {
                    return;
                };
                quota_race(&db.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hardening_limits_are_race_free() {
                let Some(db) = $open(concat!(
                    stringify!($module),
                    "::hardening_limits_are_race_free"
                ))
                .await
                else {
                    return;
                };
                hardening_races(&db.store).await;
            }
        }
    };
}

async fn open_sqlite_memory(_test: &str) -> Option<TestDb> {
    Some(sqlite_memory().await)
}

async fn open_sqlite_file(_test: &str) -> Option<TestDb> {
    Some(sqlite_file().await)
}

backend_tests!(sqlite_memory_db, open_sqlite_memory);
backend_tests!(sqlite_file_db, open_sqlite_file);
backend_tests!(postgres_db, postgres);
backend_tests!(mysql_db, mysql);

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("mysql://root@h:3306/test?ssl-mode=disabled", "x"),
        "mysql://root@h:3306/x?ssl-mode=disabled"
    );
    assert_eq!(
        with_database("postgres://u@h:5432", "x"),
        "postgres://u@h:5432/x"
    );
}

#[tokio::test]
async fn sqlite_file_survives_reopen_and_is_wal() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let s = SeaStore::connect(&url, 2).await.unwrap();
    s.migrate().await.unwrap();
    let t = tenant(&s).await;
    let vm = create(&s, &t, "persisted").await;
    let mode = s
        .connection()
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA journal_mode",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    s.close().await.unwrap();
    let s = SeaStore::connect(&url, 2).await.unwrap();
    assert!(s.pending_migrations().await.unwrap().is_empty());
    assert_eq!(
        s.vm(vm.id).await.unwrap().map(|v| v.name),
        Some("persisted".to_string())
    );
}

/// A PostgreSQL restart as the pool sees it: every server connection of the
/// database is killed. The next generation read replaces its dead
/// connection and answers; other reads fail at most once per pooled
/// connection (sqlx no longer pings before each acquire) and then recover.
#[tokio::test]
async fn postgres_connections_killed_under_the_store_recover() {
    let test = "postgres_connections_killed_under_the_store_recover";
    let Some(db) = postgres(test).await else {
        return;
    };
    let s = &db.store;
    let t = tenant(s).await;
    create(s, &t, "before").await;
    let ids = vec![t.project.id.clone()];
    let g = s.vm_generations(&ids).await.unwrap()[&t.project.id];
    let name: String = s
        .connection()
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_database()",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let admin = admin_connect(&testing::pg_url()).await.unwrap();
    let killed = admin
        .query_all(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        ))
        .await
        .unwrap()
        .len();
    let _ = admin.close().await;
    assert!(killed >= 2, "killed {killed} connections");
    assert_eq!(
        s.vm_generations(&ids)
            .await
            .expect("generation read after the kill")[&t.project.id],
        g
    );
    let mut failures = 0;
    loop {
        match s.list_vms(&VmQuery::default()).await {
            Ok(vms) => {
                assert_eq!(vms.len(), 1);
                break;
            }
            Err(StoreError::Database(e)) => {
                failures += 1;
                assert!(failures <= 8, "still failing after {failures} reads: {e}");
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    eprintln!("{test}: {killed} connections killed, {failures} failed reads before recovery");
    create(s, &t, "after").await;
    assert!(s.vm_generations(&ids).await.unwrap()[&t.project.id] > g);
}
