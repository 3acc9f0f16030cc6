//! Ports: addresses requested and allocated, a port's floating IPs, and
//! the addresses a server shows (Neutron's ports, Nova's `addresses`).

use super::*;

impl Networking {
    // ------------------------------------------------------------ ports

    pub(super) async fn ip_requests(
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
    pub(super) async fn floating_to_carry(
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

    pub(super) async fn caller_server(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vm, ServiceError> {
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
    pub(super) async fn remove_port(&self, p: &Port) -> Result<(), ServiceError> {
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

    pub(super) async fn floating_of_port(
        &self,
        port_id: &str,
    ) -> Result<Vec<FloatingIp>, ServiceError> {
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
}
