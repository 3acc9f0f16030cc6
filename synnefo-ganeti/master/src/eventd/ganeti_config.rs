//! What Ganeti knows of an instance (its NICs, disks and boot parameters),
//! read from the cluster's `config.data`.
//!
//! Synnefo's eventd sends the instance's NICs, disks and the two boot
//! parameters with a successful create or startup and a finished modify or
//! disk grow (`instance_nics`, `instance_disks`, `instance_hvparams`), asking
//! Ganeti on the master (`QueryInstances`) and reading `config.data` on the
//! other nodes. eventd here reads `config.data` everywhere: every master
//! candidate has it, nothing is asked of the master daemons, and it is
//! current when the job file says the op is over (Ganeti 2.12+'s wconfd
//! writes the master's copy before the config change returns to the job:
//! `modifyConfigStateErrWithImmediate` waits for the local save).
//!
//! The answer has the shape of the master's query, which is what Synnefo's
//! dispatcher is fed in practice: every NIC key present (`null` where Ganeti
//! has nothing), the network by **name**, mode and link with the cluster's
//! NIC defaults filled in, no `index`; disks as `{name, size (MiB), uuid}`;
//! `boot_order`/`cdrom_image_path` from the instance's hypervisor
//! parameters over the cluster's defaults for its hypervisor (`null` on a
//! hypervisor without them, as Ganeti's query answers); a `firewall` on the
//! NICs an instance tag `synnefo:network:<nic name>:<profile>` names.
//!
//! Formats handled: Ganeti 2.12+ (instances and networks keyed by UUID,
//! 2.14+ disks in a top-level `disks` map referenced by UUID) and older
//! configs with disks inline; instances are looked up by their `name` in
//! either case.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Map, Value};
use synnefo_core::messages::{InstanceDisk, InstanceHvParams, InstanceNic};

/// The instance's state as Ganeti has it, in the message's shapes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceInfo {
    /// `instance_nics`.
    pub nics: Vec<InstanceNic>,
    /// `instance_disks`.
    pub disks: Vec<InstanceDisk>,
    /// `instance_hvparams`.
    pub hvparams: InstanceHvParams,
}

/// Why `config.data` gives nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// Not JSON, or not Ganeti's configuration shape (serde names the field).
    #[error("not a Ganeti configuration: {0}")]
    Shape(String),
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    cluster: RawCluster,
    #[serde(default)]
    instances: HashMap<String, RawInstance>,
    #[serde(default)]
    disks: HashMap<String, RawDisk>,
    #[serde(default)]
    networks: HashMap<String, RawNetwork>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCluster {
    #[serde(default)]
    hvparams: HashMap<String, Map<String, Value>>,
    #[serde(default)]
    nicparams: HashMap<String, Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct RawInstance {
    name: String,
    #[serde(default)]
    hypervisor: Option<String>,
    #[serde(default)]
    hvparams: Map<String, Value>,
    #[serde(default)]
    nics: Vec<RawNic>,
    #[serde(default)]
    disks: Vec<RawDiskRef>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawNic {
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    nicparams: Map<String, Value>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
}

/// An instance's disk: a UUID into the top-level `disks` (2.14+) or the
/// disk itself (older).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDiskRef {
    Uuid(String),
    Inline(RawDisk),
}

#[derive(Debug, Clone, Deserialize)]
struct RawDisk {
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawNetwork {
    name: String,
}

/// A parsed `config.data`.
#[derive(Debug)]
pub struct ClusterConfig {
    raw: RawConfig,
}

fn string_param(params: &Map<String, Value>, key: &str) -> Option<String> {
    match params.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// `a` with `b`'s keys over it (Ganeti's `FillDict`).
fn filled<'a>(a: Option<&'a Map<String, Value>>, b: &'a Map<String, Value>) -> Map<String, Value> {
    let mut out = a.cloned().unwrap_or_default();
    for (k, v) in b {
        out.insert(k.clone(), v.clone());
    }
    out
}

impl ClusterConfig {
    /// Parses `config.data`'s bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        serde_json::from_slice(bytes)
            .map(|raw| Self { raw })
            .map_err(|e| ConfigError::Shape(e.to_string()))
    }

    /// What Ganeti has for the instance named `name`; `None` if it has no
    /// such instance.
    pub fn instance(&self, name: &str) -> Option<InstanceInfo> {
        let inst = self.raw.instances.values().find(|i| i.name == name)?;
        let defaults = self.raw.cluster.nicparams.get("default");
        let mut nics: Vec<InstanceNic> = inst
            .nics
            .iter()
            .map(|n| {
                let params = filled(defaults, &n.nicparams);
                InstanceNic {
                    name: n.name.clone(),
                    network: n
                        .network
                        .as_ref()
                        .and_then(|uuid| self.raw.networks.get(uuid))
                        .map(|net| net.name.clone()),
                    ip: n.ip.clone(),
                    mac: n.mac.clone(),
                    mode: string_param(&params, "mode"),
                    link: string_param(&params, "link"),
                    uuid: n.uuid.clone(),
                    firewall: None,
                    index: None,
                }
            })
            .collect();
        // `synnefo:network:<nic name>:<profile>`; the first tag for a NIC wins.
        for tag in &inst.tags {
            let parts: Vec<&str> = tag.split(':').collect();
            if let ["synnefo", "network", nic_name, profile] = parts[..] {
                for nic in nics
                    .iter_mut()
                    .filter(|n| n.name.as_deref() == Some(nic_name) && n.firewall.is_none())
                {
                    nic.firewall = Some(profile.to_string());
                }
            }
        }
        let disks = inst
            .disks
            .iter()
            .map(|d| {
                let disk = match d {
                    RawDiskRef::Inline(disk) => Some(disk.clone()),
                    RawDiskRef::Uuid(uuid) => self.raw.disks.get(uuid).cloned(),
                };
                match (disk, d) {
                    (Some(disk), _) => InstanceDisk {
                        name: disk.name,
                        size: disk.size,
                        uuid: disk.uuid,
                        index: None,
                    },
                    // A dangling reference: Ganeti's query would fail; say
                    // what is known.
                    (None, RawDiskRef::Uuid(uuid)) => InstanceDisk {
                        uuid: Some(uuid.clone()),
                        ..InstanceDisk::default()
                    },
                    (None, RawDiskRef::Inline(_)) => InstanceDisk::default(),
                }
            })
            .collect();
        let hv = filled(
            inst.hypervisor
                .as_ref()
                .and_then(|h| self.raw.cluster.hvparams.get(h)),
            &inst.hvparams,
        );
        Some(InstanceInfo {
            nics,
            disks,
            hvparams: InstanceHvParams {
                boot_order: string_param(&hv, "boot_order"),
                cdrom_image_path: string_param(&hv, "cdrom_image_path"),
            },
        })
    }
}

/// The identity of a version of the file: re-read when it changes.
type FileKey = (u64, std::time::SystemTime, u64);

fn file_key(meta: &std::fs::Metadata) -> FileKey {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    (
        meta.len(),
        meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        ino,
    )
}

/// `config.data` on disk, parsed again only when it changed (Ganeti
/// replaces it with a rename on every configuration change).
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    cached: Mutex<Option<(FileKey, Arc<ClusterConfig>)>>,
}

impl ConfigFile {
    /// The file at `path` (`/var/lib/ganeti/config.data`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cached: Mutex::new(None),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current configuration.
    pub fn load(&self) -> Result<Arc<ClusterConfig>, ConfigError> {
        let read_err = |e: std::io::Error| ConfigError::Read {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let key = file_key(&std::fs::metadata(&self.path).map_err(read_err)?);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = cached.as_ref()
            && *k == key
        {
            return Ok(c.clone());
        }
        let bytes = std::fs::read(&self.path).map_err(read_err)?;
        let config = Arc::new(ClusterConfig::parse(&bytes)?);
        *cached = Some((key, config.clone()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(instances: Value) -> ClusterConfig {
        ClusterConfig::parse(
            json!({
                "cluster": {
                    "nicparams": {"default": {"mode": "bridged", "link": "br0", "vlan": ""}},
                    "hvparams": {"kvm": {"boot_order": "disk", "cdrom_image_path": "", "acpi": true},
                                 "fake": {"migration_mode": "live"}}
                },
                "networks": {"n-uuid": {"name": "snf-net-7", "network": "10.0.0.0/24"}},
                "disks": {"d-uuid": {"size": 2048, "name": "snf-vol-3", "uuid": "d-uuid", "dev_type": "file"}},
                "instances": instances,
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn reads_nics_disks_and_hvparams_in_the_query_shape() {
        let c = config(json!({
            "i-uuid": {
                "name": "snf-5", "hypervisor": "kvm",
                "hvparams": {"boot_order": "cdrom", "cdrom_image_path": "/srv/rescue.iso"},
                "nics": [
                    {"mac": "aa:00:00:00:00:01", "ip": "10.0.0.2", "nicparams": {"mode": "routed", "link": "100"},
                     "network": "n-uuid", "name": "snf-nic-1", "uuid": "u1"},
                    {"mac": "aa:00:00:00:00:02", "ip": null, "nicparams": {}, "network": null, "name": null, "uuid": "u2"}
                ],
                "disks": ["d-uuid"],
                "tags": ["synnefo:network:snf-nic-1:protected", "synnefo:network:snf-nic-1:unprotected",
                         "synnefo:network:bad", "other"]
            }
        }));
        let info = c.instance("snf-5").unwrap();
        assert_eq!(
            serde_json::to_value(&info.nics).unwrap(),
            json!([
                {"name": "snf-nic-1", "network": "snf-net-7", "ip": "10.0.0.2", "mac": "aa:00:00:00:00:01",
                 "mode": "routed", "link": "100", "uuid": "u1", "firewall": "protected"},
                {"name": null, "network": null, "ip": null, "mac": "aa:00:00:00:00:02",
                 "mode": "bridged", "link": "br0", "uuid": "u2"}
            ])
        );
        assert_eq!(
            serde_json::to_value(&info.disks).unwrap(),
            json!([{"name": "snf-vol-3", "size": 2048, "uuid": "d-uuid"}])
        );
        assert_eq!(
            info.hvparams,
            InstanceHvParams {
                boot_order: Some("cdrom".into()),
                cdrom_image_path: Some("/srv/rescue.iso".into())
            }
        );
        assert!(c.instance("snf-6").is_none());
    }

    #[test]
    fn older_inline_disks_and_hypervisors_without_boot_parameters() {
        let c = config(json!({
            "snf-9": {"name": "snf-9", "hypervisor": "fake", "nics": [],
                      "disks": [{"size": 1024, "uuid": "x"}, "missing-uuid"]}
        }));
        let info = c.instance("snf-9").unwrap();
        assert_eq!(
            serde_json::to_value(&info.disks).unwrap(),
            json!([{"name": null, "size": 1024, "uuid": "x"},
                   {"name": null, "size": null, "uuid": "missing-uuid"}])
        );
        assert_eq!(info.hvparams, InstanceHvParams::default());
        assert_eq!(
            serde_json::to_value(&info.hvparams).unwrap(),
            json!({"boot_order": null, "cdrom_image_path": null})
        );
    }

    #[test]
    fn bad_files_say_why_and_the_file_is_reread_when_replaced() {
        for (bytes, want) in [
            (&b"not json"[..], "not a Ganeti configuration"),
            (b"{}", "missing field `cluster`"),
            (
                br#"{"cluster": {}, "instances": {"x": {"nics": []}}}"#,
                "name",
            ),
        ] {
            let e = ClusterConfig::parse(bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.data");
        let file = ConfigFile::new(&path);
        assert!(matches!(file.load(), Err(ConfigError::Read { .. })));
        let write = |name: &str| {
            let tmp = dir.path().join("config.data.tmp");
            std::fs::write(
                &tmp,
                json!({"cluster": {}, "instances": {"u": {"name": name}}}).to_string(),
            )
            .unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("snf-1");
        assert!(file.load().unwrap().instance("snf-1").is_some());
        // Same file: the parsed copy is shared.
        assert!(Arc::ptr_eq(&file.load().unwrap(), &file.load().unwrap()));
        write("snf-22");
        let c = file.load().unwrap();
        assert!(c.instance("snf-22").is_some() && c.instance("snf-1").is_none());
    }
}
