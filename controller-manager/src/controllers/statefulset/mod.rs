//! The StatefulSet controller: pods with stable names, storage and order, as Kubernetes'
//! stateful set controller.
//!
//! Each reconcile (`syncStatefulSet` / `UpdateStatefulSet`):
//! 1. claims the pods named `<set>-<ordinal>` that match the selector, and the
//!    ControllerRevisions;
//! 2. the revisions ([`history::revisions`]): the *update* revision records the current template
//!    (created with the next number, or an equal older one renumbered on a rollback), the
//!    *current* revision is `status.currentRevision` (the update one at first);
//! 3. while its expectations are satisfied and it is not being deleted, the update
//!    ([`update::run`]): every ordinal in `[start, start + replicas)` gets its pod (claims first),
//!    a failed or finished pod is deleted and made again under the same name, then pods beyond
//!    the range are deleted, highest ordinal first; OrderedReady does one step at a time and only
//!    while every lower pod is Running, Ready and available; Parallel does them all. Then the
//!    RollingUpdate deletes the highest pods not of the update revision, down to the partition,
//!    within maxUnavailable, to be made again at the update revision; OnDelete waits for someone
//!    to delete them;
//! 4. the status (replicas, ready, available, current, updated, revisions, collisionCount,
//!    observedGeneration) and old revisions beyond `revisionHistoryLimit` that no pod uses are
//!    deleted.
//!
//! Claims follow `persistentVolumeClaimRetentionPolicy` through owner references, as Kubernetes
//! sets them; with no garbage collector in Rudder, this controller also deletes claims whose
//! owners are all gone ([`claims::collect`]).
//!
//! Events: SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete, SuccessfulUpdate,
//! RecreatingFailedPod, RecreatingTerminatedPod.

mod claims;
mod history;
pub mod identity;
mod status;
#[cfg(test)]
mod tests;
mod update;

use std::sync::Arc;
use std::time::Duration;

use rudder_api::k8s_openapi::api::apps::v1::StatefulSet;
use rudder_api::selector::LabelSelector;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::expectations::Expectations;
use rudder_client::workqueue::Key;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::claim::{claim, owned_mapper};
use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::revision::DEFAULT_HISTORY_LIMIT;
use crate::util::{int_at, spec_selector, str_at};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "statefulset",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// `persistentVolumeClaimRetentionPolicy`: whether claims go with the set (`whenDeleted`) and
/// with a scale-down (`whenScaled`); `false` is Retain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub when_deleted: bool,
    pub when_scaled: bool,
}

/// A StatefulSet as the controller uses it.
pub struct Ss {
    pub obj: Arc<CachedObject>,
    pub selector: LabelSelector,
    pub match_labels: Map<String, Value>,
    pub replicas: i64,
    /// `spec.ordinals.start`.
    pub start: i64,
    pub service_name: String,
    pub template: Value,
    pub claim_templates: Vec<Value>,
    /// OrderedReady (one at a time, in order) unless Parallel.
    pub ordered: bool,
    /// `(partition, maxUnavailable)` for RollingUpdate; `None` for OnDelete.
    pub rolling: Option<(i64, Option<Value>)>,
    pub min_ready: i64,
    pub history_limit: i64,
    pub collision_count: i64,
    pub retention: Retention,
}

impl Ss {
    pub fn parse(obj: Arc<CachedObject>) -> Result<Ss, Error> {
        let selector =
            spec_selector::<StatefulSet>(&obj, |t| t.spec.as_ref().map(|s| s.selector.clone()))?;
        let v = &obj.value;
        let rolling = match str_at(v, "/spec/updateStrategy/type") {
            "OnDelete" => None,
            _ => Some((
                int_at(v, "/spec/updateStrategy/rollingUpdate/partition", 0),
                v.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable")
                    .cloned(),
            )),
        };
        let delete = |p: &str| str_at(v, p) == "Delete";
        Ok(Ss {
            selector,
            match_labels: v
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            replicas: int_at(v, "/spec/replicas", 1),
            start: int_at(v, "/spec/ordinals/start", 0),
            service_name: str_at(v, "/spec/serviceName").to_string(),
            template: v.pointer("/spec/template").cloned().unwrap_or(Value::Null),
            claim_templates: v
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            ordered: str_at(v, "/spec/podManagementPolicy") != "Parallel",
            rolling,
            min_ready: int_at(v, "/spec/minReadySeconds", 0),
            history_limit: int_at(v, "/spec/revisionHistoryLimit", DEFAULT_HISTORY_LIMIT),
            collision_count: int_at(v, "/status/collisionCount", 0),
            retention: Retention {
                when_deleted: delete("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted"),
                when_scaled: delete("/spec/persistentVolumeClaimRetentionPolicy/whenScaled"),
            },
            obj,
        })
    }
}

pub struct Ctx {
    api: Arc<dyn Api>,
    clock: SharedClock,
    events: EventRecorder,
    sets: Reader,
    pods: Reader,
    claims: Reader,
    revisions: Reader,
    exp: Arc<Expectations>,
}

/// Keys of the StatefulSets a pod event concerns (see [`owned_mapper`]), lowering expectations.
fn pod_mapper(sets: Reader, exp: Arc<Expectations>) -> Mapper {
    owned_mapper(sets, "apps/v1", "StatefulSet", Some(exp), |ss, labels| {
        Ss::parse(Arc::clone(ss))
            .is_ok_and(|x| !x.selector.is_empty() && x.selector.matches(labels))
    })
}

async fn run(env: Env, cancel: CancellationToken) {
    let sets = env.informers.for_kind("apps/v1", "StatefulSet");
    let pods = env.informers.for_kind("v1", "Pod");
    let claims = env.informers.for_kind("v1", "PersistentVolumeClaim");
    let revisions = env.informers.for_kind("apps/v1", "ControllerRevision");
    let (events, events_task) = env.recorder("statefulset");
    let exp = Arc::new(Expectations::new(Arc::clone(&env.clock)));
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        events,
        sets: sets.reader(),
        pods: pods.reader(),
        claims: claims.reader(),
        revisions: revisions.reader(),
        exp: Arc::clone(&exp),
    });
    Controller::new(ctx)
        .named("statefulset")
        .workers(env.workers)
        .watches(sets.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(sets.reader(), exp))
        .reads(claims.reader())
        .reads(revisions.reader())
        .run(reconcile, policy, cancel)
        .await;
    events_task.abort();
}

/// Reconciles one StatefulSet by key. Public so tests can drive it without the runner.
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(obj) = ctx.sets.get_key(&key) else {
        ctx.exp.forget(&key);
        claims::collect_for_deleted_set(&ctx, &key).await?;
        return Ok(Action::AwaitChange);
    };
    let ss = Ss::parse(Arc::clone(&obj))?;
    let candidates: Vec<Arc<CachedObject>> = ctx
        .pods
        .by_index(INDEX_NAMESPACE, &obj.namespace)
        .into_iter()
        .filter(|p| identity::is_member(&obj.name, &p.name))
        .collect();
    let pods = claim(ctx.api.as_ref(), &obj, &ss.selector, candidates).await?;
    let revs = history::revisions(&ctx, &ss).await?;
    let mut outcome = update::partition(&ss, &pods);
    let acted = if ctx.exp.satisfied(&key) && !obj.is_deleting() {
        update::run(&ctx, &key, &ss, &revs, &mut outcome).await
    } else {
        Ok(())
    };
    let st = status::compute(&ss, &revs, &outcome, ctx.clock.now());
    status::write(&ctx, &ss, &st).await?;
    acted?;
    history::truncate(&ctx, &ss, &revs, &pods).await?;
    claims::collect_scaled_down(&ctx, &ss).await?;
    let mut wait = outcome.retry_after;
    if ss.min_ready > 0 && st.ready != st.available {
        // Availability comes with time alone.
        let d = Duration::from_secs(ss.min_ready as u64);
        wait = Some(wait.map_or(d, |w| w.min(d)));
    }
    Ok(wait.map_or(Action::AwaitChange, Action::Requeue))
}
