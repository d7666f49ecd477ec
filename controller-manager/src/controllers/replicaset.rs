//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector. The same
//! code runs ReplicationControllers (core/v1, a map selector) as a second controller,
//! `replicationcontroller`, as Kubernetes does.
//!
//! Each reconcile of a ReplicaSet (Kubernetes' `syncReplicaSet`):
//! 1. claims the active pods in its namespace: adopts matching orphans, releases owned pods
//!    that stopped matching ([`crate::claim`]);
//! 2. only while its expectations are satisfied (the cache has seen every create and delete it
//!    made) and it is not being deleted: creates the missing pods in slow-start batches (at
//!    most [`BURST`] per reconcile), or deletes the surplus, cheapest first
//!    ([`crate::util::rank`]), recording each as an expectation first;
//! 3. writes the status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas
//!    (ready for `minReadySeconds`), observedGeneration, and the ReplicaFailure condition while
//!    creating or deleting fails (quota, admission), with the server's message.
//!
//! Pod events reach the owning ReplicaSet through its controller reference, and an orphan
//! reaches every ReplicaSet in its namespace whose selector matches it (which may adopt it).
//! Events: SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete.

use std::sync::Arc;
use std::time::Duration;

use rudder_api::k8s_openapi::api::apps::v1::ReplicaSet;
use rudder_api::selector::LabelSelector;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::controller::{Action, Controller, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::expectations::Expectations;
use rudder_client::workqueue::Key;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::claim::{claim, owned_mapper};
use crate::error::{Error, policy};
use crate::podwrite;
use crate::runner::{Descriptor, Env};
use crate::util::batch::slow_start;
use crate::util::pods::{is_active, is_available, is_ready};
use crate::util::rank::sort_for_deletion;
use crate::util::template::{generate_name_prefix, pod_from_template};
use crate::util::{rfc3339, spec_selector};

/// Most pods created or deleted in one reconcile (Kubernetes' `BurstReplicas`).
pub const BURST: usize = 500;

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "replicaset",
    run: |env, cancel| Box::pin(run(env, cancel, REPLICA_SET)),
};

pub const RC_DESCRIPTOR: Descriptor = Descriptor {
    name: "replicationcontroller",
    run: |env, cancel| Box::pin(run(env, cancel, REPLICATION_CONTROLLER)),
};

/// The kind this controller keeps: ReplicaSet or ReplicationController.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: &'static str,
}

pub const REPLICA_SET: Flavor = Flavor {
    api_version: "apps/v1",
    kind: "ReplicaSet",
    name: "replicaset",
};

pub const REPLICATION_CONTROLLER: Flavor = Flavor {
    api_version: "v1",
    kind: "ReplicationController",
    name: "replicationcontroller",
};

/// What reconcile reads and writes through.
pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    sets: Reader,
    pods: Reader,
    exp: Arc<Expectations>,
}

impl Ctx {
    /// A context over given caches, for driving [`reconcile`] directly (tests).
    pub fn new(
        api: Arc<dyn Api>,
        clock: SharedClock,
        events: EventRecorder,
        sets: Reader,
        pods: Reader,
        exp: Arc<Expectations>,
    ) -> Ctx {
        Ctx {
            api,
            clock,
            events,
            sets,
            pods,
            exp,
        }
    }
}

/// The selector of a ReplicaSet (a LabelSelector) or ReplicationController (a map), parsed.
pub fn selector_of(rs: &CachedObject) -> Result<LabelSelector, Error> {
    if rs.kind == REPLICATION_CONTROLLER.kind {
        let labels = rs
            .value
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            });
        let sel = rudder_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: labels,
            match_expressions: None,
        };
        return LabelSelector::from_object(&sel)
            .map_err(|e| Error::Invalid(format!("spec.selector: {e}")));
    }
    spec_selector::<ReplicaSet>(rs, |t| t.spec.as_ref().map(|s| s.selector.clone()))
}

async fn run(env: Env, cancel: CancellationToken, flavor: Flavor) {
    let sets = env.informers.for_kind(flavor.api_version, flavor.kind);
    let pods = env.informers.for_kind("v1", "Pod");
    let (events, events_task) = env.recorder(flavor.name);
    let exp = Arc::new(Expectations::new(Arc::clone(&env.clock)));
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        sets: sets.reader(),
        pods: pods.reader(),
        exp: Arc::clone(&exp),
    });
    Controller::new(ctx)
        .named(flavor.name)
        .workers(env.workers)
        .watches(sets.subscribe(), self_mapper())
        .watches(
            pods.subscribe(),
            owned_mapper(
                sets.reader(),
                flavor.api_version,
                flavor.kind,
                Some(exp),
                |rs, labels| selector_of(rs).is_ok_and(|s| !s.is_empty() && s.matches(labels)),
            ),
        )
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// Reconciles one ReplicaSet by key. Public so tests can drive it without the runner.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(rs) = ctx.sets.get_key(&key) else {
        ctx.exp.forget(&key);
        return Ok(Action::AwaitChange);
    };
    let selector = selector_of(&rs)?;
    let replicas = rs
        .value
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let min_ready = rs
        .value
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let needs_sync = ctx.exp.satisfied(&key) && !rs.is_deleting();
    let candidates: Vec<Arc<CachedObject>> = ctx
        .pods
        .by_index(INDEX_NAMESPACE, &rs.namespace)
        .into_iter()
        .filter(|p| is_active(&p.value))
        .collect();
    let pods = claim(ctx.api.as_ref(), &rs, &selector, candidates).await?;
    let failure = if needs_sync {
        manage(&ctx, &key, &rs, &pods, replicas).await.err()
    } else {
        None
    };
    let (ready, available) = write_status(&ctx, &rs, &pods, min_ready, failure.as_ref()).await?;
    if let Some((_, e)) = failure {
        return Err(e);
    }
    if min_ready > 0 && ready > available {
        // Availability changes with time alone: look again when the oldest could be available.
        return Ok(Action::Requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::AwaitChange)
}

/// A failure to create or delete: the condition reason and the error.
type Failure = (&'static str, Error);

async fn manage(
    ctx: &Ctx,
    key: &str,
    rs: &CachedObject,
    pods: &[Arc<CachedObject>],
    replicas: i64,
) -> Result<(), Failure> {
    let diff = pods.len() as i64 - replicas;
    if diff < 0 {
        let n = ((-diff) as usize).min(BURST);
        ctx.exp.expect_creations(key, n);
        let template = rs
            .value
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        let prefix = generate_name_prefix(&rs.name);
        let (ok, err) = slow_start(n, 1, || create_pod(ctx, rs, &template, &prefix)).await;
        // No event will come for what was not created.
        for _ in ok..n {
            ctx.exp.creation_observed(key);
        }
        if let Some(e) = err {
            return Err(("FailedCreate", e));
        }
    } else if diff > 0 {
        let n = (diff as usize).min(BURST);
        let mut victims = pods.to_vec();
        sort_for_deletion(&mut victims, pods);
        victims.truncate(n);
        ctx.exp
            .expect_deletions(key, victims.iter().map(|p| p.uid().to_string()));
        let results =
            futures::future::join_all(victims.iter().map(|p| delete_pod(ctx, rs, p))).await;
        let mut first = None;
        for (p, r) in victims.iter().zip(results) {
            if let Err(e) = r {
                ctx.exp.deletion_observed(key, p.uid());
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(("FailedDelete", e));
        }
    }
    Ok(())
}

async fn create_pod(
    ctx: &Ctx,
    rs: &CachedObject,
    template: &Value,
    prefix: &str,
) -> Result<(), Error> {
    let pod = pod_from_template(template, &rs.namespace, &rs.value, prefix, None);
    podwrite::create(ctx.api.as_ref(), &ctx.events, &rs.value, &pod).await?;
    Ok(())
}

async fn delete_pod(ctx: &Ctx, rs: &CachedObject, pod: &CachedObject) -> Result<(), Error> {
    Ok(podwrite::delete(ctx.api.as_ref(), &ctx.events, &rs.value, pod).await?)
}

/// Writes the status from the claimed pods; returns (ready, available).
async fn write_status(
    ctx: &Ctx,
    rs: &CachedObject,
    pods: &[Arc<CachedObject>],
    min_ready: i64,
    failure: Option<&Failure>,
) -> Result<(i64, i64), Error> {
    let now = ctx.clock.now();
    let template_labels = rs
        .value
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fully = pods
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.value.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = pods.iter().filter(|p| is_ready(&p.value)).count() as i64;
    let available = pods
        .iter()
        .filter(|p| is_available(&p.value, min_ready, now))
        .count() as i64;
    let mut status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully,
        "readyReplicas": ready,
        "availableReplicas": available,
    });
    let current = rs
        .value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let others: Vec<Value> = current
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) != Some("ReplicaFailure"))
        .cloned()
        .collect();
    let existing = current
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure"));
    match (failure, existing) {
        (Some((reason, e)), None) => {
            let mut conds = others;
            conds.push(json!({
                "type": "ReplicaFailure",
                "status": "True",
                "reason": reason,
                "message": e.to_string(),
                "lastTransitionTime": rfc3339(now),
            }));
            status["conditions"] = json!(conds);
        }
        (None, Some(_)) => {
            status["conditions"] = if others.is_empty() {
                Value::Null
            } else {
                json!(others)
            };
        }
        _ => {}
    }
    rudder_client::write::patch_status_observed(ctx.api.as_ref(), rs, status).await?;
    Ok((ready, available))
}
