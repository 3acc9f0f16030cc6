//! Issue 16 item 3, resize end to end on the Ganeti simulator: the API
//! submits the set-params job over RAPI, the simulator changes the
//! instance's vCPUs and memory, eventd reads its job queue, the in-process
//! bus carries the notifications, the dispatcher gives the server the new
//! flavor; Nova's confirmation step (confirm, revert), the refusals as Nova
//! words them, a failed job in the server's history, and Synnefo's own
//! resize (Cyclades, no confirmation).

mod api_support;
mod sim_pipeline;

use std::time::Duration;

use api_support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sim_pipeline::{Pipeline, pipeline};
use synnefo_core::ids::FlavorId;
use synnefo_core::model::{Flavor, Quota};
use synnefo_core::ports::{CatalogStore, IdentityStore, VmStore};

impl Pipeline {
    /// The simulated instance's (vcpus, maxmem, minmem).
    fn ganeti_size(&self, id: &str) -> (u64, u64, u64) {
        let i = self.sim.instance(&format!("snf-{id}")).expect("instance");
        (i.vcpus, i.maxmem, i.minmem)
    }

    async fn flavor(&self, name: &str, vcpus: i32, ram: i32, disk: i32, template: &str) -> Flavor {
        self.c
            .store
            .create_flavor(&Flavor {
                id: FlavorId(0),
                name: name.into(),
                vcpus,
                ram_mib: ram,
                disk_gib: disk,
                disk_template: template.into(),
                is_public: true,
                deleted: false,
            })
            .await
            .unwrap()
    }
}

fn embedded_flavor(server: &Value) -> (String, i64, i64) {
    let f = &server["flavor"];
    (
        f["original_name"].as_str().unwrap_or("").to_string(),
        f["vcpus"].as_i64().unwrap_or(0),
        f["ram"].as_i64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resize_confirm_and_revert_on_the_simulator() {
    let p = pipeline().await;
    // m1.tiny is 1 vCPU, 512 MiB, 1 GiB, plain; these keep its disk.
    let two = p.flavor("r.two", 2, 1024, 1, "plain").await;
    let three = p.flavor("r.three", 2, 2048, 1, "plain").await;
    let drbd = p.flavor("r.drbd", 2, 1024, 1, "drbd").await;

    let r = post_v(
        &p.c.app,
        "/v2.1/servers",
        &p.c.alice_token,
        json!({"server": {"name": "rs", "imageRef": IMAGE, "flavorRef": "1", "networks": "auto"}}),
        "2.79",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    p.wait_status(&id, "ACTIVE").await;
    assert_eq!(p.ganeti_size(&id), (1, 512, 512));

    // A running server (Nova's resize; Synnefo's wants it stopped): the
    // set-params job, then a hard reboot so that the instance runs with
    // them; VERIFY_RESIZE once both ended, the server still ACTIVE
    // underneath; a revert goes back the same way.
    let resize = |f: &Flavor| json!({"resize": {"flavorRef": f.id.to_string()}});
    let newest_opcode = |vm: synnefo_core::model::Vm| vm.state.job().map(|j| j.opcode);
    let vm_id = synnefo_core::ids::VmId(id.parse().unwrap());
    let r = p.action(&id, resize(&two)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let s = p.wait_status(&id, "VERIFY_RESIZE").await;
    assert_eq!(embedded_flavor(&s), ("r.two".into(), 2, 1024));
    assert_eq!(s["OS-EXT-STS:vm_state"], "resized");
    assert_eq!(s["OS-EXT-STS:power_state"], 1, "running");
    assert_eq!(p.ganeti_size(&id), (2, 1024, 1024));
    let vm = p.c.store.vm(vm_id).await.unwrap().unwrap();
    assert_eq!(
        newest_opcode(vm),
        Some(synnefo_core::state::OpCode::InstanceReboot),
        "the reboot ran after the set-params job"
    );
    let r = p.action(&id, json!({"revertResize": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let s = p.wait_status(&id, "ACTIVE").await;
    let (_, vcpus, ram) = embedded_flavor(&s);
    assert_eq!((vcpus, ram), (1, 512));
    assert_eq!(p.ganeti_size(&id), (1, 512, 512));
    assert_eq!(s["OS-EXT-STS:vm_state"], "active");
    let r = p.action(&id, json!({"os-stop": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    p.wait_status(&id, "SHUTOFF").await;

    // Refusals, as Nova words them; nothing submitted.
    let r = p.action(&id, json!({"resize": {"flavorRef": "1"}})).await;
    assert_eq!(
        (r.status, r.body["badRequest"]["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("When resizing, instances must change flavor!")
        )
    );
    for other_disk in ["2", &drbd.id.to_string()] {
        let r = p
            .action(&id, json!({"resize": {"flavorRef": other_disk}}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{other_disk}: {:?}",
            r.body
        );
        let m = r.body["badRequest"]["message"].as_str().unwrap();
        assert!(
            m.starts_with("Server disk was unable to be resized because: "),
            "{m}"
        );
    }
    let r = p.action(&id, json!({"resize": {"flavorRef": "999"}})).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Flavor 999 could not be found."
    );
    for name in ["confirmResize", "revertResize"] {
        let r = p.action(&id, json!({ name: null })).await;
        assert_eq!(
            (r.status, r.body["conflictingRequest"]["message"].clone()),
            (
                StatusCode::CONFLICT,
                json!(format!(
                    "Cannot '{name}' instance {id} while it is in vm_state stopped"
                ))
            )
        );
    }
    // Over quota: the delta (one more vCPU) does not fit.
    p.c.store
        .set_quota(
            &p.c.pa.id,
            Quota {
                servers: None,
                vcpus: Some(1),
                ram_mib: None,
            },
        )
        .await
        .unwrap();
    let r = p.action(&id, resize(&two)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(
        r.body["forbidden"]["message"],
        "Quota exceeded for cores: Requested 1, but already used 1 of 1 cores"
    );
    assert_eq!(p.show(&id).await["status"], "SHUTOFF");
    assert_eq!(p.ganeti_size(&id), (1, 512, 512), "no job was submitted");
    p.c.store
        .set_quota(&p.c.pa.id, Quota::default())
        .await
        .unwrap();

    // Resize: RESIZE, then VERIFY_RESIZE with the new flavor, which the
    // simulated instance has too; the old flavor stays held.
    let r = p.action(&id, resize(&two)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let s = p.wait_status(&id, "VERIFY_RESIZE").await;
    assert_eq!(embedded_flavor(&s), ("r.two".into(), 2, 1024));
    assert_eq!(s["OS-EXT-STS:vm_state"], "resized");
    assert_eq!(s["OS-EXT-STS:task_state"], Value::Null);
    assert_eq!(p.ganeti_size(&id), (2, 1024, 1024));
    let usage = p.c.store.usage(&p.c.pa.id).await.unwrap();
    assert_eq!((usage.vcpus, usage.ram_mib), (2, 1024));
    let r = p.action(&id, json!({"os-start": null})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "no start before confirming");
    let r = p.action(&id, resize(&three)).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'resize' instance {id} while it is in vm_state resized")
    );

    // Confirm: SHUTOFF with the new flavor.
    let r = p.action(&id, json!({"confirmResize": null})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let s = p.show(&id).await;
    assert_eq!(s["status"], "SHUTOFF");
    assert_eq!(s["OS-EXT-STS:vm_state"], "stopped");
    assert_eq!(embedded_flavor(&s), ("r.two".into(), 2, 1024));

    // A second resize, reverted: back to r.two on the cluster and here.
    let r = p.action(&id, resize(&three)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let s = p.wait_status(&id, "VERIFY_RESIZE").await;
    assert_eq!(embedded_flavor(&s), ("r.three".into(), 2, 2048));
    assert_eq!(p.ganeti_size(&id), (2, 2048, 2048));
    let r = p.action(&id, json!({"revertResize": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let s = p.wait_status(&id, "SHUTOFF").await;
    assert_eq!(embedded_flavor(&s), ("r.two".into(), 2, 1024));
    assert_eq!(p.ganeti_size(&id), (2, 1024, 1024));

    // A resize whose job fails: the old flavor, SHUTOFF, the job's error
    // in the server's history.
    p.sim
        .fail_opcode("OP_INSTANCE_SET_PARAMS", "simulated: not enough memory");
    let r = p.action(&id, resize(&three)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let mut history = Value::Null;
    for _ in 0..300 {
        history = get_v(
            &p.c.app,
            &format!("/v2.1/servers/{id}/os-instance-actions"),
            &p.c.alice_token,
            "2.79",
        )
        .await
        .body;
        if history["instanceActions"][0]["message"] == "Error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actions: Vec<(String, Value)> = history["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["message"].clone(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("resize".to_string(), json!("Error")),
            ("revertResize".into(), Value::Null),
            ("resize".into(), Value::Null),
            ("confirmResize".into(), Value::Null),
            ("resize".into(), Value::Null),
            ("stop".into(), Value::Null),
            ("revertResize".into(), Value::Null),
            ("resize".into(), Value::Null),
            ("create".into(), Value::Null),
        ],
        "{history}"
    );
    let s = p.wait_status(&id, "SHUTOFF").await;
    assert_eq!(embedded_flavor(&s), ("r.two".into(), 2, 1024));
    assert_eq!(p.ganeti_size(&id), (2, 1024, 1024));
    let vm = p.c.store.vm(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(vm.state.resize(), None);
    let failed = p.c.store.instance_actions(vm.id, 1).await.unwrap();
    let message = failed[0].message.as_deref().unwrap_or("");
    assert!(
        message.contains("simulated: not enough memory"),
        "{message}"
    );
    // the event, as a non-operator sees it from 2.51
    let req = history["instanceActions"][0]["request_id"]
        .as_str()
        .unwrap();
    let shown = get_v(
        &p.c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions/{req}"),
        &p.c.alice_token,
        "2.51",
    )
    .await
    .body;
    assert_eq!(shown["instanceAction"]["events"][0]["result"], "Error");
    p.sim.clear_failures();

    // Synnefo's own resize (Cyclades): no confirmation step.
    let cyc = format!("/compute/v2.0/servers/{id}/action");
    let r = post(
        &p.c.app,
        &cyc,
        &p.c.alice_token,
        json!({"resize": {"flavorRef": two.id.0}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["badRequest"]["message"],
        format!("Server '{id}' flavor is already 'r.two'.")
    );
    let r = post(&p.c.app, &cyc, &p.c.alice_token, json!({"resize": {}})).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Missing 'flavorRef' attribute."
    );
    let r = post(
        &p.c.app,
        &cyc,
        &p.c.alice_token,
        json!({"resize": {"flavorRef": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let mut cyclades = Value::Null;
    for _ in 0..300 {
        cyclades = get(
            &p.c.app,
            &format!("/compute/v2.0/servers/{id}"),
            &p.c.alice_token,
        )
        .await
        .body;
        if cyclades["server"]["status"] == "STOPPED" && cyclades["server"]["flavor"]["id"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cyclades["server"]["status"], "STOPPED", "{cyclades}");
    assert_eq!(cyclades["server"]["flavor"]["id"], 1);
    assert_eq!(p.ganeti_size(&id), (1, 512, 512));
    assert_eq!(p.show(&id).await["status"], "SHUTOFF", "no VERIFY_RESIZE");

    // The resized server starts with its flavor.
    let r = p.action(&id, json!({"os-start": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    p.wait_status(&id, "ACTIVE").await;
    let r = post(
        &p.c.app,
        &cyc,
        &p.c.alice_token,
        json!({"resize": {"flavorRef": two.id.0}}),
    )
    .await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Cannot perform 'RESIZE' action while server is in 'STARTED' state."
    );
    p.stop().await;
}
