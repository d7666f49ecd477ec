//! Pod state as controllers judge it: active, ready, available (ready for `minReadySeconds`).

use jiff::Timestamp;
use serde_json::Value;

use super::{parse_time, str_at};

pub fn phase(pod: &Value) -> &str {
    str_at(pod, "/status/phase")
}

/// Not finished and not being deleted (`controller.IsPodActive`).
pub fn is_active(pod: &Value) -> bool {
    let p = phase(pod);
    p != "Succeeded" && p != "Failed" && pod.pointer("/metadata/deletionTimestamp").is_none()
}

/// The pod's condition of type `ty`, if reported.
pub fn condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a Value> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// Condition Ready is True.
pub fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// When the pod last became ready (its Ready condition's lastTransitionTime), if ready.
pub fn ready_since(pod: &Value) -> Option<Timestamp> {
    if !is_ready(pod) {
        return None;
    }
    parse_time(condition(pod, "Ready")?.get("lastTransitionTime"))
}

/// Ready for at least `min_ready_seconds` at `now` (`podutil.IsPodAvailable`). A ready pod
/// without a transition time counts as available only when no minimum is asked for.
pub fn is_available(pod: &Value, min_ready_seconds: i64, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|t| t.as_second() + min_ready_seconds <= now.as_second())
}

/// Sum of the pod's container restart counts.
pub fn restarts(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        })
        .unwrap_or(0)
}

/// Whether any of the pod's containers waits in CrashLoopBackOff.
pub fn is_crash_looping(pod: &Value) -> bool {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| str_at(c, "/state/waiting/reason") == "CrashLoopBackOff")
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ready: bool, since: &str) -> Value {
        json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": since}
        ]}})
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let p = pod(true, "2026-01-01T00:00:30Z");
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 30, now), "exactly 30 s ready");
        assert!(!is_available(&p, 31, now));
        assert!(!is_available(&pod(false, "2026-01-01T00:00:00Z"), 0, now));
    }

    #[test]
    fn active_excludes_finished_and_deleting() {
        assert!(is_active(&json!({"status": {"phase": "Pending"}})));
        assert!(!is_active(&json!({"status": {"phase": "Failed"}})));
        assert!(!is_active(&json!({"status": {"phase": "Succeeded"}})));
        assert!(!is_active(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        ));
    }
}
