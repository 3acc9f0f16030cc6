//! Rebuilding a server (Nova's `rebuild`): its disk written again from an
//! image by the OS definition, through Ganeti's reinstall
//! ([`crate::ports::GanetiBackend::reinstall`]): the state machine's
//! [`state::start_rebuild`] rules, the image's OS parameters as a create
//! builds them (image, new password, the keys, files to inject), one job
//! that shuts the server down, reinstalls it and starts it again if it was
//! running. The server gets the new image when the job succeeds.

use super::actions::Start;
use super::{
    AUTH_KEYS_OSPARAM, Caller, Compute, PASSWORD_OSPARAM, PERSONALITY_OSPARAM, PersonalityFile,
    generate_password, image_visible, ref_id, validate_metadata, validate_server_name,
};
use crate::error::ServiceError;
use crate::model::Vm;
use crate::ports::ReinstallSpec;
use crate::state::{self, Action, VmState};
use std::collections::BTreeMap;

/// A rebuild request (Nova's `rebuild` body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildServer {
    /// The image to write (an id or an image link).
    pub image_ref: String,
    /// The new password; generated when absent or empty.
    pub admin_pass: Option<String>,
    /// A new name.
    pub name: Option<String>,
    /// New metadata, replacing the server's.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Files to inject (Nova's `personality`, before 2.57).
    pub personality: Vec<PersonalityFile>,
    /// Key pairs to inject instead of the server's (Nova's `key_name` from
    /// 2.54); `None`: the server's own.
    pub key_names: Option<Vec<String>>,
}

/// A rebuild accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltServer {
    /// The server, `REBUILD` while its job runs.
    pub vm: Vm,
    /// The new password (Nova returns it as `adminPass`).
    pub admin_pass: String,
}

impl Compute {
    /// Rebuilds a running or stopped server from `req.image_ref`: a
    /// visible, active image that fits the server's flavor (400 otherwise),
    /// the server neither locked nor busy (409). Name and metadata change
    /// once Ganeti has taken the job.
    pub async fn rebuild(
        &self,
        caller: &Caller,
        id: &str,
        req: RebuildServer,
    ) -> Result<RebuiltServer, ServiceError> {
        if let Some(name) = &req.name {
            validate_server_name(name)?;
        }
        if let Some(m) = &req.metadata {
            validate_metadata(m)?;
        }
        let personality = self.personality_osparam(&req.personality)?;
        let vm = self.server(caller, id).await?;
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
        if let Some(flavor) = self.store.flavor(vm.flavor_id).await? {
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
        }
        let key_names = match req.key_names {
            Some(names) => names,
            None => self.server_attrs(&vm).await?.key_names,
        };
        let keys = self.resolve_key_names(caller, &key_names).await?;
        let admin_pass = match req.admin_pass {
            Some(p) if !p.is_empty() => p,
            _ => generate_password(),
        };
        let mut osparams = image.osparams.clone();
        osparams.insert(PASSWORD_OSPARAM.into(), admin_pass.clone());
        if !keys.is_empty() {
            let auth_keys: Vec<&str> = keys.iter().map(|k| k.public_key.trim()).collect();
            osparams.insert(AUTH_KEYS_OSPARAM.into(), auth_keys.join("\n"));
        }
        if let Some(p) = personality {
            osparams.insert(PERSONALITY_OSPARAM.into(), p);
        }
        let new_image = image.id.clone();
        let transition = move |s: &VmState| state::start_rebuild(s, &new_image);
        let start = Start {
            action: Action::Rebuild,
            transition: &transition,
            quota: None,
            beparams: None,
            reinstall: Some(ReinstallSpec {
                os_type: image.os_type.clone(),
                osparams,
                // set from the rebuild the transition records
                start: false,
            }),
        };
        let mut vm = self.run_action(caller, vm, start).await?;
        if let Some(name) = &req.name {
            vm = self.store.rename_vm(vm.id, name).await?;
        }
        if let Some(m) = &req.metadata {
            self.store.set_vm_metadata(vm.id, m, true).await?;
            vm = self.server(caller, id).await?;
        }
        tracing::info!(server = %vm.id, user = %caller.user_id, image = %image.id, "rebuild accepted");
        Ok(RebuiltServer { vm, admin_pass })
    }
}
