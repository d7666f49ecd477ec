//! The eviction subresource's decision and the PodDisruptionBudget status arithmetic both sides
//! of it share, as Kubernetes' `pkg/registry/core/pod/storage/eviction.go` and
//! `pkg/apis/policy/v1` helpers: kept pure here so that the API server, the client's fake and
//! the disruption controller cannot disagree.
//!
//! An eviction of a pod (a policy/v1 `Eviction`: name, namespace, `deleteOptions`):
//! - a pod that is terminal, Pending or already being deleted is simply deleted: no budget
//!   guards it ([`ignores_budgets`]);
//! - the budgets of its namespace whose selector picks the pod guard it (policy/v1: a nil
//!   selector picks nothing, an empty one every pod); none → delete; more than one → refused
//!   (InternalError, as Kubernetes: the eviction subresource does not support it);
//! - with one: a pod that is not Ready is deleted without touching the budget when the budget
//!   says `unhealthyPodEvictionPolicy: AlwaysAllow`, or (IfHealthyBudget, the default) when
//!   `currentHealthy >= desiredHealthy > 0`; the deletion then carries the pod's
//!   resourceVersion, so a pod that turned Ready meanwhile is not taken as unhealthy;
//! - otherwise a budget not yet processed at its generation (`observedGeneration <
//!   generation`) or with no `disruptionsAllowed` left refuses with TooManyRequests (429),
//!   naming the budget and its figures; one whose `disruptedPods` holds
//!   [`MAX_DISRUPTED_PODS`] is Forbidden; else the budget's status gets `disruptionsAllowed - 1`
//!   and the pod in `disruptedPods` (the caller writes it with the budget's resourceVersion as
//!   precondition, then deletes the pod).

use serde_json::{Value, json};

use crate::meta;
use crate::selector::LabelSelector;

/// Disruptions recorded but not yet seen by the controller beyond which evictions stop
/// (Kubernetes' `MaxDisruptedPodSize`).
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// The condition the disruption controller and evictions keep on a budget.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// The policy/v1 Eviction body, as far as it matters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvictionOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: String,
    pub precondition_resource_version: u64,
    pub dry_run: bool,
    pub propagation_policy: String,
}

/// Reads an Eviction body for pod `name`; an empty body means default options. A body naming
/// another pod or namespace is refused, as Kubernetes refuses it.
pub fn parse_eviction(json: &[u8], name: &str, namespace: &str) -> Result<EvictionOptions, String> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(EvictionOptions::default());
    }
    let v: Value =
        serde_json::from_slice(json).map_err(|e| format!("the Eviction is not JSON: {e}"))?;
    match v.get("kind").and_then(Value::as_str) {
        None | Some("Eviction") => {}
        Some(k) => return Err(format!("expected an Eviction, got kind {k:?}")),
    }
    let body_name = meta::name(&v);
    if !body_name.is_empty() && body_name != name {
        return Err("name in URL does not match name in Eviction object".into());
    }
    let body_ns = meta::namespace(&v);
    if !body_ns.is_empty() && body_ns != namespace {
        return Err(
            "metadata.namespace: Invalid value: the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        );
    }
    let Some(o) = v.get("deleteOptions").filter(|o| !o.is_null()) else {
        return Ok(EvictionOptions::default());
    };
    let grace = match o.get("gracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(g) => Some(g.as_i64().ok_or_else(|| {
            format!("deleteOptions.gracePeriodSeconds: Invalid value: {g}: must be an integer")
        })?),
    };
    let dry_run = match o.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) if a.is_empty() => false,
        Some(Value::Array(a)) if a.len() == 1 && a[0] == "All" => true,
        Some(d) => {
            return Err(format!(
                "deleteOptions.dryRun: Unsupported value: {d}: supported values: \"All\""
            ));
        }
    };
    let rv = match o.pointer("/preconditions/resourceVersion") {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => s.parse().map_err(|_| {
            format!("deleteOptions.preconditions.resourceVersion: Invalid value: {s:?}")
        })?,
        Some(other) => {
            return Err(format!(
                "deleteOptions.preconditions.resourceVersion: Invalid value: {other}: must be a string"
            ));
        }
    };
    let text = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(EvictionOptions {
        grace_period_seconds: grace,
        precondition_uid: text("/preconditions/uid"),
        precondition_resource_version: rv,
        dry_run,
        propagation_policy: text("/propagationPolicy"),
    })
}

/// Whether a pod's eviction ignores budgets: it is finished, not yet running, or already going.
pub fn ignores_budgets(pod: &Value) -> bool {
    meta::is_deleting(pod)
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed" | "Pending")
        )
}

/// Whether the pod's `Ready` condition is `True` (Kubernetes' `IsPodReady`, what a budget
/// counts as healthy).
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A budget's `spec.selector`, policy/v1's way: `None` (absent) selects nothing; an empty one
/// every pod of the namespace. An unreadable selector is an error naming it.
pub fn budget_selector(pdb: &Value) -> Result<Option<LabelSelector>, String> {
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(sel.clone()).map_err(|e| format!("spec.selector: {e}"))?;
    LabelSelector::from_object(&typed)
        .map(Some)
        .map_err(|e| format!("spec.selector: {e}"))
}

/// Whether budget `pdb` picks `pod` (same namespace assumed). An unreadable selector picks
/// nothing, as Kubernetes skips such a budget.
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    let labels = meta::labels(pod);
    matches!(budget_selector(pdb), Ok(Some(s)) if s.matches(&labels))
}

/// What an eviction does once allowed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Delete the pod, no budget involved; `guard`: with the pod's resourceVersion as
    /// precondition (an unhealthy pod, which must still be the one judged).
    Delete { guard: bool },
    /// Write this budget (its new status) with its resourceVersion as precondition, then
    /// delete the pod.
    Decrement { budget: String, updated: Value },
}

/// Why an eviction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 429: the budget does not allow it now; try again later.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Forbidden(String),
    /// 500: a state the eviction subresource does not handle (two budgets).
    #[error("{0}")]
    Internal(String),
}

const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// Decides the eviction of `pod` among the budgets of its namespace, `now` being the RFC 3339
/// time recorded in `disruptedPods`.
pub fn decide(pod: &Value, budgets: &[Value], now: &str) -> Result<Verdict, Refusal> {
    if ignores_budgets(pod) {
        return Ok(Verdict::Delete { guard: false });
    }
    let mut guarding = budgets.iter().filter(|b| selects(b, pod));
    let Some(pdb) = guarding.next() else {
        return Ok(Verdict::Delete { guard: false });
    };
    if guarding.next().is_some() {
        return Err(Refusal::Internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
        ));
    }
    let name = meta::name(pdb);
    let (current, desired) = (
        int(pdb, "/status/currentHealthy"),
        int(pdb, "/status/desiredHealthy"),
    );
    if !is_ready(pod) {
        let always = pdb.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow"));
        // An unhealthy pod counts in neither figure: taking it costs the budget nothing.
        if always || (current >= desired && desired > 0) {
            return Ok(Verdict::Delete { guard: true });
        }
    }
    if int(pdb, "/status/observedGeneration") < int(pdb, "/metadata/generation") {
        return Err(Refusal::TooManyRequests(format!(
            "{VIOLATES} The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = int(pdb, "/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(Refusal::Forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
        )));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(Refusal::Forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
        )));
    }
    if allowed == 0 {
        return Err(Refusal::TooManyRequests(format!(
            "{VIOLATES} The disruption budget {name} needs {desired} healthy pods and has {current} currently"
        )));
    }
    let mut updated = pdb.clone();
    let Some(root) = updated.as_object_mut() else {
        return Err(Refusal::Internal(format!("budget {name} is not an object")));
    };
    let status = root.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    status["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        let generation = int(pdb, "/status/observedGeneration");
        set_disruption_allowed(status, false, "InsufficientPods", "", generation, now);
    }
    let pods = status
        .as_object_mut()
        .map(|s| s.entry("disruptedPods").or_insert_with(|| json!({})));
    if let Some(pods) = pods {
        if !pods.is_object() {
            *pods = json!({});
        }
        pods[meta::name(pod)] = json!(now);
    }
    Ok(Verdict::Decrement {
        budget: name.to_string(),
        updated,
    })
}

/// Sets the `DisruptionAllowed` condition in a budget's `status` (as `meta.SetStatusCondition`:
/// the transition time changes only with the status).
pub fn set_disruption_allowed(
    status: &mut Value,
    allowed: bool,
    reason: &str,
    message: &str,
    observed_generation: i64,
    now: &str,
) {
    let flag = if allowed { "True" } else { "False" };
    let mut conds = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = conds
        .iter()
        .find(|c| c["type"] == DISRUPTION_ALLOWED && c["status"] == flag)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    conds.retain(|c| c["type"] != DISRUPTION_ALLOWED);
    conds.push(json!({
        "type": DISRUPTION_ALLOWED,
        "status": flag,
        "reason": reason,
        "message": message,
        "observedGeneration": observed_generation,
        "lastTransitionTime": since,
    }));
    status["conditions"] = Value::Array(conds);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn pdb(allowed: i64, current: i64, desired: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": desired},
            "status": {"observedGeneration": 1, "disruptionsAllowed": allowed,
                "currentHealthy": current, "desiredHealthy": desired, "expectedPods": current}})
    }

    #[test]
    fn a_budget_with_room_is_decremented_and_records_the_pod() {
        let Ok(Verdict::Decrement { budget, updated }) = decide(&pod(true), &[pdb(1, 3, 2)], NOW)
        else {
            panic!("allowed")
        };
        assert_eq!(budget, "b");
        assert_eq!(updated["status"]["disruptionsAllowed"], 0);
        assert_eq!(updated["status"]["disruptedPods"]["p"], NOW);
        let c = &updated["status"]["conditions"][0];
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("False"), &json!("InsufficientPods"))
        );
    }

    #[test]
    fn refusals_name_the_budget_and_its_figures() {
        let e = decide(&pod(true), &[pdb(0, 2, 2)], NOW).unwrap_err();
        assert_eq!(
            e,
            Refusal::TooManyRequests(format!(
                "{VIOLATES} The disruption budget b needs 2 healthy pods and has 2 currently"
            ))
        );
        let mut stale = pdb(1, 3, 2);
        stale["metadata"]["generation"] = json!(2);
        assert!(matches!(
            decide(&pod(true), &[stale], NOW),
            Err(Refusal::TooManyRequests(m)) if m.contains("still being processed")
        ));
        let two = [pdb(1, 3, 2), pdb(1, 3, 2)];
        assert!(matches!(
            decide(&pod(true), &two, NOW),
            Err(Refusal::Internal(_))
        ));
    }

    #[test]
    fn unhealthy_pods_by_policy() {
        // IfHealthyBudget: a healthy budget lets an unready pod go without a decrement.
        assert_eq!(
            decide(&pod(false), &[pdb(0, 2, 2)], NOW),
            Ok(Verdict::Delete { guard: true })
        );
        // An unhealthy budget guards it like any other.
        assert!(decide(&pod(false), &[pdb(0, 1, 2)], NOW).is_err());
        let mut always = pdb(0, 1, 2);
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert_eq!(
            decide(&pod(false), &[always.clone()], NOW),
            Ok(Verdict::Delete { guard: true })
        );
        // AlwaysAllow is about unhealthy pods only.
        assert!(decide(&pod(true), &[always], NOW).is_err());
    }

    #[test]
    fn budgets_are_ignored_for_pods_that_are_going_or_not_running() {
        let mut p = pod(true);
        p["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            decide(&p, &[pdb(0, 0, 2)], NOW),
            Ok(Verdict::Delete { guard: false })
        );
        let mut d = pod(true);
        d["metadata"]["deletionTimestamp"] = json!(NOW);
        assert!(decide(&d, &[pdb(0, 0, 2)], NOW).is_ok());
        let mut other = pdb(0, 0, 2);
        other["spec"]["selector"] = json!({"matchLabels": {"app": "db"}});
        assert!(decide(&pod(true), &[other.clone()], NOW).is_ok());
        other["spec"].as_object_mut().unwrap().remove("selector");
        assert!(
            decide(&pod(true), &[other.clone()], NOW).is_ok(),
            "nil selects nothing"
        );
        other["spec"]["selector"] = json!({});
        assert!(
            decide(&pod(true), &[other], NOW).is_err(),
            "empty selects all"
        );
    }

    #[test]
    fn eviction_bodies() {
        let b = br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p","namespace":"ns"},
            "deleteOptions":{"gracePeriodSeconds":5,"dryRun":["All"],"preconditions":{"uid":"u","resourceVersion":"7"}}}"#;
        let o = parse_eviction(b, "p", "ns").unwrap();
        assert_eq!(o.grace_period_seconds, Some(5));
        assert!(o.dry_run);
        assert_eq!(
            (o.precondition_uid.as_str(), o.precondition_resource_version),
            ("u", 7)
        );
        assert_eq!(
            parse_eviction(b"", "p", "ns"),
            Ok(EvictionOptions::default())
        );
        assert!(
            parse_eviction(b, "q", "ns")
                .unwrap_err()
                .contains("does not match")
        );
        assert!(parse_eviction(b, "p", "other").is_err());
    }
}
