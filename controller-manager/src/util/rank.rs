//! Which pods a controller deletes first when it has too many, as Kubernetes'
//! `ActivePodsWithRanks`: the cheapest to lose first.
//!
//! Order (earlier = deleted first): unscheduled before scheduled; Pending before Unknown before
//! Running; not ready before ready; more siblings on the same node before fewer (spreads what
//! remains); ready for a shorter time before longer; more restarts before fewer; newer before
//! older.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use rudder_client::cache::CachedObject;
use serde_json::Value;

use super::pods::{is_ready, phase, ready_since, restarts};
use super::str_at;

fn phase_rank(pod: &Value) -> u8 {
    match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// Sorts `pods` so that the ones to delete first come first. `related` are the pods counted as
/// siblings per node (usually the same list).
pub fn sort_for_deletion(pods: &mut [Arc<CachedObject>], related: &[Arc<CachedObject>]) {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        let n = str_at(&p.value, "/spec/nodeName");
        if !n.is_empty() {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let siblings = |p: &CachedObject| {
        per_node
            .get(str_at(&p.value, "/spec/nodeName"))
            .copied()
            .unwrap_or(0)
    };
    pods.sort_by(|a, b| compare(a, b, siblings(a), siblings(b)));
}

fn compare(a: &CachedObject, b: &CachedObject, sib_a: usize, sib_b: usize) -> Ordering {
    let (va, vb) = (&a.value, &b.value);
    let assigned = |v: &Value| !str_at(v, "/spec/nodeName").is_empty();
    assigned(va)
        .cmp(&assigned(vb))
        .then_with(|| phase_rank(va).cmp(&phase_rank(vb)))
        .then_with(|| is_ready(va).cmp(&is_ready(vb)))
        .then_with(|| sib_b.cmp(&sib_a))
        // Ready more recently (a later timestamp) first.
        .then_with(|| match (ready_since(va), ready_since(vb)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(vb).cmp(&restarts(va)))
        .then_with(|| {
            str_at(vb, "/metadata/creationTimestamp").cmp(str_at(va, "/metadata/creationTimestamp"))
        })
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: &str) -> Arc<CachedObject> {
        let v = json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": created}]},
        });
        Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
    }

    #[test]
    fn cheapest_first() {
        let mut pods = vec![
            pod(
                "running-ready-old",
                "n1",
                "Running",
                true,
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "running-ready-new",
                "n2",
                "Running",
                true,
                "2026-01-01T00:05:00Z",
            ),
            pod("unscheduled", "", "Pending", false, "2026-01-01T00:00:00Z"),
            pod("pending", "n1", "Pending", false, "2026-01-01T00:00:00Z"),
            pod(
                "running-notready",
                "n2",
                "Running",
                false,
                "2026-01-01T00:00:00Z",
            ),
        ];
        let related = pods.clone();
        sort_for_deletion(&mut pods, &related);
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-notready",
                "running-ready-new",
                "running-ready-old"
            ]
        );
    }

    #[test]
    fn crowded_nodes_lose_pods_first() {
        let t = "2026-01-01T00:00:00Z";
        let mut pods = vec![
            pod("alone", "n1", "Running", true, t),
            pod("crowded-a", "n2", "Running", true, t),
            pod("crowded-b", "n2", "Running", true, t),
        ];
        let related = pods.clone();
        sort_for_deletion(&mut pods, &related);
        assert_eq!(pods[2].name, "alone");
    }
}
