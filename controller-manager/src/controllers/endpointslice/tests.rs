//! The EndpointSlice reconcile on the client's fake with caches the test feeds by hand, so the
//! cache can lag the controller's own writes as long as the test likes: no duplicate slice and
//! no stale write while it lags, one update per change once it caught up.

use std::sync::Arc;

use rudder_client::Api;
use rudder_client::cache::{CachedObject, Store};
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::events::EventRecorder;
use rudder_client::fake::FakeApi;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use super::*;
use crate::util::endpoints::{INDEX_POD_LABEL, pod_label_index};

struct Caches {
    services: Store,
    pods: Store,
    slices: Store,
    _nodes: Store,
}

fn pod(name: &str, ip: &str, ready: bool) -> Arc<CachedObject> {
    let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
}

fn setup(fake: &Arc<FakeApi>, clock: SharedClock) -> (Caches, Arc<Ctx>) {
    let (mut services, services_r) = Store::new();
    let (mut pods, pods_r) = Store::new();
    pods_r
        .add_index(INDEX_POD_LABEL, pod_label_index())
        .expect("index");
    let (mut nodes, nodes_r) = Store::new();
    let (slices, slices_r) = Store::new();
    slices_r
        .add_index(
            INDEX_SERVICE,
            Arc::new(|o: &CachedObject| service_key(o).into_iter().collect()),
        )
        .expect("index");
    services.apply(Arc::new(CachedObject::new(
        "v1",
        "Service",
        "ns",
        "web",
        1,
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}),
    )));
    nodes.apply(Arc::new(CachedObject::new(
        "v1",
        "Node",
        "",
        "n1",
        1,
        json!({"metadata": {"name": "n1"}}),
    )));
    for (i, n) in ["p0", "p1", "p2"].iter().enumerate() {
        pods.apply(pod(n, &format!("10.0.0.{}", i + 1), true));
    }
    let api: Arc<dyn Api> = fake.clone();
    let (events, _task) = EventRecorder::new(
        Arc::clone(&api),
        "endpoint-slice-controller",
        "",
        Arc::clone(&clock),
        64,
    );
    let ctx = Arc::new(Ctx {
        api,
        events,
        services: services_r,
        pods: pods_r,
        nodes: nodes_r,
        slices: slices_r,
        tracker: Arc::new(Tracker::new(clock)),
        max_per_slice: 2,
    });
    (
        Caches {
            services,
            pods,
            slices,
            _nodes: nodes,
        },
        ctx,
    )
}

/// The slices on the fake.
async fn stored(fake: &FakeApi) -> Vec<pb::Object> {
    fake.list(pb::ListRequest {
        kind: Some(kind_ref(SLICE_API_VERSION, SLICE_KIND)),
        namespace: "ns".into(),
        ..Default::default()
    })
    .await
    .expect("list")
    .items
}

/// Lets the cache catch up with the fake.
async fn sync(fake: &FakeApi, slices: &mut Store) {
    let all = stored(fake)
        .await
        .iter()
        .filter_map(CachedObject::from_wire)
        .map(Arc::new)
        .collect();
    slices.replace(all);
}

fn ready_of(objs: &[pb::Object]) -> Vec<Vec<bool>> {
    let mut out: Vec<Vec<bool>> = objs
        .iter()
        .map(|o| {
            let v: Value = serde_json::from_slice(&o.json).expect("json");
            v["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["conditions"]["ready"].as_bool().unwrap_or(false))
                .collect()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn a_lagging_cache_neither_duplicates_slices_nor_sends_stale_versions() {
    let clock: SharedClock = ManualClock::shared(3);
    let fake = FakeApi::builder().clock(Arc::clone(&clock)).build();
    let (mut caches, ctx) = setup(&fake, clock);
    let key = "ns/web".to_string();

    let a = reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("first pass");
    assert_eq!(a, Action::AwaitChange);
    assert_eq!(
        ready_of(&stored(&fake).await),
        vec![vec![true], vec![true, true]],
        "3 endpoints, 2 a slice"
    );
    let version = fake.resource_version();
    // The cache has not seen the two creations: the next pass waits rather than create again.
    let a = reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("stale pass");
    assert!(matches!(a, Action::Requeue(_)), "{a:?}");
    assert_eq!(fake.resource_version(), version, "no write");
    sync(&fake, &mut caches.slices).await;
    let a = reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("synced pass");
    assert_eq!(a, Action::AwaitChange);
    assert_eq!(fake.resource_version(), version, "nothing to change");

    // p1 turns not ready: one update. p2 follows before the cache saw it: wait, no conflict.
    caches.pods.apply(pod("p1", "10.0.0.2", false));
    reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("update");
    assert_eq!(fake.resource_version(), version + 1, "one write");
    caches.pods.apply(pod("p2", "10.0.0.3", false));
    let a = reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("stale again");
    assert!(matches!(a, Action::Requeue(_)), "{a:?}");
    assert_eq!(fake.resource_version(), version + 1);
    sync(&fake, &mut caches.slices).await;
    reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("caught up");
    let mut flags: Vec<bool> = ready_of(&stored(&fake).await).concat();
    flags.sort();
    assert_eq!(flags, vec![false, false, true]);
    assert_eq!(stored(&fake).await.len(), 2, "still two slices");

    // The Service goes: its slices are deleted with it.
    sync(&fake, &mut caches.slices).await;
    caches.services.delete("ns/web");
    reconcile(key.clone(), Arc::clone(&ctx))
        .await
        .expect("gone");
    assert!(stored(&fake).await.is_empty());
}

#[test]
fn slices_map_to_their_service() {
    let s = |labels: Value| {
        CachedObject::new(
            SLICE_API_VERSION,
            SLICE_KIND,
            "ns",
            "web-abc",
            1,
            serde_json::json!({"metadata": {"name": "web-abc", "namespace": "ns", "labels": labels}}),
        )
    };
    let ours = s(serde_json::json!({LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: MANAGED_BY}));
    assert_eq!(service_key(&ours).as_deref(), Some("ns/web"));
    assert!(managed(&ours));
    let theirs = s(serde_json::json!({LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: "me"}));
    assert!(!managed(&theirs));
    assert_eq!(service_key(&s(serde_json::json!({}))), None);
}
