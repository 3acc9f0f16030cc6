//! Domain builders: a user in a project with a flavor, and VMs for them.

use std::collections::BTreeMap;

use synnefo_core::ids::{FlavorId, VmId};
use synnefo_core::model::{Flavor, NewVm, Project, Quota, User, Vm};
use synnefo_core::ports::{CatalogStore, IdentityStore, VmStore};

use crate::unique;

/// A user, a project it is a member of, and a public flavor.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The user.
    pub user: User,
    /// Its project.
    pub project: Project,
    /// A flavor (2 vCPUs, 1 GiB RAM, 10 GiB disk).
    pub flavor: Flavor,
}

/// A public `plain` flavor with a unique name.
pub fn flavor_spec(vcpus: i32, ram_mib: i32, disk_gib: i32) -> Flavor {
    Flavor {
        id: FlavorId(0),
        name: unique("flavor-"),
        vcpus,
        ram_mib,
        disk_gib,
        disk_template: "plain".into(),
        is_public: true,
        deleted: false,
    }
}

/// Creates a flavor of `vcpus` and `ram_mib` (10 GiB disk).
pub async fn flavor<S: CatalogStore + ?Sized>(s: &S, vcpus: i32, ram_mib: i32) -> Flavor {
    s.create_flavor(&flavor_spec(vcpus, ram_mib, 10))
        .await
        .expect("create flavor")
}

/// Creates a user (not an admin), a project and a flavor, uniquely named.
pub async fn tenant<S: IdentityStore + CatalogStore + ?Sized>(s: &S) -> Tenant {
    tenant_with(s, false, flavor_spec(2, 1024, 10)).await
}

impl Tenant {
    /// A VM request named `name` of the tenant's flavor (image `img-1`,
    /// no backend chosen).
    pub fn new_vm(&self, name: &str) -> NewVm {
        NewVm {
            user_id: self.user.id.clone(),
            project_id: self.project.id.clone(),
            name: name.to_string(),
            flavor: self.flavor.clone(),
            image_id: "img-1".into(),
            backend_id: None,
            metadata: BTreeMap::new(),
            request_id: None,
        }
    }

    /// Creates a VM named `name` (in BUILD), without quota limits.
    pub async fn create_vm<S: VmStore + ?Sized>(&self, s: &S, name: &str) -> Vm {
        s.create_vm(&self.new_vm(name), Quota::default())
            .await
            .expect("create vm")
    }
}

/// Creates `n` VMs in BUILD for a new tenant; their ids in order.
pub async fn create_vms<S: IdentityStore + CatalogStore + VmStore + ?Sized>(
    s: &S,
    n: usize,
) -> Vec<VmId> {
    let t = tenant(s).await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(t.create_vm(s, &format!("vm{i}")).await.id);
    }
    ids
}

/// A Ganeti job of one opcode as RAPI reports it; an `error` job carries
/// `OpExecError` with `why` as its typed error.
pub fn job_info(
    id: u64,
    status: synnefo_core::state::JobStatus,
    opcode: synnefo_core::state::OpCode,
    why: &str,
) -> synnefo_core::ports::JobInfo {
    use synnefo_core::state::JobStatus;
    synnefo_core::ports::JobInfo {
        id: synnefo_core::ids::JobId(id),
        status,
        ops: vec![synnefo_core::ports::JobOpInfo {
            opcode: opcode.as_str().into(),
            status,
            error: if status == JobStatus::Error {
                synnefo_core::state::OpError::from_result(&serde_json::json!([
                    "OpExecError",
                    [why]
                ]))
            } else {
                None
            },
            log: vec![],
        }],
        end_time_us: None,
    }
}

/// `state` changed field by field: a fixture in a state the test needs,
/// not a transition (code under test moves VMs only through
/// `synnefo_core::state`'s functions).
pub fn edited(
    state: &synnefo_core::state::VmState,
    f: impl FnOnce(&mut synnefo_core::state::StoredVmState),
) -> synnefo_core::state::VmState {
    let mut stored = state.to_stored();
    f(&mut stored);
    synnefo_core::state::VmState::from_stored(stored)
}

/// `state` marked deleted (a delete requested, not yet carried out).
pub fn marked_deleted(state: &synnefo_core::state::VmState) -> synnefo_core::state::VmState {
    edited(state, |s| s.deleted = true)
}

/// A VM named "vm" of `user` in `project` with `flavor`, placed on
/// `backend`, stored and then moved to `state` (with the NICs `nics` gives
/// for its id, if any) through the store's one state write: a fixture in
/// any state.
pub async fn stored_vm<S: VmStore + ?Sized>(
    s: &S,
    owner: (&str, &str),
    flavor: &Flavor,
    backend: synnefo_core::ids::BackendId,
    state: synnefo_core::state::VmState,
    nics: impl FnOnce(VmId) -> Option<Vec<synnefo_core::model::Nic>>,
) -> Vm {
    let (user_id, project_id) = owner;
    let vm = s
        .create_vm(
            &NewVm {
                user_id: user_id.into(),
                project_id: project_id.into(),
                name: "vm".into(),
                flavor: flavor.clone(),
                image_id: "img".into(),
                backend_id: Some(backend),
                metadata: BTreeMap::new(),
                request_id: None,
            },
            Quota::default(),
        )
        .await
        .expect("create vm");
    s.update_vm_state(&synnefo_core::ports::VmStateUpdate {
        id: vm.id,
        expected_version: vm.version,
        state,
        nics: nics(vm.id),
        resize: None,
        action_log: None,
        image: None,
    })
    .await
    .expect("store the fixture's state")
}

/// Creates a user (an operator if `admin`), a project it is a member of
/// and the flavor `flavor` describes, uniquely named.
pub async fn tenant_with<S: IdentityStore + CatalogStore + ?Sized>(
    s: &S,
    admin: bool,
    flavor: Flavor,
) -> Tenant {
    let user = s
        .create_user(&unique("user-"), "$argon2id$fake", admin)
        .await
        .expect("create user");
    let project = s
        .create_project(&unique("project-"))
        .await
        .expect("create project");
    s.add_member(&user.id, &project.id)
        .await
        .expect("add member");
    Tenant {
        flavor: s.create_flavor(&flavor).await.expect("create flavor"),
        user,
        project,
    }
}

/// A public flavor of `vcpus`, `ram_mib`, `disk_gib` and `template`,
/// uniquely named.
pub fn flavor_of(vcpus: i32, ram_mib: i32, disk_gib: i32, template: &str) -> Flavor {
    Flavor {
        disk_template: template.into(),
        ..flavor_spec(vcpus, ram_mib, disk_gib)
    }
}
