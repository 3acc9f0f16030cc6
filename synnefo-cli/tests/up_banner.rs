//! `synnefo up` as a person runs it: in a terminal (tmux), read the banner,
//! use the cloud, press Ctrl-C, see it stop; run it again on the same data dir.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use synnefo_test_support::wait::free_port;

fn tmux(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("tmux").args(args).output()
}

/// tmux on a server of the session's own (`-L`): a session started while
/// another one's server is exiting would otherwise hit "server exited
/// unexpectedly".
fn tmux_on(session: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("tmux")
        .args(["-L", session])
        .args(args)
        .output()
}

fn capture(session: &str) -> String {
    tmux_on(
        session,
        &["capture-pane", "-p", "-J", "-S", "-200", "-t", session],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

fn wait_for(session: &str, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let screen = capture(session);
        if screen.contains(needle) || start.elapsed() > timeout {
            return screen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let socket = tmux_on(&self.0, &["display-message", "-p", "#{socket_path}"])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let _ = tmux_on(&self.0, &["kill-server"]);
        if !socket.is_empty() {
            let _ = std::fs::remove_file(socket);
        }
    }
}

fn start(session: &str, data: &Path, port: u16) -> Session {
    let bin = env!("CARGO_BIN_EXE_synnefo");
    let cmd = format!(
        "{bin} up --data-dir {} --listen 127.0.0.1:{port} --job-latency-ms 5; echo EXITED-$?; sleep 600",
        data.display()
    );
    let args = [
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-s",
        session,
        &cmd,
    ];
    // tmux itself (not synnefo) may fail to bring its server up; try again.
    let mut last = String::new();
    for _ in 0..3 {
        let out = tmux_on(session, &args).expect("tmux");
        if out.status.success() {
            return Session(session.to_string());
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("tmux new-session: {last}")
}

#[test]
fn banner_then_ctrl_c_then_rerun() {
    if tmux(&["-V"]).is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tmux is required under CI (scripts/test installs it)");
        }
        eprintln!(
            "\n********** SKIPPED banner_then_ctrl_c_then_rerun: tmux not installed **********\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let name = format!("synnefo-up-test-{}", std::process::id());

    let session = start(&name, &data, port);
    let screen = wait_for(&name, "Ctrl-C stops everything", Duration::from_secs(90));
    for line in [
        "Synnefo is up",
        &format!("http://127.0.0.1:{port}/identity/v3"),
        "Credentials   user demo, password ",
        "clouds.yaml",
        "cluster1: RAPI http://127.0.0.1:",
        "cluster2: RAPI http://127.0.0.1:",
        "openstack --os-cloud synnefo-local server create",
    ] {
        assert!(screen.contains(line), "banner lacks {line:?}:\n{screen}");
    }
    let clouds = std::fs::read_to_string(data.join("clouds.yaml")).unwrap();
    assert!(
        clouds.contains(&format!("auth_url: http://127.0.0.1:{port}/identity/v3")),
        "{clouds}"
    );
    // The API answers.
    let health = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/healthz")])
        .output();
    if let Ok(out) = health {
        assert!(
            out.status.success(),
            "healthz failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    tmux_on(&name, &["send-keys", "-t", &name, "C-c", ""]).unwrap();
    let screen = wait_for(&name, "EXITED-", Duration::from_secs(30));
    assert!(
        screen.contains("synnefo up: stopped; data kept in"),
        "no clean stop:\n{screen}"
    );
    assert!(screen.contains("EXITED-0"), "exit code not 0:\n{screen}");
    drop(session);

    // A second run reuses the data dir: same password, same DB.
    let password = std::fs::read_to_string(data.join("demo-password")).unwrap();
    let name2 = format!("{name}-again");
    let _session = start(&name2, &data, port);
    let screen = wait_for(&name2, "Ctrl-C stops everything", Duration::from_secs(90));
    assert!(
        screen.contains(&format!("password {}", password.trim())),
        "password changed:\n{screen}"
    );
    tmux_on(&name2, &["send-keys", "-t", &name2, "C-c", ""]).unwrap();
    let screen = wait_for(&name2, "EXITED-", Duration::from_secs(30));
    assert!(
        screen.contains("EXITED-0"),
        "second run did not stop cleanly:\n{screen}"
    );
}
