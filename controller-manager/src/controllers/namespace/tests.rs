//! The namespace controller's passes on the client's fake under paused time: pods first, what
//! is left named in the conditions, failures reported and retried, the finalizer removed last,
//! the back-off from the namespace's age.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::ClientError;
use rudder_client::cache::{CachedObject, Store};
use rudder_client::clock::ManualClock;
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, Op};
use serde_json::{Value, json};

use super::*;

struct T {
    fake: Arc<FakeApi>,
    clock: Arc<ManualClock>,
}

impl T {
    fn new() -> T {
        let clock = ManualClock::shared(1);
        let fake = FakeApi::builder()
            .require_namespaces()
            .clock(clock.clone())
            .build();
        T { fake, clock }
    }

    async fn create(&self, api_version: &str, kind: &str, ns: &str, body: Value) {
        self.fake
            .create(pb::CreateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: ns.into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
    }

    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        grace: Option<i64>,
    ) {
        self.fake
            .delete(pb::DeleteRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: ns.into(),
                name: name.into(),
                grace_period_seconds: grace,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("delete {kind} {name}: {e}"));
    }

    /// A namespace `dev` with a ConfigMap, deleted.
    async fn terminating(&self) {
        self.create("v1", "Namespace", "", json!({"metadata": {"name": "dev"}}))
            .await;
        self.create(
            "v1",
            "ConfigMap",
            "dev",
            json!({"metadata": {"name": "cfg"}}),
        )
        .await;
        self.delete("v1", "Namespace", "", "dev", None).await;
    }

    fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.fake.get_json(&kind_ref(api_version, kind), ns, name)
    }

    fn namespace(&self) -> Option<Value> {
        self.get("v1", "Namespace", "", "dev")
    }

    fn condition(&self, ty: &str) -> Value {
        self.namespace()
            .and_then(|ns| {
                ns.pointer("/status/conditions")?
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == ty)
                    .cloned()
            })
            .unwrap_or(Value::Null)
    }

    /// A pass that empties and finalizes `dev`, which is then gone.
    async fn finishes(&self) {
        assert_eq!(self.pass().await.ok(), Some(Action::AwaitChange));
        assert!(self.namespace().is_none(), "finalized and gone");
    }

    /// One reconcile of `dev`, over a cache holding the namespace as stored.
    async fn pass(&self) -> Result<Action, Error> {
        let (mut store, reader) = Store::new();
        let ns = Api::get(
            self.fake.as_ref(),
            pb::GetRequest {
                kind: Some(kind_ref("v1", "Namespace")),
                namespace: String::new(),
                name: "dev".into(),
                allow_stale: false,
            },
        )
        .await;
        if let Some(o) = ns.ok().as_ref().and_then(CachedObject::from_wire) {
            store.apply(Arc::new(o));
        }
        let ctx = Arc::new(Ctx {
            api: self.fake.clone(),
            clock: self.clock.clone(),
            namespaces: reader,
        });
        reconcile("dev".into(), ctx).await
    }
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"nodeName": "node-1",
        "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "app:1"}]}})
}

#[tokio::test(start_paused = true)]
async fn pods_go_first_then_everything_else_then_the_finalizer() {
    let t = T::new();
    t.create("v1", "Namespace", "", json!({"metadata": {"name": "dev"}}))
        .await;
    for name in ["a", "b", "c"] {
        t.create("v1", "Pod", "dev", pod(name)).await;
    }
    t.create(
        "v1",
        "ConfigMap",
        "dev",
        json!({"metadata": {"name": "cfg"}}),
    )
    .await;
    t.create(
        "apps/v1",
        "Deployment",
        "dev",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "app:1"}]}}}}),
    )
    .await;
    t.delete("v1", "Namespace", "", "dev", None).await;

    // Pods on a node terminate gracefully; nothing else is touched while they do.
    let a = t.pass().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        a,
        Action::Requeue(Duration::from_secs(1)),
        "a young namespace"
    );
    let p = t.get("v1", "Pod", "dev", "a").unwrap_or_default();
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    let cfg = t.get("v1", "ConfigMap", "dev", "cfg").unwrap_or_default();
    assert!(cfg["metadata"]["deletionTimestamp"].is_null(), "{cfg}");
    assert!(t.get("apps/v1", "Deployment", "dev", "web").is_some());
    let c = t.condition(CONTENT_REMAINING);
    assert_eq!(c["status"], "True");
    assert_eq!(c["reason"], "SomeResourcesRemain");
    assert_eq!(
        c["message"],
        "Some resources are remaining: pods. has 3 resource instances"
    );
    assert_eq!(t.condition(CONTENT_FAILURE)["reason"], "ContentDeleted");
    assert_eq!(
        t.condition(DISCOVERY_FAILURE)["reason"],
        "ResourcesDiscovered"
    );
    assert_eq!(
        t.condition(GV_PARSING_FAILURE)["reason"],
        "ParsedGroupVersions"
    );
    assert_eq!(
        t.condition(FINALIZERS_REMAINING)["reason"],
        "ContentHasNoFinalizers"
    );
    assert_eq!(
        t.namespace().unwrap_or_default()["spec"]["finalizers"],
        json!(["kubernetes"])
    );

    // A second pass while they still terminate writes nothing new.
    let rv = t.fake.resource_version();
    t.pass().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.fake.resource_version(),
        rv,
        "nothing changed, nothing written"
    );

    // The node confirms the pods; the next pass deletes the rest and finalizes.
    for name in ["a", "b", "c"] {
        t.delete("v1", "Pod", "dev", name, Some(0)).await;
    }
    t.finishes().await;
    assert!(t.get("v1", "ConfigMap", "dev", "cfg").is_none());
    assert!(t.get("apps/v1", "Deployment", "dev", "web").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_finalizer_on_content_holds_the_namespace_until_it_is_removed() {
    let t = T::new();
    t.create("v1", "Namespace", "", json!({"metadata": {"name": "dev"}}))
        .await;
    t.create(
        "v1",
        "ConfigMap",
        "dev",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/x"]}}),
    )
    .await;
    t.delete("v1", "Namespace", "", "dev", None).await;
    assert!(matches!(t.pass().await, Ok(Action::Requeue(_))));
    let f = t.condition(FINALIZERS_REMAINING);
    assert_eq!(
        (&f["status"], &f["reason"]),
        (&json!("True"), &json!("SomeFinalizersRemain"))
    );
    assert_eq!(
        f["message"],
        "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"
    );
    assert_eq!(
        t.condition(CONTENT_REMAINING)["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert_eq!(
        t.condition(CONTENT_FAILURE)["status"],
        "False",
        "a finalizer is no failure"
    );
    let since = t.condition(FINALIZERS_REMAINING)["lastTransitionTime"].clone();

    // Looked at less often as it ages, up to Kubernetes' 15 / 2 + 1 seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        t.pass().await.ok(),
        Some(Action::Requeue(Duration::from_secs(3)))
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        t.pass().await.ok(),
        Some(Action::Requeue(Duration::from_secs(8)))
    );
    assert_eq!(
        t.condition(FINALIZERS_REMAINING)["lastTransitionTime"],
        since,
        "unchanged condition, unchanged time"
    );

    t.fake
        .patch(pb::PatchRequest {
            kind: Some(kind_ref("v1", "ConfigMap")),
            namespace: "dev".into(),
            name: "held".into(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(json!({"metadata": {"finalizers": null}}).to_string()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    t.finishes().await;
}

#[tokio::test(start_paused = true)]
async fn a_discovery_failure_is_reported_and_nothing_is_finalized() {
    let t = T::new();
    t.terminating().await;
    t.fake.fail_next(
        Op::Discovery,
        ClientError::Unavailable("discovery is down".into()),
    );
    let e = t
        .pass()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("discovery is down"), "{e}");
    let c = t.condition(DISCOVERY_FAILURE);
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&json!("True"), &json!("DiscoveryFailed"))
    );
    assert_eq!(c["message"], "discovery is down");
    assert!(t.get("v1", "ConfigMap", "dev", "cfg").is_some());
    assert_eq!(
        t.namespace().unwrap_or_default()["spec"]["finalizers"],
        json!(["kubernetes"])
    );
    // Discovery back: the next pass empties and finalizes it.
    t.finishes().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_is_a_content_failure_and_retried() {
    let t = T::new();
    t.terminating().await;
    t.fake.fail_next(
        Op::Delete,
        ClientError::Unavailable("the store is busy".into()),
    );
    assert!(t.pass().await.is_err());
    let c = t.condition(CONTENT_FAILURE);
    assert_eq!(c["reason"], "ContentDeletionFailed");
    assert_eq!(
        c["message"],
        "Failed to delete all resource types, 1 remaining: the store is busy"
    );
    assert_eq!(
        t.condition(CONTENT_REMAINING)["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert!(t.namespace().is_some());
    t.finishes().await;
}

#[tokio::test(start_paused = true)]
async fn active_namespaces_and_foreign_finalizers_are_left_alone() {
    let t = T::new();
    t.create("v1", "Namespace", "", json!({"metadata": {"name": "dev"}}))
        .await;
    t.create(
        "v1",
        "ConfigMap",
        "dev",
        json!({"metadata": {"name": "cfg"}}),
    )
    .await;
    assert_eq!(t.pass().await.ok(), Some(Action::AwaitChange));
    assert!(t.get("v1", "ConfigMap", "dev", "cfg").is_some());
    assert!(
        t.namespace()
            .unwrap_or_default()
            .pointer("/status/conditions")
            .is_none()
    );

    // Someone else's spec finalizer stays; ours goes, and the namespace with it once theirs does.
    t.fake
        .finalize(pb::UpdateRequest {
            kind: Some(kind_ref("v1", "Namespace")),
            json: Bytes::from(
                json!({"metadata": {"name": "dev"},
                    "spec": {"finalizers": ["example.com/keep", "kubernetes"]}})
                .to_string(),
            ),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    t.delete("v1", "Namespace", "", "dev", None).await;
    assert_eq!(t.pass().await.ok(), Some(Action::AwaitChange));
    assert_eq!(
        t.namespace().unwrap_or_default()["spec"]["finalizers"],
        json!(["example.com/keep"])
    );
    assert!(t.get("v1", "ConfigMap", "dev", "cfg").is_none());
}
