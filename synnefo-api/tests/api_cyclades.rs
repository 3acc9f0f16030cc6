//! Synnefo's own dialect as kamaki 0.16 uses it: Astakos tokens and the
//! Cyclades compute API (integer ids, STOPPED, start/shutdown/console).

mod api_support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use api_support::*;
use axum::http::{Method, StatusCode};
use serde_json::json;
use synnefo_core::service::compute::{ConsoleForwarder, ProxyEndpoint};
use synnefo_core::state::OpCode;

struct Fwd;

#[async_trait::async_trait]
impl ConsoleForwarder for Fwd {
    async fn forward(
        &self,
        _h: &str,
        _p: u16,
        _pw: &str,
        _l: &str,
    ) -> Result<ProxyEndpoint, synnefo_core::ServiceError> {
        Ok(ProxyEndpoint {
            host: "vnc.example.org".into(),
            port: 25000,
        })
    }
}

#[tokio::test]
async fn kamaki_flow() {
    let jobs = Arc::new(AtomicU64::new(1));
    let g = Arc::new(accepting_ganeti(jobs.clone()));
    let c = cloud_with_state(
        sqlite_store().await,
        move |s| synnefo_api::ApiState::new(s, g, config()).with_console(Arc::new(Fwd)),
        jobs,
    )
    .await;

    // kamaki authenticates with its token on every command.
    let body = json!({"auth": {"token": {"id": c.alice_token}}});
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v2.0/tokens",
        None,
        Some(serde_json::to_vec(&body).unwrap()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let access = &r.body["access"];
    assert_eq!(access["token"]["id"], c.alice_token);
    assert_eq!(access["user"]["id"], c.alice.id);
    let catalog = access["serviceCatalog"].as_array().unwrap();
    let account = catalog
        .iter()
        .find(|s| s["name"] == "astakos_account")
        .unwrap();
    assert_eq!(account["type"], "account");
    assert_eq!(account["endpoints"][0]["versionId"], "v1.0");
    let compute: Vec<_> = catalog.iter().filter(|s| s["type"] == "compute").collect();
    assert_eq!(compute.len(), 1);
    assert_eq!(
        compute[0]["endpoints"][0]["publicURL"],
        "http://api.example.org/compute/v2.0"
    );
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v2.0/tokens",
        None,
        Some(serde_json::to_vec(&json!({"auth": {"token": {"id": "bogus"}}})).unwrap()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &c.app,
        Method::POST,
        "/identity/v2.0/tokens",
        None,
        Some(serde_json::to_vec(&json!({"auth": {"passwordCredentials": {"username": "bob", "password": "bob-pw"}}})).unwrap()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["access"]["token"]["tenant"]["id"], c.pb.id);

    // Catalog with integer flavor ids.
    let r = get(&c.app, "/compute/v2.0/flavors/detail", &c.alice_token).await;
    assert_eq!(r.body["flavors"][0]["id"], 1);
    assert_eq!(r.body["flavors"][0]["SNF:disk_template"], "plain");
    let r = get(&c.app, "/compute/v2.0/images/detail", &c.alice_token).await;
    assert_eq!(r.body["images"][0]["id"], IMAGE);

    // Create with an integer flavorRef: integer id in JSON, adminPass.
    let r = post(
        &c.app,
        "/compute/v2.0/servers",
        &c.alice_token,
        json!({"server": {"name": "kamaki-vm", "imageRef": IMAGE, "flavorRef": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_i64().unwrap();
    assert!(r.body["server"]["adminPass"].is_string());
    assert_eq!(r.body["server"]["status"], "BUILD");
    let job = pending_job(&c.store, &id.to_string()).await;
    complete(&c.store, &id.to_string(), OpCode::InstanceCreate, job).await;

    let path = format!("/compute/v2.0/servers/{id}");
    let r = get(&c.app, &path, &c.alice_token).await;
    assert_eq!(r.body["server"]["status"], "ACTIVE");
    assert_eq!(r.body["server"]["flavor"]["id"], 1);
    assert_eq!(
        r.body["server"]["attachments"][0]["ipv4"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        4
    );

    let r = post(
        &c.app,
        &format!("{path}/action"),
        &c.alice_token,
        json!({"shutdown": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let job = pending_job(&c.store, &id.to_string()).await;
    complete(&c.store, &id.to_string(), OpCode::InstanceShutdown, job).await;
    let r = get(&c.app, &path, &c.alice_token).await;
    assert_eq!(
        r.body["server"]["status"], "STOPPED",
        "Synnefo's name, not SHUTOFF"
    );
    let r = get(
        &c.app,
        "/compute/v2.0/servers/detail?status=SHUTOFF",
        &c.alice_token,
    )
    .await;
    assert_eq!(r.body["servers"][0]["id"], id);

    let r = post(
        &c.app,
        &format!("{path}/action"),
        &c.alice_token,
        json!({"start": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let job = pending_job(&c.store, &id.to_string()).await;
    complete(&c.store, &id.to_string(), OpCode::InstanceStartup, job).await;
    let r = post(
        &c.app,
        &format!("{path}/action"),
        &c.alice_token,
        json!({"reboot": {"type": "SOFT"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = get(&c.app, &path, &c.alice_token).await;
    assert_eq!(r.body["server"]["status"], "REBOOT");
    let job = pending_job(&c.store, &id.to_string()).await;
    complete(&c.store, &id.to_string(), OpCode::InstanceReboot, job).await;

    let r = post(
        &c.app,
        &format!("{path}/action"),
        &c.alice_token,
        json!({"console": {"type": "vnc"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["console"]["type"], "vnc");
    assert_eq!(r.body["console"]["host"], "vnc.example.org");
    assert_eq!(r.body["console"]["port"], 25000);
    assert_eq!(r.body["console"]["password"].as_str().unwrap().len(), 12);

    let r = post(
        &c.app,
        &format!("{path}/metadata"),
        &c.alice_token,
        json!({"metadata": {"role": "db"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = get(&c.app, &format!("{path}/metadata/role"), &c.alice_token).await;
    assert_eq!(r.body, json!({"meta": {"role": "db"}}));
    let r = put(
        &c.app,
        &path,
        &c.alice_token,
        json!({"server": {"name": "renamed"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, "/compute/v2.0/servers", &c.alice_token).await;
    assert_eq!(
        r.body["servers"][0],
        json!({"id": id, "name": "renamed", "links": r.body["servers"][0]["links"]})
    );

    let r = delete(&c.app, &path, &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&c.app, &path, &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["code"], 404);
}

#[tokio::test]
async fn cyclades_keypairs_as_synnefo_serves_them() {
    let c = cloud().await;
    let base = "/compute/v2.0/os-keypairs";
    let r = post(
        &c.app,
        base,
        &c.alice_token,
        json!({"keypair": {"name": "gen"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let k = &r.body["keypair"];
    assert!(k["private_key"].as_str().unwrap().contains("PRIVATE KEY"));
    assert!(k["public_key"].as_str().unwrap().starts_with("ssh-rsa "));
    assert!(k.get("type").is_none() && k.get("user_id").is_none());
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti k";
    let r = post(
        &c.app,
        base,
        &c.alice_token,
        json!({"keypair": {"name": "up", "public_key": key}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body["keypair"]["fingerprint"],
        "ae:6f:ba:1b:70:2c:ae:c7:5c:ab:6e:4d:5e:d4:c7:23"
    );
    let r = post(
        &c.app,
        base,
        &c.alice_token,
        json!({"keypair": {"name": "up", "public_key": key}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = post(
        &c.app,
        base,
        &c.alice_token,
        json!({"keypair": {"name": "bad", "public_key": "ssh-rsa JUNK"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&c.app, base, &c.alice_token).await;
    let names: Vec<&str> = r.body["keypairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["keypair"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gen", "up"]);
    let r = get(&c.app, &format!("{base}/up"), &c.alice_token).await;
    assert_eq!(r.body["keypair"]["public_key"], key);
    assert_eq!(r.body["keypair"]["deleted"], false);
    assert!(r.body["keypair"]["id"].is_i64());
    let r = get(&c.app, &format!("{base}/up"), &c.bob_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = delete(&c.app, &format!("{base}/up"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = delete(&c.app, &format!("{base}/up"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
