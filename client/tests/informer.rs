//! Shared informers on the fake, under paused time: one watch per kind, late and slow
//! subscribers, old and new objects on updates.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rudder_client::cache::{INDEX_NODE_NAME, Store};
use rudder_client::clock::ManualClock;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::informer::{InformerFactory, Subscription};
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::{Api, ClientError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn factory(fake: &Arc<FakeApi>) -> Arc<InformerFactory> {
    let api: Arc<dyn Api> = fake.clone();
    InformerFactory::new(api, ManualClock::shared(3))
}

async fn next(sub: &mut Subscription) -> ReflectorEvent {
    tokio::time::timeout(Duration::from_secs(30), sub.recv())
        .await
        .expect("an event in time")
        .expect("subscription open")
}

fn restarted_names(ev: &ReflectorEvent) -> Vec<String> {
    let ReflectorEvent::Restarted(all) = ev else {
        panic!("expected Restarted, got {ev:?}");
    };
    let mut names: Vec<String> = all.iter().map(|o| o.name.clone()).collect();
    names.sort();
    names
}

async fn update_labels(fake: &Arc<FakeApi>, name: &str, labels: serde_json::Value) {
    let req = pb::PatchRequest {
        kind: Some(pods()),
        namespace: "default".into(),
        name: name.into(),
        patch_type: pb::PatchType::Merge as i32,
        patch: serde_json::to_vec(&json!({"metadata": {"labels": labels}}))
            .expect("json")
            .into(),
        ..Default::default()
    };
    fake.patch(req).await.expect("patch");
}

#[tokio::test(start_paused = true)]
async fn one_watch_per_kind_however_many_ask() {
    let fake = FakeApi::new();
    let f = factory(&fake);
    let a = f.for_kind("v1", "Pod");
    let b = f.for_kind("v1", "Pod");
    let other = f.for_kind("v1", "ConfigMap");
    let (_sa, _sb) = (a.subscribe(), b.subscribe());
    let cancel = CancellationToken::new();
    f.start(&cancel);
    assert!(f.wait_for_cache_sync(&cancel).await);
    assert_eq!(
        fake.calls(Op::List),
        2,
        "one list for pods, one for configmaps"
    );
    eventually("two watches", || fake.calls(Op::Watch) == 2).await;
    assert_eq!(
        a.subscriber_count(),
        2,
        "both subscribers share the pod informer"
    );
    assert_eq!(other.subscriber_count(), 0);
    // An informer asked for after start starts at once.
    let late = f.for_kind("v1", "Secret");
    tokio::time::timeout(Duration::from_secs(10), late.reader().wait_until_synced())
        .await
        .expect("the late informer syncs");
    cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_late_subscriber_starts_with_the_cache_then_follows_with_old_and_new() {
    let fake = FakeApi::new();
    for n in ["a", "b"] {
        create(&fake, &pods(), &pod("default", n, json!({"v": "1"}))).await;
    }
    let f = factory(&fake);
    let informer = f.for_kind("v1", "Pod");
    let cancel = CancellationToken::new();
    f.start(&cancel);
    assert!(informer.reader().wait_until_synced().await);
    eventually("watching", || fake.watcher_count() == 1).await;

    // Joins long after the list: first the whole content, then changes.
    let mut sub = informer.subscribe();
    assert_eq!(restarted_names(&next(&mut sub).await), ["a", "b"]);
    update_labels(&fake, "a", json!({"v": "2"})).await;
    match next(&mut sub).await {
        ReflectorEvent::Updated { old, new } => {
            assert_eq!(old.labels().get("v").map(String::as_str), Some("1"));
            assert_eq!(new.labels().get("v").map(String::as_str), Some("2"));
        }
        ev => panic!("expected an update, got {ev:?}"),
    }
    delete(&fake, &pods(), "default", "b").await;
    assert!(matches!(next(&mut sub).await, ReflectorEvent::Deleted(o) if o.name == "b"));
    cancel.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("ends")
            .is_none(),
        "the subscription ends when the informer stops"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_is_resynced_and_never_stalls_the_cache() {
    let fake = FakeApi::new();
    let f = factory(&fake);
    let informer = f.for_kind("v1", "Pod");
    let mut stalled = informer.subscribe();
    let mut live = informer.subscribe();
    let cancel = CancellationToken::new();
    f.start(&cancel);
    assert!(informer.reader().wait_until_synced().await);
    assert!(matches!(next(&mut live).await, ReflectorEvent::Restarted(v) if v.is_empty()));
    eventually("watching", || fake.watcher_count() == 1).await;

    // Far more changes than a subscriber may buffer, while `stalled` reads nothing and `live`
    // keeps reading.
    let n = rudder_client::informer::SUBSCRIBER_BUFFER + 500;
    let reading = tokio::spawn(async move {
        for _ in 0..n {
            assert!(matches!(next(&mut live).await, ReflectorEvent::Added(_)));
        }
    });
    for i in 0..n {
        create(
            &fake,
            &pods(),
            &pod("default", &format!("p{i:05}"), json!({})),
        )
        .await;
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    eventually("the cache keeps up", || informer.reader().len() == n).await;
    reading
        .await
        .expect("the live subscriber saw every change in order");
    // The stalled one lost its backlog and gets the whole cache instead, then live events.
    let ev = next(&mut stalled).await;
    assert_eq!(restarted_names(&ev).len(), n);
    create(&fake, &pods(), &pod("default", "after", json!({}))).await;
    assert!(matches!(next(&mut stalled).await, ReflectorEvent::Added(o) if o.name == "after"));
    cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn custom_and_builtin_indexes_on_a_shared_informer() {
    let fake = FakeApi::new();
    let mut bound = pod("default", "bound", json!({}));
    bound["spec"] = json!({"nodeName": "n1"});
    create(&fake, &pods(), &bound).await;
    create(
        &fake,
        &pods(),
        &pod("default", "pending", json!({"tier": "web"})),
    )
    .await;
    let f = factory(&fake);
    let informer = f.for_kind("v1", "Pod");
    let cancel = CancellationToken::new();
    f.start(&cancel);
    let reader = informer.reader();
    assert!(reader.wait_until_synced().await);
    assert_eq!(reader.by_index(INDEX_NODE_NAME, "n1").len(), 1);
    informer.ensure_index(
        "tier",
        Arc::new(|o| o.labels().get("tier").cloned().into_iter().collect()),
    );
    // A second controller asking for the same index is fine.
    informer.ensure_index("tier", Arc::new(|_| Vec::new()));
    assert_eq!(reader.by_index("tier", "web")[0].name, "pending");
    create(
        &fake,
        &pods(),
        &pod("default", "web2", json!({"tier": "web"})),
    )
    .await;
    eventually("indexed", || reader.by_index("tier", "web").len() == 2).await;
    cancel.cancel();
}

/// A controller must not reconcile before every cache it reads has synced: a ReplicaSet
/// reconciled on an empty pod cache creates duplicates.
#[tokio::test(start_paused = true)]
async fn controller_workers_wait_for_every_cache() {
    use rudder_client::controller::{Action, Controller, default_error_policy};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (mut pod_store, pod_cache) = Store::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(runs.clone()).reads(pod_cache.clone());
    let queue = controller.queue();
    let cancel = CancellationToken::new();
    let reconcile = |_key: String, runs: Arc<AtomicUsize>| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, ClientError>(Action::await_change())
    };
    let run = tokio::spawn(controller.run(reconcile, default_error_policy, cancel.clone()));
    queue.add("default/web");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "no reconcile on an unsynced cache"
    );
    pod_store.replace(Vec::new());
    eventually("reconciled once synced", || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    cancel.cancel();
    run.await.expect("stops");
}
