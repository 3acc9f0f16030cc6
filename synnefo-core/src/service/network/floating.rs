//! Floating IPs: allocation from a public network's pool, association with
//! a port (Neutron) or a server (Nova's `addFloatingIp`, Cyclades' `ip
//! attach`), and release.

use super::*;

impl Networking {
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

    pub(super) async fn floating_by_address(
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

    pub(super) async fn detach_floating(
        &self,
        vm: &Vm,
        f: &FloatingIp,
    ) -> Result<(), ServiceError> {
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
