//! Issue 16 item 5, rescue end to end on the Ganeti simulator: the API
//! submits the set-params job (KVM `hvparams` `boot_order` and
//! `cdrom_image_path`, as Synnefo's rescue does) over RAPI, the simulator
//! applies it as Ganeti 3.0 does, eventd reads its job queue, the
//! dispatcher settles the rescue; the server boots the rescue image while
//! rescued (started and stopped as usual), and an unrescue makes it boot
//! from disk again. Synnefo's rules (a stopped server), Nova's refusals,
//! the history, and Synnefo's own (Cyclades) rescue.

mod api_support;
mod sim_pipeline;

use std::time::Duration;

use api_support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sim_pipeline::{Pipeline, pipeline};
use synnefo_core::ports::VmStore;

impl Pipeline {
    /// The simulated instance's own `hvparams` (what it boots) and whether
    /// it runs.
    fn ganeti_boot(&self, id: &str) -> (Option<String>, Option<String>, bool) {
        let i = self.sim.instance(&format!("snf-{id}")).expect("instance");
        let s = |k: &str| {
            i.hvparams
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        (s("boot_order"), s("cdrom_image_path"), i.running)
    }

    async fn wait_for(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.show(id).await;
            if ok(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server {id} never {what}: {last}");
    }
}

const RESCUE_ISO: &str = "/usr/share/synnefo/rescue-images/rescue.iso";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rescue_and_unrescue_on_the_simulator() {
    let p = pipeline().await;
    let r = post_v(
        &p.c.app,
        "/v2.1/servers",
        &p.c.alice_token,
        json!({"server": {"name": "rsc", "imageRef": IMAGE, "flavorRef": "1", "networks": "auto"}}),
        "2.79",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let id = r.body["server"]["id"].as_str().unwrap().to_string();
    p.wait_status(&id, "ACTIVE").await;
    assert_eq!(p.ganeti_boot(&id), (None, None, true));

    // Synnefo's rule: a running server is refused (Nova's wording).
    let r = p.action(&id, json!({"rescue": null})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'rescue' instance {id} while it is in vm_state active")
    );
    let r = p.action(&id, json!({"unrescue": null})).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'unrescue' instance {id} while it is in vm_state active")
    );
    let r = p.action(&id, json!({"os-stop": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    p.wait_status(&id, "SHUTOFF").await;

    // Bad bodies are 400s; nothing is submitted.
    for (body, words) in [
        (json!({"rescue": {"adminPass": 5}}), "adminPass"),
        (
            json!({"rescue": {"color": "red"}}),
            "'color' was unexpected",
        ),
        (
            json!({"rescue": {"rescue_image_ref": "nope"}}),
            "is not a 'uuid'",
        ),
        (
            json!({"rescue": {"rescue_image_ref": IMAGE}}),
            "this cloud boots its own rescue image",
        ),
        (json!({"rescue": 3}), "is not of type"),
        (json!({"unrescue": {}}), "is not of type 'null'"),
    ] {
        let r = p.action(&id, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        let m = r.body["badRequest"]["message"].as_str().unwrap();
        assert!(m.contains(words), "{body}: {m}");
    }
    let vm_id = synnefo_core::ids::VmId(id.parse().unwrap());
    assert_eq!(
        p.c.store.vm(vm_id).await.unwrap().unwrap().state.rescue(),
        None
    );

    // The rescue: 200 with no password (none is set on a rescue image).
    let r = p
        .action(&id, json!({"rescue": {"adminPass": "ignored-Secret1"}}))
        .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({})));
    let s = p.wait_status(&id, "RESCUE").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "rescued");
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(
        p.ganeti_boot(&id),
        (Some("cdrom".into()), Some(RESCUE_ISO.into()), false)
    );
    // The job Ganeti ran: a set-params with Synnefo's hvparams.
    let vm = p.c.store.vm(vm_id).await.unwrap().unwrap();
    let job = vm.state.job().and_then(|j| j.job_id).expect("job");
    let info = p
        .sim
        .client()
        .unwrap()
        .job(job.0)
        .await
        .expect("the rescue job");
    let op = &info.ops.as_ref().expect("ops")[0];
    assert_eq!(op["OP_ID"], "OP_INSTANCE_SET_PARAMS");
    assert_eq!(
        op["hvparams"],
        json!({"boot_order": "cdrom", "cdrom_image_path": RESCUE_ISO})
    );
    assert_eq!(
        info.opresult.as_ref().expect("opresult")[0],
        json!([
            ["hv/boot_order", "cdrom"],
            ["hv/cdrom_image_path", RESCUE_ISO]
        ])
    );

    // Once rescued: no second rescue; started, it boots the rescue image
    // (still RESCUE, now running), and an unrescue wants it stopped.
    let r = p.action(&id, json!({"rescue": null})).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'rescue' instance {id} while it is in vm_state rescued")
    );
    let r = p.action(&id, json!({"os-start": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    p.wait_for(&id, "runs its rescue image", |s| {
        s["status"] == "RESCUE" && s["OS-EXT-STS:power_state"] == 1
    })
    .await;
    assert!(p.ganeti_boot(&id).2);
    let r = p.action(&id, json!({"unrescue": null})).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'unrescue' instance {id} while it is in power_state running")
    );
    // Cyclades shows the operstate and SNF:rescue.
    let cyc = get(
        &p.c.app,
        &format!("/compute/v2.0/servers/{id}"),
        &p.c.alice_token,
    )
    .await;
    assert_eq!(
        (
            cyc.body["server"]["status"].clone(),
            cyc.body["server"]["SNF:rescue"].clone()
        ),
        (json!("ACTIVE"), json!(true))
    );
    let r = p.action(&id, json!({"os-stop": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    p.wait_for(&id, "stops", |s| s["OS-EXT-STS:power_state"] == 4)
        .await;

    // The unrescue: 202, back to booting from disk, SHUTOFF.
    let r = p.action(&id, json!({"unrescue": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let s = p.wait_status(&id, "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "stopped");
    assert_eq!(
        p.ganeti_boot(&id),
        (Some("disk".into()), Some(String::new()), false)
    );

    // The history has both, with their jobs.
    let h = get_v(
        &p.c.app,
        &format!("/v2.1/servers/{id}/os-instance-actions"),
        &p.c.alice_token,
        "2.79",
    )
    .await;
    let actions: Vec<&str> = h.body["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for want in ["rescue", "unrescue"] {
        assert!(actions.contains(&want), "{actions:?}");
    }

    // Synnefo's own rescue (Cyclades): 202, the same rules, 400s worded
    // as Synnefo's.
    let cyc = format!("/compute/v2.0/servers/{id}/action");
    let r = post(&p.c.app, &cyc, &p.c.alice_token, json!({"unrescue": {}})).await;
    assert_eq!(
        (r.status, r.body["badRequest"]["message"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("Cannot perform 'UNRESCUE' action while server is not in rescue mode.")
        )
    );
    let r = post(&p.c.app, &cyc, &p.c.alice_token, json!({"rescue": {}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    p.wait_status(&id, "RESCUE").await;
    let r = post(&p.c.app, &cyc, &p.c.alice_token, json!({"rescue": {}})).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Cannot perform 'RESCUE' action while server is in rescue mode."
    );
    let r = post(&p.c.app, &cyc, &p.c.alice_token, json!({"unrescue": {}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    p.wait_status(&id, "SHUTOFF").await;

    // A rescued server is deleted like any other.
    let r = post(&p.c.app, &cyc, &p.c.alice_token, json!({"rescue": {}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    p.wait_status(&id, "RESCUE").await;
    let r = delete(&p.c.app, &format!("/v2.1/servers/{id}"), &p.c.alice_token).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for _ in 0..300 {
        let vm = p.c.store.vm(vm_id).await.unwrap().unwrap();
        if vm.state.operstate() == synnefo_core::state::OperState::Destroyed {
            assert_eq!(vm.state.rescue(), None);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.stop().await;
}
