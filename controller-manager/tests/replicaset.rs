//! The ReplicaSet controller on the client's in-memory fake under paused time: exact create and
//! delete counts despite the cache lagging its own writes, slow start against a refusing server,
//! the ReplicaFailure condition, adoption and release, the deletion order and availability after
//! `minReadySeconds`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError};
use rudder_controller_manager::Config;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

struct Env {
    fake: Arc<FakeApi>,
    clock: SharedClock,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn env() -> Env {
    let clock: SharedClock = ManualClock::shared(7);
    let fake = FakeApi::builder().clock(Arc::clone(&clock)).build();
    Env {
        fake,
        clock,
        stop: CancellationToken::new(),
    }
}

impl Env {
    fn api(&self) -> Arc<dyn Api> {
        self.fake.clone()
    }

    fn start(&self) {
        let cfg = Config {
            controllers: vec!["replicaset".into()],
            ..Config::default()
        };
        tokio::spawn(rudder_controller_manager::run(
            self.api(),
            Arc::clone(&self.clock),
            cfg,
            self.stop.clone(),
        ));
    }

    async fn create(&self, api_version: &str, kind: &str, body: Value) -> Value {
        let o = self
            .fake
            .create(pb::CreateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .expect("create");
        serde_json::from_slice(&o.json).unwrap()
    }

    async fn patch(&self, api_version: &str, kind: &str, name: &str, patch: Value, status: bool) {
        self.fake
            .patch(pb::PatchRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                name: name.into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: Bytes::from(patch.to_string()),
                status,
                options: None,
            })
            .await
            .expect("patch");
    }

    async fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let l = self
            .fake
            .list(pb::ListRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                ..Default::default()
            })
            .await
            .expect("list");
        l.items
            .iter()
            .map(|o| serde_json::from_slice(&o.json).unwrap())
            .collect()
    }

    async fn pods(&self) -> Vec<Value> {
        self.list("v1", "Pod").await
    }

    async fn rs(&self, name: &str) -> Value {
        self.list("apps/v1", "ReplicaSet")
            .await
            .into_iter()
            .find(|r| r["metadata"]["name"] == name)
            .expect("replica set")
    }

    /// Lets the controller run for `secs` of (paused) time.
    async fn settle(&self, secs: u64) {
        for _ in 0..secs * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn replica_set(name: &str, replicas: i64, min_ready: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    })
}

fn owned_by(p: &Value, uid: &Value) -> bool {
    p.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|rs| {
            rs.iter()
                .any(|r| &r["uid"] == uid && r["controller"] == true)
        })
}

fn condition<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

#[tokio::test(start_paused = true)]
async fn creates_exactly_the_missing_pods_and_deletes_exactly_the_surplus() {
    let e = env();
    e.start();
    let rs = e
        .create("apps/v1", "ReplicaSet", replica_set("web", 7, 0))
        .await;
    e.settle(5).await;
    let pods = e.pods().await;
    assert_eq!(pods.len(), 7);
    assert!(pods.iter().all(|p| owned_by(p, &rs["metadata"]["uid"])));
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["name"].as_str().unwrap().starts_with("web-"))
    );
    // Repeated reconciles on a lagging cache never made an extra pod (which would have to be
    // deleted again).
    assert_eq!(e.fake.calls(Op::Delete), 0);
    let st = e.rs("web").await;
    assert_eq!(st["status"]["replicas"], 7, "{st}");
    assert_eq!(st["status"]["fullyLabeledReplicas"], 7);
    assert_eq!(
        st["status"]["observedGeneration"],
        st["metadata"]["generation"]
    );

    e.patch(
        "apps/v1",
        "ReplicaSet",
        "web",
        json!({"spec": {"replicas": 2}}),
        false,
    )
    .await;
    e.settle(5).await;
    assert_eq!(e.pods().await.len(), 2);
    assert_eq!(e.fake.calls(Op::Delete), 5);
    assert_eq!(e.rs("web").await["status"]["replicas"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_create_stops_the_batch_and_sets_replica_failure_until_it_succeeds() {
    let e = env();
    e.create("apps/v1", "ReplicaSet", replica_set("q", 10, 0))
        .await;
    let quota = "pods \"q-x\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=0, limited: pods=0";
    e.fake
        .fail_times(Op::Create, ClientError::Forbidden(quota.into()), 1000);
    e.start();
    e.settle(2).await;
    let st = e.rs("q").await;
    let c = condition(&st, "ReplicaFailure").unwrap_or_else(|| panic!("no condition: {st}"));
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("FailedCreate"))
    );
    assert!(
        c["message"].as_str().unwrap().contains("exceeded quota"),
        "{c}"
    );
    assert_eq!(e.pods().await.len(), 0);
    // Each attempt stopped at its first batch of one, and attempts back off: far fewer calls
    // than the 10 pods asked for per attempt (Events are creates too, and fail alike).
    let calls = e.fake.calls(Op::Create);
    assert!(calls < 40, "{calls} creates in 2 s");
    // Once the server accepts, the pods come and the condition goes.
    e.fake.clear_faults();
    e.settle(30).await;
    assert_eq!(e.pods().await.len(), 10);
    let st = e.rs("q").await;
    assert!(condition(&st, "ReplicaFailure").is_none(), "{st}");
}

#[tokio::test(start_paused = true)]
async fn adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let e = env();
    for n in ["orphan-a", "orphan-b"] {
        e.create(
            "v1",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": n, "namespace": NS, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .await;
    }
    // Someone else's pod with matching labels is never taken.
    e.create("v1", "Pod", json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "foreign", "namespace": NS, "labels": {"app": "x"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "u-other", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .await;
    let rs = e
        .create("apps/v1", "ReplicaSet", replica_set("x", 3, 0))
        .await;
    let uid = rs["metadata"]["uid"].clone();
    e.start();
    e.settle(3).await;
    let pods = e.pods().await;
    let ours: Vec<&Value> = pods.iter().filter(|p| owned_by(p, &uid)).collect();
    assert_eq!(ours.len(), 3, "two adopted, one created: {pods:?}");
    assert!(ours.iter().any(|p| p["metadata"]["name"] == "orphan-a"));
    assert!(ours.iter().any(|p| p["metadata"]["name"] == "orphan-b"));
    assert!(!owned_by(
        pods.iter()
            .find(|p| p["metadata"]["name"] == "foreign")
            .unwrap(),
        &uid
    ));

    e.patch(
        "v1",
        "Pod",
        "orphan-a",
        json!({"metadata": {"labels": {"app": "y"}}}),
        false,
    )
    .await;
    e.settle(3).await;
    let pods = e.pods().await;
    let released = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "orphan-a")
        .unwrap();
    assert!(!owned_by(released, &uid), "released: {released}");
    assert_eq!(
        pods.iter().filter(|p| owned_by(p, &uid)).count(),
        3,
        "replaced"
    );
}

#[tokio::test(start_paused = true)]
async fn scale_down_deletes_pending_and_unready_pods_before_ready_ones() {
    let e = env();
    e.start();
    e.create("apps/v1", "ReplicaSet", replica_set("r", 3, 0))
        .await;
    e.settle(3).await;
    let names: Vec<String> = e
        .pods()
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let now = format!("{:.0}", e.clock.now());
    let status = |phase: &str, ready: &str| json!({"status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": now}]}});
    e.patch("v1", "Pod", &names[0], json!({"spec": {}}), false)
        .await;
    e.patch("v1", "Pod", &names[0], status("Running", "True"), true)
        .await;
    e.patch("v1", "Pod", &names[1], status("Running", "False"), true)
        .await;
    e.patch("v1", "Pod", &names[2], status("Pending", "False"), true)
        .await;
    e.settle(1).await;
    e.patch(
        "apps/v1",
        "ReplicaSet",
        "r",
        json!({"spec": {"replicas": 1}}),
        false,
    )
    .await;
    e.settle(3).await;
    let left: Vec<Value> = e.pods().await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0]["metadata"]["name"],
        names[0].as_str(),
        "the ready one stays"
    );
}

#[tokio::test(start_paused = true)]
async fn available_replicas_wait_for_min_ready_seconds() {
    let e = env();
    e.start();
    e.create("apps/v1", "ReplicaSet", replica_set("m", 2, 30))
        .await;
    e.settle(2).await;
    let now = format!("{:.0}", e.clock.now());
    for p in e.pods().await {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        e.patch(
            "v1",
            "Pod",
            &name,
            json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}}),
            true,
        )
        .await;
    }
    e.settle(2).await;
    let st = e.rs("m").await;
    assert_eq!(
        (
            st["status"]["readyReplicas"].as_i64(),
            st["status"]["availableReplicas"].as_i64()
        ),
        (Some(2), Some(0)),
        "{st}"
    );
    // No pod changes from here: the controller's own requeue notices the time passing.
    e.settle(31).await;
    assert_eq!(e.rs("m").await["status"]["availableReplicas"], 2);
}

#[tokio::test(start_paused = true)]
async fn expectations_stop_a_second_round_of_creates_on_a_cache_that_has_not_seen_the_first() {
    use rudder_client::cache::{CachedObject, Store};
    use rudder_client::events::EventRecorder;
    use rudder_client::expectations::Expectations;
    use rudder_controller_manager::controllers::replicaset::{Ctx, reconcile};

    let e = env();
    let rs = e
        .create("apps/v1", "ReplicaSet", replica_set("lag", 3, 0))
        .await;
    // Caches filled by hand: the pods this reconcile creates never reach them.
    let (mut sets, sets_reader) = Store::new();
    sets.apply(Arc::new(CachedObject::new(
        "apps/v1",
        "ReplicaSet",
        NS,
        "lag",
        1,
        rs,
    )));
    let (_pods, pods_reader) = Store::new();
    let (events, _task) = EventRecorder::new(e.api(), "test", "", Arc::clone(&e.clock), 16);
    let exp = Arc::new(Expectations::new(Arc::clone(&e.clock)));
    let ctx = Arc::new(Ctx::new(
        e.api(),
        Arc::clone(&e.clock),
        events,
        sets_reader,
        pods_reader,
        exp,
    ));
    reconcile(format!("{NS}/lag"), Arc::clone(&ctx))
        .await
        .expect("first");
    assert_eq!(e.pods().await.len(), 3);
    reconcile(format!("{NS}/lag"), Arc::clone(&ctx))
        .await
        .expect("second");
    assert_eq!(
        e.pods().await.len(),
        3,
        "the stale cache made the controller create again"
    );
    // Past the expectations' timeout (5 minutes) it trusts the cache again, as Kubernetes does.
    tokio::time::advance(Duration::from_secs(301)).await;
    reconcile(format!("{NS}/lag"), ctx).await.expect("third");
    assert_eq!(e.pods().await.len(), 6);
}
