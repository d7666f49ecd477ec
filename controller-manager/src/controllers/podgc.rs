//! The pod garbage collector, as Kubernetes' `pod-garbage-collector`: every `period` it
//! force-deletes (grace period 0, the pod's uid as precondition) pods nobody else will ever
//! finish:
//! - **orphaned** pods, bound to a node that no longer exists: the node must stay missing
//!   from the cache for `quarantine` and then be confirmed gone by a read from the server,
//!   so a node being re-registered keeps its pods; such a pod is first marked Failed with the
//!   condition DisruptionTarget (reason DeletionByPodGC, "PodGC: node no longer exists");
//! - **terminating pods on out-of-service nodes**: being deleted, on a node that is not Ready
//!   and carries the `node.kubernetes.io/out-of-service` taint (the administrator's word that
//!   the machine is down for good, so its kubelet will never confirm);
//! - **terminating unscheduled pods**, which no kubelet will ever confirm either;
//! - **terminated pods** (Succeeded or Failed) beyond `terminated_pod_gc_threshold`, evicted
//!   ones first, then oldest first (by creation, then name).
//!
//! A pod that is not yet terminal is marked Failed before it is deleted, as Kubernetes does, so
//! that its owner sees a finished pod. The controller holds no state beyond the quarantine
//! table, which a restart resets (the quarantine then starts again).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::informer::wait_for_cache_sync;
use rudder_client::proto as pb;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controllers::nodelifecycle::PodGcConfig;
use crate::controllers::nodelifecycle::health::ready_status;
use crate::controllers::nodelifecycle::pods::with_disruption_target;
use crate::podwrite::delete_request;
use crate::runner::{Descriptor, Env};
use crate::util::pods::phase;
use crate::util::taints::{OUT_OF_SERVICE, taints};
use crate::util::{rfc3339, str_at};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "pod-garbage-collector",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

fn is_terminated(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn node_of(pod: &Value) -> &str {
    str_at(pod, "/spec/nodeName")
}

/// Terminated pods beyond `threshold`, in deletion order: evicted first, then oldest.
pub fn terminated_surplus(pods: &[Arc<CachedObject>], threshold: usize) -> Vec<Arc<CachedObject>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<Arc<CachedObject>> = pods
        .iter()
        .filter(|p| is_terminated(&p.value) && !p.is_deleting())
        .cloned()
        .collect();
    let Some(surplus) = done.len().checked_sub(threshold).filter(|n| *n > 0) else {
        return Vec::new();
    };
    done.sort_by(|a, b| {
        let evicted = |p: &CachedObject| str_at(&p.value, "/status/reason") != "Evicted";
        let created =
            |p: &CachedObject| str_at(&p.value, "/metadata/creationTimestamp").to_string();
        (evicted(a), created(a), &a.name).cmp(&(evicted(b), created(b), &b.name))
    });
    done.truncate(surplus);
    done
}

/// Terminating pods no kubelet will confirm: on a not-Ready node with the out-of-service
/// taint, or never scheduled.
pub fn stuck_terminating(pods: &[Arc<CachedObject>], nodes: &Reader) -> Vec<Arc<CachedObject>> {
    pods.iter()
        .filter(|p| p.is_deleting())
        .filter(|p| {
            let node = node_of(&p.value);
            node.is_empty()
                || nodes.get("", node).is_some_and(|n| {
                    ready_status(&n.value) != "True"
                        && taints(&n.value)
                            .iter()
                            .any(|t| str_at(t, "/key") == OUT_OF_SERVICE)
                })
        })
        .cloned()
        .collect()
}

/// Which nodes named by pods are missing from the cache, and since when (Kubernetes'
/// quarantine queue). Nodes that reappear are forgotten.
#[derive(Debug, Default)]
pub struct Quarantine {
    missing_since: HashMap<String, Instant>,
}

impl Quarantine {
    /// Updates the table from the pods' nodes and returns the nodes missing for `period`.
    pub fn update(
        &mut self,
        pods: &[Arc<CachedObject>],
        nodes: &Reader,
        now: Instant,
        period: std::time::Duration,
    ) -> BTreeSet<String> {
        let missing: BTreeSet<&str> = pods
            .iter()
            .map(|p| node_of(&p.value))
            .filter(|n| !n.is_empty() && nodes.get("", n).is_none())
            .collect();
        self.missing_since
            .retain(|n, _| missing.contains(n.as_str()));
        for n in &missing {
            self.missing_since.entry(n.to_string()).or_insert(now);
        }
        self.missing_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= period)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

async fn run(env: Env, cancel: CancellationToken) {
    let cfg = env.nodes.podgc.clone();
    let pods = env.informers.for_kind("v1", "Pod").reader();
    let nodes = env.informers.for_kind("v1", "Node").reader();
    if !wait_for_cache_sync(&[pods.clone(), nodes.clone()], &cancel).await {
        return;
    }
    let gc = Gc {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        pods,
        nodes,
        cfg,
    };
    let mut quarantine = Quarantine::default();
    loop {
        gc.pass(&mut quarantine).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(gc.cfg.period) => {}
        }
    }
}

struct Gc {
    api: Arc<dyn Api>,
    clock: SharedClock,
    pods: Reader,
    nodes: Reader,
    cfg: PodGcConfig,
}

impl Gc {
    async fn pass(&self, quarantine: &mut Quarantine) {
        let all = self.pods.list();
        for p in terminated_surplus(&all, self.cfg.terminated_pod_gc_threshold) {
            self.delete(&p, None).await;
        }
        for p in stuck_terminating(&all, &self.nodes) {
            self.delete(&p, None).await;
        }
        let overdue =
            quarantine.update(&all, &self.nodes, self.clock.instant(), self.cfg.quarantine);
        for node in overdue {
            if !self.node_is_gone(&node).await {
                continue;
            }
            for p in all.iter().filter(|p| node_of(&p.value) == node) {
                self.delete(p, Some("PodGC: node no longer exists")).await;
            }
        }
    }

    /// Whether the server confirms the node does not exist (the cache may lag).
    async fn node_is_gone(&self, node: &str) -> bool {
        let req = pb::GetRequest {
            kind: Some(kind_ref("v1", "Node")),
            namespace: String::new(),
            name: node.to_string(),
            allow_stale: false,
        };
        match self.api.get(req).await {
            Err(e) if e.is_not_found() => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(%node, error = %e, "cannot confirm that a node is gone; its pods wait");
                false
            }
        }
    }

    /// Marks a pod Failed (with a DisruptionTarget condition when `why` says) unless it is
    /// terminal, then deletes it with grace period 0. Failures are logged; the next pass
    /// tries again.
    async fn delete(&self, pod: &CachedObject, why: Option<&str>) {
        let key = pod.key();
        if !is_terminated(&pod.value) {
            let mut status = json!({"phase": "Failed"});
            if let Some(message) = why {
                let now = rfc3339(self.clock.now());
                status["conditions"] = json!(with_disruption_target(
                    &pod.value,
                    "DeletionByPodGC",
                    message,
                    &now
                ));
            }
            let mut req = crate::util::merge_patch(pod, &json!({"status": status}));
            req.status = true;
            if let Err(e) = self.api.patch(req).await
                && !e.is_not_found()
            {
                tracing::warn!(pod = %key, error = %e, "pod GC: marking the pod Failed failed");
            }
        }
        tracing::info!(pod = %key, reason = why.unwrap_or("garbage"), "pod GC: force-deleting");
        if let Err(e) = self.api.delete(delete_request(pod, Some(0))).await
            && !e.is_not_found()
        {
            tracing::warn!(pod = %key, error = %e, "pod GC: deleting failed");
        }
    }
}

#[cfg(test)]
mod tests;
