//! Crashes and replicas: the controller-manager killed in the middle of a rollout finishes it
//! with no extra pod, and two replicas under leader election never both act.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, int};
use rudder_client::clock::RealClock;
use rudder_client::informer::InformerFactory;
use rudder_client::leader::LeaderConfig;
use rudder_controller_manager::Config;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

/// Every pod uid of `app` ever seen, by image.
struct Seen {
    uids: Arc<Mutex<BTreeSet<(String, String)>>>,
    cancel: CancellationToken,
}

impl Drop for Seen {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Seen {
    fn start(c: &Cluster, app: &str) -> Seen {
        let cancel = CancellationToken::new();
        let factory = InformerFactory::new(Arc::clone(&c.api), RealClock::shared());
        let pods = factory.for_kind("v1", "Pod");
        let mut events = pods.subscribe();
        factory.start(&cancel);
        let uids = Arc::new(Mutex::new(BTreeSet::new()));
        let (u, app, stop) = (Arc::clone(&uids), app.to_string(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! { _ = stop.cancelled() => return, e = events.recv() => e };
                let Some(ev) = ev else { return };
                for p in ev.objects() {
                    if p.value.pointer("/metadata/labels/app") == Some(&json!(app)) {
                        let image = p
                            .value
                            .pointer("/spec/containers/0/image")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        u.lock()
                            .unwrap()
                            .insert((image.to_string(), p.uid().to_string()));
                    }
                }
            }
        });
        Seen { uids, cancel }
    }

    fn count(&self, image: &str) -> usize {
        self.uids
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| i == image)
            .count()
    }
}

fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    })
}

async fn complete(c: &Cluster, name: &str, image: &str) {
    c.wait_for(&format!("{name} on {image}"), || async {
        let d = c
            .get("apps/v1", "Deployment", NS, name)
            .await
            .ok_or("gone")?;
        let r = int(&d, "/spec/replicas");
        let live = c
            .list("v1", "Pod", NS)
            .await
            .into_iter()
            .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!(name)))
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .filter(|p| p["spec"]["containers"][0]["image"] == image)
            .count() as i64;
        let done = int(&d, "/status/observedGeneration") >= int(&d, "/metadata/generation")
            && int(&d, "/status/updatedReplicas") == r
            && int(&d, "/status/availableReplicas") == r
            && int(&d, "/status/replicas") == r
            && live == r;
        if done {
            Ok(())
        } else {
            Err(format!("{} live, status {}", live, d["status"]))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_rollout_the_controllers_finish_it_with_no_extra_pod() {
    let mut c = Cluster::start(3).await;
    let seen = Seen::start(&c, "web");
    c.create("apps/v1", "Deployment", NS, deployment("web", 8, "web:v1"))
        .await;
    complete(&c, "web", "web:v1").await;
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:v2"}]}}}}),
    )
    .await;
    // Kill it three times while v2 pods are appearing, each time restarting at once.
    for at in [1, 3, 5] {
        c.wait_for(&format!("{at} v2 pods"), || async {
            let n = seen.count("web:v2");
            if n >= at { Ok(()) } else { Err(format!("{n}")) }
        })
        .await;
        c.kill_controllers().await;
        // Writes the killed process had sent may still land; a real successor starts only
        // after the dead one's Lease expired (15 s by default), so it lists after them. Half a
        // second stands for that wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.start_controllers();
    }
    complete(&c, "web", "web:v2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.count("web:v2"),
        8,
        "every v2 pod made once, none extra"
    );
    assert_eq!(
        seen.count("web:v1"),
        8,
        "no v1 pod was recreated during the rollout"
    );
}

fn elected(identity: &str) -> Config {
    let mut lc = LeaderConfig::new("kube-system", "rudder-controller-manager", identity);
    lc.lease_duration = Duration::from_secs(3);
    lc.renew_deadline = Duration::from_secs(2);
    lc.retry_period = Duration::from_millis(500);
    Config {
        leader: Some(lc),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_both_act_and_the_standby_takes_over() {
    let c = Cluster::without_controllers(2).await;
    let seen = Seen::start(&c, "api");
    let mut replicas = Vec::new();
    for id in ["cm-a", "cm-b"] {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(rudder_controller_manager::run(
            Arc::clone(&c.api),
            RealClock::shared(),
            elected(id),
            cancel.clone(),
        ));
        replicas.push((id, cancel, task));
    }
    c.create("apps/v1", "Deployment", NS, deployment("api", 6, "api:v1"))
        .await;
    complete(&c, "api", "api:v1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen.count("api:v1"),
        6,
        "two active replicas would have raced to create pods"
    );
    // Kill the leader without releasing the Lease; the other takes over after it expires.
    let lease = c
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-system",
            "rudder-controller-manager",
        )
        .await
        .expect("lease");
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let i = replicas
        .iter()
        .position(|(id, _, _)| *id == holder)
        .expect("a replica holds it");
    let (_, cancel, task) = replicas.remove(i);
    task.abort();
    let _ = task.await;
    drop(cancel);
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "api",
        json!({"spec": {"replicas": 9}}),
    )
    .await;
    complete(&c, "api", "api:v1").await;
    let lease = c
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-system",
            "rudder-controller-manager",
        )
        .await
        .expect("lease");
    assert_ne!(lease["spec"]["holderIdentity"].as_str().unwrap(), holder);
    assert_eq!(seen.count("api:v1"), 9);
    for (_, cancel, _) in replicas {
        cancel.cancel();
    }
}
