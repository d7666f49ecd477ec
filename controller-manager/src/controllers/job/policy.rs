//! How a Job judges its pods, as pure functions: which completion index a pod runs, when it
//! finished, whether it counts as failed, what its `podFailurePolicy` says about it, whether a
//! `successPolicy` is met, and the back-off before a failed pod is replaced (Kubernetes'
//! `pod_failure_policy.go`, `success_policy.go` and `backoff_utils.go`).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::util::intervals::Intervals;
use crate::util::parse_time;
use crate::util::pods::phase;

use super::COMPLETION_INDEX;

/// First delay before a failed pod is replaced; doubles with each failure in a row.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The back-off never waits longer than this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 60);

/// The completion index a pod was created for (its annotation), if it carries a readable one.
pub fn completion_index(pod: &Value) -> Option<i64> {
    let key = COMPLETION_INDEX.replace('/', "~1");
    pod.pointer(&format!("/metadata/annotations/{key}"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|i| *i >= 0)
}

/// An integer annotation of a pod (0 when absent or unreadable).
pub fn int_annotation(pod: &Value, name: &str) -> i64 {
    let key = name.replace('/', "~1");
    pod.pointer(&format!("/metadata/annotations/{key}"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0)
}

/// When a finished pod finished: its containers' last `finishedAt`, else when it stopped being
/// ready, else when it was deleted (Kubernetes' `getFinishedTime`).
pub fn finish_time(pod: &Value) -> Option<Timestamp> {
    let mut last: Option<Timestamp> = None;
    for list in ["containerStatuses", "initContainerStatuses"] {
        for c in pod
            .pointer(&format!("/status/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = parse_time(c.pointer("/state/terminated/finishedAt")) {
                last = Some(last.map_or(t, |l| l.max(t)));
            }
        }
    }
    last.or_else(|| {
        let ready = crate::util::pods::condition(pod, "Ready")?;
        (ready.get("status").and_then(Value::as_str) == Some("False"))
            .then(|| parse_time(ready.get("lastTransitionTime")))
            .flatten()
    })
    .or_else(|| parse_time(pod.pointer("/metadata/deletionTimestamp")))
}

/// Whether a pod counts as failed (`isPodFailed`): phase Failed, or, unless the Job replaces
/// only failed pods, being deleted before it succeeded (a deleted pod may never reach Failed).
pub fn is_failed(pod: &Value, replace_only_failed: bool) -> bool {
    let p = phase(pod);
    if p == "Failed" {
        return true;
    }
    !replace_only_failed && pod.pointer("/metadata/deletionTimestamp").is_some() && p != "Succeeded"
}

/// What a pod failure policy rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::FailJob => "FailJob",
            Action::FailIndex => "FailIndex",
            Action::Ignore => "Ignore",
            Action::Count => "Count",
        }
    }
}

/// `onExitCodes`: a container's (or any container's) non-zero exit code in or not in a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCodes {
    pub container: Option<String>,
    pub not_in: bool,
    pub values: Vec<i64>,
}

/// One `podFailurePolicy.rules` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub on_exit_codes: Option<ExitCodes>,
    /// `onPodConditions`: (type, status) pairs; any one matching is enough.
    pub on_conditions: Vec<(String, String)>,
}

/// Reads `spec.podFailurePolicy.rules`; an unknown action or operator is an error naming it.
pub fn parse_rules(policy: &Value) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (i, r) in policy
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let action = match r.get("action").and_then(Value::as_str).unwrap_or("") {
            "FailJob" => Action::FailJob,
            "FailIndex" => Action::FailIndex,
            "Ignore" => Action::Ignore,
            "Count" => Action::Count,
            other => {
                return Err(format!(
                    "spec.podFailurePolicy.rules[{i}].action: unsupported value {other:?}"
                ));
            }
        };
        let on_exit_codes = match r.get("onExitCodes") {
            None | Some(Value::Null) => None,
            Some(e) => {
                let not_in = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => false,
                    "NotIn" => true,
                    other => {
                        return Err(format!(
                            "spec.podFailurePolicy.rules[{i}].onExitCodes.operator: unsupported value {other:?}"
                        ));
                    }
                };
                Some(ExitCodes {
                    container: e
                        .get("containerName")
                        .and_then(Value::as_str)
                        .map(String::from),
                    not_in,
                    values: e
                        .get("values")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_i64)
                        .collect(),
                })
            }
        };
        let on_conditions = r
            .get("onPodConditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let s =
                    |f: &str, d: &str| c.get(f).and_then(Value::as_str).unwrap_or(d).to_string();
                (s("type", ""), s("status", "True"))
            })
            .collect();
        rules.push(Rule {
            action,
            on_exit_codes,
            on_conditions,
        });
    }
    Ok(rules)
}

/// The first terminated container (regular, then init) with a non-zero exit code that `req`
/// matches: (name, exit code).
fn matching_container(pod: &Value, req: &ExitCodes) -> Option<(String, i64)> {
    for list in ["containerStatuses", "initContainerStatuses"] {
        for c in pod
            .pointer(&format!("/status/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(code) = c
                .pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
            else {
                continue;
            };
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if code == 0 || req.container.as_deref().is_some_and(|n| n != name) {
                continue;
            }
            if req.values.contains(&code) != req.not_in {
                return Some((name.to_string(), code));
            }
        }
    }
    None
}

/// What the policy decides for a failed pod: the matching rule's action (`None`: no rule
/// matched, the failure counts) and, for FailJob, the Job's failure message.
pub fn match_policy(rules: &[Rule], pod: &Value) -> (Option<Action>, Option<String>) {
    let ns = crate::util::str_at(pod, "/metadata/namespace");
    let name = crate::util::str_at(pod, "/metadata/name");
    for (i, r) in rules.iter().enumerate() {
        let msg = if let Some(req) = &r.on_exit_codes {
            let Some((container, code)) = matching_container(pod, req) else {
                continue;
            };
            format!(
                "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                r.action.name()
            )
        } else if !r.on_conditions.is_empty() {
            let Some(ty) = r.on_conditions.iter().find_map(|(ty, status)| {
                let c = crate::util::pods::condition(pod, ty)?;
                (c.get("status").and_then(Value::as_str) == Some(status)).then(|| ty.clone())
            }) else {
                continue;
            };
            format!(
                "Pod {ns}/{name} has condition {ty} matching {} rule at index {i}",
                r.action.name()
            )
        } else {
            continue;
        };
        return (Some(r.action), (r.action == Action::FailJob).then_some(msg));
    }
    (None, None)
}

/// Whether a failed pod's failure counts against the back-off limits (not ignored).
pub fn counts(rules: Option<&[Rule]>, pod: &Value) -> bool {
    rules.is_none_or(|r| match_policy(r, pod).0 != Some(Action::Ignore))
}

/// One `successPolicy.rules` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessRule {
    pub indexes: Option<String>,
    pub count: Option<i64>,
}

pub fn parse_success_rules(policy: &Value) -> Vec<SuccessRule> {
    policy
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| SuccessRule {
            indexes: r
                .get("succeededIndexes")
                .and_then(Value::as_str)
                .map(String::from),
            count: r.get("succeededCount").and_then(Value::as_i64),
        })
        .collect()
}

/// The index of the first rule the succeeded indexes satisfy (`matchSuccessPolicy`): with
/// `succeededIndexes`, enough (all, or `succeededCount`) of those succeeded; with only
/// `succeededCount`, that many succeeded overall.
pub fn success_rule_met(
    rules: &[SuccessRule],
    succeeded: &Intervals,
    completions: i64,
) -> Option<usize> {
    rules.iter().position(|r| match (&r.indexes, r.count) {
        (Some(ix), count) => {
            let wanted = Intervals::parse(ix, completions);
            let done = wanted.iter().filter(|i| succeeded.has(*i)).count() as i64;
            match count {
                Some(c) => done >= c,
                None => !wanted.is_empty() && done == wanted.total(),
            }
        }
        (None, Some(c)) => succeeded.total() >= c,
        (None, None) => false,
    })
}

/// The back-off after `failures` failures in a row: 10 s doubling, capped at 6 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.checked_pow(failures - 1).unwrap_or(u32::MAX);
    BACKOFF_BASE
        .checked_mul(factor)
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

/// How long to wait at `now` before replacing a failed pod, given the finished pods as
/// (succeeded?, finish time): the failures since the last success set the delay, counted from
/// the last failure.
pub fn backoff_remaining(finished: &[(bool, Timestamp)], now: Timestamp) -> Duration {
    let last_success = finished.iter().filter(|(ok, _)| *ok).map(|(_, t)| *t).max();
    let failures: Vec<Timestamp> = finished
        .iter()
        .filter(|(ok, t)| !*ok && last_success.is_none_or(|s| *t > s))
        .map(|(_, t)| *t)
        .collect();
    let Some(last_failure) = failures.iter().max().copied() else {
        return Duration::ZERO;
    };
    remaining_after(last_failure, backoff_delay(failures.len() as u32), now)
}

/// What is left at `now` of `delay` started at `since`.
pub fn remaining_after(since: Timestamp, delay: Duration, now: Timestamp) -> Duration {
    let elapsed = now.duration_since(since);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    delay.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn failed_pod(exit: i64, conditions: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Failed",
        "conditions": conditions,
        "containerStatuses": [
            {"name": "ok", "state": {"terminated": {"exitCode": 0}}},
            {"name": "main", "state": {"terminated": {"exitCode": exit, "finishedAt": "2025-01-01T00:00:05Z"}}},
        ]}})
    }

    fn rules(v: Value) -> Vec<Rule> {
        parse_rules(&json!({ "rules": v })).unwrap()
    }

    #[test]
    fn failure_policy_rules_match_in_order() {
        let r = rules(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 42]}},
        ]));
        let (a, msg) = match_policy(&r, &failed_pod(42, json!([])));
        assert_eq!(a, Some(Action::FailJob));
        assert_eq!(
            msg.as_deref(),
            Some(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
            )
        );
        // A disruption wins over the exit code: rules are tried in order.
        let disrupted = failed_pod(42, json!([{"type": "DisruptionTarget", "status": "True"}]));
        assert_eq!(match_policy(&r, &disrupted), (Some(Action::Ignore), None));
        assert!(!counts(Some(&r), &disrupted));
        // Condition present but False does not match.
        let not = failed_pod(7, json!([{"type": "DisruptionTarget", "status": "False"}]));
        assert_eq!(match_policy(&r, &not).0, Some(Action::Count));
        // Exit code 1 is in the NotIn list: no rule matches; the failure counts.
        assert_eq!(match_policy(&r, &failed_pod(1, json!([]))), (None, None));
        assert!(counts(Some(&r), &failed_pod(1, json!([]))));
        assert!(counts(None, &failed_pod(1, json!([]))));
        assert!(parse_rules(&json!({"rules": [{"action": "Explode"}]})).is_err());
    }

    #[test]
    fn condition_rules_name_the_pod() {
        let r = rules(
            json!([{"action": "FailJob", "onPodConditions": [{"type": "ConfigIssue", "status": "True"}]}]),
        );
        let p = failed_pod(3, json!([{"type": "ConfigIssue", "status": "True"}]));
        assert_eq!(
            match_policy(&r, &p).1.as_deref(),
            Some("Pod ns/p has condition ConfigIssue matching FailJob rule at index 0")
        );
    }

    #[test]
    fn deleted_pods_fail_unless_only_failed_pods_are_replaced() {
        let deleting = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert!(is_failed(&deleting, false));
        assert!(!is_failed(&deleting, true));
        let done = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "status": {"phase": "Succeeded"}});
        assert!(!is_failed(&done, false));
        assert_eq!(
            finish_time(&failed_pod(1, json!([]))),
            "2025-01-01T00:00:05Z".parse().ok()
        );
    }

    #[test]
    fn success_policy_by_indexes_and_count() {
        let done = Intervals::from_indexes([0, 2, 3]);
        let r = |ix: Option<&str>, c: Option<i64>| {
            vec![SuccessRule {
                indexes: ix.map(String::from),
                count: c,
            }]
        };
        assert_eq!(success_rule_met(&r(Some("0,2-3"), None), &done, 5), Some(0));
        assert_eq!(success_rule_met(&r(Some("0-1"), None), &done, 5), None);
        assert_eq!(
            success_rule_met(&r(Some("0-4"), Some(3)), &done, 5),
            Some(0)
        );
        assert_eq!(success_rule_met(&r(None, Some(4)), &done, 5), None);
        let two = [r(None, Some(9)), r(None, Some(3))].concat();
        assert_eq!(success_rule_met(&two, &done, 5), Some(1));
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        let secs: Vec<u64> = (0..8).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 320, 360]);
        assert_eq!(backoff_delay(100), BACKOFF_MAX);
        let t = |s: i64| Timestamp::from_second(1_735_689_600 + s).unwrap();
        // Two failures after the last success: 20 s from the last failure.
        let finished = [(false, t(0)), (true, t(10)), (false, t(20)), (false, t(30))];
        assert_eq!(backoff_remaining(&finished, t(35)), Duration::from_secs(15));
        assert_eq!(backoff_remaining(&finished, t(60)), Duration::ZERO);
        // A success after the failures resets the count.
        assert_eq!(
            backoff_remaining(&[(false, t(0)), (true, t(1))], t(2)),
            Duration::ZERO
        );
    }
}
