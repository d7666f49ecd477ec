//! Rudder's rollouts beyond Kubernetes on the in-process cluster: canary steps promoted and
//! aborted, and the automatic rollback of a crash-looping or stuck revision.

mod common;

use std::time::Duration;

use common::deploy::{NS, deployment, rolling, sets_by_revision, wait_complete};
use common::{Cluster, condition, int};
use serde_json::{Value, json};

fn set_image(image: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

/// Spec sizes of the ReplicaSets by revision.
async fn sizes(c: &Cluster, name: &str) -> Vec<i64> {
    sets_by_revision(c, name)
        .await
        .values()
        .map(|v| v.1)
        .collect()
}

async fn wait_sizes(c: &Cluster, name: &str, want: &[i64]) {
    c.wait_for(&format!("{name} ReplicaSets at {want:?}"), || async {
        let s = sets_by_revision(c, name).await;
        let sizes: Vec<i64> = s.values().map(|v| v.1).collect();
        // Old revisions' pods must be gone too, not just asked to go.
        let pods = c
            .list("v1", "Pod", NS)
            .await
            .into_iter()
            .filter(|p| p.pointer("/metadata/labels/app") == Some(&json!(name)))
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .count() as i64;
        if sizes == want && pods == want.iter().sum::<i64>() {
            Ok(())
        } else {
            Err(format!("{s:?}, {pods} pods"))
        }
    })
    .await;
}

async fn progressing(c: &Cluster, name: &str) -> Value {
    let d = c
        .get("apps/v1", "Deployment", NS, name)
        .await
        .expect("deployment");
    condition(&d, "Progressing").cloned().unwrap_or(Value::Null)
}

async fn action(c: &Cluster, name: &str, what: &str) {
    c.patch(
        "apps/v1",
        "Deployment",
        NS,
        name,
        json!({"metadata": {"annotations": {"rudder.io/canary-action": what}}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_runs_step_by_step_and_is_promoted() {
    let c = Cluster::start(2).await;
    let mut d = deployment("shop", 4, "shop:v1", rolling(json!(1), json!(0)));
    d["metadata"]["annotations"] = json!({"rudder.io/canary-steps": "25%,pause,50%,pause 1s"});
    c.create("apps/v1", "Deployment", NS, d).await;
    // The first revision ignores the steps.
    wait_complete(&c, "shop", "shop:v1").await;
    c.patch("apps/v1", "Deployment", NS, "shop", set_image("shop:v2"))
        .await;
    // 25%: one canary pod beside three stable ones, then an indefinite pause.
    wait_sizes(&c, "shop", &[3, 1]).await;
    c.wait_for("CanaryPaused", || async {
        let p = progressing(&c, "shop").await;
        if p["reason"] == "CanaryPaused" {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        sizes(&c, "shop").await,
        [3, 1],
        "a pause holds until promoted"
    );
    let new = sets_by_revision(&c, "shop").await[&2].0.clone();
    let rs = c.get("apps/v1", "ReplicaSet", NS, &new).await.unwrap();
    assert_eq!(
        rs["metadata"]["annotations"]["rudder.io/canary-weight"], "25",
        "{rs}"
    );
    // Promote: 50% (2 + 2), a timed pause of a second, then the rest as a rolling update.
    action(&c, "shop", "promote").await;
    wait_complete(&c, "shop", "shop:v2").await;
    let d = c.get("apps/v1", "Deployment", NS, "shop").await.unwrap();
    assert!(
        d["metadata"]["annotations"]
            .get("rudder.io/canary-action")
            .is_none(),
        "the action is consumed: {d}"
    );
    assert_eq!(sizes(&c, "shop").await, [0, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_canary_returns_to_the_stable_revision_until_promoted() {
    let c = Cluster::start(2).await;
    let mut d = deployment("cart", 4, "cart:v1", rolling(json!(1), json!(0)));
    d["metadata"]["annotations"] = json!({"rudder.io/canary-steps": "50%,pause"});
    c.create("apps/v1", "Deployment", NS, d).await;
    wait_complete(&c, "cart", "cart:v1").await;
    c.patch("apps/v1", "Deployment", NS, "cart", set_image("cart:v2"))
        .await;
    wait_sizes(&c, "cart", &[2, 2]).await;
    action(&c, "cart", "abort").await;
    wait_sizes(&c, "cart", &[4, 0]).await;
    let p = c
        .wait_for("CanaryAborted", || async {
            let p = progressing(&c, "cart").await;
            if p["reason"] == "CanaryAborted" {
                Ok(p)
            } else {
                Err(p.to_string())
            }
        })
        .await;
    assert_eq!(p["status"], "False");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        sizes(&c, "cart").await,
        [4, 0],
        "an aborted canary stays down"
    );
    // Promoting retries it from its last weight step; promote-full finishes it.
    action(&c, "cart", "promote").await;
    wait_sizes(&c, "cart", &[2, 2]).await;
    action(&c, "cart", "promote-full").await;
    wait_complete(&c, "cart", "cart:v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_revision_is_rolled_back_automatically() {
    let c = Cluster::start(2).await;
    let mut d = deployment("api", 3, "api:v1", rolling(json!(1), json!(0)));
    d["metadata"]["annotations"] = json!({"rudder.io/auto-rollback": "true"});
    c.create("apps/v1", "Deployment", NS, d).await;
    wait_complete(&c, "api", "api:v1").await;
    c.patch("apps/v1", "Deployment", NS, "api", set_image("api:crash"))
        .await;
    // The simulated node crash-loops the new pods; the controller writes v1 back.
    let d = wait_complete(&c, "api", "api:v1").await;
    let cond = condition(&d, "RolledBack")
        .cloned()
        .expect("RolledBack condition");
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("True"), Some("AutoRollback"))
    );
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.contains("from revision 2 to revision 1") && msg.contains("crash-looping"),
        "{msg}"
    );
    assert_eq!(
        d["metadata"]["annotations"]["rudder.io/rolled-back-from"],
        "2"
    );
    assert!(
        d["metadata"]["annotations"]["kubernetes.io/change-cause"]
            .as_str()
            .unwrap()
            .starts_with("auto-rollback from revision 2")
    );
    let sets = sets_by_revision(&c, "api").await;
    assert_eq!(
        sets[&3].2, "api:v1",
        "v1's ReplicaSet is revision 3 now: {sets:?}"
    );
    assert_eq!(
        sets[&2].1, 0,
        "the crashing revision is scaled away: {sets:?}"
    );
    let events = c.list("v1", "Event", NS).await;
    assert!(
        events.iter().any(|e| e["reason"] == "RolledBack"),
        "a RolledBack Event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_revision_is_rolled_back_at_its_deadline_but_not_without_the_annotation() {
    let c = Cluster::start(2).await;
    for (name, auto) in [("auto", true), ("manual", false)] {
        let mut d = deployment(name, 2, "web:v1", rolling(json!(1), json!(0)));
        d["spec"]["progressDeadlineSeconds"] = json!(2);
        if auto {
            d["metadata"]["annotations"] = json!({"rudder.io/auto-rollback": "true"});
        }
        c.create("apps/v1", "Deployment", NS, d).await;
        wait_complete(&c, name, "web:v1").await;
        c.patch("apps/v1", "Deployment", NS, name, set_image("web:notready"))
            .await;
    }
    wait_complete(&c, "auto", "web:v1").await;
    c.wait_for("manual stays on its deadline", || async {
        let p = progressing(&c, "manual").await;
        if p["reason"] == "ProgressDeadlineExceeded" {
            Ok(())
        } else {
            Err(p.to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = c.get("apps/v1", "Deployment", NS, "manual").await.unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:notready"
    );
    assert_eq!(int(&d, "/status/availableReplicas"), 2);
}
