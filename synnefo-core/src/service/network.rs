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

mod floating;
mod ports;
mod reconcile;
mod servers;
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
