//! NodeUnschedulable, with node readiness and pressure: a cordoned node takes only pods that
//! tolerate `node.kubernetes.io/unschedulable:NoSchedule`; a node whose Ready condition is not
//! True, or that reports memory, disk or PID pressure, takes none.
//!
//! Kubernetes checks readiness and pressure through taints that its node lifecycle controller
//! adds; Rudder has no such controller yet, so the conditions are read directly here.

use rudder_api::k8s_openapi::api::core::v1::{Node, Toleration};

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, Status};

pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const NOT_READY: &str = "node(s) were not ready";
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

fn condition<'a>(node: &'a Node, ty: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.as_str())
}

fn tolerates_unschedulable(t: &Toleration) -> bool {
    let key_ok = match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => k == UNSCHEDULABLE_TAINT,
    };
    let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
    key_ok && effect_ok
}

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let n = &node.node;
        if condition(n, "Ready") != Some("True") {
            return Status::unresolvable(NOT_READY);
        }
        for (ty, reason) in [
            ("MemoryPressure", "node(s) had memory pressure"),
            ("DiskPressure", "node(s) had disk pressure"),
            ("PIDPressure", "node(s) had pid pressure"),
        ] {
            if condition(n, ty) == Some("True") {
                return Status::unresolvable(reason);
            }
        }
        let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        let tolerated = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| ts.iter().any(tolerates_unschedulable));
        if cordoned && !tolerated {
            return Status::unresolvable(UNSCHEDULABLE);
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;

    #[test]
    fn ready_uncordoned_node_fits() {
        assert!(
            NodeUnschedulable
                .filter(&pod_cpu("1"), &info(node("a", "1")))
                .is_success()
        );
    }

    #[test]
    fn cordoned_node_fits_only_tolerating_pods() {
        let mut n = node("a", "1");
        n["spec"]["unschedulable"] = json!(true);
        let s = NodeUnschedulable.filter(&pod_cpu("1"), &info(n.clone()));
        assert_eq!(s.reasons, vec![UNSCHEDULABLE.to_string()]);
        let tolerant = pod(json!({"containers": [], "tolerations": [
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ]}));
        assert!(NodeUnschedulable.filter(&tolerant, &info(n)).is_success());
    }

    #[test]
    fn not_ready_or_missing_condition_or_pressure_does_not_fit() {
        let mut n = node("a", "1");
        n["status"]["conditions"][0]["status"] = json!("Unknown");
        let s = NodeUnschedulable.filter(&pod_cpu("1"), &info(n));
        assert_eq!(s.reasons, vec![NOT_READY.to_string()]);
        let mut n = node("a", "1");
        n["status"]["conditions"] = json!([]);
        assert!(
            !NodeUnschedulable
                .filter(&pod_cpu("1"), &info(n))
                .is_success()
        );
        let mut n = node("a", "1");
        n["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(json!({"type": "DiskPressure", "status": "True"}));
        let s = NodeUnschedulable.filter(&pod_cpu("1"), &info(n));
        assert_eq!(s.reasons, vec!["node(s) had disk pressure".to_string()]);
    }
}
