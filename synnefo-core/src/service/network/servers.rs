//! Servers' NICs: a create's `networks` planned and bound to ports, the
//! Ganeti side (a network made on a cluster when a server there first needs
//! it, NIC jobs awaited), and `os-interface` attach/detach.

use super::*;

impl Networking {
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

    pub(super) fn is_public(&self, n: &Network) -> bool {
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
    pub(super) async fn new_server_port(
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

    pub(super) async fn nic_spec(
        &self,
        backend: BackendId,
        p: &Port,
    ) -> Result<NicSpec, ServiceError> {
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

    pub(super) async fn remove_from_backend(
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
    pub(super) async fn run<F, Fut>(
        &self,
        backend: BackendId,
        submit: F,
    ) -> Result<(), ServiceError>
    where
        F: FnOnce(Arc<dyn GanetiBackend>) -> Fut,
        Fut: std::future::Future<Output = Result<JobId, BackendError>>,
    {
        let job = submit(self.ganeti.clone()).await?;
        self.await_job(backend, job).await
    }

    pub(super) async fn await_job(
        &self,
        backend: BackendId,
        job: JobId,
    ) -> Result<(), ServiceError> {
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
    pub(super) async fn attach(&self, vm: &Vm, port: &Port) -> Result<Port, ServiceError> {
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
}
