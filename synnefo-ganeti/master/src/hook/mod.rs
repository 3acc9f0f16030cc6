//! `synnefo ganeti-hook`: the Ganeti hook that reports an instance's NICs.
//!
//! Ganeti runs every executable in `/etc/ganeti/hooks/<path>-<phase>.d/`
//! (on the master, for instance hooks) with the operation described in
//! `GANETI_*` environment variables and nothing else: no arguments, a
//! minimal environment (`PATH`, the `GANETI_*` variables), and a link
//! name that must match `^[a-zA-Z0-9_-]+$` or Ganeti skips it silently.
//! The hook turns that environment into one `ganeti-net-status` message
//! (the instance's NICs: IP, MAC, link, mode, network) and publishes it
//! with a broker confirm, within a timeout so Ganeti is never held up.
//!
//! The seed's hook found its settings through the location of its link
//! target; ours never looks at the link: settings come from
//! `SYNNEFO_CONFIG` or `/etc/synnefo/synnefo.toml` (Ganeti does not pass
//! `SYNNEFO_CONFIG` through, so on a real cluster the default path is the
//! one that counts).
//!
//! * [`parse_env`] + [`plan`]: pure, environment -> [`HookOutcome`];
//! * [`run`]: the above plus publishing, with a timeout;
//! * [`install`]: creates the symlinks for the chosen phases.
//!
//! In the post phase Ganeti passes the state after the operation as
//! `GANETI_POST_INSTANCE_*` (besides the pre-operation `GANETI_INSTANCE_*`);
//! we use the post variables when present, so an instance-modify hook
//! reports the new NICs. In the pre phase the hook does nothing and
//! succeeds: a failing pre hook would abort the Ganeti operation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use synnefo_core::ids::InstanceName;
use synnefo_core::messages::{MessageKind, NetStatusMessage, WireNic};
use synnefo_core::ports::EventBus;

/// The phases `install` links into when none are given.
pub const DEFAULT_PHASES: [&str; 3] = [
    "instance-start-post",
    "instance-add-post",
    "instance-modify-post",
];

/// More NICs than this in the environment is a bad environment
/// (Ganeti allows 8).
pub const MAX_NICS: usize = 64;

/// What can go wrong running or installing the hook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// A required `GANETI_*` variable is missing (not run by Ganeti?).
    #[error("environment variable {0} is missing: is this being run by Ganeti as a hook?")]
    MissingVar(String),
    /// A variable has a value we cannot use.
    #[error("environment variable {var}={value:?}: {reason}")]
    BadVar {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The broker did not confirm.
    #[error("publishing ganeti-net-status for {instance} failed: {reason}")]
    Publish {
        /// The instance.
        instance: String,
        /// The bus error.
        reason: String,
    },
    /// The broker did not confirm in time.
    #[error("publishing ganeti-net-status for {instance} timed out after {timeout:?}")]
    Timeout {
        /// The instance.
        instance: String,
        /// The limit.
        timeout: Duration,
    },
    /// A link name Ganeti would ignore.
    #[error("hook name {0:?} is not allowed: Ganeti only runs hooks named ^[a-zA-Z0-9_-]+$")]
    BadLinkName(String),
    /// A phase that is not `<hooks path>-pre` / `-post`.
    #[error("unknown hook phase {0:?} (expected e.g. instance-start-post)")]
    BadPhase(String),
    /// Creating a link failed, or something else is in the way.
    #[error("cannot install {path}: {reason}")]
    Install {
        /// The link path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Ganeti's hook phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the operation (a failure aborts it).
    Pre,
    /// After the operation.
    Post,
}

/// The parts of a hook environment the hook uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    /// `GANETI_HOOKS_PATH` (`instance-start`, `instance-add`, ...).
    pub hooks_path: String,
    /// `GANETI_HOOKS_PHASE`.
    pub phase: Phase,
    /// `GANETI_OP_CODE` (`OP_INSTANCE_STARTUP`).
    pub op_code: Option<String>,
    /// `GANETI_CLUSTER`.
    pub cluster: Option<String>,
    /// The instance name (post-operation value when given).
    pub instance: Option<String>,
    /// The NICs (post-operation values when given).
    pub nics: Vec<WireNic>,
}

/// What the hook does for an environment.
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    /// Nothing to publish, and why (pre phase, not an instance hook, not
    /// one of our instances).
    Skip(String),
    /// Publish this message.
    Publish(NetStatusMessage),
}

fn get<'a>(env: &'a HashMap<String, String>, var: &str) -> Option<&'a str> {
    env.get(var).map(String::as_str)
}

fn require<'a>(env: &'a HashMap<String, String>, var: &str) -> Result<&'a str, HookError> {
    get(env, var).ok_or_else(|| HookError::MissingVar(var.to_string()))
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parses a hook environment (the process's, or a recorded one).
pub fn parse_env<I, K, V>(vars: I) -> Result<HookEnv, HookError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let env: HashMap<String, String> = vars
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let hooks_path = require(&env, "GANETI_HOOKS_PATH")?.trim().to_string();
    let phase = match require(&env, "GANETI_HOOKS_PHASE")?.trim() {
        "pre" => Phase::Pre,
        "post" => Phase::Post,
        other => {
            return Err(HookError::BadVar {
                var: "GANETI_HOOKS_PHASE".into(),
                value: other.into(),
                reason: "expected pre or post".into(),
            });
        }
    };
    let mut out = HookEnv {
        hooks_path,
        phase,
        op_code: non_empty(get(&env, "GANETI_OP_CODE")),
        cluster: non_empty(get(&env, "GANETI_CLUSTER")),
        instance: None,
        nics: Vec::new(),
    };
    if phase == Phase::Pre || !out.hooks_path.starts_with("instance-") {
        return Ok(out);
    }
    // After the operation, prefer the post-operation description.
    let p = if env.contains_key("GANETI_POST_INSTANCE_NAME") {
        "GANETI_POST_INSTANCE_"
    } else {
        "GANETI_INSTANCE_"
    };
    let name_var = format!("{p}NAME");
    out.instance = Some(non_empty(get(&env, &name_var)).ok_or(HookError::MissingVar(name_var))?);
    let count_var = format!("{p}NIC_COUNT");
    let count_raw = require(&env, &count_var)?;
    let count: usize = count_raw.trim().parse().map_err(|_| HookError::BadVar {
        var: count_var.clone(),
        value: count_raw.into(),
        reason: "not a number".into(),
    })?;
    if count > MAX_NICS {
        return Err(HookError::BadVar {
            var: count_var,
            value: count_raw.into(),
            reason: format!("more than {MAX_NICS} NICs"),
        });
    }
    for i in 0..count {
        let field = |f: &str| non_empty(get(&env, &format!("{p}NIC{i}_{f}")));
        out.nics.push(WireNic {
            ip: field("IP"),
            mac: field("MAC"),
            link: field("LINK"),
            network: field("NETWORK_NAME"),
            mode: field("MODE"),
        });
    }
    Ok(out)
}

/// Decides what to publish for a parsed environment (pure).
pub fn plan(env: &HookEnv, prefix: &str, now: (i64, i64)) -> HookOutcome {
    if env.phase == Phase::Pre {
        return HookOutcome::Skip("pre phase: nothing to report".into());
    }
    if !env.hooks_path.starts_with("instance-") {
        return HookOutcome::Skip(format!("not an instance hook ({})", env.hooks_path));
    }
    let Some(instance) = env.instance.clone() else {
        return HookOutcome::Skip("no instance".into());
    };
    if InstanceName::parse(prefix, &instance).is_none() {
        return HookOutcome::Skip(format!(
            "{instance} is not a Synnefo instance (prefix {prefix})"
        ));
    }
    HookOutcome::Publish(NetStatusMessage {
        kind: MessageKind::NetStatus.type_name().to_string(),
        instance,
        nics: env.nics.clone(),
        event_time: Some(now),
        cluster: env.cluster.clone(),
    })
}

/// Parses the environment, decides and publishes (waiting for the
/// broker's confirm at most `timeout`). A bad environment is an error;
/// an environment with nothing to report is `Ok(Skip)`.
pub async fn run<I, K, V>(
    vars: I,
    bus: &dyn EventBus,
    prefix: &str,
    timeout: Duration,
) -> Result<HookOutcome, HookError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let env = parse_env(vars)?;
    let now = crate::eventd::job::now_timestamp();
    let outcome = plan(&env, prefix, now);
    if let HookOutcome::Publish(msg) = &outcome {
        publish(msg, bus, timeout).await?;
    }
    Ok(outcome)
}

/// Publishes one net-status message with a confirm, within `timeout`.
pub async fn publish(
    msg: &NetStatusMessage,
    bus: &dyn EventBus,
    timeout: Duration,
) -> Result<(), HookError> {
    let body = serde_json::to_vec(msg).map_err(|e| HookError::Publish {
        instance: msg.instance.clone(),
        reason: e.to_string(),
    })?;
    match tokio::time::timeout(timeout, bus.publish(MessageKind::NetStatus, body)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HookError::Publish {
            instance: msg.instance.clone(),
            reason: e.to_string(),
        }),
        Err(_) => Err(HookError::Timeout {
            instance: msg.instance.clone(),
            timeout,
        }),
    }
}

/// True for names Ganeti runs (`^[a-zA-Z0-9_-]+$`).
pub fn valid_link_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_phase(phase: &str) -> bool {
    let Some(path) = phase
        .strip_suffix("-post")
        .or_else(|| phase.strip_suffix("-pre"))
    else {
        return false;
    };
    !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What `install` should do.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Ganeti's hooks directory (`/etc/ganeti/hooks`).
    pub hooks_dir: PathBuf,
    /// The link name (`00-synnefo`).
    pub name: String,
    /// Phases (`instance-start-post`, ...): one link in `<phase>.d/` each.
    pub phases: Vec<String>,
    /// What the links point to (the `synnefo` executable).
    pub target: PathBuf,
    /// Replace a different file of the same name.
    pub force: bool,
}

/// What `install` did for one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// A new link.
    Created(PathBuf),
    /// The same link was already there.
    Unchanged(PathBuf),
    /// Another file of that name was replaced (`force`).
    Replaced(PathBuf),
}

/// Creates `<hooks_dir>/<phase>.d/<name> -> target` for each phase.
/// Everything is validated before anything is created.
pub fn install(opts: &InstallOptions) -> Result<Vec<Installed>, HookError> {
    if !valid_link_name(&opts.name) {
        return Err(HookError::BadLinkName(opts.name.clone()));
    }
    if let Some(bad) = opts.phases.iter().find(|p| !valid_phase(p)) {
        return Err(HookError::BadPhase(bad.clone()));
    }
    let io_err = |path: &Path, e: std::io::Error| HookError::Install {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut done = Vec::new();
    for phase in &opts.phases {
        let dir = opts.hooks_dir.join(format!("{phase}.d"));
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let link = dir.join(&opts.name);
        let mut replaced = false;
        match std::fs::symlink_metadata(&link) {
            Ok(_) => {
                if std::fs::read_link(&link).is_ok_and(|t| t == opts.target) {
                    done.push(Installed::Unchanged(link));
                    continue;
                }
                if !opts.force {
                    return Err(HookError::Install {
                        path: link.display().to_string(),
                        reason: "something else is there (use --force to replace it)".into(),
                    });
                }
                std::fs::remove_file(&link).map_err(|e| io_err(&link, e))?;
                replaced = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&link, e)),
        }
        std::os::unix::fs::symlink(&opts.target, &link).map_err(|e| io_err(&link, e))?;
        done.push(if replaced {
            Installed::Replaced(link)
        } else {
            Installed::Created(link)
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, String)> {
        include_str!("testdata/hook-env-instance-start-post.txt")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn without(vars: &[(String, String)], drop: &str) -> Vec<(String, String)> {
        vars.iter().filter(|(k, _)| k != drop).cloned().collect()
    }

    fn with(vars: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
        let mut v = without(vars, key);
        v.push((key.into(), value.into()));
        v
    }

    #[test]
    fn the_recorded_ganeti_environment_gives_the_nics() {
        let env = parse_env(sample()).unwrap();
        assert_eq!(env.hooks_path, "instance-start");
        assert_eq!(env.phase, Phase::Post);
        assert_eq!(env.op_code.as_deref(), Some("OP_INSTANCE_STARTUP"));
        let HookOutcome::Publish(msg) = plan(&env, "snf-", (1795555506, 900000)) else {
            panic!("should publish")
        };
        assert_eq!(
            msg,
            NetStatusMessage {
                kind: "ganeti-net-status".into(),
                instance: "snf-1".into(),
                nics: vec![WireNic {
                    ip: Some("192.0.2.51".into()),
                    mac: Some("aa:00:00:c6:c6:59".into()),
                    link: Some("100".into()),
                    network: None,
                    mode: Some("routed".into()),
                }],
                event_time: Some((1795555506, 900000)),
                cluster: Some("cluster1.lab.test".into()),
            }
        );
        // The dispatcher accepts it.
        let body = serde_json::to_vec(&msg).unwrap();
        synnefo_core::messages::decode(&body, "snf-").unwrap();
    }

    #[test]
    fn post_values_win_over_pre_values() {
        let vars = with(&sample(), "GANETI_POST_INSTANCE_NIC0_IP", "192.0.2.99");
        let vars = with(&vars, "GANETI_POST_INSTANCE_NIC0_NETWORK_NAME", "public");
        let env = parse_env(vars).unwrap();
        assert_eq!(env.nics[0].ip.as_deref(), Some("192.0.2.99"));
        assert_eq!(env.nics[0].network.as_deref(), Some("public"));
        // Without post variables, the plain ones are used.
        let plain: Vec<_> = sample()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("GANETI_POST_"))
            .collect();
        assert_eq!(
            parse_env(plain).unwrap().nics[0].ip.as_deref(),
            Some("192.0.2.51")
        );
    }

    #[test]
    fn bad_environments_are_clear_errors() {
        let s = sample();
        let plain: Vec<_> = s
            .iter()
            .filter(|(k, _)| !k.starts_with("GANETI_POST_"))
            .cloned()
            .collect();
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (
                vec![],
                "GANETI_HOOKS_PATH is missing: is this being run by Ganeti",
            ),
            (
                without(&s, "GANETI_HOOKS_PHASE"),
                "GANETI_HOOKS_PHASE is missing",
            ),
            (
                with(&s, "GANETI_HOOKS_PHASE", "during"),
                "expected pre or post",
            ),
            (
                without(&s, "GANETI_POST_INSTANCE_NIC_COUNT"),
                "GANETI_POST_INSTANCE_NIC_COUNT is missing",
            ),
            (
                with(&s, "GANETI_POST_INSTANCE_NIC_COUNT", "one"),
                "not a number",
            ),
            (
                with(&s, "GANETI_POST_INSTANCE_NIC_COUNT", "1000"),
                "more than 64 NICs",
            ),
            (
                without(&plain, "GANETI_INSTANCE_NAME"),
                "GANETI_INSTANCE_NAME is missing",
            ),
        ];
        for (vars, want) in cases {
            let err = parse_env(vars).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn nothing_is_published_for_pre_phase_other_hooks_or_foreign_instances() {
        let s = sample();
        let cases = [
            (with(&s, "GANETI_HOOKS_PHASE", "pre"), "pre phase"),
            (
                with(&s, "GANETI_HOOKS_PATH", "cluster-verify"),
                "not an instance hook",
            ),
            (
                with(&s, "GANETI_POST_INSTANCE_NAME", "web-1"),
                "not a Synnefo instance",
            ),
        ];
        for (vars, want) in cases {
            match plan(&parse_env(vars).unwrap(), "snf-", (1, 0)) {
                HookOutcome::Skip(why) => assert!(why.contains(want), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn run_publishes_with_confirm_and_reports_failures() {
        let bus = crate::eventd::testing::RecordingBus::new();
        let out = run(sample(), &bus, "snf-", Duration::from_secs(1))
            .await
            .unwrap();
        assert!(matches!(out, HookOutcome::Publish(_)));
        let (kind, body) = &bus.bodies()[0];
        assert_eq!(*kind, MessageKind::NetStatus);
        assert!(matches!(
            synnefo_core::messages::decode(body, "snf-").unwrap(),
            synnefo_core::messages::Notification::NetStatus { .. }
        ));
        bus.set_failing(true);
        let err = run(sample(), &bus, "snf-", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("publishing ganeti-net-status for snf-1 failed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn run_gives_up_after_the_timeout() {
        struct Stuck;
        #[async_trait::async_trait]
        impl EventBus for Stuck {
            async fn publish(
                &self,
                _: MessageKind,
                _: Vec<u8>,
            ) -> Result<(), synnefo_core::BusError> {
                std::future::pending().await
            }
            async fn subscribe(
                &self,
                _: MessageKind,
            ) -> Result<Box<dyn synnefo_core::ports::Subscription>, synnefo_core::BusError>
            {
                Err(synnefo_core::BusError::Closed)
            }
        }
        let err = run(sample(), &Stuck, "snf-", Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    }

    #[test]
    fn link_names_follow_ganeti() {
        for ok in ["00-synnefo", "synnefo_hook", "A1"] {
            assert!(valid_link_name(ok), "{ok}");
        }
        for bad in ["", "00-synnefo.sh", "a b", "../x", "hook~", "ünicode"] {
            assert!(!valid_link_name(bad), "{bad}");
        }
    }

    #[test]
    fn install_links_each_phase_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("synnefo");
        std::fs::write(&target, b"").unwrap();
        let mut opts = InstallOptions {
            hooks_dir: dir.path().join("hooks"),
            name: "00-synnefo".into(),
            phases: DEFAULT_PHASES.iter().map(|s| s.to_string()).collect(),
            target: target.clone(),
            force: false,
        };
        let done = install(&opts).unwrap();
        assert_eq!(done.len(), 3);
        let link = dir.path().join("hooks/instance-start-post.d/00-synnefo");
        assert_eq!(done[0], Installed::Created(link.clone()));
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        // Idempotent.
        assert!(
            install(&opts)
                .unwrap()
                .iter()
                .all(|i| matches!(i, Installed::Unchanged(_)))
        );
        // Something else in the way: refused unless forced.
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, b"#!/bin/sh\n").unwrap();
        assert!(install(&opts).unwrap_err().to_string().contains("--force"));
        opts.force = true;
        assert_eq!(
            install(&opts).unwrap()[0],
            Installed::Replaced(link.clone())
        );
        // Bad names and phases are refused before anything is created.
        opts.name = "00-synnefo.py".into();
        assert_eq!(
            install(&opts).unwrap_err(),
            HookError::BadLinkName("00-synnefo.py".into())
        );
        opts.name = "ok".into();
        opts.phases = vec!["instance-start-post".into(), "instance-start".into()];
        assert_eq!(
            install(&opts).unwrap_err(),
            HookError::BadPhase("instance-start".into())
        );
        assert!(!dir.path().join("hooks/instance-start-post.d/ok").exists());
    }
}
