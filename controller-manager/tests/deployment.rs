//! Deployments on the in-process cluster (real API server, scheduler, simulated nodes): rolling
//! updates within maxSurge/maxUnavailable, rollback, Recreate, pause, the progress deadline,
//! proportional scaling and the revision history. Waits poll up to 30 s; no assertion depends on
//! how fast anything is.

mod common;

use common::deploy::{deployment, rolling, sets_by_revision, wait_complete};

use std::sync::{Arc, Mutex};

use common::{Cluster, condition, int, pod_available};
use rudder_client::clock::RealClock;
use rudder_client::informer::InformerFactory;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

/// Watches pods and ReplicaSets of `app` through informers and records every moment the
/// rollout broke its bounds: more than `max_pods` pods (not being deleted) or ReplicaSet sizes
/// summing above it, or fewer than `min_available` ready pods.
struct Bounds {
    violations: Arc<Mutex<Vec<String>>>,
    cancel: CancellationToken,
}

impl Drop for Bounds {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn watch_bounds(c: &Cluster, app: &str, max_pods: usize, min_available: usize) -> Bounds {
    let cancel = CancellationToken::new();
    let factory = InformerFactory::new(Arc::clone(&c.api), RealClock::shared());
    let pods = factory.for_kind("v1", "Pod");
    let sets = factory.for_kind("apps/v1", "ReplicaSet");
    let (mut pod_events, mut set_events) = (pods.subscribe(), sets.subscribe());
    factory.start(&cancel);
    let violations = Arc::new(Mutex::new(Vec::new()));
    let (v, app, stop) = (Arc::clone(&violations), app.to_string(), cancel.clone());
    tokio::spawn(async move {
        // Judge only whole states: both caches listed.
        pods.reader().wait_until_synced().await;
        sets.reader().wait_until_synced().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = pod_events.recv() => if e.is_none() { return },
                e = set_events.recv() => if e.is_none() { return },
            }
            let ours = |o: &Value| o.pointer("/metadata/labels/app") == Some(&json!(app));
            let live: Vec<Value> = pods
                .reader()
                .list()
                .iter()
                .map(|p| p.value.clone())
                .filter(|p| ours(p) && p.pointer("/metadata/deletionTimestamp").is_none())
                .collect();
            let available = live.iter().filter(|p| pod_available(p)).count();
            let sizes: i64 = sets
                .reader()
                .list()
                .iter()
                .filter(|r| ours(&r.value))
                .map(|r| int(&r.value, "/spec/replicas"))
                .sum();
            let mut bad = Vec::new();
            if live.len() > max_pods {
                bad.push(format!("{} pods > {max_pods}", live.len()));
            }
            if sizes > max_pods as i64 {
                bad.push(format!("replica sets sum to {sizes} > {max_pods}"));
            }
            if available < min_available {
                bad.push(format!("{available} available < {min_available}"));
            }
            if !bad.is_empty() {
                v.lock().unwrap().push(bad.join(", "));
            }
        }
    });
    Bounds { violations, cancel }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_bounds_and_rolls_back() {
    let c = Cluster::start(3).await;
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("web", 4, "web:v1", rolling(json!(1), json!(1))),
    )
    .await;
    wait_complete(&c, "web", "web:v1").await;
    let d = c.get("apps/v1", "Deployment", NS, "web").await.unwrap();
    assert_eq!(condition(&d, "Available").unwrap()["status"], "True", "{d}");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // v1 → v2: never more than 5 pods, never fewer than 3 available.
    let bounds = watch_bounds(&c, "web", 5, 3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        bounds.violations.lock().unwrap().is_empty(),
        "bounds broken before the rollout"
    );
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:v2"}]}}}}),
    )
    .await;
    wait_complete(&c, "web", "web:v2").await;
    let sets = sets_by_revision(&c, "web").await;
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!((sets[&1].1, sets[&1].2.as_str()), (0, "web:v1"), "{sets:?}");
    assert_eq!((sets[&2].1, sets[&2].2.as_str()), (4, "web:v2"), "{sets:?}");

    // Rollback: the v1 template written back reuses the v1 ReplicaSet as revision 3.
    let v1_name = sets[&1].0.clone();
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:v1"}]}}}}),
    )
    .await;
    let d = wait_complete(&c, "web", "web:v1").await;
    let sets = sets_by_revision(&c, "web").await;
    assert_eq!(
        sets.len(),
        2,
        "no third ReplicaSet for an old template: {sets:?}"
    );
    assert_eq!(sets[&3].0, v1_name, "{sets:?}");
    assert_eq!(sets[&3].1, 4);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let rs = c.get("apps/v1", "ReplicaSet", NS, &v1_name).await.unwrap();
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    let violations = bounds.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "rollout broke its bounds: {violations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_new_ones_start() {
    let c = Cluster::start(2).await;
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("db", 3, "db:v1", json!({"type": "Recreate"})),
    )
    .await;
    wait_complete(&c, "db", "db:v1").await;
    // Never pods of both versions at once.
    let cancel = CancellationToken::new();
    let factory = InformerFactory::new(Arc::clone(&c.api), RealClock::shared());
    let pods = factory.for_kind("v1", "Pod");
    let mut events = pods.subscribe();
    factory.start(&cancel);
    let mixed = Arc::new(Mutex::new(false));
    let (m, stop) = (Arc::clone(&mixed), cancel.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! { _ = stop.cancelled() => return, e = events.recv() => if e.is_none() { return } }
            let images: std::collections::BTreeSet<String> = pods
                .reader()
                .list()
                .iter()
                .filter(|p| p.value.pointer("/metadata/labels/app") == Some(&json!("db")))
                .filter_map(|p| {
                    p.value
                        .pointer("/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            if images.len() > 1 {
                *m.lock().unwrap() = true;
            }
        }
    });
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "db",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:v2"}]}}}}),
    )
    .await;
    wait_complete(&c, "db", "db:v2").await;
    cancel.cancel();
    assert!(
        !*mixed.lock().unwrap(),
        "Recreate ran old and new pods together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let c = Cluster::start(2).await;
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("api", 2, "api:v1", rolling(json!("25%"), json!("25%"))),
    )
    .await;
    wait_complete(&c, "api", "api:v1").await;
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "api",
        json!({"spec": {"paused": true}}),
    )
    .await;
    c.wait_for("Progressing=Unknown DeploymentPaused", || async {
        let d = c
            .get("apps/v1", "Deployment", NS, "api")
            .await
            .ok_or("gone")?;
        match condition(&d, "Progressing") {
            Some(p) if p["reason"] == "DeploymentPaused" && p["status"] == "Unknown" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    c.patch("apps/v1", "Deployment", NS, "api",
        json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "api:v2"}]}}}})).await;
    c.wait_for("paused scale to 3 on v1", || async {
        let sets = sets_by_revision(&c, "api").await;
        let pods = c
            .list("v1", "Pod", NS)
            .await
            .into_iter()
            .filter(pod_available)
            .count();
        if sets.len() == 1 && sets[&1].1 == 3 && pods == 3 {
            Ok(())
        } else {
            Err(format!("{sets:?}, {pods} pods"))
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        sets_by_revision(&c, "api").await.len(),
        1,
        "a paused deployment rolled out"
    );
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "api",
        json!({"spec": {"paused": false}}),
    )
    .await;
    wait_complete(&c, "api", "api:v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_never_gets_ready_exceeds_its_progress_deadline() {
    let c = Cluster::start(1).await;
    let mut d = deployment("stuck", 2, "app:v1", rolling(json!(1), json!(0)));
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    c.create("apps/v1", "Deployment", NS, d).await;
    wait_complete(&c, "stuck", "app:v1").await;
    c.patch("apps/v1", "Deployment", NS, "stuck",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:notready"}]}}}})).await;
    let cond = c
        .wait_for("ProgressDeadlineExceeded", || async {
            let d = c
                .get("apps/v1", "Deployment", NS, "stuck")
                .await
                .ok_or("gone")?;
            match condition(&d, "Progressing") {
                Some(p) if p["reason"] == "ProgressDeadlineExceeded" => Ok(p.clone()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(cond["status"], "False");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("has timed out progressing"),
        "{cond}"
    );
    // maxUnavailable 0: both v1 pods still serve.
    let d = c.get("apps/v1", "Deployment", NS, "stuck").await.unwrap();
    assert_eq!(int(&d, "/status/availableReplicas"), 2, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_stalled_rollout_is_proportional() {
    // Kubernetes' e2e "proportional scaling": 10 replicas, maxSurge 3, maxUnavailable 2, a new
    // template that never gets ready; the rollout stalls at 8 old + 5 new; scaling to 30 spreads
    // the 20 extra in proportion: 20 old + 13 new.
    let c = Cluster::start(3).await;
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("prop", 10, "p:v1", rolling(json!(3), json!(2))),
    )
    .await;
    wait_complete(&c, "prop", "p:v1").await;
    c.patch("apps/v1", "Deployment", NS, "prop",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "p:notready"}]}}}})).await;
    c.wait_for("stall at 8 + 5", || async {
        let s = sets_by_revision(&c, "prop").await;
        let sizes: Vec<i64> = s.values().map(|v| v.1).collect();
        if sizes == [8, 5] {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        "prop",
        json!({"spec": {"replicas": 30}}),
    )
    .await;
    c.wait_for("proportional 20 + 13", || async {
        let s = sets_by_revision(&c, "prop").await;
        let sizes: Vec<i64> = s.values().map(|v| v.1).collect();
        if sizes == [20, 13] {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_revisions_beyond_the_history_limit_are_deleted() {
    let c = Cluster::start(1).await;
    let mut d = deployment("hist", 1, "h:v1", rolling(json!(1), json!(0)));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    c.create("apps/v1", "Deployment", NS, d).await;
    wait_complete(&c, "hist", "h:v1").await;
    for v in ["h:v2", "h:v3"] {
        c.patch(
            "apps/v1",
            "Deployment",
            NS,
            "hist",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": v}]}}}}),
        )
        .await;
        wait_complete(&c, "hist", v).await;
    }
    c.wait_for("one old revision kept", || async {
        let s = sets_by_revision(&c, "hist").await;
        let revs: Vec<i64> = s.keys().copied().collect();
        if revs == [2, 3] {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}
