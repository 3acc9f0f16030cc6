//! `synnefo reconcile` end to end: the RAPI simulator as the cluster, a
//! fresh PostgreSQL database, drift injected behind the control plane's
//! back (instances removed, started and stopped by hand, orphans, VMs stuck
//! in BUILD whose create job ended without the DB hearing), then the
//! binary: report (exit 1), fix (exit 0), clean report (exit 0); and the
//! daemon, which stops on SIGTERM.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use synnefo_core::ids::{BackendId, JobId, VmId};
use synnefo_core::model::{Flavor, Vm};
use synnefo_core::ports::{BackendStore, GanetiBackend, InstanceSpec, VmStateUpdate, VmStore};
use synnefo_core::settings::Settings;
use synnefo_core::state::{Action, OperState, PendingAction, StoredVmState, VmState};
use synnefo_core::store::SeaStore;
use synnefo_ganeti::backend::RapiBackend;
use synnefo_ganeti_sim::{NewSimInstance, SimHandle, Simulator};
use synnefo_test_support::db::TestDb;

const SYNNEFO: &str = env!("CARGO_BIN_EXE_synnefo");

// ---------------------------------------------------------------- world

struct World {
    _db: TestDb,
    store: SeaStore,
    sim: SimHandle,
    ganeti: Arc<RapiBackend>,
    backend: BackendId,
    flavor: Flavor,
    user: String,
    project: String,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

async fn world(test: &str) -> Option<World> {
    let db = TestDb::postgres(test).await?;
    let store = db.store.clone();
    let sim = Simulator::builder().start().await.expect("simulator");
    let backend = store
        .upsert_backend("sim", "127.0.0.1", sim.addr().port())
        .await
        .unwrap()
        .id;
    let settings = Settings::defaults_with("").unwrap();
    let ganeti = Arc::new(RapiBackend::from_clients(
        [(backend, sim.client().unwrap())],
        settings.ganeti,
    ));
    let synnefo_test_support::builders::Tenant {
        user,
        project,
        flavor,
    } = synnefo_test_support::builders::tenant_with(
        &store,
        true,
        synnefo_test_support::builders::flavor_of(1, 128, 1, "diskless"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url, sim.addr().port());
    Some(World {
        _db: db,
        store,
        sim,
        ganeti,
        backend,
        flavor,
        user: user.id,
        project: project.id,
        _dir: dir,
        config,
    })
}

fn write_config(dir: &Path, db_url: &str, port: u16) -> PathBuf {
    let path = dir.join("synnefo.toml");
    let text = format!(
        r#"data_dir = "{data}"
backend_prefix_id = "snf-"

[database]
url = "{db_url}"

[ganeti.clusters.sim]
host = "127.0.0.1"
port = {port}
https = false
username = "synnefo"
password = "synnefo"
timeout_secs = 10

[log]
level = "warn"
"#,
        data = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl World {
    /// A VM in the DB (on the simulator) in `operstate`.
    async fn vm(&self, operstate: OperState, edit: impl FnOnce(&mut StoredVmState)) -> Vm {
        let mut state = StoredVmState::settled(operstate);
        edit(&mut state);
        synnefo_test_support::builders::stored_vm(
            &self.store,
            (&self.user, &self.project),
            &self.flavor,
            self.backend,
            VmState::from_stored(state),
            |_| None,
        )
        .await
    }

    /// An instance for `vm` added directly on the cluster, and the VM's NICs
    /// set to what the cluster reports (in sync).
    async fn instance(&self, vm: &Vm, running: bool) {
        self.sim.add_instance_directly(NewSimInstance {
            name: format!("snf-{}", vm.id),
            memory_mib: 128,
            vcpus: 1,
            running,
            nic_ips: vec![Some(format!("10.0.0.{}", vm.id))],
            ..NewSimInstance::default()
        });
        self.sync_nics(vm.id).await;
    }

    async fn sync_nics(&self, vm: VmId) {
        let name = format!("snf-{vm}");
        let info = self
            .ganeti
            .instance_info(self.backend, &name)
            .await
            .unwrap()
            .expect("listed");
        self.store.set_nics(vm, &info.nics).await.unwrap();
    }

    /// Submits a real create job for `vm` (failing if `fail`), waits for it
    /// to end, and records it on the VM as the API would; the notification
    /// is never delivered (no eventd/dispatcher here).
    async fn create_job(&self, vm: &Vm, fail: bool) -> JobId {
        let name = format!("snf-{}", vm.id);
        if fail {
            self.sim
                .fail_instance(&name, "simulated: not enough disk space");
        }
        let job = self
            .ganeti
            .create_instance(&InstanceSpec {
                backend: self.backend,
                name,
                vcpus: 1,
                ram_mib: 128,
                disk_gib: 1,
                disk_template: "diskless".into(),
                os_type: "noop+default".into(),
                osparams: BTreeMap::new(),
                nics: vec![],
                hvparams: BTreeMap::new(),
                start: true,
            })
            .await
            .unwrap();
        assert!(
            self.sim.wait_idle(Duration::from_secs(30)).await,
            "create job ends"
        );
        let current = self.store.vm(vm.id).await.unwrap().unwrap();
        let state = VmState::from_stored(StoredVmState {
            action: Some(PendingAction {
                action: Action::Create,
                job_id: Some(job),
            }),
            ..current.state.to_stored()
        });
        self.store
            .update_vm_state(&VmStateUpdate {
                id: vm.id,
                expected_version: current.version,
                state,
                nics: None,
                resize: None,
                action_log: None,
                image: None,
            })
            .await
            .unwrap();
        job
    }

    async fn get(&self, id: VmId) -> Vm {
        self.store.vm(id).await.unwrap().unwrap()
    }

    fn reconcile(&self, args: &[&str]) -> (i32, String) {
        self.synnefo("reconcile", args)
    }

    /// `synnefo <command> <args>` with this world's settings: exit code
    /// and stdout (stderr is printed).
    fn synnefo(&self, command: &str, args: &[&str]) -> (i32, String) {
        let out: Output = Command::new(SYNNEFO)
            .arg("--config")
            .arg(&self.config)
            .arg(command)
            .args(args)
            .env_remove("SYNNEFO_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run synnefo reconcile");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        if !stderr.trim().is_empty() {
            eprintln!("synnefo {command} {args:?} (exit {code}) stderr:\n{stderr}");
        }
        (code, stdout)
    }
}

fn kinds(report: &Value) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["vm"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_fix_then_clean_on_the_simulator() {
    let Some(w) = world("report_fix_then_clean_on_the_simulator").await else {
        return;
    };

    // In sync to begin with.
    let healthy = w.vm(OperState::Started, |_| {}).await;
    w.instance(&healthy, true).await;
    let removed = w.vm(OperState::Started, |_| {}).await;
    w.instance(&removed, true).await;
    let stopped_by_hand = w.vm(OperState::Started, |_| {}).await;
    w.instance(&stopped_by_hand, true).await;
    let started_by_hand = w.vm(OperState::Stopped, |_| {}).await;
    w.instance(&started_by_hand, false).await;
    let deleted = w.vm(OperState::Started, |s| s.deleted = true).await;
    w.instance(&deleted, true).await;
    let build_failed = w
        .vm(OperState::Build, |s| *s = VmState::new_build().to_stored())
        .await;
    let build_done = w
        .vm(OperState::Build, |s| *s = VmState::new_build().to_stored())
        .await;
    w.sim.add_instance_directly(NewSimInstance {
        name: "mail.example.org".into(),
        ..NewSimInstance::default()
    });
    let (code, out) = w.reconcile(&["--all", "--json"]);
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    // Before the drift only the deleted VM's instance is an orphan.
    assert_eq!(code, 1, "{out}");
    assert_eq!(kinds(&report), vec![("orphan".into(), deleted.id.0)]);

    // Drift behind our back.
    assert!(
        w.sim
            .remove_instance_directly(&format!("snf-{}", removed.id))
    );
    assert!(
        w.sim
            .set_instance_running(&format!("snf-{}", stopped_by_hand.id), false)
    );
    assert!(
        w.sim
            .set_instance_running(&format!("snf-{}", started_by_hand.id), true)
    );
    w.sim.add_instance_directly(NewSimInstance {
        name: "snf-987654".into(),
        ..NewSimInstance::default()
    });
    let failed_job = w.create_job(&build_failed, true).await;
    w.create_job(&build_done, false).await;
    w.sync_nics(build_done.id).await;

    // 1. Report.
    let (code, out) = w.reconcile(&["--all", "--json"]);
    assert_eq!(code, 1, "discrepancies found, report-only: {out}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    let mut want = vec![
        ("stale".to_string(), removed.id.0),
        ("unsynced_operstate".into(), stopped_by_hand.id.0),
        ("unsynced_operstate".into(), started_by_hand.id.0),
        ("orphan".into(), deleted.id.0),
        ("orphan".into(), 987654),
        ("stuck_build".into(), build_failed.id.0),
        ("stuck_build".into(), build_done.id.0),
    ];
    want.sort();
    assert_eq!(kinds(&report), want, "{out}");
    assert_eq!(report["stats"]["foreign_ignored"], 1);
    let stuck = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["vm"] == build_failed.id.0)
        .unwrap();
    assert_eq!(stuck["reason"], "create_failed");
    assert_eq!(stuck["create_job"], failed_job.0);
    assert_eq!(stuck["to"], "ERROR");
    assert!(
        stuck["message"]
            .as_str()
            .unwrap_or("")
            .contains("not enough disk space"),
        "{stuck}"
    );
    assert!(report["fixes"].as_array().unwrap().is_empty());
    assert_eq!(
        w.get(removed.id).await.state.operstate(),
        OperState::Started,
        "report-only"
    );
    assert!(w.sim.instance("snf-987654").is_some(), "report-only");

    // 2. Fix.
    let (code, out) = w.reconcile(&["--all", "--fix-all", "--json"]);
    assert_eq!(code, 0, "everything fixed: {out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["unfixed"].as_array().unwrap().is_empty(), "{out}");
    let r = w.get(removed.id).await;
    assert!(r.state.deleted() && r.state.operstate() == OperState::Destroyed);
    assert_eq!(
        w.get(stopped_by_hand.id).await.state.operstate(),
        OperState::Stopped
    );
    assert_eq!(
        w.get(started_by_hand.id).await.state.operstate(),
        OperState::Started
    );
    assert_eq!(
        w.get(build_failed.id).await.state.operstate(),
        OperState::Error
    );
    let b = w.get(build_done.id).await;
    assert_eq!(
        (b.state.operstate(), b.state.action()),
        (OperState::Started, None)
    );
    assert!(
        w.sim.wait_idle(Duration::from_secs(30)).await,
        "removal jobs end"
    );
    assert!(w.sim.instance("snf-987654").is_none(), "orphan removed");
    assert!(
        w.sim.instance(&format!("snf-{}", deleted.id)).is_none(),
        "orphan removed"
    );
    assert!(
        w.sim.instance("mail.example.org").is_some(),
        "foreign instance untouched"
    );
    assert!(w.sim.instance(&format!("snf-{}", healthy.id)).is_some());

    // 3. No dispatcher runs here, so the success of the orphan's removal
    // never reaches the deleted VM's row: a deleted VM that is not
    // DESTROYED and has no instance is stale, and --fix-stale ends it.
    let (code, out) = w.reconcile(&["--all", "--json"]);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        kinds(&report),
        vec![("stale".into(), deleted.id.0)],
        "{out}"
    );
    let (code, out) = w.reconcile(&["--all", "--fix-stale"]);
    assert_eq!(code, 0, "{out}");
    let d = w.get(deleted.id).await;
    assert!(d.state.deleted() && d.state.operstate() == OperState::Destroyed);

    // 4. Clean.
    let (code, out) = w.reconcile(&["--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no discrepancies"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_runs_and_the_daemon() {
    let Some(w) = world("staggered_runs_and_the_daemon").await else {
        return;
    };
    for _ in 0..12 {
        let v = w.vm(OperState::Started, |_| {}).await;
        w.instance(&v, true).await;
    }
    // Cron mode: RECONCILIATION_MIN 30 (default), every 5 min: 2 per run.
    let (code, out) = w.reconcile(&["--interval", "5", "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["batch"], 2);
    assert_eq!(report["total_vms"], 12);
    assert_eq!(report["scope"]["mode"], "staggered");

    // A cluster that does not answer: exit 4 when nothing else is wrong.
    w.sim.shutdown();
    let (code, out) = w.reconcile(&["--interval", "5"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("UNREACHABLE"), "{out}");

    // The daemon runs at once, then every interval, until SIGTERM.
    let mut child = Command::new(SYNNEFO)
        .arg("--config")
        .arg(&w.config)
        .args(["reconcile", "--daemon", "--json"])
        .env_remove("SYNNEFO_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let report: Value = serde_json::from_str(&line).expect("one JSON report per line");
    assert_eq!(report["batch"], 1, "ceil(12 * 1 / 30)");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0), "SIGTERM stops the daemon cleanly");
}

/// Issue 16 item 8: an operator's `synnefo server` actions on a server of
/// another project go through the compute service: the state machine's
/// rules, a real Ganeti job on the cluster, and the history entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_go_through_the_service() {
    let Some(w) = world("operator_actions_go_through_the_service").await else {
        return;
    };
    let vm = w.vm(OperState::Started, |_| {}).await;
    w.instance(&vm, true).await;
    let id = vm.id.to_string();

    // suspend: a shutdown job on the cluster, the flag set, history kept
    let (code, out) = w.synnefo("server", &["suspend", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("suspend accepted (Ganeti job"), "{out}");
    let now = w.get(vm.id).await;
    assert!(now.state.suspended());
    let pending = now.state.action().expect("pending");
    assert_eq!(pending.action, Action::Suspend);
    let job = pending.job_id.expect("job recorded");
    assert!(
        w.sim.wait_idle(Duration::from_secs(30)).await,
        "the shutdown job ends"
    );
    let info = w
        .ganeti
        .instance_info(w.backend, &format!("snf-{}", vm.id))
        .await
        .unwrap()
        .expect("listed");
    assert!(!info.running, "the cluster shut it down");

    let (code, out) = w.synnefo("server", &["events", &id, "--json"]);
    assert_eq!(code, 0);
    let events: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["action"], "suspend");
    assert_eq!(events[0]["job_id"], job.0);
    assert!(
        events[0]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req-")
    );

    // the state machine's rules hold for operators too: starting a server
    // the database still has running (no dispatcher here) is refused
    let (code, _) = w.synnefo("server", &["start", &id]);
    assert_eq!(code, 2);
    assert_eq!(w.get(vm.id).await.version, now.version, "nothing written");
    // an unknown server: a clear refusal, nothing else
    let (code, _) = w.synnefo("server", &["stop", "999999"]);
    assert_eq!(code, 2);
}

/// Issue 16 items 3 and 8: `synnefo server resize` resizes a stopped
/// server of any project through the compute service: Synnefo's rules, the
/// quota, a real set-params job on the cluster (the instance gets the
/// flavor's vCPUs and memory), the history entry; no confirmation step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_resize_goes_through_the_service() {
    let Some(w) = world("operator_resize_goes_through_the_service").await else {
        return;
    };
    use synnefo_core::ports::CatalogStore;
    let bigger = w
        .store
        .create_flavor(&synnefo_test_support::builders::flavor_of(
            2, 256, 1, "diskless",
        ))
        .await
        .unwrap();
    let name = bigger.name.as_str();
    let vm = w.vm(OperState::Stopped, |_| {}).await;
    w.instance(&vm, false).await;
    let id = vm.id.to_string();

    let (code, out) = w.synnefo("server", &["resize", &id, "--flavor", name]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "resize to flavor {} accepted (Ganeti job",
            bigger.id
        )),
        "{out}"
    );
    assert!(
        w.sim.wait_idle(Duration::from_secs(30)).await,
        "the job ends"
    );
    let inst = w.sim.instance(&format!("snf-{id}")).expect("instance");
    assert_eq!((inst.vcpus, inst.maxmem, inst.minmem), (2, 256, 256));
    // No dispatcher here: the DB has the resize pending on its job, to the
    // flavor asked for, with nothing to confirm afterwards.
    let now = w.get(vm.id).await;
    let pending = now.state.action().expect("pending");
    assert_eq!(pending.action, Action::Resize);
    let r = now.state.resize().expect("resize on record");
    assert_eq!((r.from, r.to, r.confirm), (w.flavor.id, bigger.id, false));
    assert_eq!(r.job_id, pending.job_id);
    let (code, out) = w.synnefo("server", &["events", &id, "--json"]);
    assert_eq!(code, 0);
    let events: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["action"], "resize");
    assert_eq!(events[0]["job_id"], pending.job_id.unwrap().0);

    // Refusals: exit 2, nothing written.
    let running = w.vm(OperState::Started, |_| {}).await;
    for args in [
        vec!["resize", &id, "--flavor", name],
        vec!["resize", &id, "--flavor", "no-such-flavor"],
    ] {
        let (code, out) = w.synnefo("server", &args);
        assert_eq!(code, 2, "{args:?}: {out}");
    }
    let running_id = running.id.to_string();
    let (code, _) = w.synnefo("server", &["resize", &running_id, "--flavor", name]);
    assert_eq!(code, 2, "a running server is not resized");
    assert_eq!(w.get(vm.id).await.version, now.version, "nothing written");
    assert_eq!(w.get(running.id).await.version, running.version);
}

/// Issue 16 items 5 and 8: `synnefo server rescue|unrescue|rename` act on
/// a server of any project through the compute service: Synnefo's rule (a
/// stopped server), a real set-params job on the cluster (the instance's
/// `hvparams` boot the rescue image), the history entry; a rename with
/// the API's name rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rescue_and_rename_go_through_the_service() {
    let Some(w) = world("operator_rescue_and_rename_go_through_the_service").await else {
        return;
    };
    let vm = w.vm(OperState::Stopped, |_| {}).await;
    w.instance(&vm, false).await;
    let id = vm.id.to_string();

    let (code, out) = w.synnefo("server", &["rescue", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rescue accepted (Ganeti job"), "{out}");
    assert!(
        w.sim.wait_idle(Duration::from_secs(30)).await,
        "the job ends"
    );
    let inst = w.sim.instance(&format!("snf-{id}")).expect("instance");
    assert_eq!(inst.hvparams["boot_order"], "cdrom");
    assert_eq!(
        inst.hvparams["cdrom_image_path"],
        "/usr/share/synnefo/rescue-images/rescue.iso"
    );
    // No dispatcher here: the DB has the rescue pending on its job.
    let now = w.get(vm.id).await;
    let pending = now.state.action().expect("pending");
    assert_eq!(pending.action, Action::Rescue);
    assert_eq!(now.state.rescue().and_then(|r| r.job_id), pending.job_id);
    let (code, out) = w.synnefo("server", &["events", &id, "--json"]);
    assert_eq!(code, 0);
    let events: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["action"], "rescue");
    // An unrescue needs the rescue in effect: refused, nothing written.
    let (code, _) = w.synnefo("server", &["unrescue", &id]);
    assert_eq!(code, 2);
    assert_eq!(w.get(vm.id).await.version, now.version, "nothing written");
    // A running server is not rescued.
    let running = w.vm(OperState::Started, |_| {}).await;
    let (code, _) = w.synnefo("server", &["rescue", &running.id.to_string()]);
    assert_eq!(code, 2, "a running server is not rescued");
    assert_eq!(w.get(running.id).await.version, running.version);

    // rename: any project's server; a bad name is refused.
    let (code, out) = w.synnefo("server", &["rename", &id, "renamed-by-op"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(w.get(vm.id).await.name, "renamed-by-op");
    let long = "x".repeat(300);
    let (code, _) = w.synnefo("server", &["rename", &id, &long]);
    assert_eq!(code, 2);
    assert_eq!(w.get(vm.id).await.name, "renamed-by-op");
}
