//! DaemonSets on the in-process cluster (real API server, scheduler, simulated nodes): one pod
//! per node as nodes join and stop matching, rolling updates within maxUnavailable, OnDelete,
//! and failed pods replaced. Waits poll up to 30 s; no assertion depends on how fast anything is.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::{Cluster, int, pod_available};
use rudder_client::clock::RealClock;
use rudder_client::informer::InformerFactory;
use rudder_testkit::NodeSim;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

fn daemonset(name: &str, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    // Nodes labelled `excluded` are not for this DaemonSet.
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "excluded", "operator": "DoesNotExist"}]}]}}},
                    "containers": [{"name": "c", "image": image}],
                },
            },
        },
    })
}

fn rolling(unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": unavailable, "maxSurge": 0}})
}

fn ours<'a>(pods: &'a [Value], app: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!(app)))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

/// Waits until the DaemonSet has exactly one available pod of `image` on each of `nodes` and
/// none elsewhere, and its status says so.
async fn wait_settled(c: &Cluster, name: &str, image: &str, nodes: &[&str]) -> Value {
    let want: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    c.wait_for(
        &format!("daemonset {name} on {nodes:?} with {image}"),
        || async {
            let pods = c.list("v1", "Pod", NS).await;
            let live = ours(&pods, name);
            let placed: BTreeMap<String, usize> = live.iter().fold(BTreeMap::new(), |mut m, p| {
                let n = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
                *m.entry(n).or_default() += 1;
                m
            });
            let right = placed.keys().cloned().collect::<BTreeSet<_>>() == want
                && placed.values().all(|&n| n == 1)
                && live
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == image && pod_available(p));
            let ds = c
                .get("apps/v1", "DaemonSet", NS, name)
                .await
                .ok_or("no daemonset")?;
            let n = nodes.len() as i64;
            let status_ok = int(&ds, "/status/observedGeneration")
                >= int(&ds, "/metadata/generation")
                && int(&ds, "/status/desiredNumberScheduled") == n
                && int(&ds, "/status/currentNumberScheduled") == n
                && int(&ds, "/status/numberAvailable") == n
                && int(&ds, "/status/numberReady") == n
                && int(&ds, "/status/updatedNumberScheduled") == n
                && int(&ds, "/status/numberMisscheduled") == 0
                && int(&ds, "/status/numberUnavailable") == 0;
            if right && status_ok {
                Ok(ds)
            } else {
                Err(format!("pods per node {placed:?}; status {}", ds["status"]))
            }
        },
    )
    .await
}

async fn set_image(c: &Cluster, name: &str, image: &str) {
    c.patch(
        "apps/v1",
        "DaemonSet",
        NS,
        name,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_node_as_nodes_join_and_stop_matching() {
    let c = Cluster::start(3).await;
    c.create(
        "apps/v1",
        "DaemonSet",
        NS,
        daemonset("agent", "agent:v1", rolling(json!(1))),
    )
    .await;
    let ds = wait_settled(&c, "agent", "agent:v1", &["node-1", "node-2", "node-3"]).await;
    // Each pod went through the scheduler, pinned by node affinity, with the daemon labels.
    let pods = c.list("v1", "Pod", NS).await;
    for p in ours(&pods, "agent") {
        let terms = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(
            terms[0]["matchFields"][0]["values"][0], p["spec"]["nodeName"],
            "{p}"
        );
        assert!(
            p["metadata"]["labels"]["controller-revision-hash"].is_string(),
            "{p}"
        );
        assert_eq!(
            p["metadata"]["labels"]["pod-template-generation"], "1",
            "{p}"
        );
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["uid"],
            ds["metadata"]["uid"]
        );
    }
    let revs = c.list("apps/v1", "ControllerRevision", NS).await;
    assert_eq!(revs.len(), 1, "{revs:?}");
    assert_eq!(revs[0]["revision"], 1);

    // A fourth node joins: it gets a pod.
    let _node4 = NodeSim::start(Arc::clone(&c.api), RealClock::shared(), &["node-4"])
        .await
        .expect("node-4 registers");
    wait_settled(
        &c,
        "agent",
        "agent:v1",
        &["node-1", "node-2", "node-3", "node-4"],
    )
    .await;

    // node-2 is labelled out: its pod goes, the others stay.
    let before: BTreeSet<String> = ours(&c.list("v1", "Pod", NS).await, "agent")
        .iter()
        .filter(|p| p["spec"]["nodeName"] != "node-2")
        .map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string())
        .collect();
    c.patch(
        "v1",
        "Node",
        "",
        "node-2",
        json!({"metadata": {"labels": {"excluded": "yes"}}}),
    )
    .await;
    wait_settled(&c, "agent", "agent:v1", &["node-1", "node-3", "node-4"]).await;
    let after: BTreeSet<String> = ours(&c.list("v1", "Pod", NS).await, "agent")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(before, after, "pods on matching nodes were left alone");
}

/// Records every moment more than `max` of `nodes` lacked an available pod of `app`.
struct Watch {
    violations: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn watch_unavailable(c: &Cluster, app: &str, nodes: &[&str], max: usize) -> Watch {
    let cancel = CancellationToken::new();
    let factory = InformerFactory::new(Arc::clone(&c.api), RealClock::shared());
    let pods = factory.for_kind("v1", "Pod");
    let mut events = pods.subscribe();
    factory.start(&cancel);
    let violations = Arc::new(Mutex::new(Vec::new()));
    let (v, app, stop) = (Arc::clone(&violations), app.to_string(), cancel.clone());
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    tokio::spawn(async move {
        pods.reader().wait_until_synced().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => if e.is_none() { return },
            }
            let served: BTreeSet<String> = pods
                .reader()
                .list()
                .iter()
                .map(|p| &p.value)
                .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!(app)))
                .filter(|p| pod_available(p))
                .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
                .collect();
            let without: Vec<&String> = nodes.iter().filter(|n| !served.contains(*n)).collect();
            if without.len() > max {
                v.lock()
                    .unwrap()
                    .push(format!("no available pod on {without:?}"));
            }
        }
    });
    Watch { violations, cancel }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_never_leaves_more_than_max_unavailable_nodes_without_a_pod() {
    let c = Cluster::start(3).await;
    let nodes = ["node-1", "node-2", "node-3"];
    c.create(
        "apps/v1",
        "DaemonSet",
        NS,
        daemonset("log", "log:v1", rolling(json!(1))),
    )
    .await;
    wait_settled(&c, "log", "log:v1", &nodes).await;
    let watch = watch_unavailable(&c, "log", &nodes, 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        watch.violations.lock().unwrap().is_empty(),
        "broken before the update"
    );
    set_image(&c, "log", "log:v2").await;
    let ds = wait_settled(&c, "log", "log:v2", &nodes).await;
    let violations = watch.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "more than one node unserved: {violations:?}"
    );
    assert_eq!(int(&ds, "/status/observedGeneration"), 2);
    let mut revs: Vec<(i64, String)> = c
        .list("apps/v1", "ControllerRevision", NS)
        .await
        .iter()
        .map(|r| {
            let image = r["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (int(r, "/revision"), image)
        })
        .collect();
    revs.sort();
    assert_eq!(revs, [(1, "log:v1".to_string()), (2, "log:v2".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_replaces_only_the_pods_deleted() {
    let c = Cluster::start(2).await;
    let nodes = ["node-1", "node-2"];
    c.create(
        "apps/v1",
        "DaemonSet",
        NS,
        daemonset("od", "od:v1", json!({"type": "OnDelete"})),
    )
    .await;
    wait_settled(&c, "od", "od:v1", &nodes).await;
    set_image(&c, "od", "od:v2").await;
    c.wait_for("the new revision observed", || async {
        let ds = c
            .get("apps/v1", "DaemonSet", NS, "od")
            .await
            .ok_or("gone")?;
        let revs = c.list("apps/v1", "ControllerRevision", NS).await.len();
        if int(&ds, "/status/observedGeneration") == 2
            && int(&ds, "/status/updatedNumberScheduled") == 0
            && revs == 2
        {
            Ok(())
        } else {
            Err(format!("{} with {revs} revisions", ds["status"]))
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pods = c.list("v1", "Pod", NS).await;
    let live = ours(&pods, "od");
    assert!(
        live.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "od:v1"),
        "{live:?}"
    );
    let victim = live
        .iter()
        .find(|p| p["spec"]["nodeName"] == "node-1")
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .expect("a pod on node-1");
    let req = rudder_client::proto::DeleteRequest {
        kind: Some(rudder_client::conn::kind_ref("v1", "Pod")),
        namespace: NS.into(),
        name: victim,
        ..Default::default()
    };
    c.api.delete(req).await.expect("delete");
    c.wait_for("node-1 on v2, node-2 still on v1", || async {
        let pods = c.list("v1", "Pod", NS).await;
        let images: BTreeMap<String, String> = ours(&pods, "od")
            .iter()
            .filter(|p| pod_available(p))
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        let want = BTreeMap::from([
            ("node-1".to_string(), "od:v2".to_string()),
            ("node-2".to_string(), "od:v1".to_string()),
        ]);
        if images == want {
            Ok(())
        } else {
            Err(format!("{images:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_daemon_pods_are_replaced_with_a_warning() {
    let c = Cluster::start(1).await;
    c.create(
        "apps/v1",
        "DaemonSet",
        NS,
        daemonset("bad", "bad:fail", rolling(json!(1))),
    )
    .await;
    c.wait_for("a FailedDaemonPod event and a second pod", || async {
        let events = c.list("v1", "Event", NS).await;
        let warned = events.iter().any(|e| {
            e["reason"] == "FailedDaemonPod"
                && e["type"] == "Warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("will try to kill it"))
        });
        let created = events
            .iter()
            .filter(|e| e["reason"] == "SuccessfulCreate" && e["involvedObject"]["name"] == "bad")
            .map(|e| int(e, "/count").max(1))
            .sum::<i64>();
        if warned && created >= 2 {
            Ok(())
        } else {
            Err(format!("warned {warned}, {created} creations"))
        }
    })
    .await;
}
