//! The Deployment scenario: the real release `rudder-apiserver`, `rudder-scheduler` and
//! `rudder-controller-manager` as child processes, nodes simulated in this process
//! (`rudder_testkit::NodeSim`: a bound pod becomes Running and Ready at once), then one
//! Deployment of N replicas. Prints how long it takes to have every pod created and every
//! replica available, and the controllers' pod creations per second; beside it the peer
//! measured in the same run: the same N pods created directly by concurrent clients, through the
//! same scheduler and simulated nodes, until all are Ready. The peer is the floor the controllers
//! stand on: what the API server, scheduler and nodes do without them.
//!
//! Every process dies with its guard (SIGKILL, then reap), also on error. Waits have a deadline,
//! so a controller that stops shows as a count, not a hang.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rudder_client::Client;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::measure::{CpuProbe, CpuUse, closed_loop};
use crate::procs;

/// Flags of `rudder-bench deployment`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Replicas of the Deployment (and pods of the peer).
    #[arg(long, default_value_t = 1_000)]
    pub replicas: u64,
    /// Simulated nodes (250 pods each).
    #[arg(long, default_value_t = 10)]
    pub nodes: u64,
    /// Concurrent clients of the direct-create peer.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds to wait for each phase before reporting what was not done.
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
}

/// One phase's figures.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Start → the last of the N pods exists.
    pub all_created: Option<Duration>,
    /// Start → every one Ready (the peer) or the Deployment all available.
    pub all_ready: Option<Duration>,
    pub created: u64,
    pub ready: u64,
}

impl Phase {
    fn per_sec(&self, n: u64) -> f64 {
        self.all_created
            .map_or(0.0, |d| n as f64 / d.as_secs_f64().max(1e-9))
    }
}

#[derive(Debug, Clone)]
pub struct DeployFigures {
    pub replicas: u64,
    pub nodes: u64,
    pub deployment: Phase,
    pub peer: Phase,
    pub cpu_controllers: CpuUse,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

impl DeployFigures {
    pub fn render(&self) -> String {
        let n = self.replicas;
        format!(
            "Deployment of {n} replicas on {} simulated nodes (real apiserver, scheduler, controller-manager)\n\
             | metric                          | Deployment (controllers) | direct creates (peer) |\n\
             |---------------------------------|--------------------------|-----------------------|\n\
             | pods created                    | {} / {n} | {} / {n} |\n\
             | all pods created (s)            | {} | {} |\n\
             | pod creations/s                 | {:.0} | {:.0} |\n\
             | all available / all Ready (s)   | {} | {} |\n\
             | available / Ready at the end    | {} | {} |\n\
             CPU (cores) of the controller-manager during the Deployment: {:.2}",
            self.nodes,
            self.deployment.created,
            self.peer.created,
            secs(self.deployment.all_created),
            secs(self.peer.all_created),
            self.deployment.per_sec(n),
            self.peer.per_sec(n),
            secs(self.deployment.all_ready),
            secs(self.peer.all_ready),
            self.deployment.ready,
            self.peer.ready,
            self.cpu_controllers.server_cores,
        )
    }
}

fn kind(api_version: &str, k: &str) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: api_version.into(),
        kind: k.into(),
    })
}

fn pod_spec() -> Value {
    json!({"containers": [{"name": "c", "image": "bench",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]})
}

pub(crate) fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Pods with label `app=<app>`: (existing, Ready).
async fn count(c: &Client, app: &str) -> anyhow::Result<(u64, u64)> {
    let l = c
        .list(pb::ListRequest {
            kind: kind("v1", "Pod"),
            namespace: "default".into(),
            label_selector: format!("app={app}"),
            ..Default::default()
        })
        .await
        .context("list pods")?;
    let mut ready_n = 0;
    for o in &l.items {
        let v: Value = serde_json::from_slice(&o.json).context("pod json")?;
        if ready(&v) {
            ready_n += 1;
        }
    }
    Ok((l.items.len() as u64, ready_n))
}

async fn deployment_available(c: &Client, name: &str) -> anyhow::Result<u64> {
    let o = c
        .get(pb::GetRequest {
            kind: kind("apps/v1", "Deployment"),
            namespace: "default".into(),
            name: name.into(),
            allow_stale: false,
        })
        .await
        .context("get deployment")?;
    let v: Value = serde_json::from_slice(&o.json).context("deployment json")?;
    Ok(v.pointer("/status/availableReplicas")
        .and_then(Value::as_u64)
        .unwrap_or(0))
}

fn deployment_json(name: &str, replicas: u64) -> Bytes {
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec()}},
    });
    Bytes::from(d.to_string())
}

/// Polls until `done`, stamping when all were created and when all were ready.
async fn follow<F, Fut>(
    n: u64,
    t0: Instant,
    deadline: Duration,
    mut probe: F,
) -> anyhow::Result<Phase>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(u64, u64)>>,
{
    let mut phase = Phase::default();
    loop {
        let (created, ready_n) = probe().await?;
        phase.created = created.min(n);
        phase.ready = ready_n;
        if created >= n && phase.all_created.is_none() {
            phase.all_created = Some(t0.elapsed());
        }
        if ready_n >= n {
            phase.all_ready = Some(t0.elapsed());
            return Ok(phase);
        }
        if t0.elapsed() > deadline {
            eprintln!("  deployment: deadline passed with {created} created, {ready_n} ready");
            return Ok(phase);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(apiserver_bin: &Path, a: &DeployArgs) -> anyhow::Result<DeployFigures> {
    if a.replicas == 0 {
        bail!("--replicas: must be at least 1");
    }
    let mut server = procs::start_rudder(apiserver_bin, &[])?;
    let result = scenario(&mut server, apiserver_bin, a).await;
    result.with_context(|| {
        format!(
            "deployment benchmark failed; API server log tail:\n{}",
            server.log_tail(20)
        )
    })
}

async fn scenario(
    server: &mut procs::ServerProc,
    apiserver_bin: &Path,
    a: &DeployArgs,
) -> anyhow::Result<DeployFigures> {
    let cluster =
        procs::sim_cluster(server, apiserver_bin, a.nodes, "replicaset,deployment").await?;
    let c = cluster.client.clone();
    let (sched, cm) = (&cluster.scheduler, &cluster.controllers);
    let deadline = Duration::from_secs(a.deadline);
    // Warm-up: a one-replica Deployment all the way to available, so every component listed
    // and runs before anything is timed.
    eprintln!("  deployment: warming up");
    c.create(pb::CreateRequest {
        kind: kind("apps/v1", "Deployment"),
        namespace: "default".into(),
        json: deployment_json("warmup", 1),
        options: None,
    })
    .await
    .context("create warm-up deployment")?;
    let t = Instant::now();
    while deployment_available(&c, "warmup").await? < 1 {
        if t.elapsed() > Duration::from_secs(60) {
            bail!(
                "the warm-up Deployment got no available pod in 60 s; controller-manager log:\n{}\nscheduler log:\n{}",
                cm.log_tail(20),
                sched.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!(
        "  deployment: peer, {} pods created directly by {} clients",
        a.replicas, a.clients
    );
    let t0 = Instant::now();
    let creator = {
        let c = c.clone();
        move |_client: usize, i: u64| {
            let c = c.clone();
            async move {
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("peer-{i:06}"), "namespace": "default", "labels": {"app": "peer"}},
                    "spec": pod_spec()});
                c.create(pb::CreateRequest {
                    kind: kind("v1", "Pod"),
                    namespace: "default".into(),
                    json: Bytes::from(pod.to_string()),
                    options: None,
                })
                .await
                .context("create pod")?;
                Ok(())
            }
        }
    };
    let peer_creates = tokio::spawn(closed_loop(server.pid(), a.clients, 0, a.replicas, creator));
    let cc = c.clone();
    let peer = follow(a.replicas, t0, deadline, || count(&cc, "peer")).await?;
    peer_creates.await.context("peer creators")??;
    // The peer's pods go before the Deployment is timed: the scheduler's cycle grows with the
    // pods placed, and each phase should start from the same cluster.
    eprintln!("  deployment: removing the peer's pods");
    let deleter = {
        let c = c.clone();
        move |_client: usize, i: u64| {
            let c = c.clone();
            async move {
                c.delete(pb::DeleteRequest {
                    kind: kind("v1", "Pod"),
                    namespace: "default".into(),
                    name: format!("peer-{i:06}"),
                    ..Default::default()
                })
                .await
                .context("delete pod")?;
                Ok(())
            }
        }
    };
    closed_loop(server.pid(), a.clients, 0, a.replicas, deleter).await?;
    let t = Instant::now();
    while count(&c, "peer").await?.0 > 0 {
        if t.elapsed() > deadline {
            bail!("the peer's pods were not gone within the deadline");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("  deployment: one Deployment of {} replicas", a.replicas);
    let probe = CpuProbe::start(cm.pid());
    let t0 = Instant::now();
    c.create(pb::CreateRequest {
        kind: kind("apps/v1", "Deployment"),
        namespace: "default".into(),
        json: deployment_json("bench", a.replicas),
        options: None,
    })
    .await
    .context("create deployment")?;
    let cc = c.clone();
    let deployment = follow(a.replicas, t0, deadline, || {
        let c = cc.clone();
        async move {
            let (created, _) = count(&c, "bench").await?;
            Ok((created, deployment_available(&c, "bench").await?))
        }
    })
    .await?;
    let cpu_controllers = probe.stop();
    Ok(DeployFigures {
        replicas: a.replicas,
        nodes: a.nodes,
        deployment,
        peer,
        cpu_controllers,
    })
}
