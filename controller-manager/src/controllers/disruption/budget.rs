//! A budget's figures from its pods and their controllers, as Kubernetes' disruption
//! controller computes them (`getExpectedPodCount`, `countHealthyPods`,
//! `buildDisruptedPodMap`, `updatePdbStatus`): pure, over caches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rudder_api::eviction::{is_ready, set_disruption_allowed};
use rudder_client::cache::{CachedObject, Reader};
use serde_json::{Value, json};

use crate::util::intstr::scaled;
use crate::util::{int_at, parse_time, rfc3339};

/// How long an eviction's recorded disruption waits for its pod to be deleted before the
/// budget forgets it (Kubernetes' `DeletionTimeout`).
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// The caches a pod's controller's scale is read from.
pub struct Owners {
    pub replicasets: Reader,
    pub deployments: Reader,
    pub statefulsets: Reader,
    pub rcs: Reader,
}

/// What a budget's status is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    pub expected: i64,
    pub desired: i64,
    pub current: i64,
    /// Pod name → time of its eviction, still waited for.
    pub disrupted: BTreeMap<String, String>,
    /// Pods with no controller, when the count needed their controllers' scale.
    pub unmanaged: Vec<String>,
}

fn replicas(obj: &CachedObject) -> i64 {
    int_at(&obj.value, "/spec/replicas", 1)
}

/// The object `r` names in `cache`, if it has the referenced uid.
fn resolve(cache: &Reader, ns: &str, name: &str, uid: &str) -> Option<Arc<CachedObject>> {
    cache.get(ns, name).filter(|o| o.uid() == uid)
}

/// The uid and scale of a pod's controller: a Deployment through its ReplicaSet, a
/// ReplicaSet, a StatefulSet or a ReplicationController. `Ok(None)`: no controller.
pub fn controller_scale(pod: &CachedObject, o: &Owners) -> Result<Option<(String, i64)>, String> {
    let Some(r) = pod.controller_ref() else {
        return Ok(None);
    };
    let ns = &pod.namespace;
    let found = match r.kind.as_str() {
        "ReplicaSet" => resolve(&o.replicasets, ns, &r.name, &r.uid).and_then(|rs| {
            match rs.controller_ref().filter(|d| d.kind == "Deployment") {
                Some(d) => resolve(&o.deployments, ns, &d.name, &d.uid),
                None => Some(rs),
            }
        }),
        "StatefulSet" => resolve(&o.statefulsets, ns, &r.name, &r.uid),
        "ReplicationController" => resolve(&o.rcs, ns, &r.name, &r.uid),
        _ => None,
    };
    match found {
        Some(c) => Ok(Some((c.uid().to_string(), replicas(&c)))),
        None => Err(format!("found no controllers for pod {:?}", pod.name)),
    }
}

/// `expectedPods` and `desiredHealthy`: an integer minAvailable is itself against the pods
/// found; a percentage, or any maxUnavailable, resolves against the sum of the scales of the
/// pods' controllers (each counted once), rounding up.
pub fn expected_and_desired(
    spec: &Value,
    pods: &[Arc<CachedObject>],
    owners: &Owners,
) -> Result<(i64, i64, Vec<String>), String> {
    let scale = || -> Result<(i64, Vec<String>), String> {
        let mut seen = BTreeSet::new();
        let (mut total, mut unmanaged) = (0, Vec::new());
        for p in pods {
            match controller_scale(p, owners)? {
                None => unmanaged.push(p.name.clone()),
                Some((uid, n)) => {
                    if seen.insert(uid) {
                        total += n;
                    }
                }
            }
        }
        Ok((total, unmanaged))
    };
    if let Some(mu) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        let (expected, unmanaged) = scale()?;
        let max =
            scaled(Some(mu), expected, true, 0).map_err(|e| format!("maxUnavailable: {e}"))?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match spec.get("minAvailable") {
        Some(Value::Number(n)) => {
            let n = n.as_i64().ok_or("minAvailable: must be an integer")?;
            Ok((pods.len() as i64, n, Vec::new()))
        }
        Some(v @ Value::String(_)) => {
            let (expected, unmanaged) = scale()?;
            let min =
                scaled(Some(v), expected, true, 0).map_err(|e| format!("minAvailable: {e}"))?;
            Ok((expected, min, unmanaged))
        }
        _ => Ok((0, 0, Vec::new())),
    }
}

/// The recorded disruptions still waited for, and when the next one expires. A pod gone or
/// being deleted is no longer waited for; one not deleted within [`DELETION_TIMEOUT`] is
/// forgotten (its eviction did not happen).
pub fn disrupted(
    pdb: &Value,
    pods: &[Arc<CachedObject>],
    now: Timestamp,
) -> (BTreeMap<String, String>, Option<Timestamp>) {
    let recorded = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object);
    let (mut kept, mut recheck) = (BTreeMap::new(), None::<Timestamp>);
    for p in pods.iter().filter(|p| !p.is_deleting()) {
        let Some(at) = recorded.and_then(|r| r.get(&p.name)) else {
            continue;
        };
        let Some(t) = parse_time(Some(at)) else {
            continue;
        };
        let Ok(due) = t.checked_add(DELETION_TIMEOUT) else {
            continue;
        };
        if due < now {
            tracing::info!(pod = %p.key(), "evicted pod was not deleted in time; the budget forgets its disruption");
            continue;
        }
        kept.insert(p.name.clone(), rfc3339(t));
        recheck = Some(recheck.map_or(due, |r| r.min(due)));
    }
    (kept, recheck)
}

/// Ready pods not being deleted and not already counted as disrupted.
pub fn healthy(pods: &[Arc<CachedObject>], disrupted: &BTreeMap<String, String>) -> i64 {
    pods.iter()
        .filter(|p| !p.is_deleting() && !disrupted.contains_key(&p.name) && is_ready(&p.value))
        .count() as i64
}

/// The budget's new status from its figures (`disruptionsAllowed` never below 0, and 0 when
/// no pod is expected), with the DisruptionAllowed condition.
pub fn status(pdb: &Value, f: &Figures, now: &str) -> Value {
    let mut allowed = f.current - f.desired;
    if f.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = int_at(pdb, "/metadata/generation", 0);
    let mut status = json!({
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": f.current,
        "desiredHealthy": f.desired,
        "expectedPods": f.expected,
        "conditions": pdb.pointer("/status/conditions").cloned().unwrap_or(json!([])),
    });
    if !f.disrupted.is_empty() {
        status["disruptedPods"] = json!(f.disrupted);
    }
    let (ok, reason) = if allowed > 0 {
        (true, "SufficientPods")
    } else {
        (false, "InsufficientPods")
    };
    set_disruption_allowed(&mut status, ok, reason, "", generation, now);
    status
}

/// The status after a failed sync: nothing allowed, the reason in the condition.
pub fn fail_safe(pdb: &Value, why: &str, now: &str) -> Value {
    let mut status = pdb.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    status["disruptionsAllowed"] = json!(0);
    let observed = int_at(pdb, "/status/observedGeneration", 0);
    set_disruption_allowed(&mut status, false, "SyncFailed", why, observed, now);
    status
}
