//! What the controller writes on a node that stopped reporting, and the taints it derives
//! from the conditions (Kubernetes' `tryUpdateNodeHealth` and `TaintNodesByCondition`), as
//! pure functions over the Node's JSON.

use serde_json::{Value, json};

use crate::util::str_at;
use crate::util::taints::{
    DISK_PRESSURE, MEMORY_PRESSURE, NETWORK_UNAVAILABLE, NO_EXECUTE, NO_SCHEDULE, NOT_READY,
    PID_PRESSURE, UNREACHABLE, UNSCHEDULABLE, has_taint, same_taint, taint, taints,
};

/// The conditions the node agent owns and the controller turns Unknown when it goes silent
/// (NetworkUnavailable is the network's, not the agent's, and is left alone).
pub const OWNED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

pub const STOPPED_REASON: &str = "NodeStatusUnknown";
pub const STOPPED_MESSAGE: &str = "Kubelet stopped posting node status.";
pub const NEVER_REASON: &str = "NodeStatusNeverUpdated";
pub const NEVER_MESSAGE: &str = "Kubelet never posted node status.";

/// The node's conditions with every owned one Unknown; `None` when they already are. A
/// condition the node never posted is added (reason NodeStatusNeverUpdated, heartbeat the
/// node's creation); one it posted keeps its heartbeat and gets reason NodeStatusUnknown;
/// `now` is the transition time of each change.
pub fn unknown_conditions(node: &Value, now: &str) -> Option<Vec<Value>> {
    let mut conds: Vec<Value> = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let created = str_at(node, "/metadata/creationTimestamp").to_string();
    let mut changed = false;
    for ty in OWNED {
        match conds.iter_mut().find(|c| str_at(c, "/type") == ty) {
            None => {
                conds.push(json!({
                    "type": ty, "status": "Unknown", "reason": NEVER_REASON,
                    "message": NEVER_MESSAGE, "lastHeartbeatTime": created,
                    "lastTransitionTime": now,
                }));
                changed = true;
            }
            Some(c) if str_at(c, "/status") != "Unknown" => {
                c["status"] = json!("Unknown");
                c["reason"] = json!(STOPPED_REASON);
                c["message"] = json!(STOPPED_MESSAGE);
                c["lastTransitionTime"] = json!(now);
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conds)
}

fn condition_status<'a>(node: &'a Value, ty: &str) -> Option<&'a str> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| str_at(c, "/type") == ty)
        .map(|c| str_at(c, "/status"))
}

/// NoSchedule taint keys that stand for a condition (or cordoning), as
/// `nodeConditionToTaintKeyStatusMap`.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", MEMORY_PRESSURE),
    ("DiskPressure", "True", DISK_PRESSURE),
    ("PIDPressure", "True", PID_PRESSURE),
    ("NetworkUnavailable", "True", NETWORK_UNAVAILABLE),
];

fn managed_no_schedule(key: &str) -> bool {
    key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == key)
}

/// The NoExecute taint that matches a Ready status, and its opposite.
pub fn no_execute_for(ready: &str) -> Option<(&'static str, &'static str)> {
    match ready {
        "False" => Some((NOT_READY, UNREACHABLE)),
        "Unknown" => Some((UNREACHABLE, NOT_READY)),
        _ => None,
    }
}

/// The node's taints as the per-node pass wants them; `None` when they are right already:
/// - NoSchedule taints follow the conditions and `spec.unschedulable` exactly (added with
///   `now` as timeAdded, removed when their condition clears);
/// - a Ready node loses the not-ready and unreachable NoExecute taints;
/// - a NoExecute taint of the wrong kind (unreachable on a node that reports NotReady, or
///   the reverse) is swapped at once, keeping the eviction clock running. Adding the first
///   NoExecute taint is rate limited per zone and is not done here.
///
/// Taints anyone else set are kept, in their order.
pub fn desired_taints(node: &Value, now: &str) -> Option<Vec<Value>> {
    let current = taints(node);
    let mut want: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(ty, st, _)| condition_status(node, ty) == Some(*st))
        .map(|(_, _, k)| *k)
        .collect();
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        want.push(UNSCHEDULABLE);
    }
    let ready = condition_status(node, "Ready").unwrap_or("");
    let mut out: Vec<Value> = Vec::with_capacity(current.len() + 2);
    for t in current {
        let (key, effect) = (str_at(t, "/key"), str_at(t, "/effect"));
        let drop_no_schedule =
            effect == NO_SCHEDULE && managed_no_schedule(key) && !want.contains(&key);
        let drop_no_execute = effect == NO_EXECUTE
            && (key == NOT_READY || key == UNREACHABLE)
            && match no_execute_for(ready) {
                None => true,
                Some((_, opposite)) => key == opposite,
            };
        if !drop_no_schedule && !drop_no_execute && !out.iter().any(|o| same_taint(o, t)) {
            out.push(t.clone());
        }
    }
    for key in want {
        if !has_taint(&out, key, NO_SCHEDULE) {
            out.push(taint(key, NO_SCHEDULE, now));
        }
    }
    if let Some((right, wrong)) = no_execute_for(ready)
        && has_taint(current, wrong, NO_EXECUTE)
        && !has_taint(&out, right, NO_EXECUTE)
    {
        out.push(taint(right, NO_EXECUTE, now));
    }
    let same =
        out.len() == current.len() && out.iter().all(|o| current.iter().any(|c| same_taint(o, c)));
    (!same).then_some(out)
}

/// The node's taints with the NoExecute taint its Ready status calls for added (and the
/// opposite one removed); `None` when the node is Ready or already has it.
pub fn with_no_execute(node: &Value, now: &str) -> Option<Vec<Value>> {
    let (right, wrong) = no_execute_for(condition_status(node, "Ready")?)?;
    let current = taints(node);
    if has_taint(current, right, NO_EXECUTE) {
        return None;
    }
    let mut out: Vec<Value> = current
        .iter()
        .filter(|t| !(str_at(t, "/key") == wrong && str_at(t, "/effect") == NO_EXECUTE))
        .cloned()
        .collect();
    out.push(taint(right, NO_EXECUTE, now));
    Some(out)
}

/// The node's taints without the not-ready and unreachable NoExecute taints; `None` when it
/// has neither.
pub fn without_no_execute(node: &Value) -> Option<Vec<Value>> {
    let current = taints(node);
    let ours = |t: &Value| {
        str_at(t, "/effect") == NO_EXECUTE && matches!(str_at(t, "/key"), NOT_READY | UNREACHABLE)
    };
    current
        .iter()
        .any(ours)
        .then(|| current.iter().filter(|t| !ours(t)).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:01:00Z";

    fn node(ready: &str, taints: Value) -> Value {
        json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady",
                 "lastHeartbeatTime": "2025-01-01T00:00:30Z", "lastTransitionTime": "2025-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"}]}})
    }

    fn keys(ts: &[Value]) -> Vec<String> {
        ts.iter()
            .map(|t| format!("{}:{}", str_at(t, "/key"), str_at(t, "/effect")))
            .collect()
    }

    #[test]
    fn silent_node_conditions_turn_unknown_once() {
        let n = node("True", json!([]));
        let conds = unknown_conditions(&n, NOW).expect("changed");
        let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], STOPPED_REASON);
        assert_eq!(ready["message"], STOPPED_MESSAGE);
        assert_eq!(ready["lastTransitionTime"], NOW);
        assert_eq!(
            ready["lastHeartbeatTime"], "2025-01-01T00:00:30Z",
            "the node's last heartbeat stays"
        );
        let disk = conds.iter().find(|c| c["type"] == "DiskPressure").unwrap();
        assert_eq!(disk["reason"], NEVER_REASON);
        assert_eq!(disk["lastHeartbeatTime"], "2025-01-01T00:00:00Z");
        assert_eq!(conds.len(), 4);
        let mut again = n.clone();
        again["status"]["conditions"] = json!(conds);
        assert_eq!(unknown_conditions(&again, NOW), None, "already Unknown");
    }

    #[test]
    fn no_schedule_taints_follow_conditions_and_cordoning() {
        let mut n = node(
            "False",
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        let t = desired_taints(&n, NOW).expect("changed");
        assert_eq!(
            keys(&t),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule"
            ]
        );
        assert_eq!(t[1]["timeAdded"], NOW);
        n["spec"]["taints"] = json!(t);
        assert_eq!(desired_taints(&n, NOW), None, "settled");
        n["status"]["conditions"][0]["status"] = json!("True");
        n["spec"]["unschedulable"] = json!(true);
        let t = desired_taints(&n, NOW).expect("changed");
        assert_eq!(
            keys(&t),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
    }

    #[test]
    fn no_execute_taints_swap_at_once_and_go_when_ready() {
        let n = node(
            "Unknown",
            json!([
            {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:10Z"},
            {"key": UNREACHABLE, "effect": "NoSchedule"}]),
        );
        let t = desired_taints(&n, NOW).expect("swapped");
        assert_eq!(
            keys(&t),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        let ready = node("True", json!(t));
        assert!(desired_taints(&ready, NOW).expect("cleared").is_empty());
        // Not tainted yet: the first NoExecute taint is the rate-limited pass's to add.
        let fresh = node(
            "Unknown",
            json!([{"key": UNREACHABLE, "effect": "NoSchedule"}]),
        );
        assert_eq!(desired_taints(&fresh, NOW), None);
        let t = with_no_execute(&fresh, NOW).expect("added");
        assert_eq!(
            keys(&t),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(with_no_execute(&node("True", json!([])), NOW), None);
        let tainted = node("Unknown", json!(t));
        assert_eq!(with_no_execute(&tainted, NOW), None);
        assert_eq!(
            keys(&without_no_execute(&tainted).expect("removed")),
            ["node.kubernetes.io/unreachable:NoSchedule"]
        );
        assert_eq!(without_no_execute(&fresh), None);
    }
}
