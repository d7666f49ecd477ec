//! TaintToleration: a node's NoSchedule and NoExecute taints keep off pods that do not
//! tolerate them; PreferNoSchedule taints only lower the score (fewer untolerated ones is
//! better), as Kubernetes.

use rudder_api::k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

pub struct TaintToleration;

/// Kubernetes' `ToleratesTaint`: effect (empty tolerates all), key (empty with `Exists`
/// tolerates every key), then operator: `Exists`, or `Equal`/empty comparing values.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty())
        && k != taint.key
    {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => true,
        None | Some("") | Some("Equal") => {
            t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tols = tolerations(pod);
        let untolerated = taints(node).iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tols.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
            None => Status::success(),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// Raw: how many PreferNoSchedule taints the pod does not tolerate (lower is better).
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        taints(node)
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule" && !tols.iter().any(|t| tolerates(t, taint))
            })
            .count() as i64
    }

    /// Kubernetes' reversed default normalisation: the fewest untolerated taints scores 100.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE - *s * MAX_NODE_SCORE / max
            };
        }
    }

    fn weight(&self) -> i64 {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testutil::*;
    use serde_json::json;

    fn tainted(taints: serde_json::Value) -> NodeInfo {
        let mut n = node("a", "1");
        n["spec"]["taints"] = taints;
        info(n)
    }

    #[test]
    fn untolerated_no_schedule_and_no_execute_taints_filter() {
        let n = tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        let s = TaintToleration.filter(&pod_cpu("1"), &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let n = tainted(json!([{"key": "k", "effect": "NoExecute"}]));
        assert!(!TaintToleration.filter(&pod_cpu("1"), &n).is_success());
        let n = tainted(json!([{"key": "k", "effect": "PreferNoSchedule"}]));
        assert!(TaintToleration.filter(&pod_cpu("1"), &n).is_success());
    }

    #[test]
    fn tolerations_match_by_key_value_operator_and_effect() {
        let n = tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        let with = |tol: serde_json::Value| pod(json!({"containers": [], "tolerations": [tol]}));
        for ok in [
            json!({"key": "dedicated", "value": "gpu"}),
            json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}),
            json!({"key": "dedicated", "operator": "Exists"}),
            json!({"operator": "Exists"}),
        ] {
            assert!(
                TaintToleration.filter(&with(ok.clone()), &n).is_success(),
                "{ok}"
            );
        }
        for bad in [
            json!({"key": "dedicated", "value": "cpu"}),
            json!({"key": "other", "operator": "Exists"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
        ] {
            assert!(
                !TaintToleration.filter(&with(bad.clone()), &n).is_success(),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let clean = info(node("a", "1"));
        let soft = tainted(json!([{"key": "k", "effect": "PreferNoSchedule"}]));
        let p = pod_cpu("1");
        let mut s = vec![
            TaintToleration.score(&p, &clean),
            TaintToleration.score(&p, &soft),
        ];
        TaintToleration.normalize(&mut s);
        assert_eq!(s, vec![100, 0]);
        let tolerant = pod(json!({"containers": [], "tolerations": [
            {"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"}]}));
        assert_eq!(TaintToleration.score(&tolerant, &soft), 0);
    }
}
