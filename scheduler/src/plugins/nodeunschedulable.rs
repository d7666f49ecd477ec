//! NodeUnschedulable, with node readiness and pressure: a cordoned node takes only pods that
//! tolerate `node.kubernetes.io/unschedulable:NoSchedule`; a node whose Ready condition is not
//! True, or that reports memory, disk or PID pressure, takes only pods that tolerate the taint
//! Kubernetes would put there for it (`node.kubernetes.io/not-ready`, `unreachable` when the
//! condition is Unknown or missing, `memory-pressure`, `disk-pressure`, `pid-pressure`, all
//! NoSchedule), such as DaemonSet pods with their automatic tolerations.
//!
//! The node lifecycle controller adds those taints from the conditions (TaintNodesByCondition);
//! the conditions are read here as well, so a node is judged the same in the moment between a
//! condition change and its taint.

use rudder_api::k8s_openapi::api::core::v1::{Node, Taint, Toleration};

use super::tainttoleration::tolerates;

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

/// Whether the pod tolerates the NoSchedule taint `key` a node condition stands for.
fn tolerates_condition(pod: &PodInfo, key: &str) -> bool {
    let taint = Taint {
        key: key.to_string(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| tolerates(t, &taint)))
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
        let not_ready = match condition(n, "Ready") {
            Some("True") => None,
            Some("False") => Some("node.kubernetes.io/not-ready"),
            _ => Some("node.kubernetes.io/unreachable"),
        };
        if let Some(key) = not_ready
            && !tolerates_condition(pod, key)
        {
            return Status::unresolvable(NOT_READY);
        }
        for (ty, key, reason) in [
            (
                "MemoryPressure",
                "node.kubernetes.io/memory-pressure",
                "node(s) had memory pressure",
            ),
            (
                "DiskPressure",
                "node.kubernetes.io/disk-pressure",
                "node(s) had disk pressure",
            ),
            (
                "PIDPressure",
                "node.kubernetes.io/pid-pressure",
                "node(s) had pid pressure",
            ),
        ] {
            if condition(n, ty) == Some("True") && !tolerates_condition(pod, key) {
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

    #[test]
    fn a_pod_tolerating_the_condition_taints_fits_a_not_ready_or_pressured_node() {
        // A DaemonSet pod's automatic tolerations (Exists, no effect for not-ready and
        // unreachable; NoSchedule for the pressures).
        let daemon = pod(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
            {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
        ]}));
        let mut not_ready = node("a", "1");
        not_ready["status"]["conditions"][0]["status"] = json!("False");
        // NoExecute does not tolerate the NoSchedule condition taint, as in Kubernetes.
        assert!(
            !NodeUnschedulable
                .filter(&daemon, &info(not_ready.clone()))
                .is_success()
        );
        let mut unknown = node("a", "1");
        unknown["status"]["conditions"][0]["status"] = json!("Unknown");
        assert!(
            NodeUnschedulable
                .filter(&daemon, &info(unknown))
                .is_success()
        );
        let tolerant = pod(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}
        ]}));
        assert!(
            NodeUnschedulable
                .filter(&tolerant, &info(not_ready))
                .is_success()
        );
        let mut pressured = node("a", "1");
        pressured["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(json!({"type": "DiskPressure", "status": "True"}));
        assert!(
            NodeUnschedulable
                .filter(&daemon, &info(pressured.clone()))
                .is_success()
        );
        assert!(
            !NodeUnschedulable
                .filter(&pod_cpu("1"), &info(pressured))
                .is_success()
        );
    }
}
