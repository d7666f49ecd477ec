//! A private registry for one test: Debian's `docker-registry` (distribution 2.x) serving
//! plain HTTP on `127.0.0.1:<free port>` with htpasswd (bcrypt) auth and storage in a
//! temporary directory, run as a child process that is killed when the guard drops.
//!
//! The engine treats registries on 127.0.0.0/8 as insecure by default, so it speaks HTTP to
//! this one without any daemon configuration. Pushes log in with a `DOCKER_CONFIG` of the
//! guard's own, so the host's docker config is neither read nor written.
//!
//! Every tag pushed through [`LocalRegistry::push`] is untagged locally right after the push
//! (so that a pod must pull it), and again when the guard drops (removing what a pull brought
//! back). The images are tags of the busybox test image, so untagging never deletes the image
//! other tests use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const HTPASSWD_BIN: &str = "htpasswd";
/// How long the registry may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(20);

pub struct LocalRegistry {
    /// `127.0.0.1:<port>`: the registry host as image references name it.
    pub host: String,
    pub user: String,
    pub password: String,
    child: Child,
    dir: tempfile::TempDir,
    /// Local tags to remove on drop.
    tags: Vec<String>,
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run the command: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The status code of `GET /v2/`, or `None` while nothing answers.
fn probe(host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(
        format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

impl LocalRegistry {
    /// Starts a registry that admits `user` with `password` only. Panics, naming the package,
    /// when the registry or htpasswd is not installed, and with the registry's log when it
    /// does not come up.
    pub fn start(user: &str, password: &str) -> LocalRegistry {
        rudder_testkit::images::require_docker();
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "this test needs {REGISTRY_BIN}, which is missing: apt-get install docker-registry"
        );
        let dir = tempfile::tempdir().expect("registry temp dir");
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new(HTPASSWD_BIN)
            .args(["-Bbn", user, password])
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs htpasswd, which is missing ({e}): apt-get install apache2-utils")
            });
        assert!(
            out.status.success(),
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
        std::fs::create_dir_all(dir.path().join("docker")).expect("docker config dir");
        // A port taken between the probe and the registry's bind makes it exit: try another.
        let log_path = dir.path().join("registry.log");
        let mut failures = String::new();
        for _ in 0..3 {
            let host = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(&host, dir.path(), &htpasswd))
                .expect("write registry config");
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log clone"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {REGISTRY_BIN}: {e}"));
            match wait_ready(&mut child, &host, &log_path) {
                Ok(()) => {
                    let reg = LocalRegistry {
                        host,
                        user: user.to_string(),
                        password: password.to_string(),
                        child,
                        dir,
                        tags: Vec::new(),
                    };
                    reg.login();
                    return reg;
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push_str(&why);
                }
            }
        }
        panic!("the registry did not start:\n{failures}");
    }

    /// The registry's log so far, for failure messages.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("registry.log"))
    }

    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    fn docker(&self, args: &[&str], what: &str) -> Output {
        run(
            Command::new("docker")
                .env("DOCKER_CONFIG", self.docker_config())
                .args(args),
            what,
        )
    }

    fn login(&self) {
        let mut child = Command::new("docker")
            .env("DOCKER_CONFIG", self.docker_config())
            .args([
                "login",
                "--username",
                &self.user,
                "--password-stdin",
                &self.host,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker login starts");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(self.password.as_bytes())
            .expect("password to docker login");
        let out = child.wait_with_output().expect("docker login runs");
        assert!(
            out.status.success(),
            "docker login {} failed (the engine must treat 127.0.0.0/8 as an insecure registry): {}\nregistry log:\n{}",
            self.host,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Pushes `image` (a local tag) as `<host>/<repo>:<tag>` and removes that local tag, so
    /// that only a pull brings it back. Returns the reference.
    pub fn push(&mut self, image: &str, repo: &str, tag: &str) -> String {
        let reference = format!("{}/{repo}:{tag}", self.host);
        self.tags.push(reference.clone());
        self.docker(&["tag", image, &reference], "docker tag");
        self.docker(&["push", "--quiet", &reference], "docker push");
        self.untag(&reference);
        assert!(
            local_image_id(&reference).is_none(),
            "{reference} is still present locally after docker rmi"
        );
        reference
    }

    fn untag(&self, reference: &str) {
        let _ = Command::new("docker")
            .env("DOCKER_CONFIG", self.docker_config())
            .args(["image", "rm", "--force", reference])
            .output();
    }

    /// The `.dockerconfigjson` that `docker login` wrote, as a pull secret would carry it.
    pub fn docker_config_json(&self) -> Vec<u8> {
        std::fs::read(self.docker_config().join("config.json")).expect("docker config.json")
    }
}

/// The local image id of `reference`, if present.
pub fn local_image_id(reference: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the registry answers; `Err` with its log when it exited or stayed silent.
fn wait_ready(child: &mut Child, host: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        // Unauthenticated, the API root must answer 401: that also proves auth is on.
        match probe(host) {
            Some(401) => return Ok(()),
            Some(other) => panic!(
                "registry at {host} answered {other} to an anonymous GET /v2/, not 401: {}",
                read_log(log)
            ),
            None => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("registry exited ({status}):\n{}\n", read_log(log)));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "registry at {host} not answering after {READY_WITHIN:?}:\n{}\n",
                read_log(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_yaml(host: &str, dir: &Path, htpasswd: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {host}\n\
         auth:\n  htpasswd:\n    realm: rudder-test\n    path: {}\n",
        dir.join("storage").display(),
        htpasswd.display()
    )
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        for t in &self.tags {
            self.untag(t);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
