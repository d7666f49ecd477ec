//! The scheduler scenario: the real release `rudder-apiserver` and `rudder-scheduler` as child
//! processes, N Ready nodes, then M pods created by concurrent clients; prints pods bound per
//! second and the creation → bound latency (create sent → the watch shows `spec.nodeName`).
//!
//! Both processes die with their guards (SIGKILL, then reap), also on error and on Ctrl-C. Every
//! request has a timeout and the wait for bindings has a deadline, so a scheduler that stops
//! binding shows as a count of unbound pods, not a hang.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rudder_client::Client;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::measure::{CpuProbe, CpuUse, Latency, closed_loop, new_hist, record};
use crate::procs;

/// Flags of `rudder-bench scheduler`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedArgs {
    /// Ready nodes created before the scheduler starts.
    #[arg(long, default_value_t = 100)]
    pub nodes: u64,
    /// Pods created once the scheduler runs.
    #[arg(long, default_value_t = 1_000)]
    pub pods: u64,
    /// Concurrent clients creating nodes and pods.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Every pod carries a required pod anti-affinity on `kubernetes.io/hostname` against pods
    /// of its own group (groups of `--group` pods).
    #[arg(long, conflicts_with = "spread")]
    pub anti_affinity: bool,
    /// Every pod carries a topology spread constraint (maxSkew 1, zone, DoNotSchedule) over its
    /// group.
    #[arg(long)]
    pub spread: bool,
    /// Pods per anti-affinity or spread group.
    #[arg(long, default_value_t = 100)]
    pub group: u64,
    /// Seconds to wait for every pod to be bound before reporting the ones that were not.
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
    /// Passed to the scheduler as `--percentage-of-nodes-to-score` (0: its adaptive default).
    #[arg(long, default_value_t = 0)]
    pub percentage_of_nodes_to_score: u32,
    /// The rudder-scheduler binary (default: next to this binary).
    #[arg(long)]
    pub scheduler_bin: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct SchedFigures {
    pub nodes: u64,
    pub pods: u64,
    pub bound: u64,
    /// First create sent → last pod seen bound.
    pub elapsed: Duration,
    /// The creates alone (the clients' closed loop).
    pub create_elapsed: Duration,
    pub latency: Latency,
    pub cpu_apiserver: CpuUse,
    pub cpu_scheduler: CpuUse,
}

impl SchedFigures {
    pub fn pods_per_sec(&self) -> f64 {
        self.bound as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn render(&self, variant: &str) -> String {
        format!(
            "Scheduler: {} nodes, {} pods{variant}\n\
             | metric                      | value |\n\
             |-----------------------------|-------|\n\
             | pods bound                  | {} / {} |\n\
             | pods scheduled/s            | {:.0} |\n\
             | creation → bound p50 (ms)   | {:.1} |\n\
             | creation → bound p99 (ms)   | {:.1} |\n\
             | creation → bound max (ms)   | {:.1} |\n\
             | creates alone (pods/s)      | {:.0} |\n\
             CPU (cores): apiserver {:.2}, scheduler {:.2}, bench {:.2}",
            self.nodes,
            self.pods,
            self.bound,
            self.pods,
            self.pods_per_sec(),
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.pods as f64 / self.create_elapsed.as_secs_f64().max(1e-9),
            self.cpu_apiserver.server_cores,
            self.cpu_scheduler.server_cores,
            self.cpu_apiserver.bench_cores,
        )
    }
}

fn kind(k: &str) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: k.into(),
    })
}

const ZONES: u64 = 10;

fn node_name(i: u64) -> String {
    format!("node-{i:05}")
}

fn pod_name(i: u64) -> String {
    format!("sp-{i:07}")
}

fn pod_index(name: &str) -> Option<u64> {
    name.strip_prefix("sp-")?.parse().ok()
}

/// A pod requesting 100m CPU and 128Mi, with the variant's constraint over its group.
fn pod_json(name: &str, group: u64, a: &SchedArgs) -> Bytes {
    let group_label = format!("g{group}");
    let selector = json!({"matchLabels": {"group": group_label}});
    let mut spec = json!({
        "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
    });
    if a.anti_affinity {
        spec["affinity"] = json!({"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}
        ]}});
    }
    if a.spread {
        spec["topologySpreadConstraints"] = json!([{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": selector,
        }]);
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"group": group_label}},
        "spec": spec,
    });
    Bytes::from(pod.to_string())
}

async fn create_node(c: &Client, i: u64) -> anyhow::Result<()> {
    let name = node_name(i);
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
        }},
    });
    c.create(pb::CreateRequest {
        kind: kind("Node"),
        namespace: String::new(),
        json: Bytes::from(node.to_string()),
        options: None,
    })
    .await
    .context("create node")?;
    let status = json!({"status": {
        "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    c.patch(pb::PatchRequest {
        kind: kind("Node"),
        namespace: String::new(),
        name,
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(status.to_string()),
        status: true,
        options: None,
    })
    .await
    .context("patch node status")?;
    Ok(())
}

/// Instants relative to a base, one slot per pod; 0 = not yet.
struct Stamps {
    base: Instant,
    slots: Vec<AtomicU64>,
}

impl Stamps {
    fn new(base: Instant, n: u64) -> Stamps {
        Stamps {
            base,
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Stamps slot `i` with now unless already stamped; true if this call stamped it.
    fn mark(&self, i: u64) -> bool {
        let Some(s) = self.slots.get(i as usize) else {
            return false;
        };
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        s.compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn get(&self, i: u64) -> Option<u64> {
        let v = self.slots.get(i as usize)?.load(Ordering::Acquire);
        (v != 0).then(|| v - 1)
    }
}

fn bound_node(json: &[u8]) -> bool {
    serde_json::from_slice::<Value>(json)
        .ok()
        .and_then(|v| {
            v.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .map(|s| !s.is_empty())
        })
        .unwrap_or(false)
}

/// Runs the scenario with the API server at `apiserver_bin`.
pub async fn run(apiserver_bin: &Path, a: &SchedArgs) -> anyhow::Result<SchedFigures> {
    let scheduler_bin = match &a.scheduler_bin {
        Some(b) => b.clone(),
        None => apiserver_bin.with_file_name("rudder-scheduler"),
    };
    let mut server = procs::start_rudder(apiserver_bin, &[])?;
    let result = scenario(&mut server, &scheduler_bin, a).await;
    result.with_context(|| {
        format!(
            "scheduler benchmark failed; API server log tail:\n{}",
            server.log_tail(20)
        )
    })
}

async fn scenario(
    server: &mut procs::ServerProc,
    scheduler_bin: &Path,
    a: &SchedArgs,
) -> anyhow::Result<SchedFigures> {
    let pid = server.pid();
    let clients = a.clients.max(1);
    let pool: Vec<Client> = (0..clients.div_ceil(8))
        .map(|_| Client::new(std::slice::from_ref(&server.addr)))
        .collect::<Result<_, _>>()?;
    let pool = Arc::new(pool);
    {
        let first = pool[0].clone();
        procs::wait_ready(server, Duration::from_secs(20), move || {
            let c = first.clone();
            async move {
                c.health().await?;
                Ok(())
            }
        })
        .await?;
    }
    eprintln!("  sched: creating {} nodes", a.nodes);
    let nodes = {
        let pool = pool.clone();
        move |client: usize, i: u64| {
            let c = pool[client % pool.len()].clone();
            async move { create_node(&c, i).await }
        }
    };
    let t = closed_loop(pid, clients, 0, a.nodes, nodes).await?;
    eprintln!("  sched: nodes created in {:.1?}", t.elapsed);

    let sched = procs::Component::start(
        "rudder-scheduler",
        scheduler_bin,
        &server.addr,
        &[
            "--leader-elect",
            "false",
            "--percentage-of-nodes-to-score",
            &a.percentage_of_nodes_to_score.to_string(),
        ],
    )?;
    let out = measure(pid, &pool, &sched, a).await;
    out.with_context(|| format!("scheduler log tail:\n{}", sched.log_tail(20)))
}

async fn measure(
    pid: u32,
    pool: &Arc<Vec<Client>>,
    sched: &procs::Component,
    a: &SchedArgs,
) -> anyhow::Result<SchedFigures> {
    let c0 = pool[0].clone();
    // A warm-up pod: once it is bound the scheduler has listed every node and runs.
    eprintln!("  sched: waiting for the scheduler to bind a warm-up pod");
    c0.create(pb::CreateRequest {
        kind: kind("Pod"),
        namespace: "default".into(),
        json: pod_json(
            "warmup",
            u64::MAX,
            &SchedArgs {
                anti_affinity: false,
                spread: false,
                ..a.clone()
            },
        ),
        options: None,
    })
    .await
    .context("create warm-up pod")?;
    let warm_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = c0
            .get(pb::GetRequest {
                kind: kind("Pod"),
                namespace: "default".into(),
                name: "warmup".into(),
                allow_stale: false,
            })
            .await
            .context("get warm-up pod")?;
        if bound_node(&o.json) {
            break;
        }
        if Instant::now() > warm_deadline {
            bail!("the scheduler did not bind the warm-up pod within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let rv = c0.stats().await.context("stats")?.resource_version;
    let mut stream = c0
        .watch(pb::WatchRequest {
            kind: kind("Pod"),
            namespace: "default".into(),
            resource_version: rv,
            ..Default::default()
        })
        .await
        .context("opening the pod watch")?;
    let base = Instant::now();
    let sent = Arc::new(Stamps::new(base, a.pods));
    let bound = Arc::new(Stamps::new(base, a.pods));
    let total = a.pods;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.deadline);
    let watcher = {
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            while seen < total {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => break,
                    Ok(Err(status)) => bail!("pod watch failed: {status}"),
                    Ok(Ok(None)) => bail!("pod watch closed by the server"),
                    Ok(Ok(Some(ev))) => {
                        let Some(o) = ev.object else { continue };
                        let Some(i) = pod_index(&o.name) else {
                            continue;
                        };
                        if bound_node(&o.json) && bound.mark(i) {
                            seen += 1;
                        }
                    }
                }
            }
            Ok(seen)
        })
    };
    let sched_pid = sched.pid();
    let probe_api = CpuProbe::start(pid);
    let probe_sched = CpuProbe::start(sched_pid);
    eprintln!(
        "  sched: creating {} pods with {} clients",
        a.pods, a.clients
    );
    let create = {
        let (pool, sent, a) = (pool.clone(), sent.clone(), a.clone());
        move |client: usize, i: u64| {
            let c = pool[client % pool.len()].clone();
            let json = pod_json(&pod_name(i), i % a.group.max(1), &a);
            let sent = sent.clone();
            async move {
                sent.mark(i);
                c.create(pb::CreateRequest {
                    kind: kind("Pod"),
                    namespace: "default".into(),
                    json,
                    options: None,
                })
                .await
                .context("create pod")?;
                Ok(())
            }
        }
    };
    let created = closed_loop(pid, a.clients, 0, a.pods, create).await?;
    eprintln!(
        "  sched: {} pods created in {:.1?}; waiting for bindings",
        a.pods, created.elapsed
    );
    let seen = watcher.await.context("watch task panicked")??;
    let cpu_apiserver = probe_api.stop();
    let cpu_scheduler = probe_sched.stop();
    let mut hist = new_hist();
    let (mut first, mut last) = (u64::MAX, 0u64);
    for i in 0..a.pods {
        let (Some(s), Some(b)) = (sent.get(i), bound.get(i)) else {
            continue;
        };
        first = first.min(s);
        last = last.max(b);
        record(&mut hist, Duration::from_nanos(b.saturating_sub(s)));
    }
    let elapsed = Duration::from_nanos(last.saturating_sub(first.min(last)));
    Ok(SchedFigures {
        nodes: a.nodes,
        pods: a.pods,
        bound: seen,
        elapsed,
        create_elapsed: created.elapsed,
        latency: Latency::of(&hist),
        cpu_apiserver,
        cpu_scheduler,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_only_with_a_node_name() {
        assert!(bound_node(br#"{"spec":{"nodeName":"n1"}}"#));
        assert!(!bound_node(br#"{"spec":{"nodeName":""}}"#));
        assert!(!bound_node(br#"{"spec":{}}"#));
        assert!(!bound_node(b"not json"));
    }

    #[test]
    fn stamps_keep_the_first_mark() {
        let s = Stamps::new(Instant::now(), 2);
        assert!(s.mark(1));
        let first = s.get(1);
        assert!(!s.mark(1));
        assert_eq!(s.get(1), first);
        assert_eq!(s.get(0), None);
        assert!(!s.mark(5));
    }

    #[test]
    fn pod_names_round_trip() {
        assert_eq!(pod_index(&pod_name(42)), Some(42));
        assert_eq!(pod_index("warmup"), None);
    }
}
