//! Network use cases: what the Neutron API, Nova's server create and the
//! operator CLI call (networks, subnets, ports, floating IPs).
//!
//! Why it is a service of its own, beside [`Compute`](super::compute::Compute):
//! Neutron's resources live apart from servers (a network outlives them),
//! but creating a server, attaching an interface or a floating IP crosses
//! both, so compute holds a [`Networking`] and calls it.
//!
//! Ganeti: a network exists on a cluster only once a server there needs
//! it ([`Networking::ensure_on_backend`], Synnefo's way), created and
//! connected to every node group with its flavor's mode and link, and the
//! jobs awaited, so the instance job that follows finds it. A network
//! without an IPv4 subnet has no Ganeti network (Ganeti requires a
//! subnet): its NICs are plain mode/link NICs. NIC changes of a running
//! server (a port attached or detached, a floating IP associated) are
//! `OP_INSTANCE_SET_PARAMS` jobs, awaited too, so the address is never
//! released in the database while Ganeti still has it, nor handed out
//! before Ganeti took it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{BackendError, ServiceError, StoreError};
use crate::ids::{BackendId, InstanceName, JobId, VmId};
use crate::model::Vm;
use crate::network::{
    DEVICE_OWNER_COMPUTE, FloatingIp, IpRequest, Network, NetworkFlavor, NetworkUpdate, NewNetwork,
    NewPort, NewSubnet, Port, PortUpdate, ResourcePool, Subnet, SubnetRequest, SubnetUpdate,
    plan_subnet,
};
use crate::ports::{GanetiBackend, NetQuery, NetworkLink, NetworkSpec, NicSpec, Store};
use crate::state::JobStatus;

use super::compute::Caller;

mod reconcile;
#[cfg(test)]
mod tests;

use reconcile::ignore_missing_nic;
pub use reconcile::{NetworkFixes, NetworkReport, NetworkRunOptions};

/// Longest network, subnet or port name.
pub const MAX_NET_NAME_LEN: usize = 255;

/// A flavor's wiring on the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorRecipe {
    /// Ganeti NIC mode.
    pub mode: String,
    /// Ganeti NIC link.
    pub link: String,
}

/// Settings of the network service (from `[network]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// 3-byte prefix of the MACs allocated to ports (`aa:00:00`).
    pub mac_prefix: String,
    /// The flavor of networks users create.
    pub private_flavor: NetworkFlavor,
    /// Mode and link per flavor.
    pub flavors: BTreeMap<NetworkFlavor, FlavorRecipe>,
    /// The pools each flavor's networks lease a link or MAC prefix from
    /// (Synnefo's `PHYSICAL_VLAN` bridges, `MAC_FILTERED` prefixes).
    pub pools: BTreeMap<NetworkFlavor, Vec<ResourcePool>>,
    /// Most networks a project may own (`None`: unlimited).
    pub max_networks_per_project: Option<i64>,
    /// Most floating IPs a project may hold.
    pub max_floating_ips_per_project: Option<i64>,
    /// Most ports a project may hold.
    pub max_ports_per_project: Option<i64>,
    /// Largest page a Neutron list returns.
    pub pagination_max_limit: u64,
    /// How long to wait for a Ganeti network or NIC job.
    pub job_timeout: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let mut flavors = BTreeMap::new();
        flavors.insert(
            NetworkFlavor::MacFiltered,
            FlavorRecipe {
                mode: "bridged".into(),
                link: "br0".into(),
            },
        );
        flavors.insert(
            NetworkFlavor::IpLessRouted,
            FlavorRecipe {
                mode: "routed".into(),
                link: "snf_public".into(),
            },
        );
        flavors.insert(
            NetworkFlavor::PhysicalVlan,
            FlavorRecipe {
                mode: "bridged".into(),
                link: "br0".into(),
            },
        );
        Self {
            mac_prefix: "ae:00:00".into(),
            private_flavor: NetworkFlavor::MacFiltered,
            flavors,
            pools: BTreeMap::new(),
            max_networks_per_project: Some(10),
            max_floating_ips_per_project: Some(10),
            max_ports_per_project: Some(500),
            pagination_max_limit: 1000,
            job_timeout: Duration::from_secs(120),
        }
    }
}

/// A network create request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateNetwork {
    /// Name.
    pub name: String,
    /// `admin_state_up` (default true).
    pub admin_state_up: Option<bool>,
    /// Shared with every project (operators).
    pub shared: Option<bool>,
    /// External: floating IPs come from it (operators).
    pub external: Option<bool>,
    /// Synnefo's `type` (operators may pick any; users get the private
    /// flavor).
    pub flavor: Option<NetworkFlavor>,
    /// Mode and link for a `CUSTOM` flavor (operators).
    pub custom: Option<FlavorRecipe>,
}

/// One address a port create asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedIpRequest {
    /// On this subnet.
    pub subnet_id: Option<String>,
    /// This address.
    pub ip: Option<IpAddr>,
}

/// A port create request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreatePort {
    /// Network.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// Addresses (`None`: one from each subnet of the network).
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    /// `admin_state_up` (default true).
    pub admin_state_up: Option<bool>,
    /// Attach to this server at once.
    pub device_id: Option<String>,
}

/// What a server create asks for its NICs (Nova's `networks`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerNetworks {
    /// Not given, `"auto"` or an empty list: a port on a public network
    /// (Synnefo's `SNF:ANY_PUBLIC`), or the configured default NIC when
    /// the cloud has no public network.
    #[default]
    Auto,
    /// `"none"`: no NIC.
    None,
    /// These, in order.
    List(Vec<ServerNetwork>),
}

/// One entry of Nova's `networks` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerNetwork {
    /// A network (`uuid`).
    pub network_id: Option<String>,
    /// An existing port (`port`).
    pub port_id: Option<String>,
    /// A fixed address on the network (`fixed_ip`).
    pub fixed_ip: Option<IpAddr>,
}

/// One address of a server as the APIs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// The key it is listed under: its network's name (its id if unnamed).
    pub network: String,
    /// The network's id.
    pub network_id: String,
    /// The port.
    pub port_id: String,
    /// The address.
    pub ip: IpAddr,
    /// The port's MAC.
    pub mac: String,
    /// A floating IP associated with the port (else a fixed address).
    pub floating: bool,
}

/// One NIC a server create will get, validated before the server is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicPlan {
    /// A new port on a network.
    New {
        /// The network.
        network: Network,
        /// A fixed address.
        fixed_ip: Option<IpAddr>,
    },
    /// An existing, unbound port of the caller's.
    Existing(Port),
}

/// The network service.
#[derive(Clone)]
pub struct Networking {
    store: Arc<dyn Store>,
    ganeti: Arc<dyn GanetiBackend>,
    config: NetworkConfig,
    prefix: String,
}

impl std::fmt::Debug for Networking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networking")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn not_found(kind: &str, id: &str) -> ServiceError {
    ServiceError::NotFound(format!("{kind} {id} could not be found."))
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    if name.chars().count() > MAX_NET_NAME_LEN {
        return Err(ServiceError::BadRequest(format!(
            "Invalid input: name is longer than {MAX_NET_NAME_LEN} characters."
        )));
    }
    Ok(())
}

fn bad(e: crate::error::DomainError) -> ServiceError {
    ServiceError::BadRequest(e.to_string())
}

impl Networking {
    /// A service over `store` and `ganeti`; `prefix` is the instance-name
    /// prefix (`snf-`).
    pub fn new(
        store: Arc<dyn Store>,
        ganeti: Arc<dyn GanetiBackend>,
        config: NetworkConfig,
        prefix: String,
    ) -> Self {
        Self {
            store,
            ganeti,
            config,
            prefix,
        }
    }

    /// The settings.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The pools a new network of `flavor` leases from.
    fn flavor_pools(&self, flavor: NetworkFlavor) -> Vec<ResourcePool> {
        self.config.pools.get(&flavor).cloned().unwrap_or_default()
    }

    /// The bound on a non-operator's ports.
    fn port_limit(&self, caller: &Caller) -> Option<i64> {
        if caller.is_admin {
            None
        } else {
            self.config.max_ports_per_project
        }
    }

    /// Marks a port as changing (its `updated` time), before a NIC of it
    /// is removed on Ganeti: reconciliation holds findings about a port
    /// that changed recently, so it never adds back a NIC a detach is
    /// removing.
    async fn touch_port(&self, id: &str) -> Result<(), ServiceError> {
        match self.store.update_port(id, &PortUpdate::default()).await {
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn scope(caller: &Caller, mut q: NetQuery) -> NetQuery {
        if !caller.is_admin {
            q.project_id = Some(caller.project_id.clone());
        }
        q
    }

    fn owns(caller: &Caller, project: Option<&str>) -> bool {
        caller.is_admin || project == Some(caller.project_id.as_str())
    }

    // ------------------------------------------------------------ networks

    /// Creates a network. Users get private networks of the configured
    /// flavor; `shared`, `external`, a flavor or a custom wiring are for
    /// operators (403 otherwise, as Neutron's policy).
    pub async fn create_network(
        &self,
        caller: &Caller,
        req: CreateNetwork,
    ) -> Result<Network, ServiceError> {
        check_name(&req.name)?;
        let privileged = req.shared == Some(true)
            || req.external == Some(true)
            || req.custom.is_some()
            || req.flavor.is_some_and(|f| f != self.config.private_flavor);
        if privileged && !caller.is_admin {
            return Err(ServiceError::Forbidden(
                "(rule:create_network) is disallowed by policy".into(),
            ));
        }
        let flavor = req.flavor.unwrap_or(self.config.private_flavor);
        let recipe = match (&req.custom, self.config.flavors.get(&flavor)) {
            (Some(c), _) => c.clone(),
            (None, Some(r)) => r.clone(),
            (None, None) => {
                return Err(ServiceError::BadRequest(format!(
                    "Network type {} is not configured on this cloud.",
                    flavor.as_str()
                )));
            }
        };
        let pools = if req.custom.is_some() {
            Vec::new()
        } else {
            self.flavor_pools(flavor)
        };
        let new = NewNetwork {
            name: req.name,
            project_id: Some(caller.project_id.clone()),
            shared: req.shared.unwrap_or(false),
            external: req.external.unwrap_or(false),
            flavor,
            mode: recipe.mode,
            link: recipe.link,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            pools,
        };
        let limit = if caller.is_admin {
            None
        } else {
            self.config.max_networks_per_project
        };
        Ok(self.store.create_network(&new, limit).await?)
    }

    /// Creates an operator's public network (no owning project, shared
    /// and external: servers join it by default and floating IPs come
    /// from it) with its IPv4 subnet; an operator's tool, not an API call.
    /// Idempotent by name: an existing public network of that name is
    /// returned as is.
    pub async fn create_public_network(
        &self,
        name: &str,
        flavor: NetworkFlavor,
        recipe: Option<FlavorRecipe>,
        subnet: SubnetRequest,
    ) -> Result<(Network, Subnet), ServiceError> {
        check_name(name)?;
        let existing = self
            .store
            .list_networks(&NetQuery {
                name: Some(name.to_string()),
                external: Some(true),
                ..NetQuery::default()
            })
            .await?
            .into_iter()
            .find(|n| n.project_id.is_none());
        let (cidr, gateway, pools, dns) = plan_subnet(&subnet).map_err(bad)?;
        let n = match existing {
            Some(n) => n,
            None => {
                let pools = if recipe.is_some() {
                    Vec::new()
                } else {
                    self.flavor_pools(flavor)
                };
                let recipe = match recipe.or_else(|| self.config.flavors.get(&flavor).cloned()) {
                    Some(r) => r,
                    None => {
                        return Err(ServiceError::BadRequest(format!(
                            "Network type {} is not configured on this cloud.",
                            flavor.as_str()
                        )));
                    }
                };
                self.store
                    .create_network(
                        &NewNetwork {
                            name: name.to_string(),
                            project_id: None,
                            shared: true,
                            external: true,
                            flavor,
                            mode: recipe.mode,
                            link: recipe.link,
                            admin_state_up: true,
                            pools,
                        },
                        None,
                    )
                    .await?
            }
        };
        let subnets = self
            .store
            .list_subnets(&NetQuery {
                network_id: Some(n.id.clone()),
                ..NetQuery::default()
            })
            .await?;
        let s = match subnets
            .into_iter()
            .find(|s| s.cidr.version() == cidr.version())
        {
            Some(s) => s,
            None => {
                self.store
                    .create_subnet(&NewSubnet {
                        network_id: n.id.clone(),
                        project_id: None,
                        name: format!("{name}-v{}", cidr.version()),
                        cidr,
                        gateway,
                        enable_dhcp: subnet.enable_dhcp.unwrap_or(true),
                        allocation_pools: pools,
                        dns_nameservers: dns,
                    })
                    .await?
            }
        };
        Ok((n, s))
    }

    /// Forgets which clusters every network was made on (a cluster whose
    /// state was lost, such as a restarted simulator): each is made again
    /// on first use.
    pub async fn forget_backend(&self, backend: BackendId) -> Result<(), ServiceError> {
        for n in self.store.list_networks(&NetQuery::default()).await? {
            self.store
                .set_network_backend(&n.id, backend, false)
                .await?;
        }
        Ok(())
    }

    /// One network the caller may see.
    pub async fn network(&self, caller: &Caller, id: &str) -> Result<Network, ServiceError> {
        match self.store.network(id).await? {
            Some(n) if caller.is_admin || n.visible_to(&caller.project_id) => Ok(n),
            _ => Err(not_found("Network", id)),
        }
    }

    /// Networks the caller may see, matching `q`.
    pub async fn networks(
        &self,
        caller: &Caller,
        q: NetQuery,
    ) -> Result<Vec<Network>, ServiceError> {
        Ok(self.store.list_networks(&Self::scope(caller, q)).await?)
    }

    /// The subnet ids of each of `networks` (for network views): one
    /// read per 500 networks, of their subnets only.
    pub async fn subnet_ids(
        &self,
        networks: &[Network],
    ) -> Result<HashMap<String, Vec<String>>, ServiceError> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for q in subnet_queries(networks) {
            for s in self.store.list_subnets(&q).await? {
                out.entry(s.network_id).or_default().push(s.id);
            }
        }
        Ok(out)
    }

    /// Changes a network (its owner or an operator; `shared` and
    /// `router:external` operators only).
    pub async fn update_network(
        &self,
        caller: &Caller,
        id: &str,
        update: NetworkUpdate,
    ) -> Result<Network, ServiceError> {
        let n = self.network(caller, id).await?;
        if !Self::owns(caller, n.project_id.as_deref()) {
            return Err(not_found("Network", id));
        }
        if (update.shared.is_some() || update.external.is_some()) && !caller.is_admin {
            return Err(ServiceError::Forbidden(
                "(rule:update_network:shared) is disallowed by policy".into(),
            ));
        }
        if let Some(name) = &update.name {
            check_name(name)?;
        }
        Ok(self.store.update_network(id, &update).await?)
    }

    /// Deletes a network (its owner or an operator): 409 while ports or
    /// floating IPs use it; removed from every cluster it was made on
    /// first.
    pub async fn delete_network(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let n = self.network(caller, id).await?;
        if !Self::owns(caller, n.project_id.as_deref()) {
            return Err(not_found("Network", id));
        }
        let in_use = self
            .store
            .list_ports(&NetQuery {
                network_id: Some(id.to_string()),
                limit: Some(1),
                ..NetQuery::default()
            })
            .await?;
        let fips = self
            .store
            .list_floating_ips(&NetQuery {
                network_id: Some(id.to_string()),
                limit: Some(1),
                ..NetQuery::default()
            })
            .await?;
        if !in_use.is_empty() || !fips.is_empty() {
            return Err(ServiceError::Store(StoreError::Integrity(format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
            ))));
        }
        for backend in self.store.network_backends(id).await? {
            self.remove_from_backend(&n, backend).await?;
        }
        Ok(self.store.delete_network(id).await?)
    }

    // ------------------------------------------------------------ subnets

    /// Creates a subnet on a network the caller owns (operators: any).
    pub async fn create_subnet(
        &self,
        caller: &Caller,
        network_id: &str,
        name: String,
        req: SubnetRequest,
    ) -> Result<Subnet, ServiceError> {
        check_name(&name)?;
        let n = self.network(caller, network_id).await?;
        if !Self::owns(caller, n.project_id.as_deref()) {
            return Err(ServiceError::Forbidden(format!(
                "(rule:create_subnet) is disallowed by policy: network {network_id} is not yours"
            )));
        }
        if !self.store.network_backends(network_id).await?.is_empty() {
            return Err(ServiceError::Store(StoreError::Integrity(format!(
                "Network {network_id} is already in use on Ganeti clusters; its subnets cannot change."
            ))));
        }
        let (cidr, gateway, pools, dns) = plan_subnet(&req).map_err(bad)?;
        let new = NewSubnet {
            network_id: network_id.to_string(),
            project_id: n.project_id.clone(),
            name,
            cidr,
            gateway,
            enable_dhcp: req.enable_dhcp.unwrap_or(true),
            allocation_pools: pools,
            dns_nameservers: dns,
        };
        Ok(self.store.create_subnet(&new).await?)
    }

    /// One subnet the caller may see.
    pub async fn subnet(&self, caller: &Caller, id: &str) -> Result<Subnet, ServiceError> {
        let Some(s) = self.store.subnet(id).await? else {
            return Err(not_found("Subnet", id));
        };
        self.network(caller, &s.network_id)
            .await
            .map_err(|_| not_found("Subnet", id))?;
        Ok(s)
    }

    /// Subnets of the networks the caller may see.
    pub async fn subnets(&self, caller: &Caller, q: NetQuery) -> Result<Vec<Subnet>, ServiceError> {
        Ok(self.store.list_subnets(&Self::scope(caller, q)).await?)
    }

    /// Changes a subnet's name, DHCP flag or DNS servers.
    pub async fn update_subnet(
        &self,
        caller: &Caller,
        id: &str,
        update: SubnetUpdate,
    ) -> Result<Subnet, ServiceError> {
        let s = self.subnet(caller, id).await?;
        if !Self::owns(caller, s.project_id.as_deref()) {
            return Err(not_found("Subnet", id));
        }
        if let Some(n) = &update.name {
            check_name(n)?;
        }
        Ok(self.store.update_subnet(id, &update).await?)
    }

    /// Deletes a subnet (409 while addresses of it are held, or while its
    /// network exists on a cluster).
    pub async fn delete_subnet(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let s = self.subnet(caller, id).await?;
        if !Self::owns(caller, s.project_id.as_deref()) {
            return Err(not_found("Subnet", id));
        }
        // Ganeti's network holds the IPv4 subnet: with no address of it
        // held, the network leaves the clusters first (made again, with
        // the next subnet, when a server needs it).
        let on = self.store.network_backends(&s.network_id).await?;
        if !on.is_empty() && s.cidr.version() == 4 {
            if self.store.pool_usage(id).await?.used > 0
                || !self
                    .store
                    .list_ports(&NetQuery {
                        network_id: Some(s.network_id.clone()),
                        limit: Some(1),
                        ..NetQuery::default()
                    })
                    .await?
                    .is_empty()
            {
                return Err(ServiceError::Store(StoreError::Integrity(format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                ))));
            }
            let n = self
                .store
                .network(&s.network_id)
                .await?
                .ok_or_else(|| not_found("Network", &s.network_id))?;
            for b in on {
                self.remove_from_backend(&n, b).await?;
            }
        }
        Ok(self.store.delete_subnet(id).await?)
    }

    // ------------------------------------------------------------ ports

    async fn ip_requests(
        &self,
        network_id: &str,
        fixed: Option<&[FixedIpRequest]>,
    ) -> Result<Vec<IpRequest>, ServiceError> {
        let subnets = self
            .store
            .list_subnets(&NetQuery {
                network_id: Some(network_id.to_string()),
                ..NetQuery::default()
            })
            .await?;
        let Some(fixed) = fixed else {
            return Ok(subnets
                .iter()
                .map(|s| IpRequest {
                    subnet_id: s.id.clone(),
                    ip: None,
                })
                .collect());
        };
        let mut out = Vec::new();
        for f in fixed {
            let subnet = match (&f.subnet_id, f.ip) {
                (Some(sid), _) => subnets.iter().find(|s| &s.id == sid).ok_or_else(|| {
                    ServiceError::BadRequest(format!(
                        "Invalid input for fixed_ips: subnet {sid} is not on network {network_id}."
                    ))
                })?,
                (None, Some(ip)) => subnets
                    .iter()
                    .find(|s| s.cidr.contains(ip))
                    .ok_or_else(|| {
                        ServiceError::BadRequest(format!(
                            "Invalid input for fixed_ips: no subnet of network {network_id} holds {ip}."
                        ))
                    })?,
                (None, None) => {
                    return Err(ServiceError::BadRequest(
                        "Invalid input for fixed_ips: give subnet_id or ip_address.".into(),
                    ));
                }
            };
            if let Some(ip) = f.ip
                && !subnet.cidr.contains(ip)
            {
                return Err(ServiceError::BadRequest(format!(
                    "IP address {ip} is not a valid IP for the specified subnet."
                )));
            }
            out.push(IpRequest {
                subnet_id: subnet.id.clone(),
                ip: f.ip,
            });
        }
        Ok(out)
    }

    /// Creates a port on a network the caller may use; with a `device_id`
    /// the port is attached to that server at once (a NIC added on
    /// Ganeti).
    ///
    /// On an external network, Synnefo's rule: a port whose one fixed IP
    /// is a floating IP of that network, the caller's project's and free,
    /// *carries* it (kamaki's `ip attach`): the port takes no address of
    /// its own, the floating IP is associated with it, and the port's NIC
    /// has the floating address. Another project's floating IP there is a
    /// 403, an associated one a 409; a plain port on an external network
    /// that is not shared is for operators (403).
    pub async fn create_port(
        &self,
        caller: &Caller,
        req: CreatePort,
    ) -> Result<Port, ServiceError> {
        check_name(&req.name)?;
        let n = self.network(caller, &req.network_id).await?;
        let carried = match n.external {
            true => {
                self.floating_to_carry(caller, &n, req.fixed_ips.as_deref())
                    .await?
            }
            false => None,
        };
        if n.external && carried.is_none() && !n.shared && !caller.is_admin {
            return Err(ServiceError::Forbidden(format!(
                "(rule:create_port) is disallowed by policy: a port on external network {} must carry one of your project's free floating IPs of it (fixed_ips: [{{\"ip_address\": <floating IP>}}]).",
                n.id
            )));
        }
        let server = match req.device_id.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => Some(self.caller_server(caller, d).await?),
            None => None,
        };
        let ips = match carried {
            Some(_) => Vec::new(),
            None => self.ip_requests(&n.id, req.fixed_ips.as_deref()).await?,
        };
        // A carrier is bound at once, so the floating IP's history names
        // the server; `attach` below binds a plain port.
        let device = match (&carried, &server) {
            (Some(_), Some(vm)) => (vm.id.to_string(), DEVICE_OWNER_COMPUTE.to_string()),
            _ => (String::new(), String::new()),
        };
        let new = NewPort {
            network_id: n.id.clone(),
            project_id: Some(caller.project_id.clone()),
            user_id: Some(caller.user_id.clone()),
            name: req.name,
            device_id: device.0,
            device_owner: device.1,
            ips,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            mac_prefix: n.port_mac_prefix(&self.config.mac_prefix).to_string(),
            port_limit: self.port_limit(caller),
        };
        let port = self.store.create_port(&new).await?;
        if let Some(f) = &carried
            && let Err(e) = self
                .store
                .associate_floating_ip(
                    &f.id,
                    Some((port.id.clone(), f.address)),
                    &self.config.mac_prefix,
                )
                .await
        {
            self.store.delete_port(&port.id).await?;
            return Err(e.into());
        }
        match server {
            None => Ok(port),
            Some(vm) => match self.attach(&vm, &port).await {
                Ok(p) => Ok(p),
                Err(e) => {
                    self.store.delete_port(&port.id).await?;
                    Err(e)
                }
            },
        }
    }

    /// The floating IP a port on external network `n` is asked to carry:
    /// its one fixed IP, when that is a floating IP of `n` (`None` when
    /// it is not). Another project's: 403; associated already: 409.
    async fn floating_to_carry(
        &self,
        caller: &Caller,
        n: &Network,
        fixed: Option<&[FixedIpRequest]>,
    ) -> Result<Option<FloatingIp>, ServiceError> {
        let Some(
            [
                FixedIpRequest {
                    subnet_id,
                    ip: Some(address),
                },
            ],
        ) = fixed
        else {
            return Ok(None);
        };
        let found = self
            .store
            .list_floating_ips(&NetQuery {
                network_id: Some(n.id.clone()),
                address: Some(*address),
                ..NetQuery::default()
            })
            .await?;
        let Some(f) = found.into_iter().next() else {
            return Ok(None);
        };
        if !Self::owns(caller, Some(&f.project_id)) {
            return Err(ServiceError::Forbidden(format!(
                "Floating IP {address} is not one of your project's: a port on external network {} can only carry your project's floating IPs.",
                n.id
            )));
        }
        if let Some(sid) = subnet_id
            && sid != &f.subnet_id
        {
            return Err(ServiceError::BadRequest(format!(
                "Invalid input for fixed_ips: floating IP {address} is on subnet {}, not {sid}.",
                f.subnet_id
            )));
        }
        if let Some(p) = &f.port_id {
            return Err(ServiceError::Store(StoreError::Integrity(format!(
                "Cannot attach floating IP {address} ({}): it is already associated with port {p}.",
                f.id
            ))));
        }
        Ok(Some(f))
    }

    async fn caller_server(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let nf = || ServiceError::NotFound(format!("Instance {id} could not be found."));
        let vm_id: VmId = id.parse().map_err(|_| nf())?;
        match self.store.vm(vm_id).await? {
            Some(vm)
                if (vm.project_id == caller.project_id || caller.is_admin)
                    && !vm.state.deleted() =>
            {
                Ok(vm)
            }
            _ => Err(nf()),
        }
    }

    /// One port the caller may see.
    pub async fn port(&self, caller: &Caller, id: &str) -> Result<Port, ServiceError> {
        match self.store.port(id).await? {
            Some(p) if Self::owns(caller, p.project_id.as_deref()) => Ok(p),
            _ => Err(not_found("Port", id)),
        }
    }

    /// The caller's ports matching `q`.
    pub async fn ports(&self, caller: &Caller, q: NetQuery) -> Result<Vec<Port>, ServiceError> {
        Ok(self.store.list_ports(&Self::scope(caller, q)).await?)
    }

    /// Changes a port's name or `admin_state_up`.
    pub async fn update_port(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<String>,
        admin_state_up: Option<bool>,
    ) -> Result<Port, ServiceError> {
        self.port(caller, id).await?;
        if let Some(n) = &name {
            check_name(n)?;
        }
        let update = PortUpdate {
            name,
            admin_state_up,
            ..PortUpdate::default()
        };
        Ok(self.store.update_port(id, &update).await?)
    }

    /// Deletes a port; a port attached to a server is detached from it on
    /// Ganeti first (its NIC removed), then its addresses go back.
    pub async fn delete_port(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let p = self.port(caller, id).await?;
        self.remove_port(&p).await
    }

    /// [`Self::delete_port`] of a port already looked up.
    async fn remove_port(&self, p: &Port) -> Result<(), ServiceError> {
        let id = p.id.as_str();
        if let Some(vm_id) = p.server()
            && let Some(vm) = self.store.vm(vm_id).await?
            && !vm.state.deleted()
            && let Some(backend) = vm.backend_id
        {
            self.touch_port(&p.id).await?;
            for f in self.floating_of_port(&p.id).await? {
                // a carried floating IP is on the port's own NIC
                if f.network_id != p.network_id {
                    self.detach_floating(&vm, &f).await?;
                }
            }
            let instance = InstanceName::new(&self.prefix, vm.id).to_string();
            self.run(backend, |g| {
                let instance = instance.clone();
                let name = p.ganeti_name();
                async move { g.remove_nic(backend, &instance, &name).await }
            })
            .await
            .or_else(ignore_missing_nic)?;
        }
        Ok(self.store.delete_port(id).await?)
    }

    async fn floating_of_port(&self, port_id: &str) -> Result<Vec<FloatingIp>, ServiceError> {
        Ok(self
            .store
            .list_floating_ips(&NetQuery {
                port_id: Some(port_id.to_string()),
                ..NetQuery::default()
            })
            .await?)
    }

    /// The ports of servers (for `addresses`), per server.
    pub async fn ports_of(
        &self,
        servers: &[VmId],
    ) -> Result<HashMap<VmId, Vec<Port>>, ServiceError> {
        Ok(self.store.ports_of(servers).await?)
    }

    /// The floating IPs associated with `ports`, per port id (one read
    /// per 500 ports).
    pub async fn floating_ips_of(
        &self,
        ports: &[&Port],
    ) -> Result<HashMap<String, Vec<FloatingIp>>, ServiceError> {
        let mut out: HashMap<String, Vec<FloatingIp>> = HashMap::new();
        for chunk in ports.chunks(500) {
            if chunk.is_empty() {
                continue;
            }
            let q = NetQuery {
                port_ids: Some(chunk.iter().map(|p| p.id.clone()).collect()),
                ..NetQuery::default()
            };
            for f in self.store.list_floating_ips(&q).await? {
                if let Some(p) = f.port_id.clone() {
                    out.entry(p).or_default().push(f);
                }
            }
        }
        Ok(out)
    }

    /// What servers show as their addresses: per server, each port's
    /// addresses under its network's name, and the floating IPs
    /// associated with it; servers without ports are absent.
    pub async fn addresses_of(
        &self,
        servers: &[VmId],
    ) -> Result<HashMap<VmId, Vec<ServerAddress>>, ServiceError> {
        let ports = self.store.ports_of(servers).await?;
        if ports.is_empty() {
            return Ok(HashMap::new());
        }
        let all: Vec<&Port> = ports.values().flatten().collect();
        let fips = self.floating_ips_of(&all).await?;
        let mut net_ids: Vec<String> = all.iter().map(|p| p.network_id.clone()).collect();
        net_ids.sort();
        net_ids.dedup();
        let names: HashMap<String, String> = self
            .store
            .list_networks(&NetQuery {
                ids: Some(net_ids),
                ..NetQuery::default()
            })
            .await?
            .into_iter()
            .map(|n| {
                let name = if n.name.is_empty() {
                    n.id.clone()
                } else {
                    n.name
                };
                (n.id, name)
            })
            .collect();
        let mut out = HashMap::new();
        for (vm, ps) in ports {
            let mut v = Vec::new();
            for p in ps {
                let network = names
                    .get(&p.network_id)
                    .cloned()
                    .unwrap_or_else(|| p.network_id.clone());
                for f in &p.fixed_ips {
                    v.push(ServerAddress {
                        network: network.clone(),
                        network_id: p.network_id.clone(),
                        port_id: p.id.clone(),
                        ip: f.ip,
                        mac: p.mac.clone(),
                        floating: false,
                    });
                }
                for f in fips.get(&p.id).into_iter().flatten() {
                    v.push(ServerAddress {
                        network: network.clone(),
                        network_id: p.network_id.clone(),
                        port_id: p.id.clone(),
                        ip: f.address,
                        mac: p.mac.clone(),
                        floating: true,
                    });
                }
            }
            out.insert(vm, v);
        }
        Ok(out)
    }

    // ------------------------------------------------------------ servers

    /// Validates a server create's `networks` before anything is stored:
    /// the NICs it will get, in order.
    pub async fn plan_server_nics(
        &self,
        caller: &Caller,
        req: &ServerNetworks,
    ) -> Result<Option<Vec<NicPlan>>, ServiceError> {
        match req {
            ServerNetworks::None => Ok(Some(Vec::new())),
            ServerNetworks::Auto => {
                let public = self.public_networks().await?;
                Ok(public.into_iter().next().map(|n| {
                    vec![NicPlan::New {
                        network: n,
                        fixed_ip: None,
                    }]
                }))
            }
            ServerNetworks::List(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(pid) = &item.port_id {
                        let p = self.port(caller, pid).await.map_err(|_| {
                            ServiceError::BadRequest(format!("Port {pid} could not be found."))
                        })?;
                        if !p.device_id.is_empty() {
                            return Err(ServiceError::Store(StoreError::Integrity(format!(
                                "Port {pid} is still in use."
                            ))));
                        }
                        out.push(NicPlan::Existing(p));
                        continue;
                    }
                    let Some(nid) = &item.network_id else {
                        return Err(ServiceError::BadRequest(
                            "Invalid input for networks: give uuid or port.".into(),
                        ));
                    };
                    let n = self.network(caller, nid).await.map_err(|_| {
                        ServiceError::BadRequest(format!("Network {nid} could not be found."))
                    })?;
                    // a fixed IP that is one of the caller's free floating
                    // IPs of an external network: the NIC carries it
                    let carried = match (n.external, item.fixed_ip) {
                        (true, Some(ip)) => {
                            let want = [FixedIpRequest {
                                subnet_id: None,
                                ip: Some(ip),
                            }];
                            self.floating_to_carry(caller, &n, Some(&want))
                                .await?
                                .is_some()
                        }
                        _ => false,
                    };
                    if n.external
                        && !carried
                        && !n.shared
                        && !caller.is_admin
                        && !self.is_public(&n)
                    {
                        return Err(ServiceError::Forbidden(format!(
                            "Network {nid} is external: attach a floating IP instead."
                        )));
                    }
                    out.push(NicPlan::New {
                        network: n,
                        fixed_ip: item.fixed_ip,
                    });
                }
                Ok(Some(out))
            }
        }
    }

    fn is_public(&self, n: &Network) -> bool {
        n.project_id.is_none() || n.shared
    }

    /// Public networks new servers join by default: shared networks with
    /// an IPv4 subnet (Synnefo's `SNF:ANY_PUBLIC`), oldest first.
    pub async fn public_networks(&self) -> Result<Vec<Network>, ServiceError> {
        let mut nets = self
            .store
            .list_networks(&NetQuery {
                shared: Some(true),
                ..NetQuery::default()
            })
            .await?;
        nets.retain(|n| n.admin_state_up);
        nets.sort_by_key(|n| n.created);
        let mut out = Vec::new();
        for n in nets {
            let subnets = self
                .store
                .list_subnets(&NetQuery {
                    network_id: Some(n.id.clone()),
                    ..NetQuery::default()
                })
                .await?;
            if subnets.iter().any(|s| s.cidr.version() == 4) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Creates (or binds) the ports a stored server's plan asks for. On
    /// failure, the ports made so far are deleted again.
    pub async fn bind_server_ports(
        &self,
        caller: &Caller,
        vm: &Vm,
        plan: &[NicPlan],
    ) -> Result<Vec<Port>, ServiceError> {
        let mut made: Vec<Port> = Vec::new();
        for p in plan {
            let r = match p {
                NicPlan::Existing(port) => self
                    .store
                    .update_port(
                        &port.id,
                        &PortUpdate {
                            device: Some((vm.id.to_string(), DEVICE_OWNER_COMPUTE.into())),
                            ..PortUpdate::default()
                        },
                    )
                    .await
                    .map_err(ServiceError::from),
                NicPlan::New { network, fixed_ip } => {
                    self.new_server_port(caller, vm, network, *fixed_ip).await
                }
            };
            match r {
                Ok(port) => made.push(port),
                Err(e) => {
                    for (i, port) in made.iter().enumerate() {
                        match &plan[i] {
                            NicPlan::Existing(_) => {
                                let _ = self
                                    .store
                                    .update_port(
                                        &port.id,
                                        &PortUpdate {
                                            device: Some((String::new(), String::new())),
                                            status: Some(crate::network::PortStatus::Down),
                                            ..PortUpdate::default()
                                        },
                                    )
                                    .await;
                            }
                            NicPlan::New { .. } => {
                                let _ = self.store.delete_port(&port.id).await;
                            }
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// A stored server's new port on `network` (with `fixed_ip`; one of
    /// the caller's free floating IPs of an external network is carried,
    /// as [`Self::create_port`] does).
    async fn new_server_port(
        &self,
        caller: &Caller,
        vm: &Vm,
        network: &Network,
        fixed_ip: Option<IpAddr>,
    ) -> Result<Port, ServiceError> {
        let fixed = fixed_ip.map(|ip| {
            vec![FixedIpRequest {
                subnet_id: None,
                ip: Some(ip),
            }]
        });
        let carried = match network.external {
            true => {
                self.floating_to_carry(caller, network, fixed.as_deref())
                    .await?
            }
            false => None,
        };
        let ips = match carried {
            Some(_) => Vec::new(),
            None => self.ip_requests(&network.id, fixed.as_deref()).await?,
        };
        let port = self
            .store
            .create_port(&NewPort {
                network_id: network.id.clone(),
                project_id: Some(vm.project_id.clone()),
                user_id: Some(caller.user_id.clone()),
                name: String::new(),
                device_id: vm.id.to_string(),
                device_owner: DEVICE_OWNER_COMPUTE.into(),
                ips,
                admin_state_up: true,
                mac_prefix: network.port_mac_prefix(&self.config.mac_prefix).to_string(),
                port_limit: self.port_limit(caller),
            })
            .await?;
        if let Some(f) = carried
            && let Err(e) = self
                .store
                .associate_floating_ip(
                    &f.id,
                    Some((port.id.clone(), f.address)),
                    &self.config.mac_prefix,
                )
                .await
        {
            self.store.delete_port(&port.id).await?;
            return Err(e.into());
        }
        Ok(port)
    }

    /// The Ganeti NICs of `ports` on `backend`, making each network exist
    /// there first.
    pub async fn nic_specs(
        &self,
        backend: BackendId,
        ports: &[Port],
    ) -> Result<Vec<NicSpec>, ServiceError> {
        let mut out = Vec::new();
        for p in ports {
            out.push(self.nic_spec(backend, p).await?);
        }
        Ok(out)
    }

    async fn nic_spec(&self, backend: BackendId, p: &Port) -> Result<NicSpec, ServiceError> {
        let n = self
            .store
            .network(&p.network_id)
            .await?
            .ok_or_else(|| not_found("Network", &p.network_id))?;
        let on_ganeti = self.ensure_on_backend(&n, backend).await?;
        let ip = match p.fixed_ips.iter().find(|f| f.ip.is_ipv4()) {
            Some(f) => Some(f.ip.to_string()),
            // a port carrying a floating IP of its network has its address
            None => self
                .floating_of_port(&p.id)
                .await?
                .into_iter()
                .find(|f| f.network_id == p.network_id)
                .map(|f| f.address.to_string()),
        };
        Ok(NicSpec {
            network: on_ganeti.then(|| n.ganeti_name()),
            mode: (!on_ganeti).then(|| n.mode.clone()),
            link: (!on_ganeti).then(|| n.link.clone()),
            ip,
            mac: Some(p.mac.clone()),
            name: Some(p.ganeti_name()),
        })
    }

    /// Makes network `n` exist on `backend` (created, connected to every
    /// node group, jobs awaited) unless it does already. False when `n`
    /// has no IPv4 subnet: its NICs are plain mode/link NICs then.
    pub async fn ensure_on_backend(
        &self,
        n: &Network,
        backend: BackendId,
    ) -> Result<bool, ServiceError> {
        let subnets = self
            .store
            .list_subnets(&NetQuery {
                network_id: Some(n.id.clone()),
                ..NetQuery::default()
            })
            .await?;
        let Some(v4) = subnets.iter().find(|s| s.cidr.version() == 4) else {
            return Ok(false);
        };
        if self.store.network_backends(&n.id).await?.contains(&backend) {
            return Ok(true);
        }
        let v6 = subnets.iter().find(|s| s.cidr.version() == 6);
        let spec = NetworkSpec {
            backend,
            name: n.ganeti_name(),
            network: v4.cidr.to_string(),
            gateway: v4.gateway.map(|g| g.to_string()),
            network6: v6.map(|s| s.cidr.to_string()),
            gateway6: v6.and_then(|s| s.gateway).map(|g| g.to_string()),
            mac_prefix: n.mac_prefix.clone(),
            tags: vec![
                format!("synnefo:network:{}", n.id),
                format!("synnefo:network:flavor:{}", n.flavor.as_str()),
            ],
        };
        let name = spec.name.clone();
        let created = self
            .run(backend, |g| {
                let spec = spec.clone();
                async move { g.create_network(&spec).await }
            })
            .await;
        if let Err(e) = created {
            // Made before (a crash between the job and our record, or a
            // concurrent create): fine if Ganeti lists it.
            let listed = self.ganeti.list_networks(backend).await?;
            if !listed.iter().any(|l| l.name == name) {
                return Err(e);
            }
        }
        let link = NetworkLink {
            mode: n.mode.clone(),
            link: n.link.clone(),
            vlan: None,
        };
        let jobs = self.ganeti.connect_network(backend, &name, &link).await?;
        for j in jobs {
            self.await_job(backend, j).await?;
        }
        self.store.set_network_backend(&n.id, backend, true).await?;
        Ok(true)
    }

    async fn remove_from_backend(
        &self,
        n: &Network,
        backend: BackendId,
    ) -> Result<(), ServiceError> {
        let name = n.ganeti_name();
        match self.ganeti.disconnect_network(backend, &name).await {
            Ok(jobs) => {
                for j in jobs {
                    self.await_job(backend, j).await?;
                }
            }
            Err(BackendError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match self
            .run(backend, |g| {
                let name = name.clone();
                async move { g.remove_network(backend, &name).await }
            })
            .await
        {
            Ok(()) => {}
            Err(e) => {
                let listed = self.ganeti.list_networks(backend).await?;
                if listed.iter().any(|l| l.name == name) {
                    return Err(e);
                }
            }
        }
        self.store
            .set_network_backend(&n.id, backend, false)
            .await?;
        Ok(())
    }

    /// Submits a job and waits for it to succeed.
    async fn run<F, Fut>(&self, backend: BackendId, submit: F) -> Result<(), ServiceError>
    where
        F: FnOnce(Arc<dyn GanetiBackend>) -> Fut,
        Fut: std::future::Future<Output = Result<JobId, BackendError>>,
    {
        let job = submit(self.ganeti.clone()).await?;
        self.await_job(backend, job).await
    }

    async fn await_job(&self, backend: BackendId, job: JobId) -> Result<(), ServiceError> {
        let deadline = tokio::time::Instant::now() + self.config.job_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let info = self
                .ganeti
                .wait_for_job(backend, job, left.min(Duration::from_secs(30)))
                .await?;
            match info.status {
                JobStatus::Success => return Ok(()),
                JobStatus::Error | JobStatus::Canceled => {
                    return Err(BackendError::JobFailed {
                        job_id: job.0,
                        message: info.error_message().unwrap_or_else(|| "job failed".into()),
                        error: info.error().cloned(),
                    }
                    .into());
                }
                _ if left.is_zero() => {
                    return Err(BackendError::Unavailable(format!(
                        "Ganeti job {job} did not finish in {:?}",
                        self.config.job_timeout
                    ))
                    .into());
                }
                _ => {}
            }
        }
    }

    /// Attaches a stored, unbound port to a server: binds it, adds the NIC
    /// on Ganeti (awaited). On failure the port is unbound again.
    async fn attach(&self, vm: &Vm, port: &Port) -> Result<Port, ServiceError> {
        let backend = vm.backend_id.ok_or_else(|| {
            ServiceError::Store(StoreError::Integrity(format!(
                "server {} has no cluster",
                vm.id
            )))
        })?;
        let bound = self
            .store
            .update_port(
                &port.id,
                &PortUpdate {
                    device: Some((vm.id.to_string(), DEVICE_OWNER_COMPUTE.into())),
                    status: Some(crate::network::PortStatus::Build),
                    ..PortUpdate::default()
                },
            )
            .await?;
        let result = async {
            let spec = self.nic_spec(backend, &bound).await?;
            let instance = InstanceName::new(&self.prefix, vm.id).to_string();
            self.run(backend, |g| async move {
                g.add_nic(backend, &instance, &spec).await
            })
            .await
        }
        .await;
        match result {
            Ok(()) => Ok(self
                .store
                .update_port(
                    &port.id,
                    &PortUpdate {
                        status: Some(crate::network::PortStatus::Active),
                        ..PortUpdate::default()
                    },
                )
                .await?),
            Err(e) => {
                self.store
                    .update_port(
                        &port.id,
                        &PortUpdate {
                            device: Some((String::new(), String::new())),
                            status: Some(crate::network::PortStatus::Down),
                            ..PortUpdate::default()
                        },
                    )
                    .await?;
                Err(e)
            }
        }
    }

    /// Attaches a new port on `network_id` to a server (Nova's
    /// `os-interface` create).
    pub async fn attach_interface(
        &self,
        caller: &Caller,
        server: &str,
        network_id: Option<&str>,
        port_id: Option<&str>,
        fixed_ip: Option<IpAddr>,
    ) -> Result<Port, ServiceError> {
        let vm = self.caller_server(caller, server).await?;
        match (port_id, network_id) {
            (Some(pid), _) => {
                let p = self.port(caller, pid).await?;
                if !p.device_id.is_empty() {
                    return Err(ServiceError::Store(StoreError::Integrity(format!(
                        "Port {pid} is still in use."
                    ))));
                }
                self.attach(&vm, &p).await
            }
            (None, Some(nid)) => {
                self.create_port(
                    caller,
                    CreatePort {
                        network_id: nid.to_string(),
                        fixed_ips: fixed_ip.map(|ip| {
                            vec![FixedIpRequest {
                                subnet_id: None,
                                ip: Some(ip),
                            }]
                        }),
                        device_id: Some(vm.id.to_string()),
                        ..CreatePort::default()
                    },
                )
                .await
            }
            (None, None) => Err(ServiceError::BadRequest("Give net_id or port_id.".into())),
        }
    }

    /// The server's ports (Nova's `os-interface` list).
    pub async fn server_ports(
        &self,
        caller: &Caller,
        server: &str,
    ) -> Result<Vec<Port>, ServiceError> {
        let vm = self.caller_server(caller, server).await?;
        Ok(self
            .store
            .ports_of(&[vm.id])
            .await?
            .remove(&vm.id)
            .unwrap_or_default())
    }

    /// Detaches one of a server's ports (Nova's `os-interface` delete):
    /// the NIC removed on Ganeti, the port deleted.
    pub async fn detach_interface(
        &self,
        caller: &Caller,
        server: &str,
        port_id: &str,
    ) -> Result<(), ServiceError> {
        let vm = self.caller_server(caller, server).await?;
        let p = self.port(caller, port_id).await?;
        if p.server() != Some(vm.id) {
            return Err(ServiceError::NotFound(format!(
                "Port {port_id} is not attached to server {server}."
            )));
        }
        self.delete_port(caller, port_id).await
    }

    /// Nova's `addFloatingIp` (before 2.44): the caller's floating IP with
    /// `address` onto the server's port that holds `fixed` (else the first
    /// port that can take it).
    pub async fn add_floating_ip(
        &self,
        caller: &Caller,
        server: &str,
        address: IpAddr,
        fixed: Option<IpAddr>,
    ) -> Result<FloatingIp, ServiceError> {
        let f = self.floating_by_address(caller, address).await?;
        let ports = self.server_ports(caller, server).await?;
        let candidates: Vec<&Port> = match fixed {
            Some(ip) => ports
                .iter()
                .filter(|p| p.fixed_ips.iter().any(|x| x.ip == ip))
                .collect(),
            None => ports.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(ServiceError::BadRequest(match fixed {
                Some(ip) => format!("Server {server} has no port with fixed IP {ip}."),
                None => format!("Server {server} has no port to associate a floating IP with."),
            }));
        }
        let mut last = None;
        for p in candidates {
            match self.associate(caller, &f.id, Some(&p.id), fixed).await {
                Ok(done) => return Ok(done),
                Err(ServiceError::NotFound(m)) => last = Some(ServiceError::NotFound(m)),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| not_found("Floating IP", &address.to_string())))
    }

    /// Nova's `removeFloatingIp` (before 2.44).
    pub async fn remove_floating_ip(
        &self,
        caller: &Caller,
        server: &str,
        address: IpAddr,
    ) -> Result<(), ServiceError> {
        let vm = self.caller_server(caller, server).await?;
        let f = self.floating_by_address(caller, address).await?;
        let on_server = match &f.port_id {
            Some(p) => self
                .store
                .port(p)
                .await?
                .is_some_and(|p| p.server() == Some(vm.id)),
            None => false,
        };
        if !on_server {
            return Err(ServiceError::Store(StoreError::Integrity(format!(
                "Floating IP {address} is not associated with instance {server}."
            ))));
        }
        self.associate(caller, &f.id, None, None).await?;
        Ok(())
    }

    async fn floating_by_address(
        &self,
        caller: &Caller,
        address: IpAddr,
    ) -> Result<FloatingIp, ServiceError> {
        self.floating_ips(
            caller,
            NetQuery {
                address: Some(address),
                ..NetQuery::default()
            },
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ServiceError::NotFound(format!("floating IP not found for address {address}"))
        })
    }

    // ------------------------------------------------------------ floating IPs

    /// Allocates a floating IP from an external network (the first one
    /// when none is named), optionally associated with a port at once.
    pub async fn create_floating_ip(
        &self,
        caller: &Caller,
        network_id: Option<&str>,
        address: Option<IpAddr>,
        port_id: Option<&str>,
        description: &str,
    ) -> Result<FloatingIp, ServiceError> {
        let network = match network_id {
            Some(id) => {
                let n = self.network(caller, id).await?;
                if !n.external {
                    return Err(ServiceError::BadRequest(format!(
                        "Network {id} is not a valid external network."
                    )));
                }
                n
            }
            None => self
                .store
                .list_networks(&NetQuery {
                    external: Some(true),
                    ..NetQuery::default()
                })
                .await?
                .into_iter()
                .min_by_key(|n| n.created)
                .ok_or_else(|| {
                    ServiceError::BadRequest(
                        "There is no external network for floating IPs.".into(),
                    )
                })?,
        };
        if address.is_some() && !caller.is_admin {
            return Err(ServiceError::Forbidden(
                "(rule:create_floatingip:floating_ip_address) is disallowed by policy".into(),
            ));
        }
        let limit = if caller.is_admin {
            None
        } else {
            self.config.max_floating_ips_per_project
        };
        let f = self
            .store
            .create_floating_ip(
                &caller.project_id,
                Some(caller.user_id.clone()),
                &network.id,
                address,
                description,
                limit,
            )
            .await?;
        match port_id {
            None => Ok(f),
            Some(p) => match self.associate(caller, &f.id, Some(p), None).await {
                Ok(f) => Ok(f),
                Err(e) => {
                    self.store.delete_floating_ip(&f.id).await?;
                    Err(e)
                }
            },
        }
    }

    /// One of the caller's floating IPs.
    pub async fn floating_ip(&self, caller: &Caller, id: &str) -> Result<FloatingIp, ServiceError> {
        match self.store.floating_ip(id).await? {
            Some(f) if Self::owns(caller, Some(&f.project_id)) => Ok(f),
            _ => Err(not_found("Floating IP", id)),
        }
    }

    /// The caller's floating IPs matching `q`.
    pub async fn floating_ips(
        &self,
        caller: &Caller,
        q: NetQuery,
    ) -> Result<Vec<FloatingIp>, ServiceError> {
        Ok(self
            .store
            .list_floating_ips(&Self::scope(caller, q))
            .await?)
    }

    /// Associates a floating IP with a port of a server (`Some`), giving
    /// the server a NIC on the floating IP's network carrying the address,
    /// or disassociates it (`None`), removing that NIC (a port that
    /// carries it, see [`Self::create_port`], is deleted). A port that is
    /// not the caller's or not attached to a server is 404 (the
    /// `openstack` client then tries the server's next port).
    pub async fn associate(
        &self,
        caller: &Caller,
        id: &str,
        port_id: Option<&str>,
        fixed_ip: Option<IpAddr>,
    ) -> Result<FloatingIp, ServiceError> {
        let f = self.floating_ip(caller, id).await?;
        let Some(pid) = port_id else {
            if let Some(old) = &f.port_id
                && let Some(p) = self.store.port(old).await?
                && p.network_id == f.network_id
            {
                // The port carries it (Synnefo's floating IP NIC): the
                // port goes, its NIC removed, and the address is free.
                self.remove_port(&p).await?;
                return self.floating_ip(caller, id).await;
            }
            if let Some(old) = &f.port_id
                && let Some(p) = self.store.port(old).await?
                && let Some(vm_id) = p.server()
                && let Some(vm) = self.store.vm(vm_id).await?
                && !vm.state.deleted()
            {
                self.detach_floating(&vm, &f).await?;
            }
            return Ok(self
                .store
                .associate_floating_ip(id, None, &self.config.mac_prefix)
                .await?);
        };
        if f.port_id.as_deref() == Some(pid) {
            return Ok(f);
        }
        if let Some(other) = &f.port_id {
            return Err(ServiceError::Store(StoreError::Integrity(format!(
                "Cannot associate floating IP {} ({id}) with port {pid}: it is already associated with port {other}.",
                f.address
            ))));
        }
        let p = self.port(caller, pid).await?;
        if p.network_id == f.network_id {
            // Neutron: the floating IP's network is not reachable from a
            // port on it (the client then tries the server's next port).
            return Err(ServiceError::NotFound(format!(
                "External network {} is not reachable from port {pid}: the port is on it.",
                f.network_id
            )));
        }
        let vm = match p.server() {
            Some(v) => self
                .caller_server(caller, &v.to_string())
                .await
                .map_err(|_| not_found("Port", pid))?,
            None => {
                return Err(ServiceError::NotFound(format!(
                    "External network {} is not reachable from port {pid}: it is not attached to a server.",
                    f.network_id
                )));
            }
        };
        let fixed = match fixed_ip {
            Some(ip) if p.fixed_ips.iter().any(|x| x.ip == ip) => ip,
            Some(ip) => {
                return Err(ServiceError::BadRequest(format!(
                    "Port {pid} does not have fixed ip {ip}."
                )));
            }
            None => p
                .fixed_ips
                .iter()
                .find(|x| x.ip.is_ipv4())
                .map(|x| x.ip)
                .unwrap_or(f.address),
        };
        // The NIC carrying it is on the floating IP's network: its MAC
        // carries that network's prefix.
        let prefix = match self.store.network(&f.network_id).await? {
            Some(n) => n.port_mac_prefix(&self.config.mac_prefix).to_string(),
            None => self.config.mac_prefix.clone(),
        };
        let assoc = self
            .store
            .associate_floating_ip(id, Some((pid.to_string(), fixed)), &prefix)
            .await?;
        let backend = vm.backend_id.ok_or_else(|| not_found("Port", pid))?;
        let result = async {
            let n = self
                .store
                .network(&assoc.network_id)
                .await?
                .ok_or_else(|| not_found("Network", &assoc.network_id))?;
            let on_ganeti = self.ensure_on_backend(&n, backend).await?;
            let spec = NicSpec {
                network: on_ganeti.then(|| n.ganeti_name()),
                mode: (!on_ganeti).then(|| n.mode.clone()),
                link: (!on_ganeti).then(|| n.link.clone()),
                ip: Some(assoc.address.to_string()),
                mac: assoc.mac.clone(),
                name: Some(assoc.ganeti_nic_name()),
            };
            let instance = InstanceName::new(&self.prefix, vm.id).to_string();
            self.run(backend, |g| async move {
                g.add_nic(backend, &instance, &spec).await
            })
            .await
        }
        .await;
        match result {
            Ok(()) => Ok(assoc),
            Err(e) => {
                self.store
                    .associate_floating_ip(id, None, &self.config.mac_prefix)
                    .await?;
                Err(e)
            }
        }
    }

    async fn detach_floating(&self, vm: &Vm, f: &FloatingIp) -> Result<(), ServiceError> {
        let Some(backend) = vm.backend_id else {
            return Ok(());
        };
        if let Some(p) = &f.port_id {
            self.touch_port(p).await?;
        }
        let instance = InstanceName::new(&self.prefix, vm.id).to_string();
        let name = f.ganeti_nic_name();
        self.run(backend, |g| async move {
            g.remove_nic(backend, &instance, &name).await
        })
        .await
        .or_else(ignore_missing_nic)
    }

    /// Releases a floating IP (disassociated first).
    pub async fn delete_floating_ip(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        let f = self.floating_ip(caller, id).await?;
        if f.port_id.is_some() {
            self.associate(caller, id, None, None).await?;
        }
        Ok(self.store.delete_floating_ip(id).await?)
    }
}

/// The subnet reads of [`Networking::subnet_ids`]: the subnets of
/// `networks` only, 500 networks a read.
fn subnet_queries(networks: &[Network]) -> Vec<NetQuery> {
    networks
        .chunks(500)
        .map(|chunk| NetQuery {
            network_ids: Some(chunk.iter().map(|n| n.id.clone()).collect()),
            ..NetQuery::default()
        })
        .collect()
}
