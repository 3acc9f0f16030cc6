//! The simulator's configuration as plain, serde-able data, so the
//! `synnefo ganeti-sim` command (and tests) can build one from a file or
//! flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything that shapes a simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Listen address (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Plain HTTP or HTTPS.
    pub tls: SimTls,
    /// RAPI users.
    pub users: Vec<SimUser>,
    /// Refuse anonymous reads (Ganeti allows them unless started with
    /// `--require-authentication`).
    pub require_authentication: bool,
    /// Cluster name.
    pub cluster_name: String,
    /// Nodes; the first is the master.
    pub nodes: Vec<SimNodeConfig>,
    /// Default hypervisor: `kvm` gives VNC consoles, `fake` a `msg` console.
    pub hypervisor: String,
    /// First port handed out as an instance's `network_port` (KVM VNC).
    pub vnc_port_base: u16,
    /// Per-phase job latency.
    pub latency: SimLatency,
    /// Data directory (`<data_dir>/queue`, `ssconf_*`); a temporary one if unset.
    pub data_dir: Option<PathBuf>,
    /// Write Ganeti-shaped job files into `<data_dir>/queue`.
    pub write_job_files: bool,
    /// Move finished jobs to `queue/archive/<N/10000>/` this long after they end
    /// (`None`: never, unless [`super::SimHandle::archive_finished_jobs`]).
    pub archive_after_ms: Option<u64>,
    /// How long `GET /2/jobs/ID/wait` holds a request without change (Ganeti: 10 s).
    pub wait_timeout_ms: u64,
    /// Jobs advance only on [`super::SimHandle::step`].
    pub single_step: bool,
    /// Instances created at start-up (running, spread over the nodes).
    pub populate: Option<SimPopulate>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            tls: SimTls::None,
            users: vec![SimUser {
                name: "synnefo".into(),
                password: "synnefo".into(),
                write: true,
            }],
            require_authentication: false,
            cluster_name: "sim.cluster".into(),
            nodes: (1..=2)
                .map(|i| SimNodeConfig {
                    name: format!("node{i}.sim"),
                    ..SimNodeConfig::default()
                })
                .collect(),
            hypervisor: "kvm".into(),
            vnc_port_base: 11000,
            latency: SimLatency::default(),
            data_dir: None,
            write_job_files: true,
            archive_after_ms: None,
            wait_timeout_ms: 10_000,
            single_step: false,
            populate: None,
        }
    }
}

/// Transport security of the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum SimTls {
    /// Plain HTTP.
    #[default]
    None,
    /// HTTPS with a freshly generated self-signed certificate for these names
    /// (default `localhost`, `127.0.0.1`); its PEM is [`super::SimHandle::cert_pem`].
    Generate {
        /// subjectAltNames.
        names: Vec<String>,
    },
    /// HTTPS with a PEM certificate chain and private key given inline.
    Pem {
        /// Certificate chain (PEM).
        cert: String,
        /// Private key (PEM).
        key: String,
    },
    /// HTTPS with PEM files.
    Files {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
    },
}

/// A RAPI user (`users` file line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUser {
    /// Name.
    pub name: String,
    /// Clear-text password.
    pub password: String,
    /// May submit jobs.
    pub write: bool,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimNodeConfig {
    /// Node name.
    pub name: String,
    /// Primary IP (default: 192.0.2.<index+10>).
    pub ip: Option<String>,
    /// Memory (MiB).
    pub memory_mib: u64,
    /// Memory the node OS uses (MiB).
    pub node_memory_mib: u64,
    /// Disk (MiB).
    pub disk_mib: u64,
    /// CPUs.
    pub cpus: u64,
    /// Offline.
    pub offline: bool,
    /// Drained.
    pub drained: bool,
}

impl Default for SimNodeConfig {
    fn default() -> Self {
        Self {
            name: "node1.sim".into(),
            ip: None,
            memory_mib: 65536,
            node_memory_mib: 1024,
            disk_mib: 1 << 20,
            cpus: 16,
            offline: false,
            drained: false,
        }
    }
}

/// Job latency per phase (milliseconds): queued -> waiting -> running -> end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimLatency {
    /// queued -> waiting.
    pub queued_ms: u64,
    /// waiting -> running.
    pub waiting_ms: u64,
    /// running -> success/error (log lines are spread over it).
    pub running_ms: u64,
}

impl Default for SimLatency {
    fn default() -> Self {
        Self {
            queued_ms: 5,
            waiting_ms: 5,
            running_ms: 20,
        }
    }
}

impl SimLatency {
    /// No latency at all (jobs finish as fast as the driver runs).
    pub fn zero() -> Self {
        Self {
            queued_ms: 0,
            waiting_ms: 0,
            running_ms: 0,
        }
    }

    /// The same latency for every phase.
    pub fn uniform(d: Duration) -> Self {
        let ms = d.as_millis() as u64;
        Self {
            queued_ms: ms,
            waiting_ms: ms,
            running_ms: ms,
        }
    }
}

/// Instances to create at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimPopulate {
    /// How many.
    pub count: u64,
    /// Name prefix (`snf-` gives `snf-1` .. `snf-<count>`).
    pub prefix: String,
    /// First number.
    pub first: u64,
    /// Memory of each (MiB).
    pub memory_mib: u64,
    /// vCPUs of each.
    pub vcpus: u64,
}

impl Default for SimPopulate {
    fn default() -> Self {
        Self {
            count: 0,
            prefix: "snf-".into(),
            first: 1,
            memory_mib: 128,
            vcpus: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut c = SimConfig {
            tls: SimTls::Generate {
                names: vec!["localhost".into()],
            },
            ..SimConfig::default()
        };
        c.populate = Some(SimPopulate {
            count: 10,
            ..Default::default()
        });
        let s = serde_json::to_string(&c).unwrap();
        let back: SimConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
        let partial: SimConfig =
            serde_json::from_str(r#"{"hypervisor": "fake", "tls": {"mode": "none"}}"#).unwrap();
        assert_eq!(partial.hypervisor, "fake");
        assert!(serde_json::from_str::<SimConfig>(r#"{"nope": 1}"#).is_err());
    }
}
