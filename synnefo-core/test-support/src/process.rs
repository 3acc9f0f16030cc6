//! Child processes (`synnefo` subcommands) that end with the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process with its output in a log file, SIGKILLed when dropped
/// (also when the test panics).
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin -c CONFIG ARGS` (a `synnefo` binary) with its output in
    /// `<dir>/<name>.log` and no `SYNNEFO_CONFIG` from the environment.
    pub fn synnefo(bin: &str, name: &str, dir: &Path, config: &Path, args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(config)
            .args(args)
            .env_remove("SYNNEFO_CONFIG");
        Proc::spawn(name, dir, cmd)
    }

    /// Starts `cmd` with its output in `<dir>/<name>.log` (appended to).
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The pid (0 once it was reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status (SIGKILL
    /// and `None` after that).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a line of its log contains `marker`; returns that line,
    /// or why not (it exited, or `timeout` passed).
    pub async fn wait_log_line(
        &mut self,
        marker: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_text().lines().find(|l| l.contains(marker)) {
                return Ok(line.to_string());
            }
            if !self.running() {
                return Err(format!(
                    "{} exited before logging {marker:?}:\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} logged no {marker:?} within {timeout:?}:\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `bin -c CONFIG ARGS` to its end: `(exit code, stdout, stderr)`.
pub fn run_synnefo(
    bin: &str,
    config: &Path,
    args: &[&str],
) -> Result<(Option<i32>, String, String), String> {
    let out = Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("SYNNEFO_CONFIG")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {bin}: {e}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// [`run_synnefo`] that must succeed, its stdout parsed as JSON.
pub fn synnefo_json(bin: &str, config: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let (code, out, err) = run_synnefo(bin, config, args)?;
    if code != Some(0) {
        return Err(format!("synnefo {args:?}: exit {code:?}\n{out}{err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("synnefo {args:?}: not JSON ({e}): {out}"))
}
