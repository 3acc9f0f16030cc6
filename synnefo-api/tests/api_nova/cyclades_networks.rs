//! The Cyclades network dialect kamaki 0.16 uses (`/cyclades/network`,
//! the Astakos catalog's `cyclades_network`): Synnefo's status codes and
//! faults beside Neutron's at `/network`, and Synnefo's rule for a port on
//! an external network that carries one of the project's floating IPs
//! (kamaki's `ip attach` / `ip detach`), on both mounts.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api_support::*;
use crate::networks::{Net, create_network, create_subnet, net_cloud};

const C: &str = "/cyclades/network/v2.0";
const N: &str = "/network/v2.0";

/// A Synnefo fault: `{"<name>": {"code", "message"}}`.
fn synnefo_fault(r: &Resp, status: StatusCode, name: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body[name]["code"], status.as_u16(), "{:?}", r.body);
    assert!(r.body[name]["message"].is_string(), "{:?}", r.body);
    assert!(r.body.get("NeutronError").is_none(), "{:?}", r.body);
}

#[tokio::test]
async fn cyclades_mount_status_codes_and_faults() {
    let Net { c, admin_token, .. } = net_cloud().await;
    let app = &c.app;
    let r = send(
        app,
        axum::http::Method::GET,
        "/cyclades/network/",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(
        r.body["versions"][0]["links"][0]["href"],
        "http://api.example.org/cyclades/network/v2.0/"
    );
    let ext = create_network(
        app,
        &admin_token,
        json!({"name": "public", "router:external": true}),
    )
    .await;
    let ext_id = ext["id"].as_str().unwrap();
    create_subnet(app, &admin_token, ext_id, "203.0.113.0/28").await;

    // kamaki's `ip create`: 200 here, 201 at Neutron's mount.
    let body = json!({"floatingip": {"floating_network_id": ext_id}});
    let r = post(
        app,
        &format!("{C}/floatingips"),
        &c.alice_token,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["floatingip"]["floating_network_id"], ext_id);
    let r = post(app, &format!("{N}/floatingips"), &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Without a network (kamaki's default), in the token's project.
    let r = post(
        app,
        &format!("{C}/floatingips"),
        &c.alice_token,
        json!({"floatingip": {"project": c.pa.id}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["floatingip"]["project_id"], c.pa.id);
    // Another project: refused, not silently charged to the token's.
    let r = post(
        app,
        &format!("{C}/floatingips"),
        &c.alice_token,
        json!({"floatingip": {"project": c.pb.id}}),
    )
    .await;
    synnefo_fault(&r, StatusCode::BAD_REQUEST, "badRequest");
    let r = post(
        app,
        &format!("{C}/networks"),
        &c.alice_token,
        json!({"network": {"type": "MAC_FILTERED", "admin_state_up": true, "name": "k", "project": c.pb.id}}),
    )
    .await;
    synnefo_fault(&r, StatusCode::BAD_REQUEST, "badRequest");
    // kamaki's `network create`: 201, its type and `public` for `network list`.
    let r = post(
        app,
        &format!("{C}/networks"),
        &c.alice_token,
        json!({"network": {"type": "MAC_FILTERED", "admin_state_up": true, "name": "k", "project": c.pa.id}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["network"]["type"], "MAC_FILTERED");
    assert_eq!(r.body["network"]["public"], false);
    let r = get(app, &format!("{C}/networks/detail"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["networks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "k")
    );

    // Faults in Synnefo's shape, the same status as Neutron's.
    let r = get(app, &format!("{C}/networks/nope"), &c.alice_token).await;
    synnefo_fault(&r, StatusCode::NOT_FOUND, "itemNotFound");
    let r = get(app, &format!("{N}/networks/nope"), &c.alice_token).await;
    assert_eq!(r.body["NeutronError"]["type"], "NetworkNotFound");
    let r = send(
        app,
        axum::http::Method::GET,
        &format!("{C}/ports"),
        None,
        None,
        &[],
    )
    .await;
    synnefo_fault(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = get(app, &format!("{C}/routers"), &c.alice_token).await;
    synnefo_fault(&r, StatusCode::NOT_FOUND, "itemNotFound");
    let r = delete(app, &format!("{C}/networks/{ext_id}"), &c.alice_token).await;
    synnefo_fault(&r, StatusCode::NOT_FOUND, "itemNotFound");
}

/// The floating IP's row as `mount` shows it.
async fn floating(app: &axum::Router, mount: &str, token: &str, id: &str) -> Value {
    let r = get(app, &format!("{mount}/floatingips/{id}"), token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["floatingip"].clone()
}

/// kamaki's `ip attach`: a port on the external network whose fixed IP is
/// the floating address.
async fn attach(app: &axum::Router, token: &str, net: &str, server: &str, addr: &str) -> Resp {
    post(
        app,
        &format!("{C}/ports"),
        token,
        json!({"port": {"network_id": net, "device_id": server, "fixed_ips": [{"ip_address": addr}]}}),
    )
    .await
}

#[tokio::test]
async fn port_carrying_a_floating_ip() {
    let Net {
        c,
        admin_token,
        nics,
    } = net_cloud().await;
    let app = &c.app;
    // An operator's external network, not shared: plain ports are the
    // operator's.
    let ext = create_network(
        app,
        &admin_token,
        json!({"name": "public", "router:external": true, "type": "IP_LESS_ROUTED"}),
    )
    .await;
    let ext_id = ext["id"].as_str().unwrap().to_string();
    create_subnet(app, &admin_token, &ext_id, "203.0.113.0/28").await;
    let new_fip = |token: String| {
        let ext_id = ext_id.clone();
        async move {
            let r = post(
                app,
                &format!("{C}/floatingips"),
                &token,
                json!({"floatingip": {"floating_network_id": ext_id}}),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            let f = &r.body["floatingip"];
            (
                f["id"].as_str().unwrap().to_string(),
                f["floating_ip_address"].as_str().unwrap().to_string(),
            )
        }
    };
    let (fid, addr) = new_fip(c.alice_token.clone()).await;
    let server = active(&c, &c.alice_token, "vm1").await;
    let before = nics.lock().unwrap().len();

    // No floating IP: 403, saying what would do.
    let r = post(
        app,
        &format!("{C}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": ext_id, "device_id": server}}),
    )
    .await;
    synnefo_fault(&r, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        r.body["forbidden"]["message"]
            .as_str()
            .unwrap()
            .contains("floating IP"),
        "{:?}",
        r.body
    );
    // Another project's floating IP: 403, the address untouched.
    let (bob_fid, bob_addr) = new_fip(c.bob_token.clone()).await;
    let r = attach(app, &c.alice_token, &ext_id, &server, &bob_addr).await;
    synnefo_fault(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        floating(app, C, &c.bob_token, &bob_fid).await["port_id"],
        Value::Null
    );
    assert_eq!(nics.lock().unwrap().len(), before, "no NIC job");

    // The caller's free floating IP: the port carries it.
    let r = attach(app, &c.alice_token, &ext_id, &server, &addr).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let port = r.body["port"].clone();
    let pid = port["id"].as_str().unwrap().to_string();
    assert_eq!(port["network_id"], ext_id);
    assert_eq!(port["device_id"], server);
    assert_eq!(port["status"], "ACTIVE");
    assert_eq!(port["fixed_ips"], json!([]), "no address of its own");
    {
        let log = nics.lock().unwrap();
        assert_eq!(log.len(), before + 1, "one NIC: {log:?}");
        assert_eq!(
            (log[before].1, log[before].2.as_str()),
            ("add", addr.as_str()),
            "the port's NIC has the floating address"
        );
    }
    let f = floating(app, C, &c.alice_token, &fid).await;
    assert_eq!(f["port_id"], pid);
    assert_eq!(f["status"], "ACTIVE");
    assert_eq!(f["instance_id"], server.as_str(), "Synnefo's instance_id");
    let f = floating(app, N, &c.alice_token, &fid).await;
    assert!(f.get("instance_id").is_none(), "not Neutron's: {f:?}");
    // The server shows it (kamaki's `server info`).
    let r = get(
        app,
        &format!("/compute/v2.0/servers/{server}"),
        &c.alice_token,
    )
    .await;
    let att: Vec<&Value> = r.body["server"]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"] == pid.as_str())
        .collect();
    assert_eq!(att.len(), 1, "{:?}", r.body["server"]["attachments"]);
    assert_eq!(att[0]["ipv4"], addr.as_str());
    assert_eq!(att[0]["network_id"], ext_id);
    assert_eq!(att[0]["OS-EXT-IPS:type"], "floating");
    // Attached already: 409.
    let r = attach(app, &c.alice_token, &ext_id, &server, &addr).await;
    synnefo_fault(&r, StatusCode::CONFLICT, "conflict");

    // kamaki's `ip detach`: the port deleted, its NIC removed, the
    // floating IP the project's and free again.
    let r = delete(app, &format!("{C}/ports/{pid}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    {
        let log = nics.lock().unwrap();
        assert_eq!(log.len(), before + 2, "{log:?}");
        assert_eq!(
            (log[before + 1].1, log[before + 1].2.clone()),
            ("remove", format!("snf-nic-{pid}"))
        );
    }
    let f = floating(app, C, &c.alice_token, &fid).await;
    assert_eq!(f["port_id"], Value::Null);
    assert_eq!(f["instance_id"], Value::Null);
    assert_eq!(f["floating_ip_address"], addr.as_str());

    // Disassociating (Neutron's PUT) or deleting the floating IP takes the
    // carrying port with it.
    let r = attach(app, &c.alice_token, &ext_id, &server, &addr).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let pid2 = r.body["port"]["id"].as_str().unwrap().to_string();
    let r = put(
        app,
        &format!("{N}/floatingips/{fid}"),
        &c.alice_token,
        json!({"floatingip": {"port_id": null}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["floatingip"]["port_id"], Value::Null);
    let r = get(app, &format!("{N}/ports/{pid2}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    // Neutron's mount has the rule too.
    let r = post(
        app,
        &format!("{N}/ports"),
        &c.alice_token,
        json!({"port": {"network_id": ext_id, "device_id": server, "fixed_ips": [{"ip_address": addr}]}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let pid3 = r.body["port"]["id"].as_str().unwrap().to_string();
    let r = delete(app, &format!("{C}/floatingips/{fid}"), &c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = get(app, &format!("{C}/ports/{pid3}"), &c.alice_token).await;
    synnefo_fault(&r, StatusCode::NOT_FOUND, "itemNotFound");
    {
        let log = nics.lock().unwrap();
        let last = log.last().unwrap();
        assert_eq!(
            (last.1, last.2.clone()),
            ("remove", format!("snf-nic-{pid3}"))
        );
    }
    let r = get(
        app,
        &format!("/compute/v2.0/servers/{server}"),
        &c.alice_token,
    )
    .await;
    assert!(
        !r.body["server"]["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["network_id"] == ext_id.as_str()),
        "{:?}",
        r.body["server"]["attachments"]
    );

    // kamaki's `server create --network NET,IP`: the server's NIC on the
    // external network carries the floating IP; another project's is 403
    // before anything is stored.
    let (fid2, addr2) = new_fip(c.alice_token.clone()).await;
    let body = |a: &str| {
        json!({"server": {"name": "vm2", "imageRef": IMAGE, "flavorRef": 1,
            "networks": [{"uuid": ext_id, "fixed_ip": a}]}})
    };
    let r = post(
        app,
        "/compute/v2.0/servers",
        &c.alice_token,
        body(&bob_addr),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = post(app, "/compute/v2.0/servers", &c.alice_token, body(&addr2)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let vm2 = r.body["server"]["id"].to_string();
    let r = get(app, &format!("{N}/ports?device_id={vm2}"), &c.alice_token).await;
    let ports = r.body["ports"].as_array().unwrap().clone();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["network_id"], ext_id);
    assert_eq!(ports[0]["fixed_ips"], json!([]));
    let f = floating(app, C, &c.alice_token, &fid2).await;
    assert_eq!(f["port_id"], ports[0]["id"]);
    assert_eq!(f["instance_id"], vm2.as_str());
    let r = get(app, &format!("/compute/v2.0/servers/{vm2}"), &c.alice_token).await;
    let att = &r.body["server"]["attachments"];
    assert_eq!(att.as_array().map(Vec::len), Some(1), "{att:?}");
    assert_eq!(att[0]["ipv4"], addr2.as_str());
    assert_eq!(att[0]["OS-EXT-IPS:type"], "floating");
    // Attached already: 409 for the next server.
    let r = post(app, "/compute/v2.0/servers", &c.alice_token, body(&addr2)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
}
