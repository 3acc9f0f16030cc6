//! `os-keypairs` (create, import, list, show, delete per microversion),
//! `key_name` on create (stored, shown, passed to snf-image as
//! `auth_keys`), and the `lock`/`unlock` actions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::json;
use synnefo_core::ids::JobId;
use synnefo_core::ports::{InstanceSpec, MockGanetiBackend};

use crate::api_support::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti foo@bar.com";

fn kp(name: &str) -> serde_json::Value {
    json!({"keypair": {"name": name}})
}

#[tokio::test]
async fn keypairs_by_microversion() {
    let c = cloud().await;
    // 2.1: generated, 200, no type; private key once
    let r = post(&c.app, "/v2.1/os-keypairs", &c.alice_token, kp("gen")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let k = &r.body["keypair"];
    let mut keys: Vec<_> = k.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "fingerprint",
            "name",
            "private_key",
            "public_key",
            "user_id"
        ]
    );
    assert!(k["public_key"].as_str().unwrap().starts_with("ssh-rsa "));
    assert_eq!(k["user_id"], c.alice.id);
    let fp = k["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.split(':').count(), 16, "MD5, colon-separated: {fp}");
    // import (2.2+: 201 and type)
    let body = json!({"keypair": {"name": "imported key_1", "public_key": KEY}});
    let r = post_v(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        body.clone(),
        "2.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["keypair"]["type"], "ssh");
    assert!(r.body["keypair"].get("private_key").is_none());
    assert_eq!(r.body["keypair"]["public_key"], KEY);
    // the fingerprint `ssh-keygen -l -E md5` prints for KEY
    assert_eq!(
        r.body["keypair"]["fingerprint"],
        "ae:6f:ba:1b:70:2c:ae:c7:5c:ab:6e:4d:5e:d4:c7:23"
    );
    // duplicate: 409; another user may use the name
    let r = post_v(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        body.clone(),
        "2.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = post_v(&c.app, "/v2.1/os-keypairs", &c.bob_token, body, "2.2").await;
    assert_eq!(r.status, StatusCode::CREATED);
    // x509, generated
    let r = post_v(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        json!({"keypair": {"name": "cert", "type": "x509"}}),
        "2.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["keypair"]["type"], "x509");
    assert!(
        r.body["keypair"]["public_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    // list: {"keypairs": [{"keypair": {...}}]}, alice's only
    let r = get(&c.app, "/v2.1/os-keypairs", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.body["keypairs"].as_array().unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|e| e["keypair"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cert", "gen", "imported key_1"]);
    let mut keys: Vec<_> = list[0]["keypair"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(keys, ["fingerprint", "name", "public_key"]);
    let r = get_v(&c.app, "/v2.1/os-keypairs", &c.alice_token, "2.2").await;
    assert_eq!(r.body["keypairs"][0]["keypair"]["type"], "x509");
    // 2.35 paging
    let r = get_v(&c.app, "/v2.1/os-keypairs?limit=2", &c.alice_token, "2.35").await;
    assert_eq!(r.body["keypairs"].as_array().unwrap().len(), 2);
    let next = r.body["keypairs_links"][0]["href"].as_str().unwrap();
    assert!(next.ends_with("limit=2&marker=gen"), "{next}");
    let r = get_v(
        &c.app,
        "/v2.1/os-keypairs?limit=2&marker=gen",
        &c.alice_token,
        "2.35",
    )
    .await;
    assert_eq!(r.body["keypairs"][0]["keypair"]["name"], "imported key_1");
    assert!(r.body.get("keypairs_links").is_none());
    let r = get_v(
        &c.app,
        "/v2.1/os-keypairs?marker=nope",
        &c.alice_token,
        "2.35",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // show
    let r = get(&c.app, "/v2.1/os-keypairs/gen", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK);
    let k = &r.body["keypair"];
    assert_eq!(k["fingerprint"], fp.as_str());
    assert_eq!(k["deleted"], false);
    assert!(k["id"].is_i64());
    assert!(k["updated_at"].is_null());
    assert!(k.get("type").is_none());
    assert!(k.get("private_key").is_none(), "never shown again");
    let r = get(&c.app, "/v2.1/os-keypairs/gen", &c.bob_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another user's");
    // user_id: operators only (2.10)
    let r = get_v(
        &c.app,
        &format!("/v2.1/os-keypairs?user_id={}", c.alice.id),
        &c.bob_token,
        "2.10",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // delete: 202 at 2.1, 204 at 2.2, 404 unknown
    let r = delete(&c.app, "/v2.1/os-keypairs/gen", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = delete(&c.app, "/v2.1/os-keypairs/gen", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body["itemNotFound"]["message"]
            .as_str()
            .unwrap()
            .contains("gen")
    );
    let r = axum_delete_v(&c, "/v2.1/os-keypairs/cert", "2.2").await;
    assert_eq!(r, StatusCode::NO_CONTENT);
}

async fn axum_delete_v(c: &Cloud, path: &str, version: &str) -> StatusCode {
    send(
        &c.app,
        axum::http::Method::DELETE,
        path,
        Some(&c.alice_token),
        None,
        &[("OpenStack-API-Version", &format!("compute {version}"))],
    )
    .await
    .status
}

#[tokio::test]
async fn bad_keypairs_are_400s() {
    let c = cloud().await;
    let bad = [
        json!({"keypair": {"name": ""}}),
        json!({"keypair": {"name": "k".repeat(256)}}),
        json!({"keypair": {"name": r"key_/.\@:"}}),
        json!({"keypair": {"name": "k", "public_key": "ssh-rsa JUNK nova@ubuntu"}}),
        json!({"keypair": {"name": "k", "public_key": " "}}),
        json!({"keypair": {"name": "k", "public_key": format!("ssh-rsa {} openstack@ubuntu", "A".repeat(2048))}}),
        json!({"keypair": {"name": "k", "type": "ssh"}}), // type before 2.2
        json!({"keypair": {"name": "k", "user_id": "x"}}), // user_id before 2.10
        json!({"keypair": {"name": "k", "extra": 1}}),
        json!({"keypair": {}}),
    ];
    for b in bad {
        let r = post(&c.app, "/v2.1/os-keypairs", &c.alice_token, b.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {:?}", r.body);
    }
    let r = post_v(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        json!({"keypair": {"name": "k", "type": "pgp"}}),
        "2.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&c.app, "/v2.1/os-keypairs", &c.alice_token).await;
    assert_eq!(r.body["keypairs"], json!([]), "nothing was stored");
    // limits show the per-user bound
    let r = get(&c.app, "/v2.1/limits", &c.alice_token).await;
    assert_eq!(r.body["limits"]["absolute"]["maxTotalKeypairs"], 100);
}

/// A Ganeti mock that records every create's spec.
pub(crate) fn recording_ganeti(
    jobs: Arc<AtomicU64>,
    specs: Arc<Mutex<Vec<InstanceSpec>>>,
) -> MockGanetiBackend {
    let mut g = MockGanetiBackend::new();
    let j = jobs.clone();
    g.expect_create_instance().returning(move |spec| {
        specs.lock().unwrap().push(spec.clone());
        Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1))
    });
    let j = jobs.clone();
    g.expect_startup()
        .returning(move |_, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    let j = jobs.clone();
    g.expect_shutdown()
        .returning(move |_, _, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    let j = jobs;
    g.expect_remove()
        .returning(move |_, _| Ok(JobId(j.fetch_add(1, Ordering::SeqCst) + 1)));
    g
}

#[tokio::test]
async fn key_name_on_create_reaches_snf_image() {
    let jobs = Arc::new(AtomicU64::new(100));
    let specs = Arc::new(Mutex::new(Vec::new()));
    let store = sqlite_store().await;
    let c = cloud_with(
        store,
        Arc::new(recording_ganeti(jobs.clone(), specs.clone())),
        jobs,
    )
    .await;
    let r = post(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        json!({"keypair": {"name": "mine", "public_key": format!("{KEY}\n")}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // unknown key: Nova's 400, nothing created
    let mut body = create_body("k-1");
    body["server"]["key_name"] = json!("nope");
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["badRequest"]["message"],
        "Invalid key_name provided."
    );
    // an x509 key pair cannot be injected
    let r = post_v(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        json!({"keypair": {"name": "cert", "type": "x509"}}),
        "2.2",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut body = create_body("k-1");
    body["server"]["key_name"] = json!("cert");
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["badRequest"]["message"]
            .as_str()
            .unwrap()
            .contains("x509")
    );
    // another user's key pair is unknown too
    let mut body = create_body("k-1");
    body["server"]["key_name"] = json!("mine");
    let r = post(&c.app, "/v2.1/servers", &c.bob_token, body.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(specs.lock().unwrap().is_empty());
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    {
        let specs = specs.lock().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].osparams["auth_keys"], KEY);
        assert!(specs[0].osparams.contains_key("img_passwd"));
    }
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["key_name"], "mine");
    let r = get(&c.app, "/v2.1/servers/detail", &c.alice_token).await;
    assert_eq!(r.body["servers"][0]["key_name"], "mine");
    // deleting the key pair leaves the server's record alone
    delete(&c.app, "/v2.1/os-keypairs/mine", &c.alice_token).await;
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["key_name"], "mine");
    // a server created without one shows null
    let plain = create(&c.app, &c.alice_token, "plain").await;
    let r = get(&c.app, &format!("/v2.1/servers/{plain}"), &c.alice_token).await;
    assert!(r.body["server"]["key_name"].is_null());
    assert!(!specs.lock().unwrap()[1].osparams.contains_key("auth_keys"));
}

#[tokio::test]
async fn locked_servers_refuse_the_owner() {
    let c = cloud().await;
    let id = active(&c, &c.alice_token, "locked-1").await;
    let action = |body: serde_json::Value| {
        let (app, token, id) = (c.app.clone(), c.alice_token.clone(), id.clone());
        async move {
            post_v(
                &app,
                &format!("/v2.1/servers/{id}/action"),
                &token,
                body,
                "2.73",
            )
            .await
        }
    };
    let r = action(json!({"lock": {"locked_reason": "audit"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        "2.73",
    )
    .await;
    assert_eq!(r.body["server"]["locked"], true);
    assert_eq!(r.body["server"]["locked_reason"], "audit");
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        "2.9",
    )
    .await;
    assert_eq!(r.body["server"]["locked"], true);
    assert!(r.body["server"].get("locked_reason").is_none());
    // the owner's mutating requests: 409
    for body in [
        json!({"os-stop": null}),
        json!({"reboot": {"type": "SOFT"}}),
    ] {
        let r = action(body.clone()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{body}: {:?}", r.body);
        assert_eq!(
            r.body["conflictingRequest"]["message"],
            format!("Instance {id} is locked")
        );
    }
    let r = delete(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/metadata"),
        &c.alice_token,
        json!({"metadata": {"a": "b"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // locking again is accepted (the first lock stays)
    assert_eq!(
        action(json!({"lock": null})).await.status,
        StatusCode::ACCEPTED
    );
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        "2.73",
    )
    .await;
    assert_eq!(r.body["server"]["locked_reason"], "audit");
    // an operator of the project may still act on it
    {
        use synnefo_core::ports::IdentityStore;
        let hash = synnefo_core::service::identity::hash_password("op-pw").unwrap();
        let op = c.store.create_user("operator", &hash, true).await.unwrap();
        c.store.add_member(&op.id, &c.pa.id).await.unwrap();
        let op_token = token(&c.store, &op, &c.pa).await;
        let r = post(
            &c.app,
            &format!("/v2.1/servers/{id}/metadata"),
            &op_token,
            json!({"metadata": {"by": "operator"}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    // reasons before 2.73 are refused
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.alice_token,
        json!({"lock": {"locked_reason": "x"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // another project's server: 404 whatever the action
    let r = post(
        &c.app,
        &format!("/v2.1/servers/{id}/action"),
        &c.bob_token,
        json!({"unlock": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // unlock (twice: the second is a no-op), then stop works
    assert_eq!(
        action(json!({"unlock": null})).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        action(json!({"unlock": null})).await.status,
        StatusCode::ACCEPTED
    );
    let r = get_v(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        "2.73",
    )
    .await;
    assert_eq!(r.body["server"]["locked"], false);
    assert!(r.body["server"]["locked_reason"].is_null());
    assert_eq!(
        action(json!({"os-stop": null})).await.status,
        StatusCode::ACCEPTED
    );
}
