//! InterPodAffinity, as Kubernetes: a pod's required affinity terms need a matching pod in the
//! node's topology domain, its required anti-affinity terms need none there, and no pod already
//! placed may have a required anti-affinity term that matches the pod in that domain
//! (symmetry). The first pod of a group that has affinity to itself may go anywhere. Preferred
//! terms, the pod's and (symmetrically) the placed pods', weight the score.
//!
//! Everything is computed from the whole snapshot in the pre-filter. A `namespaceSelector`
//! is matched against the namespace's `kubernetes.io/metadata.name` label only, since the
//! scheduler does not watch Namespaces: `{}` (every namespace) and selection by name work.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use rudder_api::selector::LabelSelector;

use crate::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, PreFilterPlugin, ScorePlugin, Status,
};

pub struct InterPodAffinity;

const NAME: &str = "InterPodAffinity";
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

fn labels(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// One affinity term resolved against the pod that owns it.
pub(crate) struct Term {
    pub topology_key: String,
    /// `None`: the selector was invalid, the term matches nothing.
    selector: Option<PodSelector>,
    namespaces: Vec<String>,
    ns_selector: Option<LabelSelector>,
    pub weight: i64,
}

/// A label selector plus exact-value conditions on label keys: what `matchLabelKeys`
/// (`key in (owner's value)`) and `mismatchLabelKeys` (`key notin (...)`) add, as Kubernetes
/// does at admission. Kept apart so that any label value, even empty, works.
#[derive(Clone)]
pub(crate) struct PodSelector {
    base: LabelSelector,
    /// (key, value, must equal): true is `in`, false `notin`.
    keys: Vec<(String, String, bool)>,
}

impl PodSelector {
    /// Every label of `labels` must be equal (the system default spreading's selector).
    pub fn equal_labels(labels: &BTreeMap<String, String>) -> Self {
        PodSelector {
            base: LabelSelector::everything(),
            keys: labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), true))
                .collect(),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.base.matches(labels)
            && self
                .keys
                .iter()
                .all(|(k, v, eq)| (labels.get(k) == Some(v)) == *eq)
    }
}

/// `sel` with the owner's `matchLabelKeys` and `mismatchLabelKeys` (keys it lacks are skipped).
pub(crate) fn with_label_keys(
    sel: LabelSelector,
    owner: &BTreeMap<String, String>,
    match_keys: &[String],
    mismatch_keys: &[String],
) -> PodSelector {
    let mut keys = Vec::new();
    for (ks, eq) in [(match_keys, true), (mismatch_keys, false)] {
        for k in ks {
            if let Some(v) = owner.get(k) {
                keys.push((k.clone(), v.clone(), eq));
            }
        }
    }
    PodSelector { base: sel, keys }
}

impl Term {
    fn new(t: &PodAffinityTerm, owner: &Pod, weight: i64) -> Self {
        let own = labels(owner);
        // A missing labelSelector matches no pod (Kubernetes), an empty one every pod.
        let selector = t
            .label_selector
            .as_ref()
            .and_then(|s| LabelSelector::from_object(s).ok())
            .map(|s| {
                with_label_keys(
                    s,
                    own,
                    t.match_label_keys.as_deref().unwrap_or_default(),
                    t.mismatch_label_keys.as_deref().unwrap_or_default(),
                )
            });
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let ns_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| LabelSelector::from_object(s).unwrap_or_else(|_| LabelSelector::nothing()));
        if namespaces.is_empty() && ns_selector.is_none() {
            namespaces.push(namespace(owner).to_string());
        }
        Term {
            topology_key: t.topology_key.clone(),
            selector,
            namespaces,
            ns_selector,
            weight,
        }
    }

    /// Does `pod` fall under this term (namespace and labels)?
    pub fn matches(&self, pod: &Pod) -> bool {
        let Some(sel) = &self.selector else {
            return false;
        };
        let ns = namespace(pod);
        let ns_ok = self.namespaces.iter().any(|n| n == ns)
            || self.ns_selector.as_ref().is_some_and(|s| {
                s.matches(&BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    ns.to_string(),
                )]))
            });
        ns_ok && sel.matches(labels(pod))
    }
}

struct Terms {
    affinity: Vec<Term>,
    anti_affinity: Vec<Term>,
    preferred_affinity: Vec<Term>,
    preferred_anti_affinity: Vec<Term>,
}

fn weighted(ts: Option<&Vec<WeightedPodAffinityTerm>>, owner: &Pod) -> Vec<Term> {
    ts.into_iter()
        .flatten()
        .map(|w| Term::new(&w.pod_affinity_term, owner, i64::from(w.weight)))
        .collect()
}

fn terms(pod: &Pod) -> Terms {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let pa = a.and_then(|a| a.pod_affinity.as_ref());
    let paa = a.and_then(|a| a.pod_anti_affinity.as_ref());
    let req = |ts: Option<&Vec<PodAffinityTerm>>| -> Vec<Term> {
        ts.into_iter()
            .flatten()
            .map(|t| Term::new(t, pod, 1))
            .collect()
    };
    Terms {
        affinity: req(pa.and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        anti_affinity: req(paa.and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        preferred_affinity: weighted(
            pa.and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            pod,
        ),
        preferred_anti_affinity: weighted(
            paa.and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            pod,
        ),
    }
}

/// A topology domain: (key, value).
type Domain = (String, String);

fn node_labels(n: &NodeInfo) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    n.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

fn domain(n: &NodeInfo, key: &str) -> Option<Domain> {
    node_labels(n)
        .get(key)
        .map(|v| (key.to_string(), v.clone()))
}

/// What the pre-filter found, per domain.
#[derive(Default)]
struct State {
    /// Placed pods whose required anti-affinity matches the incoming pod.
    existing_anti: HashMap<Domain, i64>,
    /// Per incoming required affinity term: pods matching all the terms.
    affinity: HashMap<Domain, i64>,
    /// Per incoming required anti-affinity term: pods matching it.
    anti: HashMap<Domain, i64>,
    /// Preferred-term weights, summed by domain.
    score: HashMap<Domain, i64>,
    /// The incoming pod's required affinity and anti-affinity topology keys.
    affinity_keys: Vec<String>,
    anti_keys: Vec<String>,
    /// The pod matches all its own affinity terms (the "first of a group" rule applies).
    self_affine: bool,
}

impl PreFilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let own = terms(&pod.pod);
        let mut st = State {
            affinity_keys: own
                .affinity
                .iter()
                .map(|t| t.topology_key.clone())
                .collect(),
            anti_keys: own
                .anti_affinity
                .iter()
                .map(|t| t.topology_key.clone())
                .collect(),
            self_affine: own.affinity.iter().all(|t| t.matches(&pod.pod)),
            ..State::default()
        };
        for n in nodes {
            for (key, other) in n.pods.iter().zip(&n.placed) {
                if *key == pod.key {
                    continue;
                }
                let theirs = terms(other);
                let bump = |m: &mut HashMap<Domain, i64>, k: &str, by: i64| {
                    if let Some(d) = domain(n, k) {
                        *m.entry(d).or_default() += by;
                    }
                };
                for t in theirs.anti_affinity.iter().filter(|t| t.matches(&pod.pod)) {
                    bump(&mut st.existing_anti, &t.topology_key, 1);
                }
                if !own.affinity.is_empty() && own.affinity.iter().all(|t| t.matches(other)) {
                    for t in &own.affinity {
                        bump(&mut st.affinity, &t.topology_key, 1);
                    }
                }
                for t in own.anti_affinity.iter().filter(|t| t.matches(other)) {
                    bump(&mut st.anti, &t.topology_key, 1);
                }
                // Preferred: the pod's terms over placed pods, and placed pods' terms over it.
                for t in own.preferred_affinity.iter().filter(|t| t.matches(other)) {
                    bump(&mut st.score, &t.topology_key, t.weight);
                }
                for t in own
                    .preferred_anti_affinity
                    .iter()
                    .filter(|t| t.matches(other))
                {
                    bump(&mut st.score, &t.topology_key, -t.weight);
                }
                // Their required affinity counts as a preference of weight 1, Kubernetes'
                // default `hardPodAffinityWeight`.
                for t in theirs.affinity.iter().filter(|t| t.matches(&pod.pod)) {
                    bump(&mut st.score, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                }
                for t in theirs
                    .preferred_affinity
                    .iter()
                    .filter(|t| t.matches(&pod.pod))
                {
                    bump(&mut st.score, &t.topology_key, t.weight);
                }
                for t in theirs
                    .preferred_anti_affinity
                    .iter()
                    .filter(|t| t.matches(&pod.pod))
                {
                    bump(&mut st.score, &t.topology_key, -t.weight);
                }
            }
        }
        Some(Arc::new(st))
    }
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = pod.state.get::<State>(NAME) else {
            return Status::success();
        };
        let count = |m: &HashMap<Domain, i64>, k: &str| {
            domain(node, k)
                .and_then(|d| m.get(&d).copied())
                .unwrap_or(0)
        };
        // Kubernetes' order, which decides the reason shown: affinity, anti, existing.
        if !st.affinity_keys.is_empty() {
            let has_keys = st.affinity_keys.iter().all(|k| domain(node, k).is_some());
            let satisfied = has_keys && st.affinity_keys.iter().all(|k| count(&st.affinity, k) > 0);
            // No matching pod anywhere and the pod matches its own terms: it starts the group.
            let first = has_keys && st.affinity.is_empty() && st.self_affine;
            if !satisfied && !first {
                return Status::unresolvable(ERR_AFFINITY);
            }
        }
        if st.anti_keys.iter().any(|k| count(&st.anti, k) > 0) {
            return Status::unschedulable(ERR_ANTI_AFFINITY);
        }
        if !st.existing_anti.is_empty()
            && node_labels(node)
                .iter()
                .any(|(k, v)| st.existing_anti.get(&(k.clone(), v.clone())).copied() > Some(0))
        {
            return Status::unschedulable(ERR_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Raw: the summed weights of the domains the node is in (may be negative).
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = pod.state.get::<State>(NAME) else {
            return 0;
        };
        node_labels(node)
            .iter()
            .filter_map(|(k, v)| st.score.get(&(k.clone(), v.clone())))
            .sum()
    }

    /// Kubernetes: `(s - min) * 100 / (max - min)`; all equal scores 0.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        let min = scores.iter().copied().min().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == min {
                0
            } else {
                (*s - min) * MAX_NODE_SCORE / (max - min)
            };
        }
    }

    fn weight(&self) -> i64 {
        2
    }
}

#[cfg(test)]
#[path = "interpodaffinity_tests.rs"]
mod tests;
