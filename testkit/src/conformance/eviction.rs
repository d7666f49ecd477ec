//! Cases on the eviction subresource: a pod's PodDisruptionBudget charged or refusing (429),
//! pods budgets do not guard, unhealthy pods, stale and doubled budgets.

use rudder_client::ClientError;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use super::*;

const PDB: (&str, &str) = ("policy/v1", "PodDisruptionBudget");

fn evict_req(name: &str, delete_options: Value) -> pb::EvictRequest {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"}, "deleteOptions": delete_options});
    pb::EvictRequest {
        namespace: "default".into(),
        name: name.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

async fn evict(t: &Target, name: &str) -> Result<pb::DeleteResponse, ClientError> {
    t.api.evict(evict_req(name, json!({}))).await
}

/// A pod of app `app` on node-a, Running, and Ready or not.
async fn running_pod(t: &Target, name: &str, app: &str, ready: bool) {
    let mut p = pod(name, "node-a");
    p["metadata"]["labels"] = json!({"app": app});
    let mut v = json_of(&create(t, POD, "default", &p).await);
    let flag = if ready { "True" } else { "False" };
    v["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": flag}]});
    t.api
        .update_status(update_req(POD, "default", &v))
        .await
        .unwrap_or_else(|e| panic!("pod {name} status: {e}"));
}

/// A budget on `app` with the status a disruption controller would have written.
async fn budget(t: &Target, name: &str, app: &str, allowed: i64, current: i64, desired: i64) {
    let b = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"minAvailable": desired, "selector": {"matchLabels": {"app": app}}}});
    let mut v = json_of(&create(t, PDB, "default", &b).await);
    v["status"] = json!({"observedGeneration": v["metadata"]["generation"],
        "disruptionsAllowed": allowed, "currentHealthy": current, "desiredHealthy": desired,
        "expectedPods": current});
    t.api
        .update_status(update_req(PDB, "default", &v))
        .await
        .unwrap_or_else(|e| panic!("budget {name} status: {e}"));
}

fn is_too_many(e: &ClientError) -> bool {
    matches!(e, ClientError::TooManyRequests(_))
}

pub async fn eviction_charges_the_budget_then_refuses_with_429(t: Target) {
    for p in ["e1", "e2", "e3"] {
        running_pod(&t, p, "web", true).await;
    }
    budget(&t, "web", "web", 1, 3, 2).await;
    let res = evict(&t, "e1")
        .await
        .unwrap_or_else(|e| panic!("the first eviction is allowed: {e}"));
    let v = json_of(&res.object.unwrap_or_default());
    assert!(
        v["metadata"]["deletionTimestamp"].is_string(),
        "an evicted pod on a node is deleted gracefully: {v}"
    );
    let b = json_of(&get(&t, PDB, "default", "web").await);
    assert_eq!(
        b["status"]["disruptionsAllowed"], 0,
        "the budget is charged: {b}"
    );
    assert!(
        b["status"]["disruptedPods"]["e1"].is_string(),
        "the evicted pod is recorded: {b}"
    );
    match evict(&t, "e2").await {
        Err(ClientError::TooManyRequests(m)) => assert!(
            m.contains("disruption budget web needs 2 healthy pods and has 3"),
            "the refusal names the budget and its figures: {m}"
        ),
        other => panic!("the second eviction is refused with 429: {other:?}"),
    }
    assert!(
        json_of(&get(&t, POD, "default", "e2").await)["metadata"]["deletionTimestamp"].is_null(),
        "a refused eviction deletes nothing"
    );
    assert_err(
        evict(&t, "ghost").await,
        is_not_found,
        "evicting a missing pod",
    );
    let mut wrong = evict_req("e2", json!({}));
    wrong.name = "e3".into();
    assert_err(
        t.api.evict(wrong).await,
        is_bad_request,
        "an Eviction naming another pod",
    );

    // A spec change the controller has not seen yet: nothing is allowed until it has.
    patch(
        &t,
        PDB,
        "default",
        "web",
        json!({"spec": {"minAvailable": 1}}),
    )
    .await;
    match evict(&t, "e3").await {
        Err(ClientError::TooManyRequests(m)) => {
            assert!(m.contains("still being processed"), "{m}")
        }
        other => panic!("a budget behind its generation refuses: {other:?}"),
    }
}

pub async fn eviction_lets_go_what_budgets_do_not_guard(t: Target) {
    budget(&t, "tight", "db", 0, 1, 2).await;
    // Pending: not running yet, so no budget counts it.
    let mut pending = pod("x-pending", "node-a");
    pending["metadata"]["labels"] = json!({"app": "db"});
    create(&t, POD, "default", &pending).await;
    evict(&t, "x-pending")
        .await
        .unwrap_or_else(|e| panic!("a Pending pod is evicted whatever its budget: {e}"));
    running_pod(&t, "x-free", "other", true).await;
    let mut grace0 = evict_req("x-free", json!({"gracePeriodSeconds": 0}));
    grace0.namespace = "default".into();
    let res = t
        .api
        .evict(grace0)
        .await
        .unwrap_or_else(|e| panic!("a pod no budget selects is evicted: {e}"));
    assert!(
        res.deleted,
        "the Eviction's deleteOptions are used (grace 0)"
    );
    // Unready pod, unhealthy budget (1 of 2 healthy): guarded under IfHealthyBudget.
    running_pod(&t, "x-sick", "db", false).await;
    assert_err(
        evict(&t, "x-sick").await,
        is_too_many,
        "an unready pod under an unhealthy IfHealthyBudget budget",
    );
    patch(
        &t,
        PDB,
        "default",
        "tight",
        json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}),
    )
    .await;
    let mut b = json_of(&get(&t, PDB, "default", "tight").await);
    b["status"]["observedGeneration"] = b["metadata"]["generation"].clone();
    t.api
        .update_status(update_req(PDB, "default", &b))
        .await
        .unwrap_or_else(|e| panic!("budget status: {e}"));
    evict(&t, "x-sick")
        .await
        .unwrap_or_else(|e| panic!("AlwaysAllow lets an unready pod go: {e}"));
    let b = json_of(&get(&t, PDB, "default", "tight").await);
    assert_eq!(b["status"]["disruptionsAllowed"], 0);
    assert!(
        b["status"]["disruptedPods"].is_null(),
        "an unhealthy pod costs the budget nothing: {b}"
    );

    budget(&t, "second", "db", 5, 5, 0).await;
    running_pod(&t, "x-two", "db", true).await;
    match evict(&t, "x-two").await {
        Err(ClientError::Other(m)) => {
            assert!(m.contains("more than one PodDisruptionBudget"), "{m}")
        }
        other => panic!("two budgets on one pod are refused: {other:?}"),
    }
}
