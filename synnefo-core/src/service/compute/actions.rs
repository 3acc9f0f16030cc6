//! Server actions (start, stop, reboot, delete), renaming and consoles,
//! and the path every action that submits a Ganeti job takes
//! ([`Compute::run_action`]; resizes use it too, see `resize`).

use super::{Caller, Compute, ConsoleAccess, generate_password, validate_server_name};
use crate::error::{ActionError, BackendError, ServiceError};
use crate::ids::{BackendId, InstanceName, JobId};
use crate::model::{ActionLog, InstanceAction, Quota, Vm};
use crate::ports::BootFrom;
use crate::service::{VmChange, modify_vm, modify_vm_within};
use crate::state::{self, Action, JobStatus, OperState, PendingAction, RebootKind, VmState};

/// What [`Compute::run_action`] starts: the action, the state machine's
/// transition that starts it, and what its job needs.
pub(super) struct Start<'a> {
    /// The action (its history name, its job).
    pub(super) action: Action,
    /// The transition from the current state (refusals are the caller's
    /// errors).
    pub(super) transition: &'a (dyn Fn(&VmState) -> Result<VmState, ActionError> + Send + Sync),
    /// Check the project's quota in the same write (a resize's
    /// reservation).
    pub(super) quota: Option<Quota>,
    /// A resize's or revert's target: the vCPUs and RAM (MiB) its
    /// set-params job gives the instance.
    pub(super) beparams: Option<(i32, i32)>,
    /// A rebuild's image, OS and OS parameters (`start` follows the
    /// rebuild the transition records: the server was running).
    pub(super) reinstall: Option<crate::ports::ReinstallSpec>,
}

impl Compute {
    /// Renames a server.
    pub async fn rename_server(
        &self,
        caller: &Caller,
        id: &str,
        name: &str,
    ) -> Result<Vm, ServiceError> {
        validate_server_name(name)?;
        let vm = self.server(caller, id).await?;
        Ok(self.store.rename_vm(vm.id, name).await?)
    }

    /// Starts a stopped server.
    pub async fn start(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Start).await
    }

    /// Shuts a running server down.
    pub async fn stop(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Stop).await
    }

    /// Reboots a server.
    pub async fn reboot(
        &self,
        caller: &Caller,
        id: &str,
        kind: RebootKind,
    ) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Reboot(kind)).await
    }

    /// Deletes a server (it disappears from listings at once).
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        self.act(caller, id, Action::Destroy).await
    }

    /// Runs a user action: state machine, Ganeti, record the job.
    /// A locked server refuses it unless the caller is an operator
    /// ([`Compute::lock`]). A resize and its revert carry flavors:
    /// [`Compute::resize`], [`Compute::revert_resize`].
    pub async fn act(&self, caller: &Caller, id: &str, action: Action) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        let transition = move |s: &VmState| state::start_action(s, action);
        let start = Start {
            action,
            transition: &transition,
            quota: None,
            beparams: None,
            reinstall: None,
        };
        self.run_action(caller, vm, start).await
    }

    /// The path of every action with a Ganeti job: the lock, the state
    /// machine's transition (with the history entry, and the quota when
    /// asked, in the same write), the job, then the job recorded or the
    /// change rolled back.
    pub(super) async fn run_action(
        &self,
        caller: &Caller,
        vm: Vm,
        start: Start<'_>,
    ) -> Result<Vm, ServiceError> {
        let action = start.action;
        self.check_unlocked(caller, &vm).await?;
        let before = vm.state.clone();
        let request = caller.request_id.clone();
        let change = |v: &Vm| {
            let next = (start.transition)(&v.state)?;
            // The request enters the server's history with the state
            // change it makes (one transaction).
            let action_log = request.as_ref().map(|request_id| {
                let now = chrono::Utc::now();
                ActionLog::Accepted(InstanceAction {
                    vm: v.id,
                    request_id: request_id.clone(),
                    action: action_name(action).to_string(),
                    user_id: caller.user_id.clone(),
                    project_id: caller.project_id.clone(),
                    start_time: now,
                    updated: now,
                    message: None,
                    job_id: None,
                })
            });
            Ok(Some(VmChange {
                state: next,
                nics: None,
                resize: None,
                action_log,
                image: None,
            }))
        };
        let started = match start.quota {
            Some(quota) => modify_vm_within(&*self.store, vm.id, quota, change).await,
            None => modify_vm(&*self.store, vm.id, change).await,
        }
        .map_err(|e| match e {
            ServiceError::Store(e) => super::create::quota_error(e),
            other => other,
        })?
        .unwrap_or(vm);
        let Some(backend) = started.backend_id else {
            // Never placed: nothing exists in Ganeti.
            return self.finish_without_ganeti(started, action).await;
        };
        let instance = InstanceName::new(&self.config.prefix, started.id).to_string();
        if action == Action::Destroy
            && started.state.operstate() == OperState::Error
            && self.instance_absent(backend, &instance).await
        {
            // Its create failed: there is no instance, hence nothing for a
            // removal job to do (Ganeti would accept the job and fail it).
            return self.finish_without_ganeti(started, action).await;
        }
        let submitted = match action {
            Action::Start => self.ganeti.startup(backend, &instance).await,
            Action::Stop | Action::Suspend => {
                self.ganeti
                    .shutdown(backend, &instance, Some(self.config.shutdown_timeout))
                    .await
            }
            Action::Reboot(kind) => self.ganeti.reboot(backend, &instance, kind).await,
            Action::Destroy => self.ganeti.remove(backend, &instance).await,
            Action::Resize | Action::RevertResize => match start.beparams {
                Some((vcpus, ram)) => self.ganeti.resize(backend, &instance, vcpus, ram).await,
                None => Err(BackendError::Rejected(format!(
                    "no flavor to resize server {} to",
                    started.id
                ))),
            },
            Action::Rebuild => match (&start.reinstall, started.state.rebuild()) {
                (Some(spec), Some(r)) => {
                    let spec = crate::ports::ReinstallSpec {
                        start: r.start,
                        ..spec.clone()
                    };
                    self.ganeti.reinstall(backend, &instance, &spec).await
                }
                _ => Err(BackendError::Rejected(format!(
                    "no image to rebuild server {} from",
                    started.id
                ))),
            },
            Action::Rescue => {
                let image = BootFrom::Rescue(self.config.rescue_image.clone());
                self.ganeti.set_boot(backend, &instance, image).await
            }
            Action::Unrescue => {
                self.ganeti
                    .set_boot(backend, &instance, BootFrom::Disk)
                    .await
            }
            Action::Create | Action::Unsuspend => {
                return Ok(started);
            }
        };
        match submitted {
            Ok(job) => {
                let recorded = self
                    .record(started, action, job, request.as_deref())
                    .await?;
                if matches!(action, Action::Resize | Action::RevertResize) {
                    return self
                        .restart_after_resize(recorded, backend, &instance)
                        .await;
                }
                Ok(recorded)
            }
            Err(BackendError::NotFound(_)) if action == Action::Destroy => {
                self.finish_without_ganeti(started, action).await
            }
            Err(e) => {
                tracing::warn!(vm = %started.id, action = action.as_str(), error = %e, "Ganeti did not take the action; rolling back");
                let reason = e.to_string();
                modify_vm(&*self.store, started.id, |v| {
                    Ok(rollback(v, action, &before).map(|mut c| {
                        c.action_log = request.as_ref().map(|r| ActionLog::Failed {
                            request_id: r.clone(),
                            reason: reason.clone(),
                        });
                        c
                    }))
                })
                .await?;
                Err(match e {
                    BackendError::Unavailable(_)
                    | BackendError::NoBackend(_)
                    | BackendError::Rejected(_) => e.into(),
                    other => BackendError::Rejected(other.to_string()).into(),
                })
            }
        }
    }

    /// Records the job Ganeti took for `action`: on the pending action if
    /// it still waits for it, and in the request's history entry in any
    /// case (the job's notifications may have settled the action first).
    /// A job whose failure is already on record shows it there too.
    async fn record(
        &self,
        started: Vm,
        action: Action,
        job: JobId,
        request: Option<&str>,
    ) -> Result<Vm, ServiceError> {
        let vm = modify_vm(&*self.store, started.id, |v| {
            Ok(record_job(v, action, job, request))
        })
        .await?
        .unwrap_or(started);
        let failed = vm.state.job().filter(|j| {
            j.job_id == Some(job) && matches!(j.status, JobStatus::Error | JobStatus::Canceled)
        });
        match (failed.map(|j| j.message()), request) {
            (Some(message), Some(_)) => {
                let reason = message.unwrap_or_else(|| format!("Ganeti job {job} failed"));
                Ok(modify_vm(&*self.store, vm.id, |v| {
                    Ok(Some(VmChange {
                        state: v.state.clone(),
                        nics: None,
                        resize: None,
                        action_log: Some(ActionLog::JobsFailed(vec![(job, reason.clone())])),
                        image: None,
                    }))
                })
                .await?
                .unwrap_or(vm))
            }
            _ => Ok(vm),
        }
    }

    /// A running server's resize stage: submits the hard reboot that
    /// makes the instance take the parameters its set-params job (already
    /// submitted, so queued before it on the instance's lock) gives it,
    /// and records it. When Ganeti does not take the reboot, the stage
    /// ends with the set-params job alone and the new parameters apply at
    /// the server's next start (logged).
    async fn restart_after_resize(
        &self,
        vm: Vm,
        backend: BackendId,
        instance: &str,
    ) -> Result<Vm, ServiceError> {
        let restarting = vm
            .state
            .resize()
            .is_some_and(|r| r.in_flight() && r.restart.is_some_and(|x| x.job_id.is_none()));
        if !restarting {
            return Ok(vm);
        }
        let submitted = self
            .ganeti
            .reboot(backend, instance, RebootKind::Hard)
            .await;
        let id = vm.id;
        let change = |v: &Vm| {
            let next = match &submitted {
                Ok(job) => state::record_reboot_job(&v.state, *job),
                Err(_) => state::without_restart(&v.state),
            };
            Ok((next != v.state).then_some(VmChange {
                state: next,
                nics: None,
                resize: None,
                image: None,
                action_log: None,
            }))
        };
        if let Err(e) = &submitted {
            tracing::warn!(vm = %id, error = %e, "Ganeti did not take the reboot after a resize; the new flavor applies at the next start");
        }
        Ok(modify_vm(&*self.store, id, change).await?.unwrap_or(vm))
    }

    /// True only if Ganeti answers that it does not have `instance`; an
    /// unreachable cluster is not an answer (the caller then submits the
    /// removal as usual, whose outcome settles the VM).
    async fn instance_absent(&self, backend: BackendId, instance: &str) -> bool {
        match self.ganeti.instance_info(backend, instance).await {
            Ok(found) => found.is_none(),
            Err(e) => {
                tracing::warn!(%instance, error = %e, "cannot tell whether the instance exists; submitting its removal");
                false
            }
        }
    }

    /// Completes a destroy that needs no Ganeti job.
    async fn finish_without_ganeti(&self, vm: Vm, action: Action) -> Result<Vm, ServiceError> {
        if action != Action::Destroy {
            return Err(
                BackendError::Rejected(format!("server {} has no Ganeti instance", vm.id)).into(),
            );
        }
        Ok(modify_vm(&*self.store, vm.id, |v| {
            Ok(Some(VmChange {
                state: state::destroyed_without_ganeti(&v.state),
                nics: None,
                resize: None,
                action_log: None,
                image: None,
            }))
        })
        .await?
        .unwrap_or(vm))
    }

    /// Hands out a console: Ganeti's console location, forwarded through
    /// the proxy with a fresh one-time password.
    pub async fn console(&self, caller: &Caller, id: &str) -> Result<ConsoleAccess, ServiceError> {
        let vm = self.server(caller, id).await?;
        if vm.state.operstate() != OperState::Started {
            return Err(BackendError::Rejected(format!(
                "Instance {} is not ready for a console (status {}).",
                vm.id,
                state::server_status(&vm.state).as_str()
            ))
            .into());
        }
        let Some(forwarder) = &self.console else {
            return Err(BackendError::Unavailable("no console proxy is configured".into()).into());
        };
        let backend = vm.backend_id.ok_or_else(|| {
            BackendError::Rejected(format!("server {} has no Ganeti instance", vm.id))
        })?;
        let instance = InstanceName::new(&self.config.prefix, vm.id).to_string();
        let info = self.ganeti.console(backend, &instance).await?;
        if info.kind != "vnc" {
            return Err(ServiceError::BadRequest(format!(
                "Unsupported console type {:?} for instance {}",
                info.kind, vm.id
            )));
        }
        let (Some(host), Some(port)) = (info.host, info.port) else {
            return Err(BackendError::Protocol(format!(
                "Ganeti gave no VNC host/port for {instance}"
            ))
            .into());
        };
        let password = generate_password();
        let label = format!("vm {} user {}", vm.id, caller.user_id);
        let endpoint = forwarder
            .forward_for(caller, &host, port, &password, &label)
            .await?;
        Ok(ConsoleAccess {
            protocol: "vnc".into(),
            host: endpoint.host,
            port: endpoint.port,
            password,
        })
    }
}

/// Records the job submitted for `action` on the pending action, if that
/// action still waits for it, and in request `request`'s history entry
/// either way (a notification of the job may have settled the action
/// before the API got here).
pub(super) fn record_job(
    vm: &Vm,
    action: Action,
    job: JobId,
    request: Option<&str>,
) -> Option<VmChange> {
    let pending = matches!(
        vm.state.action(),
        Some(PendingAction { action: a, job_id: None }) if a == action
    );
    let action_log = request.map(|r| ActionLog::Submitted {
        request_id: r.to_string(),
        job_id: job,
    });
    match (pending, action_log) {
        (true, action_log) => Some(VmChange {
            state: state::record_submitted_job(&vm.state, job),
            nics: None,
            resize: None,
            action_log,
            image: None,
        }),
        (false, Some(log)) => Some(VmChange {
            state: vm.state.clone(),
            nics: None,
            resize: None,
            action_log: Some(log),
            image: None,
        }),
        (false, None) => None,
    }
}

/// Nova's name for an action in the instance-action history.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Start => "start",
        Action::Stop => "stop",
        Action::Reboot(_) => "reboot",
        Action::Destroy => "delete",
        Action::Suspend => "suspend",
        Action::Unsuspend => "resume",
        Action::Resize => "resize",
        Action::RevertResize => "revertResize",
        Action::Rebuild => "rebuild",
        Action::Rescue => "rescue",
        Action::Unrescue => "unrescue",
    }
}

/// Undoes a started action that Ganeti did not take, if it is still ours.
fn rollback(vm: &Vm, action: Action, before: &VmState) -> Option<VmChange> {
    state::rollback_submit(&vm.state, action, before).map(|next| VmChange {
        state: next,
        nics: None,
        resize: None,
        action_log: None,
        image: None,
    })
}
