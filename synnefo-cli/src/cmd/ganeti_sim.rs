//! `synnefo ganeti-sim`: a simulated Ganeti cluster speaking RAPI, for
//! demos, development and load tests when no real Ganeti is at hand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use synnefo_ganeti_sim::{SimConfig, SimLatency, SimPopulate, SimTls, Simulator};

use crate::common::{ConfigError, shutdown_token};

/// Options of `synnefo ganeti-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulator configuration file (TOML, the `SimConfig` fields); flags override it
    #[arg(long, value_name = "FILE")]
    pub sim_config: Option<PathBuf>,
    /// Listen address
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve HTTPS with a generated self-signed certificate (written to DATA_DIR/rapi.pem)
    #[arg(long)]
    pub https: bool,
    /// Where the job queue (DATA_DIR/queue) and ssconf files live
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster name
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Instances to create at start (named PREFIX1..PREFIXN)
    #[arg(long, value_name = "N")]
    pub instances: Option<u64>,
    /// Name prefix of the instances created at start
    #[arg(long, default_value = "snf-")]
    pub prefix: String,
    /// Job latency per phase (queued, waiting, running), milliseconds
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// RAPI user as NAME:PASSWORD (write access); repeatable
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
}

/// Builds the simulator configuration from the file and flags.
pub fn sim_config(args: &Args) -> anyhow::Result<SimConfig> {
    let mut config = match &args.sim_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<SimConfig>(&text)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
        }
        None => SimConfig::default(),
    };
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    if args.https {
        config.tls = SimTls::Generate {
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = Some(d.clone());
    }
    if let Some(n) = &args.cluster_name {
        config.cluster_name = n.clone();
    }
    if let Some(count) = args.instances {
        config.populate = Some(SimPopulate {
            count,
            prefix: args.prefix.clone(),
            ..SimPopulate::default()
        });
    }
    if let Some(ms) = args.latency_ms {
        config.latency = SimLatency::uniform(std::time::Duration::from_millis(ms));
    }
    if !args.users.is_empty() {
        config.users.clear();
        for u in &args.users {
            let (name, password) = u
                .split_once(':')
                .ok_or_else(|| ConfigError(format!("--user {u:?}: expected NAME:PASSWORD")))?;
            config.users.push(synnefo_ganeti_sim::SimUser {
                name: name.into(),
                password: password.into(),
                write: true,
            });
        }
    }
    Ok(config)
}

/// Runs the simulator until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = sim_config(&args)?;
    let sim = Simulator::builder().config(config).start().await?;
    if let Some(pem) = sim.cert_pem() {
        let path = sim.data_dir().join("rapi.pem");
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        println!("certificate: {}", path.display());
    }
    println!(
        "Ganeti simulator '{}' listening on {}",
        sim.config().cluster_name,
        sim.url()
    );
    println!("job queue: {}", sim.queue_dir().display());
    let token = shutdown_token();
    token.cancelled().await;
    sim.shutdown();
    Ok(ExitCode::SUCCESS)
}
