//! [`RapiBackend`]: the core's [`GanetiBackend`] port over the RAPI of
//! several clusters, each keyed by its [`BackendId`].
//!
//! The mapping from Synnefo's terms to Ganeti's is in pure functions
//! ([`create_request`], [`cluster_load_from_nodes`]) so it is tested
//! without a server: flavor -> `beparams` (`vcpus`, `maxmem` = `minmem` =
//! RAM), disk -> one disk of `GiB * 1024` MiB (none for `diskless`),
//! image -> `os_type`/`osparams`, NICs from the spec with the settings'
//! defaults, and the checks Synnefo does itself (`name_check`, `ip_check`,
//! `conflicts_check`) off.
//!
//! Networks ([`network_request`], [`connect_request`], [`add_nic_request`],
//! [`remove_nic_request`]): `POST /2/networks` with Ganeti's conflict check
//! on (it reserves node addresses in the subnet), one
//! `PUT /2/networks/NAME/connect` per node group of the cluster, one
//! `disconnect` per group the network is connected to, and NIC changes by
//! `PUT /2/instances/NAME/modify` with `hotplug_if_possible` (hot-plugged
//! on KVM with a running guest; elsewhere Ganeti logs a warning and the
//! NIC appears at the next boot). Ganeti 3.0 treats connecting a group
//! already connected, and disconnecting one that is not, as success with a
//! `WARNING` log line (`lib/cmdlib/network.py`, recorded in
//! `tests/fixtures/ganeti-3.0-networks/job-network-connect-again.json`), so
//! both are idempotent as they are; no error is reinterpreted.
//!
//! A resize ([`resize_request`]) is `PUT /2/instances/NAME/modify` with
//! `beparams: {vcpus, maxmem, minmem}` (RAM as both memories, like a
//! create), which Ganeti applies at the next start of the stopped instance.
//!
//! A rebuild ([`reinstall_request`]) is `POST /2/instances/NAME/reinstall`
//! (body version 1: `os`, `start`, `osparams`). Ganeti 3.0 takes no secret
//! OS parameters there and stores the `osparams` it gets in its
//! configuration, so the password goes as snf-image's `img_passwd_hash`
//! (SHA-512 crypt, [`crate::passwd`]) and any other parameter configured
//! secret is refused rather than written into Ganeti's files.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use synnefo_core::BackendError;
use synnefo_core::ids::{BackendId, JobId};
use synnefo_core::ports::{
    BootFrom, ClusterLoad, ConsoleInfo, GanetiBackend, InstanceInfo, InstanceSpec, JobInfo,
    NetworkInfo, NetworkLink, NetworkSpec, NicSpec, ReinstallSpec,
};
use synnefo_core::settings::{ClusterSettings, GanetiSettings};
use synnefo_core::state::RebootKind;

use crate::error::RapiError;
use crate::rapi::{
    BeParamsRequest, ConnectNetworkRequest, CreateInstanceRequest, CreateNetworkRequest,
    DiskRequest, ModifyInstanceRequest, NicRequest, NodeInfo, RapiClient, RapiConfig,
    ReinstallRequest, SecretOsParams,
};

/// Several Ganeti clusters behind one [`GanetiBackend`].
#[derive(Debug, Clone)]
pub struct RapiBackend {
    clusters: BTreeMap<BackendId, RapiClient>,
    settings: GanetiSettings,
}

impl RapiBackend {
    /// One client per `(id, cluster settings)`; `settings` supplies the
    /// defaults (disk template, NIC mode/link/network, hypervisor,
    /// shutdown timeout).
    pub fn new(
        clusters: Vec<(BackendId, ClusterSettings)>,
        settings: GanetiSettings,
    ) -> Result<Self, RapiError> {
        let clients = clusters
            .into_iter()
            .map(|(id, c)| Ok((id, RapiClient::new(RapiConfig::from_cluster(&c)?)?)))
            .collect::<Result<BTreeMap<_, _>, RapiError>>()?;
        Ok(Self::from_clients(clients, settings))
    }

    /// From ready-made clients (tests, custom TLS).
    pub fn from_clients(
        clients: impl IntoIterator<Item = (BackendId, RapiClient)>,
        settings: GanetiSettings,
    ) -> Self {
        Self {
            clusters: clients.into_iter().collect(),
            settings,
        }
    }

    /// The configured clusters.
    pub fn backend_ids(&self) -> Vec<BackendId> {
        self.clusters.keys().copied().collect()
    }

    /// The client of one cluster.
    pub fn client(&self, id: BackendId) -> Result<&RapiClient, BackendError> {
        self.clusters
            .get(&id)
            .ok_or_else(|| BackendError::NoBackend(format!("backend {id} is not configured")))
    }
}

/// The `POST /2/instances` body for a spec (pure; see the module docs).
pub fn create_request(spec: &InstanceSpec, settings: &GanetiSettings) -> CreateInstanceRequest {
    let disk_template = if spec.disk_template.is_empty() {
        settings.default_disk_template.clone()
    } else {
        spec.disk_template.clone()
    };
    let disks = if disk_template == "diskless" {
        vec![]
    } else {
        vec![DiskRequest {
            size: u64::try_from(spec.disk_gib).unwrap_or(0) * 1024,
            mode: None,
            name: None,
        }]
    };
    let nics = if spec.nics.is_empty() {
        vec![nic_request(&NicSpec::default(), settings)]
    } else {
        spec.nics.iter().map(|n| nic_request(n, settings)).collect()
    };
    let ram = u64::try_from(spec.ram_mib).unwrap_or(0);
    let (secret, osparams): (BTreeMap<_, _>, BTreeMap<_, _>) = spec
        .osparams
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| settings.secret_osparams.contains(k));
    CreateInstanceRequest {
        version: 1,
        mode: "create".into(),
        instance_name: spec.name.clone(),
        disk_template,
        disks,
        nics,
        os_type: spec.os_type.clone(),
        osparams,
        osparams_secret: SecretOsParams(secret),
        beparams: BeParamsRequest {
            vcpus: u64::try_from(spec.vcpus).ok(),
            maxmem: Some(ram),
            minmem: Some(ram),
        },
        hvparams: spec.hvparams.clone(),
        hypervisor: (!settings.hypervisor.is_empty()).then(|| settings.hypervisor.clone()),
        pnode: None,
        iallocator: None,
        ip_check: false,
        name_check: false,
        conflicts_check: false,
        start: spec.start,
        tags: vec![],
    }
}

/// One NIC: a Ganeti network if named (spec or default), else mode/link
/// from the spec or the defaults.
pub fn nic_request(nic: &NicSpec, settings: &GanetiSettings) -> NicRequest {
    let network = nic.network.clone().or_else(|| {
        (nic.mode.is_none() && nic.link.is_none() && !settings.default_nic_network.is_empty())
            .then(|| settings.default_nic_network.clone())
    });
    match network {
        Some(network) => NicRequest {
            ip: nic.ip.clone(),
            network: Some(network),
            mode: nic.mode.clone(),
            link: nic.link.clone(),
            mac: nic.mac.clone(),
            name: nic.name.clone(),
        },
        None => NicRequest {
            ip: nic.ip.clone(),
            mac: nic.mac.clone(),
            name: nic.name.clone(),
            mode: Some(
                nic.mode
                    .clone()
                    .unwrap_or_else(|| settings.default_nic_mode.clone()),
            ),
            link: Some(
                nic.link
                    .clone()
                    .unwrap_or_else(|| settings.default_nic_link.clone()),
            ),
            network: None,
        },
    }
}

/// The `POST /2/networks` body for a spec: Ganeti's conflict check on, so
/// node and master addresses inside the subnet are reserved.
pub fn network_request(spec: &NetworkSpec) -> CreateNetworkRequest {
    CreateNetworkRequest {
        network_name: spec.name.clone(),
        network: spec.network.clone(),
        gateway: spec.gateway.clone(),
        network6: spec.network6.clone(),
        gateway6: spec.gateway6.clone(),
        mac_prefix: spec.mac_prefix.clone(),
        add_reserved_ips: vec![],
        tags: spec.tags.clone(),
        conflicts_check: true,
    }
}

/// The `PUT /2/networks/NAME/connect` body for one node group (conflict
/// check on: Ganeti refuses when instances of the group already hold
/// addresses of the subnet outside the network).
pub fn connect_request(group: &str, link: &NetworkLink) -> ConnectNetworkRequest {
    ConnectNetworkRequest {
        group_name: group.to_string(),
        network_mode: link.mode.clone(),
        network_link: link.link.clone(),
        network_vlan: link.vlan.clone().unwrap_or_default(),
        conflicts_check: true,
    }
}

/// The modify body adding one NIC at the end (`["add", -1, {...}]`, the
/// parameters as [`nic_request`] makes them: `mac`/`ip`/`name` only when
/// set, `network` or else `mode`/`link`), hot-plugged where possible.
pub fn add_nic_request(nic: &NicSpec, settings: &GanetiSettings) -> ModifyInstanceRequest {
    let params = serde_json::to_value(nic_request(nic, settings)).unwrap_or_default();
    ModifyInstanceRequest {
        nics: Some(vec![serde_json::json!(["add", -1, params])]),
        hotplug_if_possible: Some(true),
        ..ModifyInstanceRequest::default()
    }
}

/// The modify body removing the NIC named `nic_name`
/// (`["remove", name, {}]`; Ganeti finds a NIC by index, name or UUID),
/// hot-unplugged where possible.
pub fn remove_nic_request(nic_name: &str) -> ModifyInstanceRequest {
    ModifyInstanceRequest {
        nics: Some(vec![serde_json::json!(["remove", nic_name, {}])]),
        hotplug_if_possible: Some(true),
        ..ModifyInstanceRequest::default()
    }
}

/// The modify body of a resize: the flavor's CPUs, and its RAM as both
/// maximum and minimum memory (`beparams: {vcpus, maxmem, minmem}`), as
/// Synnefo's `resize_instance` sends it. Nothing else changes; Ganeti
/// applies it at the instance's next start.
pub fn resize_request(vcpus: i32, ram_mib: i32) -> ModifyInstanceRequest {
    let ram = u64::try_from(ram_mib).unwrap_or(0);
    ModifyInstanceRequest {
        beparams: Some(BeParamsRequest {
            vcpus: u64::try_from(vcpus).ok(),
            maxmem: Some(ram),
            minmem: Some(ram),
        }),
        ..ModifyInstanceRequest::default()
    }
}

/// snf-image's parameter for the password, and its hashed form.
const PASSWORD_OSPARAM: &str = "img_passwd";
const PASSWORD_HASH_OSPARAM: &str = "img_passwd_hash";

/// The `POST /2/instances/NAME/reinstall` body of a rebuild (pure but for
/// the hash's random salt): the image's OS, `start`, and the OS
/// parameters with the password (`img_passwd`) replaced by its SHA-512
/// crypt hash (`img_passwd_hash`, which snf-image writes into the guest as
/// is). A parameter configured secret that has no such form is refused:
/// Ganeti 3.0's reinstall would keep it in `config.data`.
pub fn reinstall_request(
    spec: &ReinstallSpec,
    settings: &GanetiSettings,
) -> Result<ReinstallRequest, BackendError> {
    let mut osparams = BTreeMap::new();
    for (k, v) in &spec.osparams {
        if k == PASSWORD_OSPARAM {
            osparams.insert(
                PASSWORD_HASH_OSPARAM.to_string(),
                crate::passwd::sha512_crypt(v),
            );
        } else if settings.secret_osparams.contains(k) {
            return Err(BackendError::Rejected(format!(
                "OS parameter {k} is configured secret, and Ganeti's reinstall takes no secret OS parameters"
            )));
        } else {
            osparams.insert(k.clone(), v.clone());
        }
    }
    Ok(ReinstallRequest {
        os: (!spec.os_type.is_empty()).then(|| spec.os_type.clone()),
        start: spec.start,
        osparams: Some(osparams),
    })
}

/// The modify body of [`GanetiBackend::set_boot`]: Synnefo's rescue
/// `hvparams` (`boot_order: cdrom` and the image as `cdrom_image_path`),
/// or its unrescue ones (`cdrom_image_path: ""`, `boot_order: disk`).
pub fn boot_request(boot: &BootFrom) -> ModifyInstanceRequest {
    use serde_json::Value;
    let (order, path) = match boot {
        BootFrom::Rescue(path) => ("cdrom", path.as_str()),
        BootFrom::Disk => ("disk", ""),
    };
    ModifyInstanceRequest {
        hvparams: Some(BTreeMap::from([
            ("boot_order".to_string(), Value::from(order)),
            ("cdrom_image_path".to_string(), Value::from(path)),
        ])),
        ..ModifyInstanceRequest::default()
    }
}

/// Load of a cluster from `GET /2/nodes?bulk=1`: instances on all nodes;
/// memory of the nodes that can take new instances (not offline, not
/// drained, VM-capable).
pub fn cluster_load_from_nodes(nodes: &[NodeInfo]) -> ClusterLoad {
    let mut load = ClusterLoad::default();
    for n in nodes {
        load.instances += n.pinst_cnt.unwrap_or(n.pinst_list.len() as u64);
        if !n.offline && !n.drained && n.vm_capable != Some(false) {
            load.mem_total_mib += n.mtotal.unwrap_or(0);
            load.mem_free_mib += n.mfree.unwrap_or(0);
        }
    }
    load
}

fn job(id: u64) -> JobId {
    JobId(id)
}

#[async_trait]
impl GanetiBackend for RapiBackend {
    async fn create_instance(&self, spec: &InstanceSpec) -> Result<JobId, BackendError> {
        let body = create_request(spec, &self.settings);
        Ok(job(self
            .client(spec.backend)?
            .create_instance(&body)
            .await?))
    }

    async fn startup(&self, backend: BackendId, instance: &str) -> Result<JobId, BackendError> {
        Ok(job(self.client(backend)?.startup(instance).await?))
    }

    async fn shutdown(
        &self,
        backend: BackendId,
        instance: &str,
        timeout: Option<Duration>,
    ) -> Result<JobId, BackendError> {
        let t = timeout.unwrap_or(Duration::from_secs(self.settings.shutdown_timeout_secs));
        Ok(job(self
            .client(backend)?
            .shutdown(instance, Some(t))
            .await?))
    }

    async fn reboot(
        &self,
        backend: BackendId,
        instance: &str,
        kind: RebootKind,
    ) -> Result<JobId, BackendError> {
        Ok(job(self.client(backend)?.reboot(instance, kind).await?))
    }

    async fn remove(&self, backend: BackendId, instance: &str) -> Result<JobId, BackendError> {
        Ok(job(self.client(backend)?.remove_instance(instance).await?))
    }

    async fn list_instances(&self, backend: BackendId) -> Result<Vec<InstanceInfo>, BackendError> {
        Ok(self
            .client(backend)?
            .instances()
            .await?
            .iter()
            .map(|i| i.to_info())
            .collect())
    }

    async fn instance_info(
        &self,
        backend: BackendId,
        instance: &str,
    ) -> Result<Option<InstanceInfo>, BackendError> {
        match self.client(backend)?.instance(instance).await {
            Ok(i) => Ok(Some(i.to_info())),
            Err(RapiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn console(
        &self,
        backend: BackendId,
        instance: &str,
    ) -> Result<ConsoleInfo, BackendError> {
        match self.client(backend)?.console(instance).await {
            Ok(c) => Ok(c.to_console_info()),
            // Ganeti 3.0 answers 500 "list index out of range" for an unknown instance.
            Err(RapiError::Http {
                status: 500,
                message,
            }) if message.contains("list index out of range") => {
                Err(BackendError::NotFound(format!("instance {instance}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn job_status(&self, backend: BackendId, job: JobId) -> Result<JobInfo, BackendError> {
        Ok(self.client(backend)?.job(job.0).await?.to_job_info()?)
    }

    async fn wait_for_job(
        &self,
        backend: BackendId,
        job: JobId,
        timeout: Duration,
    ) -> Result<JobInfo, BackendError> {
        let client = self.client(backend)?;
        match client.wait_for_job(job.0, timeout).await {
            Ok(j) => Ok(j.to_job_info()?),
            Err(RapiError::Timeout(_)) => Ok(client.job(job.0).await?.to_job_info()?),
            Err(e) => Err(e.into()),
        }
    }

    async fn cluster_load(&self, backend: BackendId) -> Result<ClusterLoad, BackendError> {
        Ok(cluster_load_from_nodes(
            &self.client(backend)?.nodes().await?,
        ))
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<JobId, BackendError> {
        let body = network_request(spec);
        Ok(job(self
            .client(spec.backend)?
            .create_network(&body)
            .await?))
    }

    async fn connect_network(
        &self,
        backend: BackendId,
        network: &str,
        link: &NetworkLink,
    ) -> Result<Vec<JobId>, BackendError> {
        let client = self.client(backend)?;
        let groups = client.groups().await?;
        if groups.is_empty() {
            return Err(BackendError::Protocol(format!(
                "backend {backend} lists no node group to connect network {network} to"
            )));
        }
        let mut jobs = Vec::with_capacity(groups.len());
        for g in &groups {
            let body = connect_request(&g.name, link);
            jobs.push(job(client.connect_network(network, &body).await?));
        }
        Ok(jobs)
    }

    async fn disconnect_network(
        &self,
        backend: BackendId,
        network: &str,
    ) -> Result<Vec<JobId>, BackendError> {
        let client = self.client(backend)?;
        let net = client.network(network).await?;
        let mut jobs = Vec::with_capacity(net.group_list.len());
        for g in &net.group_list {
            jobs.push(job(client.disconnect_network(network, &g.group).await?));
        }
        Ok(jobs)
    }

    async fn remove_network(
        &self,
        backend: BackendId,
        network: &str,
    ) -> Result<JobId, BackendError> {
        Ok(job(self.client(backend)?.remove_network(network).await?))
    }

    async fn list_networks(&self, backend: BackendId) -> Result<Vec<NetworkInfo>, BackendError> {
        Ok(self
            .client(backend)?
            .networks()
            .await?
            .iter()
            .map(|n| n.to_info())
            .collect())
    }

    async fn node_groups(&self, backend: BackendId) -> Result<Vec<String>, BackendError> {
        Ok(self
            .client(backend)?
            .groups()
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect())
    }

    async fn add_nic(
        &self,
        backend: BackendId,
        instance: &str,
        nic: &NicSpec,
    ) -> Result<JobId, BackendError> {
        let body = add_nic_request(nic, &self.settings);
        Ok(job(self.client(backend)?.modify(instance, &body).await?))
    }

    async fn remove_nic(
        &self,
        backend: BackendId,
        instance: &str,
        nic_name: &str,
    ) -> Result<JobId, BackendError> {
        let body = remove_nic_request(nic_name);
        Ok(job(self.client(backend)?.modify(instance, &body).await?))
    }

    async fn resize(
        &self,
        backend: BackendId,
        instance: &str,
        vcpus: i32,
        ram_mib: i32,
    ) -> Result<JobId, BackendError> {
        if vcpus < 1 || ram_mib < 1 {
            return Err(BackendError::Rejected(format!(
                "cannot resize {instance} to {vcpus} vCPUs and {ram_mib} MiB"
            )));
        }
        let body = resize_request(vcpus, ram_mib);
        Ok(job(self.client(backend)?.modify(instance, &body).await?))
    }

    async fn reinstall(
        &self,
        backend: BackendId,
        instance: &str,
        spec: &ReinstallSpec,
    ) -> Result<JobId, BackendError> {
        let body = reinstall_request(spec, &self.settings)?;
        Ok(job(self
            .client(backend)?
            .reinstall(instance, &body)
            .await?))
    }

    async fn set_boot(
        &self,
        backend: BackendId,
        instance: &str,
        boot: BootFrom,
    ) -> Result<JobId, BackendError> {
        if let BootFrom::Rescue(path) = &boot
            && path.is_empty()
        {
            return Err(BackendError::Rejected(format!(
                "no rescue image is configured for {instance}"
            )));
        }
        let body = boot_request(&boot);
        Ok(job(self.client(backend)?.modify(instance, &body).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> GanetiSettings {
        GanetiSettings {
            secret_osparams: vec!["img_passwd".into()],
            default_disk_template: "plain".into(),
            default_nic_mode: "bridged".into(),
            default_nic_link: "br0".into(),
            default_nic_network: String::new(),
            shutdown_timeout_secs: 120,
            hypervisor: "kvm".into(),
            rescue_image: synnefo_core::settings::default_rescue_image(),
            clusters: BTreeMap::new(),
        }
    }

    fn spec() -> InstanceSpec {
        InstanceSpec {
            backend: BackendId(1),
            name: "snf-42".into(),
            vcpus: 2,
            ram_mib: 2048,
            disk_gib: 20,
            disk_template: String::new(),
            os_type: "snf-image+default".into(),
            osparams: BTreeMap::from([
                ("img_id".to_string(), "debian".to_string()),
                ("img_passwd".to_string(), "s3cret".to_string()),
            ]),
            nics: vec![],
            hvparams: BTreeMap::new(),
            start: true,
        }
    }

    #[test]
    fn create_body_shape() {
        let body = serde_json::to_value(create_request(&spec(), &settings())).unwrap();
        assert_eq!(
            body,
            json!({
                "__version__": 1, "mode": "create", "instance_name": "snf-42", "disk_template": "plain",
                "disks": [{"size": 20480}], "nics": [{"mode": "bridged", "link": "br0"}],
                "os_type": "snf-image+default", "osparams": {"img_id": "debian"},
                "osparams_secret": {"img_passwd": "s3cret"},
                "beparams": {"vcpus": 2, "maxmem": 2048, "minmem": 2048}, "hvparams": {},
                "hypervisor": "kvm", "ip_check": false, "name_check": false, "conflicts_check": false, "start": true
            })
        );
    }

    #[test]
    fn diskless_networks_and_cluster_default_hypervisor() {
        let mut s = spec();
        s.disk_template = "diskless".into();
        s.nics = vec![
            NicSpec {
                network: Some("public".into()),
                ip: Some("pool".into()),
                ..Default::default()
            },
            NicSpec {
                mode: Some("routed".into()),
                link: Some("100".into()),
                ip: Some("192.0.2.51".into()),
                ..Default::default()
            },
        ];
        let mut st = settings();
        st.hypervisor = String::new();
        let body = serde_json::to_value(create_request(&s, &st)).unwrap();
        assert_eq!(body["disks"], json!([]));
        assert_eq!(
            body["nics"],
            json!([{"network": "public", "ip": "pool"}, {"mode": "routed", "link": "100", "ip": "192.0.2.51"}])
        );
        assert!(body.get("hypervisor").is_none());
        assert!(body.get("pnode").is_none() && body.get("iallocator").is_none());
    }

    #[test]
    fn default_network_applies_to_bare_nics() {
        let mut st = settings();
        st.default_nic_network = "snf-net-1".into();
        let n = nic_request(&NicSpec::default(), &st);
        assert_eq!(n.network.as_deref(), Some("snf-net-1"));
        assert_eq!(n.mode, None);
    }

    #[test]
    fn nic_bodies_carry_mac_and_name_only_when_set() {
        let nic = NicSpec {
            network: Some("snf-net-7".into()),
            ip: Some("10.0.0.9".into()),
            mac: Some("aa:00:01:00:00:09".into()),
            name: Some("snf-nic-3".into()),
            ..Default::default()
        };
        let body = serde_json::to_value(add_nic_request(&nic, &settings())).unwrap();
        assert_eq!(
            body,
            json!({"nics": [["add", -1, {"network": "snf-net-7", "ip": "10.0.0.9",
                "mac": "aa:00:01:00:00:09", "name": "snf-nic-3"}]], "hotplug_if_possible": true})
        );
        let bare = serde_json::to_value(add_nic_request(&NicSpec::default(), &settings())).unwrap();
        assert_eq!(
            bare["nics"],
            json!([["add", -1, {"mode": "bridged", "link": "br0"}]])
        );
        let rm = serde_json::to_value(remove_nic_request("snf-nic-3")).unwrap();
        assert_eq!(
            rm,
            json!({"nics": [["remove", "snf-nic-3", {}]], "hotplug_if_possible": true})
        );
        let mut s = spec();
        s.nics = vec![nic];
        let create = serde_json::to_value(create_request(&s, &settings())).unwrap();
        assert_eq!(create["nics"][0]["mac"], "aa:00:01:00:00:09");
        assert_eq!(create["nics"][0]["name"], "snf-nic-3");
    }

    #[test]
    fn reinstall_body_hashes_the_password_and_refuses_other_secrets() {
        let spec = ReinstallSpec {
            os_type: "snf-image+default".into(),
            osparams: BTreeMap::from([
                ("img_id".to_string(), "debian".to_string()),
                ("img_passwd".to_string(), "s3cret".to_string()),
                ("auth_keys".to_string(), "ssh-ed25519 AAAA k".to_string()),
            ]),
            start: false,
        };
        let body = reinstall_request(&spec, &settings()).unwrap();
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["os"], "snf-image+default");
        assert_eq!(v["start"], false);
        assert_eq!(v["osparams"]["img_id"], "debian");
        assert_eq!(v["osparams"]["auth_keys"], "ssh-ed25519 AAAA k");
        assert!(v["osparams"].get("img_passwd").is_none());
        assert!(!v.to_string().contains("s3cret"));
        let hash = v["osparams"]["img_passwd_hash"].as_str().unwrap();
        let salt = &hash[3..19];
        assert_eq!(crate::passwd::sha512_crypt_with_salt("s3cret", salt), hash);
        let mut s = settings();
        s.secret_osparams.push("img_personality".into());
        let with_files = ReinstallSpec {
            osparams: BTreeMap::from([("img_personality".to_string(), "[]".to_string())]),
            ..spec
        };
        assert!(matches!(
            reinstall_request(&with_files, &s),
            Err(BackendError::Rejected(m)) if m.contains("img_personality")
        ));
    }

    #[test]
    fn resize_body_sets_cpus_and_both_memories() {
        let body = serde_json::to_value(resize_request(2, 1024)).unwrap();
        assert_eq!(
            body,
            json!({"beparams": {"vcpus": 2, "maxmem": 1024, "minmem": 1024}})
        );
    }

    #[test]
    fn network_bodies() {
        let spec = NetworkSpec {
            backend: BackendId(1),
            name: "snf-net-7".into(),
            network: "10.0.0.0/24".into(),
            gateway: Some("10.0.0.1".into()),
            network6: None,
            gateway6: None,
            mac_prefix: Some("aa:00:07".into()),
            tags: vec!["nfdhcpd".into()],
        };
        assert_eq!(
            serde_json::to_value(network_request(&spec)).unwrap(),
            json!({"network_name": "snf-net-7", "network": "10.0.0.0/24", "gateway": "10.0.0.1",
                "mac_prefix": "aa:00:07", "tags": ["nfdhcpd"], "conflicts_check": true})
        );
        let link = NetworkLink {
            mode: "routed".into(),
            link: "100".into(),
            vlan: None,
        };
        assert_eq!(
            serde_json::to_value(connect_request("default", &link)).unwrap(),
            json!({"group_name": "default", "network_mode": "routed", "network_link": "100",
                "network_vlan": "", "conflicts_check": true})
        );
    }

    #[test]
    fn load_counts_usable_memory_only() {
        let node = |name: &str, offline, drained, mtotal, mfree, pinst| NodeInfo {
            name: name.into(),
            offline,
            drained,
            mtotal: Some(mtotal),
            mfree: Some(mfree),
            pinst_cnt: Some(pinst),
            ..Default::default()
        };
        let nodes = [
            node("a", false, false, 1000, 600, 3),
            node("b", false, true, 1000, 900, 2),
            node("c", true, false, 0, 0, 1),
        ];
        assert_eq!(
            cluster_load_from_nodes(&nodes),
            ClusterLoad {
                instances: 6,
                mem_total_mib: 1000,
                mem_free_mib: 600
            }
        );
    }

    #[tokio::test]
    async fn unknown_backend_is_no_backend() {
        let b = RapiBackend::from_clients(vec![], settings());
        assert!(matches!(
            b.startup(BackendId(9), "x").await,
            Err(BackendError::NoBackend(_))
        ));
    }
}
