//! Creating several servers in one request (Nova's `min_count` /
//! `max_count`), and the servers' access addresses.
//!
//! As in Nova: the batch gets as many servers as the project's quota allows
//! between `min_count` and `max_count` (fewer than `min_count` is 403 and
//! nothing is created); the quota is checked for the whole batch in one
//! store transaction; with more than one server the names get `-1`, `-2`,
//! ... appended; all share the request's admin password. The batch is
//! placed once, on one cluster.

use std::collections::HashMap;

use rand::Rng;

use super::create::quota_error;
use super::{
    Caller, Compute, CreateServer, CreatedServer, generate_password, validate_server_name,
};
use crate::error::{ServiceError, StoreError};
use crate::ids::VmId;
use crate::model::{AccessIps, Flavor, NewVm, NewVmAttrs, Quota, Usage, Vm};
use crate::service::network::NicPlan;

/// How many servers a create asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateCount {
    /// At least this many, or none (`min_count`, ≥ 1).
    pub min: u32,
    /// At most this many (`max_count`, ≥ `min`).
    pub max: u32,
}

impl Default for CreateCount {
    fn default() -> Self {
        Self { min: 1, max: 1 }
    }
}

/// The servers one create request made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBatch {
    /// Nova's `reservation_id` of the request (`r-` and 8 characters).
    pub reservation_id: String,
    /// The servers, in name order (never empty).
    pub servers: Vec<CreatedServer>,
}

/// `r-` and 8 random lowercase letters and digits, as Nova's.
fn reservation_id() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..8)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect();
    format!("r-{tail}")
}

/// How many servers of `flavor` fit in what `quota` leaves of `usage`
/// (`u32::MAX` when nothing limits them).
fn servers_that_fit(quota: Quota, usage: Usage, flavor: &Flavor) -> u32 {
    let per_server = [
        (quota.servers, usage.servers, 1),
        (quota.vcpus, usage.vcpus, i64::from(flavor.vcpus)),
        (quota.ram_mib, usage.ram_mib, i64::from(flavor.ram_mib)),
    ];
    per_server
        .into_iter()
        .filter_map(|(limit, used, each)| {
            let limit = limit?;
            let left = (limit - used).max(0);
            Some(if each > 0 { left / each } else { i64::MAX })
        })
        .min()
        .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

impl Compute {
    /// Creates between `count.min` and `count.max` servers (see the module
    /// docs), each submitted to Ganeti like [`Compute::create_server`]'s.
    pub async fn create_servers(
        &self,
        caller: &Caller,
        req: CreateServer,
        count: CreateCount,
        access_ips: AccessIps,
    ) -> Result<CreatedBatch, ServiceError> {
        let bound = self.config.max_servers_per_request.max(1);
        if count.min == 0 || count.min > count.max {
            return Err(ServiceError::BadRequest(
                "min_count must be at least 1 and not more than max_count".into(),
            ));
        }
        if count.min > bound {
            return Err(ServiceError::BadRequest(format!(
                "min_count {} is more than this cloud creates in one request ({bound})",
                count.min
            )));
        }
        let max = count.max.min(bound);
        validate_server_name(&req.name)?;
        if max > 1 {
            validate_server_name(&format!("{}-{max}", req.name))?;
        }
        let (flavor, image) = self.validate_create(caller, &req).await?;
        let keys = self.resolve_key_names(caller, &req.key_names).await?;
        let personality = self.personality_osparam(&req.personality)?;
        let user_data = self.user_data(req.user_data.as_deref())?;
        let nics = self
            .networking()
            .plan_server_nics(caller, &req.networks)
            .await?;
        let one_only = nics.as_ref().is_some_and(|plan| {
            plan.iter().any(|p| {
                matches!(
                    p,
                    NicPlan::Existing(_)
                        | NicPlan::New {
                            fixed_ip: Some(_),
                            ..
                        }
                )
            })
        });
        if one_only && max > 1 {
            return Err(ServiceError::BadRequest(
                "Multiple servers cannot share a port or a fixed IP address.".into(),
            ));
        }
        let attrs = NewVmAttrs {
            access: access_ips,
            key_names: keys.iter().map(|k| k.name.clone()).collect(),
            user_data: user_data.clone(),
        };
        let admin_pass = match &req.admin_pass {
            Some(p) if !p.is_empty() => p.clone(),
            _ => generate_password(),
        };
        let backend = self.place(&flavor).await?;
        let quota = self.store.quota(&caller.project_id).await?;
        let batch = |n: u32| -> Vec<NewVm> {
            (1..=n)
                .map(|i| NewVm {
                    user_id: caller.user_id.clone(),
                    project_id: caller.project_id.clone(),
                    name: if n > 1 {
                        format!("{}-{i}", req.name)
                    } else {
                        req.name.clone()
                    },
                    flavor: flavor.clone(),
                    image_id: image.id.clone(),
                    backend_id: Some(backend),
                    metadata: req.metadata.clone(),
                    request_id: caller.request_id.clone(),
                })
                .collect()
        };
        let vms = match self.store.create_vms_with(&batch(max), &attrs, quota).await {
            Ok(vms) => vms,
            Err(StoreError::QuotaExceeded { .. }) if max > count.min => {
                // Fewer then, as Nova: as many as fit, if that is at least min.
                let usage = self.store.usage(&caller.project_id).await?;
                let fit = servers_that_fit(quota, usage, &flavor).min(max);
                let n = fit.max(count.min);
                self.store
                    .create_vms_with(&batch(n), &attrs, quota)
                    .await
                    .map_err(quota_error)?
            }
            Err(e) => return Err(quota_error(e)),
        };
        let mut servers = Vec::with_capacity(vms.len());
        for vm in vms {
            servers.push(
                self.submit_create(
                    vm,
                    super::create::Build {
                        flavor: &flavor,
                        image: &image,
                        keys: &keys,
                        nics: nics.as_deref(),
                        personality: personality.as_deref(),
                        user_data: user_data.as_deref(),
                    },
                    admin_pass.clone(),
                    caller,
                )
                .await?,
            );
        }
        Ok(CreatedBatch {
            reservation_id: reservation_id(),
            servers,
        })
    }

    /// The access addresses of `vms` (absent: none set).
    pub async fn access_ips_of(
        &self,
        vms: &[Vm],
    ) -> Result<HashMap<VmId, AccessIps>, ServiceError> {
        if vms.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<VmId> = vms.iter().map(|v| v.id).collect();
        Ok(self.store.access_ips_of(&ids).await?)
    }

    /// Sets a server's `accessIPv4`/`accessIPv6` (404 unless it is the
    /// caller's); the server after the change.
    pub async fn set_access_ips(
        &self,
        caller: &Caller,
        id: &str,
        ips: AccessIps,
    ) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        self.store.set_access_ips(vm.id, &ips).await?;
        self.server(caller, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FlavorId;

    fn flavor(vcpus: i32, ram_mib: i32) -> Flavor {
        Flavor {
            id: FlavorId(1),
            name: "f".into(),
            vcpus,
            ram_mib,
            disk_gib: 1,
            disk_template: String::new(),
            is_public: true,
            deleted: false,
        }
    }

    #[test]
    fn fit_is_the_tightest_limit() {
        let used = Usage {
            servers: 3,
            vcpus: 6,
            ram_mib: 1024,
        };
        let q = |servers, vcpus, ram_mib| Quota {
            servers,
            vcpus,
            ram_mib,
        };
        assert_eq!(
            servers_that_fit(q(None, None, None), used, &flavor(2, 512)),
            u32::MAX
        );
        assert_eq!(
            servers_that_fit(q(Some(5), None, None), used, &flavor(2, 512)),
            2
        );
        assert_eq!(
            servers_that_fit(q(Some(50), Some(10), None), used, &flavor(2, 512)),
            2
        );
        assert_eq!(
            servers_that_fit(q(None, None, Some(2048)), used, &flavor(2, 512)),
            2
        );
        assert_eq!(
            servers_that_fit(q(Some(2), None, None), used, &flavor(2, 512)),
            0,
            "over already"
        );
    }

    #[test]
    fn reservation_ids_look_like_novas() {
        let r = reservation_id();
        assert_eq!(r.len(), 10);
        assert!(r.starts_with("r-"));
        assert!(
            r[2..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(reservation_id(), reservation_id());
    }
}
