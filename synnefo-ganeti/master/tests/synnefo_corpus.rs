//! The Synnefo conformance corpus, the eventd way round
//! (`synnefo-core/tests/fixtures/synnefo-corpus/`, see its README; the
//! dispatcher way round is `synnefo-core/tests/synnefo_corpus.rs`).
//!
//! Each corpus case is the message Synnefo 0.16-0.20's eventd publishes for
//! one version of a job file recorded on the real Ganeti lab. Here our
//! eventd reads the same job file and must publish the same message: every
//! key Synnefo's has, with the same value (our extra `op_index` aside), on
//! the same routing key; nothing where Synnefo publishes nothing. The
//! instance's NICs, disks and boot parameters come, for the corpus' own lab
//! recording (`lab/`), from Ganeti's `config.data` saved when each job was
//! over, read by our [`ConfigFile`]: the corpus took them from Ganeti's
//! RAPI answer at the same moment, so this also checks our reading of
//! `config.data` against Ganeti's own query. For the older recording
//! (`synnefo-ganeti/tests/fixtures/ganeti-3.0/`, no `config.data` saved)
//! they come from the RAPI answers the corpus used.
//!
//! A ledger pins what we do not send (the eventd heartbeat); closing it
//! makes the ledger test fail until it is updated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use synnefo_core::messages::{InstanceDisk, InstanceHvParams, InstanceNic};
use synnefo_ganeti_master::eventd::diff::{DiffContext, Skip, diff_job, message_for};
use synnefo_ganeti_master::eventd::ganeti_config::{ConfigFile, InstanceInfo};
use synnefo_ganeti_master::eventd::job::{JobFile, parse_job};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus_dir() -> PathBuf {
    repo().join("synnefo-core/tests/fixtures/synnefo-corpus")
}

struct Case {
    name: String,
    routing_key: Option<String>,
    source: String,
    substituted: Vec<String>,
    message: Value,
}

fn corpus() -> Vec<Case> {
    let dir = corpus_dir().join("cases");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".message.json").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let p = dir.join(format!("{name}.message.json"));
            let m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            Case {
                routing_key: m["routing_key"].as_str().map(str::to_string),
                source: m["source"].as_str().unwrap().to_string(),
                substituted: m["substituted"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
                message: m["message"].clone(),
                name,
            }
        })
        .collect()
}

/// The op index a case name carries (`...-op<i>-...`).
fn op_index(name: &str) -> usize {
    name.split('-')
        .find_map(|p| p.strip_prefix("op").and_then(|i| i.parse().ok()))
        .unwrap_or(0)
}

fn read_job(path: &Path) -> JobFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_job(&bytes, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Ganeti's view of an instance from a RAPI answer (the older recording).
fn info_from_rapi(inst: &Value) -> InstanceInfo {
    let list = |k: &str| inst[k].as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().map(str::to_string);
    let (names, nets, ips, macs, modes, links, uuids) = (
        list("nic.names"),
        list("nic.networks.names"),
        list("nic.ips"),
        list("nic.macs"),
        list("nic.modes"),
        list("nic.links"),
        list("nic.uuids"),
    );
    let mut nics: Vec<InstanceNic> = (0..macs.len())
        .map(|i| InstanceNic {
            name: s(&names[i]),
            network: s(&nets[i]),
            ip: s(&ips[i]),
            mac: s(&macs[i]),
            mode: s(&modes[i]),
            link: s(&links[i]),
            uuid: s(&uuids[i]),
            ..InstanceNic::default()
        })
        .collect();
    for tag in list("tags") {
        let parts: Vec<&str> = tag.as_str().unwrap().split(':').collect();
        if let ["synnefo", "network", nic, fw] = parts[..] {
            for n in nics
                .iter_mut()
                .filter(|n| n.name.as_deref() == Some(nic) && n.firewall.is_none())
            {
                n.firewall = Some(fw.to_string());
            }
        }
    }
    let (dnames, sizes, duuids) = (list("disk.names"), list("disk.sizes"), list("disk.uuids"));
    InstanceInfo {
        nics,
        disks: (0..sizes.len())
            .map(|i| InstanceDisk {
                name: s(&dnames[i]),
                size: sizes[i].as_u64(),
                uuid: s(&duuids[i]),
                index: None,
            })
            .collect(),
        hvparams: InstanceHvParams::default(),
    }
}

/// Where eventd reads the instance's state for the job file at `source`.
enum Info {
    /// Ganeti's `config.data` once that job was over.
    Config(ConfigFile),
    /// The older recording's RAPI answers, by opcode.
    Rapi {
        views: BTreeMap<String, Value>,
        after_modify: Value,
    },
}

impl Info {
    fn for_source(source: &str) -> Info {
        if let Some(rest) =
            source.strip_prefix("synnefo-core/tests/fixtures/synnefo-corpus/lab/queue/job-")
        {
            let id = rest.split('.').next().unwrap();
            return Info::Config(ConfigFile::new(
                corpus_dir().join(format!("lab/config/job-{id}.data")),
            ));
        }
        let fixtures = repo().join("synnefo-ganeti/tests/fixtures/ganeti-3.0");
        let load = |f: &str| -> Value {
            serde_json::from_slice(&std::fs::read(fixtures.join(f)).unwrap()).unwrap()
        };
        let mut views = BTreeMap::new();
        for v in load("instances-bulk.json").as_array().unwrap() {
            views.insert(v["name"].as_str().unwrap().to_string(), v.clone());
        }
        for f in ["instance-info.json", "instance-info-down.json"] {
            let v = load(f);
            views
                .entry(v["name"].as_str().unwrap().to_string())
                .or_insert(v);
        }
        Info::Rapi {
            views,
            after_modify: load("instance-info-after-modify.json"),
        }
    }

    fn lookup(&self, name: &str, opcode: &str) -> Option<InstanceInfo> {
        match self {
            Info::Config(file) => file.load().ok()?.instance(name),
            Info::Rapi {
                views,
                after_modify,
            } => {
                let v = if opcode == "OP_INSTANCE_SET_PARAMS" {
                    Some(after_modify)
                } else {
                    views.get(name)
                };
                v.map(info_from_rapi)
            }
        }
    }
}

fn ctx<'a>(lookup: &'a (dyn Fn(&str) -> Option<InstanceInfo> + Sync)) -> DiffContext<'a> {
    DiffContext {
        prefix: "snf-",
        cluster: Some("cluster1.lab.test"),
        now: (4_000_000_000, 0),
        synnefo_kinds: true,
        instance_info: Some(lookup),
    }
}

/// Differences between Synnefo's message and ours: keys Synnefo sends that
/// we do not, and values that differ (`substituted` keys compared by shape:
/// the corpus put KVM's values where the lab's fake hypervisor has none).
fn differences(theirs: &Value, ours: &Value, substituted: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(t), Some(o)) = (theirs.as_object(), ours.as_object()) else {
        return vec![format!("not objects: {theirs} / {ours}")];
    };
    for (k, tv) in t {
        match o.get(k) {
            None => out.push(format!("missing {k}")),
            Some(ov) if substituted.contains(k) => {
                let keys = |v: &Value| -> BTreeSet<String> {
                    v.as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default()
                };
                if keys(tv) != keys(ov) {
                    out.push(format!("{k}: keys {:?} != {:?}", keys(tv), keys(ov)));
                }
            }
            Some(ov) if ov != tv => out.push(format!("{k}: Synnefo {tv} / ours {ov}")),
            Some(_) => {}
        }
    }
    for k in o.keys() {
        if !t.contains_key(k) && k != "op_index" {
            out.push(format!("extra {k}"));
        }
    }
    out
}

/// Kinds Synnefo's eventd sends that ours does not (see
/// `eventd::message`: the heartbeat's key is bound only during a
/// `snf-dispatcher --status-check`, and our publishes must route).
const NOT_SENT: [&str; 1] = ["eventd-heartbeat"];

#[test]
fn eventd_publishes_what_synnefos_eventd_publishes_for_each_recorded_job_file() {
    let mut compared = BTreeMap::<String, usize>::new();
    let mut not_sent = BTreeSet::new();
    let mut failures = Vec::new();
    for c in corpus() {
        let kind = c.message["type"].as_str().unwrap_or("nothing").to_string();
        if kind.starts_with("image-") {
            continue; // snf-image's progress monitor, not eventd
        }
        let path = repo().join(&c.source);
        let job = read_job(&path);
        let idx = op_index(&c.name);
        let op = &job.ops[idx];
        let info = Info::for_source(&c.source);
        let lookup = |name: &str| info.lookup(name, &op.op_id);
        let got = message_for(&job, idx, op, &ctx(&lookup));
        match (&got, c.message.is_null(), kind.as_str()) {
            (Err(Skip::NotPublished(_)), _, k) if NOT_SENT.contains(&k) => {
                not_sent.insert(k.to_string());
            }
            (Err(_), true, _) => *compared.entry(kind).or_default() += 1,
            (Ok(m), false, _) => {
                let ours = serde_json::to_value(m).unwrap();
                let diff = differences(&c.message, &ours, &c.substituted);
                if !diff.is_empty() {
                    failures.push(format!("{}: {diff:#?}", c.name));
                }
                let key = m.kind().routing_key("snf-");
                if Some(key.as_str()) != c.routing_key.as_deref() {
                    failures.push(format!(
                        "{}: routing key {key} / {:?}",
                        c.name, c.routing_key
                    ));
                }
                *compared.entry(kind).or_default() += 1;
            }
            (got, _, _) => failures.push(format!("{}: Synnefo sends {kind}, ours {got:?}", c.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every kind eventd publishes, recorded on the real Ganeti, is compared.
    for (kind, at_least) in [
        ("ganeti-op-status", 60),
        ("ganeti-network-status", 15),
        ("ganeti-cluster-status", 4),
        ("nothing", 2),
    ] {
        let n = compared.get(kind).copied().unwrap_or(0);
        assert!(n >= at_least, "{kind}: {n} cases compared ({compared:?})");
    }
    // Ledger: what Synnefo's eventd sends and ours does not.
    assert_eq!(
        not_sent.iter().map(String::as_str).collect::<Vec<_>>(),
        NOT_SENT
    );
}

/// The fields Synnefo's dispatcher reads from our messages are there with
/// the instance's real NICs, disks and boot parameters, for the ops whose
/// state they carry (the corpus' own lab recording, via `config.data`).
#[test]
fn instance_state_comes_from_ganetis_configuration() {
    let mut seen = BTreeSet::new();
    for c in corpus() {
        if !c.source.contains("synnefo-corpus/lab/") || c.message["instance_nics"].is_null() {
            continue;
        }
        let job = read_job(&repo().join(&c.source));
        let idx = op_index(&c.name);
        let info = Info::for_source(&c.source);
        let lookup = |name: &str| info.lookup(name, &job.ops[idx].op_id);
        let m = message_for(&job, idx, &job.ops[idx], &ctx(&lookup)).unwrap();
        let ours = serde_json::to_value(&m).unwrap();
        assert_eq!(
            ours["instance_nics"], c.message["instance_nics"],
            "{}",
            c.name
        );
        assert_eq!(
            ours["instance_disks"], c.message["instance_disks"],
            "{}",
            c.name
        );
        // The lab's fake hypervisor has no KVM boot parameters: null, as
        // Ganeti's query answers.
        assert_eq!(
            ours["instance_hvparams"],
            json!({"boot_order": null, "cdrom_image_path": null}),
            "{}",
            c.name
        );
        seen.insert(format!(
            "{} {}",
            ours["operation"].as_str().unwrap(),
            ours["status"].as_str().unwrap()
        ));
    }
    // The recording covers each op Synnefo sends the instance's state with.
    for want in [
        "OP_INSTANCE_CREATE success",
        "OP_INSTANCE_GROW_DISK success",
        "OP_INSTANCE_SET_PARAMS success",
        "OP_INSTANCE_STARTUP success",
    ] {
        assert!(seen.contains(want), "{want} not covered: {seen:?}");
    }
}

/// Fed every recorded version of each job in order, eventd publishes one
/// message per status change (Synnefo's publishes one per file version),
/// each the corpus message of the first version with that status.
#[test]
fn each_status_change_is_published_once_as_the_corpus_has_it() {
    let lab = corpus_dir().join("lab");
    let jobs: Vec<u64> = std::fs::read_to_string(lab.join("jobs.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let cases = corpus();
    let mut published = 0;
    for id in jobs {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(lab.join("queue"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                let k = name.strip_prefix(&format!("job-{id}.v"))?.parse().ok()?;
                Some((k, lab.join("queue").join(name)))
            })
            .collect();
        versions.sort();
        let source_prefix =
            format!("synnefo-core/tests/fixtures/synnefo-corpus/lab/queue/job-{id}.v");
        let info = Info::for_source(&format!("{source_prefix}1"));
        let mut mark = None;
        let mut statuses = Vec::new();
        for (_, path) in &versions {
            let job = read_job(path);
            let lookup = |name: &str| info.lookup(name, &job.ops[0].op_id);
            let d = diff_job(&job, mark.as_ref(), &ctx(&lookup), &|_| true);
            for ch in &d.changes {
                let ours = serde_json::to_value(&ch.message).unwrap();
                let first = cases
                    .iter()
                    .filter(|c| c.source.starts_with(&source_prefix))
                    .find(|c| {
                        c.message["status"] == ours["status"] && c.message["type"] == ours["type"]
                    })
                    .unwrap_or_else(|| panic!("job {id}: no corpus case for {ours}"));
                let diff = differences(&first.message, &ours, &first.substituted);
                assert!(diff.is_empty(), "job {id} ({}): {diff:#?}", first.name);
                statuses.push(ours["status"].as_str().unwrap().to_string());
                published += 1;
            }
            mark = Some(d.mark);
        }
        let distinct: BTreeSet<&String> = statuses.iter().collect();
        assert_eq!(distinct.len(), statuses.len(), "job {id}: {statuses:?}");
    }
    // One per (job, kind, status) the corpus has for this recording.
    let due: BTreeSet<(String, String, String)> = cases
        .iter()
        .filter(|c| c.source.contains("synnefo-corpus/lab/queue/"))
        .filter(|c| {
            c.message["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("ganeti-"))
        })
        .map(|c| {
            (
                c.source.rsplit_once(".v").unwrap().0.to_string(),
                c.message["type"].to_string(),
                c.message["status"].to_string(),
            )
        })
        .collect();
    assert_eq!(published, due.len());
    assert!(published > 50, "{published} messages");
}

/// snf-image's monitor lines of the corpus, through our progress monitor
/// (`synnefo progress-monitor`): the message it publishes is the one
/// Synnefo's `snf-progress-monitor` publishes for the same line, key for
/// key, on the progress routing key.
#[tokio::test]
async fn the_progress_monitor_publishes_what_synnefos_publishes() {
    use synnefo_core::bus::InProcessBus;
    use synnefo_core::messages::MessageKind;
    use synnefo_core::ports::EventBus as _;
    let dir = corpus_dir().join("cases");
    let mut n = 0;
    for c in corpus() {
        if !c.message["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("image-"))
        {
            continue;
        }
        let raw: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{}.message.json", c.name))).unwrap(),
        )
        .unwrap();
        let line = raw["snf_image_line"].clone();
        assert!(line.is_object(), "{}: no snf_image_line", c.name);
        assert_eq!(
            c.routing_key.as_deref(),
            Some(MessageKind::Progress.routing_key("snf-").as_str()),
            "{}",
            c.name
        );
        let t = &c.message["event_time"];
        let now = (t[0].as_i64().unwrap(), t[1].as_i64().unwrap());
        let bus = InProcessBus::default();
        let mut sub = bus.subscribe(MessageKind::Progress).await.unwrap();
        let input = format!("{line}\n");
        let stats = synnefo_ganeti_master::progress::run(
            input.as_bytes(),
            c.message["instance"].as_str().unwrap(),
            "snf-",
            &bus,
            std::time::Duration::from_secs(1),
            || now,
        )
        .await;
        assert_eq!(stats.published, 1, "{}", c.name);
        let got = sub.recv_batch(1).await.unwrap();
        let body: Value = serde_json::from_slice(&got[0].body).unwrap();
        // JSON numbers: 42 and 42.0 are the same number to Python.
        let norm = |v: &Value| -> Value {
            let mut v = v.clone();
            if let Some(p) = v.get_mut("progress") {
                *p = json!(p.as_f64());
            }
            v
        };
        assert_eq!(norm(&body), norm(&c.message), "{}", c.name);
        n += 1;
    }
    assert!(n >= 8, "{n} progress cases");
}
