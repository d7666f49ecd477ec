//! The scheduling cycle against `FakeApi` under paused time, driven step by step: the
//! informers sync once and are stopped, so the cache never sees the bindings and every
//! decision must come from the scheduler's own bookkeeping (assumed pods).

use std::sync::Arc;

use bytes::Bytes;
use rudder_client::cache::CachedObject;
use rudder_client::clock::ManualClock;
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::informer::InformerFactory;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::{Api, ClientError};
use rudder_scheduler::framework::Profile;
use rudder_scheduler::scheduler::Outcome;
use rudder_scheduler::{DEFAULT_SCHEDULER_NAME, Scheduler};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn create(api: &dyn Api, kind: &str, ns: &str, body: serde_json::Value) {
    let req = pb::CreateRequest {
        kind: Some(kind_ref("v1", kind)),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    };
    api.create(req).await.expect("create");
}

async fn node(api: &dyn Api, name: &str, cpu: &str) {
    create(
        api,
        "Node",
        "",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}),
    )
    .await;
    let status = json!({"status": {
        "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    let req = pb::PatchRequest {
        kind: Some(kind_ref("v1", "Node")),
        namespace: String::new(),
        name: name.into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(status.to_string()),
        status: true,
        options: None,
    };
    api.patch(req).await.expect("node status");
}

async fn pod(api: &dyn Api, name: &str, cpu: &str) {
    let p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}});
    create(api, "Pod", "default", p).await;
}

/// A scheduler over caches synced once and then frozen.
async fn frozen_scheduler(fake: &Arc<FakeApi>) -> Scheduler {
    let api: Arc<dyn Api> = fake.clone();
    let factory = InformerFactory::new(Arc::clone(&api), ManualClock::shared(1));
    let pods = factory.for_kind("v1", "Pod");
    let nodes = factory.for_kind("v1", "Node");
    let cancel = CancellationToken::new();
    factory.start(&cancel);
    assert!(factory.wait_for_cache_sync(&cancel).await);
    cancel.cancel();
    let mut s = Scheduler::new(
        api,
        Profile::default_profile(DEFAULT_SCHEDULER_NAME),
        pods.clone(),
        nodes,
        ManualClock::shared(1),
    );
    let mut all = pods.reader().list();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    s.handle_pod_event(ReflectorEvent::Restarted(all));
    s
}

#[tokio::test(start_paused = true)]
async fn assumed_pods_count_before_the_watch_shows_the_binding() {
    let fake = FakeApi::new();
    node(&*fake, "a", "1").await;
    node(&*fake, "b", "1").await;
    for p in ["p0", "p1", "p2"] {
        pod(&*fake, p, "600m").await;
    }
    let mut s = frozen_scheduler(&fake).await;
    let mut got = Vec::new();
    while let Some((key, outcome)) = s.schedule_one().await {
        got.push((key, outcome));
    }
    assert_eq!(got[0], ("default/p0".into(), Outcome::Bound("a".into())));
    assert_eq!(got[1], ("default/p1".into(), Outcome::Bound("b".into())));
    assert_eq!(
        got[2],
        (
            "default/p2".into(),
            Outcome::Unschedulable("0/2 nodes are available: 2 Insufficient cpu.".into())
        )
    );
    assert_eq!(got.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_bind_is_rolled_back_and_retried_after_backoff() {
    let fake = FakeApi::new();
    node(&*fake, "a", "1").await;
    pod(&*fake, "p0", "600m").await;
    pod(&*fake, "p1", "600m").await;
    let mut s = frozen_scheduler(&fake).await;
    fake.fail_next(Op::Bind, ClientError::Unavailable("down".into()));
    let (k, o) = s.schedule_one().await.expect("p0 queued");
    assert_eq!(k, "default/p0");
    assert!(matches!(o, Outcome::Failed(_)), "{o:?}");
    // p0's failed placement no longer holds the node's cpu.
    let (k, o) = s.schedule_one().await.expect("p1 queued");
    assert_eq!((k.as_str(), o), ("default/p1", Outcome::Bound("a".into())));
    assert!(
        s.schedule_one().await.is_none(),
        "p0 waits out its back-off"
    );
}

async fn pod_value(api: &dyn Api, name: &str) -> serde_json::Value {
    let o = api
        .get(pb::GetRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: "default".into(),
            name: name.into(),
            allow_stale: false,
        })
        .await
        .expect("get");
    serde_json::from_slice(&o.json).expect("json")
}

fn cached(v: &serde_json::Value) -> Arc<CachedObject> {
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    Arc::new(CachedObject::new(
        "v1",
        "Pod",
        "default",
        name,
        1,
        v.clone(),
    ))
}

#[tokio::test(start_paused = true)]
async fn an_unschedulable_pod_is_retried_on_its_own_change_or_a_freed_node_not_on_status_writes() {
    let fake = FakeApi::new();
    node(&*fake, "a", "1").await;
    pod(&*fake, "p0", "600m").await;
    pod(&*fake, "p1", "600m").await;
    let mut s = frozen_scheduler(&fake).await;
    assert_eq!(
        s.schedule_one().await.map(|x| x.1),
        Some(Outcome::Bound("a".into()))
    );
    let msg = "0/1 nodes are available: 1 Insufficient cpu.";
    assert_eq!(
        s.schedule_one().await.map(|x| x.1),
        Some(Outcome::Unschedulable(msg.into()))
    );
    // The scheduler's own condition write reached the server...
    let p1 = pod_value(&*fake, "p1").await;
    assert_eq!(p1["status"]["conditions"][0]["message"], msg, "{p1}");
    // ...and its watch event does not retry the pod (no loop).
    let mut before = p1.clone();
    before["status"] = json!({"phase": "Pending"});
    s.handle_pod_event(ReflectorEvent::Updated {
        old: cached(&before),
        new: cached(&p1),
    });
    assert!(s.schedule_one().await.is_none());
    // A change to the pod itself does.
    let mut relabelled = p1.clone();
    relabelled["metadata"]["labels"] = json!({"try": "again"});
    s.handle_pod_event(ReflectorEvent::Updated {
        old: cached(&p1),
        new: cached(&relabelled),
    });
    assert_eq!(
        s.schedule_one().await.map(|x| x.1),
        Some(Outcome::Unschedulable(msg.into()))
    );
    // Deleting the bound pod frees the node: the parked pod is retried and fits.
    let mut p0 = pod_value(&*fake, "p0").await;
    p0["spec"]["nodeName"] = json!("a");
    s.handle_pod_event(ReflectorEvent::Deleted(cached(&p0)));
    assert_eq!(
        s.schedule_one().await.map(|x| x.1),
        Some(Outcome::Bound("a".into()))
    );
}
