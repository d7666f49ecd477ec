//! The disruption controller: its arithmetic over caches, then the controller on the fake
//! under paused time.

use std::time::Duration;

use rudder_client::cache::Store;
use rudder_client::clock::ManualClock;
use rudder_client::fake::FakeApi;
use serde_json::json;

use super::*;
use crate::Config;

fn obj(api_version: &str, kind: &str, name: &str, v: Value) -> Arc<CachedObject> {
    let mut v = v;
    v["metadata"]["name"] = json!(name);
    v["metadata"]["namespace"] = json!("ns");
    v["metadata"]["uid"] = json!(format!("uid-{name}"));
    Arc::new(CachedObject::new(api_version, kind, "ns", name, 1, v))
}

fn owned_pod(name: &str, kind: &str, owner: &str, ready: bool) -> Arc<CachedObject> {
    let flag = if ready { "True" } else { "False" };
    obj(
        "v1",
        "Pod",
        name,
        json!({"metadata": {"labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": kind, "name": owner, "uid": format!("uid-{owner}"), "controller": true}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": flag}]}}),
    )
}

fn cache(objs: Vec<Arc<CachedObject>>) -> Reader {
    let (mut store, reader) = Store::new();
    for o in objs {
        store.apply(o);
    }
    reader
}

/// A Deployment `web` of `replicas` through ReplicaSet `web-1` (10 replicas of its own, which
/// must not count), and StatefulSet `db` of 4.
fn owners(replicas: i64) -> Owners {
    let deploy = obj(
        "apps/v1",
        "Deployment",
        "web",
        json!({"spec": {"replicas": replicas}}),
    );
    let rs = obj(
        "apps/v1",
        "ReplicaSet",
        "web-1",
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "web", "uid": "uid-web", "controller": true}]}, "spec": {"replicas": 10}}),
    );
    let sts = obj(
        "apps/v1",
        "StatefulSet",
        "db",
        json!({"spec": {"replicas": 4}}),
    );
    Owners {
        replicasets: cache(vec![rs]),
        deployments: cache(vec![deploy]),
        statefulsets: cache(vec![sts]),
        rcs: cache(vec![]),
    }
}

fn web_pods(n: usize) -> Vec<Arc<CachedObject>> {
    (0..n)
        .map(|i| owned_pod(&format!("p{i}"), "ReplicaSet", "web-1", true))
        .collect()
}

#[test]
fn integer_min_available_counts_the_pods_found() {
    let spec = json!({"minAvailable": 2});
    assert_eq!(
        budget::expected_and_desired(&spec, &web_pods(3), &owners(5)),
        Ok((3, 2, vec![]))
    );
}

#[test]
fn percentages_resolve_against_the_controllers_scale_rounding_up() {
    // 5 replicas of the Deployment (not the ReplicaSet's 10, not the 3 pods found).
    let spec = json!({"minAvailable": "50%"});
    assert_eq!(
        budget::expected_and_desired(&spec, &web_pods(3), &owners(5)),
        Ok((5, 3, vec![])),
        "50% of 5 rounds up to 3"
    );
    let spec = json!({"maxUnavailable": "30%"});
    assert_eq!(
        budget::expected_and_desired(&spec, &web_pods(3), &owners(5)),
        Ok((5, 3, vec![])),
        "30% of 5 unavailable rounds up to 2, so 3 desired"
    );
    let spec = json!({"maxUnavailable": 7});
    assert_eq!(
        budget::expected_and_desired(&spec, &web_pods(3), &owners(5)),
        Ok((5, 0, vec![])),
        "never below zero"
    );
    // Two controllers, each counted once, and an orphan reported.
    let mut pods = web_pods(2);
    pods.push(owned_pod("db-0", "StatefulSet", "db", true));
    pods.push(owned_pod("db-1", "StatefulSet", "db", true));
    pods.push(obj("v1", "Pod", "stray", json!({})));
    let spec = json!({"maxUnavailable": 1});
    assert_eq!(
        budget::expected_and_desired(&spec, &pods, &owners(5)),
        Ok((9, 8, vec!["stray".to_string()]))
    );
}

#[test]
fn a_controller_missing_from_the_caches_fails_the_sync() {
    let pods = vec![owned_pod("x", "ReplicaSet", "gone", true)];
    let e = budget::expected_and_desired(&json!({"minAvailable": "10%"}), &pods, &owners(5))
        .unwrap_err();
    assert!(e.contains("found no controllers"), "{e}");
    // An integer minAvailable needs no scale.
    assert!(budget::expected_and_desired(&json!({"minAvailable": 1}), &pods, &owners(5)).is_ok());
}

#[test]
fn disruptions_allowed_and_recorded_evictions() {
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let at = |ago: i64| rfc3339(now - jiff::SignedDuration::from_secs(ago));
    let pdb = json!({"metadata": {"generation": 3}, "status": {"disruptedPods": {
        "p0": at(30), "p1": at(200), "gone": at(10)}}});
    let pods = web_pods(3);
    let (kept, recheck) = budget::disrupted(&pdb, &pods, now);
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        ["p0"],
        "expired and gone pods forgotten"
    );
    assert_eq!(recheck, Some(now + jiff::SignedDuration::from_secs(90)));
    let current = budget::healthy(&pods, &kept);
    assert_eq!(current, 2, "a recorded disruption is not healthy");
    let f = Figures {
        expected: 3,
        desired: 1,
        current,
        disrupted: kept,
        unmanaged: vec![],
    };
    let s = budget::status(&pdb, &f, &at(0));
    assert_eq!(s["disruptionsAllowed"], 1);
    assert_eq!(s["observedGeneration"], 3);
    assert_eq!(s["conditions"][0]["reason"], "SufficientPods");
    let none = Figures {
        expected: 0,
        current: 2,
        ..f
    };
    let s = budget::status(&pdb, &none, &at(0));
    assert_eq!(
        s["disruptionsAllowed"], 0,
        "nothing allowed when no pod is expected"
    );
    assert_eq!(s["conditions"][0]["reason"], "InsufficientPods");
}

// === the controller on the fake ===

async fn create(api: &Arc<FakeApi>, av: &str, kind: &str, body: Value) -> Value {
    let o = api
        .create(pb::CreateRequest {
            kind: Some(kind_ref(av, kind)),
            namespace: "ns".into(),
            json: Bytes::from(body.to_string()),
            options: None,
        })
        .await
        .expect("create");
    serde_json::from_slice(&o.json).expect("json")
}

async fn status_of(api: &Arc<FakeApi>) -> Value {
    api.get_json(&kind_ref("policy/v1", "PodDisruptionBudget"), "ns", "web")
        .expect("budget")["status"]
        .clone()
}

async fn settle() {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_controller_keeps_the_status_and_forgets_stale_disruptions() {
    let clock: SharedClock = ManualClock::shared(3);
    let api = FakeApi::builder().clock(Arc::clone(&clock)).build();
    let deploy = create(
        &api,
        "apps/v1",
        "Deployment",
        json!({"metadata": {"name": "web"},
        "spec": {"replicas": 4}}),
    )
    .await;
    let rs = create(
        &api,
        "apps/v1",
        "ReplicaSet",
        json!({"metadata": {"name": "web-1",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
            "uid": deploy["metadata"]["uid"], "controller": true}]}, "spec": {"replicas": 4}}),
    )
    .await;
    for i in 0..3 {
        let p = create(&api, "v1", "Pod", json!({"metadata": {"name": format!("p{i}"),
            "labels": {"app": "web"}, "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "web-1", "uid": rs["metadata"]["uid"], "controller": true}]}}))
        .await;
        let mut st = p.clone();
        st["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        api.update_status(pb::UpdateRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: "ns".into(),
            json: Bytes::from(st.to_string()),
            options: None,
        })
        .await
        .expect("status");
    }
    create(
        &api,
        "policy/v1",
        "PodDisruptionBudget",
        json!({"metadata": {"name": "web"},
        "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .await;
    let dynapi: Arc<dyn Api> = api.clone();
    let stop = CancellationToken::new();
    let cfg = Config {
        controllers: vec!["disruption".into()],
        ..Config::default()
    };
    tokio::spawn(crate::run(dynapi, Arc::clone(&clock), cfg, stop.clone()));
    settle().await;
    let s = status_of(&api).await;
    // 50% of the Deployment's 4 is 2; 3 ready pods: one may go.
    assert_eq!(
        (
            &s["expectedPods"],
            &s["desiredHealthy"],
            &s["currentHealthy"],
            &s["disruptionsAllowed"]
        ),
        (&json!(4), &json!(2), &json!(3), &json!(1)),
        "{s}"
    );
    assert_eq!(s["conditions"][0]["status"], "True");

    // An eviction charges the budget; the controller keeps the disruption until it expires.
    let ev = json!({"metadata": {"name": "p0", "namespace": "ns"}});
    api.evict(pb::EvictRequest {
        namespace: "ns".into(),
        name: "p0".into(),
        json: Bytes::from(ev.to_string()),
        options: None,
    })
    .await
    .expect("allowed");
    settle().await;
    let s = status_of(&api).await;
    assert_eq!(s["disruptionsAllowed"], 0, "{s}");
    // p0 had no node, so it went at once; the budget has 2 healthy of 2 desired.
    assert_eq!(s["currentHealthy"], 2, "{s}");
    assert!(
        s.get("disruptedPods").is_none(),
        "a deleted pod is not waited for: {s}"
    );

    // A recorded disruption of a pod that is never deleted expires after 2 minutes.
    let mut b = api
        .get_json(&kind_ref("policy/v1", "PodDisruptionBudget"), "ns", "web")
        .expect("budget");
    b["status"]["disruptedPods"] = json!({"p1": rfc3339(clock.now())});
    api.update_status(pb::UpdateRequest {
        kind: Some(kind_ref("policy/v1", "PodDisruptionBudget")),
        namespace: "ns".into(),
        json: Bytes::from(b.to_string()),
        options: None,
    })
    .await
    .expect("status");
    settle().await;
    let s = status_of(&api).await;
    assert_eq!(s["currentHealthy"], 1, "p1 counts as disrupted: {s}");
    assert!(s["disruptedPods"]["p1"].is_string(), "{s}");
    tokio::time::sleep(Duration::from_secs(121)).await;
    settle().await;
    let s = status_of(&api).await;
    assert!(s.get("disruptedPods").is_none(), "expired: {s}");
    assert_eq!(s["currentHealthy"], 2, "{s}");

    // A budget whose pods' controller cannot be found allows nothing.
    api.delete(pb::DeleteRequest {
        kind: Some(kind_ref("apps/v1", "ReplicaSet")),
        namespace: "ns".into(),
        name: "web-1".into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    settle().await;
    let s = status_of(&api).await;
    assert_eq!(s["disruptionsAllowed"], 0);
    assert_eq!(s["conditions"][0]["reason"], "SyncFailed", "{s}");
    stop.cancel();
}
