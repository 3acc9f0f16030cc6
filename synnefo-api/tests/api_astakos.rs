//! Astakos as astakosclient 0.19 / kamaki 0.16 read it: the catalog shape
//! (`astakos_account` v1.0 with `publicURL` and `SNF:uiURL` on the
//! endpoint), the account API at `/account/v1.0` (quotas, resources,
//! projects, user catalogs), and the Cyclades create that refuses what it
//! cannot honour.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use synnefo_core::model::Quota;
use synnefo_core::ports::IdentityStore;
use synnefo_core::service::account::PRACTICALLY_INFINITE;
use synnefo_core::service::identity::hash_password;
use synnefo_core::state::OpCode;

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

async fn tokens(c: &Cloud, body: Option<Value>) -> Resp {
    send(
        &c.app,
        Method::POST,
        "/identity/v2.0/tokens",
        None,
        body.map(|b| serde_json::to_vec(&b).unwrap()),
        &[],
    )
    .await
}

/// What astakosclient's `_fill_endpoints` does: the `astakos_account`
/// service, its endpoints of versionId v1.0, the first one's `publicURL`
/// and `SNF:uiURL`.
fn account_endpoint(access: &Value) -> (String, String) {
    let catalog = access["serviceCatalog"].as_array().expect("serviceCatalog");
    let svc = catalog
        .iter()
        .find(|s| s["name"] == "astakos_account")
        .expect("astakos_account");
    let ep = svc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["versionId"] == "v1.0")
        .expect("v1.0 endpoint");
    (
        ep["publicURL"].as_str().expect("publicURL").to_string(),
        ep["SNF:uiURL"]
            .as_str()
            .expect("SNF:uiURL on the endpoint")
            .to_string(),
    )
}

#[tokio::test]
async fn the_catalog_has_what_astakosclient_reads() {
    let c = cloud().await;
    let r = tokens(&c, Some(json!({"auth": {"token": {"id": c.alice_token}}}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (account, ui) = account_endpoint(&r.body["access"]);
    assert_eq!(account, "http://api.example.org/account/v1.0");
    assert_eq!(ui, "http://api.example.org/ui");
    for s in r.body["access"]["serviceCatalog"].as_array().unwrap() {
        for e in s["endpoints"].as_array().unwrap() {
            assert!(e["publicURL"].is_string(), "{s}");
            assert!(e["versionId"].is_string(), "{s}");
            assert!(e["SNF:uiURL"].is_string(), "{s}");
        }
    }
    // kamaki finds compute by type and versionId.
    let compute: Vec<&Value> = r.body["access"]["serviceCatalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "compute")
        .collect();
    assert_eq!(compute.len(), 1);
    assert_eq!(compute[0]["endpoints"][0]["versionId"], "v2.0");

    // Public mode (astakosclient's get_endpoints): no body, catalog only.
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v2.0/tokens",
        Some(&c.alice_token),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["access"].get("token").is_none(), "{:?}", r.body);
    assert!(r.body["access"].get("user").is_none(), "{:?}", r.body);
    account_endpoint(&r.body["access"]);

    // Bad token, malformed body.
    let r = tokens(&c, Some(json!({"auth": {"token": {"id": "0000"}}}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["unauthorized"]["code"], 401);
    let r = tokens(&c, Some(json!({"auth": {}}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v2.0/tokens",
        None,
        Some(b"{not json".to_vec()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// Adds carol to alice's project and returns her token.
async fn carol(c: &Cloud) -> (synnefo_core::model::User, String) {
    let carol = c
        .store
        .create_user("carol", &hash_password("carol-pw").unwrap(), false)
        .await
        .unwrap();
    c.store.add_member(&carol.id, &c.pa.id).await.unwrap();
    let t = token(&c.store, &carol, &c.pa).await;
    (carol, t)
}

#[tokio::test]
async fn quotas_are_the_store_limits_and_usage_per_member_and_project() {
    let c = cloud().await;
    c.store
        .set_quota(
            &c.pa.id,
            Quota {
                servers: Some(5),
                vcpus: Some(8),
                ram_mib: Some(4096),
            },
        )
        .await
        .unwrap();
    let (_, carol_token) = carol(&c).await;
    // Alice: one running m1.tiny, one stopped m1.tiny. Carol: one building.
    active(&c, &c.alice_token, "a1").await;
    let stopped = active(&c, &c.alice_token, "a2").await;
    let r = post(
        &c.app,
        &format!("/compute/v2.0/servers/{stopped}/action"),
        &c.alice_token,
        json!({"shutdown": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let job = pending_job(&c.store, &stopped).await;
    complete(&c.store, &stopped, OpCode::InstanceShutdown, job).await;
    create(&c.app, &carol_token, "c1").await;
    // Bob's server is in another project and counts nowhere here.
    active(&c, &c.bob_token, "b1").await;

    let r = get(&c.app, "/account/v1.0/quotas", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let per = r.body.as_object().unwrap();
    assert_eq!(
        per.keys().collect::<Vec<_>>(),
        vec![&c.pa.id],
        "alice's projects only"
    );
    let q = &r.body[&c.pa.id];
    let h = |res: &str| {
        let v = &q[res];
        (
            v["limit"].as_i64().unwrap(),
            v["usage"].as_i64().unwrap(),
            v["pending"].as_i64().unwrap(),
            v["project_limit"].as_i64().unwrap(),
            v["project_usage"].as_i64().unwrap(),
            v["project_pending"].as_i64().unwrap(),
        )
    };
    assert_eq!(h("cyclades.vm"), (5, 2, 0, 5, 3, 0));
    assert_eq!(h("cyclades.total_cpu"), (8, 2, 0, 8, 3, 0));
    assert_eq!(
        h("cyclades.cpu"),
        (8, 1, 0, 8, 2, 0),
        "stopped holds no CPU"
    );
    assert_eq!(
        h("cyclades.total_ram"),
        (4096 * MIB, 1024 * MIB, 0, 4096 * MIB, 1536 * MIB, 0)
    );
    assert_eq!(
        h("cyclades.ram"),
        (4096 * MIB, 512 * MIB, 0, 4096 * MIB, 1024 * MIB, 0)
    );
    assert_eq!(
        h("cyclades.disk"),
        (
            PRACTICALLY_INFINITE,
            2 * GIB,
            0,
            PRACTICALLY_INFINITE,
            3 * GIB,
            0
        )
    );
    assert_eq!(q.as_object().unwrap().len(), 6);

    // Bob sees his own project, with an unlimited quota shown as 2**63-1.
    let r = get(&c.app, "/account/v1.0/quotas/", &c.bob_token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_object().unwrap().len(), 1);
    assert_eq!(
        r.body[&c.pb.id]["cyclades.vm"]["limit"],
        json!(9_223_372_036_854_775_807_i64)
    );
    assert_eq!(r.body[&c.pb.id]["cyclades.vm"]["usage"], 1);

    // Deleting frees the quota at once.
    let r = delete(
        &c.app,
        &format!("/compute/v2.0/servers/{stopped}"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, "/account/v1.0/quotas", &c.alice_token).await;
    assert_eq!(r.body[&c.pa.id]["cyclades.vm"]["usage"], 1);
    assert_eq!(r.body[&c.pa.id]["cyclades.vm"]["project_usage"], 2);
}

#[tokio::test]
async fn the_account_api_needs_a_valid_token() {
    let c = cloud().await;
    for (method, path) in [
        (Method::GET, "/account/v1.0/quotas"),
        (Method::GET, "/account/v1.0/projects"),
        (Method::GET, "/account/v1.0/projects/x"),
        (Method::POST, "/account/v1.0/user_catalogs"),
    ] {
        let body = (method == Method::POST).then(|| b"{\"uuids\": []}".to_vec());
        let r = send(&c.app, method.clone(), path, None, body.clone(), &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} without token");
        let r = send(&c.app, method, path, Some("bogus"), body, &[]).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{path} with a bad token"
        );
        assert_eq!(r.body["unauthorized"]["code"], 401);
    }
}

#[tokio::test]
async fn resources_are_listed_without_a_token() {
    let c = cloud().await;
    let r = send(
        &c.app,
        Method::GET,
        "/account/v1.0/resources",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let names: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    for n in [
        "cyclades.vm",
        "cyclades.total_cpu",
        "cyclades.cpu",
        "cyclades.total_ram",
        "cyclades.ram",
        "cyclades.disk",
    ] {
        assert!(names.iter().any(|k| *k == n), "{n} in {names:?}");
    }
    assert_eq!(r.body["cyclades.ram"]["unit"], "bytes");
    assert_eq!(r.body["cyclades.vm"]["unit"], Value::Null);
    assert_eq!(r.body["cyclades.vm"]["service_type"], "compute");
    assert!(r.body["cyclades.vm"]["description"].is_string());
}

#[tokio::test]
async fn projects_are_the_callers_and_filters_are_strict() {
    let c = cloud().await;
    set_quota(&c.store, &c.pa, 7).await;
    let r = get(&c.app, "/account/v1.0/projects", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let p = &list[0];
    // What kamaki's `project list` prints, and `project info`'s details.
    assert_eq!(p["id"], c.pa.id);
    assert_eq!(p["name"], "project-a");
    assert_eq!(p["description"], "");
    assert_eq!(p["state"], "active");
    assert_eq!(p["resources"]["cyclades.vm"]["project_capacity"], 7);
    assert_eq!(p["resources"]["cyclades.vm"]["member_capacity"], 7);
    assert_eq!(
        p["resources"]["cyclades.cpu"]["project_capacity"],
        json!(PRACTICALLY_INFINITE)
    );

    let count = |r: &Resp| r.body.as_array().map(Vec::len);
    for (q, n) in [
        ("?name=project-a", 1),
        ("?name=project-b", 0),
        ("?state=active", 1),
        ("?state=suspended", 0),
        ("?mode=member", 1),
        ("?owner=someone", 0),
    ] {
        let r = get(
            &c.app,
            &format!("/account/v1.0/projects{q}"),
            &c.alice_token,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {:?}", r.body);
        assert_eq!(count(&r), Some(n), "{q}");
    }
    for q in ["?state=bogus", "?mode=all", "?colour=red"] {
        let r = get(
            &c.app,
            &format!("/account/v1.0/projects{q}"),
            &c.alice_token,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {:?}", r.body);
        assert_eq!(r.body["badRequest"]["code"], 400);
    }

    let r = get(
        &c.app,
        &format!("/account/v1.0/projects/{}", c.pa.id),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "project-a");
    // Another project, or none: the same 404.
    for id in [c.pb.id.as_str(), "0123456789abcdef0123456789abcdef"] {
        let r = get(
            &c.app,
            &format!("/account/v1.0/projects/{id}"),
            &c.alice_token,
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(r.body["itemNotFound"]["code"], 404);
    }

    // Operators see every project (mode=member keeps their own).
    let admin = c
        .store
        .create_user("root", &hash_password("root-pw").unwrap(), true)
        .await
        .unwrap();
    c.store.add_member(&admin.id, &c.pa.id).await.unwrap();
    let t = token(&c.store, &admin, &c.pa).await;
    let r = get(&c.app, "/account/v1.0/projects", &t).await;
    assert_eq!(count(&r), Some(2));
    let r = get(&c.app, "/account/v1.0/projects?mode=member", &t).await;
    assert_eq!(count(&r), Some(1));
    let r = get(&c.app, &format!("/account/v1.0/projects/{}", c.pb.id), &t).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn user_catalogs_resolve_users_who_share_a_project() {
    let c = cloud().await;
    let (carol, _) = carol(&c).await;
    let r = post(
        &c.app,
        "/account/v1.0/user_catalogs",
        &c.alice_token,
        json!({"uuids": [c.alice.id, c.bob.id, carol.id, "nobody"],
               "displaynames": ["bob", "carol", "alice"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["uuid_catalog"],
        json!({ c.alice.id.clone(): "alice", carol.id.clone(): "carol" }),
        "bob shares no project with alice"
    );
    assert_eq!(
        r.body["displayname_catalog"],
        json!({"alice": c.alice.id, "carol": carol.id})
    );
    // astakosclient sends one list at a time; the other may be null.
    let r = post(
        &c.app,
        "/account/v1.0/user_catalogs",
        &c.alice_token,
        json!({"uuids": null, "displaynames": ["carol"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["uuid_catalog"], json!({}));
    // A null entry names nobody (kamaki asks so about ownerless images).
    let r = post(
        &c.app,
        "/account/v1.0/user_catalogs",
        &c.alice_token,
        json!({"uuids": [null, c.alice.id]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["uuid_catalog"],
        json!({ c.alice.id.clone(): "alice" })
    );

    let many: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
    let r = post(
        &c.app,
        "/account/v1.0/user_catalogs",
        &c.alice_token,
        json!({ "uuids": many }),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    for bad in [
        &b"{oops"[..],
        b"{\"uuids\": \"alice\"}",
        b"{\"uuids\": [1]}",
        b"",
    ] {
        let r = send(
            &c.app,
            Method::POST,
            "/account/v1.0/user_catalogs",
            Some(&c.alice_token),
            Some(bad.to_vec()),
            &[],
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[tokio::test]
async fn unsupported_astakos_calls_are_clean_404s() {
    let c = cloud().await;
    for (method, path) in [
        (Method::GET, "/account/v1.0/projects/memberships"),
        (Method::GET, "/account/v1.0/commissions"),
        (Method::GET, "/account/v1.0/service_quotas"),
        (Method::POST, "/account/v1.0/feedback"),
        (Method::GET, "/account/v1.0"),
        (Method::GET, "/account/v1.0/nothing/here"),
    ] {
        let r = send(&c.app, method, path, Some(&c.alice_token), None, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        let msg = r.body["itemNotFound"]["message"].as_str().unwrap();
        assert!(msg.contains("quotas"), "{path}: {msg}");
    }
    // Project applications are not taken.
    let r = post(
        &c.app,
        "/account/v1.0/projects",
        &c.alice_token,
        json!({"name": "x.example.org"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{:?}", r.body);
}

#[tokio::test]
async fn cyclades_create_refuses_what_it_cannot_honour() {
    let c = cloud().await;
    let base = json!({"name": "vm", "imageRef": IMAGE, "flavorRef": 1});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        json!({ "server": s })
    };
    for (what, body, needle) in [
        (
            "networks",
            with("networks", json!([{"uuid": "net-1"}])),
            "Network net-1 could not be found.",
        ),
        (
            "unknown key_name",
            with("key_name", json!("my-key")),
            "Invalid key_name provided.",
        ),
        (
            "unknown SNF:key_names",
            with("SNF:key_names", json!(["my-key"])),
            "Invalid key_name provided.",
        ),
        (
            "key_name with SNF:key_names",
            json!({"server": {
                "name": "vm", "imageRef": IMAGE, "flavorRef": 1,
                "key_name": "a", "SNF:key_names": ["b"],
            }}),
            "Only one of the SNF:key_names and key_name",
        ),
        (
            "user_data that is not base64 (user data is honoured: see api_progress_sim)",
            with("user_data", json!("not base64!")),
            "is not a 'base64'",
        ),
        (
            "user_data that is not a string",
            with("user_data", json!(5)),
            "Malformed user_data request",
        ),
        (
            "personality that is not base64 (files are injected: see api_nova personality)",
            with(
                "personality",
                json!([{"path": "/etc/motd", "contents": "not base64!"}]),
            ),
            "cannot be decoded",
        ),
        ("project", with("project", json!(c.pb.id)), "project"),
        (
            "unknown key",
            with("SNF:colour", json!("red")),
            "SNF:colour",
        ),
        (
            "unknown top-level key",
            json!({"server": base, "extra": 1}),
            "extra",
        ),
    ] {
        let r = post(&c.app, "/compute/v2.0/servers", &c.alice_token, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.body);
        let msg = r.body["badRequest"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    let r = get(&c.app, "/compute/v2.0/servers", &c.alice_token).await;
    assert_eq!(r.body["servers"], json!([]), "nothing was created");

    // Honoured: the token's own project, no NICs, empty personality, nulls,
    // the caller's key pairs.
    let r = post(
        &c.app,
        "/v2.1/os-keypairs",
        &c.alice_token,
        json!({"keypair": {"name": "k1", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti k1"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for (what, body) in [
        ("SNF:key_names", with("SNF:key_names", json!(["k1", "k1"]))),
        ("key_name", with("key_name", json!("k1"))),
        ("own project", with("project", json!(c.pa.id))),
        ("no networks", with("networks", json!([]))),
        ("empty personality", with("personality", json!([]))),
        ("null key_name", with("key_name", Value::Null)),
        (
            "user_data",
            with("user_data", json!("I2Nsb3VkLWNvbmZpZw==")),
        ),
    ] {
        let r = post(&c.app, "/compute/v2.0/servers", &c.alice_token, body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{what}: {:?}", r.body);
        assert_eq!(r.body["server"]["tenant_id"], c.pa.id);
        let keyed = what.contains("key_name") && what != "null key_name";
        let id = r.body["server"]["id"].clone();
        let r = get(
            &c.app,
            &format!("/compute/v2.0/servers/{id}"),
            &c.alice_token,
        )
        .await;
        if keyed {
            assert_eq!(r.body["server"]["key_name"], "k1", "{what}");
            assert_eq!(r.body["server"]["SNF:key_names"], json!(["k1"]), "{what}");
        } else {
            assert!(r.body["server"]["key_name"].is_null(), "{what}");
            assert_eq!(r.body["server"]["SNF:key_names"], json!([]), "{what}");
        }
    }
}

#[tokio::test]
async fn server_ips_list_the_addresses_by_network() {
    let c = cloud().await;
    let id = active(&c, &c.alice_token, "vm").await;
    let r = get(
        &c.app,
        &format!("/compute/v2.0/servers/{id}/ips"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let public = r.body["addresses"]["public"].as_array().expect("public");
    assert_eq!(public.len(), 1);
    assert_eq!(public[0]["version"], 4);
    assert!(public[0]["addr"].as_str().unwrap().starts_with("192.0.2."));
    // Another project's server is a 404, as everywhere.
    let r = get(
        &c.app,
        &format!("/compute/v2.0/servers/{id}/ips"),
        &c.bob_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
