//! One pass of the StatefulSet update (Kubernetes' `updateStatefulSet`, `processReplica`,
//! `processCondemned` and the rolling update with maxUnavailable).
//!
//! Pods split into the *replicas*, one slot per ordinal in `[start, start + replicas)` (empty
//! where the pod is missing), and the *condemned* beyond the range, highest ordinal first. In
//! OrderedReady (monotonic) mode the pass stops at the first step it takes or the first pod that
//! is not yet Running, Ready and available; in Parallel mode it goes through everything.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rudder_client::cache::CachedObject;
use serde_json::json;

use super::claims::{create_missing, delete_stale, fix_refs};
use super::history::Revisions;
use super::identity::{
    self, identity_fix, in_range, new_pod, ordinal, pod_name, revision_of, storage_matches,
};
use super::status::pod_event;
use super::{Ctx, Ss};
use crate::error::Error;
use crate::util::intstr::scaled;
use crate::util::merge_patch;
use crate::util::pods::{is_available, is_ready, phase};
use crate::util::revision;

/// The pods as one pass sees them, updated as it deletes and makes pods.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The pod at each ordinal from `start`, as cached; `None` when missing or just (re)made.
    pub replicas: Vec<Option<Arc<CachedObject>>>,
    /// Pods beyond the range, highest ordinal first.
    pub condemned: Vec<Arc<CachedObject>>,
    /// Look again then (a stale claim is going away).
    pub retry_after: Option<Duration>,
}

/// Splits the set's pods into replicas and condemned; pods whose names carry no ordinal are
/// left out.
pub fn partition(ss: &Ss, pods: &[Arc<CachedObject>]) -> Outcome {
    let mut out = Outcome {
        replicas: vec![None; ss.replicas.max(0) as usize],
        ..Default::default()
    };
    for p in pods {
        let Some(ord) = ordinal(p) else { continue };
        if in_range(ss, ord) {
            out.replicas[(ord - ss.start) as usize] = Some(Arc::clone(p));
        } else {
            out.condemned.push(Arc::clone(p));
        }
    }
    identity::sort_descending(&mut out.condemned);
    out
}

pub fn is_created(p: &CachedObject) -> bool {
    !phase(&p.value).is_empty()
}

pub fn running_ready(p: &CachedObject) -> bool {
    phase(&p.value) == "Running" && is_ready(&p.value)
}

pub fn running_available(p: &CachedObject, min_ready: i64, now: Timestamp) -> bool {
    running_ready(p) && is_available(&p.value, min_ready, now)
}

/// Running, Ready, available and not being deleted: what lets an ordered set move on and a
/// rolling update count a pod as serving.
fn healthy(p: Option<&Arc<CachedObject>>, min_ready: i64, now: Timestamp) -> bool {
    p.is_some_and(|p| running_available(p, min_ready, now) && !p.is_deleting())
}

fn finished(p: &CachedObject) -> bool {
    matches!(phase(&p.value), "Failed" | "Succeeded")
}

/// Runs one pass. Creations are recorded as expectations up front (the pass may make every
/// missing pod), and the ones not made are taken back at the end.
pub async fn run(
    ctx: &Ctx,
    key: &str,
    ss: &Ss,
    revs: &Revisions,
    out: &mut Outcome,
) -> Result<(), Error> {
    let planned = out
        .replicas
        .iter()
        .filter(|p| p.as_ref().is_none_or(|p| finished(p)))
        .count();
    if planned > 0 {
        ctx.exp.expect_creations(key, planned);
    }
    let mut created = 0;
    let r = steps(ctx, key, ss, revs, out, &mut created).await;
    for _ in created..planned {
        ctx.exp.creation_observed(key);
    }
    r
}

async fn steps(
    ctx: &Ctx,
    key: &str,
    ss: &Ss,
    revs: &Revisions,
    out: &mut Outcome,
    created: &mut usize,
) -> Result<(), Error> {
    let now = ctx.clock.now();
    let monotonic = ss.ordered;
    // The first unhealthy pod, in ordinal order, may be deleted even in ordered mode: it is
    // what blocks progress.
    let first_unhealthy: Option<String> = out
        .replicas
        .iter()
        .enumerate()
        .find(|(_, p)| !healthy(p.as_ref(), ss.min_ready, now))
        .map(|(i, _)| pod_name(&ss.obj.name, ss.start + i as i64))
        .or_else(|| {
            out.condemned
                .iter()
                .rev()
                .find(|p| !healthy(Some(p), ss.min_ready, now))
                .map(|p| p.name.clone())
        });
    for i in 0..out.replicas.len() {
        let stop = replica(ctx, key, ss, revs, out, i, created, now).await?;
        if stop && monotonic {
            return Ok(());
        }
    }
    for c in out.condemned.clone() {
        fix_refs(ctx, ss, &c).await?;
    }
    for c in out.condemned.clone() {
        if c.is_deleting() {
            if monotonic {
                return Ok(());
            }
            continue;
        }
        let first = first_unhealthy.as_deref() == Some(c.name.as_str());
        if monotonic && !running_available(&c, ss.min_ready, now) && !first {
            return Ok(());
        }
        delete_pod(ctx, key, ss, &c).await?;
        if monotonic {
            return Ok(());
        }
    }
    let Some((partition, max_unavailable)) = &ss.rolling else {
        // OnDelete: pods are replaced when someone deletes them.
        return Ok(());
    };
    let max = scaled(max_unavailable.as_ref(), ss.replicas, false, 1)
        .map_err(|e| {
            Error::Invalid(format!(
                "spec.updateStrategy.rollingUpdate.maxUnavailable: {e}"
            ))
        })?
        .max(1);
    let unavailable = out
        .replicas
        .iter()
        .filter(|p| !healthy(p.as_ref(), ss.min_ready, now))
        .count() as i64;
    if unavailable >= max {
        return Ok(());
    }
    let mut budget = max - unavailable;
    let low = (*partition).max(0) as usize;
    for target in (low..out.replicas.len()).rev() {
        if budget == 0 {
            break;
        }
        let Some(p) = out.replicas[target].clone() else {
            continue;
        };
        if revision_of(&p) != revs.update.name && !p.is_deleting() {
            delete_pod(ctx, key, ss, &p).await?;
            out.replicas[target] = None;
            budget -= 1;
        }
    }
    Ok(())
}

/// `processReplica` for slot `i`; whether an ordered pass must stop here.
#[allow(clippy::too_many_arguments)]
async fn replica(
    ctx: &Ctx,
    key: &str,
    ss: &Ss,
    revs: &Revisions,
    out: &mut Outcome,
    i: usize,
    created: &mut usize,
    now: Timestamp,
) -> Result<bool, Error> {
    let ord = ss.start + i as i64;
    let name = pod_name(&ss.obj.name, ord);
    if let Some(p) = out.replicas[i].clone()
        && finished(&p)
    {
        let msg = |what| {
            format!(
                "StatefulSet {} is recreating {what} Pod {name}",
                ss.obj.key()
            )
        };
        if phase(&p.value) == "Failed" {
            let m = msg("failed");
            ctx.events.warning(&ss.obj.value, "RecreatingFailedPod", &m);
        } else {
            let m = msg("terminated");
            ctx.events
                .normal(&ss.obj.value, "RecreatingTerminatedPod", &m);
        }
        delete_pod(ctx, key, ss, &p).await?;
        out.replicas[i] = None;
    }
    let Some(pod) = out.replicas[i].clone() else {
        if delete_stale(ctx, ss, ord).await? {
            // The old pod's claim must go before a new pod may have a fresh one.
            out.retry_after = Some(Duration::from_secs(1));
            return Ok(true);
        }
        create_missing(ctx, ss, ord, &name).await?;
        let below_partition = ss
            .rolling
            .as_ref()
            .is_some_and(|(partition, _)| ord < ss.start + partition);
        let rev = if below_partition {
            &revs.current
        } else {
            &revs.update
        };
        let body = new_pod(ss, &revision::template_of(rev), &rev.name, ord);
        create_pod(ctx, ss, &name, body).await?;
        *created += 1;
        return Ok(true);
    };
    if phase(&pod.value) == "Pending" {
        create_missing(ctx, ss, ord, &name).await?;
    }
    if ss.ordered && (pod.is_deleting() || !running_available(&pod, ss.min_ready, now)) {
        return Ok(true);
    }
    if pod.is_deleting() {
        return Ok(false);
    }
    let fix = identity_fix(&pod);
    if !fix.is_empty() {
        let patch = json!({"metadata": {
            "resourceVersion": pod.resource_version.to_string(),
            "labels": fix,
        }});
        let r = ctx.api.patch(merge_patch(&pod, &patch)).await;
        pod_event(ctx, ss, "update", &name, r.as_ref().err());
        r?;
    }
    if !storage_matches(ss, &pod) {
        // A running pod's volumes cannot change; at least its claims exist.
        create_missing(ctx, ss, ord, &name).await?;
    }
    fix_refs(ctx, ss, &pod).await?;
    Ok(false)
}

async fn create_pod(ctx: &Ctx, ss: &Ss, name: &str, body: serde_json::Value) -> Result<(), Error> {
    let req = rudder_client::proto::CreateRequest {
        kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
        namespace: ss.obj.namespace.clone(),
        json: bytes::Bytes::from(body.to_string()),
        options: None,
    };
    let r = ctx.api.create(req).await;
    pod_event(ctx, ss, "create", name, r.as_ref().err());
    r?;
    Ok(())
}

async fn delete_pod(ctx: &Ctx, key: &str, ss: &Ss, pod: &CachedObject) -> Result<(), Error> {
    ctx.exp.expect_deletions(key, [pod.uid().to_string()]);
    let req = rudder_client::proto::DeleteRequest {
        kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        precondition_uid: pod.uid().to_string(),
        ..Default::default()
    };
    match ctx.api.delete(req).await {
        Ok(_) => {
            pod_event(ctx, ss, "delete", &pod.name, None);
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => {
            ctx.exp.deletion_observed(key, pod.uid());
            pod_event(ctx, ss, "delete", &pod.name, Some(&e));
            Err(e.into())
        }
    }
}
