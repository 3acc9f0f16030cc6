//! The lab's catalog and user (`synnefo admin`) and the Ganeti hook.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::*;

// ------------------------------------------------------------------ admin + hook

/// Creates the user, project, flavors, image and the lab backend with
/// `synnefo admin`, as an operator would.
pub(crate) fn admin_setup(config: &Path, lab: &Lab, prefix: &str) -> Result<Fixture> {
    let user = format!("{prefix}user");
    let project = format!("{prefix}project");
    let password = "lab-password-1";
    synnefo(
        config,
        &[
            "admin",
            "users",
            "add",
            &user,
            "--password",
            password,
            "--project",
            &project,
            "--json",
        ],
    )?;
    let port = lab.rapi_port.to_string();
    synnefo(
        config,
        &[
            "admin",
            "backends",
            "add",
            "lab",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--json",
        ],
    )?;
    let flavor =
        |name: &str, vcpus: &str, ram: &str, disk: &str, template: &str| -> Result<String> {
            let out = synnefo(
                config,
                &[
                    "admin",
                    "flavors",
                    "add",
                    name,
                    "--vcpus",
                    vcpus,
                    "--ram",
                    ram,
                    "--disk",
                    disk,
                    "--disk-template",
                    template,
                    "--json",
                ],
            )?;
            let v: Value = serde_json::from_str(&out)
                .with_context(|| format!("admin flavors add --json printed {out:?}"))?;
            json_id(&v["id"]).with_context(|| format!("no flavor id in {v}"))
        };
    // Diskless: Ganeti skips the OS create script; the noop OS does nothing anyway.
    let tiny = flavor(&format!("{prefix}tiny"), "1", "128", "0", "diskless")?;
    // A 2 TiB file disk: above the instance policy's 1 TiB maximum, so Ganeti
    // accepts the job and the job fails in its prerequisites.
    let too_big = flavor(&format!("{prefix}too-big"), "1", "128", "2048", "file")?;
    // Issue 17: a 1 GiB file disk (the policy's minimum) to grow, and the
    // flavor `gnt-instance modify -B vcpus=2,maxmem=256` turns it into.
    let file_1 = flavor(&format!("{prefix}file-1"), "1", "128", "1", "file")?;
    let file_2 = flavor(&format!("{prefix}file-2"), "2", "256", "1", "file")?;
    let out = synnefo(
        config,
        &[
            "admin",
            "images",
            "add",
            &format!("{prefix}noop"),
            "--os-type",
            "noop+default",
            "--json",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)
        .with_context(|| format!("admin images add --json printed {out:?}"))?;
    let image = json_id(&v["id"]).with_context(|| format!("no image id in {v}"))?;
    Ok(Fixture {
        prefix: prefix.to_string(),
        user,
        project,
        password: password.to_string(),
        image,
        flavor: tiny,
        flavor_too_big: too_big,
        flavor_file: file_1,
        flavor_file_2: file_2,
    })
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path)
                        && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                    {
                        out.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// An id printed as a JSON number or string.
pub(crate) fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Links the hook into the lab's add/start/modify post-hook directories
/// with `synnefo ganeti-hook install` (the link points at the `synnefo`
/// binary, which the lab sees at the same path).
///
/// Links of earlier runs killed before their cleanup are removed first: they
/// would run with this run's settings (one lab serves one run at a time; its
/// `/etc/synnefo/synnefo.toml` is shared).
pub(crate) fn install_hook(lab: &Lab, lab_config: &Path, id: &str) -> Result<Vec<PathBuf>> {
    for phase in HOOK_PHASES {
        let dir = lab.hooks_dir.join(format!("{phase}.d"));
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let stale = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("50-synnefo-"));
            if stale && path.is_symlink() {
                eprintln!(
                    "[{TEST}] removing a hook link left by an earlier run: {}",
                    path.display()
                );
                std::fs::remove_file(&path)?;
            }
        }
    }
    let name = format!("50-synnefo-{id}");
    let hooks = lab.hooks_dir.display().to_string();
    synnefo(
        lab_config,
        &[
            "ganeti-hook",
            "install",
            "--hooks-dir",
            &hooks,
            "--name",
            &name,
        ],
    )?;
    let mut links = Vec::new();
    for phase in HOOK_PHASES {
        let link = lab.hooks_dir.join(format!("{phase}.d")).join(&name);
        let target = std::fs::read_link(&link)
            .with_context(|| format!("{} is not a symlink", link.display()))?;
        ensure!(
            target.canonicalize().ok() == Path::new(SYNNEFO).canonicalize().ok(),
            "{} points at {}, not at {SYNNEFO}",
            link.display(),
            target.display()
        );
        links.push(link);
    }
    Ok(links)
}
