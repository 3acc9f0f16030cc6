//! Operator use cases: users, projects, memberships, quotas, flavors,
//! images, backends and tokens.
//!
//! What `synnefo admin` runs (and what admin API routes will run): every
//! domain rule of these operations lives here, the adapters only parse
//! arguments and print. Each operation takes the [`Caller`] and refuses a
//! non-operator ([`ServiceError::Forbidden`]); the CLI acts as
//! [`Admin::cli_operator`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ServiceError;
use crate::ids::{BackendId, FlavorId};
use crate::model::{Backend, Flavor, Image, Project, Quota, Usage, User};
use crate::ports::{Clock, Store, SystemClock};
use crate::service::compute::Caller;
use crate::service::identity::{
    Identity, Issued, PasswordPolicy, ProjectSelector, hash_password_with, new_token_secret,
};

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_LEN: usize = 8;

/// A flavor to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFlavor {
    /// Name.
    pub name: String,
    /// vCPUs (at least 1).
    pub vcpus: i32,
    /// RAM in MiB (at least 1).
    pub ram_mib: i32,
    /// Disk in GiB (not negative).
    pub disk_gib: i32,
    /// Ganeti disk template; `None` for the deployment's default.
    pub disk_template: Option<String>,
    /// Visible to every project.
    pub is_public: bool,
}

/// An image to register (or replace).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewImage {
    /// Id; a new UUID when `None`.
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// Ganeti OS (`snf-image+default`).
    pub os_type: String,
    /// OS parameters.
    pub osparams: BTreeMap<String, String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Minimum disk (GiB).
    pub min_disk_gib: i32,
    /// Minimum RAM (MiB).
    pub min_ram_mib: i32,
    /// Private to this project (name); public when `None`.
    pub private_to: Option<String>,
}

/// A project's quota and what it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectQuota {
    /// The project.
    pub project: Project,
    /// Its limits.
    pub quota: Quota,
    /// Its usage.
    pub usage: Usage,
}

/// The operator application service.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    default_disk_template: String,
    token_ttl: Duration,
    clock: Arc<dyn Clock>,
    password_policy: PasswordPolicy,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("default_disk_template", &self.default_disk_template)
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

fn not_found(what: &str, name: &str) -> ServiceError {
    ServiceError::NotFound(format!("no {what} named {name:?}"))
}

fn bad(msg: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest(msg.into())
}

impl Admin {
    /// A service over `store`; flavors without a disk template get
    /// `default_disk_template`, tokens live `token_ttl` unless told.
    pub fn new(store: Arc<dyn Store>, default_disk_template: String, token_ttl: Duration) -> Self {
        Self {
            store,
            default_disk_template,
            token_ttl,
            clock: Arc::new(SystemClock),
            password_policy: PasswordPolicy::default(),
        }
    }

    /// Hashes new passwords at this policy's argon2 cost (the `[limits]`
    /// settings).
    pub fn with_password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.password_policy = policy;
        self
    }

    /// Uses another clock (image timestamps).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The caller the command line acts as: an operator.
    pub fn cli_operator() -> Caller {
        Caller {
            user_id: "synnefo-admin".into(),
            project_id: String::new(),
            is_admin: true,
            request_id: None,
        }
    }

    fn check(caller: &Caller) -> Result<(), ServiceError> {
        if caller.is_admin {
            Ok(())
        } else {
            Err(ServiceError::Forbidden("only operators may do this".into()))
        }
    }

    /// A user by login name; 404 otherwise.
    pub async fn user(&self, caller: &Caller, name: &str) -> Result<User, ServiceError> {
        Self::check(caller)?;
        self.store
            .user_by_name(name)
            .await?
            .ok_or_else(|| not_found("user", name))
    }

    /// A project by name; 404 otherwise.
    pub async fn project(&self, caller: &Caller, name: &str) -> Result<Project, ServiceError> {
        Self::check(caller)?;
        self.store
            .project_by_name(name)
            .await?
            .ok_or_else(|| not_found("project", name))
    }

    /// Creates a user (password at least [`MIN_PASSWORD_LEN`] characters,
    /// stored argon2-hashed), optionally as a member of `project` (created
    /// if missing).
    pub async fn create_user(
        &self,
        caller: &Caller,
        name: &str,
        password: &str,
        is_admin: bool,
        project: Option<&str>,
    ) -> Result<User, ServiceError> {
        Self::check(caller)?;
        check_password(password)?;
        let user = self
            .store
            .create_user(
                name,
                &hash_password_with(password, &self.password_policy)?,
                is_admin,
            )
            .await?;
        if let Some(pname) = project {
            let p = match self.store.project_by_name(pname).await? {
                Some(p) => p,
                None => self.store.create_project(pname).await?,
            };
            self.store.add_member(&user.id, &p.id).await?;
        }
        Ok(user)
    }

    /// Every user.
    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<User>, ServiceError> {
        Self::check(caller)?;
        Ok(self.store.list_users().await?)
    }

    /// Sets a user's password (same rule as [`Admin::create_user`]).
    pub async fn set_password(
        &self,
        caller: &Caller,
        name: &str,
        password: &str,
    ) -> Result<(), ServiceError> {
        let user = self.user(caller, name).await?;
        check_password(password)?;
        self.store
            .update_user(
                &user.id,
                Some(hash_password_with(password, &self.password_policy)?),
                None,
            )
            .await?;
        Ok(())
    }

    /// Enables or disables a user.
    pub async fn set_enabled(
        &self,
        caller: &Caller,
        name: &str,
        enabled: bool,
    ) -> Result<(), ServiceError> {
        let user = self.user(caller, name).await?;
        self.store
            .update_user(&user.id, None, Some(enabled))
            .await?;
        Ok(())
    }

    /// Creates a project.
    pub async fn create_project(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Project, ServiceError> {
        Self::check(caller)?;
        Ok(self.store.create_project(name).await?)
    }

    /// Every project.
    pub async fn list_projects(&self, caller: &Caller) -> Result<Vec<Project>, ServiceError> {
        Self::check(caller)?;
        Ok(self.store.list_projects().await?)
    }

    /// Makes a user a member of a project (both by name).
    pub async fn add_member(
        &self,
        caller: &Caller,
        user: &str,
        project: &str,
    ) -> Result<(), ServiceError> {
        let u = self.user(caller, user).await?;
        let p = self.project(caller, project).await?;
        Ok(self.store.add_member(&u.id, &p.id).await?)
    }

    /// A user's projects.
    pub async fn user_projects(
        &self,
        caller: &Caller,
        user: &str,
    ) -> Result<Vec<Project>, ServiceError> {
        let u = self.user(caller, user).await?;
        Ok(self.store.user_projects(&u.id).await?)
    }

    /// Sets a project's limits (`None`: unlimited; negative limits are refused).
    pub async fn set_quota(
        &self,
        caller: &Caller,
        project: &str,
        quota: Quota,
    ) -> Result<(), ServiceError> {
        let p = self.project(caller, project).await?;
        for (what, v) in [
            ("servers", quota.servers),
            ("vcpus", quota.vcpus),
            ("ram", quota.ram_mib),
        ] {
            if v.is_some_and(|n| n < 0) {
                return Err(bad(format!("the {what} limit must not be negative")));
            }
        }
        Ok(self.store.set_quota(&p.id, quota).await?)
    }

    /// A project's limits and usage.
    pub async fn quota(
        &self,
        caller: &Caller,
        project: &str,
    ) -> Result<ProjectQuota, ServiceError> {
        let p = self.project(caller, project).await?;
        let quota = self.store.quota(&p.id).await?;
        let usage = self.store.usage(&p.id).await?;
        Ok(ProjectQuota {
            project: p,
            quota,
            usage,
        })
    }

    /// Creates a flavor (vCPUs and RAM positive, disk not negative).
    pub async fn create_flavor(
        &self,
        caller: &Caller,
        f: NewFlavor,
    ) -> Result<Flavor, ServiceError> {
        Self::check(caller)?;
        if f.vcpus < 1 || f.ram_mib < 1 || f.disk_gib < 0 {
            return Err(bad("vcpus and ram must be positive, disk not negative"));
        }
        Ok(self
            .store
            .create_flavor(&Flavor {
                id: FlavorId(1),
                name: f.name,
                vcpus: f.vcpus,
                ram_mib: f.ram_mib,
                disk_gib: f.disk_gib,
                disk_template: f
                    .disk_template
                    .unwrap_or_else(|| self.default_disk_template.clone()),
                is_public: f.is_public,
                deleted: false,
            })
            .await?)
    }

    /// Every flavor, deleted ones included.
    pub async fn list_flavors(&self, caller: &Caller) -> Result<Vec<Flavor>, ServiceError> {
        Self::check(caller)?;
        Ok(self.store.list_flavors().await?)
    }

    /// Registers (or replaces) an active image; private to a project when
    /// `private_to` names one.
    pub async fn register_image(
        &self,
        caller: &Caller,
        i: NewImage,
    ) -> Result<Image, ServiceError> {
        Self::check(caller)?;
        if i.min_disk_gib < 0 || i.min_ram_mib < 0 {
            return Err(bad("minimum disk and RAM must not be negative"));
        }
        let owner = match &i.private_to {
            Some(p) => Some(self.project(caller, p).await?.id),
            None => None,
        };
        let now = self.clock.now();
        Ok(self
            .store
            .put_image(&Image {
                id: i.id.unwrap_or_else(uuid_v4),
                name: i.name,
                os_type: i.os_type,
                osparams: i.osparams,
                status: "active".into(),
                metadata: i.metadata,
                min_disk_gib: i.min_disk_gib,
                min_ram_mib: i.min_ram_mib,
                is_public: owner.is_none(),
                owner,
                created: now,
                updated: now,
            })
            .await?)
    }

    /// Every image.
    pub async fn list_images(&self, caller: &Caller) -> Result<Vec<Image>, ServiceError> {
        Self::check(caller)?;
        Ok(self.store.list_images().await?)
    }

    /// Registers a cluster, or updates its address.
    pub async fn add_backend(
        &self,
        caller: &Caller,
        name: &str,
        host: &str,
        port: u16,
    ) -> Result<Backend, ServiceError> {
        Self::check(caller)?;
        if host.is_empty() {
            return Err(bad("the RAPI host must not be empty"));
        }
        Ok(self.store.upsert_backend(name, host, port).await?)
    }

    /// A backend by name or id; 404 otherwise.
    pub async fn backend(&self, caller: &Caller, key: &str) -> Result<Backend, ServiceError> {
        Self::check(caller)?;
        self.store
            .list_backends()
            .await?
            .into_iter()
            .find(|b| b.name == key || b.id.to_string() == key)
            .ok_or_else(|| not_found("backend", key))
    }

    /// Drains (no new servers are placed there) or undrains a backend.
    pub async fn set_drained(
        &self,
        caller: &Caller,
        key: &str,
        drained: bool,
    ) -> Result<BackendId, ServiceError> {
        let b = self.backend(caller, key).await?;
        self.store
            .set_backend_flags(b.id, Some(drained), None)
            .await?;
        Ok(b.id)
    }

    /// Every backend with the VMs and RAM the DB places on it.
    pub async fn list_backends(
        &self,
        caller: &Caller,
    ) -> Result<(Vec<Backend>, HashMap<BackendId, Usage>), ServiceError> {
        Self::check(caller)?;
        Ok((
            self.store.list_backends().await?,
            self.store.backend_usage().await?,
        ))
    }

    /// Issues a token for `user` scoped to `project` (default: the user's
    /// first project), living `ttl` (default: the configured lifetime).
    pub async fn issue_token(
        &self,
        caller: &Caller,
        user: &str,
        project: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<Issued, ServiceError> {
        let u = self.user(caller, user).await?;
        let identity =
            Identity::new(self.store.clone(), self.token_ttl).with_clock(self.clock.clone());
        let selector = project.map(|p| ProjectSelector::Name(p.to_string()));
        let p = identity.scope(&u, selector.as_ref()).await.map_err(|_| {
            bad(format!(
                "{user} is not a member of that project (or of any)"
            ))
        })?;
        // Bounded (at most ten years, never zero): an operator's
        // `--ttl 10000000000000000` is a 400, not a timestamp overflow.
        let lifetime =
            crate::service::identity::token_ttl_from_secs(ttl.unwrap_or(self.token_ttl).as_secs())?;
        identity.issue_for(u, p, lifetime).await
    }
}

fn check_password(password: &str) -> Result<(), ServiceError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(bad(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A random RFC 4122 version-4 UUID string.
pub fn uuid_v4() -> String {
    let secret = new_token_secret();
    let h = &secret[..32];
    let variant = ['8', '9', 'a', 'b'][(h.as_bytes()[16] % 4) as usize];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SeaStore;

    async fn admin() -> Admin {
        let store = SeaStore::connect("sqlite::memory:", 1).await.unwrap();
        store.migrate().await.unwrap();
        Admin::new(Arc::new(store), "plain".into(), Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn operators_only() {
        let a = admin().await;
        let user = Caller {
            user_id: "u".into(),
            project_id: "p".into(),
            is_admin: false,
            request_id: None,
        };
        assert!(matches!(
            a.list_users(&user).await,
            Err(ServiceError::Forbidden(_))
        ));
        assert!(matches!(
            a.create_project(&user, "x").await,
            Err(ServiceError::Forbidden(_))
        ));
    }

    #[tokio::test]
    async fn rules_are_enforced_here() {
        let a = admin().await;
        let op = Admin::cli_operator();
        assert!(matches!(
            a.create_user(&op, "alice", "short", false, None).await,
            Err(ServiceError::BadRequest(_))
        ));
        let u = a
            .create_user(&op, "alice", "long enough", false, Some("team"))
            .await
            .unwrap();
        assert_eq!(a.user_projects(&op, "alice").await.unwrap()[0].name, "team");
        assert!(matches!(
            a.set_quota(
                &op,
                "team",
                Quota {
                    servers: Some(-1),
                    vcpus: None,
                    ram_mib: None
                }
            )
            .await,
            Err(ServiceError::BadRequest(_))
        ));
        assert!(matches!(
            a.quota(&op, "nosuch").await,
            Err(ServiceError::NotFound(_))
        ));
        let bad_flavor = NewFlavor {
            name: "f".into(),
            vcpus: 0,
            ram_mib: 512,
            disk_gib: 1,
            disk_template: None,
            is_public: true,
        };
        assert!(matches!(
            a.create_flavor(&op, bad_flavor.clone()).await,
            Err(ServiceError::BadRequest(_))
        ));
        let f = a
            .create_flavor(
                &op,
                NewFlavor {
                    vcpus: 1,
                    ..bad_flavor
                },
            )
            .await
            .unwrap();
        assert_eq!(f.disk_template, "plain", "the deployment's default");
        let img = a
            .register_image(
                &op,
                NewImage {
                    name: "debian".into(),
                    os_type: "snf-image+default".into(),
                    private_to: Some("team".into()),
                    ..NewImage::default()
                },
            )
            .await
            .unwrap();
        assert!(!img.is_public && img.owner.is_some());
        assert_eq!(img.id.len(), 36);
        let issued = a.issue_token(&op, "alice", None, None).await.unwrap();
        assert_eq!(issued.auth.user.id, u.id);
        assert!(matches!(
            a.issue_token(&op, "alice", Some("other"), None).await,
            Err(ServiceError::BadRequest(_))
        ));
    }
}
