//! An in-memory container runtime that behaves as the Docker one does (the conformance suite
//! in `node-agent/tests/runtime_conformance.rs` runs against both), for tests under paused time.
//!
//! What a container "does" is set per image with [`Behaviour`]: run forever or exit after a
//! while with a code, how it answers SIGTERM, what its exec commands return. Exits happen
//! lazily: a container whose time is up is seen as exited by the next call that looks at it, at
//! the (tokio) instant it was due, so tests drive lifecycles by advancing paused time. Every
//! mutating call is appended to [`FakeRuntime::calls`] so tests can check order (termination:
//! stop every container, then the sandbox).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rudder_client::clock::SharedClock;
use tokio::time::Instant;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, EXEC_OUTPUT_LIMIT, ExecChunk, ExecOutput,
    ExecSession, LogOptions, LogStream, NetworkSpec, PullAuth, Role, RtFuture, RuntimeError,
    SandboxSpec, State, Stats, labels,
};

/// What a container running an image does.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `None`: runs until stopped.
    pub run_for: Option<Duration>,
    /// The exit code when it ends by itself.
    pub exit_code: i64,
    /// Ends by itself killed for exceeding its memory limit (exit 137, OOMKilled).
    pub oom: bool,
    /// After SIGTERM it exits this long later with this code; `None`: it ignores SIGTERM and
    /// is killed at the end of the grace period (137).
    pub on_sigterm: Option<(Duration, i64)>,
    /// Starting fails with this message (as a missing executable does); the exit code is
    /// Docker's for it (127 for "no such file or directory", 126 for "permission denied",
    /// else 128), and the container has no start or finish time.
    pub start_error: Option<String>,
    /// Exec results by command line; others exit 0 with no output.
    pub exec: HashMap<Vec<String>, ExecOutput>,
    /// What `logs` returns (of which `tail` keeps the last lines; other options are ignored).
    pub logs: Vec<u8>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            run_for: None,
            exit_code: 0,
            oom: false,
            on_sigterm: Some((Duration::ZERO, 143)),
            start_error: None,
            exec: HashMap::new(),
            logs: Vec::new(),
        }
    }
}

/// A mutating call, recorded in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Pull(String),
    RunSandbox(String),
    Create {
        pod: String,
        name: String,
        attempt: u32,
    },
    Start(String),
    Stop(String),
    Remove(String),
    Exec(String, Vec<String>),
}

#[derive(Debug)]
struct Container {
    info: ContainerInfo,
    spec: Option<ContainerSpec>,
    sandbox: Option<SandboxSpec>,
    behaviour: Behaviour,
    /// When a running container ends by itself.
    exit_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    up: bool,
    next_id: u64,
    images: BTreeMap<String, String>,
    /// Images a pull can fetch, with the credentials it needs (None: anonymous).
    registry: BTreeMap<String, Option<PullAuth>>,
    networks: BTreeMap<String, String>,
    containers: BTreeMap<String, Container>,
    behaviours: HashMap<String, Behaviour>,
    calls: Vec<Call>,
    /// Interactive execs' exit codes by exec id.
    execs: HashMap<String, i64>,
}

/// See the module doc.
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
}

fn image_digest(image: &str) -> String {
    // Stable and distinct per name; real ids are content hashes.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in image.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("sha256:{h:016x}{h:016x}{h:016x}{h:016x}")
}

impl FakeRuntime {
    pub fn new(clock: SharedClock) -> Self {
        FakeRuntime {
            inner: Arc::new(Mutex::new(Inner {
                up: true,
                ..Inner::default()
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes an image present locally, as `docker build` would.
    pub fn add_image(&self, image: &str) {
        self.lock()
            .images
            .insert(image.to_string(), image_digest(image));
    }

    /// Makes an image pullable, with the credentials the registry demands.
    pub fn add_registry_image(&self, image: &str, auth: Option<PullAuth>) {
        self.lock().registry.insert(image.to_string(), auth);
    }

    pub fn set_behaviour(&self, image: &str, b: Behaviour) {
        self.lock().behaviours.insert(image.to_string(), b);
    }

    /// Engine up or down: while down every call fails with `Unavailable`.
    pub fn set_up(&self, up: bool) {
        self.lock().up = up;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Ends a running container now, as a crash or `docker kill` would.
    pub fn kill(&self, id: &str, exit_code: i64, oom: bool) {
        let now = self.clock.now();
        let mut g = self.lock();
        if let Some(c) = g.containers.get_mut(id)
            && c.info.state == State::Running
        {
            exit(c, exit_code, oom, now);
        }
    }

    /// Ids of this pod's containers (not the sandbox) named `name`, oldest first.
    pub fn containers_named(&self, pod_name: &str, name: &str) -> Vec<String> {
        self.lock()
            .containers
            .values()
            .filter(|c| c.info.owner.pod_name == pod_name && c.info.name == name)
            .map(|c| c.info.id.clone())
            .collect()
    }

    /// The spec a container was created with.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(id).and_then(|c| c.spec.clone())
    }

    /// Every container and sandbox, whatever node.
    pub fn all(&self) -> Vec<ContainerInfo> {
        self.settle();
        self.lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect()
    }

    /// Applies the exits that are due.
    fn settle(&self) {
        let now_i = self.clock.instant();
        let now = self.clock.now();
        let mut g = self.lock();
        for c in g.containers.values_mut() {
            if c.info.state == State::Running && c.exit_at.is_some_and(|at| at <= now_i) {
                let (code, oom) = (c.behaviour.exit_code, c.behaviour.oom);
                exit(c, if oom { 137 } else { code }, oom, now);
            }
        }
    }

    fn check_up(&self) -> Result<(), RuntimeError> {
        if self.lock().up {
            Ok(())
        } else {
            Err(RuntimeError::Unavailable(
                "Cannot connect to the Docker daemon (fake engine is down)".into(),
            ))
        }
    }

    fn next_id(g: &mut Inner) -> String {
        g.next_id += 1;
        format!("{:064x}", g.next_id)
    }
}

/// Docker's exit code for a container that could not start: 127 for a missing executable,
/// 126 for one that may not be run, 128 otherwise.
fn start_error_code(message: &str) -> i64 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        128
    }
}

/// The last `n` lines (all without `n`), as the engine's `tail`.
fn tail(logs: &[u8], n: Option<u64>) -> Vec<u8> {
    let Some(n) = n else {
        return logs.to_vec();
    };
    let body = logs.strip_suffix(b"\n").unwrap_or(logs);
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            body.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    if logs.is_empty() || n == 0 {
        return Vec::new();
    }
    let keep = usize::try_from(n).unwrap_or(usize::MAX).min(starts.len());
    logs[starts[starts.len() - keep]..].to_vec()
}

fn exit(c: &mut Container, code: i64, oom: bool, now: jiff::Timestamp) {
    c.info.state = State::Exited;
    c.info.exit_code = Some(code);
    c.info.oom_killed = oom;
    c.info.finished_at = Some(now);
    c.exit_at = None;
}

impl ContainerRuntime for FakeRuntime {
    fn ping(&self) -> RtFuture<'_, String> {
        Box::pin(async move {
            self.check_up()?;
            Ok("fake".to_string())
        })
    }

    fn ensure_network<'a>(&'a self, net: &'a NetworkSpec) -> RtFuture<'a, ()> {
        Box::pin(async move {
            self.check_up()?;
            let mut g = self.lock();
            match g.networks.get(&net.name) {
                Some(subnet) if subnet != &net.subnet => Err(RuntimeError::Refused(format!(
                    "network {:?} exists with subnet {subnet}, not {}",
                    net.name, net.subnet
                ))),
                Some(_) => Ok(()),
                None => {
                    g.networks.insert(net.name.clone(), net.subnet.clone());
                    Ok(())
                }
            }
        })
    }

    fn image_id<'a>(&'a self, image: &'a str) -> RtFuture<'a, Option<String>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self.lock().images.get(image).cloned())
        })
    }

    fn pull<'a>(&'a self, image: &'a str, auth: Option<&'a PullAuth>) -> RtFuture<'a, String> {
        Box::pin(async move {
            self.check_up()?;
            let mut g = self.lock();
            g.calls.push(Call::Pull(image.to_string()));
            match g.registry.get(image) {
                None => Err(RuntimeError::PullFailed {
                    image: image.to_string(),
                    message: format!(
                        "pull access denied for {image}, repository does not exist or may require 'docker login'"
                    ),
                }),
                Some(Some(need)) if auth != Some(need) => Err(RuntimeError::PullFailed {
                    image: image.to_string(),
                    message: "unauthorized: authentication required".into(),
                }),
                Some(_) => {
                    let id = image_digest(image);
                    g.images.insert(image.to_string(), id.clone());
                    Ok(id)
                }
            }
        })
    }

    fn run_sandbox<'a>(&'a self, spec: &'a SandboxSpec) -> RtFuture<'a, String> {
        Box::pin(async move {
            self.check_up()?;
            let now = self.clock.now();
            let mut g = self.lock();
            if !g.networks.contains_key(&spec.network) {
                return Err(RuntimeError::Refused(format!(
                    "network {} not found",
                    spec.network
                )));
            }
            for c in g.containers.values() {
                let Some(other) = &c.sandbox else { continue };
                if c.info.state != State::Running {
                    continue;
                }
                if other.ip == spec.ip && other.network == spec.network {
                    return Err(RuntimeError::Refused(format!(
                        "Address already in use: {}",
                        spec.ip
                    )));
                }
                for hp in &spec.host_ports {
                    if other.host_ports.iter().any(|o| {
                        o.host_port == hp.host_port
                            && o.protocol == hp.protocol
                            && (o.host_ip.is_empty()
                                || hp.host_ip.is_empty()
                                || o.host_ip == hp.host_ip)
                    }) {
                        return Err(RuntimeError::Refused(format!(
                            "Bind for {}:{} failed: port is already allocated",
                            if hp.host_ip.is_empty() {
                                "0.0.0.0"
                            } else {
                                &hp.host_ip
                            },
                            hp.host_port
                        )));
                    }
                }
            }
            let id = Self::next_id(&mut g);
            g.calls.push(Call::RunSandbox(spec.owner.pod_name.clone()));
            let info = ContainerInfo {
                id: id.clone(),
                role: Role::Sandbox,
                owner: spec.owner.clone(),
                name: labels::SANDBOX_NAME.to_string(),
                attempt: 0,
                image: "rudder/pause".into(),
                image_id: image_digest("rudder/pause"),
                state: State::Running,
                exit_code: None,
                oom_killed: false,
                error: String::new(),
                created_at: Some(now),
                started_at: Some(now),
                finished_at: None,
                ip: Some(spec.ip),
            };
            g.containers.insert(
                id.clone(),
                Container {
                    info,
                    spec: None,
                    sandbox: Some(spec.clone()),
                    // The pause process exits 0 on SIGTERM.
                    behaviour: Behaviour {
                        on_sigterm: Some((Duration::ZERO, 0)),
                        ..Behaviour::default()
                    },
                    exit_at: None,
                },
            );
            Ok(id)
        })
    }

    fn create_container<'a>(
        &'a self,
        sandbox_id: &'a str,
        spec: &'a ContainerSpec,
    ) -> RtFuture<'a, String> {
        Box::pin(async move {
            self.check_up()?;
            let now = self.clock.now();
            let mut g = self.lock();
            let Some(image_id) = g.images.get(&spec.image).cloned() else {
                return Err(RuntimeError::ImageNotFound {
                    image: spec.image.clone(),
                    message: format!("No such image: {}", spec.image),
                });
            };
            match g.containers.get(sandbox_id) {
                Some(s) if s.info.state == State::Running => {}
                _ => {
                    return Err(RuntimeError::Refused(format!(
                        "cannot join network of a non running container: {sandbox_id}"
                    )));
                }
            }
            let id = Self::next_id(&mut g);
            g.calls.push(Call::Create {
                pod: spec.owner.pod_name.clone(),
                name: spec.name.clone(),
                attempt: spec.attempt,
            });
            let behaviour = g.behaviours.get(&spec.image).cloned().unwrap_or_default();
            let info = ContainerInfo {
                id: id.clone(),
                role: Role::Container,
                owner: spec.owner.clone(),
                name: spec.name.clone(),
                attempt: spec.attempt,
                image: spec.image.clone(),
                image_id,
                state: State::Created,
                exit_code: None,
                oom_killed: false,
                error: String::new(),
                created_at: Some(now),
                started_at: None,
                finished_at: None,
                ip: None,
            };
            g.containers.insert(
                id.clone(),
                Container {
                    info,
                    spec: Some(spec.clone()),
                    sandbox: None,
                    behaviour,
                    exit_at: None,
                },
            );
            Ok(id)
        })
    }

    fn start_container<'a>(&'a self, id: &'a str) -> RtFuture<'a, ()> {
        Box::pin(async move {
            self.check_up()?;
            let now = self.clock.now();
            let now_i = self.clock.instant();
            let mut g = self.lock();
            g.calls.push(Call::Start(id.to_string()));
            let Some(c) = g.containers.get_mut(id) else {
                return Err(RuntimeError::NotFound(id.to_string()));
            };
            if c.info.state == State::Running {
                return Ok(());
            }
            if let Some(msg) = c.behaviour.start_error.clone() {
                // As Docker: it never ran, so no start or finish time, and the exit code
                // says why (its `translateContainerdStartErr`).
                c.info.state = State::Exited;
                c.info.exit_code = Some(start_error_code(&msg));
                c.info.error = msg.clone();
                c.info.started_at = None;
                c.info.finished_at = None;
                return Err(RuntimeError::Refused(msg));
            }
            c.info.started_at = Some(now);
            c.info.state = State::Running;
            c.info.exit_code = None;
            c.info.finished_at = None;
            c.exit_at = c.behaviour.run_for.map(|d| now_i + d);
            Ok(())
        })
    }

    fn stop_container<'a>(&'a self, id: &'a str, grace: Duration) -> RtFuture<'a, ()> {
        Box::pin(async move {
            self.check_up()?;
            self.settle();
            let wait = {
                let mut g = self.lock();
                g.calls.push(Call::Stop(id.to_string()));
                let Some(c) = g.containers.get(id) else {
                    return Err(RuntimeError::NotFound(id.to_string()));
                };
                if c.info.state != State::Running {
                    return Ok(());
                }
                match c.behaviour.on_sigterm {
                    Some((after, code)) if after <= grace => (after, code),
                    _ => (grace, 137),
                }
            };
            tokio::time::sleep(wait.0).await;
            self.settle();
            let now = self.clock.now();
            let mut g = self.lock();
            if let Some(c) = g.containers.get_mut(id)
                && c.info.state == State::Running
            {
                exit(c, wait.1, false, now);
            }
            Ok(())
        })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> RtFuture<'a, ()> {
        Box::pin(async move {
            self.check_up()?;
            let mut g = self.lock();
            g.calls.push(Call::Remove(id.to_string()));
            g.containers.remove(id);
            Ok(())
        })
    }

    fn list<'a>(&'a self, node: &'a str) -> RtFuture<'a, Vec<ContainerInfo>> {
        Box::pin(async move {
            self.check_up()?;
            self.settle();
            Ok(self
                .lock()
                .containers
                .values()
                .filter(|c| c.info.owner.node == node)
                .map(|c| c.info.clone())
                .collect())
        })
    }

    fn inspect<'a>(&'a self, id: &'a str) -> RtFuture<'a, ContainerInfo> {
        Box::pin(async move {
            self.check_up()?;
            self.settle();
            self.lock()
                .containers
                .get(id)
                .map(|c| c.info.clone())
                .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
        })
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        cmd: &'a [String],
        _timeout: Duration,
    ) -> RtFuture<'a, ExecOutput> {
        Box::pin(async move {
            self.check_up()?;
            self.settle();
            let mut g = self.lock();
            g.calls.push(Call::Exec(id.to_string(), cmd.to_vec()));
            let Some(c) = g.containers.get(id) else {
                return Err(RuntimeError::NotFound(id.to_string()));
            };
            if c.info.state != State::Running {
                return Err(RuntimeError::Refused(format!(
                    "Container {id} is not running"
                )));
            }
            let mut out = c.behaviour.exec.get(cmd).cloned().unwrap_or(ExecOutput {
                exit_code: 0,
                output: Vec::new(),
            });
            out.output.truncate(EXEC_OUTPUT_LIMIT);
            Ok(out)
        })
    }

    fn logs<'a>(&'a self, id: &'a str, opts: &'a LogOptions) -> RtFuture<'a, LogStream> {
        Box::pin(async move {
            self.check_up()?;
            let g = self.lock();
            let Some(c) = g.containers.get(id) else {
                return Err(RuntimeError::NotFound(id.to_string()));
            };
            let out = Bytes::from(tail(&c.behaviour.logs, opts.tail));
            let s: LogStream = Box::pin(futures::stream::iter(vec![Ok(out)]));
            Ok(s)
        })
    }

    fn stats<'a>(&'a self, id: &'a str) -> RtFuture<'a, Stats> {
        Box::pin(async move {
            self.check_up()?;
            let g = self.lock();
            match g.containers.get(id) {
                Some(c) if c.info.state == State::Running => Ok(Stats::default()),
                Some(_) => Err(RuntimeError::Refused(format!(
                    "Container {id} is not running"
                ))),
                None => Err(RuntimeError::NotFound(id.to_string())),
            }
        })
    }

    /// The scripted output (see [`Behaviour::exec`]) as stdout; stdin is accepted and dropped.
    fn exec_start<'a>(
        &'a self,
        id: &'a str,
        cmd: &'a [String],
        _tty: bool,
        stdin: bool,
    ) -> RtFuture<'a, ExecSession> {
        Box::pin(async move {
            let out = self.exec(id, cmd, Duration::from_secs(1)).await?;
            let mut g = self.lock();
            g.next_id += 1;
            let exec_id = format!("exec-{}", g.next_id);
            g.execs.insert(exec_id.clone(), out.exit_code);
            let chunks = vec![Ok(ExecChunk::Stdout(Bytes::from(out.output)))];
            Ok(ExecSession {
                exec_id,
                output: Box::pin(futures::stream::iter(chunks)),
                input: stdin.then(|| {
                    Box::pin(tokio::io::sink())
                        as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>
                }),
            })
        })
    }

    fn exec_resize<'a>(&'a self, exec_id: &'a str, _width: u32, _height: u32) -> RtFuture<'a, ()> {
        Box::pin(async move {
            if self.lock().execs.contains_key(exec_id) {
                Ok(())
            } else {
                Err(RuntimeError::NotFound(exec_id.to_string()))
            }
        })
    }

    fn exec_exit_code<'a>(&'a self, exec_id: &'a str) -> RtFuture<'a, Option<i64>> {
        Box::pin(async move { Ok(self.lock().execs.get(exec_id).copied()) })
    }
}
