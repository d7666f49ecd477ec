//! The runtime conformance harness: one [`Harness`] per case, over the fake or over Docker,
//! giving the case "an image that does X" ([`Program`]) so that the same assertions hold on
//! both. For Docker a program is the busybox test image with a shell command; for the fake it
//! is a unique image name with the matching [`Behaviour`].
//!
//! Docker cases each get their own node names (`conf-<case>`, `conf-<case>-b`), network
//! (`rudder-conf-<n>`) and subnet (`10.213.<n>.0/24`), so they run in parallel; what they
//! create is removed on drop, also when the case panics, and what a crashed earlier run left
//! is removed before the case starts.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rudder_client::clock::{RealClock, SharedClock};
use rudder_node_agent::runtime::docker::DockerRuntime;
use rudder_node_agent::runtime::fake::{Behaviour, FakeRuntime};
use rudder_node_agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ExecOutput, LogOptions, NetworkSpec, Owner,
    SandboxSpec, labels,
};
use rudder_testkit::images::{self, DockerCleanup};

/// How long a case waits for a state that must come.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The subnet prefix of the suite's networks (checked free on this engine: `docker network ls`).
const SUBNET_PREFIX: [u8; 2] = [10, 213];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fake,
    Docker,
}

/// How a program ends.
#[derive(Debug, Clone)]
pub enum Run {
    /// Until stopped.
    Forever,
    /// By itself after this long, with this code.
    ExitAfter(Duration, i64),
    /// Never starts: its executable does not exist.
    MissingExecutable,
    /// Writes these lines (`true`: to stderr), 100 ms apart, then exits 0.
    Print(Vec<(bool, String)>),
    /// Allocates past its memory limit (set by the harness) and is killed for it.
    ExceedMemory,
}

/// The memory limit of [`Run::ExceedMemory`] containers.
pub const SMALL_MEMORY: i64 = 16 << 20;

/// A command run with `exec`: prints then exits.
#[derive(Debug, Clone)]
pub struct Script {
    pub stdout: String,
    pub stderr: String,
    pub code: i64,
}

impl Script {
    /// The command line (the same on both backends). The texts must not contain `'`.
    pub fn command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "printf '%s' '{}'; printf '%s' '{}' >&2; exit {}",
                self.stdout, self.stderr, self.code
            ),
        ]
    }
}

/// What a container of the image does.
#[derive(Debug, Clone)]
pub struct Program {
    pub run: Run,
    /// Exits 143 at once on SIGTERM; otherwise ignores it (only SIGKILL ends it).
    pub exits_on_sigterm: bool,
    /// Exec commands the container answers (the fake must know them in advance).
    pub exec: Vec<Script>,
}

impl Program {
    pub fn new(run: Run) -> Self {
        Program {
            run,
            exits_on_sigterm: true,
            exec: Vec::new(),
        }
    }
}

/// The missing executable's error as Docker 20.10 words it.
const MISSING: &str = "/no/such/binary";

/// What a [`Run::Forever`] program prints once its SIGTERM disposition is set: a signal sent
/// before would find PID 1 without a handler, which the kernel ignores.
const READY: &str = "ready";

pub struct Harness {
    pub kind: Kind,
    pub rt: Arc<dyn ContainerRuntime>,
    pub clock: SharedClock,
    pub case: &'static str,
    /// This case's number: its subnet is `10.213.<n>.0/24`.
    pub n: u8,
    pub node: String,
    /// A second node on the same engine.
    pub node_b: String,
    pub net: NetworkSpec,
    fake: Option<FakeRuntime>,
    images: AtomicU32,
    // Last: runs after the rest is dropped.
    cleanup: Option<DockerCleanup>,
}

fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

impl Harness {
    fn new(
        kind: Kind,
        rt: Arc<dyn ContainerRuntime>,
        clock: SharedClock,
        case: &'static str,
        n: u8,
    ) -> Self {
        let [a, b] = SUBNET_PREFIX;
        Harness {
            kind,
            rt,
            clock,
            case,
            n,
            node: format!("conf-{case}"),
            node_b: format!("conf-{case}-b"),
            net: NetworkSpec {
                name: format!("rudder-conf-{n}"),
                subnet: format!("{a}.{b}.{n}.0/24"),
                gateway: Ipv4Addr::new(a, b, n, 1),
                ip_range: None,
            },
            fake: None,
            images: AtomicU32::new(0),
            cleanup: None,
        }
    }

    pub fn fake(case: &'static str, n: u8) -> Self {
        let clock = RealClock::shared();
        let fake = FakeRuntime::new(clock.clone());
        let mut h = Harness::new(Kind::Fake, Arc::new(fake.clone()), clock, case, n);
        h.fake = Some(fake);
        h
    }

    /// Panics when Docker is not there.
    pub async fn docker(case: &'static str, n: u8) -> Self {
        images::require_docker();
        // Built before the clock of the case starts.
        tokio::task::spawn_blocking(images::busybox)
            .await
            .expect("building the busybox image");
        let clock = RealClock::shared();
        let rt = DockerRuntime::connect(None, clock.clone())
            .await
            .unwrap_or_else(|e| panic!("the runtime conformance suite needs Docker: {e}"));
        let mut h = Harness::new(Kind::Docker, Arc::new(rt), clock, case, n);
        let mut cleanup = DockerCleanup::new();
        cleanup
            .label(labels::NODE, &h.node)
            .label(labels::NODE, &h.node_b)
            .network(&h.net.name);
        cleanup.run();
        h.cleanup = Some(cleanup);
        h
    }

    pub fn is_docker(&self) -> bool {
        self.kind == Kind::Docker
    }

    pub fn fake_runtime(&self) -> Option<&FakeRuntime> {
        self.fake.as_ref()
    }

    pub fn owner(&self, pod: &str) -> Owner {
        self.owner_on(&self.node.clone(), pod)
    }

    /// A pod on `node`, with a uid unique to this case (container names are engine-wide).
    pub fn owner_on(&self, node: &str, pod: &str) -> Owner {
        Owner {
            node: node.to_string(),
            pod_uid: format!("{:08x}-uid", fnv(&format!("{}/{node}/{pod}", self.case))),
            pod_name: pod.to_string(),
            namespace: "conf".to_string(),
        }
    }

    /// The `i`th pod address of this case's subnet (`i` ≥ 1; .1 is the gateway).
    pub fn ip(&self, i: u8) -> Ipv4Addr {
        let [a, b] = SUBNET_PREFIX;
        Ipv4Addr::new(a, b, self.n, i + 1)
    }

    pub fn sandbox_spec(&self, owner: &Owner, ip: Ipv4Addr) -> SandboxSpec {
        SandboxSpec {
            owner: owner.clone(),
            hostname: owner.pod_name.clone(),
            network: self.net.name.clone(),
            ip,
            host_ports: vec![],
            extra_hosts: vec![],
            dns_servers: vec![],
            dns_search: vec![],
            dns_options: vec![],
        }
    }

    /// Ensures the network and runs a sandbox for `pod` at the `i`th address.
    pub async fn sandbox(&self, pod: &str, i: u8) -> (Owner, String) {
        self.rt
            .ensure_network(&self.net)
            .await
            .unwrap_or_else(|e| panic!("ensure_network {:?}: {e}", self.net));
        let owner = self.owner(pod);
        let id = self
            .rt
            .run_sandbox(&self.sandbox_spec(&owner, self.ip(i)))
            .await
            .unwrap_or_else(|e| panic!("run_sandbox for {pod}: {e}"));
        (owner, id)
    }

    /// A container spec running `p` (image, entrypoint and cmd set; the rest default).
    pub fn container(&self, owner: &Owner, name: &str, p: &Program) -> ContainerSpec {
        let (image, entrypoint, cmd) = match self.kind {
            Kind::Fake => (self.fake_image(p), None, None),
            Kind::Docker => {
                let (entrypoint, cmd) = shell_program(p);
                (images::busybox().to_string(), Some(entrypoint), cmd)
            }
        };
        let mut spec = ContainerSpec {
            owner: owner.clone(),
            name: name.to_string(),
            attempt: 0,
            image,
            entrypoint,
            cmd,
            ..ContainerSpec::default()
        };
        if matches!(p.run, Run::ExceedMemory) {
            spec.resources.memory_bytes = Some(SMALL_MEMORY);
        }
        spec
    }

    /// Creates and starts `p` in the sandbox; returns the container id.
    pub async fn run(&self, sandbox: &str, owner: &Owner, name: &str, p: &Program) -> String {
        let spec = self.container(owner, name, p);
        let id = self
            .rt
            .create_container(sandbox, &spec)
            .await
            .unwrap_or_else(|e| panic!("create_container {name}: {e}"));
        self.rt
            .start_container(&id)
            .await
            .unwrap_or_else(|e| panic!("start_container {name}: {e}"));
        if matches!(p.run, Run::Forever) {
            self.wait_ready(&id).await;
        }
        id
    }

    /// Waits until a started [`Run::Forever`] program has set up its signal handling.
    pub async fn wait_ready(&self, id: &str) {
        if self.kind == Kind::Fake {
            return;
        }
        let deadline = self.clock.instant() + DEADLINE;
        loop {
            let mut logs = self
                .rt
                .logs(id, &LogOptions::default())
                .await
                .unwrap_or_else(|e| panic!("logs of {id}: {e}"));
            let mut seen = Vec::new();
            while let Some(chunk) = logs.next().await {
                seen.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("logs of {id}: {e}")));
            }
            if String::from_utf8_lossy(&seen).lines().any(|l| l == READY) {
                return;
            }
            if self.clock.instant() > deadline {
                panic!("{id} did not print {READY:?} within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn fake_image(&self, p: &Program) -> String {
        let Some(fake) = &self.fake else {
            unreachable!("fake images on the fake only")
        };
        let image = format!(
            "conf/{}-{}:v1",
            self.case,
            self.images.fetch_add(1, Ordering::SeqCst)
        );
        let mut b = Behaviour {
            on_sigterm: if p.exits_on_sigterm {
                Some((Duration::ZERO, 143))
            } else {
                None
            },
            ..Behaviour::default()
        };
        match &p.run {
            Run::Forever => {}
            Run::ExitAfter(d, code) => {
                b.run_for = Some(*d);
                b.exit_code = *code;
            }
            Run::MissingExecutable => {
                b.start_error = Some(format!(
                    "failed to create shim task: OCI runtime create failed: runc create failed: \
                     unable to start container process: exec: \"{MISSING}\": stat {MISSING}: \
                     no such file or directory: unknown"
                ));
            }
            Run::ExceedMemory => {
                b.run_for = Some(Duration::from_millis(100));
                b.oom = true;
            }
            Run::Print(lines) => {
                b.run_for = Some(Duration::from_millis(100) * lines.len() as u32);
                b.logs = lines
                    .iter()
                    .flat_map(|(_, l)| format!("{l}\n").into_bytes())
                    .collect();
            }
        }
        b.exec = p
            .exec
            .iter()
            .map(|s| {
                let output = format!("{}{}", s.stdout, s.stderr).into_bytes();
                (
                    s.command(),
                    ExecOutput {
                        exit_code: s.code,
                        output,
                    },
                )
            })
            .collect::<HashMap<_, _>>();
        fake.add_image(&image);
        fake.set_behaviour(&image, b);
        image
    }

    /// Polls `inspect` until `pred` holds; panics naming `what` after [`DEADLINE`].
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&ContainerInfo) -> bool,
    ) -> ContainerInfo {
        let deadline = self.clock.instant() + DEADLINE;
        loop {
            let info = self
                .rt
                .inspect(id)
                .await
                .unwrap_or_else(|e| panic!("inspect {id} while waiting for {what}: {e}"));
            if pred(&info) {
                return info;
            }
            if self.clock.instant() > deadline {
                panic!("{what}: not within {DEADLINE:?}; last seen {info:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The busybox entrypoint and cmd for a program.
fn shell_program(p: &Program) -> (Vec<String>, Option<Vec<String>>) {
    let on_term = if p.exits_on_sigterm {
        "trap 'exit 143' TERM"
    } else {
        "trap '' TERM"
    };
    let script = match &p.run {
        // `wait` returns when a trapped signal arrives; a foreground `sleep` would delay it.
        Run::Forever => format!("{on_term}; echo {READY}; sleep 3600 & wait"),
        Run::ExitAfter(d, code) => {
            format!("{on_term}; sleep {}; exit {code}", d.as_secs_f64())
        }
        Run::MissingExecutable => return (vec![MISSING.to_string()], None),
        // A shell variable doubling until far past the limit (the test engine has no swap),
        // in PID 1 itself: with a helper process the OOM killer may pick the helper instead.
        Run::ExceedMemory => "x=a; while true; do x=$x$x; done".to_string(),
        Run::Print(lines) => {
            let mut s = String::new();
            for (i, (to_stderr, line)) in lines.iter().enumerate() {
                if i > 0 {
                    // Stdout and stderr are read by separate copiers: space the lines so
                    // that the log keeps their order.
                    s.push_str("sleep 0.1; ");
                }
                s.push_str(&format!(
                    "echo '{line}'{}; ",
                    if *to_stderr { " >&2" } else { "" }
                ));
            }
            s.push_str("exit 0");
            s
        }
    };
    (vec!["sh".into(), "-c".into(), script], None)
}
