//! The scheduler against the in-process API server (`rudder-testkit`): nodes and pods are
//! created through the API, the scheduler runs in this process, and the tests poll the pods'
//! `spec.nodeName` (up to 30 s; no assertion depends on how fast anything is).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_testkit::TestServer;
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    server: TestServer,
    api: Arc<dyn Api>,
    /// Stops the scheduler when the test ends, also on panic.
    stop: Option<DropGuard>,
}

/// A server without a scheduler yet.
async fn cluster() -> Cluster {
    let server = TestServer::start().await.expect("server starts");
    let api = server.api();
    Cluster {
        server,
        api,
        stop: None,
    }
}

impl Cluster {
    fn start_scheduler(&mut self) {
        let cfg = rudder_scheduler::Config::new(rudder_scheduler::DEFAULT_SCHEDULER_NAME);
        self.start_scheduler_with(cfg);
    }

    fn start_scheduler_with(&mut self, cfg: rudder_scheduler::Config) {
        let cancel = CancellationToken::new();
        tokio::spawn(rudder_scheduler::run(
            Arc::clone(&self.api),
            RealClock::shared(),
            cfg,
            cancel.clone(),
        ));
        self.stop = Some(cancel.drop_guard());
    }

    async fn create(&self, kind: &str, ns: &str, body: Value) {
        let req = pb::CreateRequest {
            kind: Some(kind_ref("v1", kind)),
            namespace: ns.to_string(),
            json: Bytes::from(body.to_string()),
            options: None,
        };
        self.api.create(req).await.expect("create");
    }

    async fn patch(&self, kind: &str, ns: &str, name: &str, patch: Value, status: bool) {
        let req = pb::PatchRequest {
            kind: Some(kind_ref("v1", kind)),
            namespace: ns.to_string(),
            name: name.to_string(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(patch.to_string()),
            status,
            options: None,
        };
        self.api.patch(req).await.expect("patch");
    }

    /// A node with `cpu` and 4Gi allocatable, Ready unless `ready` is false.
    async fn node(&self, name: &str, cpu: &str, ready: bool, cordoned: bool) {
        let spec = json!({"unschedulable": cordoned});
        self.node_with(name, cpu, ready, json!({}), spec).await;
    }

    async fn node_with(&self, name: &str, cpu: &str, ready: bool, labels: Value, spec: Value) {
        let n = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        });
        self.create("Node", "", n).await;
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }});
        self.patch("Node", "", name, status, true).await;
    }

    async fn pod(&self, name: &str, cpu: &str) {
        self.pod_with(name, cpu, json!({})).await;
    }

    /// A pod requesting `cpu`, with `extra` merged into its spec.
    async fn pod_with(&self, name: &str, cpu: &str, extra: Value) {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu}}}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        });
        self.create("Pod", "default", p).await;
    }

    /// Waits for the pod's PodScheduled=False condition and returns its message.
    async fn unschedulable_message(&self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = self.pod_json(name).await;
            let cond = p
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned());
            if let Some(c) = cond
                && c["status"] == "False"
            {
                assert_eq!(c["reason"], "Unschedulable", "{c}");
                return c["message"].as_str().unwrap_or_default().to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} has no PodScheduled=False within {WAIT:?}: {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a FailedScheduling Event about the pod and returns its message.
    async fn failed_scheduling_event(&self, pod: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let list = self
                .api
                .list(pb::ListRequest {
                    kind: Some(kind_ref("v1", "Event")),
                    namespace: "default".into(),
                    ..Default::default()
                })
                .await
                .expect("list events");
            for o in &list.items {
                let e: Value = serde_json::from_slice(&o.json).expect("event json");
                if e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == pod {
                    return e["message"].as_str().unwrap_or_default().to_string();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no FailedScheduling event for {pod} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pod_json(&self, name: &str) -> Value {
        let o = self
            .api
            .get(pb::GetRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: "default".into(),
                name: name.into(),
                allow_stale: false,
            })
            .await
            .expect("get pod");
        serde_json::from_slice(&o.json).expect("pod json")
    }

    async fn node_of(&self, name: &str) -> Option<String> {
        self.pod_json(name)
            .await
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(String::from)
    }

    /// Waits (up to [`WAIT`]) for the pod to be bound, and returns its node.
    async fn bound(&self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(n) = self.node_of(name).await {
                return n;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} not bound within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn binds_where_resources_fit_and_skips_cordoned_and_unready_nodes() {
    let mut c = cluster().await;
    c.start_scheduler();
    c.node("small", "1", true, false).await;
    c.node("cordoned", "8", true, true).await;
    c.node("unready", "8", false, false).await;
    c.pod("fits", "500m").await;
    assert_eq!(c.bound("fits").await, "small");
    c.pod("big", "2").await;
    // A pod scheduled later is bound after `big` was tried, so `big` has had its attempt.
    c.pod("probe", "100m").await;
    assert_eq!(c.bound("probe").await, "small");
    assert_eq!(c.node_of("big").await, None, "no node has 2 cpu free");
    // Uncordoning is a node event: the unschedulable pod is retried and fits now.
    c.patch(
        "Node",
        "",
        "cordoned",
        json!({"spec": {"unschedulable": false}}),
        false,
    )
    .await;
    assert_eq!(c.bound("big").await, "cordoned");
    c.server.shutdown().await;
}

#[tokio::test]
async fn a_burst_is_spread_by_assumed_pods() {
    let mut c = cluster().await;
    c.node("a", "1", true, false).await;
    c.node("b", "1", true, false).await;
    // Each fits only alone on a node: two on one node would exceed its cpu. All are pending
    // before the scheduler starts, so its cycles run back to back. (tests/cycle.rs proves the
    // assumed-pod bookkeeping deterministically; this is the same over the wire.)
    for i in 0..4 {
        c.pod(&format!("p{i}"), "600m").await;
    }
    c.start_scheduler();
    let mut nodes = vec![c.bound("p0").await, c.bound("p1").await];
    nodes.sort();
    assert_eq!(nodes, vec!["a", "b"]);
    // The other two fit nowhere, whatever the order of binding and watch events.
    for p in ["p2", "p3"] {
        assert_eq!(c.node_of(p).await, None, "{p} must not be bound");
    }
    c.server.shutdown().await;
}

#[tokio::test]
async fn taints_and_selectors_decide_and_a_pod_that_fits_nowhere_is_told_why() {
    let mut c = cluster().await;
    c.start_scheduler();
    let taint = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
    c.node_with("gpu", "4", true, json!({}), taint).await;
    c.node_with("a", "1", true, json!({"zone": "a"}), json!({}))
        .await;
    c.node_with("b", "1", true, json!({"zone": "b"}), json!({}))
        .await;
    c.pod("big", "2").await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
                2 Insufficient cpu.";
    assert_eq!(c.unschedulable_message("big").await, want);
    assert_eq!(c.failed_scheduling_event("big").await, want);
    assert_eq!(c.node_of("big").await, None);
    let tolerates = json!({"tolerations": [{"key": "dedicated", "operator": "Equal",
        "value": "gpu", "effect": "NoSchedule"}]});
    c.pod_with("tolerant", "2", tolerates).await;
    assert_eq!(c.bound("tolerant").await, "gpu");
    c.pod_with("zoned", "100m", json!({"nodeSelector": {"zone": "b"}}))
        .await;
    assert_eq!(c.bound("zoned").await, "b");
    let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]}]}}}});
    c.pod_with("not-b", "100m", affinity).await;
    assert_eq!(c.bound("not-b").await, "a");
    // Preferred affinity outweighs b being the busier node.
    let prefers = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
        [{"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}});
    c.pod_with("prefers-b", "100m", prefers).await;
    assert_eq!(c.bound("prefers-b").await, "b");
    c.server.shutdown().await;
}

#[tokio::test]
async fn a_large_cluster_is_searched_in_turns_from_a_rotating_start() {
    let mut c = cluster().await;
    for i in 0..200 {
        c.node(&format!("n{i:03}"), "4", true, false).await;
    }
    let mut cfg = rudder_scheduler::Config::new(rudder_scheduler::DEFAULT_SCHEDULER_NAME);
    // 10% of 200 is below the floor of 100 nodes: each cycle looks at 100.
    cfg.percentage_of_nodes_to_score = 10;
    c.start_scheduler_with(cfg);
    c.pod("p0", "100m").await;
    assert_eq!(c.bound("p0").await, "n000");
    // Every node is equal but n000: scoring all of them would pick n001. The second cycle
    // starts where the first stopped and sees only n100..n199.
    c.pod("p1", "100m").await;
    assert_eq!(c.bound("p1").await, "n100");
    c.pod("p2", "100m").await;
    assert_eq!(c.bound("p2").await, "n001", "the search wraps around");
    c.server.shutdown().await;
}
