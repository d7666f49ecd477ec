//! Taint eviction: the verdict as a pure function, then the controller on the fake under paused
//! time.

use super::*;

const T0: &str = "2025-01-01T00:00:00Z";

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_735_689_600 + s).unwrap()
}

fn pod(tolerations: Value) -> Value {
    json!({"spec": {"nodeName": "n", "tolerations": tolerations}})
}

fn unreachable(added: &str) -> Value {
    json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": added})
}

fn by_time_added(t: &Value) -> Timestamp {
    time_added(t).unwrap_or(at(0))
}

#[test]
fn untolerated_taints_evict_at_once() {
    let p = pod(json!([]));
    assert_eq!(verdict(&p, &[unreachable(T0)], by_time_added), Verdict::Now);
    let only_not_ready = pod(
        json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]),
    );
    assert_eq!(
        verdict(&only_not_ready, &[unreachable(T0)], by_time_added),
        Verdict::Now
    );
    // NoSchedule taints are the scheduler's business.
    let ns = json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"});
    assert_eq!(verdict(&p, &[ns], by_time_added), Verdict::Never);
}

#[test]
fn toleration_seconds_count_from_time_added() {
    let p = pod(
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 300}]),
    );
    assert_eq!(
        verdict(&p, &[unreachable("2025-01-01T00:01:00Z")], by_time_added),
        Verdict::At(at(361)),
        "from the end of the second the taint was added in"
    );
    assert_eq!(
        verdict(
            &p,
            &[unreachable("2025-01-01T00:01:00.250Z")],
            by_time_added
        ),
        Verdict::At(Timestamp::from_millisecond((1_735_689_600 + 360) * 1000 + 250).unwrap()),
        "a finer timeAdded is taken as it is"
    );
    let zero = pod(json!([{"operator": "Exists", "tolerationSeconds": -5}]));
    assert_eq!(
        verdict(&zero, &[unreachable(T0)], by_time_added),
        Verdict::Now
    );
}

#[test]
fn the_earliest_deadline_wins_and_for_ever_stays() {
    let both = [
        unreachable("2025-01-01T00:00:10Z"),
        json!({"key": "example.com/drain", "effect": "NoExecute", "timeAdded": T0}),
    ];
    let p = pod(json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 100},
        {"key": "example.com/drain", "operator": "Exists", "tolerationSeconds": 30}]));
    assert_eq!(verdict(&p, &both, by_time_added), Verdict::At(at(31)));
    let forever = pod(json!([{"operator": "Exists"}]));
    assert_eq!(verdict(&forever, &both, by_time_added), Verdict::Never);
    // A for-ever toleration of one taint does not cancel another's seconds.
    let mixed = pod(json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
        {"key": "example.com/drain", "operator": "Exists", "tolerationSeconds": 30}]));
    assert_eq!(verdict(&mixed, &both, by_time_added), Verdict::At(at(31)));
}

// === The controller on the fake ===

use crate::controllers::nodelifecycle::testutil::{Harness, condition, settle};

fn tolerate_unreachable(secs: Option<i64>) -> Value {
    let mut t = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"});
    if let Some(s) = secs {
        t["tolerationSeconds"] = json!(s);
    }
    json!([t])
}

async fn taint_unreachable(h: &Harness, node: &str) {
    let taint = json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
        "timeAdded": rfc3339(h.clock.now())});
    h.patch(
        "Node",
        "",
        node,
        json!({"spec": {"taints": [taint]}}),
        false,
    )
    .await;
}

/// Gone, or being deleted.
async fn evicted(h: &Harness, name: &str) -> bool {
    h.find("Pod", "default", name)
        .await
        .is_none_or(|p| p.pointer("/metadata/deletionTimestamp").is_some())
}

#[tokio::test(start_paused = true)]
async fn pods_go_at_once_after_their_toleration_or_never() {
    let h = Harness::start(&["taint-eviction-controller"], &["n1", "n2"], |_| {}).await;
    h.pod_on("plain", "n2").await;
    h.pod_with("brief", "n2", tolerate_unreachable(Some(60)))
        .await;
    h.pod_with("forever", "n2", tolerate_unreachable(None))
        .await;
    h.pod_on("elsewhere", "n1").await;
    settle(2).await;
    taint_unreachable(&h, "n2").await;
    settle(1).await;
    assert!(evicted(&h, "plain").await, "no toleration: at once");
    assert!(!evicted(&h, "brief").await);
    let events = h.events().await;
    assert!(
        events.contains(&(
            "TaintManagerEviction".into(),
            "Marking for deletion Pod default/plain".into()
        )),
        "{events:?}"
    );
    settle(57).await;
    assert!(!evicted(&h, "brief").await, "still within its 60 s");
    // timeAdded has whole seconds: the end of its second counts.
    settle(4).await;
    assert!(
        evicted(&h, "brief").await,
        "60 to 61 s after the taint was added"
    );
    settle(600).await;
    assert!(!evicted(&h, "forever").await, "tolerates for ever");
    assert!(!evicted(&h, "elsewhere").await, "on an untainted node");
}

#[tokio::test(start_paused = true)]
async fn an_eviction_is_cancelled_when_the_taint_goes_first() {
    let h = Harness::start(&["taint-eviction-controller"], &["n1"], |_| {}).await;
    h.pod_with("waiting", "n1", tolerate_unreachable(Some(300)))
        .await;
    settle(1).await;
    taint_unreachable(&h, "n1").await;
    settle(100).await;
    h.patch("Node", "", "n1", json!({"spec": {"taints": null}}), false)
        .await;
    settle(400).await;
    let pod = h.get("Pod", "default", "waiting").await;
    assert!(
        pod.pointer("/metadata/deletionTimestamp").is_none(),
        "{pod}"
    );
    assert!(condition(&pod, "DisruptionTarget").is_null(), "{pod}");
    assert!(
        h.events().await.contains(&(
            "TaintManagerEviction".into(),
            "Cancelling deletion of Pod default/waiting".into()
        )),
        "a cancelled eviction says so"
    );
}
