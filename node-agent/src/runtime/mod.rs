//! The container runtime contract: the one boundary between the node agent and the engine.
//!
//! Nothing above this module knows Docker. A pod is one *sandbox* (an infra container holding the
//! pod's network, UTS and IPC namespaces, with the pod IP) and *containers* that join it. Every
//! container the agent creates carries labels naming its node, pod and container ([`labels`]),
//! so that a restarted agent finds what it owns with [`ContainerRuntime::list`], and several
//! agents on one engine each see only their own.
//!
//! Two implementations behave alike, checked by one conformance suite
//! (`node-agent/tests/runtime_conformance.rs`): [`docker::DockerRuntime`] over the Docker Engine
//! API, and [`fake::FakeRuntime`], in memory, for tests under paused time.

pub mod docker;
pub mod fake;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

/// Labels on every container the agent creates.
pub mod labels {
    /// The node that owns the container.
    pub const NODE: &str = "io.rudder.node";
    pub const POD_UID: &str = "io.rudder.pod.uid";
    pub const POD_NAME: &str = "io.rudder.pod.name";
    pub const POD_NAMESPACE: &str = "io.rudder.pod.namespace";
    /// The container's name in the pod spec; [`SANDBOX_NAME`] for the sandbox.
    pub const CONTAINER: &str = "io.rudder.container";
    /// How many times this container of this pod was started before (0 for the first).
    pub const ATTEMPT: &str = "io.rudder.attempt";
    /// The container name used for a pod's sandbox.
    pub const SANDBOX_NAME: &str = "POD";
}

/// What went wrong in the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The engine does not answer (not running, socket missing, timed out).
    #[error("container engine unavailable: {0}")]
    Unavailable(String),
    /// The image is not present locally and pulling was not asked for or was refused.
    #[error("image {image:?} not found: {message}")]
    ImageNotFound { image: String, message: String },
    /// The engine could not pull the image (unknown repository, auth, network).
    #[error("pulling image {image:?} failed: {message}")]
    PullFailed { image: String, message: String },
    /// No such container.
    #[error("no such container: {0}")]
    NotFound(String),
    /// The engine refused the configuration (bad user, port taken, address in use, ...).
    #[error("{0}")]
    Refused(String),
    /// Anything else the engine said.
    #[error("container engine error: {0}")]
    Engine(String),
}

pub type RtResult<T> = Result<T, RuntimeError>;
/// A boxed future, so that the trait is object safe (`Arc<dyn ContainerRuntime>`).
pub type RtFuture<'a, T> = Pin<Box<dyn Future<Output = RtResult<T>> + Send + 'a>>;

/// Who the container belongs to; becomes its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A `hostPort` published on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Empty: every address.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// The network the sandbox joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The engine's network name (created by [`ContainerRuntime::ensure_network`]).
    pub name: String,
    /// The subnet of that network, e.g. `10.88.0.0/16`.
    pub subnet: String,
    /// The bridge's own address on it, e.g. `10.88.0.1`.
    pub gateway: Ipv4Addr,
    /// Where the engine's own allocator may place containers that are not pods (someone's
    /// `docker run --network rudder`), kept apart from the pod CIDRs so that such a container
    /// never takes a pod's address. `None`: the whole subnet.
    pub ip_range: Option<String>,
}

/// The pod's sandbox: its network identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub owner: Owner,
    /// The pod's hostname (shared by its containers).
    pub hostname: String,
    /// Network name.
    pub network: String,
    /// The pod IP, chosen by the agent from the node's pod CIDR.
    pub ip: Ipv4Addr,
    pub host_ports: Vec<HostPort>,
    /// `/etc/hosts` entries beyond the pod's own (`"name:ip"`).
    pub extra_hosts: Vec<String>,
    /// Name servers and search domains for `/etc/resolv.conf` (empty: the engine's default).
    pub dns_servers: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

/// A file or directory of the node mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Resource controls, already translated from the pod spec (see `pod::resources`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Relative CPU weight (Docker `CpuShares`, cgroup `cpu.shares`), from the CPU request.
    pub cpu_shares: Option<i64>,
    /// CPU quota per period in microseconds, from the CPU limit.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    /// Memory limit in bytes, from the memory limit.
    pub memory_bytes: Option<i64>,
}

/// One container of a pod, as the engine should create it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub owner: Owner,
    /// The container's name in the pod spec.
    pub name: String,
    /// Restart count before this start (becomes the [`labels::ATTEMPT`] label).
    pub attempt: u32,
    pub image: String,
    /// Replaces the image's entrypoint (`command` in the pod spec).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd (`args` in the pod spec).
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    /// In order; later entries win.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// `uid` or `uid:gid`.
    pub user: Option<String>,
    pub read_only_rootfs: bool,
    pub privileged: bool,
    pub resources: Resources,
    pub tty: bool,
    pub stdin: bool,
}

/// Whether a listed container is a pod's sandbox or one of its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sandbox,
    Container,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    Running,
    /// Ran and stopped (or failed to start: then `exit_code` is the engine's and `error` says why).
    Exited,
}

/// What the runtime knows of one container (or sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub role: Role,
    pub owner: Owner,
    /// The name in the pod spec ([`labels::SANDBOX_NAME`] for a sandbox).
    pub name: String,
    pub attempt: u32,
    /// The image as asked for.
    pub image: String,
    /// The engine's id of the image it runs (`sha256:...`).
    pub image_id: String,
    pub state: State,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Why the engine could not start it, if it could not.
    pub error: String,
    pub created_at: Option<jiff::Timestamp>,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    /// The sandbox's address on its network (sandboxes only).
    pub ip: Option<Ipv4Addr>,
}

/// Credentials for one pull (from an `imagePullSecrets` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullAuth {
    pub server: String,
    pub username: String,
    pub password: String,
}

/// The result of a command run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// Stdout then stderr, truncated to [`EXEC_OUTPUT_LIMIT`] bytes.
    pub output: Vec<u8>,
}

/// Probe and hook output kept at most (kubelet keeps 10 KiB of a probe's output too).
pub const EXEC_OUTPUT_LIMIT: usize = 10 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<jiff::Timestamp>,
    pub timestamps: bool,
}

/// A container's output as it arrives, stdout and stderr interleaved.
pub type LogStream = BoxStream<'static, RtResult<Bytes>>;

/// Resource use of one running container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Working set in bytes (usage minus inactive file cache, as kubelet reports).
    pub memory_working_set_bytes: u64,
}

/// The container engine as the node agent uses it.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The engine's version; an error when it does not answer.
    fn ping(&self) -> RtFuture<'_, String>;

    /// Creates the network if it is missing; an existing one with another subnet is an error.
    fn ensure_network<'a>(&'a self, net: &'a NetworkSpec) -> RtFuture<'a, ()>;

    /// The local image's id, or `None` when it is not present.
    fn image_id<'a>(&'a self, image: &'a str) -> RtFuture<'a, Option<String>>;

    /// Pulls the image and returns its id.
    fn pull<'a>(&'a self, image: &'a str, auth: Option<&'a PullAuth>) -> RtFuture<'a, String>;

    /// Creates and starts the pod's sandbox; returns its id.
    fn run_sandbox<'a>(&'a self, spec: &'a SandboxSpec) -> RtFuture<'a, String>;

    /// Creates (does not start) a container in the sandbox's namespaces; returns its id. The
    /// image must be present.
    fn create_container<'a>(
        &'a self,
        sandbox_id: &'a str,
        spec: &'a ContainerSpec,
    ) -> RtFuture<'a, String>;

    fn start_container<'a>(&'a self, id: &'a str) -> RtFuture<'a, ()>;

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL; returns once it stopped. Stopping a
    /// stopped container succeeds.
    fn stop_container<'a>(&'a self, id: &'a str, grace: Duration) -> RtFuture<'a, ()>;

    /// Removes a container (a running one is killed first). Removing a missing one succeeds.
    fn remove_container<'a>(&'a self, id: &'a str) -> RtFuture<'a, ()>;

    /// Every sandbox and container labelled with this node, running or not.
    fn list<'a>(&'a self, node: &'a str) -> RtFuture<'a, Vec<ContainerInfo>>;

    fn inspect<'a>(&'a self, id: &'a str) -> RtFuture<'a, ContainerInfo>;

    /// Runs a command in a running container and waits for it, at most `timeout` (then an
    /// [`RuntimeError::Engine`] saying it timed out).
    fn exec<'a>(
        &'a self,
        id: &'a str,
        cmd: &'a [String],
        timeout: Duration,
    ) -> RtFuture<'a, ExecOutput>;

    fn logs<'a>(&'a self, id: &'a str, opts: &'a LogOptions) -> RtFuture<'a, LogStream>;

    fn stats<'a>(&'a self, id: &'a str) -> RtFuture<'a, Stats>;

    /// Starts an interactive command in a running container: its output as it comes, and its
    /// stdin when `stdin` is set. With `tty` the output is one raw terminal stream (stdout).
    fn exec_start<'a>(
        &'a self,
        id: &'a str,
        cmd: &'a [String],
        tty: bool,
        stdin: bool,
    ) -> RtFuture<'a, ExecSession>;

    /// Resizes an exec's terminal.
    fn exec_resize<'a>(&'a self, exec_id: &'a str, width: u32, height: u32) -> RtFuture<'a, ()>;

    /// An exec's exit code once it ended (`None` while it runs).
    fn exec_exit_code<'a>(&'a self, exec_id: &'a str) -> RtFuture<'a, Option<i64>>;
}

/// Output of an interactive exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A running interactive exec.
pub struct ExecSession {
    /// The engine's id for it (for resize and the exit code).
    pub exec_id: String,
    pub output: BoxStream<'static, RtResult<ExecChunk>>,
    /// Its stdin, when asked for.
    pub input: Option<Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

/// Labels for a container or sandbox of `owner`.
pub fn owner_labels(owner: &Owner, name: &str, attempt: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NODE.to_string(), owner.node.clone()),
        (labels::POD_UID.to_string(), owner.pod_uid.clone()),
        (labels::POD_NAME.to_string(), owner.pod_name.clone()),
        (labels::POD_NAMESPACE.to_string(), owner.namespace.clone()),
        (labels::CONTAINER.to_string(), name.to_string()),
        (labels::ATTEMPT.to_string(), attempt.to_string()),
    ])
}

/// Reads back what [`owner_labels`] wrote; `None` for a container the agent did not create.
pub fn parse_labels(labels: &BTreeMap<String, String>) -> Option<(Owner, String, u32)> {
    let get = |k: &str| labels.get(k).cloned();
    let owner = Owner {
        node: get(labels::NODE)?,
        pod_uid: get(labels::POD_UID)?,
        pod_name: get(labels::POD_NAME).unwrap_or_default(),
        namespace: get(labels::POD_NAMESPACE).unwrap_or_default(),
    };
    let name = get(labels::CONTAINER)?;
    let attempt = get(labels::ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Some((owner, name, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let owner = Owner {
            node: "n1".into(),
            pod_uid: "u".into(),
            pod_name: "p".into(),
            namespace: "default".into(),
        };
        let l = owner_labels(&owner, "web", 3);
        assert_eq!(parse_labels(&l), Some((owner, "web".to_string(), 3)));
        let mut foreign = l.clone();
        foreign.remove(labels::NODE);
        assert_eq!(parse_labels(&foreign), None);
    }
}
