//! The garbage collector against the in-memory API under paused time: dangling dependents go,
//! a live owner keeps its dependent (which loses only the dangling reference), unknown owner
//! kinds and unresolvable references keep it, a stale cache is checked live, a recreated owner
//! does not inherit its predecessor's dependents, and relists re-check dependents.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::cache::{CachedObject, Store};
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::controller::Action;
use rudder_client::events::EventRecorder;
use rudder_client::fake::{FakeApi, Op};
use rudder_client::informer::InformerFactory;
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::kinds::Kinds;
use super::{Ctx, DESCRIPTOR, mapper, reconcile};
use crate::runner::Env;

const NS: &str = "ns";

struct Harness {
    api: Arc<FakeApi>,
    clock: SharedClock,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn fake() -> Harness {
    let clock: SharedClock = ManualClock::shared(7);
    let api = FakeApi::builder().clock(Arc::clone(&clock)).build();
    Harness {
        api,
        clock,
        stop: CancellationToken::new(),
    }
}

impl Harness {
    /// Runs the collector with `workers` workers, as the runner would.
    fn start(&self, workers: usize) {
        let dynapi: Arc<dyn Api> = self.api.clone();
        let informers = InformerFactory::new(Arc::clone(&dynapi), Arc::clone(&self.clock));
        informers.start(&self.stop);
        let env = Env {
            api: dynapi,
            clock: Arc::clone(&self.clock),
            informers,
            workers,
            host: String::new(),
            max_endpoints_per_slice: 100,
            nodes: Default::default(),
            load_balancer_pool: None,
        };
        tokio::spawn((DESCRIPTOR.run)(env, self.stop.clone()));
    }

    async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    async fn create(&self, api_version: &str, kind: &str, ns: &str, body: Value) -> Value {
        let o = self
            .api
            .create(pb::CreateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: ns.into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .expect("create");
        serde_json::from_slice(&o.json).unwrap()
    }

    async fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) {
        self.api
            .delete(pb::DeleteRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("delete");
    }

    fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.api.get_json(&kind_ref(api_version, kind), ns, name)
    }

    fn pod(&self, name: &str) -> Option<Value> {
        self.get("v1", "Pod", NS, name)
    }

    fn events(&self, reason: &str) -> Vec<Value> {
        self.api
            .list_json(&kind_ref("v1", "Event"))
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }
}

/// An owner reference to `owner` (as the server returned it).
fn owner_ref(owner: &Value, controller: bool) -> Value {
    json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": controller, "blockOwnerDeletion": true})
}

fn with_owners(kind: &str, name: &str, refs: Vec<Value>) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}});
    if !refs.is_empty() {
        v["metadata"]["ownerReferences"] = json!(refs);
    }
    if kind == "Pod" {
        v["spec"] = json!({"containers": [{"name": "c", "image": "app:1"}]});
    }
    v
}

fn replica_set(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "app:1"}]}}}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "app:1"}]}}}})
}

#[tokio::test(start_paused = true)]
async fn dependents_of_a_deleted_owner_are_deleted_down_the_chain() {
    let h = fake();
    let rs = h
        .create("apps/v1", "ReplicaSet", NS, replica_set("web"))
        .await;
    let r = owner_ref(&rs, true);
    for p in ["web-1", "web-2"] {
        h.create("v1", "Pod", NS, with_owners("Pod", p, vec![r.clone()]))
            .await;
    }
    let p1 = h.pod("web-1").unwrap();
    // A config owned by a pod: collected once the pod is, as a chain.
    h.create(
        "v1",
        "ConfigMap",
        NS,
        with_owners("ConfigMap", "web-1-cfg", vec![owner_ref(&p1, false)]),
    )
    .await;
    h.create("v1", "Pod", NS, with_owners("Pod", "orphan", vec![]))
        .await;
    h.start(2);
    h.settle().await;
    assert!(
        h.pod("web-1").is_some() && h.pod("web-2").is_some(),
        "a live owner keeps its pods"
    );

    h.delete("apps/v1", "ReplicaSet", NS, "web").await;
    h.settle().await;
    assert!(h.pod("web-1").is_none() && h.pod("web-2").is_none());
    assert!(h.get("v1", "ConfigMap", NS, "web-1-cfg").is_none());
    assert!(h.pod("orphan").is_some(), "no owner references: not ours");

    // A dependent created after its owner is gone is collected as well.
    h.create("v1", "Pod", NS, with_owners("Pod", "late", vec![r]))
        .await;
    h.settle().await;
    assert!(h.pod("late").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_live_owner_keeps_the_dependent_which_loses_the_dangling_reference() {
    let h = fake();
    let a = h.create("apps/v1", "Deployment", NS, deployment("a")).await;
    let b = h.create("apps/v1", "Deployment", NS, deployment("b")).await;
    let mut ra = owner_ref(&a, false);
    ra["blockOwnerDeletion"] = json!(false);
    let refs = vec![ra.clone(), owner_ref(&b, true)];
    h.create(
        "v1",
        "ConfigMap",
        NS,
        with_owners("ConfigMap", "shared", refs),
    )
    .await;
    h.start(2);
    h.settle().await;
    h.delete("apps/v1", "Deployment", NS, "b").await;
    h.settle().await;
    let cm = h.get("v1", "ConfigMap", NS, "shared").expect("kept");
    assert_eq!(
        cm["metadata"]["ownerReferences"],
        json!([ra]),
        "only the dangling reference goes, the other as written"
    );
    // The last owner goes too: so does the dependent.
    h.delete("apps/v1", "Deployment", NS, "a").await;
    h.settle().await;
    assert!(h.get("v1", "ConfigMap", NS, "shared").is_none());
}

#[tokio::test(start_paused = true)]
async fn owners_the_collector_cannot_judge_keep_the_dependent() {
    let h = fake();
    let widget =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "w1"});
    let old_group =
        json!({"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet", "name": "x", "uid": "x1"});
    let no_uid = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "y"});
    let gone = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "z", "uid": "z1"});
    h.create("v1", "Pod", NS, with_owners("Pod", "widget", vec![widget]))
        .await;
    h.create("v1", "Pod", NS, with_owners("Pod", "old", vec![old_group]))
        .await;
    h.create("v1", "Pod", NS, with_owners("Pod", "no-uid", vec![no_uid]))
        .await;
    // An unknown owner next to a dangling one still counts: only the dangling one goes.
    let unknown =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "w1"});
    h.create(
        "v1",
        "Pod",
        NS,
        with_owners("Pod", "mixed", vec![unknown.clone(), gone.clone()]),
    )
    .await;
    h.create("v1", "Pod", NS, with_owners("Pod", "dangling", vec![gone]))
        .await;
    h.start(2);
    h.settle().await;
    for p in ["widget", "old", "no-uid"] {
        assert!(h.pod(p).is_some(), "{p} deleted");
    }
    assert_eq!(
        h.pod("mixed").unwrap()["metadata"]["ownerReferences"],
        json!([unknown])
    );
    assert!(h.pod("dangling").is_none(), "the collector did run");
}

#[tokio::test(start_paused = true)]
async fn namespaces_bound_what_an_owner_reference_reaches() {
    let h = fake();
    // A cluster-scoped owner: a node's Lease goes with the node.
    let node = h
        .create(
            "v1",
            "Node",
            "",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        )
        .await;
    let mut lease = with_owners("Lease", "n1", vec![owner_ref(&node, false)]);
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    h.create("coordination.k8s.io/v1", "Lease", "kube-node-lease", lease)
        .await;
    // An owner in another namespace is not reachable: the dependent is collected, with a
    // warning.
    let rs = h
        .create("apps/v1", "ReplicaSet", "a", replica_set("web"))
        .await;
    h.create(
        "v1",
        "Pod",
        NS,
        with_owners("Pod", "elsewhere", vec![owner_ref(&rs, true)]),
    )
    .await;
    // A cluster-scoped dependent naming a namespaced owner is unresolvable: kept, with a
    // warning.
    let mut role = with_owners("ClusterRole", "r", vec![owner_ref(&rs, true)]);
    role["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
    h.create("rbac.authorization.k8s.io/v1", "ClusterRole", "", role)
        .await;
    h.start(2);
    h.settle().await;
    let lease_of = || h.get("coordination.k8s.io/v1", "Lease", "kube-node-lease", "n1");
    assert!(lease_of().is_some(), "its node exists");
    assert!(h.pod("elsewhere").is_none());
    assert!(
        h.get("rbac.authorization.k8s.io/v1", "ClusterRole", "", "r")
            .is_some()
    );
    let warnings = h.events("OwnerRefInvalidNamespace");
    let about = |kind: &str| {
        warnings
            .iter()
            .filter(|e| e["involvedObject"]["kind"] == kind)
            .count()
    };
    assert!(
        about("Pod") >= 1 && about("ClusterRole") >= 1,
        "{warnings:?}"
    );
    let msg = warnings
        .iter()
        .find(|e| e["involvedObject"]["kind"] == "Pod")
        .map(|e| e["message"].clone());
    assert_eq!(
        msg,
        Some(json!(format!(
            "ownerRef [apps/v1/ReplicaSet, namespace: ns, name: web, uid: {}] does not exist in namespace \"ns\"",
            rs["metadata"]["uid"].as_str().unwrap()
        )))
    );
    h.delete("v1", "Node", "", "n1").await;
    h.settle().await;
    assert!(lease_of().is_none(), "the node went");
}

#[tokio::test(start_paused = true)]
async fn a_recreated_owner_does_not_inherit_its_predecessors_dependents() {
    let h = fake();
    let old = h
        .create("apps/v1", "ReplicaSet", NS, replica_set("web"))
        .await;
    h.create(
        "v1",
        "Pod",
        NS,
        with_owners("Pod", "old-pod", vec![owner_ref(&old, true)]),
    )
    .await;
    h.start(2);
    h.settle().await;
    // Deleted and recreated under the same name before the collector looks again.
    h.delete("apps/v1", "ReplicaSet", NS, "web").await;
    let new = h
        .create("apps/v1", "ReplicaSet", NS, replica_set("web"))
        .await;
    assert_ne!(old["metadata"]["uid"], new["metadata"]["uid"]);
    h.create(
        "v1",
        "Pod",
        NS,
        with_owners("Pod", "new-pod", vec![owner_ref(&new, true)]),
    )
    .await;
    h.settle().await;
    assert!(h.pod("old-pod").is_none(), "the old uid is gone");
    assert!(h.pod("new-pod").is_some());
    assert!(h.get("apps/v1", "ReplicaSet", NS, "web").is_some());
}

#[tokio::test(start_paused = true)]
async fn many_dependents_of_one_owner_cost_one_read_of_it() {
    let h = fake();
    let rs = h
        .create("apps/v1", "ReplicaSet", NS, replica_set("web"))
        .await;
    for i in 0..10 {
        h.create(
            "v1",
            "Pod",
            NS,
            with_owners("Pod", &format!("p{i}"), vec![owner_ref(&rs, true)]),
        )
        .await;
    }
    h.start(1);
    h.settle().await;
    assert_eq!(h.api.calls(Op::Get), 0, "live owners cost no request");
    h.delete("apps/v1", "ReplicaSet", NS, "web").await;
    h.settle().await;
    assert!(
        h.api
            .list_json(&kind_ref("v1", "Pod"))
            .into_iter()
            .all(|p| p["metadata"]["namespace"] != NS)
    );
    // One live read of each pod before deleting it, one of the owner.
    assert_eq!(h.api.calls(Op::Get), 11);
}

/// Kinds over caches the test fills, to hold a cache behind the server.
fn stale_kinds() -> (Store, Store, Arc<Kinds>) {
    let (pods, pod_reader) = Store::new();
    let (sets, set_reader) = Store::new();
    let kinds = Kinds::new(vec![
        ("v1".into(), "Pod".into(), true, pod_reader),
        ("apps/v1".into(), "ReplicaSet".into(), true, set_reader),
    ]);
    (pods, sets, Arc::new(kinds))
}

fn cached(v: &Value) -> Arc<CachedObject> {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let rv = s("/metadata/resourceVersion").parse().unwrap_or(0);
    Arc::new(CachedObject::new(
        &s("/apiVersion"),
        &s("/kind"),
        &s("/metadata/namespace"),
        &s("/metadata/name"),
        rv,
        v.clone(),
    ))
}

#[tokio::test(start_paused = true)]
async fn an_owner_missing_from_a_stale_cache_is_read_live_before_deleting() {
    let h = fake();
    let rs = h
        .create("apps/v1", "ReplicaSet", NS, replica_set("web"))
        .await;
    let pod = h
        .create(
            "v1",
            "Pod",
            NS,
            with_owners("Pod", "p", vec![owner_ref(&rs, true)]),
        )
        .await;
    // The pod cache has the pod, the ReplicaSet cache has not seen its owner yet.
    let (mut pods, _sets, kinds) = stale_kinds();
    pods.apply(cached(&pod));
    let dynapi: Arc<dyn Api> = h.api.clone();
    let (events, _task) =
        EventRecorder::new(Arc::clone(&dynapi), "gc", "", Arc::clone(&h.clock), 16);
    let ctx = Arc::new(Ctx::new(dynapi, kinds, events));
    let r = reconcile("Pod/ns/p".into(), Arc::clone(&ctx))
        .await
        .unwrap();
    assert_eq!(r, Action::AwaitChange);
    assert!(h.pod("p").is_some(), "the owner exists on the server");
    assert_eq!(h.api.calls(Op::Get), 2, "the pod and its owner, read live");

    // Gone on the server too: now it is collected (the cache still lags).
    h.delete("apps/v1", "ReplicaSet", NS, "web").await;
    reconcile("Pod/ns/p".into(), ctx).await.unwrap();
    assert!(h.pod("p").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_stale_cached_dependent_is_judged_by_its_live_owner_references() {
    let h = fake();
    let gone = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "z", "uid": "z1"});
    let pod = h
        .create("v1", "Pod", NS, with_owners("Pod", "p", vec![gone]))
        .await;
    // Since cached, the pod was adopted by a live owner.
    let rs = h
        .create("apps/v1", "ReplicaSet", NS, replica_set("web"))
        .await;
    let live = owner_ref(&rs, true);
    h.api
        .patch(pb::PatchRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: NS.into(),
            name: "p".into(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(json!({"metadata": {"ownerReferences": [live]}}).to_string()),
            status: false,
            options: None,
        })
        .await
        .unwrap();
    let (mut pods, mut sets, kinds) = stale_kinds();
    pods.apply(cached(&pod));
    sets.apply(cached(&rs));
    let dynapi: Arc<dyn Api> = h.api.clone();
    let (events, _task) =
        EventRecorder::new(Arc::clone(&dynapi), "gc", "", Arc::clone(&h.clock), 16);
    let ctx = Arc::new(Ctx::new(dynapi, kinds, events));
    reconcile("Pod/ns/p".into(), ctx).await.unwrap();
    assert_eq!(
        h.pod("p").unwrap()["metadata"]["ownerReferences"],
        json!([live])
    );
}

#[test]
fn events_map_to_the_dependents_they_concern() {
    let (mut pods, pod_reader) = Store::new();
    let (mut sets, set_reader) = Store::new();
    for r in [&pod_reader, &set_reader] {
        let _ = r.add_index(
            super::kinds::INDEX_OWNER_KIND,
            super::kinds::owner_kind_index(),
        );
    }
    let kinds = Arc::new(Kinds::new(vec![
        ("v1".into(), "Pod".into(), true, pod_reader),
        ("apps/v1".into(), "ReplicaSet".into(), true, set_reader),
    ]));
    let obj = |av: &str, kind: &str, name: &str, uid: &str, refs: Value| {
        Arc::new(CachedObject::new(
            av,
            kind,
            NS,
            name,
            1,
            json!({"metadata": {"name": name, "namespace": NS, "uid": uid, "ownerReferences": refs}}),
        ))
    };
    let rs_ref =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r1"}]);
    let rs = obj("apps/v1", "ReplicaSet", "rs", "r1", json!([]));
    let owned = obj("v1", "Pod", "owned", "p1", rs_ref.clone());
    let orphan = obj("v1", "Pod", "orphan", "p2", json!([]));
    pods.apply(owned.clone());
    pods.apply(orphan.clone());
    sets.apply(rs.clone());
    let (pod_map, set_map) = (mapper(Arc::clone(&kinds), 0), mapper(kinds, 1));
    assert_eq!(
        pod_map(&ReflectorEvent::Added(owned.clone())),
        ["Pod/ns/owned"]
    );
    assert!(
        pod_map(&ReflectorEvent::Added(orphan.clone())).is_empty(),
        "no owners: nothing to collect"
    );
    assert_eq!(
        set_map(&ReflectorEvent::Deleted(rs.clone())),
        ["Pod/ns/owned"],
        "an owner's deletion reaches its dependents"
    );
    // A relist of ReplicaSets may have hidden a deletion: their dependents are looked at.
    assert_eq!(
        set_map(&ReflectorEvent::Restarted(vec![])),
        ["Pod/ns/owned"]
    );
    assert_eq!(
        pod_map(&ReflectorEvent::Restarted(vec![owned, orphan])),
        ["Pod/ns/owned"]
    );
}
