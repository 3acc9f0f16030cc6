//! Talk to a Ganeti cluster over RAPI with `synnefo_ganeti::rapi`.
//!
//! Without arguments it starts the built-in simulator over HTTPS, creates
//! an instance and follows the job; with `RAPI_URL` (and `RAPI_USER`,
//! `RAPI_PASSWORD`, `RAPI_CA` = CA or pinned certificate PEM) it only reads
//! a real cluster:
//!
//! ```sh
//! cargo run -p synnefo-examples --example rapi_client
//! RAPI_URL=https://cluster1.example.org:5080 RAPI_USER=synnefo RAPI_PASSWORD=... \
//!   RAPI_CA=/etc/synnefo/cluster1-rapi.pem cargo run -p synnefo-examples --example rapi_client
//! ```

use std::time::Duration;

use synnefo_ganeti::rapi::{
    BeParamsRequest, CreateInstanceRequest, NicRequest, RapiClient, RapiConfig,
};
use synnefo_ganeti_sim::Simulator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (client, sim) = match std::env::var("RAPI_URL") {
        Ok(url) => {
            let mut cfg = RapiConfig::new(url);
            if let Ok(user) = std::env::var("RAPI_USER") {
                cfg = cfg.credentials(user, std::env::var("RAPI_PASSWORD").unwrap_or_default());
            }
            if let Ok(ca) = std::env::var("RAPI_CA") {
                cfg = cfg.ca_pem(std::fs::read(ca)?);
            }
            (RapiClient::new(cfg)?, None)
        }
        Err(_) => {
            let sim = Simulator::builder().https().instances(3).start().await?;
            println!(
                "simulator at {} (queue {})",
                sim.url(),
                sim.queue_dir().display()
            );
            (sim.client()?, Some(sim))
        }
    };

    let info = client.info().await?;
    println!(
        "cluster {} (Ganeti {}), master {}",
        info.name, info.software_version, info.master
    );
    for n in client.nodes().await? {
        println!(
            "  node {:<20} role {:<2} mem {:>6}/{:<6} MiB free, {} instances",
            n.name,
            n.role.unwrap_or_default(),
            n.mfree.unwrap_or(0),
            n.mtotal.unwrap_or(0),
            n.pinst_cnt.unwrap_or(0)
        );
    }
    for i in client.instances().await? {
        println!(
            "  instance {:<20} {:<12} on {}",
            i.name,
            i.status.clone().unwrap_or_default(),
            i.pnode.unwrap_or_default()
        );
    }

    if sim.is_some() {
        let request = CreateInstanceRequest {
            version: 1,
            mode: "create".into(),
            instance_name: "snf-100".into(),
            disk_template: "plain".into(),
            disks: vec![synnefo_ganeti::rapi::DiskRequest {
                size: 10 * 1024,
                mode: None,
                name: None,
            }],
            nics: vec![NicRequest {
                mode: Some("bridged".into()),
                link: Some("br0".into()),
                ..Default::default()
            }],
            os_type: "snf-image+default".into(),
            osparams: Default::default(),
            osparams_secret: Default::default(),
            beparams: BeParamsRequest {
                vcpus: Some(1),
                maxmem: Some(1024),
                minmem: Some(1024),
            },
            hvparams: Default::default(),
            hypervisor: None,
            pnode: None,
            iallocator: None,
            ip_check: false,
            name_check: false,
            conflicts_check: false,
            start: true,
            tags: vec![],
        };
        let job = client.create_instance(&request).await?;
        let done = client
            .wait_for_job_success(job, Duration::from_secs(30))
            .await?;
        println!(
            "job {job}: {} ({} log lines: {:?})",
            done.status.clone().unwrap_or_default(),
            done.log_messages().len(),
            done.log_messages()
        );
        let console = client.console("snf-100").await?;
        println!(
            "console: {} {}:{}",
            console.kind,
            console.host.unwrap_or_default(),
            console.port.unwrap_or(0)
        );
    }
    Ok(())
}
