//! The endpoints scenario: how long a pod's readiness change takes to reach its EndpointSlice.
//!
//! The real release `rudder-apiserver`, `rudder-scheduler` and `rudder-controller-manager`
//! (the `endpointslice` and `endpoints` controllers) as child processes, nodes simulated in this
//! process (`rudder_testkit::NodeSim`). S Services, Service i selecting 1 + i % 3 pods. Once
//! every Service's slice lists its pods ready, pods are turned not ready at a steady rate, one
//! per Service in turn, and then ready again. Two watches in this process time each change from
//! just before its status write (`NodeSim::set_ready`: a read, then the status patch):
//! - the pod watch: when the pod's new Ready condition arrives: the floor, what any watcher of
//!   the pod pays (the API server's write and fan-out);
//! - the EndpointSlice watch: when the pod's endpoint shows the new `ready` condition: the
//!   floor plus the controller's watch, reconcile and slice write, and the slice's fan-out.
//!
//! Every process dies with its guard; waits have deadlines, so a stuck controller shows as
//! missing samples, not a hang.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_client::{Api, Client, WatchEvent};
use serde_json::{Value, json};

use crate::measure::{CpuProbe, CpuUse, Latency, closed_loop, new_hist, record};
use crate::procs;

const NS: &str = "default";

/// Flags of `rudder-bench endpoints`.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointsArgs {
    /// Services, Service i selecting 1 + i % 3 pods.
    #[arg(long, default_value_t = 1_000)]
    pub services: u64,
    /// Simulated nodes (250 pods each).
    #[arg(long, default_value_t = 10)]
    pub nodes: u64,
    /// Pods turned not ready and then ready again (each change is one sample); at most one
    /// per Service.
    #[arg(long, default_value_t = 500)]
    pub flips: u64,
    /// Readiness changes per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Concurrent clients creating the objects.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds to wait for each phase before reporting what was not done.
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
}

/// One direction's figures.
#[derive(Debug, Clone, Default)]
pub struct Direction {
    pub sent: u64,
    /// Status change → pod watch (the floor).
    pub pod: Latency,
    /// Status change → EndpointSlice watch.
    pub slice: Latency,
}

#[derive(Debug, Clone)]
pub struct EndpointsFigures {
    pub services: u64,
    pub pods: u64,
    pub nodes: u64,
    pub rate: u64,
    /// First create → every Service's slices complete and ready.
    pub converged: Option<Duration>,
    pub to_not_ready: Direction,
    pub to_ready: Direction,
    pub cpu_controllers: CpuUse,
}

fn ms(l: &Latency) -> String {
    if l.count == 0 {
        return "no samples".into();
    }
    format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms)
}

impl EndpointsFigures {
    pub fn render(&self) -> String {
        let row = |name: &str, d: &Direction| {
            format!(
                "| {name} | {} | {} / {} | {} | {} |\n",
                d.sent,
                d.pod.count,
                d.slice.count,
                ms(&d.pod),
                ms(&d.slice)
            )
        };
        format!(
            "Endpoint propagation: {} Services, {} pods on {} simulated nodes, {} readiness changes/s \
             (real apiserver, scheduler, controller-manager with endpointslice + endpoints)\n\
             | change | sent | seen (pod / slice) | pod status at a watcher p50 / p99 ms (floor) | EndpointSlice at a watcher p50 / p99 ms |\n\
             |---|---|---|---|---|\n{}{}\
             Every Service's slices complete and ready {} s after the first create.\n\
             CPU (cores) of the controller-manager during the changes: {:.2}",
            self.services,
            self.pods,
            self.nodes,
            self.rate,
            row("Ready → not ready", &self.to_not_ready),
            row("not ready → Ready", &self.to_ready),
            self.converged
                .map_or("not reached".into(), |d| format!("{:.1}", d.as_secs_f64())),
            self.cpu_controllers.server_cores,
        )
    }
}

fn pods_of(service: u64) -> u64 {
    1 + service % 3
}

fn pod_name(service: u64, j: u64) -> String {
    format!("svc-{service:05}-{j}")
}

fn service_json(i: u64) -> Bytes {
    let v = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i:05}"), "namespace": NS},
        "spec": {"selector": {"app": format!("svc-{i:05}")},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    Bytes::from(v.to_string())
}

fn pod_json(service: u64, j: u64) -> Bytes {
    let v = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(service, j), "namespace": NS,
            "labels": {"app": format!("svc-{service:05}")}},
        "spec": {"containers": [{"name": "c", "image": "bench",
            "ports": [{"name": "http", "containerPort": 8080}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
    Bytes::from(v.to_string())
}

/// A readiness change in flight: when it was sent, the readiness it goes to, and whether each
/// watch saw it.
struct Flip {
    sent: Instant,
    ready: bool,
    pod_seen: bool,
    slice_seen: bool,
}

#[derive(Default)]
struct Book {
    pending: HashMap<String, Flip>,
    pod: [Option<Histogram<u64>>; 2],
    slice: [Option<Histogram<u64>>; 2],
}

impl Book {
    fn hist(h: &mut Option<Histogram<u64>>) -> &mut Histogram<u64> {
        h.get_or_insert_with(new_hist)
    }

    /// A watch saw `pod` with this readiness.
    fn saw(&mut self, pod: &str, ready: bool, slice: bool) {
        let Some(f) = self.pending.get_mut(pod) else {
            return;
        };
        if f.ready != ready {
            return;
        }
        let i = usize::from(ready);
        let elapsed = f.sent.elapsed();
        if slice && !f.slice_seen {
            f.slice_seen = true;
            record(Self::hist(&mut self.slice[i]), elapsed);
        } else if !slice && !f.pod_seen {
            f.pod_seen = true;
            record(Self::hist(&mut self.pod[i]), elapsed);
        }
        if f.pod_seen && f.slice_seen {
            self.pending.remove(pod);
        }
    }
}

type Shared = Arc<Mutex<Book>>;

fn lock(b: &Shared) -> std::sync::MutexGuard<'_, Book> {
    b.lock().unwrap_or_else(|e| e.into_inner())
}

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Watches `kind` from `version`, handing each changed object to `seen`; returns only when the
/// watch fails (the caller aborts it when done).
async fn follow(
    api: Arc<dyn Api>,
    kind: (&'static str, &'static str),
    version: u64,
    seen: impl Fn(&Value) + Send + 'static,
) -> anyhow::Result<()> {
    let mut w = api
        .watch(pb::WatchRequest {
            kind: Some(kind_ref(kind.0, kind.1)),
            namespace: NS.into(),
            resource_version: version,
            ..Default::default()
        })
        .await
        .with_context(|| format!("watching {}", kind.1))?;
    loop {
        match w.next().await {
            Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&o.json) {
                    seen(&v);
                }
            }
            Some(Ok(WatchEvent::Error(e))) => bail!("{} watch ended: {}", kind.1, e.message),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("{} watch failed: {e}", kind.1),
            None => bail!("{} watch closed", kind.1),
        }
    }
}

/// Slices of the benchmark's Services: (Services whose slices list all their pods ready, the
/// list's version).
async fn complete_services(c: &Client, services: u64) -> anyhow::Result<(u64, u64)> {
    let l = c
        .list(pb::ListRequest {
            kind: Some(kind_ref("discovery.k8s.io/v1", "EndpointSlice")),
            namespace: NS.into(),
            ..Default::default()
        })
        .await
        .context("list slices")?;
    let mut ready: HashMap<String, u64> = HashMap::new();
    for o in &l.items {
        let v: Value = serde_json::from_slice(&o.json).context("slice json")?;
        let svc = v
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let n = v["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"] == true)
            .count() as u64;
        *ready.entry(svc).or_default() += n;
    }
    let done = (0..services)
        .filter(|i| ready.get(&format!("svc-{i:05}")) == Some(&pods_of(*i)))
        .count() as u64;
    Ok((done, l.resource_version))
}

pub async fn run(
    apiserver_bin: &std::path::Path,
    a: &EndpointsArgs,
) -> anyhow::Result<EndpointsFigures> {
    if a.services == 0 || a.rate == 0 {
        bail!("--services and --rate must be at least 1");
    }
    let mut server = procs::start_rudder(apiserver_bin, &[])?;
    let result = scenario(&mut server, apiserver_bin, a).await;
    result.with_context(|| {
        format!(
            "endpoints benchmark failed; API server log tail:\n{}",
            server.log_tail(20)
        )
    })
}

async fn scenario(
    server: &mut procs::ServerProc,
    apiserver_bin: &std::path::Path,
    a: &EndpointsArgs,
) -> anyhow::Result<EndpointsFigures> {
    let cluster =
        procs::sim_cluster(server, apiserver_bin, a.nodes, "endpointslice,endpoints").await?;
    let c = cluster.client.clone();
    let api = Arc::clone(&cluster.api);
    let (sim, cm) = (&cluster.sim, &cluster.controllers);
    let deadline = Duration::from_secs(a.deadline);
    let pods: u64 = (0..a.services).map(pods_of).sum();
    eprintln!("  endpoints: {} Services, {pods} pods", a.services);
    let t0 = Instant::now();
    let creator = {
        let c = c.clone();
        move |_client: usize, i: u64| {
            let c = c.clone();
            async move {
                c.create(pb::CreateRequest {
                    kind: Some(kind_ref("v1", "Service")),
                    namespace: NS.into(),
                    json: service_json(i),
                    options: None,
                })
                .await
                .context("create service")?;
                for j in 0..pods_of(i) {
                    c.create(pb::CreateRequest {
                        kind: Some(kind_ref("v1", "Pod")),
                        namespace: NS.into(),
                        json: pod_json(i, j),
                        options: None,
                    })
                    .await
                    .context("create pod")?;
                }
                Ok(())
            }
        }
    };
    closed_loop(server.pid(), a.clients, 0, a.services, creator).await?;
    let (converged, version) = loop {
        let (done, version) = complete_services(&c, a.services).await?;
        if done == a.services {
            break (Some(t0.elapsed()), version);
        }
        if t0.elapsed() > deadline {
            eprintln!(
                "  endpoints: deadline passed with {done} of {} Services complete",
                a.services
            );
            break (None, version);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if converged.is_none() {
        bail!(
            "the slices never completed; controller-manager log:\n{}",
            cm.log_tail(20)
        );
    }

    let book: Shared = Arc::new(Mutex::new(Book::default()));
    let pod_watch = {
        let book = Arc::clone(&book);
        tokio::spawn(follow(Arc::clone(&api), ("v1", "Pod"), version, move |p| {
            let name = p
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            lock(&book).saw(name, pod_ready(p), false);
        }))
    };
    let slice_watch = {
        let book = Arc::clone(&book);
        tokio::spawn(follow(
            Arc::clone(&api),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            version,
            move |s| {
                let mut b = lock(&book);
                for e in s["endpoints"].as_array().into_iter().flatten() {
                    let name = e
                        .pointer("/targetRef/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    b.saw(name, e["conditions"]["ready"] == true, true);
                }
            },
        ))
    };
    // The watches start from the list's version; give them, and the Endpoints controller
    // finishing its own objects, a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let flips = a.flips.min(a.services);
    let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
    let probe = CpuProbe::start(cm.pid());
    let mut sent = [0u64; 2];
    for ready in [false, true] {
        eprintln!(
            "  endpoints: {flips} pods turning {}",
            if ready { "ready" } else { "not ready" }
        );
        let mut tick = tokio::time::interval(interval);
        for i in 0..flips {
            tick.tick().await;
            // Spread over the Services, the first pod of each.
            let service = i * a.services / flips;
            let name = pod_name(service, 0);
            lock(&book).pending.insert(
                name.clone(),
                Flip {
                    sent: Instant::now(),
                    ready,
                    pod_seen: false,
                    slice_seen: false,
                },
            );
            sim.set_ready(NS, &name, ready)
                .await
                .with_context(|| format!("turning {name} ready={ready}"))?;
            sent[usize::from(ready)] += 1;
        }
        // Let this direction land before the next starts.
        let t = Instant::now();
        while !lock(&book).pending.is_empty() && t.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = lock(&book).pending.len();
        if left > 0 {
            eprintln!("  endpoints: {left} changes not seen by both watches within 30 s");
            lock(&book).pending.clear();
        }
    }
    let cpu_controllers = probe.stop();
    for w in [pod_watch, slice_watch] {
        if w.is_finished() {
            // A watch that ended early failed: its samples are missing, say why.
            w.await.context("a watch task panicked")??;
        } else {
            w.abort();
        }
    }
    let b = lock(&book);
    let lat = |h: &Option<Histogram<u64>>| h.as_ref().map(Latency::of).unwrap_or_default();
    let dir = |i: usize| Direction {
        sent: sent[i],
        pod: lat(&b.pod[i]),
        slice: lat(&b.slice[i]),
    };
    Ok(EndpointsFigures {
        services: a.services,
        pods,
        nodes: a.nodes,
        rate: a.rate,
        converged,
        to_not_ready: dir(0),
        to_ready: dir(1),
        cpu_controllers,
    })
}
