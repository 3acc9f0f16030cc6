//! Deleting a server whose instance does not exist in Ganeti ends DESTROYED,
//! through the real path: the compute service over RAPI to the Ganeti
//! simulator, eventd watching the simulator's job queue, the in-process bus,
//! the dispatcher, and the SQLite store.
//!
//! * A VM stranded in BUILD (stored, but its create never reached Ganeti:
//!   an API that died in between) is deleted: the removal job is submitted,
//!   Ganeti fails it in its prerequisites (`OpPrereqError`, `Instance '...'
//!   not known`, `unknown_entity`, as the simulator does like Ganeti 3.0,
//!   see `sim_golden.rs`), and the dispatcher counts that as a removal:
//!   deleted and DESTROYED, nothing dead-lettered.
//! * A VM whose create Ganeti rejected (ERROR) is deleted: the service sees
//!   that Ganeti has no such instance and destroys it at once, without a
//!   removal job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synnefo_core::bus::InProcessBus;
use synnefo_core::dispatcher::{Dispatcher, DispatcherConfig};
use synnefo_core::ids::{FlavorId, InstanceName, VmId};
use synnefo_core::messages::MessageKind;
use synnefo_core::model::{Flavor, Image, NewVm, Quota, Vm};
use synnefo_core::ports::{
    BackendStore, CatalogStore, EventBus, GanetiBackend, IdentityStore, VmStore,
};
use synnefo_core::service::compute::{Caller, Compute, ComputeConfig, CreateServer};
use synnefo_core::settings::GanetiSettings;
use synnefo_core::state::{JobStatus, OpCode, OperState};
use synnefo_core::store::SeaStore;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_master::eventd::{Eventd, EventdConfig};
use synnefo_ganeti_sim::{FailureRule, SimHandle, SimLatency, Simulator};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "snf-";

struct World {
    _dir: tempfile::TempDir,
    sim: SimHandle,
    store: Arc<SeaStore>,
    bus: Arc<InProcessBus>,
    compute: Compute,
    caller: Caller,
    flavor: Flavor,
    image: Image,
    backend: synnefo_core::ids::BackendId,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::builder()
        .data_dir(dir.path().join("sim"))
        .latency(SimLatency::uniform(Duration::from_millis(5)))
        .start()
        .await
        .unwrap();
    let store = Arc::new(SeaStore::connect("sqlite::memory:", 1).await.unwrap());
    store.migrate().await.unwrap();
    let user = store
        .create_user("alice", "$argon2id$fake", false)
        .await
        .unwrap();
    let project = store.create_project("project-a").await.unwrap();
    store.add_member(&user.id, &project.id).await.unwrap();
    let flavor = store
        .create_flavor(&Flavor {
            id: FlavorId(0),
            name: "small".into(),
            vcpus: 1,
            ram_mib: 128,
            disk_gib: 1,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        })
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let image = store
        .put_image(&Image {
            id: "img-debian".into(),
            name: "debian".into(),
            os_type: "snf-image+default".into(),
            osparams: BTreeMap::new(),
            status: "ACTIVE".into(),
            metadata: BTreeMap::new(),
            min_disk_gib: 0,
            min_ram_mib: 0,
            is_public: true,
            owner: None,
            created: now,
            updated: now,
        })
        .await
        .unwrap();
    let backend = store
        .upsert_backend("sim", "127.0.0.1", sim.addr().port())
        .await
        .unwrap()
        .id;
    let ganeti: Arc<dyn GanetiBackend> = Arc::new(RapiBackend::from_clients(
        [(backend, sim.client().unwrap())],
        GanetiSettings {
            secret_osparams: vec!["img_passwd".into()],
            default_disk_template: "plain".into(),
            default_nic_mode: "bridged".into(),
            default_nic_link: "br0".into(),
            default_nic_network: String::new(),
            shutdown_timeout_secs: 60,
            hypervisor: String::new(),
            rescue_image: synnefo_core::settings::default_rescue_image(),
            clusters: BTreeMap::new(),
        },
    ));
    let compute = Compute::new(store.clone(), ganeti, ComputeConfig::default());

    let bus = Arc::new(InProcessBus::default());
    let bus_dyn: Arc<dyn EventBus> = bus.clone();
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut config = EventdConfig::new(sim.queue_dir(), dir.path().join("spool"), PREFIX);
    config.tick = Duration::from_millis(20);
    let eventd = Eventd::new(config, bus_dyn.clone());
    let c = cancel.clone();
    tasks.spawn(async move {
        eventd.run(c).await.expect("eventd");
    });
    let dispatcher = Dispatcher::new(store.clone(), bus_dyn, DispatcherConfig::new(PREFIX));
    let c = cancel.clone();
    tasks.spawn(async move {
        dispatcher.run(c).await.expect("dispatcher");
    });
    World {
        _dir: dir,
        sim,
        store,
        bus,
        compute,
        caller: Caller {
            user_id: user.id,
            project_id: project.id,
            is_admin: false,
            request_id: None,
        },
        flavor,
        image,
        backend,
        cancel,
        tasks,
    }
}

impl World {
    /// Waits until the VM satisfies `done`; returns it.
    async fn wait_vm(&self, id: VmId, what: &str, done: impl Fn(&Vm) -> bool) -> Vm {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let vm = self.store.vm(id).await.unwrap().unwrap();
            if done(&vm) {
                return vm;
            }
            assert!(
                Instant::now() < deadline,
                "VM {id} never became {what}: {:?}",
                vm.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// No message went to the dead-letter queue.
    fn assert_no_dead_letters(&self) {
        for kind in MessageKind::ALL {
            assert_eq!(self.bus.dead_letters(kind), vec![], "{kind:?}");
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        while let Some(r) = self.tasks.join_next().await {
            r.unwrap();
        }
        self.sim.shutdown();
    }
}

fn destroyed(vm: &Vm) -> bool {
    vm.state.deleted() && vm.state.operstate() == OperState::Destroyed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vm_stranded_in_build_ends_destroyed() {
    let w = world().await;
    // Stored with its cluster, but its create never reached Ganeti.
    let vm = w
        .store
        .create_vm(
            &NewVm {
                user_id: w.caller.user_id.clone(),
                project_id: w.caller.project_id.clone(),
                name: "stranded".into(),
                flavor: w.flavor.clone(),
                image_id: w.image.id.clone(),
                backend_id: Some(w.backend),
                metadata: BTreeMap::new(),
                request_id: None,
            },
            Quota::default(),
        )
        .await
        .unwrap();
    assert_eq!(vm.state.operstate(), OperState::Build);

    let deleted = w
        .compute
        .delete(&w.caller, &vm.id.to_string())
        .await
        .unwrap();
    assert!(deleted.state.deleted(), "hidden at once");
    // The removal job's id, when the request saw it recorded: the job can
    // fail and its event be applied before the request records the id
    // (then the action is already settled, and the job recorded below is
    // the only trace of it).
    let submitted = deleted.state.action().and_then(|a| a.job_id);

    let done = w.wait_vm(vm.id, "deleted and DESTROYED", destroyed).await;
    let recorded = done.state.job().cloned().unwrap();
    assert_eq!(
        (recorded.opcode, recorded.status),
        (OpCode::InstanceRemove, JobStatus::Error),
        "the failed removal is what settled it"
    );
    if let Some(job) = submitted {
        assert_eq!(recorded.job_id, Some(job), "the job the request submitted");
    }
    let name = InstanceName::new(PREFIX, vm.id).to_string();
    // Ganeti's typed error (eventd sends it in `result`; `logmsg` is the
    // op's last log line, as Synnefo's eventd sends it).
    assert_eq!(
        recorded.message().as_deref(),
        Some(format!("OpPrereqError: Instance '{name}' not known (unknown_entity)").as_str())
    );
    assert_eq!(done.state.action(), None);
    w.assert_no_dead_letters();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vm_whose_create_ganeti_rejected_destroys_it_without_a_job() {
    let w = world().await;
    // Ganeti's instance policy refuses the create (as recorded from 3.0).
    w.sim.add_failure(FailureRule {
        opcode: Some("OP_INSTANCE_CREATE".into()),
        instance: None,
        remaining: Some(1),
        class: "OpPrereqError".into(),
        message: "Instance allocation to group default violates policy: disk-size/0 value 16 is not in range [1024, 1048576]".into(),
        ecode: Some("wrong_input".into()),
    });
    let created = w
        .compute
        .create_server(
            &w.caller,
            CreateServer {
                name: "too-big".into(),
                flavor_ref: w.flavor.id.to_string(),
                image_ref: w.image.id.clone(),
                ..CreateServer::default()
            },
        )
        .await
        .unwrap();
    let id = created.vm.id;
    let error = w
        .wait_vm(id, "ERROR", |v| v.state.operstate() == OperState::Error)
        .await;
    let fault = error.state.job().unwrap().message().unwrap();
    assert!(fault.contains("violates policy"), "{fault}");
    let jobs_before = w.sim.job_ids();

    let t = Instant::now();
    let deleted = w.compute.delete(&w.caller, &id.to_string()).await.unwrap();
    assert!(
        destroyed(&deleted),
        "destroyed at once, the instance does not exist: {:?}",
        deleted.state
    );
    assert_eq!(deleted.state.action(), None);
    eprintln!("delete of an ERROR VM: {:?}", t.elapsed());
    // No removal job was submitted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.sim.job_ids(), jobs_before);
    assert!(destroyed(&w.store.vm(id).await.unwrap().unwrap()));
    w.assert_no_dead_letters();
    w.stop().await;
}
