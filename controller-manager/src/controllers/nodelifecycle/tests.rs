//! The node lifecycle controller: zone states and rates as pure functions, then the whole
//! controller on the client's fake under paused time with simulated nodes (one stops
//! renewing its Lease, and comes back).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::config::LifecycleConfig;
use super::testutil::{Harness, condition, settle};
use super::zones::{Disruption, TokenBucket, ZoneState, zone_of, zone_rate, zone_state};
use crate::util::str_at;
use crate::util::taints::{NO_EXECUTE, NO_SCHEDULE, UNREACHABLE, has_taint, taints};

#[test]
fn zone_states_as_kubernetes_computes_them() {
    let t = 0.55;
    assert_eq!(zone_state(&[true, true, true], t), ZoneState::Normal);
    assert_eq!(
        zone_state(&[false, false, false], t),
        ZoneState::FullDisruption
    );
    assert_eq!(
        zone_state(&[true, false, false, false], t),
        ZoneState::PartialDisruption
    );
    assert_eq!(
        zone_state(&[true, true, false, false], t),
        ZoneState::Normal,
        "two not-ready nodes are never a disruption"
    );
    assert_eq!(
        zone_state(&[true, true, true, false, false, false], t),
        ZoneState::Normal,
        "3 of 6 is below 0.55"
    );
}

#[test]
fn rates_follow_the_zone_state_and_size() {
    let cfg = LifecycleConfig::default();
    assert_eq!(zone_rate(ZoneState::Normal, 3, &cfg), 0.1);
    assert_eq!(zone_rate(ZoneState::FullDisruption, 3, &cfg), 0.1);
    assert_eq!(zone_rate(ZoneState::PartialDisruption, 50, &cfg), 0.0);
    assert_eq!(zone_rate(ZoneState::PartialDisruption, 51, &cfg), 0.01);
}

#[test]
fn zones_come_from_region_and_zone_labels() {
    let n = |labels: Value| json!({"metadata": {"labels": labels}});
    assert_eq!(zone_of(&n(json!({}))), "");
    assert_eq!(
        zone_of(&n(
            json!({"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "a"})
        )),
        "eu:a"
    );
    assert_eq!(
        zone_of(&n(json!({"failure-domain.beta.kubernetes.io/zone": "b"}))),
        ":b"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_grants_one_per_period_without_bursts() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(0.1, t0);
    assert!(b.try_take(t0));
    assert!(!b.try_take(t0 + Duration::from_secs(9)));
    assert!(b.try_take(t0 + Duration::from_secs(10)));
    // Idle for a minute: still one token, not six.
    let later = t0 + Duration::from_secs(70);
    assert!(b.try_take(later));
    assert!(!b.try_take(later + Duration::from_secs(1)));
    b.refund(later + Duration::from_secs(1));
    assert!(b.try_take(later + Duration::from_secs(1)));
    let mut never = TokenBucket::new(0.0, t0);
    assert!(!never.try_take(t0 + Duration::from_secs(1000)));
}

fn node(name: &str, ready: &str, zone: &str) -> (String, Value) {
    (
        name.to_string(),
        json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}),
    )
}

fn refs(nodes: &[(String, Value)]) -> Vec<(String, &Value)> {
    nodes.iter().map(|(n, v)| (n.clone(), v)).collect()
}

fn untainted(_: &Value) -> bool {
    false
}

#[tokio::test(start_paused = true)]
async fn not_ready_nodes_are_tainted_one_pass_later_at_the_zones_rate() {
    let cfg = LifecycleConfig::default();
    let mut d = Disruption::default();
    let t0 = Instant::now();
    let mut nodes: Vec<(String, Value)> = (1..=5)
        .map(|i| node(&format!("n{i}"), "True", "a"))
        .collect();
    d.pass(&refs(&nodes), untainted, t0, &cfg);
    nodes[0] = node("n1", "Unknown", "a");
    nodes[1] = node("n2", "False", "a");
    let t1 = t0 + cfg.monitor_period;
    d.pass(&refs(&nodes), untainted, t1, &cfg);
    assert!(
        d.take_due(t1, |_| true).is_empty(),
        "first seen not ready: wait one pass"
    );
    let t2 = t1 + cfg.monitor_period;
    d.pass(&refs(&nodes), untainted, t2, &cfg);
    assert_eq!(d.zone(":a"), Some((ZoneState::Normal, 0.1)));
    assert_eq!(d.take_due(t2, |_| true), ["n1"], "one token: one node");
    assert!(d.take_due(t2 + Duration::from_secs(5), |_| true).is_empty());
    assert_eq!(d.take_due(t2 + Duration::from_secs(10), |_| true), ["n2"]);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_recovers_in_the_queue_costs_no_token() {
    let cfg = LifecycleConfig::default();
    let mut d = Disruption::default();
    let t0 = Instant::now();
    let nodes = vec![
        node("n1", "Unknown", ""),
        node("n2", "Unknown", ""),
        node("n3", "True", ""),
        node("n4", "True", ""),
    ];
    d.pass(&refs(&nodes), untainted, t0, &cfg);
    d.pass(&refs(&nodes), untainted, t0, &cfg);
    assert_eq!(d.take_due(t0, |n| n != "n1"), ["n2"]);
}

#[tokio::test(start_paused = true)]
async fn partial_disruption_of_a_small_zone_stops_tainting_a_large_one_slows_it() {
    let cfg = LifecycleConfig::default();
    let t0 = Instant::now();
    // Small zone: 3 of 4 down.
    let mut d = Disruption::default();
    let small: Vec<(String, Value)> = (1..=4)
        .map(|i| {
            node(
                &format!("s{i}"),
                if i == 1 { "True" } else { "Unknown" },
                "small",
            )
        })
        .collect();
    d.pass(&refs(&small), untainted, t0, &cfg);
    d.pass(&refs(&small), untainted, t0, &cfg);
    assert_eq!(d.zone(":small"), Some((ZoneState::PartialDisruption, 0.0)));
    assert!(
        d.take_due(t0 + Duration::from_secs(3600), |_| true)
            .is_empty()
    );
    // Large zone: 40 of 60 down.
    let mut d = Disruption::default();
    let large: Vec<(String, Value)> = (1..=60)
        .map(|i| {
            node(
                &format!("l{i:02}"),
                if i <= 20 { "True" } else { "Unknown" },
                "large",
            )
        })
        .collect();
    d.pass(&refs(&large), untainted, t0, &cfg);
    d.pass(&refs(&large), untainted, t0, &cfg);
    assert_eq!(d.zone(":large"), Some((ZoneState::PartialDisruption, 0.01)));
    assert_eq!(d.take_due(t0, |_| true).len(), 1);
    assert!(
        d.take_due(t0 + Duration::from_secs(99), |_| true)
            .is_empty()
    );
    assert_eq!(d.take_due(t0 + Duration::from_secs(100), |_| true).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn all_zones_down_stops_evictions_and_coming_back_resets() {
    let cfg = LifecycleConfig::default();
    let t0 = Instant::now();
    let mut d = Disruption::default();
    let up = vec![node("a1", "True", "a"), node("b1", "True", "b")];
    d.pass(&refs(&up), untainted, t0, &cfg);
    let down = vec![node("a1", "Unknown", "a"), node("b1", "Unknown", "b")];
    let out = d.pass(&refs(&down), untainted, t0, &cfg);
    assert!(out.entered_full_disruption);
    let out = d.pass(&refs(&down), untainted, t0, &cfg);
    assert!(!out.entered_full_disruption, "entered once");
    assert!(
        d.take_due(t0 + Duration::from_secs(600), |_| true)
            .is_empty()
    );
    assert_eq!(d.zone(":a"), Some((ZoneState::FullDisruption, 0.0)));
    // One zone alone fully down, the other back: that zone evicts at the normal rate.
    let half = vec![node("a1", "Unknown", "a"), node("b1", "True", "b")];
    let out = d.pass(&refs(&half), untainted, t0, &cfg);
    assert!(out.left_full_disruption);
    assert_eq!(d.zone(":a"), Some((ZoneState::FullDisruption, 0.1)));
    assert_eq!(d.zone(":b"), Some((ZoneState::Normal, 0.1)));
}

#[tokio::test(start_paused = true)]
async fn excluded_nodes_do_not_count_toward_a_zone() {
    let cfg = LifecycleConfig::default();
    let t0 = Instant::now();
    let mut d = Disruption::default();
    let (name, mut v) = node("x", "True", "a");
    v["metadata"]["labels"]["node.kubernetes.io/exclude-disruption"] = json!("");
    let nodes = vec![(name, v), node("a1", "Unknown", "a")];
    let out = d.pass(&refs(&nodes), untainted, t0, &cfg);
    assert!(
        out.entered_full_disruption,
        "the only counted node is down: the zone (and cluster) is fully disrupted"
    );
}

// === The controller on the fake ===

async fn harness(nodes: &[&str], grace: Duration) -> Harness {
    Harness::start(&["node-lifecycle"], nodes, |c| {
        c.lifecycle.grace_period = grace
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_turns_unknown_after_the_grace_period_and_recovers() {
    let h = harness(&["n1", "n2", "n3"], Duration::from_secs(40)).await;
    h.pod_on("web", "n3").await;
    settle(2).await;
    assert_eq!(
        condition(&h.get("Pod", "default", "web").await, "Ready")["status"],
        "True"
    );
    h.sim.stop_node("n3");
    settle(35).await;
    let n3 = h.get("Node", "", "n3").await;
    assert_eq!(
        condition(&n3, "Ready")["status"],
        "True",
        "within the grace period: {n3}"
    );

    settle(10).await;
    for n in ["n1", "n2"] {
        let node = h.get("Node", "", n).await;
        assert_eq!(
            condition(&node, "Ready")["status"],
            "True",
            "renewing: {node}"
        );
        assert!(taints(&node).is_empty(), "{node}");
    }
    let n3 = h.get("Node", "", "n3").await;
    for ty in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = condition(&n3, ty);
        assert_eq!(c["status"], "Unknown", "{ty}: {n3}");
        assert_eq!(c["reason"], "NodeStatusUnknown", "{ty}: {n3}");
        assert_eq!(c["message"], "Kubelet stopped posting node status.");
    }
    assert!(has_taint(taints(&n3), UNREACHABLE, NO_SCHEDULE), "{n3}");
    let pod = h.get("Pod", "default", "web").await;
    assert_eq!(
        condition(&pod, "Ready")["status"],
        "False",
        "marked not ready: {pod}"
    );

    // The zone pass waits one monitor period before the NoExecute taint.
    settle(11).await;
    let n3 = h.get("Node", "", "n3").await;
    let no_exec: Vec<&Value> = taints(&n3)
        .iter()
        .filter(|t| str_at(t, "/effect") == NO_EXECUTE)
        .collect();
    assert_eq!(no_exec.len(), 1, "{n3}");
    assert_eq!(no_exec[0]["key"], UNREACHABLE);
    assert!(no_exec[0]["timeAdded"].is_string(), "{n3}");

    h.sim.resume_node("n3").await.expect("resume");
    settle(2).await;
    let n3 = h.get("Node", "", "n3").await;
    assert_eq!(condition(&n3, "Ready")["status"], "True", "{n3}");
    assert!(taints(&n3).is_empty(), "taints removed once Ready: {n3}");
    settle(45).await;
    let n3 = h.get("Node", "", "n3").await;
    assert_eq!(
        condition(&n3, "Ready")["status"],
        "True",
        "renewing again: {n3}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_node_goes_silent_no_node_is_tainted_no_execute() {
    let h = harness(&["n1", "n2"], Duration::from_secs(10)).await;
    settle(2).await;
    h.sim.stop_node("n1");
    h.sim.stop_node("n2");
    settle(40).await;
    for n in ["n1", "n2"] {
        let node = h.get("Node", "", n).await;
        assert_eq!(condition(&node, "Ready")["status"], "Unknown", "{node}");
        assert!(has_taint(taints(&node), UNREACHABLE, NO_SCHEDULE), "{node}");
        assert!(
            !has_taint(taints(&node), UNREACHABLE, NO_EXECUTE),
            "the controller is the one cut off, most likely: {node}"
        );
    }
}
