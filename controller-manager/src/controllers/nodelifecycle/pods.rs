//! Pods on a node that stopped reporting are marked not ready (Kubernetes' `MarkPodsNotReady`),
//! so that Services and ReplicaSet availability stop counting them long before they are
//! evicted: their Ready condition turns False, the rest of their status stays.

use rudder_client::Api;
use rudder_client::cache::{CachedObject, INDEX_NODE_NAME, Reader};
use rudder_client::conn::kind_ref;
use rudder_client::events::EventRecorder;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::error::Error;
use crate::util::pods::{is_ready, phase};
use crate::util::str_at;

/// The pod's conditions with Ready turned False at `now`; `None` unless it is Ready.
pub fn not_ready_conditions(pod: &Value, now: &str) -> Option<Vec<Value>> {
    if !is_ready(pod) || matches!(phase(pod), "Succeeded" | "Failed") {
        return None;
    }
    let mut conds = pod.pointer("/status/conditions")?.as_array()?.clone();
    for c in &mut conds {
        if str_at(c, "/type") == "Ready" {
            c["status"] = json!("False");
            c["lastTransitionTime"] = json!(now);
        }
    }
    Some(conds)
}

/// The pod's conditions with a DisruptionTarget condition (status True, `reason`, `message`,
/// since `now`) in place of any it had: what an eviction or a forced deletion says first.
pub fn with_disruption_target(pod: &Value, reason: &str, message: &str, now: &str) -> Vec<Value> {
    let mut conds: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conds.retain(|c| str_at(c, "/type") != "DisruptionTarget");
    conds.push(
        json!({"type": "DisruptionTarget", "status": "True", "reason": reason,
        "message": message, "lastTransitionTime": now}),
    );
    conds
}

/// Marks every Ready pod bound to `node` not ready. Each write is guarded by the pod's
/// resourceVersion (the node agent may be writing too); the first failure is returned after
/// the others were tried, so the caller retries.
pub async fn mark_not_ready(
    api: &dyn Api,
    events: &EventRecorder,
    pods: &Reader,
    node: &str,
    now: &str,
) -> Result<usize, Error> {
    let mut marked = 0;
    let mut first_err = None;
    for pod in pods.by_index(INDEX_NODE_NAME, node) {
        let Some(conds) = not_ready_conditions(&pod.value, now) else {
            continue;
        };
        match api.patch(status_patch(&pod, conds)).await {
            Ok(_) => {
                marked += 1;
                events.warning(&pod.value, "NodeNotReady", "Node is not ready");
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(pod = %pod.key(), error = %e, "marking a pod not ready failed");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(marked),
    }
}

fn status_patch(pod: &CachedObject, conditions: Vec<Value>) -> pb::PatchRequest {
    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version.to_string()},
        "status": {"conditions": conditions},
    });
    pb::PatchRequest {
        kind: Some(kind_ref("v1", "Pod")),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: patch.to_string().into(),
        status: true,
        options: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_running_pods_are_marked() {
        let pod = |phase: &str, ready: &str| {
            json!({"status": {"phase": phase, "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": ready, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})
        };
        let conds =
            not_ready_conditions(&pod("Running", "True"), "2025-01-01T00:05:00Z").expect("marked");
        assert_eq!(conds[0]["status"], "True", "other conditions stay");
        assert_eq!(conds[1]["status"], "False");
        assert_eq!(conds[1]["lastTransitionTime"], "2025-01-01T00:05:00Z");
        assert_eq!(not_ready_conditions(&pod("Running", "False"), "x"), None);
        assert_eq!(not_ready_conditions(&pod("Succeeded", "True"), "x"), None);
    }
}
