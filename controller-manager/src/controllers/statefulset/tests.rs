//! StatefulSet identity (pure) and reconciles against the in-memory API under paused time:
//! creation order, scale-down order, the partitioned rolling update, recreation of failed pods
//! and the claims' retention.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::cache::CachedObject;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::events::EventRecorder;
use rudder_client::expectations::Expectations;
use rudder_client::fake::FakeApi;
use rudder_client::informer::InformerFactory;
use rudder_client::proto as pb;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::identity::{self, POD_INDEX_LABEL, POD_NAME_LABEL};
use super::{Ctx, Ss, reconcile};
use crate::util::revision::POD_REVISION_LABEL;

fn set_json(replicas: i64, extra: Value) -> Value {
    let mut v = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "ns", "uid": "s1", "generation": 1},
        "spec": {"replicas": replicas, "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "w:1"}],
                    "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "data"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
    rudder_client::fake::merge_patch(&mut v, &extra);
    v
}

fn ss(replicas: i64, extra: Value) -> Ss {
    let v = set_json(replicas, extra);
    Ss::parse(Arc::new(CachedObject::new(
        "apps/v1",
        "StatefulSet",
        "ns",
        "web",
        1,
        v,
    )))
    .unwrap()
}

#[test]
fn names_ordinals_and_membership() {
    assert_eq!(identity::parent_and_ordinal("web-12"), Some(("web", 12)));
    assert_eq!(
        identity::parent_and_ordinal("my-web-0"),
        Some(("my-web", 0))
    );
    assert_eq!(identity::parent_and_ordinal("web-x"), None);
    assert_eq!(identity::parent_and_ordinal("web-"), None);
    assert!(identity::is_member("web", "web-3"));
    assert!(!identity::is_member("web", "webby-3"));
    assert!(!identity::is_member("web", "web-abc"));
}

#[test]
fn a_pod_gets_its_identity_and_claims() {
    let s = ss(3, json!({"spec": {"ordinals": {"start": 5}}}));
    let pod = identity::new_pod(&s, &s.template, "web-abc", 6);
    assert_eq!(pod["metadata"]["name"], "web-6");
    assert_eq!(pod["metadata"]["labels"][POD_NAME_LABEL], "web-6");
    assert_eq!(pod["metadata"]["labels"][POD_INDEX_LABEL], "6");
    assert_eq!(pod["metadata"]["labels"][POD_REVISION_LABEL], "web-abc");
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert_eq!(pod["spec"]["hostname"], "web-6");
    assert_eq!(pod["spec"]["subdomain"], "nginx");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "s1");
    // The claim template's volume replaces the template's volume of the same name.
    assert_eq!(
        pod["spec"]["volumes"],
        json!([{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-6"}},
               {"name": "cfg", "emptyDir": {}}])
    );
    let claims = identity::claims(&s, 6);
    assert_eq!(claims.len(), 1);
    let c = &claims[0].1;
    assert_eq!(c["metadata"]["name"], "www-web-6");
    assert_eq!(
        c["metadata"]["labels"],
        json!({"tier": "data", "app": "web"})
    );
    assert_eq!(c["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(identity::in_range(&s, 5) && identity::in_range(&s, 7));
    assert!(!identity::in_range(&s, 4) && !identity::in_range(&s, 8));
}

#[test]
fn retention_policy_owner_references() {
    let claim = |refs: Value| {
        CachedObject::new(
            "v1",
            "PersistentVolumeClaim",
            "ns",
            "www-web-2",
            1,
            json!({"metadata": {"name": "www-web-2", "ownerReferences": refs}}),
        )
    };
    let pod = json!({"metadata": {"name": "web-2", "uid": "p2"}});
    let policy = |deleted: &str, scaled: &str, replicas: i64| {
        ss(
            replicas,
            json!({"spec": {"persistentVolumeClaimRetentionPolicy":
            {"whenDeleted": deleted, "whenScaled": scaled}}}),
        )
    };
    let uids = |refs: Option<Vec<Value>>| {
        refs.map(|r| {
            r.iter()
                .map(|x| x["uid"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
    };
    let bare = claim(json!([]));
    // Retain/Retain: nothing to add.
    assert_eq!(
        uids(identity::wanted_claim_refs(
            &policy("Retain", "Retain", 3),
            &bare,
            &pod
        )),
        None
    );
    // whenDeleted: the set owns the claims of pods in range.
    assert_eq!(
        uids(identity::wanted_claim_refs(
            &policy("Delete", "Retain", 3),
            &bare,
            &pod
        )),
        Some(vec!["s1".into()])
    );
    // whenScaled: the pod owns the claim once it is scaled away, the set no longer does.
    let set_owned = claim(
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1"}]),
    );
    assert_eq!(
        uids(identity::wanted_claim_refs(
            &policy("Delete", "Delete", 2),
            &set_owned,
            &pod
        )),
        Some(vec!["p2".into()])
    );
    assert_eq!(
        identity::wanted_claim_refs(&policy("Delete", "Delete", 3), &set_owned, &pod),
        None,
        "in range under Delete/Delete: the set's reference stays"
    );
    // Retain again: our references go, others stay.
    let mixed = claim(
        json!([{"kind": "Pod", "name": "web-2", "uid": "p2"}, {"kind": "Other", "uid": "o1"}]),
    );
    assert_eq!(
        uids(identity::wanted_claim_refs(
            &policy("Retain", "Retain", 1),
            &mixed,
            &pod
        )),
        Some(vec!["o1".into()])
    );
    assert!(identity::is_stale(&mixed, "web-2", ""));
    assert!(!identity::is_stale(&mixed, "web-2", "p2"));
}

// Reconciles against the in-memory API.

struct Harness {
    api: Arc<FakeApi>,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    /// Pod names in the order they were first seen.
    created: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn harness() -> Harness {
    let clock = ManualClock::shared(3);
    let api = FakeApi::builder().clock(clock.clone()).build();
    let clock: SharedClock = clock;
    let dynapi: Arc<dyn Api> = api.clone();
    let factory = InformerFactory::new(Arc::clone(&dynapi), Arc::clone(&clock));
    let inf = |v: &str, k: &str| factory.for_kind(v, k).reader();
    let sets = inf("apps/v1", "StatefulSet");
    let exp = Arc::new(Expectations::new(Arc::clone(&clock)));
    let mut pod_events = factory.for_kind("v1", "Pod").subscribe();
    let mapper = super::pod_mapper(sets.clone(), Arc::clone(&exp));
    let created = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let (stop, seen) = (cancel.clone(), Arc::clone(&created));
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = pod_events.recv() => ev,
            };
            let Some(ev) = ev else { return };
            mapper(&ev);
            if let rudder_client::reflector::ReflectorEvent::Added(p) = &ev {
                seen.lock().unwrap().push(p.name.clone());
            }
        }
    });
    let ctx = Arc::new(Ctx {
        api: Arc::clone(&dynapi),
        clock: Arc::clone(&clock),
        events: EventRecorder::new(
            Arc::clone(&dynapi),
            "statefulset-controller",
            "",
            Arc::clone(&clock),
            64,
        )
        .0,
        sets,
        pods: inf("v1", "Pod"),
        claims: inf("v1", "PersistentVolumeClaim"),
        revisions: inf("apps/v1", "ControllerRevision"),
        exp,
    });
    factory.start(&cancel);
    assert!(factory.wait_for_cache_sync(&cancel).await);
    Harness {
        api,
        ctx,
        cancel,
        created,
    }
}

impl Harness {
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn create_set(&self, body: Value) {
        self.api
            .create(pb::CreateRequest {
                kind: Some(kind_ref("apps/v1", "StatefulSet")),
                namespace: "ns".into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .unwrap();
    }

    async fn patch_set(&self, patch: Value) {
        self.api
            .patch(pb::PatchRequest {
                kind: Some(kind_ref("apps/v1", "StatefulSet")),
                namespace: "ns".into(),
                name: "web".into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: Bytes::from(patch.to_string()),
                status: false,
                options: None,
            })
            .await
            .unwrap();
    }

    async fn reconcile(&self) {
        self.settle().await;
        reconcile("ns/web".into(), Arc::clone(&self.ctx))
            .await
            .unwrap();
        self.settle().await;
    }

    fn list(&self, av: &str, kind: &str) -> Vec<Value> {
        let mut v = self.api.list_json(&kind_ref(av, kind));
        v.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        v
    }

    fn pods(&self) -> Vec<String> {
        self.list("v1", "Pod")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn set(&self) -> Value {
        self.list("apps/v1", "StatefulSet").remove(0)
    }

    /// Marks every pod (or only `name`) with `phase`, Ready when Running.
    async fn mark(&self, only: Option<&str>, phase: &str) {
        for p in self.list("v1", "Pod") {
            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let cached = CachedObject::new("v1", "Pod", "ns", &name, 0, p.clone());
            let at = format!("{:.0}", self.ctx.clock.now());
            let ready = if phase == "Running" { "True" } else { "False" };
            let status = json!({"phase": phase, "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": at}]});
            rudder_client::write::patch_status(self.api.as_ref(), &cached, status)
                .await
                .unwrap();
        }
    }

    fn image_of(&self, pod: &str) -> String {
        self.list("v1", "Pod")
            .iter()
            .find(|p| p["metadata"]["name"] == pod)
            .and_then(|p| p["spec"]["containers"][0]["image"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

#[tokio::test(start_paused = true)]
async fn ordered_ready_creates_in_order_and_scales_down_in_reverse() {
    let h = harness().await;
    h.create_set(set_json(3, json!({}))).await;
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0"], "one at a time");
    let claims = h.list("v1", "PersistentVolumeClaim");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "www-web-0");
    // web-0 is not ready: nothing more.
    h.mark(None, "Pending").await;
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0"]);
    for want in [2, 3] {
        h.mark(None, "Running").await;
        h.reconcile().await;
        assert_eq!(h.pods().len(), want);
    }
    h.mark(None, "Running").await;
    h.reconcile().await;
    assert_eq!(*h.created.lock().unwrap(), ["web-0", "web-1", "web-2"]);
    let s = h.set();
    assert_eq!(s["status"]["replicas"], 3, "{s}");
    assert_eq!(s["status"]["readyReplicas"], 3, "{s}");
    assert_eq!(s["status"]["availableReplicas"], 3, "{s}");
    assert_eq!(
        s["status"]["currentRevision"],
        s["status"]["updateRevision"]
    );
    let uids: Vec<Value> = h
        .list("v1", "PersistentVolumeClaim")
        .iter()
        .map(|c| c["metadata"]["uid"].clone())
        .collect();
    // Scale to 1: web-2 first, then web-1; the claims stay.
    h.patch_set(json!({"spec": {"replicas": 1}})).await;
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0", "web-1"]);
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0"]);
    let after: Vec<Value> = h
        .list("v1", "PersistentVolumeClaim")
        .iter()
        .map(|c| c["metadata"]["uid"].clone())
        .collect();
    assert_eq!(uids, after, "claims are kept across a scale-down");
}

#[tokio::test(start_paused = true)]
async fn parallel_creates_and_deletes_at_once() {
    let h = harness().await;
    h.create_set(set_json(
        3,
        json!({"spec": {"podManagementPolicy": "Parallel"}}),
    ))
    .await;
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0", "web-1", "web-2"]);
    h.patch_set(json!({"spec": {"replicas": 0}})).await;
    h.reconcile().await;
    assert!(h.pods().is_empty(), "{:?}", h.pods());
}

#[tokio::test(start_paused = true)]
async fn rolling_update_goes_down_from_the_top_to_the_partition() {
    let h = harness().await;
    h.create_set(set_json(
        3,
        json!({"spec": {"updateStrategy":
        {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}}),
    ))
    .await;
    for _ in 0..4 {
        h.mark(None, "Running").await;
        h.reconcile().await;
    }
    assert_eq!(h.pods().len(), 3);
    let v1 = h.set()["status"]["currentRevision"].clone();
    h.patch_set(
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "w:2"}]}}}}),
    )
    .await;
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0", "web-1"], "web-2 goes first");
    let mut order = Vec::new();
    for _ in 0..8 {
        h.mark(None, "Running").await;
        h.reconcile().await;
        for p in ["web-1", "web-2"] {
            if h.image_of(p) == "w:2" && !order.contains(&p) {
                order.push(p);
            }
        }
    }
    assert_eq!(order, ["web-2", "web-1"]);
    assert_eq!(h.image_of("web-0"), "w:1", "below the partition");
    let s = h.set();
    assert_eq!(s["status"]["updatedReplicas"], 2, "{s}");
    assert_eq!(s["status"]["currentReplicas"], 1, "{s}");
    assert_eq!(
        s["status"]["currentRevision"], v1,
        "not complete below the partition"
    );
    assert_ne!(s["status"]["updateRevision"], v1);
    // Partition 0 finishes it; the update revision becomes current.
    h.patch_set(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}))
        .await;
    for _ in 0..4 {
        h.mark(None, "Running").await;
        h.reconcile().await;
    }
    assert_eq!(h.image_of("web-0"), "w:2");
    let s = h.set();
    assert_eq!(
        s["status"]["currentRevision"], s["status"]["updateRevision"],
        "{s}"
    );
    assert_eq!(s["status"]["currentReplicas"], 3, "{s}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_pod_is_made_again_under_its_name_with_its_claim() {
    let h = harness().await;
    h.create_set(set_json(2, json!({}))).await;
    for _ in 0..3 {
        h.mark(None, "Running").await;
        h.reconcile().await;
    }
    let claim_uid = h.list("v1", "PersistentVolumeClaim")[1]["metadata"]["uid"].clone();
    let old_uid = h.list("v1", "Pod")[1]["metadata"]["uid"].clone();
    h.mark(Some("web-1"), "Failed").await;
    h.reconcile().await;
    let pods = h.list("v1", "Pod");
    assert_eq!(h.pods(), ["web-0", "web-1"]);
    assert_ne!(pods[1]["metadata"]["uid"], old_uid, "a new pod");
    assert_eq!(
        h.list("v1", "PersistentVolumeClaim")[1]["metadata"]["uid"],
        claim_uid,
        "the same claim"
    );
    h.settle().await;
    let events = h.api.list_json(&kind_ref("v1", "Event"));
    assert!(
        events.iter().any(|e| e["reason"] == "RecreatingFailedPod"
            && e["message"] == "StatefulSet ns/web is recreating failed Pod web-1"),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_scaled_delete_claims_go_with_their_pods() {
    let h = harness().await;
    h.create_set(set_json(2, json!({"spec": {"podManagementPolicy": "Parallel",
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"}}})))
        .await;
    h.reconcile().await;
    h.mark(None, "Running").await;
    h.reconcile().await;
    assert_eq!(h.list("v1", "PersistentVolumeClaim").len(), 2);
    h.patch_set(json!({"spec": {"replicas": 1}})).await;
    h.reconcile().await;
    assert_eq!(h.pods(), ["web-0"]);
    h.reconcile().await;
    let claims: Vec<String> = h
        .list("v1", "PersistentVolumeClaim")
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        claims,
        ["www-web-0"],
        "the scaled-down pod's claim went with it"
    );
}

#[tokio::test(start_paused = true)]
async fn when_deleted_delete_claims_go_with_the_set() {
    let h = harness().await;
    h.create_set(set_json(2, json!({"spec": {"podManagementPolicy": "Parallel",
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}})))
        .await;
    h.reconcile().await;
    let claims = h.list("v1", "PersistentVolumeClaim");
    assert_eq!(claims.len(), 2);
    let uid = h.set()["metadata"]["uid"].clone();
    for c in &claims {
        assert_eq!(c["metadata"]["ownerReferences"][0]["uid"], uid, "{c}");
        assert_eq!(
            c["metadata"]["ownerReferences"][0]["kind"], "StatefulSet",
            "{c}"
        );
    }
    // Scaling down keeps them under whenScaled: Retain.
    h.patch_set(json!({"spec": {"replicas": 1}})).await;
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(h.list("v1", "PersistentVolumeClaim").len(), 2);
    h.api
        .delete(pb::DeleteRequest {
            kind: Some(kind_ref("apps/v1", "StatefulSet")),
            namespace: "ns".into(),
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    h.reconcile().await;
    assert!(h.list("v1", "PersistentVolumeClaim").is_empty());
}
