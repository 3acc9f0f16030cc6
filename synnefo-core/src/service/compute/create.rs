//! Creating a server: validate against the catalog, reserve quota, place,
//! submit to Ganeti.

use std::collections::BTreeMap;

use super::actions::record_job;
use super::{
    AUTH_KEYS_OSPARAM, Caller, Compute, CreateServer, CreatedServer, PASSWORD_OSPARAM,
    PERSONALITY_OSPARAM, PersonalityFile, generate_password, image_visible, ref_id,
    validate_metadata, validate_server_name,
};
use crate::error::{BackendError, ServiceError, StoreError};
use crate::ids::{BackendId, InstanceName};
use crate::model::{ActionLog, Backend, Flavor, Image, Keypair, NewVm, NewVmAttrs, Vm};
use crate::ports::InstanceSpec;
use crate::service::network::NicPlan;
use crate::service::{VmChange, modify_vm};
use crate::state::{self, Action};

impl Compute {
    /// Creates a server: validate, reserve quota, place, submit to Ganeti.
    pub async fn create_server(
        &self,
        caller: &Caller,
        req: CreateServer,
    ) -> Result<CreatedServer, ServiceError> {
        validate_server_name(&req.name)?;
        let personality = self.personality_osparam(&req.personality)?;
        let user_data = self.user_data(req.user_data.as_deref())?;
        let (flavor, image) = self.validate_create(caller, &req).await?;
        let keys = self.resolve_key_names(caller, &req.key_names).await?;
        let nics = self
            .networking()
            .plan_server_nics(caller, &req.networks)
            .await?;
        let admin_pass = match req.admin_pass {
            Some(p) if !p.is_empty() => p,
            _ => generate_password(),
        };
        let backend = self.place(&flavor).await?;

        let quota = self.store.quota(&caller.project_id).await?;
        let attrs = NewVmAttrs {
            access: Default::default(),
            key_names: keys.iter().map(|k| k.name.clone()).collect(),
            user_data: user_data.clone(),
        };
        let new = NewVm {
            user_id: caller.user_id.clone(),
            project_id: caller.project_id.clone(),
            name: req.name,
            flavor: flavor.clone(),
            image_id: image.id.clone(),
            backend_id: Some(backend),
            metadata: req.metadata,
            request_id: caller.request_id.clone(),
        };
        let vm = self
            .store
            .create_vms_with(std::slice::from_ref(&new), &attrs, quota)
            .await
            .map_err(quota_error)?
            .pop()
            .ok_or_else(|| StoreError::Database("create stored no VM".into()))?;
        let build = Build {
            flavor: &flavor,
            image: &image,
            keys: &keys,
            nics: nics.as_deref(),
            personality: personality.as_deref(),
            user_data: user_data.as_deref(),
        };
        self.submit_create(vm, build, admin_pass, caller).await
    }

    /// Checks the files to inject and renders snf-image's
    /// `img_personality` (`None` when there are none): at most
    /// `api.max_personality` files, each an absolute path of at most 255
    /// bytes with base64 contents of at most `api.max_personality_bytes`
    /// decoded, and a mode within 0o777. Too many or too large: 403
    /// (Nova's "Personality file limit exceeded", Synnefo's over-limit);
    /// malformed: 400.
    pub(super) fn personality_osparam(
        &self,
        files: &[PersonalityFile],
    ) -> Result<Option<String>, ServiceError> {
        use base64::Engine as _;
        if files.is_empty() {
            return Ok(None);
        }
        if files.len() > self.config.max_personality as usize {
            return Err(ServiceError::OverLimit(format!(
                "Personality file limit exceeded: at most {} files",
                self.config.max_personality
            )));
        }
        for f in files {
            if !f.path.starts_with('/') || f.path.len() > 255 || f.path.contains('\0') {
                return Err(ServiceError::BadRequest(format!(
                    "Personality file path {:?} must be an absolute path of at most 255 bytes",
                    f.path
                )));
            }
            // Decoding a huge string only to refuse it is waste: base64
            // holds 3 bytes per 4 characters.
            let bound = self.config.max_personality_bytes as usize;
            let too_long = || {
                ServiceError::OverLimit(format!(
                    "Personality file content too long: {} is over {bound} bytes",
                    f.path
                ))
            };
            if f.contents.trim().len() > bound.div_ceil(3) * 4 {
                return Err(too_long());
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(f.contents.trim().as_bytes())
                .map_err(|_| {
                    ServiceError::BadRequest(format!(
                        "Personality content for {} cannot be decoded",
                        f.path
                    ))
                })?;
            if bytes.len() > bound {
                return Err(too_long());
            }
            if f.mode.is_some_and(|m| m > 0o777) {
                return Err(ServiceError::BadRequest(format!(
                    "Personality file mode for {} must be within 0 and 0777",
                    f.path
                )));
            }
        }
        serde_json::to_string(files)
            .map(Some)
            .map_err(|e| ServiceError::BadRequest(format!("personality: {e}")))
    }

    /// Checks a create request against the catalog (metadata, flavor,
    /// image and their fit); the flavor and image to use.
    pub(super) async fn validate_create(
        &self,
        caller: &Caller,
        req: &CreateServer,
    ) -> Result<(Flavor, Image), ServiceError> {
        validate_metadata(&req.metadata)?;
        let flavor = match self.resolve_flavor(&req.flavor_ref).await? {
            Some(f) if !f.deleted && (f.is_public || caller.is_admin) => f,
            _ => {
                return Err(ServiceError::BadRequest(format!(
                    "Flavor {} could not be found.",
                    req.flavor_ref
                )));
            }
        };
        let image_id = ref_id(&req.image_ref).to_string();
        let image = match self.store.image(&image_id).await? {
            Some(img) if image_visible(&img, caller) => img,
            _ => {
                return Err(ServiceError::BadRequest(format!(
                    "Image {} could not be found.",
                    req.image_ref
                )));
            }
        };
        if !image.status.eq_ignore_ascii_case("active") {
            return Err(ServiceError::BadRequest(format!(
                "Image {} is not active.",
                image.id
            )));
        }
        if flavor.disk_gib < image.min_disk_gib {
            return Err(ServiceError::BadRequest(format!(
                "Flavor's disk is too small for requested image. Flavor disk is {} GiB, minimum is {} GiB.",
                flavor.disk_gib, image.min_disk_gib
            )));
        }
        if flavor.ram_mib < image.min_ram_mib {
            return Err(ServiceError::BadRequest(format!(
                "Flavor's memory is too small for requested image. Flavor RAM is {} MiB, minimum is {} MiB.",
                flavor.ram_mib, image.min_ram_mib
            )));
        }
        Ok((flavor, image))
    }

    /// Submits the Ganeti create of a stored BUILD server; records the job,
    /// or rolls the server back (Ganeti unreachable) or puts it in ERROR
    /// (Ganeti refused).
    pub(super) async fn submit_create(
        &self,
        vm: Vm,
        build: Build<'_>,
        admin_pass: String,
        caller: &Caller,
    ) -> Result<CreatedServer, ServiceError> {
        let request = caller.request_id.as_deref();
        let Build {
            flavor,
            image,
            keys,
            nics,
            personality,
            user_data,
        } = build;
        let backend = vm.backend_id.ok_or_else(|| {
            ServiceError::Store(StoreError::Integrity(format!(
                "server {} has no cluster",
                vm.id
            )))
        })?;
        let mut osparams = image.osparams.clone();
        osparams.insert(PASSWORD_OSPARAM.into(), admin_pass.clone());
        if !keys.is_empty() {
            // Synnefo's way: every key's public half, one per line.
            let auth_keys: Vec<&str> = keys.iter().map(|k| k.public_key.trim()).collect();
            osparams.insert(AUTH_KEYS_OSPARAM.into(), auth_keys.join("\n"));
        }
        if let Some(p) = personality {
            osparams.insert(PERSONALITY_OSPARAM.into(), p.to_string());
        }
        if let Some(u) = user_data {
            osparams.insert(super::USER_DATA_OSPARAM.into(), u.to_string());
        }
        let nics = match nics {
            None => vec![self.config.nic.clone()],
            Some(plan) => match self.server_nics(caller, &vm, backend, plan).await {
                Ok(n) => n,
                Err(e) => {
                    // Nothing reached Ganeti: the server goes away (its
                    // ports with it, in the same write), the caller learns why.
                    let msg = e.to_string();
                    tracing::warn!(vm = %vm.id, error = %msg, "server NICs could not be set up; rolling the server back");
                    modify_vm(&*self.store, vm.id, |v| {
                        Ok(Some(VmChange {
                            state: state::destroyed_without_ganeti(&v.state),
                            nics: None,
                            resize: None,
                            action_log: failed(request, &msg),
                            image: None,
                        }))
                    })
                    .await?;
                    return Err(e);
                }
            },
        };
        let spec = InstanceSpec {
            backend,
            name: InstanceName::new(&self.config.prefix, vm.id).to_string(),
            vcpus: flavor.vcpus,
            ram_mib: flavor.ram_mib,
            disk_gib: flavor.disk_gib,
            disk_template: if flavor.disk_template.is_empty() {
                self.config.default_disk_template.clone()
            } else {
                flavor.disk_template.clone()
            },
            os_type: image.os_type.clone(),
            osparams,
            nics,
            hvparams: BTreeMap::new(),
            start: true,
        };
        match self.ganeti.create_instance(&spec).await {
            Ok(job) => {
                let stored = modify_vm(&*self.store, vm.id, |v| {
                    Ok(record_job(v, Action::Create, job, request))
                })
                .await?;
                self.remember_password(vm.id, &admin_pass);
                Ok(CreatedServer {
                    vm: stored.unwrap_or(vm),
                    admin_pass,
                })
            }
            Err(BackendError::Unavailable(msg)) => {
                tracing::warn!(vm = %vm.id, error = %msg, "Ganeti unreachable on create; rolling the server back");
                modify_vm(&*self.store, vm.id, |v| {
                    Ok(Some(VmChange {
                        state: state::destroyed_without_ganeti(&v.state),
                        nics: None,
                        resize: None,
                        action_log: failed(request, &msg),
                        image: None,
                    }))
                })
                .await?;
                Err(BackendError::Unavailable(msg).into())
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(vm = %vm.id, error = %message, "Ganeti refused the create; server goes to ERROR");
                let stored = modify_vm(&*self.store, vm.id, |v| {
                    Ok(
                        state::create_refused(&v.state, message.clone()).map(|next| VmChange {
                            state: next,
                            nics: None,
                            resize: None,
                            action_log: failed(request, &message),
                            image: None,
                        }),
                    )
                })
                .await?;
                Ok(CreatedServer {
                    vm: stored.unwrap_or(vm),
                    admin_pass,
                })
            }
        }
    }

    pub(super) async fn place(&self, flavor: &Flavor) -> Result<BackendId, ServiceError> {
        let candidates: Vec<Backend> = self
            .store
            .list_backends()
            .await?
            .into_iter()
            .filter(|b| !b.drained && !b.offline)
            .collect();
        if candidates.is_empty() {
            return Err(
                BackendError::NoBackend("no Ganeti backend accepts new servers".into()).into(),
            );
        }
        let usage = self.store.backend_usage().await?;
        let chosen = self.placement.place(&candidates, &usage, flavor).await?;
        if !candidates.iter().any(|b| b.id == chosen) {
            return Err(BackendError::NoBackend(format!(
                "placement chose unusable backend {chosen}"
            ))
            .into());
        }
        Ok(chosen)
    }
}

/// A store quota refusal as Nova words it (403 overLimit).
pub(super) fn quota_error(e: StoreError) -> ServiceError {
    match e {
        StoreError::QuotaExceeded {
            resource,
            limit,
            in_use,
            requested,
        } => ServiceError::OverLimit(format!(
            "Quota exceeded for {}: Requested {requested}, but already used {in_use} of {limit} {}",
            quota_resource_name(resource),
            quota_resource_name(resource)
        )),
        other => other.into(),
    }
}

fn quota_resource_name(resource: &str) -> &'static str {
    match resource {
        "servers" => "instances",
        "vcpus" => "cores",
        _ => "ram",
    }
}

/// The history entry of a create request whose job Ganeti did not take.
fn failed(request: Option<&str>, reason: &str) -> Option<ActionLog> {
    request.map(|r| ActionLog::Failed {
        request_id: r.to_string(),
        reason: reason.to_string(),
    })
}

/// What a create job builds: the flavor, the image, the key pairs whose
/// public keys go to snf-image, and the server's NICs.
#[derive(Clone, Copy)]
pub(super) struct Build<'a> {
    pub(super) flavor: &'a Flavor,
    pub(super) image: &'a Image,
    pub(super) keys: &'a [Keypair],
    /// The NICs (`None`: the configured default NIC, on a cloud without a
    /// public network).
    pub(super) nics: Option<&'a [NicPlan]>,
    /// snf-image's `img_personality`, if files are to be injected.
    pub(super) personality: Option<&'a str>,
    /// snf-image's `cloud_userdata` (base64), if given.
    pub(super) user_data: Option<&'a str>,
}

impl Compute {
    /// Binds a stored server's ports and turns them into Ganeti NICs.
    async fn server_nics(
        &self,
        caller: &Caller,
        vm: &Vm,
        backend: BackendId,
        plan: &[NicPlan],
    ) -> Result<Vec<crate::ports::NicSpec>, ServiceError> {
        let net = self.networking();
        let ports = net.bind_server_ports(caller, vm, plan).await?;
        net.nic_specs(backend, &ports).await
    }
}
