//! The human log format of a service whose stderr is not a terminal (a
//! file, journald) carries no ANSI escape sequences; `--log-format json`
//! gives one JSON object per line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `synnefo ganeti-sim` (it needs no service) with stderr piped,
/// returns its first log line mentioning `marker`.
fn first_log_line(extra: &[&str], marker: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("synnefo.toml");
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").expect("settings");
    let data = dir.path().join("sim");
    let mut child = Command::new(env!("CARGO_BIN_EXE_synnefo"))
        .arg("-c")
        .arg(&config)
        .args(extra)
        .args(["ganeti-sim", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("SYNNEFO_CONFIG")
        .env_remove("SYNNEFO_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start synnefo ganeti-sim");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(marker) => break Some(l),
            Ok(l) => seen.push(l),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|| panic!("no log line with {marker:?}; stderr: {seen:#?}"))
}

#[test]
fn human_logs_to_a_pipe_have_no_escape_sequences() {
    let line = first_log_line(&[], "Ganeti simulator listening");
    assert!(
        !line.contains('\u{1b}'),
        "escape sequences in a log line written to a pipe: {line:?}"
    );
    assert!(line.contains("INFO"), "{line:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let line = first_log_line(&["--log-format", "json"], "Ganeti simulator listening");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    assert_eq!(v["level"], "INFO", "{line}");
}
