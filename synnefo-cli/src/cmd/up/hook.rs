//! The Ganeti hook, as the simulated clusters of `synnefo up` run it.
//!
//! On a real cluster Ganeti runs `synnefo ganeti-hook` after every
//! instance add, start and modify, and the hook publishes the instance's
//! NICs (the addresses Ganeti's pool handed out among them) as a
//! `ganeti-net-status` message. The simulator runs no hooks, so `up` does
//! the hook's part: it watches each simulator's instances and publishes the
//! same message, built the same way ([`synnefo_ganeti_master::hook::plan`]), when an
//! instance appears or its NICs change. Instances present when it starts
//! (restored from the DB) are not reported again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use synnefo_core::messages::WireNic;
use synnefo_core::ports::EventBus;
use synnefo_ganeti_master::hook::{HookEnv, HookOutcome, Phase, plan, publish};
use synnefo_ganeti_sim::{SimHandle, SimInstance};
use tokio_util::sync::CancellationToken;

/// How often the instances are looked at.
const POLL: Duration = Duration::from_millis(100);
/// How long one publish may wait for the bus.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

fn wire_nics(inst: &SimInstance) -> Vec<WireNic> {
    inst.nics
        .iter()
        .map(|n| WireNic {
            ip: n.ip.clone(),
            mac: Some(n.mac.clone()),
            link: Some(n.link.clone()),
            network: n.network.clone(),
            mode: Some(n.mode.clone()),
        })
        .collect()
}

/// Publishes the NICs of `sim`'s instances whenever they differ from what
/// was last published, until `stop`.
pub async fn run(
    sim: Arc<SimHandle>,
    bus: Arc<dyn EventBus>,
    prefix: String,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let cluster = sim.config().cluster_name.clone();
    // Instances already there (restored from the DB at start) were reported
    // in an earlier run: the DB has their NICs.
    let mut seen: HashMap<String, Vec<WireNic>> = sim
        .instance_names()
        .into_iter()
        .filter_map(|n| sim.instance(&n).map(|i| (n, wire_nics(&i))))
        .collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(POLL) => {}
        }
        let names = sim.instance_names();
        let present: std::collections::HashSet<&String> = names.iter().collect();
        seen.retain(|name, _| present.contains(name));
        for name in names.iter().cloned() {
            let Some(inst) = sim.instance(&name) else {
                continue;
            };
            let nics = wire_nics(&inst);
            if seen.get(&name) == Some(&nics) {
                continue;
            }
            let env = HookEnv {
                hooks_path: "instance-add".into(),
                phase: Phase::Post,
                op_code: None,
                cluster: Some(cluster.clone()),
                instance: Some(name.clone()),
                nics: nics.clone(),
            };
            let now = synnefo_ganeti_master::eventd::job::now_timestamp();
            if let HookOutcome::Publish(msg) = plan(&env, &prefix, now)
                && let Err(e) = publish(&msg, bus.as_ref(), PUBLISH_TIMEOUT).await
            {
                // try again on the next round
                tracing::warn!(instance = %name, error = %e, "simulated hook: publish failed");
                continue;
            }
            seen.insert(name, nics);
        }
    }
}
