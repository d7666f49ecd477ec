//! Test harness: a real `rudder-apiserver` on a free loopback port and `rudder` as a subprocess.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `rudder` binary under test.
pub fn rudder_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rudder"))
}

/// `rudder-apiserver`, built into the same target directory. Missing is a failure, not a skip:
/// these tests are meaningless without it.
pub fn apiserver_bin() -> PathBuf {
    let p = rudder_bin()
        .parent()
        .expect("the rudder binary has a directory")
        .join("rudder-apiserver");
    assert!(
        p.is_file(),
        "rudder-apiserver is not built at {}: run `cargo build -p rudder-apiserver` first",
        p.display()
    );
    p
}

/// `rudder-controller-manager`, built into the same target directory; missing is a failure.
pub fn controller_manager_bin() -> PathBuf {
    let p = apiserver_bin().with_file_name("rudder-controller-manager");
    assert!(
        p.is_file(),
        "rudder-controller-manager is not built at {}: run `cargo build -p rudder-controller-manager` first",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A command's outcome.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure with exit 1 and a single stderr line; returns that line.
    #[track_caller]
    pub fn err_line(&self) -> &str {
        assert_eq!(
            self.code, 1,
            "expected exit 1; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line, got:\n{}",
            self.stderr
        );
        lines[0]
    }
}

/// Runs `rudder` with a clean environment pointing at `server` (None: no server configured).
pub fn run_rudder(
    server: Option<&str>,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Out {
    let mut cmd = Command::new(rudder_bin());
    cmd.args(args)
        .env_remove("RUDDER_SERVER")
        .env_remove("RUDDER_DATA_DIR")
        .env("RUDDER_CONFIG", home.join("config"))
        .env("HOME", home)
        .current_dir(home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = server {
        cmd.env("RUDDER_SERVER", s);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("rudder starts");
    if let Some(input) = stdin {
        let mut si = child.stdin.take().expect("stdin is piped");
        si.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("rudder runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running API server with its own data directory, killed on drop.
pub struct Server {
    child: Child,
    /// Components started against it (a controller-manager), killed before it.
    components: Vec<Child>,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        let bin = apiserver_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("apiserver.log")).expect("log file");
        let child = Command::new(bin)
            .arg("--insecure-allow-all")
            .arg("--data-dir")
            .arg(dir.path().join("store"))
            .arg("--listen")
            .arg(&addr)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("rudder-apiserver starts");
        let s = Server {
            child,
            components: Vec::new(),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = s.run(&["version"]);
            if o.code == 0 {
                return s;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(s.dir.path().join("apiserver.log")).unwrap_or_default();
                panic!(
                    "rudder-apiserver did not become ready at {}: {}\nlog:\n{log}",
                    s.addr, o.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a controller-manager (every controller, no leader election) against the server,
    /// for what controllers finish, such as a namespace's deletion. Its log is
    /// `controller-manager.log` in the server's directory.
    pub fn start_controller_manager(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("controller-manager.log"))
            .expect("log file");
        let child = Command::new(controller_manager_bin())
            .arg("--server")
            .arg(&self.addr)
            .arg("--leader-elect=false")
            .arg("--health-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("rudder-controller-manager starts");
        self.components.push(child);
    }

    pub fn run(&self, args: &[&str]) -> Out {
        run_rudder(Some(&self.addr), self.dir.path(), args, None, &[])
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Out {
        run_rudder(Some(&self.addr), self.dir.path(), args, Some(stdin), &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        run_rudder(Some(&self.addr), self.dir.path(), args, None, env)
    }

    /// Writes a file in the server's temp dir and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write test file");
        p.display().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for c in &mut self.components {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `rudder` command left running (a watch), with its output piped; killed on drop, so a
/// failing test does not leave it behind.
pub struct Running {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Running {
    /// The next line of stdout (empty at its end), blocking until the command prints it.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).expect("read stdout");
        line
    }

    /// Waits for the command to end; its stdout is what it printed after the lines read.
    pub fn finish(mut self) -> Out {
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut stdout).expect("read stdout");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut stderr).expect("read stderr");
        }
        let status = self.child.wait().expect("rudder runs");
        Out {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `rudder` against this server without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = Command::new(rudder_bin())
            .args(args)
            .env_remove("RUDDER_DATA_DIR")
            .env("RUDDER_SERVER", &self.addr)
            .env("RUDDER_CONFIG", self.home().join("config"))
            .env("HOME", self.home())
            .current_dir(self.home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rudder starts");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        Running { child, stdout }
    }
}

/// Runs `rudder down --data-dir data` in `home` when dropped, also when a test fails, so a
/// local cluster a test brought up never outlives it; then its Docker leftovers go.
pub struct Down {
    pub home: PathBuf,
    pub _cleanup: rudder_testkit::images::DockerCleanup,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = run_rudder(None, &self.home, &["down", "--data-dir", "data"], None, &[]);
    }
}

/// A `rudder up` of its own: unique ports, node names, Docker networks, subnets and nftables
/// table, so tests running at once (and a developer's own cluster) never meet.
pub struct LocalCluster {
    pub prefix: String,
    pub listen: String,
    pub scheduler_health: String,
    pub controller_manager_health: String,
    pub proxy_health: String,
    pub nft_table: String,
    pub agent_port: String,
    pub pod_network: String,
    pub pod_subnet: String,
    pub service_network: String,
    pub service_cidr: String,
}

impl LocalCluster {
    /// `name` names the networks (`rudder-<name>`, `rudder-<name>-svc`); pods get
    /// `10.<pods>.0.0/16`, Services `10.<services>.0.0/16`.
    pub fn new(name: &str, pods: u8, services: u8) -> LocalCluster {
        let addr = || format!("127.0.0.1:{}", free_port());
        let prefix = format!("{name}{}", std::process::id());
        LocalCluster {
            nft_table: format!("rudder-proxy-{prefix}"),
            prefix,
            listen: addr(),
            scheduler_health: addr(),
            controller_manager_health: addr(),
            proxy_health: addr(),
            agent_port: free_port().to_string(),
            pod_network: format!("rudder-{name}"),
            pod_subnet: format!("10.{pods}.0.0/16"),
            service_network: format!("rudder-{name}-svc"),
            service_cidr: format!("10.{services}.0.0/16"),
        }
    }

    /// The arguments of `rudder up` for it.
    pub fn up_args(&self) -> Vec<String> {
        let pairs = [
            ("--listen", &self.listen),
            ("--scheduler-health-addr", &self.scheduler_health),
            (
                "--controller-manager-health-addr",
                &self.controller_manager_health,
            ),
            ("--proxy-health-addr", &self.proxy_health),
            ("--proxy-nft-table", &self.nft_table),
            ("--node-agent-health-port", &self.agent_port),
            ("--node-prefix", &self.prefix),
            ("--pod-network", &self.pod_network),
            ("--pod-subnet", &self.pod_subnet),
            ("--service-network", &self.service_network),
            ("--service-cidr", &self.service_cidr),
        ];
        let mut args = vec!["up".to_string(), "--data-dir".into(), "data".into()];
        for (flag, value) in pairs {
            args.push(flag.to_string());
            args.push(value.clone());
        }
        args
    }

    /// Stops the cluster in `home` when dropped and then removes its node's containers and its
    /// networks, also when the test fails.
    pub fn guard(&self, home: &Path) -> Down {
        let mut cleanup = rudder_testkit::images::DockerCleanup::new();
        cleanup
            .label("io.rudder.node", &format!("{}-1", self.prefix))
            .network(&self.pod_network)
            .network(&self.service_network);
        Down {
            home: home.to_path_buf(),
            _cleanup: cleanup,
        }
    }
}
