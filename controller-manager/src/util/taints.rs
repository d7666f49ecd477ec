//! Taints and tolerations as Kubernetes matches them (`ToleratesTaint`,
//! `GetMatchingTolerations`), over the objects' JSON, and the well-known taint keys the node
//! controllers set.

use serde_json::{Value, json};

use super::str_at;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// Kubernetes' `ToleratesTaint`: effect (empty tolerates every effect), key (empty with
/// `Exists` tolerates every key), then operator: `Exists`, or `Equal`/empty comparing values.
pub fn tolerates(t: &Value, taint: &Value) -> bool {
    let effect = str_at(t, "/effect");
    if !effect.is_empty() && effect != str_at(taint, "/effect") {
        return false;
    }
    let key = str_at(t, "/key");
    if !key.is_empty() && key != str_at(taint, "/key") {
        return false;
    }
    match str_at(t, "/operator") {
        "Exists" => true,
        "" | "Equal" => str_at(t, "/value") == str_at(taint, "/value"),
        _ => false,
    }
}

/// A node's `spec.taints` (empty when none).
pub fn taints(node: &Value) -> &[Value] {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A pod's `spec.tolerations` (empty when none).
pub fn tolerations(pod: &Value) -> &[Value] {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether the two taints are the same taint (key and effect, as `MatchTaint`; value and
/// timeAdded do not count).
pub fn same_taint(a: &Value, b: &Value) -> bool {
    str_at(a, "/key") == str_at(b, "/key") && str_at(a, "/effect") == str_at(b, "/effect")
}

/// Whether `taints` has the taint `key` with `effect`.
pub fn has_taint(taints: &[Value], key: &str, effect: &str) -> bool {
    taints
        .iter()
        .any(|t| str_at(t, "/key") == key && str_at(t, "/effect") == effect)
}

/// A taint as the node controllers add it: stamped with the time it was added.
pub fn taint(key: &str, effect: &str, time_added: &str) -> Value {
    json!({"key": key, "effect": effect, "timeAdded": time_added})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_match_as_kubernetes() {
        let taint = json!({"key": NOT_READY, "effect": NO_EXECUTE});
        let yes = [
            json!({"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE}),
            json!({"key": NOT_READY, "operator": "Exists"}),
            json!({"operator": "Exists"}),
            json!({"key": NOT_READY, "operator": "Equal", "value": ""}),
        ];
        let no = [
            json!({"key": UNREACHABLE, "operator": "Exists"}),
            json!({"key": NOT_READY, "operator": "Exists", "effect": NO_SCHEDULE}),
            json!({"key": NOT_READY, "value": "x"}),
            json!({"key": NOT_READY, "operator": "Gt"}),
        ];
        for t in &yes {
            assert!(tolerates(t, &taint), "{t}");
        }
        for t in &no {
            assert!(!tolerates(t, &taint), "{t}");
        }
    }

    #[test]
    fn taints_compare_by_key_and_effect() {
        let a = taint(NOT_READY, NO_EXECUTE, "2025-01-01T00:00:00Z");
        let b = json!({"key": NOT_READY, "effect": NO_EXECUTE});
        assert!(same_taint(&a, &b));
        assert!(!same_taint(
            &a,
            &json!({"key": NOT_READY, "effect": NO_SCHEDULE})
        ));
        let node = json!({"spec": {"taints": [a]}});
        assert!(has_taint(taints(&node), NOT_READY, NO_EXECUTE));
        assert!(!has_taint(taints(&node), UNREACHABLE, NO_EXECUTE));
        assert!(taints(&json!({})).is_empty());
    }
}
