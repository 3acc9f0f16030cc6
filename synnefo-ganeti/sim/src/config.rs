//! The simulator's configuration as plain, serde-able data, so the
//! `synnefo ganeti-sim` command (and tests) can build one from a file or
//! flags.

use std::net::Ipv4Addr;
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
    /// The RAPI users (Ganeti's `rapi/users` file); requests authenticate
    /// as one of them with HTTP basic auth.
    pub users: Vec<SimUser>,
    /// Refuse anonymous reads (Ganeti allows them unless started with
    /// `--require-authentication`).
    pub require_authentication: bool,
    /// The cluster's name (`/2/info`, `ssconf_cluster_name`).
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
    /// (`None`: never, unless [`crate::SimHandle::archive_finished_jobs`]).
    pub archive_after_ms: Option<u64>,
    /// How long `GET /2/jobs/ID/wait` holds a request without change (Ganeti: 10 s).
    pub wait_timeout_ms: u64,
    /// Jobs advance only on [`crate::SimHandle::step`].
    pub single_step: bool,
    /// Instances created at start-up (running, spread over the nodes).
    pub populate: Option<SimPopulate>,
    /// Ganeti networks, each connected to the (only) node group. Empty by
    /// default: NICs then take mode/link from the request (default
    /// `bridged`/`br0`) and a NIC naming a network fails the create.
    pub networks: Vec<SimNetworkConfig>,
    /// The OS definitions every node has (`/srv/ganeti/os/NAME`); a create
    /// with another OS fails like Ganeti's. Default: `noop` and `snf-image`
    /// (see [`SimOsConfig::defaults`]).
    pub os: Vec<SimOsConfig>,
    /// The default group's instance policy (the part the simulator checks).
    pub ipolicy: SimIPolicy,
    /// snf-image's progress messages during a create (off by default).
    pub progress: SimProgress,
}

/// What the OS create scripts of a simulated create report, as snf-image
/// does through its `PROGRESS_MONITOR`: "Starting image copy...",
/// `copy_steps` `image-copy-progress` messages up to 100%, "Image copy
/// finished.", the helper's task-start/task-end pairs and "Image
/// customization finished successfully.", one message per job step,
/// `interval_ms` apart, while the create job runs its OS scripts (the job
/// ends after the last one). Ganeti runs no OS scripts for a diskless
/// instance, so such creates report nothing unless `diskless` (a demo
/// deviation: `synnefo up` runs diskless instances); they then report
/// after their last log line. The messages go to the monitor set with
/// [`crate::SimHandle::set_progress_monitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimProgress {
    /// `image-copy-progress` messages per create; 0: no messages at all.
    pub copy_steps: u32,
    /// Time between two messages, milliseconds.
    pub interval_ms: u64,
    /// Diskless creates report too (Ganeti runs no OS scripts for them).
    pub diskless: bool,
}

impl Default for SimProgress {
    fn default() -> Self {
        Self {
            copy_steps: 0,
            interval_ms: 20,
            diskless: false,
        }
    }
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
            networks: Vec::new(),
            os: SimOsConfig::defaults(),
            ipolicy: SimIPolicy::default(),
            progress: SimProgress::default(),
        }
    }
}

impl SimConfig {
    /// Checks what serde cannot: network subnets and addresses, unique
    /// names, a sane policy.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for n in &self.networks {
            if !names.insert(n.name.as_str()) {
                return Err(format!("network {:?} is defined twice", n.name));
            }
            let (base, prefix) = n.subnet_v4()?;
            let contains = |ip: &str| -> Result<(), String> {
                let a: Ipv4Addr = ip
                    .parse()
                    .map_err(|e| format!("network {:?}: address {ip:?}: {e}", n.name))?;
                let mask = u32::MAX << (32 - prefix);
                if u32::from(a) & mask != base {
                    return Err(format!("network {:?}: {ip} is not in {}", n.name, n.subnet));
                }
                Ok(())
            };
            if let Some(g) = &n.gateway {
                contains(g)?;
            }
            for r in &n.reserved_ips {
                contains(r)?;
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for o in &self.os {
            if o.name.is_empty() || o.name.contains('+') {
                return Err(format!(
                    "OS name {:?} must be non-empty, without '+'",
                    o.name
                ));
            }
            if !names.insert(o.name.as_str()) {
                return Err(format!("OS {:?} is defined twice", o.name));
            }
        }
        if self.ipolicy.disk_size_min_mib > self.ipolicy.disk_size_max_mib {
            return Err("ipolicy: disk_size_min_mib is above disk_size_max_mib".into());
        }
        Ok(())
    }
}

/// A Ganeti network (`gnt-network add` + `gnt-network connect` to the
/// default group with `mode`/`link`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimNetworkConfig {
    /// Network name (what a NIC's `network` names).
    pub name: String,
    /// IPv4 subnet in CIDR notation, /16 to /30 like Ganeti's address pool.
    pub subnet: String,
    /// Gateway, reserved in the pool like Ganeti does.
    pub gateway: Option<String>,
    /// Further externally reserved addresses (`--add-reserved-ips`).
    pub reserved_ips: Vec<String>,
    /// NIC mode of the group connection (`bridged`, `routed`, `openvswitch`).
    pub mode: String,
    /// NIC link of the group connection.
    pub link: String,
    /// NIC VLAN of the group connection (Ganeti: empty).
    pub vlan: String,
    /// Fixed UUID; a random one is generated at start if unset.
    pub uuid: Option<String>,
}

impl Default for SimNetworkConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            subnet: String::new(),
            gateway: None,
            reserved_ips: Vec::new(),
            mode: "bridged".into(),
            link: "br0".into(),
            vlan: String::new(),
            uuid: None,
        }
    }
}

impl SimNetworkConfig {
    /// A network with this name and subnet, connected bridged to `br0`.
    pub fn new(name: &str, subnet: &str) -> Self {
        Self {
            name: name.into(),
            subnet: subnet.into(),
            ..Self::default()
        }
    }

    /// The subnet as (network address, prefix length).
    pub fn subnet_v4(&self) -> Result<(u32, u32), String> {
        let err = |m: &str| format!("network {:?}: subnet {:?}: {m}", self.name, self.subnet);
        let (addr, len) = self
            .subnet
            .split_once('/')
            .ok_or_else(|| err("expected CIDR a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| err(&format!("{e}")))?;
        let len: u32 = len.parse().map_err(|e| err(&format!("{e}")))?;
        if !(16..=30).contains(&len) {
            return Err(err("Ganeti's address pools take /16 to /30"));
        }
        let mask = u32::MAX << (32 - len);
        let base = u32::from(addr);
        if base & mask != base {
            return Err(err("host bits are set"));
        }
        Ok((base, len))
    }
}

/// An OS definition (`ganeti-os-interface`): name, variants, parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimOsConfig {
    /// OS name (`noop`; `os_type` is `NAME+VARIANT`).
    pub name: String,
    /// `variants.list`; empty: the OS takes no variant.
    pub variants: Vec<String>,
    /// The names in `parameters.list`: any other OS parameter fails a create.
    pub parameters: Vec<String>,
}

impl Default for SimOsConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            variants: vec!["default".into()],
            parameters: Vec::new(),
        }
    }
}

impl SimOsConfig {
    /// The default OS list: `noop` (the lab's OS: `delay`, plus the image
    /// parameters Synnefo sends) and `snf-image` (its `parameters.list`),
    /// both with the single variant `default`.
    pub fn defaults() -> Vec<Self> {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        vec![
            Self {
                name: "noop".into(),
                variants: list(&["default"]),
                parameters: list(&[
                    "delay",
                    "img_id",
                    "img_format",
                    "img_passwd",
                    "img_properties",
                    "img_personality",
                    "auth_keys",
                    "cloud_userdata",
                ]),
            },
            Self {
                name: "snf-image".into(),
                variants: list(&["default"]),
                parameters: list(&[
                    "img_id",
                    "img_format",
                    "img_passwd",
                    "img_personality",
                    "img_properties",
                    "auth_keys",
                    "config_url",
                    "cloud_userdata",
                    "inst_properties",
                    "os_product_key",
                    "os_answer_file",
                ]),
            },
        ]
    }
}

/// The instance policy of the default node group (Ganeti's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimIPolicy {
    /// Smallest disk (MiB) of a new instance.
    pub disk_size_min_mib: u64,
    /// Largest disk (MiB) of a new instance.
    pub disk_size_max_mib: u64,
}

impl Default for SimIPolicy {
    fn default() -> Self {
        Self {
            disk_size_min_mib: 1024,
            disk_size_max_mib: 1024 * 1024,
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
    /// (default `localhost`, `127.0.0.1`); its PEM is [`crate::SimHandle::cert_pem`].
    Generate {
        /// The certificate's subjectAltNames (DNS names or IP addresses).
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
    /// The user name of basic auth.
    pub name: String,
    /// Clear-text password.
    pub password: String,
    /// May submit jobs.
    pub write: bool,
}

/// One node of the cluster: its capacity and its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimNodeConfig {
    /// The node's name (the first node's is written to `ssconf_master_node`).
    pub name: String,
    /// Primary IP (default: 192.0.2.<index+10>).
    pub ip: Option<String>,
    /// Total memory in MiB (`mtotal`).
    pub memory_mib: u64,
    /// Memory the node OS uses (MiB).
    pub node_memory_mib: u64,
    /// Disk in MiB (`dtotal` and `dfree`; never consumed).
    pub disk_mib: u64,
    /// Physical CPUs (`ctotal`).
    pub cpus: u64,
    /// Offline: not usable, and shown without capacity.
    pub offline: bool,
    /// Drained: no new instances on it.
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
    /// How many instances.
    pub count: u64,
    /// Name prefix (`snf-` gives `snf-1` .. `snf-<count>`).
    pub prefix: String,
    /// The number of the first one (`snf-<first>`).
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
        c.networks = vec![SimNetworkConfig {
            gateway: Some("198.51.100.1".into()),
            mode: "routed".into(),
            link: "100".into(),
            ..SimNetworkConfig::new("synnefo-lab", "198.51.100.0/24")
        }];
        assert_eq!(c.validate(), Ok(()));
        let s = serde_json::to_string(&c).unwrap();
        let back: SimConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
        let partial: SimConfig =
            serde_json::from_str(r#"{"hypervisor": "fake", "tls": {"mode": "none"}}"#).unwrap();
        assert_eq!(partial.hypervisor, "fake");
        assert!(serde_json::from_str::<SimConfig>(r#"{"nope": 1}"#).is_err());
        assert!(
            serde_json::from_str::<SimConfig>(r#"{"networks": [{"name": "n", "nope": 1}]}"#)
                .is_err()
        );
        assert_eq!(partial.os, SimOsConfig::defaults());
    }

    #[test]
    fn validate_refuses_bad_networks_and_oses() {
        let with_net = |n: SimNetworkConfig| SimConfig {
            networks: vec![n],
            ..SimConfig::default()
        };
        let bad = [
            SimNetworkConfig::new("a", "198.51.100.0"),
            SimNetworkConfig::new("a", "198.51.100.1/24"),
            SimNetworkConfig::new("a", "10.0.0.0/8"),
            SimNetworkConfig::new("a", "10.0.0.0/31"),
            SimNetworkConfig {
                gateway: Some("192.0.2.1".into()),
                ..SimNetworkConfig::new("a", "198.51.100.0/24")
            },
            SimNetworkConfig {
                reserved_ips: vec!["x".into()],
                ..SimNetworkConfig::new("a", "198.51.100.0/24")
            },
        ];
        for n in bad {
            assert!(with_net(n.clone()).validate().is_err(), "{n:?}");
        }
        let mut twice = with_net(SimNetworkConfig::new("a", "198.51.100.0/24"));
        twice.networks.push(twice.networks[0].clone());
        assert!(twice.validate().is_err());
        let mut os = SimConfig::default();
        os.os.push(SimOsConfig {
            name: "noop+default".into(),
            ..SimOsConfig::default()
        });
        assert!(os.validate().is_err());
    }
}
