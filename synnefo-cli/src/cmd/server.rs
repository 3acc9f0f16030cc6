//! `synnefo server`: operators' view of every project's servers
//! (`list`, `show`, `events`) and their actions on any of them (`start`,
//! `stop`, `reboot`, `delete`, `suspend`, `unsuspend`, `resize`, `rescue`,
//! `unrescue`, `rename`). The actions go
//! through the compute service with an operator caller, never straight to
//! the store: the state machine's rules, the Ganeti job and the history
//! entry are the ones an API request gets.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;
use synnefo_core::ServiceError;
use synnefo_core::ids::VmId;
use synnefo_core::ports::{Store, VmQuery, VmStore};
use synnefo_core::service::admin::Admin;
use synnefo_core::service::compute::{Caller, Compute, ComputeConfig, ResizeConfirm, action_name};
use synnefo_core::state::{Action, OperState, RebootKind, server_status};

use crate::common::Context;

/// Server commands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// List servers of every project (newest first)
    List {
        /// Only this project (id)
        #[arg(long)]
        project: Option<String>,
        /// Only this backend (id)
        #[arg(long)]
        backend: Option<i64>,
        /// Only these operstates (BUILD, STARTED, STOPPED, ERROR, DESTROYED); repeatable
        #[arg(long = "operstate", value_parser = parse_operstate)]
        operstates: Vec<OperState>,
        /// Include deleted servers
        #[arg(long)]
        deleted: bool,
        /// At most this many
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one server with its state-machine fields and NICs
    Show {
        /// Server id
        id: VmId,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The requests that changed a server (newest first): who asked for
    /// what, when, and the Ganeti job it became (deleted servers too)
    Events {
        /// Server id
        id: VmId,
        /// At most this many (the newest)
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped server of any project (through the same service as
    /// the API, as an operator; recorded in its history)
    Start {
        /// Server id
        id: VmId,
    },
    /// Shut a server of any project down
    Stop {
        /// Server id
        id: VmId,
    },
    /// Reboot a server of any project
    Reboot {
        /// Server id
        id: VmId,
        /// Hard reboot (off and on) instead of a soft one
        #[arg(long)]
        hard: bool,
    },
    /// Delete a server of any project (its instance is removed)
    Delete {
        /// Server id
        id: VmId,
    },
    /// Suspend a server: shut it down; its owner cannot start it until an
    /// operator unsuspends it (Synnefo's administrative suspension)
    Suspend {
        /// Server id
        id: VmId,
    },
    /// Lift a suspension (the server stays stopped; its owner may start it)
    Unsuspend {
        /// Server id
        id: VmId,
    },
    /// Resize a stopped server of any project to another flavor with the
    /// same disk (Synnefo's resize: done when the Ganeti job succeeds, no
    /// confirmation; the project's quota applies)
    Resize {
        /// Server id
        id: VmId,
        /// The new flavor (id or name)
        #[arg(long)]
        flavor: String,
    },
    /// Put a stopped server of any project into rescue mode: its next
    /// boot is from the rescue image (`[ganeti] rescue_image`)
    Rescue {
        /// Server id
        id: VmId,
    },
    /// Take a stopped server out of rescue mode: it boots from its disk
    /// again
    Unrescue {
        /// Server id
        id: VmId,
    },
    /// Rename a server of any project
    Rename {
        /// Server id
        id: VmId,
        /// The new name
        name: String,
    },
}

impl ServerCommand {
    /// The state-machine action of an operator's server command, if it is one.
    fn action(&self) -> Option<(VmId, Action)> {
        Some(match *self {
            ServerCommand::Start { id } => (id, Action::Start),
            ServerCommand::Stop { id } => (id, Action::Stop),
            ServerCommand::Reboot { id, hard } => (
                id,
                Action::Reboot(if hard {
                    RebootKind::Hard
                } else {
                    RebootKind::Soft
                }),
            ),
            ServerCommand::Delete { id } => (id, Action::Destroy),
            ServerCommand::Suspend { id } => (id, Action::Suspend),
            ServerCommand::Unsuspend { id } => (id, Action::Unsuspend),
            _ => return None,
        })
    }
}

/// The compute service over the configured store and clusters, and the
/// command line's operator as its caller with a request id of its own.
async fn operator(ctx: &Context) -> anyhow::Result<(Compute, Caller)> {
    let store: Arc<dyn Store> = Arc::new(ctx.store().await?);
    let ganeti = crate::cmd::reconcile::backends(store.as_ref(), ctx).await?;
    let compute = Compute::new(store, ganeti, ComputeConfig::from_settings(&ctx.settings));
    let caller = Caller {
        request_id: Some(format!("req-{}", uuid::Uuid::new_v4())),
        ..Admin::cli_operator()
    };
    Ok((compute, caller))
}

/// Runs an operator's action on server `id` through the compute service
/// (the rules, Ganeti job and history entry are the API's), as the command
/// line's operator with a request id of its own.
async fn act(ctx: &Context, id: VmId, action: Action) -> anyhow::Result<ExitCode> {
    let (compute, caller) = operator(ctx).await?;
    match compute.act(&caller, &id.to_string(), action).await {
        Ok(vm) => {
            let job = vm.state.action().and_then(|a| a.job_id).map_or_else(
                || "no Ganeti job".to_string(),
                |j| format!("Ganeti job {j}"),
            );
            println!(
                "server {id}: {} accepted ({job}; request {})",
                action_name(action),
                caller.request_id.as_deref().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ServiceError::NotFound(_) | ServiceError::Action(_))) => {
            eprintln!("error: server {id}: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(anyhow::anyhow!("server {id}: {e}")),
    }
}

/// Resizes server `id` to `flavor` (an id, else the name of a flavor not
/// deleted) through the compute service, as the operator: the API's rules,
/// quota check, Ganeti job and history entry, without the owner's
/// confirmation step.
async fn resize(ctx: &Context, id: VmId, flavor: &str) -> anyhow::Result<ExitCode> {
    let (compute, caller) = operator(ctx).await?;
    let flavor_id = match flavor.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => {
            let by_name = compute
                .store()
                .list_flavors()
                .await?
                .into_iter()
                .find(|f| f.name == flavor && !f.deleted);
            match by_name {
                Some(f) => f.id.to_string(),
                None => {
                    eprintln!("error: no flavor {flavor:?}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    match compute
        .resize(
            &caller,
            &id.to_string(),
            &flavor_id,
            ResizeConfirm::Automatic,
        )
        .await
    {
        Ok(vm) => {
            let job = vm.state.action().and_then(|a| a.job_id).map_or_else(
                || "no Ganeti job yet".to_string(),
                |j| format!("Ganeti job {j}"),
            );
            println!(
                "server {id}: resize to flavor {flavor_id} accepted ({job}; request {})",
                caller.request_id.as_deref().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(
            e @ (ServiceError::NotFound(_)
            | ServiceError::Action(_)
            | ServiceError::BadRequest(_)
            | ServiceError::OverLimit(_)),
        ) => {
            eprintln!("error: server {id}: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(anyhow::anyhow!("server {id}: {e}")),
    }
}

/// Puts server `id` into rescue mode (`on`) or takes it out, through the
/// compute service as the operator.
async fn rescue(ctx: &Context, id: VmId, on: bool) -> anyhow::Result<ExitCode> {
    let (compute, caller) = operator(ctx).await?;
    let sid = id.to_string();
    let (done, what) = if on {
        (compute.rescue(&caller, &sid).await, "rescue")
    } else {
        (compute.unrescue(&caller, &sid).await, "unrescue")
    };
    report(id, what, &caller, done)
}

/// Renames server `id` through the compute service as the operator.
async fn rename(ctx: &Context, id: VmId, name: &str) -> anyhow::Result<ExitCode> {
    let (compute, caller) = operator(ctx).await?;
    match compute.rename_server(&caller, &id.to_string(), name).await {
        Ok(vm) => {
            println!("server {id}: renamed to {:?}", vm.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ServiceError::NotFound(_) | ServiceError::BadRequest(_))) => {
            eprintln!("error: server {id}: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(anyhow::anyhow!("server {id}: {e}")),
    }
}

/// What an operator's action printed: accepted with its job, or refused
/// (exit 2).
fn report(
    id: VmId,
    what: &str,
    caller: &Caller,
    done: Result<synnefo_core::model::Vm, ServiceError>,
) -> anyhow::Result<ExitCode> {
    match done {
        Ok(vm) => {
            let job = vm.state.action().and_then(|a| a.job_id).map_or_else(
                || "no Ganeti job yet".to_string(),
                |j| format!("Ganeti job {j}"),
            );
            println!(
                "server {id}: {what} accepted ({job}; request {})",
                caller.request_id.as_deref().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(
            e @ (ServiceError::NotFound(_) | ServiceError::Action(_) | ServiceError::BadRequest(_)),
        ) => {
            eprintln!("error: server {id}: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(anyhow::anyhow!("server {id}: {e}")),
    }
}

fn parse_operstate(s: &str) -> Result<OperState, String> {
    s.to_ascii_uppercase()
        .parse::<OperState>()
        .map_err(|e| e.to_string())
}

/// Runs a server command.
pub async fn run(ctx: &Context, cmd: ServerCommand) -> anyhow::Result<ExitCode> {
    if let Some((id, action)) = cmd.action() {
        return act(ctx, id, action).await;
    }
    if let ServerCommand::Resize { id, flavor } = &cmd {
        return resize(ctx, *id, flavor).await;
    }
    match &cmd {
        ServerCommand::Rescue { id } | ServerCommand::Unrescue { id } => {
            return rescue(ctx, *id, matches!(cmd, ServerCommand::Rescue { .. })).await;
        }
        ServerCommand::Rename { id, name } => return rename(ctx, *id, name).await,
        _ => {}
    }
    let store = ctx.store().await?;
    match cmd {
        ServerCommand::List {
            project,
            backend,
            operstates,
            deleted,
            limit,
            json,
        } => {
            let vms = store
                .list_vms(&VmQuery {
                    project_id: project,
                    backend_id: backend.map(synnefo_core::ids::BackendId),
                    operstates: (!operstates.is_empty()).then_some(operstates),
                    include_deleted: deleted,
                    newest_first: true,
                    limit: Some(limit),
                    ..VmQuery::default()
                })
                .await?;
            if json {
                let rows: Vec<_> = vms
                    .iter()
                    .map(|v| {
                        json!({
                            "id": v.id, "name": v.name, "project_id": v.project_id, "user_id": v.user_id,
                            "operstate": v.state.operstate(), "status": server_status(&v.state).as_str(),
                            "deleted": v.state.deleted(), "suspended": v.state.suspended(),
                            "backend_id": v.backend_id, "flavor_id": v.flavor_id, "image_id": v.image_id,
                            "created": v.created, "updated": v.updated,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:>8}  {:<24} {:<10} {:<11} {:>7}  {:<32}  updated",
                    "id", "name", "operstate", "status", "backend", "project"
                );
                for v in &vms {
                    println!(
                        "{:>8}  {:<24} {:<10} {:<11} {:>7}  {:<32}  {}",
                        v.id,
                        truncate(&v.name, 24),
                        v.state.operstate(),
                        server_status(&v.state).as_str(),
                        v.backend_id
                            .map(|b| b.to_string())
                            .unwrap_or_else(|| "-".into()),
                        v.project_id,
                        v.updated.format("%Y-%m-%d %H:%M:%S")
                    );
                }
                eprintln!("{} server(s)", vms.len());
            }
        }
        ServerCommand::Show { id, json } => {
            let Some(vm) = store.vm(id).await? else {
                eprintln!("error: server {id} not found");
                return Ok(ExitCode::from(2));
            };
            let nics = store.nics(id).await?;
            let doc =
                json!({ "server": vm, "status": server_status(&vm.state).as_str(), "nics": nics });
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "{}",
                    toml::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
                );
            }
        }
        ServerCommand::Events { id, limit, json } => {
            if store.vm(id).await?.is_none() {
                eprintln!("error: server {id} not found");
                return Ok(ExitCode::from(2));
            }
            let actions = store.instance_actions(id, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&actions)?);
            } else {
                println!(
                    "{:<26}  {:<8} {:<40} {:>8}  {:<24} result",
                    "start", "action", "request", "job", "user"
                );
                for a in &actions {
                    println!(
                        "{:<26}  {:<8} {:<40} {:>8}  {:<24} {}",
                        a.start_time.format("%Y-%m-%d %H:%M:%S%.6f"),
                        a.action,
                        a.request_id,
                        a.job_id.map_or_else(|| "-".into(), |j| j.to_string()),
                        truncate(&a.user_id, 24),
                        a.message.as_deref().unwrap_or("ok"),
                    );
                }
                eprintln!("{} request(s)", actions.len());
            }
        }
        ServerCommand::Start { .. }
        | ServerCommand::Stop { .. }
        | ServerCommand::Reboot { .. }
        | ServerCommand::Delete { .. }
        | ServerCommand::Suspend { .. }
        | ServerCommand::Unsuspend { .. }
        | ServerCommand::Resize { .. }
        | ServerCommand::Rescue { .. }
        | ServerCommand::Unrescue { .. }
        | ServerCommand::Rename { .. } => unreachable!("operator actions are handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}
