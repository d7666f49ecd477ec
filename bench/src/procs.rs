//! The two servers under test as child processes: started on loopback ports with throw-away data
//! directories, killed (SIGKILL) and reaped when their guard drops, so an error anywhere in the
//! benchmark still leaves no server behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running server process and its data directory.
pub struct ServerProc {
    pub name: &'static str,
    pub addr: String,
    child: Child,
    // Held open: the server may write to stdout again, and a closed pipe would fail it.
    _stdout: Option<BufReader<ChildStdout>>,
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

impl ServerProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rudder-apiserver` on `127.0.0.1:0` (fsync on, as always) and learns its port from the
/// first stdout line.
pub fn start_rudder(bin: &Path, extra: &[&str]) -> anyhow::Result<ServerProc> {
    if !bin.is_file() {
        bail!(
            "rudder-apiserver binary not found at {} (build it first: cargo build --release -p rudder-apiserver)",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("rudder-bench-apiserver-")
        .tempdir()
        .context("creating the API server's data directory")?;
    let log = dir.path().join("apiserver.log");
    let log_file = std::fs::File::create(&log).context("creating the API server's log")?;
    let mut child = Command::new(bin)
        .arg("--insecure-allow-all")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        bail!("no stdout pipe from rudder-apiserver");
    };
    // Read the first line on a thread so a server that never prints cannot hang us.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let r = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((r, reader));
    });
    let mut proc = ServerProc {
        name: "rudder-apiserver",
        addr: String::new(),
        child,
        _stdout: None,
        log,
        dir,
    };
    let (line, reader) = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((Ok(line), reader)) => (line, reader),
        Ok((Err(e), _)) => bail!(
            "reading rudder-apiserver's address: {e}\n{}",
            proc.log_tail(20)
        ),
        Err(_) => bail!(
            "rudder-apiserver printed no address within 30 s\n{}",
            proc.log_tail(20)
        ),
    };
    proc._stdout = Some(reader);
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        bail!(
            "unexpected first line from rudder-apiserver: {line:?}\n{}",
            proc.log_tail(20)
        );
    };
    proc.addr = addr.to_string();
    Ok(proc)
}

/// A free loopback port (bound then released; the window for a clash is tiny on this machine).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts a single-member etcd on loopback ports with a fresh data directory. Readiness is
/// checked by the caller with a real request.
pub fn start_etcd(bin: &str) -> anyhow::Result<ServerProc> {
    let dir = tempfile::Builder::new()
        .prefix("rudder-bench-etcd-")
        .tempdir()
        .context("creating etcd's data directory")?;
    let client_port = free_port()?;
    let mut peer_port = free_port()?;
    if peer_port == client_port {
        peer_port = free_port()?;
    }
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log = dir.path().join("etcd.log");
    let log_file = std::fs::File::create(&log).context("creating etcd's log")?;
    let child = Command::new(bin)
        .args(["--name", "bench"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start etcd ({bin}): {e}. Install it with: apt-get update && apt-get install -y etcd-server"
            )
        })?;
    Ok(ServerProc {
        name: "etcd",
        addr: client_url,
        child,
        _stdout: None,
        log,
        dir,
    })
}

/// Polls `probe` until it succeeds, the process dies, or `within` passes.
pub async fn wait_ready<F, Fut>(
    proc: &mut ServerProc,
    within: Duration,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if !proc.alive() {
            bail!(
                "{} exited during start-up:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        match tokio::time::timeout(Duration::from_secs(2), probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some("probe timed out".into()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{} did not answer within {within:?} (last error: {})\n{}",
        proc.name,
        last.unwrap_or_default(),
        proc.log_tail(30)
    )
}

/// A component (scheduler, node agent) as a child process with `--server` and a free
/// `--health-addr`, its stderr in a log file; killed and reaped on drop.
pub struct Component {
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Component {
    /// Starts `bin` (`name` for messages) with `args` plus `--server server --health-addr ...`.
    pub fn start(name: &str, bin: &Path, server: &str, args: &[&str]) -> anyhow::Result<Component> {
        if !bin.is_file() {
            bail!(
                "{name} binary not found at {} (build it first: cargo build --release -p {name})",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("rudder-bench-{name}-"))
            .tempdir()
            .with_context(|| format!("creating {name}'s directory"))?;
        let health = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let health_addr = health.local_addr()?.to_string();
        drop(health);
        let log = dir.path().join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {name}'s log"))?;
        let child = Command::new(bin)
            .args(["--server", server, "--health-addr", &health_addr])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Component { child, log, dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills and reaps it now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
        let _ = &self.dir;
    }
}

// === The simulated cluster of the controller scenarios ===

/// A client of a ready API server, simulated nodes in this process, and the release scheduler
/// and controller-manager as child processes (no leader election), as the Deployment and
/// endpoints scenarios run them. Everything stops when it drops.
pub struct SimCluster {
    pub client: rudder_client::Client,
    pub api: std::sync::Arc<dyn rudder_client::Api>,
    pub sim: rudder_testkit::NodeSim,
    pub scheduler: Component,
    pub controllers: Component,
}

/// Waits for `server`, registers `nodes` simulated nodes (`sim-001`, ...) and starts the
/// scheduler and a controller-manager running `controllers` (a `--controllers` list), both
/// next to `apiserver_bin`.
pub async fn sim_cluster(
    server: &mut ServerProc,
    apiserver_bin: &Path,
    nodes: u64,
    controllers: &str,
) -> anyhow::Result<SimCluster> {
    sim_cluster_with(server, apiserver_bin, nodes, controllers, &[]).await
}

/// [`sim_cluster`] with more flags for the controller-manager.
pub async fn sim_cluster_with(
    server: &mut ServerProc,
    apiserver_bin: &Path,
    nodes: u64,
    controllers: &str,
    controller_flags: &[&str],
) -> anyhow::Result<SimCluster> {
    let client = rudder_client::Client::new(std::slice::from_ref(&server.addr))?;
    {
        let first = client.clone();
        wait_ready(server, Duration::from_secs(20), move || {
            let c = first.clone();
            async move {
                c.health().await?;
                Ok(())
            }
        })
        .await?;
    }
    let names: Vec<String> = (1..=nodes).map(|i| format!("sim-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let api: std::sync::Arc<dyn rudder_client::Api> = std::sync::Arc::new(client.clone());
    let sim = rudder_testkit::NodeSim::start(
        std::sync::Arc::clone(&api),
        rudder_client::clock::RealClock::shared(),
        &refs,
    )
    .await
    .context("registering simulated nodes")?;
    let scheduler = Component::start(
        "rudder-scheduler",
        &apiserver_bin.with_file_name("rudder-scheduler"),
        &server.addr,
        &["--leader-elect", "false"],
    )?;
    let mut flags = vec!["--leader-elect", "false", "--controllers", controllers];
    flags.extend_from_slice(controller_flags);
    let controllers = Component::start(
        "rudder-controller-manager",
        &apiserver_bin.with_file_name("rudder-controller-manager"),
        &server.addr,
        &flags,
    )?;
    Ok(SimCluster {
        client,
        api,
        sim,
        scheduler,
        controllers,
    })
}
