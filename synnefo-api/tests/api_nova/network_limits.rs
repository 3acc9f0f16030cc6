//! Neutron's bounds as settings make them (issue 15): list pages at
//! `[network] pagination_max_limit` (no `limit`, or a larger one), the
//! per-project port bound on a network without a subnet, and a
//! `PHYSICAL_VLAN` link pool: each network its own link, a clean 503
//! `NoNetworkAvailable` when none is left.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::http::StatusCode;
use serde_json::{Value, json};
use synnefo_api::state::{ApiConfig, ApiState};
use synnefo_core::model::User;
use synnefo_core::network::{LinkPool, NetworkFlavor, ResourcePool};
use synnefo_core::ports::{GanetiBackend, IdentityStore, NetworkStore};
use synnefo_core::service::compute::ComputeConfig;
use synnefo_core::service::identity::hash_password;
use synnefo_core::service::network::NetworkConfig;

use crate::api_support::*;

const N: &str = "/network/v2.0";

/// A cloud whose network settings are `network`, with an operator token.
async fn cloud_of(network: NetworkConfig) -> (Cloud, String) {
    let jobs = Arc::new(AtomicU64::new(100));
    let store = sqlite_store().await;
    let ganeti: Arc<dyn GanetiBackend> = Arc::new(accepting_ganeti(jobs.clone()));
    let cfg = ApiConfig {
        compute: ComputeConfig {
            network,
            ..ComputeConfig::default()
        },
        ..config()
    };
    let c = cloud_with_state(store, |s| ApiState::new(s, ganeti, cfg), jobs).await;
    let admin: User = c
        .store
        .create_user("operator", &hash_password("op-pw").unwrap(), true)
        .await
        .unwrap();
    let ops = c.store.create_project("operators").await.unwrap();
    c.store.add_member(&admin.id, &ops.id).await.unwrap();
    let admin_token = token(&c.store, &admin, &ops).await;
    (c, admin_token)
}

async fn network(c: &Cloud, token: &str, body: Value) -> Resp {
    post(
        &c.app,
        &format!("{N}/networks"),
        token,
        json!({"network": body}),
    )
    .await
}

fn ids(body: &Value) -> Vec<String> {
    body["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn lists_are_paged_at_the_configured_maximum() {
    let (c, _) = cloud_of(NetworkConfig {
        pagination_max_limit: 3,
        ..NetworkConfig::default()
    })
    .await;
    for i in 0..7 {
        let r = network(&c, &c.alice_token, json!({"name": format!("n{i}")})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // no limit: a page of the maximum and a next link
    let r = get(&c.app, &format!("{N}/networks"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ids(&r.body).len(), 3);
    assert!(r.body["networks_links"][0]["href"].is_string());
    // a larger limit is capped, a smaller one honoured
    let r = get(&c.app, &format!("{N}/networks?limit=50"), &c.alice_token).await;
    assert_eq!(ids(&r.body).len(), 3);
    let r = get(&c.app, &format!("{N}/networks?limit=2"), &c.alice_token).await;
    assert_eq!(ids(&r.body).len(), 2);
    // following the links (as the SDK does) sees every network once
    let mut seen = Vec::new();
    let mut path = format!("{N}/networks");
    loop {
        let r = get(&c.app, &path, &c.alice_token).await;
        seen.extend(ids(&r.body));
        match r.body["networks_links"][0]["href"].as_str() {
            Some(href) => {
                path = href
                    .strip_prefix("http://api.example.org")
                    .expect("links under the public URL")
                    .to_string()
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted.len()), (7, 7), "{seen:?}");
    // a filter the store cannot apply pages the same way
    let r = get(
        &c.app,
        &format!("{N}/networks?name=n1&name=n2&name=n3&name=n4"),
        &c.alice_token,
    )
    .await;
    assert_eq!(ids(&r.body).len(), 3);
    assert!(r.body["networks_links"][0]["href"].is_string());
}

#[tokio::test]
async fn ports_are_bounded_per_project() {
    let (c, admin) = cloud_of(NetworkConfig {
        max_ports_per_project: Some(2),
        ..NetworkConfig::default()
    })
    .await;
    // no subnet: nothing but the bound limits its ports
    let r = network(&c, &c.alice_token, json!({"name": "l2"})).await;
    let nid = r.body["network"]["id"].as_str().unwrap().to_string();
    let port = |token: String| {
        let app = c.app.clone();
        let nid = nid.clone();
        async move {
            post(
                &app,
                &format!("{N}/ports"),
                &token,
                json!({"port": {"network_id": nid}}),
            )
            .await
        }
    };
    for _ in 0..2 {
        let r = port(c.alice_token.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = port(c.alice_token.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["NeutronError"]["type"], "OverQuota");
    assert!(
        r.body["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("ports"),
        "{:?}",
        r.body
    );
    // operators are not bound
    let r = port(admin).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn physical_vlan_networks_lease_their_own_links() {
    let mut cfg = NetworkConfig::default();
    cfg.pools.insert(
        NetworkFlavor::PhysicalVlan,
        vec![ResourcePool::Link(LinkPool::new("prv", 2).unwrap())],
    );
    let (c, admin) = cloud_of(cfg).await;
    let mut made = Vec::new();
    for name in ["v0", "v1"] {
        let r = network(&c, &admin, json!({"name": name, "type": "PHYSICAL_VLAN"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        made.push(r.body["network"]["id"].as_str().unwrap().to_string());
    }
    let mut links = Vec::new();
    for id in &made {
        links.push(c.store.network(id).await.unwrap().unwrap().link);
    }
    assert_eq!(links, ["prv0", "prv1"]);
    let r = network(&c, &admin, json!({"name": "v2", "type": "PHYSICAL_VLAN"})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["NeutronError"]["type"], "NoNetworkAvailable");
    // deleting a network gives its link back
    let r = send_delete(&c, &admin, &made[0]).await;
    assert_eq!(r, StatusCode::NO_CONTENT);
    let r = network(&c, &admin, json!({"name": "v3", "type": "PHYSICAL_VLAN"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["network"]["id"].as_str().unwrap();
    assert_eq!(c.store.network(id).await.unwrap().unwrap().link, "prv0");
}

async fn send_delete(c: &Cloud, token: &str, id: &str) -> StatusCode {
    delete(&c.app, &format!("{N}/networks/{id}"), token)
        .await
        .status
}
