//! The disruption controller, as Kubernetes' `disruption` controller: keeps each
//! PodDisruptionBudget's status, which the eviction subresource
//! ([`rudder_api::eviction`]) consults and charges.
//!
//! Keys are budgets. For a budget, its pods are those of its namespace its selector picks
//! (policy/v1: no selector picks none, an empty one all). Then ([`budget`]):
//! - `expectedPods` / `desiredHealthy`: an integer `minAvailable` is the desired count and the
//!   pods found the expected one; a percentage `minAvailable`, or any `maxUnavailable`, resolves
//!   against the scale of the pods' controllers (a Deployment through its ReplicaSet, a
//!   ReplicaSet, StatefulSet or ReplicationController, each counted once), rounding up, and
//!   `desiredHealthy = expected - maxUnavailable` (never below 0). Pods without a controller
//!   are then reported (Warning `UnmanagedPods`); a controller missing from the caches fails
//!   the sync;
//! - `disruptedPods`: the evictions recorded by the API server whose pods are not yet being
//!   deleted, each kept for [`budget::DELETION_TIMEOUT`] (2 minutes) and then forgotten; the
//!   budget is looked at again when the next one expires (on the injected clock);
//! - `currentHealthy`: Ready pods neither being deleted nor recorded as disrupted;
//! - `disruptionsAllowed = currentHealthy - desiredHealthy` (0 when negative or no pod is
//!   expected), `observedGeneration`, and the condition `DisruptionAllowed` (True
//!   `SufficientPods`, False `InsufficientPods`).
//!
//! A sync that fails (an unreadable selector or figure, a missing controller) writes the
//! fail-safe status: `disruptionsAllowed: 0` and `DisruptionAllowed=False` reason `SyncFailed`
//! with the error, so no eviction passes on a budget that cannot be computed. The status is
//! written with the cached budget's resourceVersion; a conflict retries on a fresher cache.
//! Budgets are looked at when they change, when a pod they may select changes, and when a
//! workload of their namespace changes (its scale counts).

pub mod budget;

use std::sync::Arc;

use bytes::Bytes;
use rudder_api::eviction::{budget_selector, selects};
use rudder_client::Api;
use rudder_client::cache::{CachedObject, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{Action, Controller, Mapper, self_mapper};
use rudder_client::events::EventRecorder;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, policy};
use crate::runner::{Descriptor, Env};
use crate::util::rfc3339;
use budget::{Figures, Owners};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "disruption",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

pub struct Ctx {
    pub api: Arc<dyn Api>,
    pub clock: SharedClock,
    pub budgets: Reader,
    pub pods: Reader,
    pub owners: Owners,
    pub events: EventRecorder,
}

async fn run(env: Env, cancel: CancellationToken) {
    let budgets = env.informers.for_kind("policy/v1", "PodDisruptionBudget");
    let pods = env.informers.for_kind("v1", "Pod");
    let rs = env.informers.for_kind("apps/v1", "ReplicaSet");
    let deploys = env.informers.for_kind("apps/v1", "Deployment");
    let sts = env.informers.for_kind("apps/v1", "StatefulSet");
    let rcs = env.informers.for_kind("v1", "ReplicationController");
    let (events, events_task) = env.recorder("disruption");
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&env.api),
        clock: Arc::clone(&env.clock),
        budgets: budgets.reader(),
        pods: pods.reader(),
        owners: Owners {
            replicasets: rs.reader(),
            deployments: deploys.reader(),
            statefulsets: sts.reader(),
            rcs: rcs.reader(),
        },
        events,
    });
    let mut c = Controller::new(ctx)
        .named("disruption")
        .workers(env.workers)
        .watches(budgets.subscribe(), self_mapper())
        .watches(pods.subscribe(), pod_mapper(budgets.reader()));
    for w in [&rs, &deploys, &sts, &rcs] {
        c = c.watches(w.subscribe(), namespace_mapper(budgets.reader()));
    }
    c.run(reconcile, policy, cancel).await;
    drop(events_task);
}

/// A pod maps to the budgets of its namespace that select it (before or after the change); a
/// relist to every budget.
pub fn pod_mapper(budgets: Reader) -> Mapper {
    Box::new(move |ev| match ev {
        ReflectorEvent::Restarted(_) => budgets.keys(),
        _ => {
            let mut keys: Vec<Key> = ev
                .objects()
                .iter()
                .flat_map(|p| {
                    budgets
                        .list()
                        .into_iter()
                        .filter(|b| b.namespace == p.namespace && selects(&b.value, &p.value))
                        .map(|b| b.key())
                        .collect::<Vec<_>>()
                })
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
    })
}

/// A workload maps to every budget of its namespace (its scale may be one's expected count).
pub fn namespace_mapper(budgets: Reader) -> Mapper {
    Box::new(move |ev| match ev {
        ReflectorEvent::Restarted(_) => budgets.keys(),
        _ => {
            let mut keys: Vec<Key> = ev
                .objects()
                .iter()
                .flat_map(|w| {
                    budgets
                        .list()
                        .into_iter()
                        .filter(|b| b.namespace == w.namespace)
                        .map(|b| b.key())
                        .collect::<Vec<_>>()
                })
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
    })
}

/// The budget's pods and figures; `Err` is why the sync failed.
fn figures(
    ctx: &Ctx,
    pdb: &CachedObject,
    now: jiff::Timestamp,
) -> Result<(Figures, Option<jiff::Timestamp>), String> {
    let pods: Vec<Arc<CachedObject>> = match budget_selector(&pdb.value)? {
        None => Vec::new(),
        Some(sel) => ctx.pods.list_by(&pdb.namespace, &sel),
    };
    if pods.is_empty() {
        ctx.events
            .normal(&pdb.value, "NoPods", "No matching pods found");
    }
    let spec = pdb.value.get("spec").cloned().unwrap_or(Value::Null);
    let (expected, desired, unmanaged) = budget::expected_and_desired(&spec, &pods, &ctx.owners)?;
    let (disrupted, recheck) = budget::disrupted(&pdb.value, &pods, now);
    let current = budget::healthy(&pods, &disrupted);
    Ok((
        Figures {
            expected,
            desired,
            current,
            disrupted,
            unmanaged,
        },
        recheck,
    ))
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pdb) = ctx.budgets.get_key(&key) else {
        return Ok(Action::AwaitChange);
    };
    let now = ctx.clock.now();
    let stamp = rfc3339(now);
    let (status, outcome) = match figures(&ctx, &pdb, now) {
        Ok((f, recheck)) => {
            if !f.unmanaged.is_empty() {
                ctx.events.warning(
                    &pdb.value,
                    "UnmanagedPods",
                    &format!(
                        "Pods selected by this PodDisruptionBudget were found to be unmanaged ({}). As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                        f.unmanaged.join(", ")
                    ),
                );
            }
            let after = recheck.map(|due| {
                let d = due.duration_since(now).unsigned_abs();
                Action::Requeue(d + std::time::Duration::from_millis(10))
            });
            (budget::status(&pdb.value, &f, &stamp), Ok(after))
        }
        Err(why) => {
            ctx.events
                .warning(&pdb.value, "CalculateExpectedPodCountFailed", &why);
            (budget::fail_safe(&pdb.value, &why, &stamp), Err(why))
        }
    };
    write_status(&ctx, &pdb, status).await?;
    match outcome {
        Ok(after) => Ok(after.unwrap_or(Action::AwaitChange)),
        Err(why) => Err(Error::Invalid(format!(
            "PodDisruptionBudget {}: {why}",
            pdb.key()
        ))),
    }
}

/// Writes the status when it changed, with the cached resourceVersion as precondition. The
/// condition's transition time is kept, so a status equal but for "now" is not rewritten.
async fn write_status(ctx: &Ctx, pdb: &CachedObject, status: Value) -> Result<(), Error> {
    if pdb.value.get("status") == Some(&status) {
        return Ok(());
    }
    let mut obj = pdb.value.clone();
    obj["status"] = status;
    let req = pb::UpdateRequest {
        kind: Some(kind_ref("policy/v1", "PodDisruptionBudget")),
        namespace: pdb.namespace.clone(),
        json: Bytes::from(obj.to_string()),
        options: None,
    };
    match ctx.api.update_status(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
