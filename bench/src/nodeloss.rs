//! The node-loss scenario: the real release `rudder-apiserver` (with short default
//! tolerations), `rudder-scheduler` and `rudder-controller-manager` (with a short node grace
//! period) as child processes, nodes simulated in this process (`rudder_testkit::NodeSim`,
//! renewing their Leases), one Deployment of N replicas over M nodes. Then the node with the
//! most replicas stops heartbeating, and the run times, from that moment:
//! - the node marked Unknown (the grace period runs out);
//! - its NoExecute taint (the zone pass);
//! - the first of its pods evicted (the toleration runs out);
//! - every replica available again off that node (replacements created, scheduled, Ready).
//!
//! Beside the end-to-end figure it prints the floor the configuration sets in the same run:
//! grace period + tolerationSeconds, which no implementation can beat; what lies above it is
//! the controllers' own latency (monitor passes, rate limiting, reconciles, scheduling).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rudder_client::Client;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::procs;

/// Flags of `rudder-bench node-loss`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeLossArgs {
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 100)]
    pub replicas: u64,
    /// Simulated nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: u64,
    /// The controller-manager's --node-monitor-grace-period, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub grace_seconds: f64,
    /// The controller-manager's --node-monitor-period, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub monitor_seconds: f64,
    /// The API server's default not-ready/unreachable tolerationSeconds.
    #[arg(long, default_value_t = 2)]
    pub toleration_seconds: i64,
    /// Seconds to wait for each phase before giving up.
    #[arg(long, default_value_t = 120)]
    pub deadline: u64,
}

/// Stamps from the moment the node stopped.
#[derive(Debug, Clone, Default)]
pub struct NodeLossFigures {
    pub replicas: u64,
    pub nodes: u64,
    pub lost_pods: usize,
    pub grace: Duration,
    pub monitor: Duration,
    pub toleration: Duration,
    pub unknown: Option<Duration>,
    pub tainted: Option<Duration>,
    pub first_evicted: Option<Duration>,
    pub all_available: Option<Duration>,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

impl NodeLossFigures {
    pub fn floor(&self) -> Duration {
        self.grace + self.toleration
    }

    pub fn render(&self) -> String {
        let over = self
            .all_available
            .map(|d| format!("{:.2}", d.as_secs_f64() - self.floor().as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        format!(
            "Node loss: Deployment of {} replicas on {} simulated nodes; the node with the most ({} pods) stops heartbeating\n\
             (grace period {:.1} s, monitor period {:.1} s, tolerationSeconds {:.0} s; real apiserver, scheduler, controller-manager)\n\
             | from the node's last heartbeat           | seconds |\n\
             |------------------------------------------|---------|\n\
             | node Ready=Unknown                        | {} |\n\
             | node tainted unreachable:NoExecute        | {} |\n\
             | first of its pods evicted                 | {} |\n\
             | every replica available again elsewhere   | {} |\n\
             | floor: grace + tolerationSeconds          | {:.2} |\n\
             | above the floor                           | {over} |",
            self.replicas,
            self.nodes,
            self.lost_pods,
            self.grace.as_secs_f64(),
            self.monitor.as_secs_f64(),
            self.toleration.as_secs_f64(),
            secs(self.unknown),
            secs(self.tainted),
            secs(self.first_evicted),
            secs(self.all_available),
            self.floor().as_secs_f64(),
        )
    }
}

fn kind(api_version: &str, k: &str) -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: api_version.into(),
        kind: k.into(),
    })
}

/// Ready and not being deleted.
fn available(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_none() && crate::deploy::ready(p)
}

fn node_of(p: &Value) -> &str {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn pods(c: &Client) -> anyhow::Result<Vec<Value>> {
    let l = c
        .list(pb::ListRequest {
            kind: kind("v1", "Pod"),
            namespace: "default".into(),
            label_selector: "app=lossy".into(),
            ..Default::default()
        })
        .await
        .context("list pods")?;
    l.items
        .iter()
        .map(|o| serde_json::from_slice(&o.json).context("pod json"))
        .collect()
}

async fn node(c: &Client, name: &str) -> anyhow::Result<Value> {
    let o = c
        .get(pb::GetRequest {
            kind: kind("v1", "Node"),
            namespace: String::new(),
            name: name.into(),
            allow_stale: false,
        })
        .await
        .context("get node")?;
    serde_json::from_slice(&o.json).context("node json")
}

async fn lease_renew(c: &Client, node: &str) -> anyhow::Result<String> {
    let o = c
        .get(pb::GetRequest {
            kind: kind("coordination.k8s.io/v1", "Lease"),
            namespace: "kube-node-lease".into(),
            name: node.into(),
            allow_stale: false,
        })
        .await
        .context("get lease")?;
    let v: Value = serde_json::from_slice(&o.json).context("lease json")?;
    Ok(v.pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

fn ready_status(n: &Value) -> &str {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

fn no_execute(n: &Value) -> bool {
    n.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(|t| t["effect"] == "NoExecute"))
}

pub async fn run(apiserver_bin: &Path, a: &NodeLossArgs) -> anyhow::Result<NodeLossFigures> {
    if a.replicas == 0 || a.nodes < 2 {
        bail!("--replicas must be at least 1 and --nodes at least 2");
    }
    let tol = a.toleration_seconds.to_string();
    let mut server = procs::start_rudder(
        apiserver_bin,
        &[
            "--default-not-ready-toleration-seconds",
            &tol,
            "--default-unreachable-toleration-seconds",
            &tol,
        ],
    )?;
    let result = scenario(&mut server, apiserver_bin, a).await;
    result.with_context(|| {
        format!(
            "node-loss benchmark failed; API server log tail:\n{}",
            server.log_tail(20)
        )
    })
}

async fn scenario(
    server: &mut procs::ServerProc,
    apiserver_bin: &Path,
    a: &NodeLossArgs,
) -> anyhow::Result<NodeLossFigures> {
    let grace_flag = format!("{}s", a.grace_seconds);
    let monitor_flag = format!("{}s", a.monitor_seconds);
    let cluster = procs::sim_cluster_with(
        server,
        apiserver_bin,
        a.nodes,
        "replicaset,deployment,node-lifecycle,taint-eviction-controller",
        &[
            "--node-monitor-grace-period",
            &grace_flag,
            "--node-monitor-period",
            &monitor_flag,
        ],
    )
    .await?;
    // Renewals well within the grace period, as the node agent's 10 s within 40 s.
    let grace = Duration::from_secs_f64(a.grace_seconds);
    cluster.sim.set_lease_interval(grace / 4);
    let (c, cm, sim) = (&cluster.client, &cluster.controllers, &cluster.sim);
    let deadline = Duration::from_secs(a.deadline);
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "lossy", "namespace": "default"},
        "spec": {"replicas": a.replicas, "selector": {"matchLabels": {"app": "lossy"}},
            "template": {"metadata": {"labels": {"app": "lossy"}},
                "spec": {"containers": [{"name": "c", "image": "bench",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    });
    c.create(pb::CreateRequest {
        kind: kind("apps/v1", "Deployment"),
        namespace: "default".into(),
        json: Bytes::from(d.to_string()),
        options: None,
    })
    .await
    .context("create deployment")?;
    eprintln!("  node-loss: waiting for {} replicas", a.replicas);
    let t = Instant::now();
    let all = loop {
        let ps = pods(c).await?;
        if ps.iter().filter(|p| available(p)).count() as u64 >= a.replicas {
            break ps;
        }
        if t.elapsed() > deadline {
            bail!(
                "the Deployment did not become available; controller-manager log:\n{}",
                cm.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &all {
        *per_node.entry(node_of(p)).or_default() += 1;
    }
    let victim = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(node, _)| node.to_string())
        .unwrap_or_default();
    let lost: Vec<String> = all
        .iter()
        .filter(|p| node_of(p) == victim)
        .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    // Stop right after a renewal, so that the clock starts at the node's last heartbeat.
    let renewed = lease_renew(c, &victim).await?;
    let t = Instant::now();
    while lease_renew(c, &victim).await? == renewed {
        if t.elapsed() > deadline {
            bail!("{victim}'s Lease is not renewed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.stop_node(&victim);
    eprintln!(
        "  node-loss: stopped {victim} ({} of the replicas)",
        lost.len()
    );
    let t0 = Instant::now();
    let mut f = NodeLossFigures {
        replicas: a.replicas,
        nodes: a.nodes,
        lost_pods: lost.len(),
        grace,
        monitor: Duration::from_secs_f64(a.monitor_seconds),
        toleration: Duration::from_secs(a.toleration_seconds.max(0) as u64),
        ..Default::default()
    };
    while f.all_available.is_none() {
        if t0.elapsed() > deadline {
            eprintln!("  node-loss: deadline passed");
            break;
        }
        let n = node(c, &victim).await?;
        if f.unknown.is_none() && ready_status(&n) == "Unknown" {
            f.unknown = Some(t0.elapsed());
        }
        if f.tainted.is_none() && no_execute(&n) {
            f.tainted = Some(t0.elapsed());
        }
        let ps = pods(c).await?;
        if f.first_evicted.is_none()
            && ps.iter().any(|p| {
                lost.iter().any(|l| p["metadata"]["name"] == l.as_str())
                    && p.pointer("/metadata/deletionTimestamp").is_some()
            })
        {
            f.first_evicted = Some(t0.elapsed());
        }
        let elsewhere = ps
            .iter()
            .filter(|p| available(p) && node_of(p) != victim)
            .count() as u64;
        if elsewhere >= a.replicas {
            f.all_available = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(f)
}
