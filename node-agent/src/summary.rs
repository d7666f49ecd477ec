//! The node's resource summary, as kubelet's `/stats/summary`: CPU (nanocores, a rate) and
//! memory (working set) of the node and of each pod and container, read from the host and the
//! engine's stats. The API server asks for it through the relay (`NodeSummary`); `rudder top`
//! reads it, and autoscaling will.
//!
//! CPU counters are cumulative, so a rate needs two samples: each summary is taken against the
//! previous one when that is at least [`MIN_WINDOW`] old, and otherwise against a fresh sample
//! taken [`MIN_WINDOW`] earlier (the first call waits that long).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::host::{HostFacts, HostProbe};
use crate::runtime::{ContainerRuntime, Role, State};

/// The shortest window a CPU rate is computed over.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
struct Sample {
    at: Option<Instant>,
    node_cpu_ns: u64,
    /// Container id → cumulative CPU ns.
    containers: HashMap<String, u64>,
}

/// Keeps the previous sample between summaries.
#[derive(Debug, Default)]
pub struct Summarizer {
    last: Mutex<Sample>,
}

fn rate(now: u64, before: u64, window: Duration) -> u64 {
    let secs = window.as_secs_f64().max(1e-9);
    (now.saturating_sub(before) as f64 / secs) as u64
}

impl Summarizer {
    async fn sample(
        runtime: &dyn ContainerRuntime,
        host: &dyn HostProbe,
        node: &str,
        now: Instant,
    ) -> (Sample, Vec<(crate::runtime::ContainerInfo, u64)>) {
        let mut s = Sample {
            at: Some(now),
            node_cpu_ns: host.sample().cpu_busy_ns,
            containers: HashMap::new(),
        };
        let mut running = Vec::new();
        let listed = runtime.list(node).await.unwrap_or_default();
        for c in listed
            .into_iter()
            .filter(|c| c.role == Role::Container && c.state == State::Running)
        {
            if let Ok(st) = runtime.stats(&c.id).await {
                s.containers.insert(c.id.clone(), st.cpu_usage_ns);
                running.push((c, st.memory_working_set_bytes));
            }
        }
        (s, running)
    }

    /// The summary as JSON: `{"node": {...}, "pods": [...]}`.
    pub async fn summary(
        &self,
        runtime: &dyn ContainerRuntime,
        host: &dyn HostProbe,
        facts: &HostFacts,
        node: &str,
        clock: &dyn rudder_client::clock::Clock,
    ) -> Value {
        let mut prev = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let fresh = prev
            .at
            .is_some_and(|at| clock.instant().saturating_duration_since(at) >= MIN_WINDOW);
        if !fresh {
            prev = Self::sample(runtime, host, node, clock.instant()).await.0;
            tokio::time::sleep(MIN_WINDOW).await;
        }
        let (cur, running) = Self::sample(runtime, host, node, clock.instant()).await;
        let window = match (cur.at, prev.at) {
            (Some(a), Some(b)) => a.saturating_duration_since(b),
            _ => MIN_WINDOW,
        };
        let sample = host.sample();
        let mut pods: Vec<Value> = Vec::new();
        let mut by_pod: HashMap<String, usize> = HashMap::new();
        for (c, mem) in &running {
            let cpu = prev
                .containers
                .get(&c.id)
                .map(|before| rate(cur.containers[&c.id], *before, window))
                .unwrap_or(0);
            let i = *by_pod.entry(c.owner.pod_uid.clone()).or_insert_with(|| {
                pods.push(json!({
                    "podRef": {"name": c.owner.pod_name, "namespace": c.owner.namespace, "uid": c.owner.pod_uid},
                    "cpu": {"usageNanoCores": 0u64},
                    "memory": {"workingSetBytes": 0u64},
                    "containers": [],
                }));
                pods.len() - 1
            });
            let p = &mut pods[i];
            p["cpu"]["usageNanoCores"] =
                json!(p["cpu"]["usageNanoCores"].as_u64().unwrap_or(0) + cpu);
            p["memory"]["workingSetBytes"] =
                json!(p["memory"]["workingSetBytes"].as_u64().unwrap_or(0) + mem);
            if let Some(cs) = p["containers"].as_array_mut() {
                cs.push(json!({"name": c.name, "cpu": {"usageNanoCores": cpu},
                    "memory": {"workingSetBytes": mem}}));
            }
        }
        let used_memory = u64::try_from(facts.memory_bytes)
            .unwrap_or(0)
            .saturating_sub(sample.memory_available);
        let out = json!({
            "node": {
                "nodeName": node,
                "cpu": {"usageNanoCores": rate(cur.node_cpu_ns, prev.node_cpu_ns, window)},
                "memory": {"workingSetBytes": used_memory},
            },
            "pods": pods,
        });
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = cur;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FakeHost, HostSample, test_facts};
    use crate::runtime::fake::FakeRuntime;

    #[tokio::test(start_paused = true)]
    async fn rates_over_the_window_and_pods_grouped() {
        let clock = rudder_client::clock::ManualClock::shared(1);
        let rt = FakeRuntime::new(clock.clone());
        let host = FakeHost::new();
        let s = Summarizer::default();
        let facts = test_facts();
        let base = HostSample {
            cpu_busy_ns: 1_000_000_000,
            memory_available: 6 << 30,
            ..host.sample()
        };
        host.set(base);
        // A sampler that moves the node's counter by half a core per second.
        let h2 = host.clone();
        let bump = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            h2.set(HostSample {
                cpu_busy_ns: 1_500_000_000,
                ..base
            });
        });
        let v = s.summary(&rt, &host, &facts, "n1", &*clock).await;
        bump.await.expect("bump");
        assert_eq!(v["node"]["cpu"]["usageNanoCores"], 500_000_000u64);
        assert_eq!(v["node"]["memory"]["workingSetBytes"], 2u64 << 30);
        assert_eq!(v["pods"], json!([]));
    }
}
