//! PodTopologySpread, as Kubernetes: `DoNotSchedule` constraints filter out nodes where
//! placing the pod would make its domain exceed `maxSkew` over the least loaded domain
//! (0 while fewer than `minDomains` domains exist); `ScheduleAnyway` constraints score
//! less loaded domains higher. Only nodes passing `nodeAffinityPolicy` (default Honor) and
//! `nodeTaintsPolicy` (default Ignore) count. A pod with no constraints that a controller
//! owns gets the system defaults (hostname skew 3, zone skew 5, ScheduleAnyway).
//!
//! Counts come from the whole snapshot in the pre-filter (Kubernetes scores over the
//! feasible nodes only). The default constraints select the pod's own labels, since the
//! scheduler does not watch the Services and controllers Kubernetes takes selectors from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use rudder_api::selector::LabelSelector;

use super::interpodaffinity::{PodSelector, with_label_keys};
use super::{nodeaffinity::NodeAffinity, tainttoleration::TaintToleration};
use crate::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, PreFilterPlugin, ScorePlugin, Status,
};

pub struct PodTopologySpread;

const NAME: &str = "PodTopologySpread";
pub const ERR_SKEW: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";

struct Constraint {
    max_skew: i64,
    key: String,
    hard: bool,
    min_domains: i64,
    selector: Option<PodSelector>,
    honor_affinity: bool,
    honor_taints: bool,
}

fn labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

fn constraint(c: &TopologySpreadConstraint, pod: &Pod) -> Constraint {
    let selector = c
        .label_selector
        .as_ref()
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| {
            with_label_keys(
                s,
                labels(pod),
                c.match_label_keys.as_deref().unwrap_or_default(),
                &[],
            )
        });
    Constraint {
        max_skew: i64::from(c.max_skew),
        key: c.topology_key.clone(),
        hard: c.when_unsatisfiable == "DoNotSchedule",
        min_domains: c.min_domains.map_or(1, i64::from),
        selector,
        honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
    }
}

fn is_controlled(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

fn constraints(pod: &Pod) -> Vec<Constraint> {
    let given = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    if !given.is_empty() {
        return given.iter().map(|c| constraint(c, pod)).collect();
    }
    let own = labels(pod);
    if !is_controlled(pod) || own.is_empty() {
        return Vec::new();
    }
    let selector = Some(PodSelector::equal_labels(own));
    [(HOSTNAME, 3), (ZONE, 5)]
        .into_iter()
        .map(|(key, max_skew)| Constraint {
            max_skew,
            key: key.to_string(),
            hard: false,
            min_domains: 1,
            selector: selector.clone(),
            honor_affinity: true,
            honor_taints: false,
        })
        .collect()
}

fn node_value<'a>(n: &'a NodeInfo, key: &str) -> Option<&'a str> {
    n.node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// Per constraint: matching pods per domain value over the counted nodes.
struct Counted {
    c: Constraint,
    counts: HashMap<String, i64>,
    /// Least matching pods in a domain (0 below `minDomains` domains).
    min_match: i64,
    self_match: i64,
}

struct State {
    constraints: Vec<Counted>,
    /// The system defaults apply: a node missing a key skips that constraint (Kubernetes
    /// requires all keys only of explicit constraints).
    system_default: bool,
}

/// Per constraint (same order): `ln(domains among the feasible nodes + 2)`.
struct Weights(Vec<f64>);

impl PreFilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let cs = constraints(&pod.pod);
        let system_default = cs.first().is_some_and(|_| {
            pod.pod.spec.as_ref().is_none_or(|s| {
                s.topology_spread_constraints
                    .as_ref()
                    .is_none_or(Vec::is_empty)
            })
        });
        if cs.is_empty() {
            return None;
        }
        let ns = pod.pod.metadata.namespace.as_deref().unwrap_or("default");
        let own = labels(&pod.pod);
        // Kubernetes counts only nodes having the keys of all constraints of the same kind
        // (filter: DoNotSchedule, score: ScheduleAnyway).
        let keys = |hard: bool| -> Vec<String> {
            cs.iter()
                .filter(|c| c.hard == hard)
                .map(|c| c.key.clone())
                .collect()
        };
        let (hard_keys, soft_keys) = (keys(true), keys(false));
        let mut out = Vec::new();
        for c in cs {
            let mut counts: HashMap<String, i64> = HashMap::new();
            let same_kind = if c.hard { &hard_keys } else { &soft_keys };
            for n in nodes {
                let Some(v) = node_value(n, &c.key) else {
                    continue;
                };
                if !system_default && same_kind.iter().any(|k| node_value(n, k).is_none()) {
                    continue;
                }
                if c.honor_affinity && !FilterPlugin::filter(&NodeAffinity, pod, n).is_success() {
                    continue;
                }
                if c.honor_taints && !FilterPlugin::filter(&TaintToleration, pod, n).is_success() {
                    continue;
                }
                let matching = n
                    .placed
                    .iter()
                    .zip(&n.pods)
                    .filter(|(p, key)| {
                        **key != pod.key
                            && p.metadata.deletion_timestamp.is_none()
                            && p.metadata.namespace.as_deref().unwrap_or("default") == ns
                            && c.selector.as_ref().is_some_and(|s| s.matches(labels(p)))
                    })
                    .count() as i64;
                *counts.entry(v.to_string()).or_default() += matching;
            }
            let domains: HashSet<&String> = counts.keys().collect();
            let min_match = if (domains.len() as i64) < c.min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let self_match = i64::from(c.selector.as_ref().is_some_and(|s| s.matches(own)));
            out.push(Counted {
                c,
                counts,
                min_match,
                self_match,
            });
        }
        Some(Arc::new(State {
            constraints: out,
            system_default,
        }))
    }
}

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(State {
            constraints: cs, ..
        }) = pod.state.get::<State>(NAME)
        else {
            return Status::success();
        };
        for k in cs.iter().filter(|k| k.c.hard) {
            let Some(v) = node_value(node, &k.c.key) else {
                return Status::unresolvable(ERR_MISSING_LABEL);
            };
            let here = k.counts.get(v).copied().unwrap_or(0);
            if here + k.self_match - k.min_match > k.c.max_skew {
                return Status::unschedulable(ERR_SKEW);
            }
        }
        Status::success()
    }
}

/// Sentinel raw score for a node missing a soft constraint's key: Kubernetes scores it 0.
const MISSING: i64 = -1;

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Domains per soft constraint among the feasible nodes (those with every key, for
    /// explicit constraints), for the weights.
    fn pre_score(
        &self,
        pod: &PodInfo,
        feasible: &[&NodeInfo],
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let st = pod.state.get::<State>(NAME)?;
        let soft: Vec<&Counted> = st.constraints.iter().filter(|k| !k.c.hard).collect();
        let nodes: Vec<&&NodeInfo> = feasible
            .iter()
            .filter(|n| st.system_default || soft.iter().all(|k| node_value(n, &k.c.key).is_some()))
            .collect();
        let weights = st
            .constraints
            .iter()
            .map(|k| {
                let domains: HashSet<&str> = nodes
                    .iter()
                    .filter_map(|n| node_value(n, &k.c.key))
                    .collect();
                ((domains.len() + 2) as f64).ln()
            })
            .collect();
        Some(Arc::new(Weights(weights)))
    }

    /// Raw (lower is better): per soft constraint, the pods already in the node's domain
    /// weighted by `ln(domains + 2)`, plus `maxSkew - 1`, as Kubernetes; in thousandths.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = pod.state.get::<State>(NAME) else {
            return 0;
        };
        let weights = pod.state.get_pre_score::<Weights>(NAME);
        let mut total = 0.0f64;
        for (i, k) in st.constraints.iter().enumerate() {
            if k.c.hard {
                continue;
            }
            let Some(v) = node_value(node, &k.c.key) else {
                if st.system_default {
                    continue;
                }
                return MISSING;
            };
            let here = k.counts.get(v).copied().unwrap_or(0);
            // Without a pre-score (a caller that skipped it), all counted domains.
            let w = weights
                .and_then(|w| w.0.get(i).copied())
                .unwrap_or_else(|| ((k.counts.len() + 2) as f64).ln());
            total += here as f64 * w + (k.c.max_skew - 1) as f64;
        }
        (total * 1000.0).round() as i64
    }

    /// Kubernetes: `100 * (max + min - s) / max` over the nodes that have the keys.
    fn normalize(&self, scores: &mut [i64]) {
        let present = || scores.iter().copied().filter(|s| *s != MISSING);
        let max = present().max().unwrap_or(0);
        let min = present().min().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s == MISSING {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }

    fn weight(&self) -> i64 {
        2
    }
}

#[cfg(test)]
#[path = "podtopologyspread_tests.rs"]
mod tests;
