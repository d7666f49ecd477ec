//! InterPodAffinity on hand-built snapshots, one rule per case.

use serde_json::{Value, json};

use super::*;
use crate::framework::Code;
use crate::plugins::testutil::{labelled_node, placed_pod, run_filter, run_score};

fn pod_with(labels: Value, affinity: Value) -> PodInfo {
    placed_pod(
        "incoming",
        "default",
        labels,
        json!({"containers": [], "affinity": affinity}),
    )
}

fn web(name: &str, ns: &str) -> PodInfo {
    placed_pod(
        name,
        ns,
        json!({"app": "web", "version": "v1"}),
        json!({"containers": []}),
    )
}

fn anti(term: Value) -> Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})
}

fn aff(term: Value) -> Value {
    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})
}

fn zone_term(sel: Value) -> Value {
    json!({"labelSelector": sel, "topologyKey": "zone"})
}

/// Nodes a and b in zone z1, c in z2; `on_a` placed on a.
fn cluster(on_a: &[PodInfo]) -> Vec<NodeInfo> {
    let mut a = labelled_node("a", "z1");
    for p in on_a {
        a.add_pod(p);
    }
    vec![a, labelled_node("b", "z1"), labelled_node("c", "z2")]
}

fn codes(st: &[Status]) -> Vec<Code> {
    st.iter().map(|s| s.code).collect()
}

#[test]
fn required_anti_affinity_keeps_off_the_domain_of_a_matching_pod() {
    let p = pod_with(
        json!({}),
        anti(zone_term(json!({"matchLabels": {"app": "web"}}))),
    );
    let st = run_filter(&InterPodAffinity, p, &cluster(&[web("w", "default")]));
    assert_eq!(
        codes(&st),
        vec![Code::Unschedulable, Code::Unschedulable, Code::Success]
    );
    assert_eq!(st[0].reasons, vec![ERR_ANTI_AFFINITY]);
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_domain() {
    let p = pod_with(
        json!({}),
        aff(zone_term(json!({"matchLabels": {"app": "web"}}))),
    );
    let st = run_filter(&InterPodAffinity, p, &cluster(&[web("w", "default")]));
    let c = Code::UnschedulableAndUnresolvable;
    assert_eq!(codes(&st), vec![Code::Success, Code::Success, c]);
    assert_eq!(st[2].reasons, vec![ERR_AFFINITY]);
}

#[test]
fn first_pod_of_a_self_affine_group_schedules_anywhere() {
    let term = aff(zone_term(json!({"matchLabels": {"app": "db"}})));
    let own = pod_with(json!({"app": "db"}), term.clone());
    let st = run_filter(&InterPodAffinity, own, &cluster(&[web("w", "default")]));
    assert!(st.iter().all(Status::is_success), "{st:?}");
    // A pod that does not match its own terms gets no such pass.
    let other = pod_with(json!({"app": "api"}), term);
    let st = run_filter(&InterPodAffinity, other, &cluster(&[web("w", "default")]));
    assert!(st.iter().all(|s| !s.is_success()), "{st:?}");
}

#[test]
fn affinity_fails_on_a_node_without_the_topology_key() {
    let p = pod_with(
        json!({"app": "db"}),
        aff(json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "rack"})),
    );
    let st = run_filter(&InterPodAffinity, p, &cluster(&[]));
    assert!(
        st.iter()
            .all(|s| s.code == Code::UnschedulableAndUnresolvable)
    );
}

#[test]
fn existing_pods_required_anti_affinity_is_symmetric() {
    let guard = placed_pod(
        "guard",
        "default",
        json!({}),
        json!({"containers": [], "affinity": anti(zone_term(json!({"matchLabels": {"app": "web"}})))}),
    );
    let st = run_filter(
        &InterPodAffinity,
        web("incoming", "default"),
        &cluster(&[guard]),
    );
    assert_eq!(
        codes(&st),
        vec![Code::Unschedulable, Code::Unschedulable, Code::Success]
    );
    assert_eq!(st[0].reasons, vec![ERR_EXISTING_ANTI_AFFINITY]);
}

#[test]
fn terms_default_to_the_pods_own_namespace() {
    let p = pod_with(
        json!({}),
        anti(zone_term(json!({"matchLabels": {"app": "web"}}))),
    );
    let st = run_filter(&InterPodAffinity, p, &cluster(&[web("w", "other")]));
    assert!(st.iter().all(Status::is_success), "{st:?}");
}

#[test]
fn namespaces_and_namespace_selector_widen_the_term() {
    let sel = json!({"matchLabels": {"app": "web"}});
    for term in [
        json!({"labelSelector": sel, "topologyKey": "zone", "namespaces": ["other"]}),
        json!({"labelSelector": sel, "topologyKey": "zone", "namespaceSelector": {}}),
        json!({"labelSelector": sel, "topologyKey": "zone", "namespaceSelector":
            {"matchLabels": {"kubernetes.io/metadata.name": "other"}}}),
    ] {
        let p = pod_with(json!({}), anti(term.clone()));
        let st = run_filter(&InterPodAffinity, p, &cluster(&[web("w", "other")]));
        assert_eq!(st[0].reasons, vec![ERR_ANTI_AFFINITY], "{term}");
    }
}

#[test]
fn empty_label_selector_matches_every_pod_and_missing_matches_none() {
    let p = pod_with(json!({}), anti(zone_term(json!({}))));
    let st = run_filter(&InterPodAffinity, p, &cluster(&[web("w", "default")]));
    assert!(!st[0].is_success());
    let p = pod_with(json!({}), anti(json!({"topologyKey": "zone"})));
    let st = run_filter(&InterPodAffinity, p, &cluster(&[web("w", "default")]));
    assert!(st[0].is_success());
}

#[test]
fn match_label_keys_and_mismatch_label_keys_use_the_pods_own_values() {
    let mut term = zone_term(json!({"matchLabels": {"app": "web"}}));
    term["matchLabelKeys"] = json!(["version"]);
    let v2 = pod_with(json!({"version": "v2"}), anti(term.clone()));
    let st = run_filter(&InterPodAffinity, v2, &cluster(&[web("w", "default")]));
    assert!(st[0].is_success(), "v1 pod must not count for a v2 pod");
    let v1 = pod_with(json!({"version": "v1"}), anti(term));
    let st = run_filter(&InterPodAffinity, v1, &cluster(&[web("w", "default")]));
    assert!(!st[0].is_success());
    let mut term = zone_term(json!({"matchLabels": {"app": "web"}}));
    term["mismatchLabelKeys"] = json!(["version"]);
    let v1 = pod_with(json!({"version": "v1"}), anti(term));
    let st = run_filter(&InterPodAffinity, v1, &cluster(&[web("w", "default")]));
    assert!(
        st[0].is_success(),
        "same version must not count with mismatchLabelKeys"
    );
}

#[test]
fn preferred_terms_score_by_weight_and_anti_affinity_subtracts() {
    let pref = |kind: &str| {
        json!({kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": zone_term(json!({"matchLabels": {"app": "web"}}))}]}})
    };
    let p = pod_with(json!({}), pref("podAffinity"));
    assert_eq!(
        run_score(&InterPodAffinity, p, &cluster(&[web("w", "default")])),
        vec![100, 100, 0]
    );
    let p = pod_with(json!({}), pref("podAntiAffinity"));
    assert_eq!(
        run_score(&InterPodAffinity, p, &cluster(&[web("w", "default")])),
        vec![0, 0, 100]
    );
}

#[test]
fn placed_pods_preferred_terms_score_symmetrically() {
    let fan = placed_pod(
        "fan",
        "default",
        json!({}),
        json!({"containers": [], "affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "podAffinityTerm": zone_term(json!({"matchLabels": {"app": "web"}}))}]}}}),
    );
    let st = run_score(
        &InterPodAffinity,
        web("incoming", "default"),
        &cluster(&[fan]),
    );
    assert_eq!(st, vec![100, 100, 0]);
}

#[test]
fn placed_pods_required_affinity_adds_the_hard_pod_affinity_weight() {
    let fan = placed_pod(
        "fan",
        "default",
        json!({}),
        json!({"containers": [], "affinity": aff(zone_term(json!({"matchLabels": {"app": "web"}})))}),
    );
    let st = run_score(
        &InterPodAffinity,
        web("incoming", "default"),
        &cluster(&[fan]),
    );
    assert_eq!(st, vec![100, 100, 0]);
}

#[test]
fn match_label_keys_work_with_an_empty_label_value() {
    let mut term = zone_term(json!({"matchLabels": {"app": "web"}}));
    term["matchLabelKeys"] = json!(["track"]);
    let p = pod_with(json!({"track": ""}), anti(term));
    let blank = placed_pod(
        "w",
        "default",
        json!({"app": "web", "track": ""}),
        json!({"containers": []}),
    );
    let st = run_filter(&InterPodAffinity, p, &cluster(&[blank]));
    assert_eq!(st[0].reasons, vec![ERR_ANTI_AFFINITY], "{st:?}");
}
