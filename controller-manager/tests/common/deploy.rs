//! Deployment helpers shared by the Deployment tests: manifests, ReplicaSets by revision, and
//! waiting for a rollout to complete.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Cluster, condition, int, pod_available};

pub const NS: &str = "default";

pub fn deployment(name: &str, replicas: i64, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    })
}

pub fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// ReplicaSets of deployment `name` by revision: (name, spec.replicas, image).
pub async fn sets_by_revision(c: &Cluster, name: &str) -> BTreeMap<i64, (String, i64, String)> {
    c.list("apps/v1", "ReplicaSet", NS)
        .await
        .into_iter()
        .filter(|rs| rs.pointer("/metadata/ownerReferences/0/name") == Some(&json!(name)))
        .map(|rs| {
            let rev = rs
                .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let image = rs
                .pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let n = rs["metadata"]["name"].as_str().unwrap_or("").to_string();
            (rev, (n, int(&rs, "/spec/replicas"), image))
        })
        .collect()
}

/// Waits until the deployment's rollout is complete for `image`: every replica updated and
/// available, the old ReplicaSets at zero.
pub async fn wait_complete(c: &Cluster, name: &str, image: &str) -> Value {
    c.wait_for(
        &format!("deployment {name} complete on {image}"),
        || async {
            let d = c
                .get("apps/v1", "Deployment", NS, name)
                .await
                .ok_or("no deployment")?;
            let r = int(&d, "/spec/replicas");
            let done = int(&d, "/status/observedGeneration") >= int(&d, "/metadata/generation")
                && int(&d, "/status/updatedReplicas") == r
                && int(&d, "/status/availableReplicas") == r
                && int(&d, "/status/replicas") == r
                && condition(&d, "Progressing")
                    .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
            let pods = c.list("v1", "Pod", NS).await;
            let live: Vec<&Value> = pods
                .iter()
                .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!(name)))
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .collect();
            let right = live.len() as i64 == r
                && live
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == image && pod_available(p));
            if done && right {
                Ok(d)
            } else {
                Err(format!("status {} / {} live pods", d["status"], live.len()))
            }
        },
    )
    .await
}
