//! ReplicationControllers (core/v1) on the in-process cluster: the selector defaulted from the
//! template's labels by the server, pods kept at `replicas` by the same code as ReplicaSets.

mod common;

use common::{Cluster, int, pod_available};
use serde_json::{Value, json};

const NS: &str = "default";

async fn running(c: &Cluster) -> usize {
    c.list("v1", "Pod", NS)
        .await
        .iter()
        .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!("legacy")))
        .filter(|p| pod_available(p))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_pods() {
    let c = Cluster::start(1).await;
    // No selector: the server fills it in from the template's labels, as Kubernetes does.
    let rc = c
        .create(
            "v1",
            "ReplicationController",
            NS,
            json!({
                "apiVersion": "v1", "kind": "ReplicationController",
                "metadata": {"name": "legacy", "namespace": NS},
                "spec": {"replicas": 3, "template": {
                    "metadata": {"labels": {"app": "legacy"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            }),
        )
        .await;
    assert_eq!(rc["spec"]["selector"], json!({"app": "legacy"}), "{rc}");
    assert_eq!(rc["metadata"]["labels"], json!({"app": "legacy"}), "{rc}");
    c.wait_for("3 pods", || async {
        let n = running(&c).await;
        let rc = c
            .get("v1", "ReplicationController", NS, "legacy")
            .await
            .unwrap_or(Value::Null);
        if n == 3 && int(&rc, "/status/readyReplicas") == 3 {
            Ok(())
        } else {
            Err(format!("{n} pods, {}", rc["status"]))
        }
    })
    .await;
    let pods = c.list("v1", "Pod", NS).await;
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController")
    );
    c.patch(
        "v1",
        "ReplicationController",
        NS,
        "legacy",
        json!({"spec": {"replicas": 1}}),
    )
    .await;
    c.wait_for("1 pod", || async {
        let n = running(&c).await;
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;
}
