//! Local container images for tests, built with the `docker` CLI (nothing is pulled: the test
//! engine has no registry), and a guard that removes what a test created.
//!
//! Each image's tag is a hash of everything that goes into it, so every test process of a run
//! (nextest runs each test in its own) agrees on the name; the first builds it, under a file
//! lock in the temporary directory, and the others find it. Images are never removed: the next
//! run reuses them.
//!
//! - [`busybox()`]: FROM scratch with the host's static `/bin/busybox` (Debian's
//!   busybox-static) and its applets in `/bin`, `PATH=/bin`.
//! - [`test_server()`]: FROM scratch with the static HTTP server of `testkit/testserver/main.rs`
//!   as entrypoint `/test-server` (its doc lists the routes and environment), plus busybox in
//!   `/bin` so that exec probes and hooks have a shell.
//!
//! Tests that need Docker call [`require_docker`] (or these functions, which do), and panic
//! when it is missing rather than skip.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BUSYBOX: &str = "/bin/busybox";
const TEST_SERVER_SOURCE: &str = include_str!("../testserver/main.rs");

const BUSYBOX_DOCKERFILE: &str = "FROM scratch\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
ENV PATH=/bin\n";

const TEST_SERVER_DOCKERFILE: &str = "FROM scratch\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
ENV PATH=/bin\n\
COPY test-server /test-server\n\
ENTRYPOINT [\"/test-server\"]\n";

/// FNV-1a over several inputs (a cache key, not a security hash).
fn content_hash(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xffu8]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")[..12].to_string()
}

fn docker(args: &[&str]) -> std::io::Result<Output> {
    Command::new("docker").args(args).output()
}

/// Panics unless the `docker` CLI reaches an engine.
pub fn require_docker() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked =
        CHECKED.get_or_init(
            || match docker(&["version", "--format", "{{.Server.Version}}"]) {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                Err(e) => Err(format!("cannot run the docker CLI: {e}")),
            },
        );
    if let Err(why) = checked {
        panic!(
            "this test needs a running Docker engine (and the docker CLI), which is missing: {why}"
        );
    }
}

fn cache_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("rudder-testkit");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating the test image cache {}: {e}", dir.display());
    }
    dir
}

/// Holds an exclusive lock on `name` in the cache directory while it lives.
fn lock(name: &str) -> File {
    let path = cache_dir().join(format!("{name}.lock"));
    let file = File::create(&path)
        .unwrap_or_else(|e| panic!("creating the lock file {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    file
}

fn image_exists(tag: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", tag]).is_ok_and(|o| o.status.success())
}

/// Builds `tag` from a context of `files` (name, content, mode) unless it exists.
fn build_image(tag: &str, dockerfile: &str, files: &[(&str, &[u8], u32)]) {
    require_docker();
    if image_exists(tag) {
        return;
    }
    let _lock = lock(&tag.replace(['/', ':'], "_"));
    if image_exists(tag) {
        return;
    }
    let context = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary build context: {e}"));
    write_file(context.path(), "Dockerfile", dockerfile.as_bytes(), 0o644);
    for (name, content, mode) in files {
        write_file(context.path(), name, content, *mode);
    }
    let dir = context.path().to_string_lossy().into_owned();
    let out = docker(&["build", "-q", "-t", tag, &dir])
        .unwrap_or_else(|e| panic!("running docker build for {tag}: {e}"));
    if !out.status.success() {
        panic!(
            "docker build of {tag} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn busybox_binary() -> &'static [u8] {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| match std::fs::read(BUSYBOX) {
        Ok(b) => b,
        Err(e) => {
            panic!("{BUSYBOX} is needed for the test images ({e}): apt-get install busybox-static")
        }
    })
}

/// The busybox image's tag, built on first use.
pub fn busybox() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let bin = busybox_binary();
        let tag = format!(
            "rudder-test/busybox:{}",
            content_hash(&[BUSYBOX_DOCKERFILE.as_bytes(), bin])
        );
        build_image(&tag, BUSYBOX_DOCKERFILE, &[("busybox", bin, 0o755)]);
        tag
    })
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string())
}

/// Compiles the test server (static, std only) into the cache, once per source and compiler.
fn test_server_binary(key: &str) -> Vec<u8> {
    let out = cache_dir().join(format!("test-server-{key}"));
    if let Ok(b) = std::fs::read(&out) {
        return b;
    }
    let _lock = lock(&format!("test-server-{key}"));
    if let Ok(b) = std::fs::read(&out) {
        return b;
    }
    let src = cache_dir().join(format!("test-server-{key}.rs"));
    std::fs::write(&src, TEST_SERVER_SOURCE)
        .unwrap_or_else(|e| panic!("writing {}: {e}", src.display()));
    let partial = cache_dir().join(format!("test-server-{key}.partial"));
    let result = Command::new(rustc())
        .args(["--edition=2024", "--crate-name=test_server", "-O"])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .arg("-o")
        .arg(&partial)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {} for the test server: {e}", rustc()));
    if !result.status.success() {
        panic!(
            "compiling the test server failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    // Renamed into place so that a reader never sees half a binary.
    std::fs::rename(&partial, &out)
        .unwrap_or_else(|e| panic!("moving the test server to {}: {e}", out.display()));
    std::fs::read(&out).unwrap_or_else(|e| panic!("reading {}: {e}", out.display()))
}

/// The test server image's tag, built on first use.
pub fn test_server() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        require_docker();
        let version = Command::new(rustc())
            .arg("-vV")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let key = content_hash(&[TEST_SERVER_SOURCE.as_bytes(), &version]);
        let server = test_server_binary(&key);
        let bin = busybox_binary();
        let tag = format!(
            "rudder-test/test-server:{}",
            content_hash(&[TEST_SERVER_DOCKERFILE.as_bytes(), bin, &server])
        );
        build_image(
            &tag,
            TEST_SERVER_DOCKERFILE,
            &[("busybox", bin, 0o755), ("test-server", &server, 0o755)],
        );
        tag
    })
}

/// Removes, when dropped (also when the test panics), the containers carrying any of its
/// labels or names, then its networks. [`DockerCleanup::run`] does the same at once, e.g. to
/// clear what a crashed earlier run of the same test left.
#[derive(Debug, Default)]
pub struct DockerCleanup {
    labels: Vec<String>,
    containers: Vec<String>,
    networks: Vec<String>,
}

impl DockerCleanup {
    pub fn new() -> Self {
        DockerCleanup::default()
    }

    /// Containers labelled `key=value`.
    pub fn label(&mut self, key: &str, value: &str) -> &mut Self {
        self.labels.push(format!("{key}={value}"));
        self
    }

    /// A container by name or id.
    pub fn container(&mut self, name: &str) -> &mut Self {
        self.containers.push(name.to_string());
        self
    }

    pub fn network(&mut self, name: &str) -> &mut Self {
        self.networks.push(name.to_string());
        self
    }

    /// Removes everything now (errors, such as "no such container", are ignored).
    pub fn run(&self) {
        let mut ids: Vec<String> = self.containers.clone();
        for label in &self.labels {
            let filter = format!("label={label}");
            if let Ok(o) = docker(&["ps", "-aq", "--filter", &filter]) {
                ids.extend(
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_string),
                );
            }
        }
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for net in &self.networks {
            let _ = docker(&["network", "rm", net]);
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        self.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_part_and_its_boundaries() {
        assert_eq!(content_hash(&[b"a", b"b"]), content_hash(&[b"a", b"b"]));
        assert_ne!(content_hash(&[b"a", b"b"]), content_hash(&[b"ab"]));
        assert_ne!(content_hash(&[b"a"]), content_hash(&[b"b"]));
        assert_eq!(content_hash(&[b"x"]).len(), 12);
    }
}
