//! Private service instances for tests that stop or restart a service.
//!
//! A test that disrupts PostgreSQL or RabbitMQ must never touch the
//! machine's shared server (other tests, other people use it). It starts a
//! throwaway instance of its own instead, on free loopback ports with its
//! data in a temporary directory, and stops it when the handle is dropped
//! (also on panic):
//!
//! * [`PrivatePostgres`]: a cluster made by `initdb` and run by `pg_ctl`
//!   (Debian: package `postgresql`, binaries in `/usr/lib/postgresql/*/bin`,
//!   or on `PATH`, or in `SYNNEFO_TEST_PG_BIN`);
//! * [`PrivateRabbit`]: a RabbitMQ node with its own node name, ports,
//!   data, logs, Erlang cookie and an empty plugin list (Debian: package
//!   `rabbitmq-server`, scripts in `/usr/lib/rabbitmq/bin`, or on `PATH`,
//!   or in `SYNNEFO_TEST_RABBITMQ_BIN`); it is stopped with
//!   `rabbitmqctl -n <its node> stop`.
//!
//! `scripts/private-service-deps` installs both packages. When a tool is
//! missing `start` returns why; the test then calls
//! [`service_unavailable`](crate::service_unavailable) (a failure under
//! `CI=true`, a loud SKIPPED line elsewhere).
//!
//! PostgreSQL refuses to run as root: as root the cluster is owned and run
//! by the `postgres` user (through `runuser`), which the Debian package
//! creates. RabbitMQ runs as whoever starts it, with `HOME` in its
//! temporary directory (its Erlang cookie lives there).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::wait::{free_port, port_open, wait_port};

/// The first directory of `candidates`, then of `PATH`, that holds `tool`.
fn find_tool(env: &str, candidates: &[PathBuf], tool: &str) -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var(env) {
        let p = PathBuf::from(&dir);
        return if p.join(tool).is_file() {
            Ok(p)
        } else {
            Err(format!("{env}={dir} holds no {tool}"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .find(|d| d.join(tool).is_file())
        .ok_or_else(|| format!("no {tool} (run scripts/private-service-deps, or set {env})"))
}

/// `<root>/*/<sub>` directories, the highest version first.
fn versioned_dirs(root: &str, sub: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let v = e.file_name().to_string_lossy().parse().unwrap_or(0);
            (v, e.path().join(sub))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a command; its output on failure.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?}: {}: {text}", out.status))
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call.
fn instance_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

// ------------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster of the test's own on a free loopback port,
/// superuser `postgres` with trust authentication; stopped and removed
/// when dropped.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when running as root.
    run_as: Option<String>,
}

impl PrivatePostgres {
    /// Makes and starts the cluster, or says why it cannot.
    pub fn start() -> Result<PrivatePostgres, String> {
        let bin = find_tool(
            "SYNNEFO_TEST_PG_BIN",
            &versioned_dirs("/usr/lib/postgresql", "bin"),
            "initdb",
        )?;
        if !bin.join("pg_ctl").is_file() {
            return Err(format!("{} has initdb but no pg_ctl", bin.display()));
        }
        let dir = tempfile::Builder::new()
            .prefix("synnefo-pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let run_as = if running_as_root() {
            run(Command::new("id").args(["-u", "postgres"]))
                .map_err(|e| format!("running as root needs a `postgres` user: {e}"))?;
            run(Command::new("chown").arg("postgres:").arg(dir.path()))?;
            Some("postgres".to_string())
        } else {
            None
        };
        let pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
            run_as,
        };
        pg.ctl("initdb", |c| {
            c.arg("-D").arg(pg.data()).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
        })?;
        pg.start_server()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `<bin>/<tool>` (as the cluster's owner), with `args` added.
    fn ctl(&self, tool: &str, args: impl FnOnce(&mut Command)) -> Result<String, String> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        args(&mut cmd);
        run(&mut cmd)
    }

    fn start_server(&self) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.ctl("pg_ctl", |c| {
            c.arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]);
        })
        .map(|_| ())
        .map_err(|e| format!("{e}\n{}", self.log()))
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its maintenance database (`postgres`), to give
    /// [`TestDb::on_server`](crate::db::TestDb::on_server).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Restarts the server with a fast shutdown (every session ends);
    /// returns once it accepts connections again, with how long it took.
    pub fn restart(&self) -> Result<Duration, String> {
        let t = Instant::now();
        self.stop()?;
        self.start_again()?;
        Ok(t.elapsed())
    }

    /// Stops the server (fast shutdown); [`start_again`](Self::start_again)
    /// brings it back.
    pub fn stop(&self) -> Result<(), String> {
        self.ctl("pg_ctl", |c| {
            c.arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "60", "-m", "fast", "stop"]);
        })
        .map(|_| ())
    }

    /// Starts the stopped server on the same port; returns once it
    /// accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        self.start_server()?;
        if wait_port(self.port, Duration::from_secs(30)) {
            Ok(())
        } else {
            Err(format!("PostgreSQL did not listen again:\n{}", self.log()))
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl("pg_ctl", |c| {
            c.arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
        });
    }
}

// ------------------------------------------------------------- RabbitMQ

/// A RabbitMQ node of the test's own (`guest`/`guest` on a free loopback
/// port), stopped with `rabbitmqctl -n <node> stop` when dropped.
pub struct PrivateRabbit {
    dir: tempfile::TempDir,
    bin: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl PrivateRabbit {
    /// Starts the node and waits until it accepts AMQP connections, or
    /// says why it cannot.
    pub fn start() -> Result<PrivateRabbit, String> {
        let bin = find_tool(
            "SYNNEFO_TEST_RABBITMQ_BIN",
            // Debian's /usr/sbin scripts switch to the `rabbitmq` user and
            // lose the environment; the real scripts are here.
            &[PathBuf::from("/usr/lib/rabbitmq/bin")],
            "rabbitmq-server",
        )?;
        if !bin.join("rabbitmqctl").is_file() {
            return Err(format!("{} has no rabbitmqctl", bin.display()));
        }
        let dir = tempfile::Builder::new()
            .prefix("synnefo-rmq-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let (port, dist_port) = (free_port(), free_port());
        let p = dir.path();
        let write = |name: &str, text: String| {
            std::fs::write(p.join(name), text).map_err(|e| format!("write {name}: {e}"))
        };
        // No plugins: no management or metrics ports to clash with others.
        write("enabled_plugins", "[].\n".into())?;
        write(
            "rabbitmq.conf",
            format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users.guest = true\n"),
        )?;
        // An empty env file: the machine's rabbitmq-env.conf (its node
        // name, its ports) must not apply to this node.
        write("rabbitmq-env.conf", String::new())?;
        let mut rabbit = PrivateRabbit {
            node: format!("{}@localhost", instance_name("synnefo-test-")),
            dir,
            bin,
            port,
            dist_port,
            child: None,
        };
        let log = std::fs::File::create(rabbit.dir.path().join("server.out"))
            .map_err(|e| format!("log file: {e}"))?;
        let mut cmd = rabbit.command("rabbitmq-server");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{cmd:?}: {e}"))?;
        rabbit.child = Some(child);
        rabbit.wait_up(Duration::from_secs(90))?;
        Ok(rabbit)
    }

    /// `<bin>/<script>` with this node's environment.
    fn command(&self, script: &str) -> Command {
        let p = self.dir.path();
        let mut c = Command::new(self.bin.join(script));
        c.current_dir(p)
            .env("HOME", p)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", p.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", p.join("log"))
            .env("RABBITMQ_PID_FILE", p.join("rabbitmq.pid"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", p.join("plugins-expand"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", p.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", p.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", p.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
        c
    }

    /// `rabbitmqctl -n <this node> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut c = self.command("rabbitmqctl");
        c.arg("-n").arg(&self.node).args(args);
        run(&mut c)
    }

    fn wait_up(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !port_open(self.port) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!("rabbitmq-server exited ({st}):\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "RabbitMQ node {} did not listen within {timeout:?}:\n{}",
                    self.node,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The node's name (`synnefo-test-<pid>-<n>@localhost`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its AMQP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its AMQP URL (`guest`, default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's startup output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default()
    }

    /// Stops the RabbitMQ application (the Erlang node stays up): every
    /// connection is closed and the port refuses new ones.
    pub fn stop_app(&self) -> Result<(), String> {
        self.ctl(&["stop_app"]).map(|_| ())
    }

    /// Starts the application again; returns once the port accepts
    /// connections.
    pub fn start_app(&mut self) -> Result<(), String> {
        self.ctl(&["start_app"])?;
        self.wait_up(Duration::from_secs(60))
    }

    /// The `name type` lines of `rabbitmqctl list_queues` on this node.
    pub fn list_queues(&self) -> Result<String, String> {
        self.ctl(&["list_queues", "-q", "--no-table-headers", "name", "type"])
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Err(e) = self.ctl(&["stop"]) {
            eprintln!("stopping private RabbitMQ node {}: {e}", self.node);
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
