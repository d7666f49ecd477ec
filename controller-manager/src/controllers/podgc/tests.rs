//! Pod GC: what each pass picks, then the collector on the fake under paused time.

use std::time::Duration;

use rudder_client::cache::Store;
use serde_json::json;

use super::*;
use crate::controllers::nodelifecycle::testutil::{Harness, settle};

fn pod(name: &str, node: &str, phase: &str, created: &str) -> Arc<CachedObject> {
    let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": created},
        "spec": {"nodeName": node}, "status": {"phase": phase}});
    Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
}

fn names(v: &[Arc<CachedObject>]) -> Vec<&str> {
    v.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
    let mut evicted = (*pod("e", "n", "Failed", "2025-01-03T00:00:00Z")).clone();
    evicted.value["status"]["reason"] = json!("Evicted");
    let pods = vec![
        pod("new", "n", "Succeeded", "2025-01-04T00:00:00Z"),
        pod("old", "n", "Failed", "2025-01-01T00:00:00Z"),
        pod("mid", "n", "Succeeded", "2025-01-02T00:00:00Z"),
        Arc::new(evicted),
        pod("running", "n", "Running", "2024-01-01T00:00:00Z"),
    ];
    assert_eq!(names(&terminated_surplus(&pods, 2)), ["e", "old"]);
    assert!(terminated_surplus(&pods, 4).is_empty());
    assert!(terminated_surplus(&pods, 0).is_empty(), "0 turns it off");
}

fn node_cache(nodes: &[Value]) -> Reader {
    let (mut store, reader) = Store::new();
    let objs = nodes
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or("");
            Arc::new(CachedObject::new("v1", "Node", "", name, 1, n.clone()))
        })
        .collect();
    store.replace(objs);
    reader
}

#[test]
fn terminating_pods_go_only_from_out_of_service_not_ready_nodes_or_unscheduled() {
    let node = |name: &str, ready: &str, oos: bool| {
        let taints = if oos {
            json!([{"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}])
        } else {
            json!([])
        };
        json!({"metadata": {"name": name}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    };
    let nodes = node_cache(&[
        node("dead", "False", true),
        node("up", "True", true),
        node("down", "Unknown", false),
    ]);
    let deleting = |name: &str, n: &str| {
        let mut p = (*pod(name, n, "Running", "2025-01-01T00:00:00Z")).clone();
        p.value["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:01:00Z");
        Arc::new(p)
    };
    let pods = vec![
        deleting("on-dead", "dead"),
        deleting("on-up", "up"),
        deleting("on-down", "down"),
        deleting("unscheduled", ""),
        pod("alive", "dead", "Running", "2025-01-01T00:00:00Z"),
    ];
    let stuck = stuck_terminating(&pods, &nodes);
    let mut got = names(&stuck);
    got.sort();
    assert_eq!(got, ["on-dead", "unscheduled"]);
}

#[tokio::test(start_paused = true)]
async fn a_missing_node_is_quarantined_before_its_pods_go() {
    let nodes = node_cache(&[json!({"metadata": {"name": "here"}})]);
    let pods = vec![
        pod("a", "gone", "Running", ""),
        pod("b", "here", "Running", ""),
    ];
    let mut q = Quarantine::default();
    let t0 = Instant::now();
    let period = Duration::from_secs(40);
    assert!(q.update(&pods, &nodes, t0, period).is_empty());
    assert!(
        q.update(&pods, &nodes, t0 + Duration::from_secs(39), period)
            .is_empty()
    );
    let overdue = q.update(&pods, &nodes, t0 + period, period);
    assert_eq!(overdue.into_iter().collect::<Vec<_>>(), ["gone"]);
    // A node that comes back leaves quarantine; missing again, it starts over.
    let back = node_cache(&[json!({"metadata": {"name": "gone"}})]);
    assert!(q.update(&pods, &back, t0 + period, period).is_empty());
    assert!(q.update(&pods, &nodes, t0 + period * 2, period).is_empty());
}

#[tokio::test(start_paused = true)]
async fn pods_of_a_deleted_node_are_force_deleted_after_the_quarantine() {
    let h = Harness::start(&["pod-garbage-collector"], &["n1", "n2"], |c| {
        c.podgc.period = Duration::from_secs(1);
        c.podgc.quarantine = Duration::from_secs(10);
    })
    .await;
    h.pod_on("lost", "n2").await;
    h.pod_on("kept", "n1").await;
    settle(2).await;
    h.sim.stop_node("n2");
    h.delete("Node", "", "n2").await;
    settle(8).await;
    assert!(
        h.find("Pod", "default", "lost").await.is_some(),
        "quarantined"
    );
    settle(5).await;
    assert!(
        h.find("Pod", "default", "lost").await.is_none(),
        "force-deleted"
    );
    assert!(h.find("Pod", "default", "kept").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn terminating_pods_on_an_out_of_service_node_and_surplus_terminated_pods_go() {
    let h = Harness::start(&["pod-garbage-collector"], &["n1", "n2"], |c| {
        c.podgc.period = Duration::from_secs(1);
        c.podgc.terminated_pod_gc_threshold = 2;
    })
    .await;
    for i in 1..=4 {
        let spec = json!({"containers": [{"name": "c", "image": "succeed"}]});
        h.pod_spec(&format!("done-{i}"), "n1", spec).await;
        settle(2).await;
    }
    h.pod_on("stuck", "n2").await;
    settle(1).await;
    h.sim.stop_node("n2");
    h.delete("Pod", "default", "stuck").await;
    settle(3).await;
    assert!(
        h.find("Pod", "default", "stuck").await.is_some(),
        "waits for its kubelet"
    );
    for i in [1, 2] {
        assert!(
            h.find("Pod", "default", &format!("done-{i}"))
                .await
                .is_none(),
            "oldest go"
        );
    }
    for i in [3, 4] {
        assert!(
            h.find("Pod", "default", &format!("done-{i}"))
                .await
                .is_some(),
            "newest stay"
        );
    }
    let ready_false = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    h.patch("Node", "", "n2", ready_false, true).await;
    let oos = json!({"spec": {"taints": [{"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}]}});
    h.patch("Node", "", "n2", oos, false).await;
    settle(3).await;
    assert!(
        h.find("Pod", "default", "stuck").await.is_none(),
        "out of service: forced"
    );
}
