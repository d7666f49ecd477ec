//! NodeResourcesFit: the pod's effective requests must fit in the node's allocatable minus
//! what is placed there (bound pods, running or not, and assumed ones); one more pod must fit
//! the node's pod count. LeastAllocated scores the free share of CPU and memory after placing
//! the pod (Kubernetes' default strategy), MostAllocated the used share (bin packing), both with
//! non-zero request defaults; BalancedAllocation favours nodes whose CPU and memory fractions
//! stay close to each other.

use crate::framework::{FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

pub struct Fit;

impl FilterPlugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > node.allocatable.pods {
            reasons.push("Too many pods".to_string());
        }
        let (r, a, u) = (&pod.requests, &node.allocatable, &node.requested);
        for (name, want, alloc, used) in [
            ("cpu", r.milli_cpu, a.milli_cpu, u.milli_cpu),
            ("memory", r.memory, a.memory, u.memory),
            (
                "ephemeral-storage",
                r.ephemeral_storage,
                a.ephemeral_storage,
                u.ephemeral_storage,
            ),
        ] {
            // As Kubernetes: a resource the pod does not request is not checked.
            if want > 0 && want > alloc - used {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: crate::framework::Code::Unschedulable,
                reasons,
            }
        }
    }
}

/// Free share after placing the pod, 0..=100 per resource, averaged over CPU and memory.
pub struct LeastAllocated;

fn least(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesLeastAllocated"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let want = pod.requests.non_zero();
        let used = &node.non_zero_requested;
        let cpu = least(used.milli_cpu + want.milli_cpu, node.allocatable.milli_cpu);
        let mem = least(used.memory + want.memory, node.allocatable.memory);
        (cpu + mem) / 2
    }
}

/// Used share after placing the pod, averaged over CPU and memory (bin packing).
pub struct MostAllocated;

fn most(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for MostAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesMostAllocated"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let want = pod.requests.non_zero();
        let used = &node.non_zero_requested;
        let cpu = most(used.milli_cpu + want.milli_cpu, node.allocatable.milli_cpu);
        let mem = most(used.memory + want.memory, node.allocatable.memory);
        (cpu + mem) / 2
    }
}

/// Kubernetes' NodeResourcesBalancedAllocation: `(1 - std) * 100` over the CPU and memory
/// fractions requested after placing the pod (actual requests, each fraction capped at 1).
pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let frac = |used: i64, want: i64, cap: i64| {
            if cap <= 0 {
                1.0
            } else {
                ((used + want) as f64 / cap as f64).min(1.0)
            }
        };
        let (u, w, a) = (&node.requested, &pod.requests, &node.allocatable);
        let cpu = frac(u.milli_cpu, w.milli_cpu, a.milli_cpu);
        let mem = frac(u.memory, w.memory, a.memory);
        // The standard deviation of two values is half their distance.
        let std = (cpu - mem).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;

    #[test]
    fn fits_within_allocatable_minus_placed() {
        let mut n = info(node("a", "1"));
        assert!(Fit.filter(&pod_cpu("600m"), &n).is_success());
        let placed = pod_cpu("600m");
        n.add_pod(&placed);
        let s = Fit.filter(&pod_cpu("600m"), &n);
        assert_eq!(s.reasons, vec!["Insufficient cpu".to_string()]);
        assert!(Fit.filter(&pod_cpu("400m"), &n).is_success());
    }

    #[test]
    fn every_short_resource_is_named_and_pod_count_counts() {
        let mut v = node("a", "1");
        v["status"]["allocatable"]["pods"] = json!("1");
        let mut n = info(v);
        n.add_pod(&pod(json!({"containers": []})));
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {
            "cpu": "2", "memory": "5Gi", "ephemeral-storage": "1Gi"}}}]}),
        );
        let s = Fit.filter(&p, &n);
        assert_eq!(
            s.reasons,
            vec!["Too many pods", "Insufficient cpu", "Insufficient memory"]
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let empty = info(node("a", "2"));
        let mut busy = info(node("b", "2"));
        busy.add_pod(&pod_cpu("1"));
        let p = pod_cpu("500m");
        let (se, sb) = (
            LeastAllocated.score(&p, &empty),
            LeastAllocated.score(&p, &busy),
        );
        assert!(se > sb, "{se} vs {sb}");
        // cpu (2000-500)/2000 = 75, memory (4Gi-200Mi)/4Gi = 95 -> 85.
        assert_eq!(se, 85);
    }

    #[test]
    fn most_allocated_prefers_the_fuller_node() {
        let empty = info(node("a", "2"));
        let mut busy = info(node("b", "2"));
        busy.add_pod(&pod_cpu("1"));
        let p = pod_cpu("500m");
        let (se, sb) = (
            MostAllocated.score(&p, &empty),
            MostAllocated.score(&p, &busy),
        );
        assert!(sb > se, "{sb} vs {se}");
        // cpu 1500/2000 = 75, memory 400Mi/4Gi = 9 -> 42.
        assert_eq!(sb, 42);
    }

    #[test]
    fn balanced_allocation_prefers_even_fractions() {
        // Node with 1 cpu and 4Gi; a pod asking half of each is perfectly balanced.
        let n = info(node("a", "1"));
        let even = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {
            "cpu": "500m", "memory": "2Gi"}}}]}),
        );
        assert_eq!(BalancedAllocation.score(&even, &n), 100);
        // cpu 1.0, memory 0 -> std 0.5 -> 50.
        assert_eq!(BalancedAllocation.score(&pod_cpu("1"), &n), 50);
    }
}
