//! The node lifecycle controller, as Kubernetes' `node-lifecycle-controller`: it notices
//! nodes that stopped reporting, says so in their conditions and taints, and starts (rate
//! limited, zone by zone) the evictions the taint eviction controller carries out.
//!
//! Per node (a reconcile per Node key; Lease and pod events map to their node):
//! 1. **Heartbeat** ([`health`]): the node's last heartbeat is when this controller last saw
//!    its Lease `kube-node-lease/<node>` renewed or its Ready condition's `lastHeartbeatTime`
//!    change, on the injected monotonic clock.
//! 2. **Grace period**: with no heartbeat for `grace_period` (`startup_grace_period` for a node
//!    that never posted a Ready condition), Ready, MemoryPressure, DiskPressure and PIDPressure
//!    turn Unknown (reason NodeStatusUnknown, "Kubelet stopped posting node status."), with a
//!    NodeNotReady Event on the Node.
//! 3. **Taints** ([`conditions::desired_taints`]): NoSchedule taints follow the conditions
//!    (not-ready, unreachable, memory/disk/pid-pressure, network-unavailable) and cordoning
//!    (unschedulable), as TaintNodesByCondition; a Ready node loses the not-ready and
//!    unreachable NoExecute taints; a NoExecute taint of the wrong kind is swapped at once.
//! 4. **Pods**: on a node whose Ready is Unknown, Ready pods are marked not ready
//!    ([`pods`]), so endpoints and availability drop them.
//!
//! Beside the reconciles, one task ([`zones`]) computes the zones' disruption states every
//! `monitor_period` and adds the first NoExecute taint (not-ready or unreachable, with
//! timeAdded) to not-ready nodes at each zone's rate; the taint eviction controller
//! ([`super::taintmanager`]) then deletes the pods that do not tolerate it.
//!
//! Every write to a Node or pod is a merge patch guarded by the resourceVersion it was computed
//! from, so a concurrent write of the node agent (or a user's taint) is never lost: the
//! reconcile fails with a conflict and runs again on the fresh object.
//!
//! Differences from Kubernetes: the first NoExecute taint is added from the per-node
//! reconcile's latest conditions rather than a 5 s polling pass over every node (the zone
//! pass keeps Kubernetes' one-pass delay before a node can be tainted); a node's grace period
//! is checked at the moment it runs out rather than at the next monitor tick; no
//! RemovingNode Event.

pub mod conditions;
pub mod config;
pub mod health;
pub mod pods;
pub mod zones;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::sync::{Arc, Mutex, MutexGuard};

use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::informer::wait_for_cache_sync;
use rudder_client::reflector::ReflectorConfig;
use rudder_client::workqueue::{Key, WorkQueue};
use rudder_client::{ClientError, proto as pb};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use config::{IpamConfig, LifecycleConfig, NodeControllers, PodGcConfig};

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::{merge_patch, rfc3339};
use health::{Heartbeats, ready_condition, ready_status};
use zones::Disruption;

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "node-lifecycle",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// Where node agents keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Locks one of the node controllers' in-memory tables.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a map update; a panic inside one leaves the map usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    cfg: LifecycleConfig,
    events: EventRecorder,
    nodes: Reader,
    leases: Reader,
    pods: Reader,
    heartbeats: Mutex<Heartbeats>,
    disruption: Mutex<Disruption>,
}

async fn run(env: Env, cancel: CancellationToken) {
    let nodes = env.informers.for_kind("v1", "Node");
    let mut lease_cfg = ReflectorConfig::new("coordination.k8s.io/v1", "Lease");
    lease_cfg.namespace = LEASE_NAMESPACE.into();
    let leases = env.informers.informer(lease_cfg);
    let pods = env.informers.for_kind("v1", "Pod");
    let (events, events_task) = env.recorder("node-lifecycle");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        cfg: env.nodes.lifecycle.clone(),
        events,
        nodes: nodes.reader(),
        leases: leases.reader(),
        pods: pods.reader(),
        heartbeats: Mutex::default(),
        disruption: Mutex::default(),
    });
    let controller = Controller::new(Arc::clone(&ctx))
        .named("node-lifecycle")
        .workers(env.workers)
        .watches(nodes.subscribe(), self_mapper())
        .watches(leases.subscribe(), lease_mapper())
        .watches(pods.subscribe(), pod_mapper(nodes.reader()));
    let zone_task = tokio::spawn(zone_loop(
        Arc::clone(&ctx),
        controller.queue(),
        cancel.clone(),
    ));
    controller.run(reconcile, policy, cancel).await;
    let _ = zone_task.await;
    events_task.abort();
}

/// A Lease in `kube-node-lease` is its node's heartbeat.
fn lease_mapper() -> Mapper {
    Box::new(|ev| {
        let mut keys: Vec<Key> = ev.objects().iter().map(|o| o.name.clone()).collect();
        keys.dedup();
        keys
    })
}

/// A Ready pod on a node whose Ready is Unknown must be marked not ready: its node is looked
/// at. Other pod events are none of this controller's business.
fn pod_mapper(nodes: Reader) -> Mapper {
    Box::new(move |ev| {
        let mut keys: Vec<Key> = ev
            .objects()
            .into_iter()
            .filter(|p| crate::util::pods::is_ready(&p.value))
            .filter_map(|p| p.value.pointer("/spec/nodeName").and_then(Value::as_str))
            .filter(|n| {
                !n.is_empty()
                    && nodes
                        .get("", n)
                        .is_some_and(|node| ready_status(&node.value) == "Unknown")
            })
            .map(str::to_string)
            .collect();
        keys.dedup();
        keys
    })
}

/// Reconciles one node by name (see the module doc). Public so tests can drive it.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = ctx.nodes.get_key(&key) else {
        lock(&ctx.heartbeats).forget(&key);
        return Ok(Action::AwaitChange);
    };
    let lease = ctx.leases.get(LEASE_NAMESPACE, &key);
    let now = ctx.clock.instant();
    let wall = rfc3339(ctx.clock.now());
    let (first, probe) = {
        let mut hb = lock(&ctx.heartbeats);
        let first = !hb.knows(&key);
        (
            first,
            hb.observe(&key, &node.value, lease.as_ref().map(|l| &l.value), now),
        )
    };
    if first {
        ctx.events.normal(
            &node.value,
            "RegisteredNode",
            &format!("Registered Node {key} in Controller"),
        );
    }
    let grace = if ready_condition(&node.value).is_some() {
        ctx.cfg.grace_period
    } else {
        ctx.cfg.startup_grace_period
    };
    let deadline = probe + grace;
    let mut current = node;
    if now >= deadline
        && let Some(conds) = conditions::unknown_conditions(&current.value, &wall)
    {
        let was_ready = ready_status(&current.value) == "True";
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version.to_string()},
            "status": {"conditions": conds},
        });
        let mut req = merge_patch(&current, &patch);
        req.status = true;
        current = write(ctx.api.as_ref(), req).await?;
        lock(&ctx.heartbeats).wrote(&key, &current.value);
        tracing::info!(node = %key, silent_for = ?now.duration_since(probe), "node stopped reporting: conditions now Unknown");
        if was_ready {
            ctx.events.normal(
                &current.value,
                "NodeNotReady",
                &format!("Node {key} status is now: NodeNotReady"),
            );
        }
    }
    if let Some(taints) = conditions::desired_taints(&current.value, &wall) {
        current = set_taints(ctx.api.as_ref(), &current, taints).await?;
    }
    if ready_status(&current.value) == "Unknown" {
        pods::mark_not_ready(ctx.api.as_ref(), &ctx.events, &ctx.pods, &key, &wall).await?;
    }
    let left = deadline.saturating_duration_since(now);
    Ok(Action::Requeue(if left.is_zero() {
        ctx.cfg.monitor_period
    } else {
        left
    }))
}

async fn write(api: &dyn Api, req: pb::PatchRequest) -> Result<Arc<CachedObject>, Error> {
    let obj = api.patch(req).await?;
    CachedObject::from_wire(&obj)
        .map(Arc::new)
        .ok_or_else(|| Error::Api(ClientError::Other("unreadable Node from the server".into())))
}

/// Replaces the node's taints, guarded by the version they were computed from.
async fn set_taints(
    api: &dyn Api,
    node: &CachedObject,
    taints: Vec<Value>,
) -> Result<Arc<CachedObject>, Error> {
    let list = if taints.is_empty() {
        Value::Null
    } else {
        Value::Array(taints)
    };
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version.to_string()},
        "spec": {"taints": list},
    });
    write(api, merge_patch(node, &patch)).await
}

/// The zone pass every `monitor_period` and the rate-limited NoExecute tainting every
/// `tainting_period`, until `cancel`.
async fn zone_loop(ctx: Arc<Ctx>, queue: WorkQueue, cancel: CancellationToken) {
    let caches = [ctx.nodes.clone(), ctx.leases.clone(), ctx.pods.clone()];
    if !wait_for_cache_sync(&caches, &cancel).await {
        return;
    }
    let mut next_pass = ctx.clock.instant();
    loop {
        let now = ctx.clock.instant();
        if now >= next_pass {
            next_pass = now + ctx.cfg.monitor_period;
            zone_pass(&ctx, &queue).await;
        }
        taint_due(&ctx).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ctx.cfg.tainting_period) => {}
        }
    }
}

async fn zone_pass(ctx: &Ctx, queue: &WorkQueue) {
    let now = ctx.clock.instant();
    let all = ctx.nodes.list();
    let named: Vec<(String, &Value)> = all.iter().map(|n| (n.name.clone(), &n.value)).collect();
    let outcome = lock(&ctx.disruption).pass(
        &named,
        |n| conditions::with_no_execute(n, "").is_none(),
        now,
        &ctx.cfg,
    );
    if outcome.entered_full_disruption {
        for node in &all {
            if let Some(taints) = conditions::without_no_execute(&node.value)
                && let Err(e) = set_taints(ctx.api.as_ref(), node, taints).await
            {
                tracing::warn!(node = %node.name, error = %e, "removing NoExecute taints failed");
                queue.add(node.name.clone());
            }
        }
    }
    if outcome.left_full_disruption {
        lock(&ctx.heartbeats).reset_all(now);
        for node in &all {
            queue.add(node.name.clone());
        }
    }
}

/// Adds the NoExecute taint to the queued nodes whose turn it is.
async fn taint_due(ctx: &Ctx) {
    let now = ctx.clock.instant();
    let nodes = &ctx.nodes;
    let due = lock(&ctx.disruption).take_due(now, |name| {
        nodes
            .get("", name)
            .is_some_and(|n| conditions::with_no_execute(&n.value, "").is_some())
    });
    let wall = rfc3339(ctx.clock.now());
    for name in due {
        let Some(node) = ctx.nodes.get("", &name) else {
            continue;
        };
        let Some(taints) = conditions::with_no_execute(&node.value, &wall) else {
            continue;
        };
        tracing::info!(node = %name, ready = ready_status(&node.value), "tainting node NoExecute: its pods will be evicted");
        if let Err(e) = set_taints(ctx.api.as_ref(), &node, taints).await {
            tracing::warn!(node = %name, error = %e, "adding the NoExecute taint failed; retrying");
            lock(&ctx.disruption).retry(&name, &zones::zone_of(&node.value), now);
        }
    }
}
