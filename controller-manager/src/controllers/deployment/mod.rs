//! The Deployment controller: rolls a pod template out through ReplicaSets, one per template
//! revision, as Kubernetes' `DeploymentController`.
//!
//! Each reconcile (`syncDeployment`): claim the ReplicaSets that match the selector; then
//! - a Deployment being deleted only gets its status written;
//! - paused, or only its replica count changed (a scaling event: some active ReplicaSet's
//!   `desired-replicas` annotation differs from `spec.replicas`): scale proportionally
//!   ([`rollout::scale`]) without moving the rollout;
//! - otherwise the strategy: RollingUpdate ([`rollout::rolling`]: surge the new ReplicaSet
//!   within `replicas + maxSurge`, shrink the old ones while at least `replicas - maxUnavailable`
//!   stay available) or Recreate ([`rollout::recreate`]: old ones to zero, wait until their pods
//!   are gone, then the new one to full size).
//!
//! Then the status ([`status`]): counts, Available, Progressing with `progressDeadlineSeconds`,
//! ReplicaFailure, and the revision history is trimmed to `revisionHistoryLimit`
//! ([`sets::cleanup`]). Revisions live in ReplicaSet annotations
//! (`deployment.kubernetes.io/revision`); a rollback (`rudder rollout undo`) is the client
//! writing an old template back, which this controller sees as a new rollout to an existing
//! ReplicaSet, whose revision it raises.
//!
//! Every ReplicaSet write carries its resourceVersion, so a reconcile on a stale cache ends in
//! a conflict and a retry, never in acting twice. Events: ScalingReplicaSet, SelectingAll,
//! DeploymentRollback is not sent (rollback is client-side, as in apps/v1).

pub mod autorollback;
pub mod canary;
mod rollout;
pub mod sets;
mod status;

use std::sync::Arc;

use rudder_api::k8s_openapi::api::apps::v1::Deployment;
use rudder_api::selector::LabelSelector;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::controller::{Action, Controller, Mapper, controller_owner_key, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::claim::{claim, owned_mapper};
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::intstr::fenceposts;
use crate::util::pods::{is_crash_looping, restarts};
use crate::util::spec_selector;

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "deployment",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// Annotations the controller keeps on ReplicaSets (and the revision on the Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    deployments: Reader,
    sets: Reader,
    pods: Reader,
}

/// The rollout strategy, resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: i64,
        max_unavailable: i64,
    },
}

/// A Deployment's spec as the controller uses it.
#[derive(Debug, Clone)]
pub struct Dep {
    pub obj: Arc<CachedObject>,
    pub replicas: i64,
    pub min_ready: i64,
    pub strategy: Strategy,
    pub paused: bool,
    /// `None`: no deadline (unset or the max int32, as Kubernetes reads it).
    pub progress_deadline: Option<i64>,
    pub history_limit: i64,
    pub collision_count: Option<i64>,
    pub template: Value,
    pub selector: LabelSelector,
}

impl Dep {
    pub fn parse(obj: Arc<CachedObject>) -> Result<Dep, Error> {
        let selector =
            spec_selector::<Deployment>(&obj, |t| t.spec.as_ref().map(|s| s.selector.clone()))?;
        let v = &obj.value;
        let replicas = v
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let strategy = match v.pointer("/spec/strategy/type").and_then(Value::as_str) {
            Some("Recreate") => Strategy::Recreate,
            _ => {
                let ru = v.pointer("/spec/strategy/rollingUpdate");
                let default = Value::String("25%".into());
                let surge = ru.and_then(|r| r.get("maxSurge")).or(Some(&default));
                let unavailable = ru.and_then(|r| r.get("maxUnavailable")).or(Some(&default));
                let (max_surge, max_unavailable) = fenceposts(surge, unavailable, replicas)
                    .map_err(|e| Error::Invalid(format!("spec.strategy.rollingUpdate.{e}")))?;
                Strategy::RollingUpdate {
                    max_surge,
                    max_unavailable,
                }
            }
        };
        let progress_deadline = match v.pointer("/spec/progressDeadlineSeconds") {
            None => Some(600),
            Some(p) => p.as_i64().filter(|&s| s != i64::from(i32::MAX)),
        };
        Ok(Dep {
            replicas,
            min_ready: v
                .pointer("/spec/minReadySeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            strategy,
            paused: v
                .pointer("/spec/paused")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            progress_deadline,
            history_limit: v
                .pointer("/spec/revisionHistoryLimit")
                .and_then(Value::as_i64)
                .unwrap_or(10),
            collision_count: v.pointer("/status/collisionCount").and_then(Value::as_i64),
            template: v.pointer("/spec/template").cloned().unwrap_or(Value::Null),
            selector,
            obj,
        })
    }

    /// `MaxSurge(d)`: 0 unless RollingUpdate.
    pub fn max_surge(&self) -> i64 {
        match self.strategy {
            Strategy::RollingUpdate { max_surge, .. } => max_surge,
            Strategy::Recreate => 0,
        }
    }

    /// `MaxUnavailable(d)`: 0 unless RollingUpdate with replicas; never above replicas.
    pub fn max_unavailable(&self) -> i64 {
        match self.strategy {
            Strategy::RollingUpdate {
                max_unavailable, ..
            } if self.replicas > 0 => max_unavailable.min(self.replicas),
            _ => 0,
        }
    }
}

/// A deleted pod reaches its ReplicaSet's Deployment (a Recreate rollout waits for the old pods
/// to be gone), and so does a pod that starts crash-looping (automatic rollback).
fn pod_mapper(sets: Reader, deployments: Reader) -> Mapper {
    Box::new(move |ev| {
        let pod = match ev {
            ReflectorEvent::Deleted(pod) => pod,
            // A pod starting to crash-loop may trigger an automatic rollback.
            ReflectorEvent::Updated { old, new }
                if (is_crash_looping(&new.value) && !is_crash_looping(&old.value))
                    || (restarts(&new.value) >= autorollback::RESTARTS
                        && restarts(&old.value) < autorollback::RESTARTS) =>
            {
                new
            }
            _ => return Vec::new(),
        };
        controller_owner_key(pod, &sets, "apps/v1", "ReplicaSet")
            .and_then(|rs| sets.get_key(&rs))
            .and_then(|rs| controller_owner_key(&rs, &deployments, "apps/v1", "Deployment"))
            .into_iter()
            .collect()
    })
}

async fn run(env: Env, cancel: CancellationToken) {
    let deployments = env.informers.for_kind("apps/v1", "Deployment");
    let sets = env.informers.for_kind("apps/v1", "ReplicaSet");
    let pods = env.informers.for_kind("v1", "Pod");
    let (events, events_task) = env.recorder("deployment");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        deployments: deployments.reader(),
        sets: sets.reader(),
        pods: pods.reader(),
    });
    Controller::new(ctx)
        .named("deployment")
        .workers(env.workers)
        .watches(deployments.subscribe(), self_mapper())
        .watches(
            sets.subscribe(),
            owned_mapper(
                deployments.reader(),
                "apps/v1",
                "Deployment",
                None,
                |d, labels| {
                    Dep::parse(Arc::clone(d))
                        .is_ok_and(|d| !d.selector.is_empty() && d.selector.matches(labels))
                },
            ),
        )
        .watches(
            pods.subscribe(),
            pod_mapper(sets.reader(), deployments.reader()),
        )
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// Reconciles one Deployment by key.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(obj) = ctx.deployments.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    let d = Dep::parse(Arc::clone(&obj))?;
    if d.selector.is_empty() {
        ctx.events.warning(
            &obj.value,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
        );
        rudder_client::write::patch_status_observed(ctx.api.as_ref(), &obj, serde_json::json!({}))
            .await?;
        return Ok(Action::AwaitChange);
    }
    let candidates = ctx.sets.by_index(INDEX_NAMESPACE, &obj.namespace);
    let owned = claim(ctx.api.as_ref(), &obj, &d.selector, candidates).await?;
    let mut view = sets::View::new(d, owned);
    if view.d.obj.is_deleting() {
        return status::sync(&ctx, &mut view).await;
    }
    if view.d.paused || rollout::is_scaling_event(&view) {
        view.find_new();
        rollout::scale(&ctx, &mut view).await?;
        if view.d.paused {
            sets::cleanup(&ctx, &view).await?;
        }
        return status::sync(&ctx, &mut view).await;
    }
    if let Some(action) = autorollback::check(&ctx, &mut view).await? {
        return Ok(action);
    }
    let action = match view.d.strategy {
        Strategy::Recreate => rollout::recreate(&ctx, &mut view).await,
        Strategy::RollingUpdate { .. } => {
            view.find_new();
            if canary::applies(&view) {
                canary::run(&ctx, &mut view).await
            } else {
                rollout::rolling(&ctx, &mut view).await
            }
        }
    }?;
    autorollback::mark_good(&ctx, &mut view).await?;
    Ok(action)
}
