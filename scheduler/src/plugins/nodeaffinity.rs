//! NodeAffinity (required part) and nodeSelector: every `spec.nodeSelector` label must match,
//! and at least one term of `requiredDuringSchedulingIgnoredDuringExecution` (each term all
//! its `matchExpressions` on labels and `matchFields` on `metadata.name`). Operators In, NotIn,
//! Exists, DoesNotExist, Gt, Lt as Kubernetes; an empty term matches nothing. The score sums
//! the weights of the matching preferred terms, normalised so the best node scores 100.

use std::collections::BTreeMap;

use rudder_api::k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::framework::{FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt take exactly one integer value; anything else matches nothing.
        "Gt" | "Lt" => match (value.and_then(int), values) {
            (Some(v), [bound]) => match int(bound) {
                Some(b) if r.operator == "Gt" => v > b,
                Some(b) => v < b,
                None => false,
            },
            _ => false,
        },
        _ => false,
    }
}

fn term(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = (r.key == "metadata.name").then_some(name);
            requirement(r, v)
        })
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Status::success();
        };
        let empty = BTreeMap::new();
        let labels = node.node.metadata.labels.as_ref().unwrap_or(&empty);
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let affinity_ok = required.is_none_or(|r| {
            r.node_selector_terms
                .iter()
                .any(|t| term(t, labels, &node.name))
        });
        if selector_ok && affinity_ok {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let preferred = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let empty = BTreeMap::new();
        let labels = node.node.metadata.labels.as_ref().unwrap_or(&empty);
        preferred
            .into_iter()
            .flatten()
            .filter(|p| term(&p.preference, labels, &node.name))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    /// Kubernetes' default normalisation: the highest sum becomes 100.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        if max > 0 {
            for s in scores.iter_mut() {
                *s = *s * MAX_NODE_SCORE / max;
            }
        }
    }

    fn weight(&self) -> i64 {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::{Value, json};

    fn labelled() -> NodeInfo {
        let mut n = node("n1", "1");
        n["metadata"]["labels"] = json!({"zone": "a", "disk": "ssd", "cores": "8"});
        info(n)
    }

    fn required(terms: Value) -> PodInfo {
        pod(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}])
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(json!({"containers": [], "affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
        ]}}}));
        let mut other = node("n2", "1");
        other["metadata"]["labels"] = json!({"zone": "a"});
        let mut s = vec![
            NodeAffinity.score(&p, &labelled()),
            NodeAffinity.score(&p, &info(other)),
            NodeAffinity.score(&p, &info(node("n3", "1"))),
        ];
        assert_eq!(s, vec![40, 10, 0]);
        NodeAffinity.normalize(&mut s);
        assert_eq!(s, vec![100, 25, 0]);
    }

    #[test]
    fn node_selector_needs_every_label() {
        let n = labelled();
        let ok = pod(json!({"containers": [], "nodeSelector": {"zone": "a", "disk": "ssd"}}));
        assert!(NodeAffinity.filter(&ok, &n).is_success());
        let bad = pod(json!({"containers": [], "nodeSelector": {"zone": "a", "disk": "hdd"}}));
        assert_eq!(NodeAffinity.filter(&bad, &n).reasons, vec![REASON]);
    }

    #[test]
    fn operators() {
        let n = labelled();
        let cases = [
            ("zone", "In", vec!["a", "b"], true),
            ("zone", "In", vec!["b"], false),
            ("zone", "NotIn", vec!["b"], true),
            ("zone", "NotIn", vec!["a"], false),
            ("gpu", "NotIn", vec!["x"], true),
            ("disk", "Exists", vec![], true),
            ("gpu", "Exists", vec![], false),
            ("gpu", "DoesNotExist", vec![], true),
            ("disk", "DoesNotExist", vec![], false),
            ("cores", "Gt", vec!["4"], true),
            ("cores", "Gt", vec!["8"], false),
            ("cores", "Lt", vec!["16"], true),
            ("zone", "Gt", vec!["1"], false),
        ];
        for (k, op, vals, want) in cases {
            let got = NodeAffinity
                .filter(&required(expr(k, op, &vals)), &n)
                .is_success();
            assert_eq!(got, want, "{k} {op} {vals:?}");
        }
    }

    #[test]
    fn terms_are_ored_and_match_fields_reads_the_name() {
        let n = labelled();
        let terms = json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
        ]);
        assert!(NodeAffinity.filter(&required(terms), &n).is_success());
        let other = json!([{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]);
        assert!(!NodeAffinity.filter(&required(other), &n).is_success());
        assert!(!NodeAffinity.filter(&required(json!([{}])), &n).is_success());
    }
}
