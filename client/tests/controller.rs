//! The controller runner end to end on the fake: a tiny ReplicaSet controller.
// Tests measure elapsed time on the clock they drive themselves (paused tokio time, or real
// sockets with real deadlines); the ban on ambient clocks is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rudder_client::cache::{Reader, split_key};
use rudder_client::clock::ManualClock;
use rudder_client::conn::kind_ref;
use rudder_client::controller::{
    Action, Controller, default_error_policy, owner_mapper, self_mapper,
};
use rudder_client::fake::FakeApi;
use rudder_client::informer::Subscription;
use rudder_client::proto as pb;
use rudder_client::reflector::{Reflector, ReflectorConfig};
use rudder_client::{Api, ClientError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Ctx {
    api: Arc<FakeApi>,
    sets: Reader,
    pods: Reader,
    reconciled: Mutex<Vec<String>>,
}

fn reflect(
    fake: &Arc<FakeApi>,
    api_version: &str,
    kind: &str,
    cancel: &CancellationToken,
) -> (Reader, Subscription) {
    let api: Arc<dyn Api> = fake.clone();
    let cfg = ReflectorConfig::new(api_version, kind);
    let (r, reader) = Reflector::new(api, cfg, ManualClock::shared(1));
    let rx = r.subscribe();
    tokio::spawn(r.run(cancel.clone()));
    (reader, rx)
}

/// Keeps `spec.replicas` pods owned by each ReplicaSet, reading both from the caches.
async fn reconcile(key: String, ctx: Arc<Ctx>) -> Result<Action, ClientError> {
    ctx.reconciled.lock().unwrap().push(key.clone());
    let (ns, name) = split_key(&key);
    let Some(rs) = ctx.sets.get(ns, name) else {
        return Ok(Action::await_change());
    };
    let want = rs.value["spec"]["replicas"].as_u64().unwrap_or(0) as usize;
    let mut owned: Vec<String> = ctx
        .pods
        .list()
        .iter()
        .filter(|p| p.is_controlled_by(&rs))
        .map(|p| p.name.clone())
        .collect();
    owned.sort();
    for _ in owned.len()..want {
        let pod = json!({"metadata": {"generateName": format!("{name}-"), "namespace": ns,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
                                 "uid": rs.value["metadata"]["uid"], "controller": true}]}});
        create(&ctx.api, &pods(), &pod).await;
    }
    for extra in owned.iter().skip(want) {
        let req = pb::DeleteRequest {
            kind: Some(pods()),
            namespace: ns.into(),
            name: extra.clone(),
            ..Default::default()
        };
        match ctx.api.delete(req).await {
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}

fn owned_pods(fake: &FakeApi) -> usize {
    fake.list_json(&pods())
        .iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["name"] == "web")
        .count()
}

#[tokio::test(start_paused = true)]
async fn replica_set_controller_converges_and_repairs_through_owner_mapping() {
    let fake = FakeApi::new();
    let cancel = CancellationToken::new();
    let rs_kind = kind_ref("apps/v1", "ReplicaSet");
    let (sets, set_events) = reflect(&fake, "apps/v1", "ReplicaSet", &cancel);
    let (pod_cache, pod_events) = reflect(&fake, "v1", "Pod", &cancel);
    let ctx = Arc::new(Ctx {
        api: fake.clone(),
        sets: sets.clone(),
        pods: pod_cache.clone(),
        reconciled: Mutex::new(Vec::new()),
    });
    let controller = Controller::new(ctx.clone())
        .workers(2)
        .watches(set_events, self_mapper())
        .watches(
            pod_events,
            owner_mapper(sets.clone(), "apps/v1", "ReplicaSet"),
        );
    let run = tokio::spawn(controller.run(reconcile, default_error_policy, cancel.clone()));
    let rs = json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"replicas": 3}});
    create(&fake, &rs_kind, &rs).await;
    // An unowned pod must not trigger the controller.
    create(&fake, &pods(), &pod("ns", "stray", json!({}))).await;
    eventually("three pods", || owned_pods(&fake) == 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(owned_pods(&fake), 3, "stable at three");

    // Deleting a pod is seen through the owner mapping and repaired.
    ctx.reconciled.lock().unwrap().clear();
    let victim = fake
        .list_json(&pods())
        .into_iter()
        .find(|p| p["metadata"]["name"] != "stray");
    let victim = victim.expect("an owned pod");
    delete(
        &fake,
        &pods(),
        "ns",
        victim["metadata"]["name"].as_str().unwrap_or(""),
    )
    .await;
    eventually("repaired", || {
        owned_pods(&fake) == 3 && pod_cache.len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let keys = ctx.reconciled.lock().unwrap().clone();
    assert!(keys.iter().all(|k| k == "ns/web"), "{keys:?}");
    assert!(!keys.is_empty());
    cancel.cancel();
    run.await.expect("controller stops");
}

#[tokio::test(start_paused = true)]
async fn errors_requeue_with_back_off_and_success_resets_it() {
    let runs = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(runs.clone());
    let queue = controller.queue();
    let cancel = CancellationToken::new();
    let reconcile = |_key: String, runs: Arc<AtomicUsize>| async move {
        match runs.fetch_add(1, Ordering::SeqCst) {
            0..=2 => Err("not yet"),
            _ => Ok(Action::await_change()),
        }
    };
    let start = tokio::time::Instant::now();
    let run = tokio::spawn(controller.run(reconcile, default_error_policy, cancel.clone()));
    queue.add("ns/a");
    eventually("four runs", || runs.load(Ordering::SeqCst) == 4).await;
    // 5 + 10 + 20 ms of back-off between the failing runs.
    assert!(start.elapsed() >= Duration::from_millis(35));
    assert_eq!(
        queue.num_requeues("ns/a"),
        0,
        "success forgets the back-off"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "await_change does not requeue"
    );
    cancel.cancel();
    run.await.expect("stops");
}

#[tokio::test(start_paused = true)]
async fn requeue_action_runs_the_key_again_later() {
    let runs = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(runs.clone());
    let queue = controller.queue();
    let cancel = CancellationToken::new();
    let reconcile = |_key: String, runs: Arc<AtomicUsize>| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, ClientError>(Action::requeue(Duration::from_secs(30)))
    };
    let run = tokio::spawn(controller.run(reconcile, default_error_policy, cancel.clone()));
    queue.add("ns/a");
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4, "at 0, 30, 60 and 90 s");
    cancel.cancel();
    run.await.expect("stops");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_in_flight_reconciles_and_survives_panics() {
    let finished = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(finished.clone()).workers(3);
    let queue = controller.queue();
    let cancel = CancellationToken::new();
    let reconcile = |key: String, finished: Arc<AtomicUsize>| async move {
        if key == "ns/boom" {
            panic!("reconcile bug");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        finished.fetch_add(1, Ordering::SeqCst);
        Ok::<_, ClientError>(Action::await_change())
    };
    let run = tokio::spawn(controller.run(reconcile, default_error_policy, cancel.clone()));
    for k in ["ns/boom", "ns/a", "ns/b"] {
        queue.add(k);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        queue.in_flight(),
        2,
        "the panicking key is not stuck in flight"
    );
    cancel.cancel();
    run.await.expect("stops");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        2,
        "in-flight reconciles completed"
    );
}

/// A ReplicaSet deleted and recreated under the same name has a new uid: its predecessor's
/// pods are not its own, so their events must not be mapped to it (nor counted by it).
#[test]
fn owner_mapping_requires_the_owner_uid() {
    use rudder_client::cache::{CachedObject, Store};
    use rudder_client::reflector::ReflectorEvent;

    let rs = |uid: &str| {
        Arc::new(CachedObject::new(
            "apps/v1",
            "ReplicaSet",
            "ns",
            "web",
            1,
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": uid}}),
        ))
    };
    let old_pod = Arc::new(CachedObject::new(
        "v1",
        "Pod",
        "ns",
        "web-1",
        2,
        json!({"metadata": {"name": "web-1", "namespace": "ns", "uid": "p1",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                 "uid": "old", "controller": true}]}}),
    ));
    let (mut owners, reader) = Store::new();
    let mapper = owner_mapper(reader.clone(), "apps/v1", "ReplicaSet");
    owners.apply(rs("old"));
    assert_eq!(mapper(&ReflectorEvent::Added(old_pod.clone())), ["ns/web"]);
    owners.apply(rs("new"));
    assert!(
        mapper(&ReflectorEvent::Added(old_pod.clone())).is_empty(),
        "the recreated ReplicaSet does not own the old pod"
    );
    assert!(!old_pod.is_controlled_by(&rs("new")));
    owners.delete("ns/web");
    assert!(mapper(&ReflectorEvent::Deleted(old_pod)).is_empty());
}
