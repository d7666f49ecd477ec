//! Inter-pod anti-affinity and topology spread end to end, against the in-process API server
//! (`rudder-testkit`): pods are created through the API and the scheduler runs in this
//! process; the tests poll the pods (up to 30 s; no assertion depends on speed).

use std::collections::BTreeSet;
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
    _server: TestServer,
    api: Arc<dyn Api>,
    /// Stops the scheduler when the test ends, also on panic.
    _stop: DropGuard,
}

async fn cluster() -> Cluster {
    let server = TestServer::start().await.expect("server starts");
    let api = server.api();
    let cancel = CancellationToken::new();
    let cfg = rudder_scheduler::Config::new(rudder_scheduler::DEFAULT_SCHEDULER_NAME);
    tokio::spawn(rudder_scheduler::run(
        Arc::clone(&api),
        RealClock::shared(),
        cfg,
        cancel.clone(),
    ));
    Cluster {
        _server: server,
        api,
        _stop: cancel.drop_guard(),
    }
}

impl Cluster {
    async fn create(&self, kind: &str, ns: &str, body: Value) {
        let req = pb::CreateRequest {
            kind: Some(kind_ref("v1", kind)),
            namespace: ns.to_string(),
            json: Bytes::from(body.to_string()),
            options: None,
        };
        self.api.create(req).await.expect("create");
    }

    /// A Ready node with 4 cpu, labelled with its hostname and `zone`.
    async fn node(&self, name: &str, zone: &str) {
        let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
            "spec": {}});
        self.create("Node", "", n).await;
        let status = json!({"status": {
            "capacity": {"cpu": "4", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        let req = pb::PatchRequest {
            kind: Some(kind_ref("v1", "Node")),
            namespace: String::new(),
            name: name.to_string(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(status.to_string()),
            status: true,
            options: None,
        };
        self.api.patch(req).await.expect("node status");
    }

    async fn pod(&self, name: &str, labels: Value, extra: Value) {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m"}}}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": spec});
        self.create("Pod", "default", p).await;
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

    /// Waits for the pod to be bound and returns its node.
    async fn bound(&self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = self.pod_json(name).await;
            if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                return n.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not bound: {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for PodScheduled=False and returns its message.
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
                return c["message"].as_str().unwrap_or_default().to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not refused: {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn anti_affinity_by_host() -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
    ]}}})
}

#[tokio::test]
async fn anti_affinity_spreads_three_replicas_and_refuses_a_fourth() {
    let c = cluster().await;
    for (n, z) in [("n1", "z1"), ("n2", "z1"), ("n3", "z2")] {
        c.node(n, z).await;
    }
    // Created together: the later ones must see the earlier ones as assumed pods.
    for i in 0..3 {
        c.pod(
            &format!("web-{i}"),
            json!({"app": "web"}),
            anti_affinity_by_host(),
        )
        .await;
    }
    let mut nodes = BTreeSet::new();
    for i in 0..3 {
        nodes.insert(c.bound(&format!("web-{i}")).await);
    }
    assert_eq!(nodes.len(), 3, "one replica per node: {nodes:?}");
    c.pod("web-3", json!({"app": "web"}), anti_affinity_by_host())
        .await;
    assert_eq!(
        c.unschedulable_message("web-3").await,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    assert_eq!(c.pod_json("web-3").await.pointer("/spec/nodeName"), None);
}

#[tokio::test]
async fn topology_spread_do_not_schedule_keeps_zones_within_max_skew() {
    let c = cluster().await;
    for (n, z) in [("a1", "z1"), ("a2", "z1"), ("b1", "z2")] {
        c.node(n, z).await;
    }
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "db"}}}]});
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("db-{i}");
        c.pod(&name, json!({"app": "db"}), spread.clone()).await;
        let node = c.bound(&name).await;
        zones.push(if node.starts_with('a') { "z1" } else { "z2" });
    }
    let z1 = zones.iter().filter(|z| **z == "z1").count();
    assert_eq!(z1, 2, "two per zone: {zones:?}");
}
