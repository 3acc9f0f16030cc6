//! Neutron v2.0 at `/network`: discovery and catalogs, networks, subnets,
//! ports and floating IPs (CRUD, visibility across projects, quota,
//! in-use conflicts, faults, filters, `fields`, pagination), and floating
//! IP association against an accepting Ganeti mock that records the NIC
//! jobs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use synnefo_core::ids::JobId;
use synnefo_core::model::User;
use synnefo_core::ports::{IdentityStore, JobInfo, MockGanetiBackend};
use synnefo_core::service::identity::hash_password;
use synnefo_core::state::JobStatus;

use crate::api_support::*;

const N: &str = "/network/v2.0";

/// NIC jobs the mock saw: `(instance, "add"|"remove", nic name or ip)`.
pub(crate) type NicLog = Arc<Mutex<Vec<(String, &'static str, String)>>>;

/// The accepting mock plus the network and NIC operations, every job a
/// success.
fn network_ganeti(jobs: Arc<AtomicU64>, nics: NicLog) -> MockGanetiBackend {
    let mut g = accepting_ganeti(jobs.clone());
    let next = move |j: &Arc<AtomicU64>| JobId(j.fetch_add(1, Ordering::SeqCst) + 1);
    let j = jobs.clone();
    g.expect_create_network().returning(move |_| Ok(next(&j)));
    let j = jobs.clone();
    g.expect_connect_network()
        .returning(move |_, _, _| Ok(vec![next(&j)]));
    let j = jobs.clone();
    g.expect_disconnect_network()
        .returning(move |_, _| Ok(vec![next(&j)]));
    let j = jobs.clone();
    g.expect_remove_network()
        .returning(move |_, _| Ok(next(&j)));
    g.expect_list_networks().returning(|_| Ok(vec![]));
    let j = jobs.clone();
    let log = nics.clone();
    g.expect_add_nic().returning(move |_, inst, nic| {
        log.lock()
            .unwrap()
            .push((inst.to_string(), "add", nic.ip.clone().unwrap_or_default()));
        Ok(next(&j))
    });
    let j = jobs.clone();
    let log = nics;
    g.expect_remove_nic().returning(move |_, inst, name| {
        log.lock()
            .unwrap()
            .push((inst.to_string(), "remove", name.to_string()));
        Ok(next(&j))
    });
    g.expect_wait_for_job().returning(|_, job, _| {
        Ok(JobInfo {
            id: job,
            status: JobStatus::Success,
            ops: vec![],
            end_time_us: None,
        })
    });
    g
}

pub(crate) struct Net {
    pub(crate) c: Cloud,
    pub(crate) admin_token: String,
    pub(crate) nics: NicLog,
}

pub(crate) async fn net_cloud() -> Net {
    let jobs = Arc::new(AtomicU64::new(100));
    let nics: NicLog = Arc::default();
    let store = sqlite_store().await;
    let c = cloud_with(
        store,
        Arc::new(network_ganeti(jobs.clone(), nics.clone())),
        jobs,
    )
    .await;
    let admin: User = c
        .store
        .create_user("operator", &hash_password("op-pw").unwrap(), true)
        .await
        .unwrap();
    let ops = c.store.create_project("operators").await.unwrap();
    c.store.add_member(&admin.id, &ops.id).await.unwrap();
    let admin_token = token(&c.store, &admin, &ops).await;
    Net {
        c,
        admin_token,
        nics,
    }
}

fn neutron_error(r: &Resp, status: StatusCode, kind: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/json",
        "faults are JSON"
    );
    assert_eq!(r.body["NeutronError"]["type"], kind, "{:?}", r.body);
    assert!(r.body["NeutronError"]["message"].is_string());
    assert_eq!(r.body["NeutronError"]["detail"], "");
}

pub(crate) async fn create_network(app: &axum::Router, token: &str, body: Value) -> Value {
    let r = post(
        app,
        &format!("{N}/networks"),
        token,
        json!({"network": body}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["network"].clone()
}

pub(crate) async fn create_subnet(
    app: &axum::Router,
    token: &str,
    network: &str,
    cidr: &str,
) -> Value {
    let r = post(
        app,
        &format!("{N}/subnets"),
        token,
        json!({"subnet": {"network_id": network, "cidr": cidr, "ip_version": 4, "name": "sn"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["subnet"].clone()
}

fn ids(body: &Value, coll: &str) -> Vec<String> {
    body[coll]
        .as_array()
        .unwrap_or_else(|| panic!("no {coll} in {body}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn discovery_extensions_and_catalogs() {
    let Net { c, .. } = net_cloud().await;
    let r = send(&c.app, Method::GET, "/network/", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["versions"][0]["id"], "v2.0");
    assert_eq!(r.body["versions"][0]["status"], "CURRENT");
    assert_eq!(
        r.body["versions"][0]["links"][0]["href"],
        "http://api.example.org/network/v2.0/"
    );
    let r = send(&c.app, Method::GET, "/network/v2.0/", None, None, &[]).await;
    let names: Vec<&str> = r.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["network", "subnet", "port", "floatingip"]);

    let r = get(&c.app, &format!("{N}/extensions"), &c.alice_token).await;
    let aliases: Vec<&str> = r.body["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["alias"].as_str().unwrap())
        .collect();
    assert!(aliases.contains(&"external-net"), "{aliases:?}");
    let r = get(
        &c.app,
        &format!("{N}/extensions/external-net"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.body["extension"]["alias"], "external-net");
    let r = get(&c.app, &format!("{N}/extensions/router"), &c.alice_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "HTTPNotFound");

    // Auth and routing faults are Neutron's too.
    let r = send(
        &c.app,
        Method::GET,
        &format!("{N}/networks"),
        None,
        None,
        &[],
    )
    .await;
    neutron_error(&r, StatusCode::UNAUTHORIZED, "HTTPUnauthorized");
    let r = get(&c.app, &format!("{N}/routers"), &c.alice_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "HTTPNotFound");
    let r = send(
        &c.app,
        Method::PATCH,
        &format!("{N}/networks"),
        Some(&c.alice_token),
        None,
        &[],
    )
    .await;
    neutron_error(&r, StatusCode::METHOD_NOT_ALLOWED, "HTTPMethodNotAllowed");

    // Keystone v3: an unversioned network endpoint.
    let r = post(
        &c.app,
        "/identity/v3/auth/tokens",
        "",
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"id": "default"}, "password": "alice-pw"}}}, "scope": {"project": {"name": "project-a", "domain": {"id": "default"}}}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let net = r.body["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "network")
        .expect("a network service")
        .clone();
    assert_eq!(net["endpoints"][0]["url"], "http://api.example.org/network");
    // Astakos (kamaki): Synnefo's cyclades_network, the Cyclades mount.
    let r = post(
        &c.app,
        "/identity/v2.0/tokens",
        &c.alice_token,
        json!({"auth": {"token": {"id": c.alice_token}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let net = r.body["access"]["serviceCatalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "network")
        .expect("a network service")
        .clone();
    assert_eq!(
        net["endpoints"][0]["publicURL"],
        "http://api.example.org/cyclades/network"
    );
}

#[tokio::test]
async fn networks_subnets_ports_crud_and_visibility() {
    let Net { c, .. } = net_cloud().await;
    let app = &c.app;
    let n = create_network(
        app,
        &c.alice_token,
        json!({"name": "net1", "admin_state_up": true}),
    )
    .await;
    let nid = n["id"].as_str().unwrap().to_string();
    for (k, v) in [
        ("name", json!("net1")),
        ("status", json!("ACTIVE")),
        ("admin_state_up", json!(true)),
        ("subnets", json!([])),
        ("shared", json!(false)),
        ("router:external", json!(false)),
        ("project_id", json!(c.pa.id)),
        ("tenant_id", json!(c.pa.id)),
        ("mtu", json!(1500)),
        ("description", json!("")),
        ("tags", json!([])),
        ("availability_zone_hints", json!([])),
        ("type", json!("MAC_FILTERED")),
        ("SNF:floating_ip_pool", json!(false)),
        ("public", json!(false)),
    ] {
        assert_eq!(n[k], v, "{k} in {n}");
    }
    for k in ["created_at", "updated_at", "revision_number"] {
        assert!(n.get(k).is_some(), "{k} in {n}");
    }

    // A subnet: the network lists it; every list attribute is a list.
    let s = create_subnet(app, &c.alice_token, &nid, "10.99.0.0/24").await;
    let sid = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["cidr"], "10.99.0.0/24");
    assert_eq!(s["gateway_ip"], "10.99.0.1");
    assert_eq!(s["enable_dhcp"], true);
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "10.99.0.2", "end": "10.99.0.254"}])
    );
    assert_eq!(s["dns_nameservers"], json!([]));
    assert_eq!(s["host_routes"], json!([]));
    let r = get(app, &format!("{N}/networks/{nid}"), &c.alice_token).await;
    assert_eq!(r.body["network"]["subnets"], json!([sid]));
    let r = get(app, &format!("{N}/networks"), &c.alice_token).await;
    assert_eq!(ids(&r.body, "networks"), std::slice::from_ref(&nid));
    assert_eq!(r.body["networks"][0]["subnets"], json!([sid]));
    let r = get(app, &format!("{N}/subnets/{sid}"), &c.alice_token).await;
    assert_eq!(r.body["subnet"]["network_id"], nid);

    // kamaki's detail route is the same list.
    let r = get(app, &format!("{N}/networks/detail"), &c.alice_token).await;
    assert_eq!(ids(&r.body, "networks"), std::slice::from_ref(&nid));

    // Rename.
    let r = put(
        app,
        &format!("{N}/networks/{nid}"),
        &c.alice_token,
        json!({"network": {"name": "renamed", "whatever": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["network"]["name"], "renamed");
    let r = put(
        app,
        &format!("{N}/subnets/{sid}"),
        &c.alice_token,
        json!({"subnet": {"name": "sn2", "dns_nameservers": ["192.0.2.53"]}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["subnet"]["dns_nameservers"], json!(["192.0.2.53"]));

    // A port gets the first address of the pool.
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": nid, "name": "p1"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let p = r.body["port"].clone();
    let pid = p["id"].as_str().unwrap().to_string();
    assert_eq!(
        p["fixed_ips"],
        json!([{"subnet_id": sid, "ip_address": "10.99.0.2"}])
    );
    assert!(p["mac_address"].as_str().unwrap().starts_with("ae:00:00:"));
    assert_eq!(p["device_id"], "");
    assert_eq!(p["status"], "DOWN");
    assert_eq!(p["network_id"], nid);
    let r = put(
        app,
        &format!("{N}/ports/{pid}"),
        &c.alice_token,
        json!({"port": {"name": "p1b", "admin_state_up": false}}),
    )
    .await;
    assert_eq!(r.body["port"]["name"], "p1b");
    assert_eq!(r.body["port"]["admin_state_up"], false);
    // The same address again: 409 IpAddressInUse.
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": nid, "fixed_ips": [{"ip_address": "10.99.0.2"}]}}),
    )
    .await;
    neutron_error(&r, StatusCode::CONFLICT, "IpAddressInUse");
    // An address of no subnet of the network: 400.
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": nid, "fixed_ips": [{"ip_address": "10.98.0.2"}]}}),
    )
    .await;
    neutron_error(&r, StatusCode::BAD_REQUEST, "BadRequest");

    // Bob sees none of it: 404s, empty lists, and he cannot use it.
    for (coll, id, kind) in [
        ("networks", &nid, "NetworkNotFound"),
        ("subnets", &sid, "SubnetNotFound"),
        ("ports", &pid, "PortNotFound"),
    ] {
        let r = get(app, &format!("{N}/{coll}/{id}"), &c.bob_token).await;
        neutron_error(&r, StatusCode::NOT_FOUND, kind);
        let r = delete(app, &format!("{N}/{coll}/{id}"), &c.bob_token).await;
        neutron_error(&r, StatusCode::NOT_FOUND, kind);
        let r = get(app, &format!("{N}/{coll}"), &c.bob_token).await;
        assert_eq!(r.body[coll], json!([]), "{coll}");
    }
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.bob_token,
        json!({"port": {"network_id": nid}}),
    )
    .await;
    neutron_error(&r, StatusCode::NOT_FOUND, "NetworkNotFound");
    let r = post(
        app,
        &format!("{N}/subnets"),
        &c.bob_token,
        json!({"subnet": {"network_id": nid, "cidr": "10.1.0.0/24", "ip_version": 4}}),
    )
    .await;
    neutron_error(&r, StatusCode::NOT_FOUND, "NetworkNotFound");

    // In use: the network and the subnet cannot go while the port holds an address.
    let r = delete(app, &format!("{N}/networks/{nid}"), &c.alice_token).await;
    neutron_error(&r, StatusCode::CONFLICT, "NetworkInUse");
    let r = delete(app, &format!("{N}/subnets/{sid}"), &c.alice_token).await;
    neutron_error(&r, StatusCode::CONFLICT, "SubnetInUse");

    let r = delete(app, &format!("{N}/ports/{pid}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert!(r.raw.is_empty());
    let r = get(app, &format!("{N}/ports/{pid}"), &c.alice_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "PortNotFound");
    // Deleting the network takes its subnets along.
    let r = delete(app, &format!("{N}/networks/{nid}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = get(app, &format!("{N}/subnets/{sid}"), &c.alice_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "SubnetNotFound");
    let r = get(app, &format!("{N}/networks/{nid}"), &c.alice_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "NetworkNotFound");
}

#[tokio::test]
async fn lookups_by_name_and_bad_input() {
    let Net { c, .. } = net_cloud().await;
    let app = &c.app;
    // The CLI's find: GET /<coll>/<name> must be a 404, never a 5xx.
    for coll in ["networks", "subnets", "ports", "floatingips"] {
        for junk in ["net1", "203.0.113.7", "%20", "a%2Fb", &"x".repeat(300)] {
            let r = get(app, &format!("{N}/{coll}/{junk}"), &c.alice_token).await;
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{coll}/{junk}: {:?}",
                r.body
            );
            assert!(r.body["NeutronError"]["type"].is_string());
        }
    }
    let url = format!("{N}/networks");
    for (body, why) in [
        (&b"{"[..], "malformed"),
        (b"[]", "not an object"),
        (b"{}", "no network"),
        (b"{\"network\": 5}", "network not an object"),
        (b"{\"network\": {\"admin_state_up\": \"yes\"}}", "bad bool"),
        (b"{\"network\": {\"name\": 7}}", "bad name"),
        (b"{\"network\": {\"type\": \"WORMHOLE\"}}", "unknown type"),
        (b"{\"networks\": []}", "empty bulk"),
        (b"{\"network\": {\"name\": \"a\\u0000b\"}}", "NUL"),
    ] {
        let r = send(
            app,
            Method::POST,
            &url,
            Some(&c.alice_token),
            Some(body.to_vec()),
            &[],
        )
        .await;
        neutron_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
        let _ = why;
    }
    let big = vec![b' '; 70 * 1024];
    let r = send(
        app,
        Method::POST,
        &url,
        Some(&c.alice_token),
        Some(big),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body["NeutronError"].is_object());
    // Operators' attributes: 403.
    let r = post(
        app,
        &url,
        &c.alice_token,
        json!({"network": {"name": "x", "router:external": true}}),
    )
    .await;
    neutron_error(&r, StatusCode::FORBIDDEN, "HTTPForbidden");
    // Bad subnets.
    let n = create_network(app, &c.alice_token, json!({"name": "n"})).await;
    for body in [
        json!({"subnet": {"network_id": n["id"], "cidr": "10.0.0.1/24", "ip_version": 4}}),
        json!({"subnet": {"network_id": n["id"], "cidr": "nonsense"}}),
        json!({"subnet": {"network_id": n["id"]}}),
        json!({"subnet": {"cidr": "10.0.0.0/24"}}),
        json!({"subnet": {"network_id": n["id"], "cidr": "10.0.0.0/24", "ip_version": 6}}),
        json!({"subnet": {"network_id": n["id"], "cidr": "10.0.0.0/24", "ip_version": "four"}}),
        json!({"subnet": {"network_id": n["id"], "cidr": "10.0.0.0/24", "gateway_ip": "10.1.0.1"}}),
    ] {
        let r = post(app, &format!("{N}/subnets"), &c.alice_token, body.clone()).await;
        neutron_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
    }
    // gateway_ip null: no gateway, the pool starts at .1
    let r = post(
        app,
        &format!("{N}/subnets"),
        &c.alice_token,
        json!({"subnet": {"network_id": n["id"], "cidr": "10.5.0.0/29", "gateway_ip": null}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["subnet"]["gateway_ip"], Value::Null);
    assert_eq!(
        r.body["subnet"]["allocation_pools"],
        json!([{"start": "10.5.0.1", "end": "10.5.0.6"}])
    );
    // Query faults.
    let r = get(app, &format!("{N}/networks?shared=maybe"), &c.alice_token).await;
    neutron_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
    let r = get(app, &format!("{N}/networks?limit=-1"), &c.alice_token).await;
    neutron_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
}

#[tokio::test]
async fn filters_fields_and_pagination() {
    let Net { c, admin_token, .. } = net_cloud().await;
    let app = &c.app;
    let mut mine = Vec::new();
    for name in ["a", "b", "b", "c"] {
        mine.push(create_network(app, &c.alice_token, json!({"name": name})).await);
    }
    let ext = create_network(
        app,
        &admin_token,
        json!({"name": "public", "router:external": true, "shared": true}),
    )
    .await;
    let token = c.alice_token.clone();
    let list = |q: &str| {
        let q = q.to_string();
        let token = token.clone();
        async move { get(app, &format!("{N}/networks{q}"), &token).await }
    };
    let all = list("").await;
    assert_eq!(
        ids(&all.body, "networks").len(),
        5,
        "hers and the shared external one"
    );
    let r = list("?name=b").await;
    assert_eq!(ids(&r.body, "networks").len(), 2);
    let r = list("?name=a&name=c").await;
    assert_eq!(ids(&r.body, "networks").len(), 2, "a repeated key ORs");
    let r = list("?router%3Aexternal=True").await;
    assert_eq!(ids(&r.body, "networks"), [ext["id"].as_str().unwrap()]);
    let r = list("?router:external=false&shared=FALSE").await;
    assert_eq!(ids(&r.body, "networks").len(), 4);
    let r = list(&format!("?tenant_id={}", c.pa.id)).await;
    assert_eq!(ids(&r.body, "networks").len(), 4);
    let r = list(&format!(
        "?id={}&id={}",
        mine[0]["id"].as_str().unwrap(),
        mine[3]["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(ids(&r.body, "networks").len(), 2);
    let r = list("?status=ACTIVE&admin_state_up=true&whatever=1").await;
    assert_eq!(ids(&r.body, "networks").len(), 5, "unknown filters ignored");
    let r = list("?status=DOWN").await;
    assert_eq!(ids(&r.body, "networks").len(), 0);

    // fields: exactly those keys.
    let r = list("?fields=id&fields=mtu").await;
    for n in r.body["networks"].as_array().unwrap() {
        let mut keys: Vec<&String> = n.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "mtu"]);
    }
    let id = mine[0]["id"].as_str().unwrap();
    let r = get(
        app,
        &format!("{N}/networks/{id}?fields=name"),
        &c.alice_token,
    )
    .await;
    assert_eq!(r.body, json!({"network": {"name": "a"}}));

    // limit + marker: a next link while more follow, none at the end, and
    // following the links visits everything once.
    let mut seen = Vec::new();
    let mut url = format!("{N}/networks?limit=2");
    for _ in 0..10 {
        let r = get(app, &url, &c.alice_token).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {:?}", r.body);
        let page = ids(&r.body, "networks");
        assert!(page.len() <= 2);
        seen.extend(page);
        match r.body["networks_links"][0]["href"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with("http://api.example.org/network/v2.0/networks?"),
                    "{next}"
                );
                url = next
                    .trim_start_matches("http://api.example.org")
                    .to_string();
            }
            None => break,
        }
    }
    let mut want = ids(&all.body, "networks");
    want.sort();
    assert_eq!(seen, want, "pages in id order, each once");
    // The SDK's loop without links: marker past the end is an empty page.
    let last = want.last().unwrap();
    let r = list(&format!("?limit=2&marker={last}")).await;
    assert_eq!(r.body["networks"], json!([]));
    assert!(r.body.get("networks_links").is_none());
    // Filters the store cannot apply still page exactly.
    let r = list("?name=b&name=c&limit=2").await;
    assert_eq!(ids(&r.body, "networks").len(), 2);
    assert!(r.body["networks_links"][0]["href"].is_string());
}

#[tokio::test]
async fn quota_of_networks() {
    let Net { c, .. } = net_cloud().await;
    for i in 0..10 {
        create_network(&c.app, &c.alice_token, json!({"name": format!("n{i}")})).await;
    }
    let r = post(
        &c.app,
        &format!("{N}/networks"),
        &c.alice_token,
        json!({"network": {"name": "one-too-many"}}),
    )
    .await;
    neutron_error(&r, StatusCode::FORBIDDEN, "OverQuota");
    // Bob's project has its own count; a bulk create over the limit
    // leaves nothing behind.
    let many: Vec<Value> = (0..11).map(|i| json!({"name": format!("b{i}")})).collect();
    let r = post(
        &c.app,
        &format!("{N}/networks"),
        &c.bob_token,
        json!({"networks": many}),
    )
    .await;
    neutron_error(&r, StatusCode::FORBIDDEN, "OverQuota");
    let r = get(&c.app, &format!("{N}/networks"), &c.bob_token).await;
    assert_eq!(r.body["networks"], json!([]), "bulk is all or nothing");
    let r = post(
        &c.app,
        &format!("{N}/networks"),
        &c.bob_token,
        json!({"networks": [{"name": "x"}, {"name": "y"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["networks"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn floating_ips_associate_and_disassociate() {
    let Net {
        c,
        admin_token,
        nics,
    } = net_cloud().await;
    let app = &c.app;
    // The operator's external network with a pool.
    let ext = create_network(
        app,
        &admin_token,
        json!({"name": "public", "router:external": true, "type": "IP_LESS_ROUTED"}),
    )
    .await;
    let ext_id = ext["id"].as_str().unwrap().to_string();
    assert_eq!(ext["SNF:floating_ip_pool"], true);
    create_subnet(app, &admin_token, &ext_id, "203.0.113.0/28").await;
    // Users cannot put plain ports on it.
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": ext_id}}),
    )
    .await;
    neutron_error(&r, StatusCode::FORBIDDEN, "HTTPForbidden");

    let r = post(
        app,
        &format!("{N}/floatingips"),
        &c.alice_token,
        json!({"floatingip": {"floating_network_id": ext_id}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let f = r.body["floatingip"].clone();
    let fid = f["id"].as_str().unwrap().to_string();
    let addr = f["floating_ip_address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("203.0.113."), "{addr}");
    assert_eq!(f["status"], "DOWN");
    assert_eq!(f["port_id"], Value::Null);
    assert_eq!(f["fixed_ip_address"], Value::Null);
    assert_eq!(f["router_id"], Value::Null);
    assert_eq!(f["floating_network_id"], ext_id);
    assert_eq!(f["project_id"], c.pa.id);
    assert_eq!(f["tenant_id"], c.pa.id);
    // Looked up by address: 404 (the CLI then lists).
    let r = get(app, &format!("{N}/floatingips/{addr}"), &c.alice_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "FloatingIPNotFound");
    let r = get(app, &format!("{N}/floatingips/{fid}"), &c.bob_token).await;
    neutron_error(&r, StatusCode::NOT_FOUND, "FloatingIPNotFound");
    let r = get(app, &format!("{N}/floatingips"), &c.bob_token).await;
    assert_eq!(r.body["floatingips"], json!([]));
    let r = get(
        app,
        &format!("{N}/floatingips?floating_ip_address={addr}"),
        &c.alice_token,
    )
    .await;
    assert_eq!(ids(&r.body, "floatingips"), std::slice::from_ref(&fid));
    // Without a network: the first external one (kamaki's `ip create`).
    let r = post(
        app,
        &format!("{N}/floatingips"),
        &c.alice_token,
        json!({"floatingip": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let f2 = r.body["floatingip"]["id"].as_str().unwrap().to_string();
    // A private network is not external: 400.
    let private = create_network(app, &c.alice_token, json!({"name": "priv"})).await;
    let priv_id = private["id"].as_str().unwrap().to_string();
    create_subnet(app, &c.alice_token, &priv_id, "10.99.0.0/24").await;
    let r = post(
        app,
        &format!("{N}/floatingips"),
        &c.alice_token,
        json!({"floatingip": {"floating_network_id": priv_id}}),
    )
    .await;
    neutron_error(&r, StatusCode::BAD_REQUEST, "BadRequest");

    // A server with a port on the private network.
    let server = active(&c, &c.alice_token, "vm1").await;
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": priv_id, "device_id": server}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let port = r.body["port"].clone();
    let pid = port["id"].as_str().unwrap().to_string();
    assert_eq!(port["device_id"], server);
    assert_eq!(port["device_owner"], "compute:nova");
    assert_eq!(port["status"], "ACTIVE");
    let fixed = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(nics.lock().unwrap().len(), 1, "the port's NIC was added");
    let r = get(
        app,
        &format!("{N}/ports?device_id={server}"),
        &c.alice_token,
    )
    .await;
    assert_eq!(ids(&r.body, "ports"), std::slice::from_ref(&pid));
    // An unbound port cannot carry it: 404, so the CLI tries the next.
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": priv_id}}),
    )
    .await;
    let loose = r.body["port"]["id"].as_str().unwrap().to_string();
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.alice_token,
        json!({"floatingip": {"port_id": loose}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.bob_token,
        json!({"floatingip": {"port_id": pid}}),
    )
    .await;
    neutron_error(&r, StatusCode::NOT_FOUND, "FloatingIPNotFound");

    // Associate: ACTIVE, on the port, standing for its address; the server
    // got a NIC carrying the floating address.
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.alice_token,
        json!({"floatingip": {"port_id": pid}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let f = &r.body["floatingip"];
    assert_eq!(f["status"], "ACTIVE");
    assert_eq!(f["port_id"], pid);
    assert_eq!(f["fixed_ip_address"], fixed);
    {
        let log = nics.lock().unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].1, "add");
        assert_eq!(log[1].2, addr, "the NIC carries the floating address");
    }
    let r = get(
        app,
        &format!("{N}/floatingips?port_id={pid}"),
        &c.alice_token,
    )
    .await;
    assert_eq!(ids(&r.body, "floatingips"), std::slice::from_ref(&fid));
    let r = get(app, &format!("{N}/floatingips?status=DOWN"), &c.alice_token).await;
    assert_eq!(ids(&r.body, "floatingips"), std::slice::from_ref(&f2));
    // Already associated elsewhere: 409.
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.alice_token,
        json!({"floatingip": {"port_id": loose}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    // No port_id: nothing changes.
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.alice_token,
        json!({"floatingip": {"description": "x"}}),
    )
    .await;
    assert_eq!(r.body["floatingip"]["port_id"], pid);

    // Disassociate: DOWN again, the NIC removed.
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.alice_token,
        json!({"floatingip": {"port_id": null}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["floatingip"]["status"], "DOWN");
    assert_eq!(r.body["floatingip"]["port_id"], Value::Null);
    assert_eq!(r.body["floatingip"]["fixed_ip_address"], Value::Null);
    assert_eq!(nics.lock().unwrap().last().unwrap().1, "remove");

    for id in [&fid, &f2] {
        let r = delete(app, &format!("{N}/floatingips/{id}"), &c.alice_token).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    }
    let r = get(app, &format!("{N}/floatingips"), &c.alice_token).await;
    assert_eq!(r.body["floatingips"], json!([]));
}

#[tokio::test]
async fn floating_ip_quota() {
    let Net { c, admin_token, .. } = net_cloud().await;
    let ext = create_network(
        &c.app,
        &admin_token,
        json!({"name": "public", "router:external": true}),
    )
    .await;
    let ext_id = ext["id"].as_str().unwrap();
    create_subnet(&c.app, &admin_token, ext_id, "198.51.100.0/24").await;
    let url = format!("{N}/floatingips");
    let body = json!({"floatingip": {"floating_network_id": ext_id}});
    for _ in 0..10 {
        let r = post(&c.app, &url, &c.alice_token, body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = post(&c.app, &url, &c.alice_token, body.clone()).await;
    neutron_error(&r, StatusCode::FORBIDDEN, "OverQuota");
    // Users cannot pick the address.
    let r = post(
        &c.app,
        &url,
        &c.bob_token,
        json!({"floatingip": {"floating_network_id": ext_id, "floating_ip_address": "198.51.100.77"}}),
    )
    .await;
    neutron_error(&r, StatusCode::FORBIDDEN, "HTTPForbidden");
}
