//! The Nova behaviour tempest's compute tests rely on: multi-create,
//! `accessIPv4`/`accessIPv6`, the `name` filter as a bounded regular
//! expression, `all_tenants` for operators, and 404 before "not supported"
//! for server actions this cloud does not have.

mod api_support;

use std::time::{Duration, Instant};

use api_support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use synnefo_core::model::{AccessIps, NewVm, Quota};
use synnefo_core::ports::{CatalogStore, IdentityStore, VmStore};
use synnefo_core::service::identity::hash_password;

fn names(body: &Value) -> Vec<String> {
    let mut n: Vec<String> = body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn multi_create_names_quota_and_reservation() {
    let c = cloud().await;
    let body =
        json!({"server": {"name": "multi", "imageRef": IMAGE, "flavorRef": "1", "min_count": 3}});
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let first = r.body["server"]["id"].as_str().unwrap().to_string();
    assert!(r.body["server"]["adminPass"].is_string());
    let r = get(&c.app, "/v2.1/servers?name=^multi", &c.alice_token).await;
    assert_eq!(names(&r.body), ["multi-1", "multi-2", "multi-3"]);
    let r = get(&c.app, &format!("/v2.1/servers/{first}"), &c.alice_token).await;
    assert_eq!(
        r.body["server"]["name"], "multi-1",
        "the answer is the first server"
    );
    // each one went to Ganeti
    for s in get(&c.app, "/v2.1/servers?name=^multi", &c.alice_token)
        .await
        .body["servers"]
        .as_array()
        .unwrap()
    {
        assert!(pending_job(&c.store, s["id"].as_str().unwrap()).await > 0);
    }

    // return_reservation_id: the reservation instead of a server
    let body = json!({"server": {"name": "resv", "imageRef": IMAGE, "flavorRef": "1",
        "min_count": "2", "return_reservation_id": true}});
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let resv = r.body["reservation_id"].as_str().unwrap();
    assert!(resv.starts_with("r-") && resv.len() == 10, "{resv}");
    assert!(r.body.get("server").is_none());
    let r = get(&c.app, "/v2.1/servers?name=^resv", &c.alice_token).await;
    assert_eq!(names(&r.body), ["resv-1", "resv-2"]);

    // Quota: 5 servers exist, 7 allowed. min 3 cannot fit: 403 and nothing
    // stored; max 4 with min 1 gets the 2 that fit, as in Nova.
    set_quota(&c.store, &c.pa, 7).await;
    let body =
        json!({"server": {"name": "big", "imageRef": IMAGE, "flavorRef": "1", "min_count": 3}});
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = get(&c.app, "/v2.1/servers?name=^big", &c.alice_token).await;
    assert!(names(&r.body).is_empty());
    let body =
        json!({"server": {"name": "fit", "imageRef": IMAGE, "flavorRef": "1", "max_count": 4}});
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let r = get(&c.app, "/v2.1/servers?name=^fit", &c.alice_token).await;
    assert_eq!(names(&r.body), ["fit-1", "fit-2"]);

    // a count over the per-request bound is refused before anything happens
    set_quota(&c.store, &c.pa, 100_000).await;
    let body = json!({"server": {"name": "huge", "imageRef": IMAGE, "flavorRef": "1", "min_count": 100_000}});
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
}

#[tokio::test]
async fn access_ips_are_stored_and_echoed() {
    let c = cloud().await;
    let body = json!({"server": {"name": "acc", "imageRef": IMAGE, "flavorRef": "1",
        "accessIPv4": "1.1.1.1", "accessIPv6": "0000:0000:0000:0000:0000:babe:220.12.22.2"}});
    let r = post(&c.app, "/v2.1/servers", &c.alice_token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["accessIPv4"], "1.1.1.1");
    assert_eq!(
        r.body["server"]["accessIPv6"], "::babe:dc0c:1602",
        "canonical form"
    );
    let r = get(&c.app, "/v2.1/servers/detail", &c.alice_token).await;
    assert_eq!(r.body["servers"][0]["accessIPv4"], "1.1.1.1");

    // update: a field left out keeps its value, "" clears
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        json!({"server": {"accessIPv4": "2.2.2.2"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["server"]["accessIPv4"], "2.2.2.2");
    assert_eq!(r.body["server"]["accessIPv6"], "::babe:dc0c:1602");
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.alice_token,
        json!({"server": {"accessIPv6": ""}}),
    )
    .await;
    assert_eq!(r.body["server"]["accessIPv6"], "");
    let r = get(&c.app, &format!("/v2.1/servers/{id}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["accessIPv4"], "2.2.2.2");
    assert_eq!(r.body["server"]["accessIPv6"], "");

    for bad in [
        json!({"accessIPv4": "1.1.1.1.1"}),
        json!({"accessIPv6": "2001::g"}),
        json!({"accessIPv6": "1.2.3.4"}),
    ] {
        let r = put(
            &c.app,
            &format!("/v2.1/servers/{id}"),
            &c.alice_token,
            json!({"server": bad}),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    // another project's server is 404 whatever the body
    let r = put(
        &c.app,
        &format!("/v2.1/servers/{id}"),
        &c.bob_token,
        json!({"server": {"accessIPv4": "3.3.3.3"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // a server created without them shows ""
    let plain = create(&c.app, &c.alice_token, "plain").await;
    let r = get(&c.app, &format!("/v2.1/servers/{plain}"), &c.alice_token).await;
    assert_eq!(r.body["server"]["accessIPv4"], "");
    assert_eq!(r.body["server"]["accessIPv6"], "");
}

#[tokio::test]
async fn name_filter_is_a_bounded_regex() {
    let c = cloud().await;
    for n in [
        "ListServerFiltersTestJSON-instance-1",
        "x-instance-22",
        "other",
    ] {
        create(&c.app, &c.alice_token, n).await;
    }
    let r = get(
        &c.app,
        r"/v2.1/servers?name=%5E.*%5C-instance%5C-%5B0-9%5D%2B%24",
        &c.alice_token,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        names(&r.body),
        ["ListServerFiltersTestJSON-instance-1", "x-instance-22"]
    );
    let r = get(&c.app, "/v2.1/servers/detail?name=stance", &c.alice_token).await;
    assert_eq!(names(&r.body).len(), 2, "unanchored, as Nova's REGEXP");
    for bad in [
        "(",
        "%5Bz-a%5D",
        &"a".repeat(300),
        "%5Cw%7B1000%7D%7B1000%7D",
    ] {
        let r = get(&c.app, &format!("/v2.1/servers?name={bad}"), &c.alice_token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert!(
            r.body["badRequest"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a 'regex'")
        );
    }
}

/// `(a+)+$` against 200 names built to make a backtracking matcher take
/// exponential time: the listing still answers like any other (the bound is
/// generous on purpose: a backtracking engine would need hours).
#[tokio::test]
async fn pathological_name_regex_over_200_servers_answers_promptly() {
    let c = cloud().await;
    set_quota(&c.store, &c.pa, 1000).await;
    let flavor = c.store.list_flavors().await.unwrap().remove(0);
    let batch: Vec<NewVm> = (0..200)
        .map(|i| NewVm {
            user_id: c.alice.id.clone(),
            project_id: c.pa.id.clone(),
            name: format!("{}!{i}", "a".repeat(60)),
            flavor: flavor.clone(),
            image_id: IMAGE.into(),
            backend_id: None,
            metadata: Default::default(),
            request_id: None,
        })
        .collect();
    c.store
        .create_vms(&batch, &AccessIps::default(), Quota::default())
        .await
        .unwrap();
    let start = Instant::now();
    let r = get(
        &c.app,
        "/v2.1/servers/detail?name=(a%2B)%2B%24",
        &c.alice_token,
    )
    .await;
    let took = start.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(names(&r.body).is_empty(), "no name ends in a run of a's");
    let r = get(
        &c.app,
        "/v2.1/servers/detail?name=(a%2B)%2B!1%24",
        &c.alice_token,
    )
    .await;
    assert_eq!(names(&r.body).len(), 1);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test]
async fn all_tenants_is_for_operators() {
    let c = cloud().await;
    create(&c.app, &c.alice_token, "alices").await;
    create(&c.app, &c.bob_token, "bobs").await;
    let r = get(&c.app, "/v2.1/servers?all_tenants=1", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = get(&c.app, "/v2.1/servers?all_tenants=0", &c.alice_token).await;
    assert_eq!(names(&r.body), ["alices"]);
    let r = get(&c.app, "/v2.1/servers?all_tenants=maybe", &c.alice_token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let op = c
        .store
        .create_user("operator", &hash_password("op-pw").unwrap(), true)
        .await
        .unwrap();
    c.store.add_member(&op.id, &c.pa.id).await.unwrap();
    let op_token = token(&c.store, &op, &c.pa).await;
    let r = get(&c.app, "/v2.1/servers/detail?all_tenants=1", &op_token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(names(&r.body), ["alices", "bobs"]);
    let r = get(&c.app, "/v2.1/servers", &op_token).await;
    assert_eq!(
        names(&r.body),
        ["alices"],
        "without it: the token's project"
    );
    // not served from the per-project cache: a new server elsewhere shows
    create(&c.app, &c.bob_token, "bobs2").await;
    let r = get(&c.app, "/v2.1/servers/detail?all_tenants=1", &op_token).await;
    assert_eq!(names(&r.body), ["alices", "bobs", "bobs2"]);
}

#[tokio::test]
async fn actions_we_lack_find_the_server_first() {
    let c = cloud().await;
    let id = create(&c.app, &c.alice_token, "act").await;
    for (action, arg) in [
        ("createImage", json!({"name": "snap"})),
        ("forceDelete", Value::Null),
        ("restore", Value::Null),
        ("os-getConsoleOutput", json!({"length": 10})),
    ] {
        let r = post(
            &c.app,
            "/v2.1/servers/999999/action",
            &c.alice_token,
            json!({ action: arg.clone() }),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}: {:?}", r.body);
        let r = post(
            &c.app,
            &format!("/v2.1/servers/{id}/action"),
            &c.bob_token,
            json!({ action: arg.clone() }),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{action} on another project's server"
        );
        let r = post(
            &c.app,
            &format!("/v2.1/servers/{id}/action"),
            &c.alice_token,
            json!({ action: arg }),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{action}: {:?}", r.body);
    }
    let r = post(
        &c.app,
        "/v2.1/servers/999999/action",
        &c.alice_token,
        json!({"bogus": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
