//! The taint eviction controller, as Kubernetes' `taint-eviction-controller`: pods on a node
//! with NoExecute taints they do not tolerate are evicted.
//!
//! For a pod bound to a node with NoExecute taints (Kubernetes' `processPodOnNode`):
//! - a taint that none of the pod's tolerations tolerates: the pod is deleted at once;
//! - otherwise each taint is matched by the first toleration that tolerates it; a matching
//!   toleration with `tolerationSeconds` lets the pod stay that many seconds after the taint's
//!   `timeAdded` (the earliest such deadline wins; zero or less is at once; `timeAdded` has
//!   whole seconds, so the end of its second counts, see [`time_added`]); tolerations
//!   without seconds tolerate for ever, and a pod only tolerated so stays.
//!
//! An eviction writes the pod's DisruptionTarget condition (reason DeletionByTaintManager),
//! records a TaintManagerEviction Event ("Marking for deletion Pod ns/name") and deletes the
//! pod gracefully, its uid as precondition. When the taint goes before the deadline (the
//! node is Ready again), the eviction is cancelled with a TaintManagerEviction Event
//! ("Cancelling deletion of Pod ns/name"). The pod's owner (a ReplicaSet, say) then replaces
//! it, and the scheduler keeps the replacement off the tainted node.
//!
//! Differences from Kubernetes: the clock starts at the taint's `timeAdded` (the node
//! lifecycle controller always sets it) rather than when this controller first saw the pod on
//! the tainted node, so a restarted controller evicts on the same schedule and a pod bound to
//! an already tainted node gets only what is left of its toleration; a taint without
//! `timeAdded` counts from when this controller first saw it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NODE_NAME, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::controller::{Action, Controller, Mapper};
use rudder_client::events::EventRecorder;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::controllers::nodelifecycle::lock;
use crate::controllers::nodelifecycle::pods::with_disruption_target;
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::taints::{NO_EXECUTE, taints, tolerates, tolerations};
use crate::util::{parse_time, rfc3339, str_at};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "taint-eviction-controller",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// What becomes of a pod on a node with NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not tolerated: evict at once.
    Now,
    /// Tolerated until then.
    At(Timestamp),
    /// Tolerated for ever (or no NoExecute taint).
    Never,
}

/// The pod's verdict under `node_taints`; `added(taint)` is when each taint was added.
pub fn verdict(pod: &Value, node_taints: &[Value], added: impl Fn(&Value) -> Timestamp) -> Verdict {
    let tols = tolerations(pod);
    let mut until: Option<Timestamp> = None;
    for taint in node_taints
        .iter()
        .filter(|t| str_at(t, "/effect") == NO_EXECUTE)
    {
        let Some(tol) = tols.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::Now;
        };
        let Some(secs) = tol.get("tolerationSeconds").and_then(Value::as_i64) else {
            continue;
        };
        if secs <= 0 {
            return Verdict::Now;
        }
        let at = added(taint)
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap_or(Timestamp::MAX);
        until = Some(until.map_or(at, |u| u.min(at)));
    }
    until.map_or(Verdict::Never, Verdict::At)
}

/// When a taint was added, from its `timeAdded`. That has whole seconds, and the taint may have
/// been added any time within that second: the end of the second is taken, so a pod is never
/// evicted before its `tolerationSeconds` have passed (at most a second after).
pub fn time_added(taint: &Value) -> Option<Timestamp> {
    let t = parse_time(taint.get("timeAdded"))?;
    if t.subsec_nanosecond() == 0 {
        t.checked_add(jiff::SignedDuration::from_secs(1)).ok()
    } else {
        Some(t)
    }
}

/// A taint's identity for the first-seen table.
type TaintId = (String, String, String, String);

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    pods: Reader,
    nodes: Reader,
    /// When taints without `timeAdded` were first seen.
    first_seen: Mutex<HashMap<TaintId, Timestamp>>,
    /// Pods waiting out a toleration, so that a cancelled eviction gets its Event.
    scheduled: Mutex<HashSet<Key>>,
}

async fn run(env: Env, cancel: CancellationToken) {
    let pods = env.informers.for_kind("v1", "Pod");
    let nodes = env.informers.for_kind("v1", "Node");
    let (events, events_task) = env.recorder("taint-eviction");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        pods: pods.reader(),
        nodes: nodes.reader(),
        first_seen: Mutex::default(),
        scheduled: Mutex::default(),
    });
    Controller::new(ctx)
        .named("taint-eviction-controller")
        .workers(env.workers)
        .watches(pods.subscribe(), pod_mapper(nodes.reader()))
        .watches(nodes.subscribe(), node_mapper(pods.reader()))
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

fn no_execute(node: &Value) -> Vec<&Value> {
    taints(node)
        .iter()
        .filter(|t| str_at(t, "/effect") == NO_EXECUTE)
        .collect()
}

/// Pods bound to a node with a NoExecute taint.
fn pod_mapper(nodes: Reader) -> Mapper {
    Box::new(move |ev| {
        ev.objects()
            .into_iter()
            .filter(|p| {
                let node = str_at(&p.value, "/spec/nodeName");
                !node.is_empty()
                    && nodes
                        .get("", node)
                        .is_some_and(|n| !no_execute(&n.value).is_empty())
            })
            .map(|p| p.key())
            .collect()
    })
}

/// Every pod on a node whose NoExecute taints changed (or that has some, when first seen).
fn node_mapper(pods: Reader) -> Mapper {
    Box::new(move |ev| {
        let nodes: Vec<&Arc<CachedObject>> = match ev {
            ReflectorEvent::Updated { old, new } => {
                if no_execute(&old.value) == no_execute(&new.value) {
                    return Vec::new();
                }
                vec![new]
            }
            ReflectorEvent::Added(n) => vec![n],
            ReflectorEvent::Restarted(all) => all.iter().collect(),
            ReflectorEvent::Deleted(_) => return Vec::new(),
        };
        nodes
            .into_iter()
            .filter(|n| {
                matches!(ev, ReflectorEvent::Updated { .. }) || !no_execute(&n.value).is_empty()
            })
            .flat_map(|n| pods.by_index(INDEX_NODE_NAME, &n.name))
            .map(|p| p.key())
            .collect()
    })
}

impl Ctx {
    /// When `taint` on `node` was added: its timeAdded, else when first seen here.
    fn added(&self, node: &str, taint: &Value, now: Timestamp) -> Timestamp {
        if let Some(t) = time_added(taint) {
            return t;
        }
        let id = (
            node.to_string(),
            str_at(taint, "/key").to_string(),
            str_at(taint, "/value").to_string(),
            str_at(taint, "/effect").to_string(),
        );
        *lock(&self.first_seen).entry(id).or_insert(now)
    }

    /// Forgets first sightings of taints `node` no longer has.
    fn prune(&self, node: &str, current: &[&Value]) {
        lock(&self.first_seen).retain(|(n, k, v, e), _| {
            n != node
                || current.iter().any(|t| {
                    str_at(t, "/key") == k && str_at(t, "/value") == v && str_at(t, "/effect") == e
                })
        });
    }

    fn cancel(&self, key: &str, pod: Option<&CachedObject>) {
        if lock(&self.scheduled).remove(key)
            && let Some(p) = pod
        {
            self.events.normal(
                &p.value,
                "TaintManagerEviction",
                &format!("Cancelling deletion of Pod {key}"),
            );
        }
    }
}

/// Reconciles one pod by key (see the module doc). Public so tests can drive it.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pod) = ctx.pods.get_key(&key) else {
        lock(&ctx.scheduled).remove(&key);
        return Ok(Action::AwaitChange);
    };
    if pod.is_deleting() {
        lock(&ctx.scheduled).remove(&key);
        return Ok(Action::AwaitChange);
    }
    let node_name = str_at(&pod.value, "/spec/nodeName");
    let Some(node) = ctx.nodes.get("", node_name) else {
        return Ok(Action::AwaitChange);
    };
    let now = ctx.clock.now();
    let current = no_execute(&node.value);
    ctx.prune(node_name, &current);
    let owned: Vec<Value> = current.into_iter().cloned().collect();
    match verdict(&pod.value, &owned, |t| ctx.added(node_name, t, now)) {
        Verdict::Never => {
            ctx.cancel(&key, Some(&pod));
            Ok(Action::AwaitChange)
        }
        Verdict::At(at) if at > now => {
            lock(&ctx.scheduled).insert(key);
            let left = now.duration_until(at).unsigned_abs();
            Ok(Action::Requeue(Duration::from_millis(
                left.as_millis() as u64 + 1,
            )))
        }
        _ => {
            lock(&ctx.scheduled).remove(&key);
            evict(&ctx, &pod, now).await?;
            Ok(Action::AwaitChange)
        }
    }
}

/// The DisruptionTarget condition, the Event, then a graceful delete guarded by the uid.
async fn evict(ctx: &Ctx, pod: &CachedObject, now: Timestamp) -> Result<(), Error> {
    let key = pod.key();
    tracing::info!(pod = %key, node = str_at(&pod.value, "/spec/nodeName"), "evicting a pod that does not tolerate its node's NoExecute taint");
    let conds = with_disruption_target(
        &pod.value,
        "DeletionByTaintManager",
        "Taint manager: deleting due to NoExecute taint",
        &rfc3339(now),
    );
    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version.to_string()},
        "status": {"conditions": conds},
    });
    let mut req = crate::util::merge_patch(pod, &patch);
    req.status = true;
    match ctx.api.patch(req).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    ctx.events.normal(
        &pod.value,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {key}"),
    );
    match ctx
        .api
        .delete(crate::podwrite::delete_request(pod, None))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
