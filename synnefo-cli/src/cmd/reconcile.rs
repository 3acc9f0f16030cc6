//! `synnefo reconcile`: bring the DB in sync with what Ganeti knows.
//!
//! The seed's `manage.py reconcile`: `--all` checks every VM (with a
//! progress bar on a terminal); without it each invocation checks the
//! staggered batch of `ceil(num_vms * interval / RECONCILIATION_MIN)` VMs
//! reconciled longest ago, for cron. `--daemon` is the same with the
//! interval built in. Report-only unless a `--fix-*` flag is given.
//!
//! Exit codes (one-shot): 0 nothing found (or everything found was fixed)
//! and every cluster listed; 1 discrepancies remain (report-only, not
//! selected, or no automatic fix); 3 a selected fix failed; 4 clean as far
//! as it could see, but a cluster could not be listed; 69 the database is
//! unreachable; 78 bad settings. `--daemon` exits 0 on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::TimeDelta;
use synnefo_core::ports::{Clock, GanetiBackend, Store, SystemClock};
use synnefo_core::reconcile::{
    Discrepancy, FixFlags, Guard, Guards, OrphanReason, UncheckedReason,
};
use synnefo_core::service::reconcile::{
    BackendStatus, FixResult, Phase, ProgressEvent, Reconciler, RunOptions, RunReport, Scope,
};
use synnefo_ganeti::backend::RapiBackend;

use crate::common::{ConfigError, Context, Unavailable, shutdown_token};

mod networks_report;

/// Exit code: discrepancies remain.
pub const EXIT_FOUND: u8 = 1;
/// Exit code: a selected fix failed.
pub const EXIT_FIX_FAILED: u8 = 3;
/// Exit code: a cluster could not be listed (nothing else found).
pub const EXIT_INCOMPLETE: u8 = 4;

/// Options of `synnefo reconcile`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 clean (or all fixed), 1 discrepancies remain, \
3 a fix failed, 4 a cluster could not be listed, 69 database unreachable, 78 bad settings."
)]
pub struct Args {
    /// Reconcile every VM now instead of this run's staggered batch
    #[arg(long)]
    pub all: bool,
    /// Minutes between runs (cron period, or the daemon's) [default: reconciliation.interval_min]
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,
    /// Mark VMs whose instance is gone as deleted (R1)
    #[arg(long)]
    pub fix_stale: bool,
    /// Remove instances with no live VM from Ganeti (R2)
    #[arg(long)]
    pub fix_orphans: bool,
    /// Set operstate, NICs, stuck builds, flavor and cluster from Ganeti (R3 and extensions)
    #[arg(long)]
    pub fix_unsynced: bool,
    /// All of the --fix-* flags
    #[arg(long)]
    pub fix_all: bool,
    /// Print the report as JSON (one object per run; one line per run with --daemon)
    #[arg(long)]
    pub json: bool,
    /// Run every --interval until SIGTERM
    #[arg(long)]
    pub daemon: bool,
    /// Minutes before a VM in BUILD with no create job, or an action with no
    /// job id, counts as stuck
    #[arg(long, value_name = "MINUTES", default_value_t = 15)]
    pub stuck_after: u64,
    /// Most Ganeti job lookups per run
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_job_lookups: usize,
    /// Never draw a progress bar
    #[arg(long)]
    pub no_progress: bool,
    /// Reconcile networks, NICs and address pools instead of VMs: networks
    /// removed behind our back or disconnected from a node group, and
    /// ports' NICs an instance lacks (--fix-stale makes, connects or adds
    /// them again), networks and NICs of ours the DB does not record
    /// (--fix-orphans adopts or removes them), pools whose free list
    /// disagrees with the held addresses (--fix-unsynced rebuilds it);
    /// NICs that differ from their port and networks wired to another
    /// link are reported only. A port changed within --stuck-after is held.
    #[arg(long, conflicts_with = "daemon")]
    pub networks: bool,
}

impl Args {
    fn fix(&self) -> FixFlags {
        if self.fix_all {
            FixFlags::ALL
        } else {
            FixFlags {
                stale: self.fix_stale,
                orphans: self.fix_orphans,
                unsynced: self.fix_unsynced,
            }
        }
    }
}

/// Runs `synnefo reconcile`.
pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let interval = args
        .interval
        .unwrap_or(settings.reconciliation.interval_min);
    let stuck_after = i64::try_from(args.stuck_after)
        .ok()
        .and_then(TimeDelta::try_minutes)
        .ok_or_else(|| ConfigError(format!("--stuck-after {} is too large", args.stuck_after)))?;
    let store: Arc<dyn Store> = Arc::new(ctx.store().await?);
    let ganeti = backends(&*store, ctx).await?;
    if args.networks {
        return networks(ctx, store, ganeti, &args, Guards { stuck_after }).await;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let reconciler = Reconciler::new(store, ganeti, clock, settings.backend_prefix_id.clone());
    let opts = RunOptions {
        scope: if args.all {
            Scope::All
        } else {
            Scope::Staggered {
                interval_min: interval,
                reconciliation_min: settings.reconciliation.reconciliation_min,
            }
        },
        fix: args.fix(),
        guards: Guards { stuck_after },
        max_job_lookups: args.max_job_lookups,
        ..RunOptions::default()
    };

    if args.daemon {
        let token = shutdown_token();
        let json = args.json;
        tracing::info!(interval_min = interval, scope = ?opts.scope, fix = ?opts.fix, "reconciler started");
        reconciler
            .run_periodically(
                opts,
                Duration::from_secs(interval * 60),
                token,
                move |r| match r {
                    Ok(report) => {
                        log_summary(&report);
                        if json {
                            match serde_json::to_string(&report) {
                                Ok(line) => println!("{line}"),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot serialise the report")
                                }
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reconcile run failed"),
                },
            )
            .await;
        tracing::info!("reconciler stopped");
        return Ok(ExitCode::SUCCESS);
    }

    let bar = (args.all && !args.no_progress && std::io::stderr().is_terminal()).then(progress_bar);
    let report = match &bar {
        Some(bar) => {
            let b = bar.clone();
            let progress = move |e: ProgressEvent| match e {
                ProgressEvent::Phase(phase, total) => {
                    b.set_length(total);
                    b.set_position(0);
                    b.set_message(phase_name(phase));
                }
                ProgressEvent::Advance(n) => b.inc(n),
            };
            reconciler.run_once(&opts, &progress).await
        }
        None => reconciler.run(&opts).await,
    }
    .map_err(|e| Unavailable(e.to_string()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::from(exit_code(&report)))
}

/// `synnefo reconcile --networks`: one pass over every cluster's networks,
/// its instances' NICs and every pool; the same flags and exit codes as
/// for VMs.
async fn networks(
    ctx: &Context,
    store: Arc<dyn Store>,
    ganeti: Arc<dyn GanetiBackend>,
    args: &Args,
    guards: Guards,
) -> anyhow::Result<ExitCode> {
    use synnefo_core::service::network::{NetworkFixes, NetworkRunOptions, Networking};
    let settings = &ctx.settings;
    let backend_ids: Vec<_> = store
        .list_backends()
        .await
        .map_err(|e| Unavailable(format!("database: {e}")))?
        .into_iter()
        .filter(|b| !b.offline)
        .map(|b| b.id)
        .collect();
    let net = Networking::new(
        store,
        ganeti,
        synnefo_core::service::compute::ComputeConfig::from_settings(settings).network,
        settings.backend_prefix_id.clone(),
    );
    let f = args.fix();
    let opts = NetworkRunOptions {
        fix: NetworkFixes {
            missing: f.stale,
            extra: f.orphans,
            pools: f.unsynced,
        },
        guards,
        now: SystemClock.now(),
    };
    let report = net
        .reconcile(&backend_ids, opts)
        .await
        .map_err(|e| Unavailable(e.to_string()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
    } else {
        print!("{}", networks_report::render(&report));
    }
    Ok(ExitCode::from(if !report.failed.is_empty() {
        EXIT_FIX_FAILED
    } else if report.unfixed() > 0 {
        EXIT_FOUND
    } else if !report.unlisted.is_empty() {
        EXIT_INCOMPLETE
    } else {
        0
    }))
}

/// The exit code of a one-shot run (see the module docs).
pub fn exit_code(report: &RunReport) -> u8 {
    if report.failed_fixes() > 0 {
        EXIT_FIX_FAILED
    } else if !report.unfixed.is_empty() {
        EXIT_FOUND
    } else if report.incomplete() {
        EXIT_INCOMPLETE
    } else {
        0
    }
}

/// One client per DB backend that has credentials in
/// `[ganeti.clusters.<name>]`; a backend without them fails its listing
/// (reported, and it holds back R1 like any unreachable cluster).
pub(crate) async fn backends(
    store: &dyn Store,
    ctx: &Context,
) -> anyhow::Result<Arc<dyn GanetiBackend>> {
    let settings = &ctx.settings;
    let rows = store
        .list_backends()
        .await
        .map_err(|e| Unavailable(format!("database: {e}")))?;
    let mut clusters = Vec::new();
    for b in &rows {
        match settings.ganeti.clusters.get(&b.name) {
            Some(c) => clusters.push((b.id, c.clone())),
            None if !b.offline => {
                tracing::warn!(backend = %b.name, "no [ganeti.clusters.{}] credentials; its listing will fail", b.name)
            }
            None => {}
        }
    }
    for name in settings.ganeti.clusters.keys() {
        if !rows.iter().any(|b| &b.name == name) {
            tracing::warn!(cluster = %name, "configured but not in the database (no VM lives there yet); not listed");
        }
    }
    let rapi = RapiBackend::new(clusters, settings.ganeti.clone())
        .map_err(|e| ConfigError(format!("building the RAPI clients: {e}")))?;
    Ok(Arc::new(rapi))
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    let style =
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Listing => "clusters",
        Phase::Loading => "VMs",
        Phase::Jobs => "jobs",
        Phase::Fixing => "fixing",
    }
}

fn log_summary(r: &RunReport) {
    tracing::info!(
        checked = r.batch,
        total = r.total_vms,
        discrepancies = r.discrepancies.len(),
        held = r.held.len(),
        unchecked = r.unchecked.len(),
        fixed = r
            .fixes
            .iter()
            .filter(|f| matches!(f.result, FixResult::Done { .. }))
            .count(),
        failed = r.failed_fixes(),
        ms = r.duration_ms,
        "reconcile run"
    );
}

fn describe(d: &Discrepancy) -> (String, String) {
    let cluster =
        |b: Option<synnefo_core::ids::BackendId>| b.map_or("-".to_string(), |b| b.to_string());
    match d {
        Discrepancy::Stale {
            backend, operstate, ..
        } => (
            cluster(*backend),
            format!("{operstate} in the DB, no instance in Ganeti"),
        ),
        Discrepancy::Orphan {
            backend,
            instance,
            reason,
            ..
        } => (
            backend.to_string(),
            match reason {
                OrphanReason::Unknown => format!("{instance}: no such VM in the DB"),
                OrphanReason::Deleted => format!("{instance}: the VM is deleted"),
                OrphanReason::Destroyed => format!("{instance}: the VM is DESTROYED"),
                OrphanReason::Duplicate { recorded } => {
                    format!("{instance}: a copy; the VM lives on {recorded}")
                }
            },
        ),
        Discrepancy::UnsyncedOperstate {
            backend,
            db,
            ganeti_running,
            to,
            ..
        } => (
            backend.to_string(),
            format!(
                "{db} in the DB, {} in Ganeti -> {to}",
                if *ganeti_running {
                    "running"
                } else {
                    "stopped"
                }
            ),
        ),
        Discrepancy::UnsyncedFlavor {
            backend,
            flavor,
            db,
            ganeti_vcpus,
            ganeti_ram_mib,
            matching,
            ..
        } => (
            backend.to_string(),
            format!(
                "flavor {flavor} {} vCPU/{} MiB, Ganeti {} vCPU/{} MiB ({})",
                db.vcpus,
                db.ram_mib,
                ganeti_vcpus.map_or("?".into(), |v| v.to_string()),
                ganeti_ram_mib.map_or("?".into(), |v| v.to_string()),
                matching.map_or("no flavor matches".into(), |f| format!(
                    "flavor {f} matches"
                ))
            ),
        ),
        Discrepancy::UnsyncedNics {
            backend,
            db,
            ganeti,
            ..
        } => {
            let ips = |v: Vec<Option<String>>| {
                v.into_iter()
                    .map(|i| i.unwrap_or_else(|| "-".into()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            (
                backend.to_string(),
                format!(
                    "NICs [{}] in the DB, [{}] in Ganeti",
                    ips(db.iter().map(|n| n.ip.clone()).collect()),
                    ips(ganeti.iter().map(|n| n.ip.clone()).collect())
                ),
            )
        }
        Discrepancy::StuckBuild {
            backend,
            reason,
            create_job,
            message,
            to,
            ..
        } => (
            cluster(*backend),
            format!(
                "BUILD, {reason:?} (job {}){} -> {to}",
                create_job.map_or("-".into(), |j| j.to_string()),
                message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ),
        Discrepancy::WrongBackend {
            recorded, found_on, ..
        } => (
            cluster(*recorded),
            format!(
                "instance found on {}",
                found_on
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// The human report.
pub fn render(r: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let scope = match r.scope {
        Scope::All => "all".to_string(),
        Scope::Staggered {
            interval_min,
            reconciliation_min,
        } => {
            format!("staggered: every {interval_min} min, each VM within {reconciliation_min} min")
        }
    };
    let _ = writeln!(
        out,
        "reconcile: {} of {} VMs checked ({scope})",
        r.batch, r.total_vms
    );
    for b in &r.backends {
        let status = match &b.status {
            BackendStatus::Listed { instances } => format!("{instances} instances"),
            BackendStatus::Offline => "offline, skipped".into(),
            BackendStatus::Unreachable { error } => format!("UNREACHABLE: {error}"),
        };
        let _ = writeln!(out, "  cluster {} ({}): {status}", b.id, b.name);
    }
    let mut outcome: BTreeMap<usize, String> = BTreeMap::new();
    for f in &r.fixes {
        let s = match &f.result {
            FixResult::Done { job: Some(j) } => format!("fixed (job {j})"),
            FixResult::Done { job: None } => "fixed".into(),
            FixResult::Skipped { reason } => format!("skipped: {reason}"),
            FixResult::Failed { error } => format!("FAILED: {error}"),
        };
        outcome
            .entry(f.discrepancy)
            .and_modify(|e| {
                e.push_str("; ");
                e.push_str(&s);
            })
            .or_insert(s);
    }
    if r.discrepancies.is_empty() {
        let _ = writeln!(out, "no discrepancies");
    } else {
        let _ = writeln!(
            out,
            "{:<19} {:>8} {:>7}  {:<50}  FIX",
            "DISCREPANCY", "VM", "CLUSTER", "DETAIL"
        );
        for (i, d) in r.discrepancies.iter().enumerate() {
            let (cluster, detail) = describe(d);
            let fix = outcome.remove(&i).unwrap_or_else(|| match d.fix_class() {
                synnefo_core::reconcile::FixClass::Manual => "manual".into(),
                synnefo_core::reconcile::FixClass::Stale => "report only (--fix-stale)".into(),
                synnefo_core::reconcile::FixClass::Orphans => "report only (--fix-orphans)".into(),
                synnefo_core::reconcile::FixClass::Unsynced => {
                    "report only (--fix-unsynced)".into()
                }
            });
            let _ = writeln!(
                out,
                "{:<19} {:>8} {:>7}  {:<50}  {fix}",
                d.rule().as_str(),
                d.vm().to_string(),
                cluster,
                detail
            );
        }
    }
    if !r.held.is_empty() {
        let _ = writeln!(out, "held back by a guard: {}", r.held.len());
        for h in &r.held {
            let why = match h.guard {
                Guard::JobInFlight { job } => format!(
                    "job {} in flight",
                    job.map_or("(id pending)".into(), |j| j.to_string())
                ),
                Guard::CreatePending { job } => format!(
                    "create job {} not ended",
                    job.map_or("(id pending)".into(), |j| j.to_string())
                ),
                Guard::DestroyPending { job } => format!(
                    "remove job {} not ended",
                    job.map_or("(id pending)".into(), |j| j.to_string())
                ),
                Guard::TooYoung => "in BUILD, too young to call stuck".into(),
                Guard::ClusterUnreachable => "a cluster could not be listed".into(),
            };
            let _ = writeln!(
                out,
                "  {:<19} {:>8}  {why}",
                h.rule.as_str(),
                h.vm.to_string()
            );
        }
    }
    if !r.unchecked.is_empty() {
        let count = |reason| r.unchecked.iter().filter(|u| u.reason == reason).count();
        let _ = writeln!(
            out,
            "not checked: {} (cluster offline {}, unreachable {}, unknown {})",
            r.unchecked.len(),
            count(UncheckedReason::BackendOffline),
            count(UncheckedReason::BackendUnreachable),
            count(UncheckedReason::BackendUnknown)
        );
    }
    out
}
