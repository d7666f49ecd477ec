//! The DaemonSet controller: one pod per eligible node, as Kubernetes' daemon controller.
//!
//! Each reconcile (`syncDaemonSet`):
//! 1. the revision history ([`sync::history`]): the ControllerRevision recording the current
//!    template (created with the next number, or renumbered on a rollback), its hash labelling
//!    the pods (`controller-revision-hash`, with `pod-template-generation`);
//! 2. claims the pods in the namespace and groups them by the node they are for;
//! 3. while its expectations are satisfied: the manage pass ([`plan::manage`]) places a pod on
//!    every eligible node without one ([`nodes`]: nodeSelector, required node affinity,
//!    taints against the template's and the automatic daemon tolerations), pinned by required
//!    node affinity so that the scheduler binds it there, and deletes pods on nodes that no
//!    longer fit or exist, surplus pods, and failed pods with a per-node back-off (1 s doubling
//!    to 15 min); if it had nothing to do, the rolling update ([`plan::rolling`]) takes the next
//!    step within maxUnavailable / maxSurge; then old revisions beyond `revisionHistoryLimit`
//!    that no pod uses are deleted;
//! 4. the status: desired/current/misscheduled/ready/available/unavailable/updated counts,
//!    observedGeneration, collisionCount.
//!
//! Events: SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete, FailedDaemonPod,
//! SelectingAll.

pub mod nodes;
pub mod plan;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudder_api::k8s_openapi::api::apps::v1::DaemonSet;
use rudder_api::selector::LabelSelector;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::expectations::Expectations;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::claim::{claim, owned_mapper};
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::revision::DEFAULT_HISTORY_LIMIT;
use crate::util::{int_at, spec_selector};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "daemonset",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// Most pods created or deleted in one reconcile (Kubernetes' `BurstReplicas` for DaemonSets).
pub const BURST: usize = 250;
/// The annotation Kubernetes' API server keeps with a DaemonSet's template generation.
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// A DaemonSet as the controller uses it.
pub struct Ds {
    pub obj: Arc<CachedObject>,
    pub selector: LabelSelector,
    pub template: Value,
    pub min_ready: i64,
    /// `(maxSurge, maxUnavailable)` as written, for RollingUpdate; `None` for OnDelete.
    pub rolling: Option<(Option<Value>, Option<Value>)>,
    pub history_limit: i64,
    pub collision_count: i64,
    /// The template generation pods are labelled with: the server's annotation (the API server
    /// keeps it), else `metadata.generation` (the fake; it moves with every spec change, so a pod
    /// carrying it was made from the current template too).
    pub generation: i64,
}

impl Ds {
    pub fn parse(obj: Arc<CachedObject>) -> Result<Ds, Error> {
        let selector =
            spec_selector::<DaemonSet>(&obj, |t| t.spec.as_ref().map(|s| s.selector.clone()))?;
        let v = &obj.value;
        let rolling = match v
            .pointer("/spec/updateStrategy/type")
            .and_then(Value::as_str)
        {
            Some("OnDelete") => None,
            _ => {
                let ru = v.pointer("/spec/updateStrategy/rollingUpdate");
                let get = |f: &str| ru.and_then(|r| r.get(f)).cloned();
                Some((get("maxSurge"), get("maxUnavailable")))
            }
        };
        let generation = v
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(TEMPLATE_GENERATION))
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| obj.generation());
        Ok(Ds {
            selector,
            template: v.pointer("/spec/template").cloned().unwrap_or(Value::Null),
            min_ready: int_at(v, "/spec/minReadySeconds", 0),
            rolling,
            history_limit: int_at(v, "/spec/revisionHistoryLimit", DEFAULT_HISTORY_LIMIT),
            collision_count: int_at(v, "/status/collisionCount", 0),
            generation,
            obj,
        })
    }
}

/// Kubernetes' failed-pod back-off (`failedPodsBackoff`): per DaemonSet, generation and node,
/// 1 s doubling to 15 min, forgotten after twice the maximum without failures.
#[derive(Default)]
pub struct FailedBackoff {
    entries: Mutex<HashMap<String, (Duration, Instant)>>,
}

const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

impl FailedBackoff {
    /// Whether a failed pod under `key` may be deleted at `now` (and the back-off then grows),
    /// or how long is left.
    pub fn allow(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, at)| now.duration_since(*at) <= 2 * BACKOFF_MAX);
        match m.get(key).copied() {
            Some((delay, at)) if now.duration_since(at) < delay => {
                Err(delay - now.duration_since(at))
            }
            Some((delay, _)) => {
                m.insert(key.to_string(), ((delay * 2).min(BACKOFF_MAX), now));
                Ok(())
            }
            None => {
                m.insert(key.to_string(), (BACKOFF_INITIAL, now));
                Ok(())
            }
        }
    }
}

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    sets: Reader,
    pods: Reader,
    nodes: Reader,
    revisions: Reader,
    exp: Arc<Expectations>,
    backoff: FailedBackoff,
}

/// A node that joins, leaves, or changes in a way that matters to a DaemonSet (labels,
/// taints, name) reaches the DaemonSets whose verdict on it changed; heartbeats reach none.
fn node_mapper(sets: Reader) -> Mapper {
    Box::new(move |ev| match ev {
        ReflectorEvent::Updated { old, new } => sets
            .list()
            .into_iter()
            .filter(|ds| {
                let t = ds.value.pointer("/spec/template").unwrap_or(&Value::Null);
                nodes::should_run(&old.value, t) != nodes::should_run(&new.value, t)
            })
            .map(|ds| ds.key())
            .collect(),
        _ => sets.keys(),
    })
}

/// Keys of the DaemonSets a pod event concerns (see [`owned_mapper`]), lowering expectations.
fn pod_mapper(sets: Reader, exp: Arc<Expectations>) -> Mapper {
    owned_mapper(sets, "apps/v1", "DaemonSet", Some(exp), |ds, labels| {
        Ds::parse(Arc::clone(ds))
            .is_ok_and(|x| !x.selector.is_empty() && x.selector.matches(labels))
    })
}

async fn run(env: Env, cancel: CancellationToken) {
    let sets = env.informers.for_kind("apps/v1", "DaemonSet");
    let pods = env.informers.for_kind("v1", "Pod");
    let nodes = env.informers.for_kind("v1", "Node");
    let revisions = env.informers.for_kind("apps/v1", "ControllerRevision");
    let (events, events_task) = env.recorder("daemonset");
    let exp = Arc::new(Expectations::new(Arc::clone(&env.clock)));
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        sets: sets.reader(),
        pods: pods.reader(),
        nodes: nodes.reader(),
        revisions: revisions.reader(),
        exp: Arc::clone(&exp),
        backoff: FailedBackoff::default(),
    });
    Controller::new(ctx)
        .named("daemonset")
        .workers(env.workers)
        .watches(sets.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(sets.reader(), exp))
        .watches(nodes.subscribe(), node_mapper(sets.reader()))
        .watches(
            revisions.subscribe(),
            rudder_client::controller::owner_mapper(sets.reader(), "apps/v1", "DaemonSet"),
        )
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// Reconciles one DaemonSet by key. Public so tests can drive it without the runner.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(obj) = ctx.sets.get_key(&key) else {
        ctx.exp.forget(&key);
        return Ok(Action::AwaitChange);
    };
    let ds = Ds::parse(Arc::clone(&obj))?;
    if ds.selector.is_empty() {
        ctx.events.warning(
            &obj.value,
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.",
        );
        return Ok(Action::AwaitChange);
    }
    // Its pods are the garbage collector's now.
    if obj.is_deleting() {
        return Ok(Action::AwaitChange);
    }
    let mut nodes = ctx.nodes.list();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut collisions = ds.collision_count;
    let (hash, old) = sync::history(&ctx, &ds, &mut collisions).await?;
    let candidates = ctx.pods.by_index(INDEX_NAMESPACE, &obj.namespace);
    let pods = claim(ctx.api.as_ref(), &obj, &ds.selector, candidates).await?;
    let by_node = plan::by_node(&pods);
    let now = ctx.clock.now();
    if !ctx.exp.satisfied(&key) {
        sync::write_status(&ctx, &ds, &nodes, &by_node, &hash, collisions, false).await?;
        return Ok(Action::AwaitChange);
    }
    let uid = obj.uid().to_string();
    let observed = obj.observed_generation();
    let instant = ctx.clock.instant();
    let mut allow = |node: &str| {
        ctx.backoff
            .allow(&format!("{uid}/{observed}/{node}"), instant)
    };
    let mut step = plan::manage(&ds, &nodes, &by_node, &hash, now, &mut allow);
    for msg in &step.failed {
        ctx.events.warning(&obj.value, "FailedDaemonPod", msg);
    }
    let retry = step.retry_after;
    if step.is_empty() && ds.rolling.is_some() {
        step = plan::rolling(&ds, &nodes, &by_node, &hash, now)
            .map_err(|e| Error::Invalid(format!("spec.updateStrategy.rollingUpdate.{e}")))?;
    }
    let acted = sync::apply(&ctx, &key, &ds, &step, &hash).await;
    if ctx.exp.satisfied(&key) {
        sync::cleanup_history(&ctx, &ds, &pods, &old).await?;
    }
    let c = sync::write_status(&ctx, &ds, &nodes, &by_node, &hash, collisions, true).await?;
    acted?;
    let mut wait = retry;
    if ds.min_ready > 0 && c.ready != c.available {
        // Availability comes with time alone.
        let d = Duration::from_secs(ds.min_ready as u64);
        wait = Some(wait.map_or(d, |w| w.min(d)));
    }
    Ok(wait.map_or(Action::AwaitChange, Action::Requeue))
}
