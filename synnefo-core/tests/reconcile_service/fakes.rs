//! Fakes of the reconciler's ports: a clock and a Ganeti backend.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use synnefo_core::error::BackendError;
use synnefo_core::ids::{BackendId, JobId, VmId};
use synnefo_core::ports::{
    Clock, ClusterLoad, ConsoleInfo, GanetiBackend, InstanceInfo, InstanceSpec, JobInfo,
    NetworkInfo, NetworkLink, NetworkSpec, NicSpec, VmStore,
};
use synnefo_core::state::{JobStatus, OpCode, RebootKind};
use synnefo_core::store::SeaStore;
use synnefo_test_support::builders::job_info;

// ---------------------------------------------------------------- fakes

pub(crate) struct FakeClock(pub(crate) Mutex<DateTime<Utc>>);

impl FakeClock {
    pub(crate) fn at(t: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(t)))
    }
    pub(crate) fn advance(&self, d: TimeDelta) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A scripted Ganeti: instances per cluster, job statuses, unreachable
/// clusters; counts listings and records removals.
#[derive(Default)]
pub(crate) struct FakeGaneti {
    pub(crate) instances: Mutex<BTreeMap<BackendId, Vec<InstanceInfo>>>,
    pub(crate) unreachable: Mutex<HashSet<BackendId>>,
    pub(crate) jobs: Mutex<HashMap<JobId, JobInfo>>,
    pub(crate) listed: Mutex<HashMap<BackendId, usize>>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
    pub(crate) removed: Mutex<Vec<(BackendId, String)>>,
    pub(crate) next_job: AtomicUsize,
    /// On the first removal, rename this VM (bumps its version).
    pub(crate) bump_on_remove: Mutex<Option<(Arc<SeaStore>, VmId)>>,
    pub(crate) list_delay: Mutex<Duration>,
}

impl FakeGaneti {
    pub(crate) fn put(&self, backend: BackendId, i: InstanceInfo) {
        self.instances
            .lock()
            .unwrap()
            .entry(backend)
            .or_default()
            .push(i);
    }
    pub(crate) fn listed(&self, b: BackendId) -> usize {
        self.listed.lock().unwrap().get(&b).copied().unwrap_or(0)
    }
    pub(crate) fn job(&self, id: u64, status: JobStatus, opcode: OpCode) {
        self.jobs
            .lock()
            .unwrap()
            .insert(JobId(id), job_info(id, status, opcode, "no space left"));
    }
}

pub(crate) fn nope<T>() -> Result<T, BackendError> {
    Err(BackendError::Rejected("not used by reconciliation".into()))
}

#[async_trait]
impl GanetiBackend for FakeGaneti {
    async fn create_instance(&self, _: &InstanceSpec) -> Result<JobId, BackendError> {
        nope()
    }
    async fn startup(&self, _: BackendId, _: &str) -> Result<JobId, BackendError> {
        nope()
    }
    async fn shutdown(
        &self,
        _: BackendId,
        _: &str,
        _: Option<Duration>,
    ) -> Result<JobId, BackendError> {
        nope()
    }
    async fn reboot(&self, _: BackendId, _: &str, _: RebootKind) -> Result<JobId, BackendError> {
        nope()
    }
    async fn remove(&self, backend: BackendId, instance: &str) -> Result<JobId, BackendError> {
        let bump = self.bump_on_remove.lock().unwrap().take();
        if let Some((store, vm)) = bump {
            store
                .rename_vm(vm, "renamed-behind-our-back")
                .await
                .unwrap();
        }
        self.removed
            .lock()
            .unwrap()
            .push((backend, instance.to_string()));
        if let Some(v) = self.instances.lock().unwrap().get_mut(&backend) {
            v.retain(|i| i.name != instance);
        }
        // Like Ganeti, the job is known (and runs) once submitted.
        let id = 5000 + self.next_job.fetch_add(1, Ordering::SeqCst) as u64;
        self.job(id, JobStatus::Running, OpCode::InstanceRemove);
        Ok(JobId(id))
    }
    async fn list_instances(&self, backend: BackendId) -> Result<Vec<InstanceInfo>, BackendError> {
        *self.listed.lock().unwrap().entry(backend).or_default() += 1;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = *self.list_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.unreachable.lock().unwrap().contains(&backend) {
            return Err(BackendError::Unavailable("connection refused".into()));
        }
        Ok(self
            .instances
            .lock()
            .unwrap()
            .get(&backend)
            .cloned()
            .unwrap_or_default())
    }
    async fn instance_info(
        &self,
        _: BackendId,
        _: &str,
    ) -> Result<Option<InstanceInfo>, BackendError> {
        nope()
    }
    async fn console(&self, _: BackendId, _: &str) -> Result<ConsoleInfo, BackendError> {
        nope()
    }
    async fn job_status(&self, _: BackendId, job: JobId) -> Result<JobInfo, BackendError> {
        self.jobs
            .lock()
            .unwrap()
            .get(&job)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(format!("job {job}")))
    }
    async fn wait_for_job(
        &self,
        b: BackendId,
        job: JobId,
        _: Duration,
    ) -> Result<JobInfo, BackendError> {
        self.job_status(b, job).await
    }
    async fn cluster_load(&self, _: BackendId) -> Result<ClusterLoad, BackendError> {
        nope()
    }
    async fn create_network(&self, _: &NetworkSpec) -> Result<JobId, BackendError> {
        nope()
    }
    async fn connect_network(
        &self,
        _: BackendId,
        _: &str,
        _: &NetworkLink,
    ) -> Result<Vec<JobId>, BackendError> {
        nope()
    }
    async fn disconnect_network(&self, _: BackendId, _: &str) -> Result<Vec<JobId>, BackendError> {
        nope()
    }
    async fn remove_network(&self, _: BackendId, _: &str) -> Result<JobId, BackendError> {
        nope()
    }
    async fn list_networks(&self, _: BackendId) -> Result<Vec<NetworkInfo>, BackendError> {
        nope()
    }
    async fn node_groups(&self, _: BackendId) -> Result<Vec<String>, BackendError> {
        nope()
    }
    async fn add_nic(&self, _: BackendId, _: &str, _: &NicSpec) -> Result<JobId, BackendError> {
        nope()
    }
    async fn remove_nic(&self, _: BackendId, _: &str, _: &str) -> Result<JobId, BackendError> {
        nope()
    }
    async fn resize(&self, _: BackendId, _: &str, _: i32, _: i32) -> Result<JobId, BackendError> {
        nope()
    }
    async fn reinstall(
        &self,
        _: BackendId,
        _: &str,
        _: &synnefo_core::ports::ReinstallSpec,
    ) -> Result<JobId, BackendError> {
        nope()
    }
    async fn set_boot(
        &self,
        _: BackendId,
        _: &str,
        _: synnefo_core::ports::BootFrom,
    ) -> Result<JobId, BackendError> {
        nope()
    }
}
