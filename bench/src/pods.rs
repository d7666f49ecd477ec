//! The pods scenario: the release `rudder-apiserver` and `rudder-node-agent` as child processes
//! on the local Docker engine; N pods bound to the node one after another, each timed from the
//! create (it is bound on creation: `spec.nodeName` set) to the status showing it Running and
//! Ready. Beside it, in the same run, the same image started N times straight through the
//! engine's API (create + start, what `docker run -d` does), so the agent's overhead reads as a
//! ratio on this machine. Also the agent's RSS with the N pods running.
//!
//! Both processes die with their guards; the containers of both sides and the network are
//! removed at the end, also on error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bytes::Bytes;
use futures::StreamExt;
use rudder_client::Client;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::measure::{Latency, new_hist, record, rss_bytes};
use crate::procs;

const NODE: &str = "bench-node";
const NETWORK: &str = "rudder-bench";
const SUBNET: &str = "10.216.1.0/24";
const BASELINE_LABEL: &str = "io.rudder.bench";

/// Flags of `rudder-bench pods`.
#[derive(Debug, Clone, clap::Args)]
pub struct PodsArgs {
    /// Pods started, one after another (and as many plain containers).
    #[arg(long, default_value_t = 50)]
    pub pods: u64,
    /// The image both sides run (default: the test busybox image, built locally).
    #[arg(long)]
    pub image: Option<String>,
    /// The rudder-node-agent binary (default: next to this binary).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct PodsFigures {
    pub pods: u64,
    pub running: Latency,
    pub ready: Latency,
    pub docker: Latency,
    pub agent_rss: u64,
}

impl PodsFigures {
    pub fn render(&self) -> String {
        let ratio = |a: f64| a / self.docker.p50_ms.max(1e-9);
        format!(
            "Pods: {} pods on one node, started one after another (busybox, sleep)\n\
             | metric                         | rudder | plain engine create+start |\n\
             |--------------------------------|--------|---------------------------|\n\
             | start p50 (ms)                 | running {:.1}, ready {:.1} | {:.1} |\n\
             | start p99 (ms)                 | running {:.1}, ready {:.1} | {:.1} |\n\
             | p50 ratio to the engine        | running {:.2}x, ready {:.2}x | 1 |\n\
             | p50 overhead (ms)              | {:.1} (target: within 100) | |\n\
             | node agent RSS with pods (MiB) | {:.1} (target: under 40) | |",
            self.pods,
            self.running.p50_ms,
            self.ready.p50_ms,
            self.docker.p50_ms,
            self.running.p99_ms,
            self.ready.p99_ms,
            self.docker.p99_ms,
            ratio(self.running.p50_ms),
            ratio(self.ready.p50_ms),
            self.running.p50_ms - self.docker.p50_ms,
            self.agent_rss as f64 / (1024.0 * 1024.0),
        )
    }
}

/// The agent process and its data directory; on drop it is killed and what it started is
/// removed.
struct AgentProc {
    proc: procs::Component,
    _data: tempfile::TempDir,
}

/// Removes both sides' containers and the network.
fn docker_cleanup() {
    rudder_testkit::images::DockerCleanup::new()
        .label("io.rudder.node", NODE)
        .label(BASELINE_LABEL, "1")
        .network(NETWORK)
        .run();
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // The process first (it would recreate what is removed), then the containers.
        self.proc.stop();
        docker_cleanup();
    }
}

fn start_agent(bin: &Path, server: &str) -> anyhow::Result<AgentProc> {
    let data = tempfile::Builder::new()
        .prefix("rudder-bench-agent-data-")
        .tempdir()
        .context("creating the agent's data directory")?;
    let dir = data.path().display().to_string();
    let args = [
        "--node-name",
        NODE,
        "--pod-cidr",
        SUBNET,
        "--network",
        NETWORK,
        "--network-subnet",
        SUBNET,
        "--data-dir",
        &dir,
    ];
    let c = procs::Component::start("rudder-node-agent", bin, server, &args)?;
    Ok(AgentProc {
        proc: c,
        _data: data,
    })
}

fn pod_ref() -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "Pod".into(),
    })
}

fn pod_json(name: &str, image: &str) -> Bytes {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]},
    });
    Bytes::from(pod.to_string())
}

fn running(v: &Value) -> bool {
    v.pointer("/status/containerStatuses/0/state/running")
        .is_some()
}

fn ready(v: &Value) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Creates pod `name` and follows its watch until it is Ready: (create → running, → ready).
async fn start_pod(c: &Client, name: &str, image: &str) -> anyhow::Result<(Duration, Duration)> {
    let watch = pb::WatchRequest {
        kind: pod_ref(),
        namespace: "default".into(),
        field_selector: format!("metadata.name={name}"),
        ..Default::default()
    };
    let mut events = c.watch(watch).await.context("watch")?;
    let t0 = Instant::now();
    c.create(pb::CreateRequest {
        kind: pod_ref(),
        namespace: "default".into(),
        json: pod_json(name, image),
        options: None,
    })
    .await
    .context("create pod")?;
    let mut at_running = None;
    let deadline = Duration::from_secs(60);
    loop {
        let ev = tokio::time::timeout(deadline.saturating_sub(t0.elapsed()), events.next())
            .await
            .with_context(|| format!("pod {name} not ready within {deadline:?}"))?;
        let Some(ev) = ev else {
            bail!("watch of {name} ended")
        };
        let ev = ev.context("watch event")?;
        let Some(obj) = ev.object else { continue };
        let v: Value = serde_json::from_slice(&obj.json).context("pod json")?;
        if at_running.is_none() && running(&v) {
            at_running = Some(t0.elapsed());
        }
        if ready(&v) {
            return Ok((at_running.unwrap_or_else(|| t0.elapsed()), t0.elapsed()));
        }
    }
}

/// The engine alone: create + start of the same image, as `docker run -d` does.
async fn plain_start(d: &Docker, image: &str, i: u64) -> anyhow::Result<Duration> {
    let name = format!("rudder-bench-plain-{i}");
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        labels: Some([(BASELINE_LABEL.to_string(), "1".to_string())].into()),
        // The engine's default bridge: on the agent's network the engine would hand these
        // containers addresses from the pod range.
        host_config: Some(HostConfig::default()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = d
        .create_container(Some(opts), body)
        .await
        .context("docker create")?;
    d.start_container(
        &created.id,
        None::<bollard::query_parameters::StartContainerOptions>,
    )
    .await
    .context("docker start")?;
    // Left running, as the pods are, until the end.
    Ok(t0.elapsed())
}

/// Runs the scenario with the API server at `apiserver_bin`.
pub async fn run(apiserver_bin: &Path, a: &PodsArgs, image: &str) -> anyhow::Result<PodsFigures> {
    let agent_bin = match &a.agent_bin {
        Some(b) => b.clone(),
        None => apiserver_bin.with_file_name("rudder-node-agent"),
    };
    docker_cleanup();
    let mut server = procs::start_rudder(apiserver_bin, &[])?;
    let client = Client::new(std::slice::from_ref(&server.addr))?;
    {
        let c = client.clone();
        procs::wait_ready(&mut server, Duration::from_secs(20), move || {
            let c = c.clone();
            async move {
                c.health().await?;
                Ok(())
            }
        })
        .await?;
    }
    let agent = start_agent(&agent_bin, &server.addr)?;
    let result = scenario(&client, &agent, a, image).await;
    result.with_context(|| {
        format!(
            "pods benchmark failed; node agent log tail:\n{}",
            agent.proc.log_tail(20)
        )
    })
}

async fn scenario(
    client: &Client,
    agent: &AgentProc,
    a: &PodsArgs,
    image: &str,
) -> anyhow::Result<PodsFigures> {
    let docker = Docker::connect_with_local_defaults()
        .context("connecting to Docker")?
        .negotiate_version()
        .await
        .context("negotiating the Docker API version")?;
    // The node registers; a first pod builds the pause image (not measured).
    let t = Instant::now();
    loop {
        if let Err(e) = start_pod(client, "warmup", image).await {
            if t.elapsed() > Duration::from_secs(60) {
                return Err(e.context("the warm-up pod never became ready"));
            }
            let _ = client
                .delete(pb::DeleteRequest {
                    kind: pod_ref(),
                    namespace: "default".into(),
                    name: "warmup".into(),
                    grace_period_seconds: Some(0),
                    ..Default::default()
                })
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        break;
    }
    plain_start(&docker, image, 0).await?;
    let (mut h_run, mut h_ready, mut h_docker) = (new_hist(), new_hist(), new_hist());
    // Alternate the two sides so that drift on the machine hits both alike.
    for i in 0..a.pods {
        let (r, ready) = start_pod(client, &format!("bp-{i:03}"), image).await?;
        record(&mut h_run, r);
        record(&mut h_ready, ready);
        record(&mut h_docker, plain_start(&docker, image, i + 1).await?);
    }
    let agent_rss = rss_bytes(agent.proc.pid()).unwrap_or(0);
    Ok(PodsFigures {
        pods: a.pods,
        running: Latency::of(&h_run),
        ready: Latency::of(&h_ready),
        docker: Latency::of(&h_docker),
        agent_rss,
    })
}
