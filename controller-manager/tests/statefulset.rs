//! StatefulSets on the in-process cluster (real API server, scheduler, simulated nodes):
//! ordered creation, scale-down and up keeping the claims, the partitioned rolling update in
//! reverse ordinal order, Parallel, and a controller restart mid scale-up. Waits poll up to
//! 30 s; no assertion depends on how fast anything is.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::{Cluster, int, pod_available};
use rudder_client::clock::RealClock;
use rudder_client::informer::InformerFactory;
use rudder_client::reflector::ReflectorEvent;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

fn statefulset(name: &str, replicas: i64, image: &str, extra: Value) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image,
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]},
        },
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn ours(pods: &[Value], app: &str) -> Vec<Value> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!(app)))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .cloned()
        .collect()
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// Waits until exactly `<name>-0 .. <name>-(n-1)` run `image`, available, and the status agrees.
async fn wait_ready(c: &Cluster, name: &str, n: i64, image: &str) -> Value {
    let want: BTreeSet<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    c.wait_for(&format!("{name} at {n} on {image}"), || async {
        let pods = ours(&c.list("v1", "Pod", NS).await, name);
        let names: BTreeSet<String> = pods.iter().map(name_of).collect();
        let right = names == want
            && pods
                .iter()
                .all(|p| pod_available(p) && p["spec"]["containers"][0]["image"] == image);
        let s = c
            .get("apps/v1", "StatefulSet", NS, name)
            .await
            .ok_or("gone")?;
        let status_ok = int(&s, "/status/observedGeneration") >= int(&s, "/metadata/generation")
            && int(&s, "/status/replicas") == n
            && int(&s, "/status/readyReplicas") == n
            && int(&s, "/status/availableReplicas") == n;
        if right && status_ok {
            Ok(s)
        } else {
            Err(format!("pods {names:?}; status {}", s["status"]))
        }
    })
    .await
}

/// Records pod ADDED events of `app` in order, with whether every lower ordinal was available
/// at that moment.
struct Recorder {
    added: Arc<Mutex<Vec<(String, bool)>>>,
    cancel: CancellationToken,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn record(c: &Cluster, app: &str) -> Recorder {
    let cancel = CancellationToken::new();
    let factory = InformerFactory::new(Arc::clone(&c.api), RealClock::shared());
    let pods = factory.for_kind("v1", "Pod");
    let mut events = pods.subscribe();
    factory.start(&cancel);
    let added = Arc::new(Mutex::new(Vec::new()));
    let (a, app, stop) = (Arc::clone(&added), app.to_string(), cancel.clone());
    tokio::spawn(async move {
        let mut available = BTreeSet::new();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => match e { Some(e) => e, None => return },
            };
            // Availability as of this event, from the events themselves in order (the cache
            // may already be ahead of the event being looked at).
            let p = match &ev {
                ReflectorEvent::Deleted(p) => {
                    available.remove(&p.name);
                    continue;
                }
                ReflectorEvent::Updated { new, .. } => {
                    if pod_available(&new.value) {
                        available.insert(new.name.clone());
                    } else {
                        available.remove(&new.name);
                    }
                    continue;
                }
                ReflectorEvent::Restarted(_) => continue,
                ReflectorEvent::Added(p) => p,
            };
            if p.value.pointer("/metadata/labels/app") != Some(&json!(app)) {
                continue;
            }
            let ord: i64 = p
                .name
                .rsplit_once('-')
                .and_then(|(_, o)| o.parse().ok())
                .unwrap_or(-1);
            let lower_ready = (0..ord).all(|i| available.contains(&format!("{app}-{i}")));
            a.lock().unwrap().push((p.name.clone(), lower_ready));
        }
    });
    Recorder { added, cancel }
}

async fn claim_uids(c: &Cluster, app: &str) -> BTreeMap<String, String> {
    c.list("v1", "PersistentVolumeClaim", NS)
        .await
        .iter()
        .filter(|pvc| pvc.pointer("/metadata/labels/app") == Some(&json!(app)))
        .map(|pvc| {
            (
                name_of(pvc),
                pvc["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_in_order_and_keeps_claims_across_scaling() {
    let c = Cluster::start(2).await;
    let rec = record(&c, "db");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    c.create(
        "apps/v1",
        "StatefulSet",
        NS,
        statefulset("db", 3, "db:v1", json!({})),
    )
    .await;
    wait_ready(&c, "db", 3, "db:v1").await;
    let added = rec.added.lock().unwrap().clone();
    let order: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["db-0", "db-1", "db-2"], "{added:?}");
    assert!(
        added.iter().all(|(_, lower_ready)| *lower_ready),
        "a pod was created before its predecessors were ready: {added:?}"
    );
    let pods = ours(&c.list("v1", "Pod", NS).await, "db");
    for p in &pods {
        let n = name_of(p);
        assert_eq!(p["spec"]["hostname"], n.as_str());
        assert_eq!(p["spec"]["subdomain"], "db");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            n.as_str()
        );
        let claim = format!("data-{n}");
        assert!(
            p["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == claim.as_str()),
            "{p}"
        );
    }
    let claims = claim_uids(&c, "db").await;
    assert_eq!(claims.len(), 3, "{claims:?}");

    // Down to 1 and up to 3 again: the same claims, by uid.
    c.patch(
        "apps/v1",
        "StatefulSet",
        NS,
        "db",
        json!({"spec": {"replicas": 1}}),
    )
    .await;
    wait_ready(&c, "db", 1, "db:v1").await;
    assert_eq!(
        claim_uids(&c, "db").await,
        claims,
        "claims kept on scale-down"
    );
    c.patch(
        "apps/v1",
        "StatefulSet",
        NS,
        "db",
        json!({"spec": {"replicas": 3}}),
    )
    .await;
    wait_ready(&c, "db", 3, "db:v1").await;
    assert_eq!(claim_uids(&c, "db").await, claims, "the same claims back");
    let added = rec.added.lock().unwrap().clone();
    let order: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["db-0", "db-1", "db-2", "db-1", "db-2"], "{added:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_goes_in_reverse_ordinal_order_down_to_the_partition() {
    let c = Cluster::start(2).await;
    let ru =
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
    c.create(
        "apps/v1",
        "StatefulSet",
        NS,
        statefulset("web", 4, "web:v1", ru),
    )
    .await;
    let before = wait_ready(&c, "web", 4, "web:v1").await;
    let v1 = before["status"]["currentRevision"].clone();
    let rec = record(&c, "web");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    c.patch(
        "apps/v1",
        "StatefulSet",
        NS,
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:v2",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}}}),
    )
    .await;
    let s = c
        .wait_for("web-1..3 on v2, web-0 on v1", || async {
            let pods = ours(&c.list("v1", "Pod", NS).await, "web");
            let images: BTreeMap<String, String> = pods
                .iter()
                .filter(|p| pod_available(p))
                .map(|p| {
                    let i = p["spec"]["containers"][0]["image"].as_str().unwrap_or("");
                    (name_of(p), i.to_string())
                })
                .collect();
            let want: BTreeMap<String, String> = [
                ("web-0", "web:v1"),
                ("web-1", "web:v2"),
                ("web-2", "web:v2"),
                ("web-3", "web:v2"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
            let s = c
                .get("apps/v1", "StatefulSet", NS, "web")
                .await
                .ok_or("gone")?;
            if images == want && int(&s, "/status/updatedReplicas") == 3 {
                Ok(s)
            } else {
                Err(format!("{images:?}; {}", s["status"]))
            }
        })
        .await;
    let added = rec.added.lock().unwrap().clone();
    let order: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["web-3", "web-2", "web-1"], "{added:?}");
    assert_eq!(s["status"]["currentRevision"], v1, "{s}");
    assert_ne!(s["status"]["updateRevision"], v1, "{s}");
    assert_eq!(int(&s, "/status/currentReplicas"), 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_does_not_wait_for_readiness() {
    let c = Cluster::start(2).await;
    let par = json!({"podManagementPolicy": "Parallel"});
    c.create(
        "apps/v1",
        "StatefulSet",
        NS,
        statefulset("par", 3, "par:notready", par),
    )
    .await;
    c.wait_for("three pods that never get ready", || async {
        let pods = ours(&c.list("v1", "Pod", NS).await, "par");
        let names: BTreeSet<String> = pods.iter().map(name_of).collect();
        let running = pods.iter().all(|p| p["status"]["phase"] == "Running");
        if names.len() == 3 && running {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    // OrderedReady with the same pods stops at the first.
    c.create(
        "apps/v1",
        "StatefulSet",
        NS,
        statefulset("ord", 3, "ord:notready", json!({})),
    )
    .await;
    c.wait_for("ord-0 running", || async {
        let pods = ours(&c.list("v1", "Pod", NS).await, "ord");
        if pods.len() == 1 && pods[0]["status"]["phase"] == "Running" {
            Ok(())
        } else {
            Err(format!("{} pods", pods.len()))
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(ours(&c.list("v1", "Pod", NS).await, "ord").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_controllers_mid_scale_up_finish_without_an_extra_pod() {
    let mut c = Cluster::start(2).await;
    let rec = record(&c, "kv");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Each pod must be available for a second before the next: the restart lands mid-way.
    let slow = json!({"minReadySeconds": 1});
    c.create(
        "apps/v1",
        "StatefulSet",
        NS,
        statefulset("kv", 5, "kv:v1", slow),
    )
    .await;
    let at_kill = c
        .wait_for("two pods of five", || async {
            let n = ours(&c.list("v1", "Pod", NS).await, "kv").len();
            if n >= 2 {
                Ok(n)
            } else {
                Err(format!("{n} pods"))
            }
        })
        .await;
    c.kill_controllers().await;
    assert!(at_kill < 5, "{at_kill} pods before the restart");
    c.start_controllers();
    wait_ready(&c, "kv", 5, "kv:v1").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let added = rec.added.lock().unwrap().clone();
    let order: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["kv-0", "kv-1", "kv-2", "kv-3", "kv-4"], "{added:?}");
    assert_eq!(claim_uids(&c, "kv").await.len(), 5);
}
