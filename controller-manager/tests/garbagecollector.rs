//! The garbage collector on the in-process cluster (real API server, scheduler, simulated nodes,
//! every controller): deleting a Deployment takes its ReplicaSet and pods, deleting a ReplicaSet
//! its pods, deleting a Job its pods; a pod without owner references stays, as does a pod whose
//! owner is alive. Waits poll up to 30 s.

mod common;

use common::Cluster;
use common::deploy::{NS, deployment, rolling, wait_complete};
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::{Value, json};

async fn delete(c: &Cluster, api_version: &str, kind: &str, name: &str) {
    delete_with(c, api_version, kind, name, "").await;
}

fn labelled<'a>(objs: &'a [Value], app: &str) -> Vec<&'a Value> {
    objs.iter()
        .filter(|o| o.pointer("/metadata/labels/app") == Some(&json!(app)))
        .collect()
}

/// Waits until no object of `kind` labelled `app=<app>` is left, terminating ones included.
async fn wait_gone(c: &Cluster, api_version: &str, kind: &str, app: &str) {
    c.wait_for(&format!("every {kind} of {app} gone"), || async {
        let all = c.list(api_version, kind, NS).await;
        let left: Vec<String> = labelled(&all, app)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    })
    .await;
}

/// Waits until `n` pods labelled `app=<app>` are Running.
async fn wait_running(c: &Cluster, app: &str, n: usize) {
    c.wait_for(&format!("{n} pods of {app} running"), || async {
        let pods = c.list("v1", "Pod", NS).await;
        let running = labelled(&pods, app)
            .iter()
            .filter(|p| p.pointer("/status/phase") == Some(&json!("Running")))
            .count();
        if running == n {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    })
    .await;
}

fn bare_pod(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "app:1"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_owners_deletes_their_dependents_and_nothing_else() {
    let c = Cluster::start(2).await;
    // A pod nobody owns, with the labels a ReplicaSet below selects: it must survive both
    // deletions (the ReplicaSet would adopt it, so it carries another app label).
    c.create("v1", "Pod", NS, bare_pod("loner", "loner")).await;

    // A Deployment: its ReplicaSet and pods go with it.
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("web", 3, "web:v1", rolling(json!(1), json!(0))),
    )
    .await;
    wait_complete(&c, "web", "web:v1").await;
    let sets = c.list("apps/v1", "ReplicaSet", NS).await;
    assert_eq!(labelled(&sets, "web").len(), 1);
    delete(&c, "apps/v1", "Deployment", "web").await;
    wait_gone(&c, "apps/v1", "ReplicaSet", "web").await;
    wait_gone(&c, "v1", "Pod", "web").await;

    // A ReplicaSet deleted directly: its pods go.
    c.create(
        "apps/v1",
        "ReplicaSet",
        NS,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "api", "namespace": NS, "labels": {"app": "api"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "c", "image": "api:1"}]}}}}),
    )
    .await;
    wait_running(&c, "api", 2).await;
    // Alive owner: nothing is collected while it exists.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pods = c.list("v1", "Pod", NS).await;
    assert_eq!(labelled(&pods, "api").len(), 2, "pods of a live owner stay");
    delete(&c, "apps/v1", "ReplicaSet", "api").await;
    wait_gone(&c, "v1", "Pod", "api").await;

    let loner = c.get("v1", "Pod", NS, "loner").await.expect("loner kept");
    assert!(loner.pointer("/metadata/deletionTimestamp").is_none());
    assert_eq!(loner["status"]["phase"], "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_by_hand_deletes_its_pods() {
    let c = Cluster::start(1).await;
    c.create(
        "batch/v1",
        "Job",
        NS,
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "batch", "namespace": NS},
            "spec": {"parallelism": 2, "completions": 4,
                "template": {"metadata": {"labels": {"app": "batch"}},
                    "spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "worker:1"}]}}}}),
    )
    .await;
    wait_running(&c, "batch", 2).await;
    delete(&c, "batch/v1", "Job", "batch").await;
    wait_gone(&c, "v1", "Pod", "batch").await;
}

async fn delete_with(c: &Cluster, api_version: &str, kind: &str, name: &str, policy: &str) {
    c.api
        .delete(pb::DeleteRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: NS.into(),
            name: name.into(),
            propagation_policy: policy.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("delete {kind} {name} ({policy}): {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_releases_the_dependents_and_foreground_waits_for_them() {
    let c = Cluster::start(2).await;
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("orph", 2, "o:v1", rolling(json!(1), json!(0))),
    )
    .await;
    wait_complete(&c, "orph", "o:v1").await;
    // Orphan: the Deployment goes; its ReplicaSet stays, released, and keeps its pods.
    delete_with(&c, "apps/v1", "Deployment", "orph", "Orphan").await;
    c.wait_for("the Deployment gone", || async {
        match c.get("apps/v1", "Deployment", NS, "orph").await {
            None => Ok(()),
            Some(d) => Err(format!("still there: {}", d["metadata"])),
        }
    })
    .await;
    let sets = c.list("apps/v1", "ReplicaSet", NS).await;
    let rs = labelled(&sets, "orph");
    assert_eq!(rs.len(), 1, "the ReplicaSet stays");
    assert!(
        rs[0]["metadata"]
            .get("ownerReferences")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)),
        "released: {}",
        rs[0]["metadata"]
    );
    let rs_name = rs[0]["metadata"]["name"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    wait_running(&c, "orph", 2).await;
    // Foreground: the ReplicaSet waits, being deleted, until its pods are gone, then goes.
    delete_with(&c, "apps/v1", "ReplicaSet", &rs_name, "Foreground").await;
    let rs = c
        .get("apps/v1", "ReplicaSet", NS, &rs_name)
        .await
        .expect("held by its finalizer");
    assert!(
        rs["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        rs["metadata"]
    );
    assert_eq!(rs["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    wait_gone(&c, "v1", "Pod", "orph").await;
    wait_gone(&c, "apps/v1", "ReplicaSet", "orph").await;
}
