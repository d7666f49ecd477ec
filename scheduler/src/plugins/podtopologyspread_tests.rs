//! PodTopologySpread on hand-built snapshots, one rule per case.

use serde_json::{Value, json};

use super::*;
use crate::framework::Code;
use crate::plugins::testutil::{labelled_node, placed_pod, run_filter, run_score};

fn web(name: &str) -> PodInfo {
    placed_pod(
        name,
        "default",
        json!({"app": "web", "version": "v1"}),
        json!({"containers": []}),
    )
}

fn spread(c: Value, extra: Value) -> PodInfo {
    let mut spec = json!({"containers": [], "topologySpreadConstraints": [c]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    placed_pod(
        "incoming",
        "default",
        json!({"app": "web", "version": "v2"}),
        spec,
    )
}

fn zone_constraint(max_skew: i32, when: &str) -> Value {
    json!({"maxSkew": max_skew, "topologyKey": "zone", "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "web"}}})
}

/// Nodes a (z1, `on_a` pods) and b (z2, `on_b` pods).
fn two_zones(on_a: usize, on_b: usize) -> Vec<NodeInfo> {
    let mut a = labelled_node("a", "z1");
    let mut b = labelled_node("b", "z2");
    for i in 0..on_a {
        a.add_pod(&web(&format!("a{i}")));
    }
    for i in 0..on_b {
        b.add_pod(&web(&format!("b{i}")));
    }
    vec![a, b]
}

#[test]
fn do_not_schedule_filters_the_domain_that_would_exceed_max_skew() {
    let p = spread(zone_constraint(1, "DoNotSchedule"), json!({}));
    let st = run_filter(&PodTopologySpread, p, &two_zones(1, 0));
    assert_eq!(st[0].code, Code::Unschedulable);
    assert_eq!(st[0].reasons, vec![ERR_SKEW]);
    assert!(st[1].is_success());
    let p = spread(zone_constraint(2, "DoNotSchedule"), json!({}));
    assert!(
        run_filter(&PodTopologySpread, p, &two_zones(1, 0))
            .iter()
            .all(Status::is_success)
    );
}

#[test]
fn schedule_anyway_never_filters() {
    let p = spread(zone_constraint(1, "ScheduleAnyway"), json!({}));
    assert!(
        run_filter(&PodTopologySpread, p, &two_zones(5, 0))
            .iter()
            .all(Status::is_success)
    );
}

#[test]
fn node_missing_the_topology_key_is_unresolvable() {
    let mut c = zone_constraint(1, "DoNotSchedule");
    c["topologyKey"] = json!("rack");
    let st = run_filter(&PodTopologySpread, spread(c, json!({})), &two_zones(0, 0));
    assert_eq!(st[0].code, Code::UnschedulableAndUnresolvable);
    assert_eq!(st[0].reasons, vec![ERR_MISSING_LABEL]);
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    let mut c = zone_constraint(1, "DoNotSchedule");
    assert!(
        run_filter(
            &PodTopologySpread,
            spread(c.clone(), json!({})),
            &two_zones(1, 1)
        )
        .iter()
        .all(Status::is_success)
    );
    c["minDomains"] = json!(3);
    let st = run_filter(&PodTopologySpread, spread(c, json!({})), &two_zones(1, 1));
    assert!(st.iter().all(|s| s.reasons == vec![ERR_SKEW]), "{st:?}");
}

#[test]
fn node_affinity_policy_honor_counts_only_selectable_nodes() {
    // Only z1 has disk=ssd: honoured, z2 is no domain, so z1 is the minimum itself.
    let mut nodes = two_zones(1, 0);
    let mut labels = nodes[0].node.metadata.labels.clone().unwrap_or_default();
    labels.insert("disk".into(), "ssd".into());
    let mut n = (*nodes[0].node).clone();
    n.metadata.labels = Some(labels);
    nodes[0].node = Arc::new(n);
    let sel = json!({"nodeSelector": {"disk": "ssd"}});
    let c = zone_constraint(1, "DoNotSchedule");
    let st = run_filter(&PodTopologySpread, spread(c.clone(), sel.clone()), &nodes);
    assert!(st[0].is_success(), "{st:?}");
    let mut ignore = c;
    ignore["nodeAffinityPolicy"] = json!("Ignore");
    let st = run_filter(&PodTopologySpread, spread(ignore, sel), &nodes);
    assert_eq!(st[0].reasons, vec![ERR_SKEW]);
}

#[test]
fn node_taints_policy_honor_skips_untolerated_nodes() {
    let mut nodes = two_zones(1, 0);
    let mut n = (*nodes[1].node).clone();
    n.spec = serde_json::from_value(json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}))
        .expect("spec");
    nodes[1].node = Arc::new(n);
    let c = zone_constraint(1, "DoNotSchedule");
    // Default Ignore: the tainted empty zone still counts, so z1 exceeds the skew.
    let st = run_filter(&PodTopologySpread, spread(c.clone(), json!({})), &nodes);
    assert_eq!(st[0].reasons, vec![ERR_SKEW]);
    let mut honor = c;
    honor["nodeTaintsPolicy"] = json!("Honor");
    let st = run_filter(&PodTopologySpread, spread(honor, json!({})), &nodes);
    assert!(st[0].is_success(), "{st:?}");
}

#[test]
fn match_label_keys_count_only_pods_with_the_same_values() {
    let mut c = zone_constraint(1, "DoNotSchedule");
    c["matchLabelKeys"] = json!(["version"]);
    // The placed pods are v1, the incoming v2: none count.
    assert!(
        run_filter(&PodTopologySpread, spread(c, json!({})), &two_zones(3, 0))
            .iter()
            .all(Status::is_success)
    );
}

#[test]
fn pods_in_other_namespaces_do_not_count() {
    let mut a = labelled_node("a", "z1");
    a.add_pod(&placed_pod(
        "x",
        "other",
        json!({"app": "web"}),
        json!({"containers": []}),
    ));
    let nodes = vec![a, labelled_node("b", "z2")];
    let p = spread(zone_constraint(1, "DoNotSchedule"), json!({}));
    assert!(
        run_filter(&PodTopologySpread, p, &nodes)
            .iter()
            .all(Status::is_success)
    );
}

#[test]
fn schedule_anyway_scores_the_less_loaded_domain_higher() {
    let p = spread(zone_constraint(1, "ScheduleAnyway"), json!({}));
    let s = run_score(&PodTopologySpread, p, &two_zones(2, 0));
    assert!(s[1] > s[0], "{s:?}");
    assert_eq!(s[1], 100);
    let p = spread(zone_constraint(1, "ScheduleAnyway"), json!({}));
    assert_eq!(
        run_score(&PodTopologySpread, p, &two_zones(1, 1)),
        vec![100, 100]
    );
}

#[test]
fn controller_owned_pods_get_default_spreading() {
    let owned = |name: &str| {
        let mut p = (*web(name).pod).clone();
        p.metadata.owner_references = serde_json::from_value(json!([{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]))
        .ok();
        PodInfo::new(Arc::new(p))
    };
    let s = run_score(&PodTopologySpread, owned("incoming"), &two_zones(2, 0));
    assert!(s[1] > s[0], "{s:?}");
    // Defaults never filter.
    let st = run_filter(&PodTopologySpread, owned("incoming"), &two_zones(9, 0));
    assert!(st.iter().all(Status::is_success));
    // An unowned pod without constraints is not spread.
    let nodes = two_zones(2, 0);
    assert!(PreFilterPlugin::pre_filter(&PodTopologySpread, &web("incoming"), &nodes).is_none());
}

#[test]
fn nodes_missing_any_constraints_key_are_not_counted() {
    // a (z1, empty) lacks `rack`, so with a rack constraint too, z1 is no domain for the
    // zone constraint: b's z2 (one pod) is the only domain, the minimum, and b may take it.
    let mut nodes = two_zones(0, 1);
    let mut n = (*nodes[1].node).clone();
    if let Some(l) = n.metadata.labels.as_mut() {
        l.insert("rack".into(), "r1".into());
    }
    nodes[1].node = Arc::new(n);
    let mut rack = zone_constraint(1, "DoNotSchedule");
    rack["topologyKey"] = json!("rack");
    let mut spec = json!({"containers": [], "topologySpreadConstraints": [
        zone_constraint(0, "DoNotSchedule"), rack]});
    spec["topologySpreadConstraints"][0]["maxSkew"] = json!(1);
    let p = placed_pod("incoming", "default", json!({"app": "web"}), spec);
    let st = run_filter(&PodTopologySpread, p, &nodes);
    assert_eq!(st[0].code, Code::UnschedulableAndUnresolvable);
    assert!(st[1].is_success(), "{st:?}");
}

#[test]
fn schedule_anyway_score_weights_counts_by_ln_domains_and_adds_max_skew_minus_one() {
    // Kubernetes: cnt × ln(domains + 2) + (maxSkew − 1); z1: 2 × ln 4 + 1, z2: 0 + 1.
    let p = spread(zone_constraint(2, "ScheduleAnyway"), json!({}));
    assert_eq!(
        run_score(&PodTopologySpread, p, &two_zones(2, 0)),
        vec![26, 100]
    );
}

#[test]
fn schedule_anyway_weights_by_the_feasible_nodes_domains_only() {
    // z3's node c is infeasible: two domains count (ln 4), not three (ln 5, giving 23).
    let mut nodes = two_zones(2, 0);
    nodes.push(labelled_node("c", "z3"));
    let mut p = spread(zone_constraint(2, "ScheduleAnyway"), json!({}));
    if let Some(s) = PreFilterPlugin::pre_filter(&PodTopologySpread, &p, &nodes) {
        p.state.insert(NAME, s);
    }
    let feasible: Vec<&NodeInfo> = nodes[..2].iter().collect();
    if let Some(s) = PodTopologySpread.pre_score(&p, &feasible) {
        p.state.insert_pre_score(NAME, s);
    }
    let mut s: Vec<i64> = feasible
        .iter()
        .map(|n| PodTopologySpread.score(&p, n))
        .collect();
    PodTopologySpread.normalize(&mut s);
    assert_eq!(s, vec![26, 100]);
}

#[test]
fn default_constraints_skip_a_missing_key_but_explicit_ones_score_zero() {
    // b lacks the zone label: under the defaults only hostname spreading applies to it.
    let mut nodes = two_zones(1, 0);
    let mut n = (*nodes[1].node).clone();
    if let Some(l) = n.metadata.labels.as_mut() {
        l.remove(ZONE);
    }
    nodes[1].node = Arc::new(n);
    let mut owned = (*web("incoming").pod).clone();
    owned.metadata.owner_references = serde_json::from_value(json!([{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]))
    .ok();
    let s = run_score(&PodTopologySpread, PodInfo::new(Arc::new(owned)), &nodes);
    assert_eq!(s[1], 100, "{s:?}");
    let mut c = zone_constraint(1, "ScheduleAnyway");
    c["topologyKey"] = json!(ZONE);
    let s = run_score(&PodTopologySpread, spread(c, json!({})), &nodes);
    assert_eq!(s[1], 0, "{s:?}");
}
