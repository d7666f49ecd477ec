//! The namespace and service account controllers on the in-process cluster (real API server,
//! scheduler, simulated nodes, every controller): a deleted namespace leaves nothing behind
//! (pods deleted gracefully and before the rest), content with a finalizer keeps it
//! Terminating and named in its conditions, creates into it are refused, and every namespace
//! gets a `default` ServiceAccount that comes back when deleted. Waits poll up to 30 s.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Cluster;
use futures::StreamExt;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_client::{ClientError, WatchEvent};
use serde_json::{Value, json};

async fn namespace(c: &Cluster, name: &str) {
    c.create(
        "v1",
        "Namespace",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await;
}

async fn delete(c: &Cluster, api_version: &str, kind: &str, ns: &str, name: &str) {
    c.api
        .delete(pb::DeleteRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("delete {kind} {name}: {e}"));
}

async fn wait_namespace_gone(c: &Cluster, name: &str) {
    c.wait_for(&format!("namespace {name} gone"), || async {
        match c.get("v1", "Namespace", "", name).await {
            None => Ok(()),
            Some(ns) => Err(format!("still there: {}", ns["status"])),
        }
    })
    .await;
}

/// Every object of every namespaced kind the server serves, in `ns`, as `kind/name`.
async fn everything_in(c: &Cluster, ns: &str) -> Vec<String> {
    let d = c.api.api_resources().await.expect("discovery");
    let mut out = Vec::new();
    for r in d.resources.iter().filter(|r| r.namespaced && r.preferred) {
        let av = if r.group.is_empty() {
            r.version.clone()
        } else {
            format!("{}/{}", r.group, r.version)
        };
        for o in c.list(&av, &r.kind, ns).await {
            out.push(format!(
                "{}/{}",
                r.kind,
                o["metadata"]["name"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// Deletion events of one kind in `ns`, with the last version seen before each deletion.
fn record_deletions(
    c: &Cluster,
    kind: &str,
    ns: &str,
) -> tokio::task::JoinHandle<Vec<(Value, Value, u64)>> {
    let api = c.api.clone();
    let (kind, ns) = (kind.to_string(), ns.to_string());
    tokio::spawn(async move {
        let mut w = api
            .watch(pb::WatchRequest {
                kind: Some(kind_ref("v1", &kind)),
                namespace: ns,
                ..Default::default()
            })
            .await
            .expect("watch");
        let mut last: BTreeMap<String, Value> = BTreeMap::new();
        let mut out = Vec::new();
        while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(30), w.next()).await {
            match ev {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    last.insert(
                        o.name.clone(),
                        serde_json::from_slice(&o.json).expect("json"),
                    );
                }
                WatchEvent::Deleted(o) => {
                    let gone: Value = serde_json::from_slice(&o.json).expect("json");
                    let before = last.remove(&o.name).unwrap_or(Value::Null);
                    out.push((before, gone, o.resource_version));
                    if last.is_empty() {
                        return out;
                    }
                }
                _ => {}
            }
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_leaves_nothing_behind() {
    let c = Cluster::start(2).await;
    let ns = "doomed";
    namespace(&c, ns).await;
    c.create(
        "v1",
        "ConfigMap",
        ns,
        json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}}),
    )
    .await;
    c.create(
        "v1",
        "Secret",
        ns,
        json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
    )
    .await;
    c.create(
        "v1",
        "Service",
        ns,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"port": 80}]}}),
    )
    .await;
    c.create(
        "apps/v1",
        "Deployment",
        ns,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 20,
                    "containers": [{"name": "c", "image": "web:1"}]}}}}),
    )
    .await;
    c.create(
        "batch/v1",
        "Job",
        ns,
        json!({"metadata": {"name": "once"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "job:1"}]}}}}),
    )
    .await;
    // A pod on a node that will stop: its deletion stays unconfirmed for a while.
    c.create(
        "v1",
        "Pod",
        ns,
        json!({"metadata": {"name": "stuck"}, "spec": {"nodeName": "node-2",
            "containers": [{"name": "c", "image": "app:1"}]}}),
    )
    .await;
    c.wait_for("4 pods running", || async {
        let pods = c.list("v1", "Pod", ns).await;
        let running = pods
            .iter()
            .filter(|p| p.pointer("/status/phase") == Some(&json!("Running")))
            .count();
        if running == 4 {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    })
    .await;
    c.wait_for("the default ServiceAccount", || async {
        c.get("v1", "ServiceAccount", ns, "default")
            .await
            .map(|_| ())
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let before = everything_in(&c, ns).await;
    for kind in [
        "ConfigMap/cfg",
        "Secret/s",
        "Service/web",
        "Deployment/web",
        "Job/once",
        "ServiceAccount/default",
    ] {
        assert!(before.iter().any(|o| o == kind), "{kind} in {before:?}");
    }
    let pods = record_deletions(&c, "Pod", ns);
    let configs = record_deletions(&c, "ConfigMap", ns);
    tokio::time::sleep(Duration::from_millis(200)).await;

    c.sim.stop_node("node-2");
    delete(&c, "v1", "Namespace", "", ns).await;

    // Pods first: while one is terminating, everything else stays, and the namespace says so.
    let held = c
        .wait_for("pods named as remaining", || async {
            let o = c
                .get("v1", "Namespace", "", ns)
                .await
                .ok_or("namespace gone")?;
            let cond = common::condition(&o, "NamespaceContentRemaining").cloned();
            match cond {
                Some(cond) if cond["status"] == "True" => Ok(cond),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let msg = held["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("Some resources are remaining: pods. has ") && !msg.contains(", "),
        "{msg}"
    );
    let cfg = c
        .get("v1", "ConfigMap", ns, "cfg")
        .await
        .expect("kept while pods remain");
    assert!(cfg["metadata"]["deletionTimestamp"].is_null(), "{cfg}");
    assert!(c.get("apps/v1", "Deployment", ns, "web").await.is_some());
    let stuck = c.get("v1", "Pod", ns, "stuck").await.expect("unconfirmed");
    assert!(stuck["metadata"]["deletionTimestamp"].is_string());

    // What an administrator does for pods on a dead node: force their deletion.
    for p in c.list("v1", "Pod", ns).await {
        let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
        let r = c
            .api
            .delete(pb::DeleteRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: ns.into(),
                name,
                grace_period_seconds: Some(0),
                ..Default::default()
            })
            .await;
        assert!(
            r.is_ok() || r.as_ref().is_err_and(ClientError::is_not_found),
            "{r:?}"
        );
    }
    wait_namespace_gone(&c, ns).await;
    let left = everything_in(&c, ns).await;
    assert!(left.is_empty(), "left behind: {left:?}");

    let pods = pods.await.expect("pod watch");
    let configs = configs.await.expect("configmap watch");
    assert_eq!(pods.len(), 4, "every pod deleted: {pods:?}");
    for (before, _, _) in &pods {
        let grace = before.pointer("/metadata/deletionGracePeriodSeconds");
        let expected = before
            .pointer("/spec/terminationGracePeriodSeconds")
            .cloned()
            .unwrap_or(json!(30));
        assert_eq!(
            grace,
            Some(&expected),
            "pods are deleted gracefully: {before}"
        );
    }
    let last_pod = pods.iter().map(|p| p.2).max().unwrap_or(0);
    let cfg = configs
        .iter()
        .find(|c| c.1["metadata"]["name"] == "cfg")
        .map(|c| c.2);
    assert!(
        cfg.is_some_and(|rv| rv > last_pod),
        "the ConfigMap goes after the last pod: {cfg:?} vs {last_pod}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_with_a_finalizer_keeps_the_namespace_terminating_until_released() {
    let c = Cluster::start(1).await;
    let ns = "held";
    namespace(&c, ns).await;
    c.create(
        "v1",
        "ConfigMap",
        ns,
        json!({"metadata": {"name": "keep", "finalizers": ["example.com/x"]}}),
    )
    .await;
    c.create(
        "v1",
        "ConfigMap",
        ns,
        json!({"metadata": {"name": "plain"}}),
    )
    .await;
    delete(&c, "v1", "Namespace", "", ns).await;

    let ns_obj = c
        .wait_for("NamespaceFinalizersRemaining", || async {
            let o = c
                .get("v1", "Namespace", "", ns)
                .await
                .ok_or("namespace gone")?;
            match common::condition(&o, "NamespaceFinalizersRemaining") {
                Some(cond) if cond["status"] == "True" => Ok(o),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(ns_obj["status"]["phase"], "Terminating");
    let fin = common::condition(&ns_obj, "NamespaceFinalizersRemaining")
        .cloned()
        .unwrap_or_default();
    assert_eq!(fin["reason"], "SomeFinalizersRemain");
    assert_eq!(
        fin["message"],
        "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"
    );
    let rem = common::condition(&ns_obj, "NamespaceContentRemaining")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        rem["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert_eq!(ns_obj["spec"]["finalizers"], json!(["kubernetes"]));
    assert!(c.get("v1", "ConfigMap", ns, "plain").await.is_none());
    let keep = c
        .get("v1", "ConfigMap", ns, "keep")
        .await
        .expect("held back");
    assert!(keep["metadata"]["deletionTimestamp"].is_string());

    let refused = c
        .api
        .create(pb::CreateRequest {
            kind: Some(kind_ref("v1", "ConfigMap")),
            namespace: ns.into(),
            json: json!({"metadata": {"name": "late"}}).to_string().into(),
            options: None,
        })
        .await;
    match refused {
        Err(ClientError::Forbidden(m)) => {
            assert!(m.contains("because it is being terminated"), "{m}")
        }
        other => panic!("create into a terminating namespace: {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.get("v1", "Namespace", "", ns).await.is_some(),
        "held while the finalizer stays"
    );

    c.patch(
        "v1",
        "ConfigMap",
        ns,
        "keep",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    wait_namespace_gone(&c, ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account_that_comes_back() {
    let c = Cluster::start(1).await;
    let sa = |ns: &'static str| {
        let c = &c;
        async move { c.get("v1", "ServiceAccount", ns, "default").await }
    };
    c.wait_for("default/default", || async {
        sa("default")
            .await
            .map(|_| ())
            .ok_or_else(|| "none".to_string())
    })
    .await;
    namespace(&c, "team").await;
    let first = c
        .wait_for("team/default", || async {
            sa("team").await.ok_or_else(|| "none".to_string())
        })
        .await;
    delete(&c, "v1", "ServiceAccount", "team", "default").await;
    let again = c
        .wait_for("team/default made again", || async {
            match sa("team").await {
                Some(s) if s["metadata"]["uid"] != first["metadata"]["uid"] => Ok(s),
                Some(_) => Err("the old one".to_string()),
                None => Err("none".to_string()),
            }
        })
        .await;
    assert_eq!(again["metadata"]["name"], "default");

    // None in a namespace that is terminating: it goes with the namespace.
    delete(&c, "v1", "Namespace", "", "team").await;
    wait_namespace_gone(&c, "team").await;
}
