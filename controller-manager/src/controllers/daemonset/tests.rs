//! The DaemonSet's decisions (pure), and reconciles against the in-memory API under paused time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{self, ByNode, Counts, GENERATION_LABEL};
use super::{Ctx, Ds, FailedBackoff, reconcile};
use crate::util::revision::POD_REVISION_LABEL;

const T0: &str = "2026-01-01T00:00:00Z";

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn ds_json(strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ns", "uid": "ds1", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"role": "worker"}, "containers": [{"name": "c", "image": "a:1"}]}}}})
}

fn ds(strategy: Value) -> Ds {
    let v = ds_json(strategy);
    Ds::parse(Arc::new(CachedObject::new(
        "apps/v1",
        "DaemonSet",
        "ns",
        "agent",
        1,
        v,
    )))
    .unwrap()
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

fn node(name: &str, role: &str) -> Arc<CachedObject> {
    let v = json!({"metadata": {"name": name, "labels": {"role": role}}});
    Arc::new(CachedObject::new("v1", "Node", "", name, 1, v))
}

/// A pod on `node` of revision `hash`: `ready` and `phase` as given.
fn pod(name: &str, node: &str, hash: &str, phase: &str, ready: bool) -> Arc<CachedObject> {
    let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
            "creationTimestamp": T0,
            "labels": {"app": "agent", POD_REVISION_LABEL: hash, GENERATION_LABEL: "0"}},
        "spec": {"nodeName": node},
        "status": {"phase": phase, "conditions": [{"type": "Ready",
            "status": if ready {"True"} else {"False"}, "lastTransitionTime": T0}]}});
    Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
}

fn names(v: &[Arc<CachedObject>]) -> Vec<&str> {
    let mut n: Vec<&str> = v.iter().map(|p| p.name.as_str()).collect();
    n.sort();
    n
}

fn always(_: &str) -> Result<(), Duration> {
    Ok(())
}

#[test]
fn manage_places_one_pod_per_eligible_node_and_removes_the_rest() {
    let d = ds(rolling(json!(0), json!(1)));
    let nodes = vec![node("n1", "worker"), node("n2", "db"), node("n3", "worker")];
    let pods = vec![
        pod("on-db", "n2", "h1", "Running", true),
        pod("n3-first", "n3", "h1", "Running", true),
        pod("n3-second", "n3", "h1", "Running", true),
        pod("on-gone", "n9", "h1", "Running", true),
        pod("done", "n1", "h1", "Succeeded", false),
    ];
    let by = plan::by_node(&pods);
    let p = plan::manage(&d, &nodes, &by, "h1", now(), &mut always);
    // n1 holds a finished pod until it is deleted: nothing is placed beside it yet.
    assert!(p.create_on.is_empty(), "{:?}", p.create_on);
    assert_eq!(names(&p.delete), ["done", "n3-second", "on-db", "on-gone"]);
    let by = plan::by_node(&pods[..1]);
    let p = plan::manage(&d, &nodes, &by, "h1", now(), &mut always);
    assert_eq!(p.create_on, ["n1", "n3"]);
}

#[test]
fn failed_pods_are_deleted_within_a_back_off() {
    let d = ds(json!({"type": "OnDelete"}));
    let nodes = vec![node("n1", "worker")];
    let by = plan::by_node(&[pod("broken", "n1", "h1", "Failed", false)]);
    let mut refuse = |_: &str| Err(Duration::from_secs(3));
    let p = plan::manage(&d, &nodes, &by, "h1", now(), &mut refuse);
    assert!(p.is_empty());
    assert_eq!(p.retry_after, Some(Duration::from_secs(3)));
    let p = plan::manage(&d, &nodes, &by, "h1", now(), &mut always);
    assert_eq!(names(&p.delete), ["broken"]);
    assert_eq!(
        p.failed,
        ["Found failed daemon pod ns/broken on node n1, will try to kill it"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_failed_pod_back_off_doubles() {
    let b = FailedBackoff::default();
    let t = Instant::now();
    assert_eq!(b.allow("k", t), Ok(()));
    assert_eq!(b.allow("k", t), Err(Duration::from_secs(1)));
    assert_eq!(b.allow("other", t), Ok(()), "per key");
    let t = t + Duration::from_secs(1);
    assert_eq!(b.allow("k", t), Ok(()));
    assert_eq!(
        b.allow("k", t + Duration::from_millis(500)),
        Err(Duration::from_millis(1500))
    );
    let t = t + Duration::from_secs(2);
    assert_eq!(b.allow("k", t), Ok(()));
    assert_eq!(b.allow("k", t), Err(Duration::from_secs(4)));
    // Long quiet: forgotten, back to the first step.
    let t = t + Duration::from_secs(3600);
    assert_eq!(b.allow("k", t), Ok(()));
    assert_eq!(b.allow("k", t), Err(Duration::from_secs(1)));
}

fn workers(n: usize) -> Vec<Arc<CachedObject>> {
    (1..=n).map(|i| node(&format!("n{i}"), "worker")).collect()
}

fn all_old(n: usize) -> Vec<Arc<CachedObject>> {
    (1..=n)
        .map(|i| pod(&format!("old-{i}"), &format!("n{i}"), "h1", "Running", true))
        .collect()
}

#[test]
fn rolling_without_surge_stays_within_max_unavailable() {
    let nodes = workers(4);
    let step = |d: &Ds, pods: &[Arc<CachedObject>]| {
        plan::rolling(d, &nodes, &plan::by_node(pods), "h2", now()).unwrap()
    };
    let one = ds(rolling(json!(0), json!(1)));
    assert_eq!(step(&one, &all_old(4)).delete.len(), 1);
    // A node already without a pod uses up the allowance.
    assert!(step(&one, &all_old(3)).delete.is_empty());
    // A new pod not yet ready on n1 does too.
    let mut pods = all_old(4);
    pods[0] = pod("new-1", "n1", "h2", "Running", false);
    assert!(step(&one, &pods).delete.is_empty());
    // Once it is available, the next old pod goes.
    pods[0] = pod("new-1", "n1", "h2", "Running", true);
    assert_eq!(step(&one, &pods).delete.len(), 1);
    // An old pod that is unavailable anyway is replaced at once, even beyond the allowance.
    let mut pods = all_old(4);
    pods[2] = pod("old-3", "n3", "h1", "Running", false);
    pods[3] = pod("old-4", "n4", "h1", "Running", false);
    assert_eq!(names(&step(&one, &pods).delete), ["old-3", "old-4"]);
    // Percentages round up for DaemonSets: 30% of 4 is 2.
    let pct = ds(rolling(json!(0), json!("30%")));
    assert_eq!(step(&pct, &all_old(4)).delete.len(), 2);
    assert_eq!(
        plan::surge_and_unavailable(&pct, 4),
        Ok((0, 2)),
        "ceil(1.2)"
    );
    assert_eq!(
        plan::surge_and_unavailable(&ds(rolling(json!(0), json!(0))), 4),
        Ok((0, 1)),
        "both zero: one may be unavailable"
    );
    assert_eq!(
        plan::surge_and_unavailable(&ds(rolling(json!("10%"), json!(0))), 4),
        Ok((1, 0))
    );
}

#[test]
fn rolling_with_surge_starts_new_pods_beside_old_ones() {
    let nodes = workers(3);
    let d = ds(rolling(json!(1), json!(0)));
    let step = |pods: &[Arc<CachedObject>]| {
        plan::rolling(&d, &nodes, &plan::by_node(pods), "h2", now()).unwrap()
    };
    let p = step(&all_old(3));
    assert_eq!((p.create_on.len(), p.delete.len()), (1, 0));
    // Surging on n1, new pod not available: nothing more.
    let mut pods = all_old(3);
    pods.push(pod("new-1", "n1", "h2", "Running", false));
    let p = step(&pods);
    assert!(p.is_empty(), "{p:?}");
    // Available: the old pod on n1 goes, and the next node surges.
    pods[3] = pod("new-1", "n1", "h2", "Running", true);
    let p = step(&pods);
    assert_eq!(names(&p.delete), ["old-1"]);
    assert_eq!(p.create_on, ["n2"]);
    // The manage pass, with surge, deletes the old pod once the new one is available, and
    // keeps both while it is not.
    let p = plan::manage(&d, &nodes, &plan::by_node(&pods), "h2", now(), &mut always);
    assert_eq!(names(&p.delete), ["old-1"]);
    pods[3] = pod("new-1", "n1", "h2", "Running", false);
    let p = plan::manage(&d, &nodes, &plan::by_node(&pods), "h2", now(), &mut always);
    assert!(p.is_empty());
}

#[test]
fn status_counts_each_nodes_oldest_pod() {
    let d = ds(rolling(json!(0), json!(1)));
    let nodes = vec![node("n1", "worker"), node("n2", "worker"), node("n3", "db")];
    let pods = vec![
        pod("a", "n1", "h2", "Running", true),
        pod("b", "n2", "h1", "Pending", false),
        pod("c", "n3", "h1", "Running", true),
    ];
    let by: ByNode = plan::by_node(&pods);
    let c = plan::counts(&d, &nodes, &by, "h2", now());
    let want = Counts {
        desired: 2,
        current: 2,
        misscheduled: 1,
        ready: 1,
        available: 1,
        updated: 1,
    };
    assert_eq!(c, want);
}

// Reconciles against the in-memory API.

struct Harness {
    api: Arc<FakeApi>,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn create(api: &FakeApi, api_version: &str, kind: &str, ns: &str, body: Value) {
    api.create(pb::CreateRequest {
        kind: Some(kind_ref(api_version, kind)),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    })
    .await
    .unwrap();
}

async fn harness(nodes: &[&str]) -> Harness {
    let clock = ManualClock::shared(7);
    let api = FakeApi::builder().clock(clock.clone()).build();
    for n in nodes {
        let body = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n, "labels": {"role": "worker"}}});
        create(&api, "v1", "Node", "", body).await;
    }
    let clock: SharedClock = clock;
    let dynapi: Arc<dyn Api> = api.clone();
    let factory = InformerFactory::new(Arc::clone(&dynapi), Arc::clone(&clock));
    let inf = |v: &str, k: &str| factory.for_kind(v, k).reader();
    let (sets, pods, nodes_r, revs) = (
        inf("apps/v1", "DaemonSet"),
        inf("v1", "Pod"),
        inf("v1", "Node"),
        inf("apps/v1", "ControllerRevision"),
    );
    let exp = Arc::new(Expectations::new(Arc::clone(&clock)));
    // The pod events lower the expectations, as in the running controller.
    let mut pod_events = factory.for_kind("v1", "Pod").subscribe();
    let mapper = super::pod_mapper(sets.clone(), Arc::clone(&exp));
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = pod_events.recv() => match ev {
                    Some(ev) => { mapper(&ev); }
                    None => return,
                },
            }
        }
    });
    factory.start(&cancel);
    assert!(factory.wait_for_cache_sync(&cancel).await);
    let (events, _task) = EventRecorder::new(
        Arc::clone(&dynapi),
        "daemonset-controller",
        "",
        Arc::clone(&clock),
        64,
    );
    let ctx = Arc::new(Ctx {
        api: dynapi,
        clock: Arc::clone(&clock),
        events,
        sets,
        pods,
        nodes: nodes_r,
        revisions: revs,
        exp,
        backoff: FailedBackoff::default(),
    });
    Harness { api, ctx, cancel }
}

impl Harness {
    /// Lets the informers catch up with every write so far.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn reconcile(&self) {
        self.settle().await;
        // Pods being deleted go once their node agent confirms it.
        for p in self.list("Pod") {
            if p.pointer("/metadata/deletionTimestamp").is_some() {
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                let req = pb::DeleteRequest {
                    kind: Some(kind_ref("v1", "Pod")),
                    namespace: "ns".into(),
                    name,
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                self.api.delete(req).await.unwrap();
            }
        }
        self.settle().await;
        reconcile("ns/agent".into(), Arc::clone(&self.ctx))
            .await
            .unwrap();
        self.settle().await;
    }

    fn list(&self, kind: &str) -> Vec<Value> {
        let av = if kind == "Pod" { "v1" } else { "apps/v1" };
        let mut v = self.api.list_json(&kind_ref(av, kind));
        v.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        v
    }

    fn live_pods(&self) -> Vec<Value> {
        self.list("Pod")
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .collect()
    }

    /// Binds every pod to the node it is pinned to and marks it Running and Ready, as the
    /// scheduler and a node agent would.
    async fn run_pods(&self) {
        for p in self.live_pods() {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            let cached = CachedObject::new("v1", "Pod", "ns", &name, 0, p.clone());
            let Some(node) = super::nodes::target_node(&p) else {
                continue;
            };
            if p.pointer("/spec/nodeName").is_none() {
                self.api
                    .bind(pb::BindRequest {
                        namespace: "ns".into(),
                        name: name.clone(),
                        node_name: node,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            let at = format!("{:.0}", self.ctx.clock.now());
            let status = json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at}]});
            rudder_client::write::patch_status(self.api.as_ref(), &cached, status)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn pods_are_pinned_labelled_and_rolled_one_node_at_a_time() {
    let h = harness(&["n1", "n2", "n3"]).await;
    create(
        &h.api,
        "apps/v1",
        "DaemonSet",
        "ns",
        ds_json(rolling(json!(0), json!(1))),
    )
    .await;
    h.reconcile().await;
    let pods = h.live_pods();
    assert_eq!(pods.len(), 3);
    let revs = h.list("ControllerRevision");
    assert_eq!(revs.len(), 1);
    let hash = revs[0]["metadata"]["labels"][POD_REVISION_LABEL]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(revs[0]["revision"], 1);
    assert_eq!(revs[0]["metadata"]["name"], format!("agent-{hash}"));
    assert_eq!(revs[0]["data"]["spec"]["template"]["$patch"], "replace");
    let mut targets: Vec<String> = pods
        .iter()
        .map(|p| super::nodes::target_node(p).unwrap())
        .collect();
    targets.sort();
    assert_eq!(targets, ["n1", "n2", "n3"]);
    for p in &pods {
        assert_eq!(p["metadata"]["labels"][POD_REVISION_LABEL], hash.as_str());
        assert_eq!(p["metadata"]["labels"][GENERATION_LABEL], "1");
        assert!(
            p["metadata"]["generateName"]
                .as_str()
                .unwrap()
                .starts_with("agent-")
        );
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 6);
        assert!(
            p.pointer("/spec/nodeName").is_none(),
            "the scheduler binds it"
        );
    }
    // Running and Ready everywhere: the status says so and nothing more happens.
    h.run_pods().await;
    h.reconcile().await;
    let d = &h.list("DaemonSet")[0];
    assert_eq!(d["status"]["desiredNumberScheduled"], 3, "{d}");
    assert_eq!(d["status"]["numberAvailable"], 3, "{d}");
    assert_eq!(d["status"]["updatedNumberScheduled"], 3, "{d}");
    assert_eq!(d["status"]["observedGeneration"], 1, "{d}");
    // A new template: a second revision, and one old pod deleted at a time.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a:2"}]}}}});
    h.api
        .patch(pb::PatchRequest {
            kind: Some(kind_ref("apps/v1", "DaemonSet")),
            namespace: "ns".into(),
            name: "agent".into(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(patch.to_string()),
            status: false,
            options: None,
        })
        .await
        .unwrap();
    h.reconcile().await;
    let revs = h.list("ControllerRevision");
    assert_eq!(revs.len(), 2);
    assert_eq!(h.live_pods().len(), 2, "one old pod deleted");
    h.reconcile().await;
    let pods = h.live_pods();
    assert_eq!(pods.len(), 3, "its replacement placed");
    assert!(
        pods.iter()
            .any(|p| p["spec"]["containers"][0]["image"] == "a:2"),
        "{pods:?}"
    );
    // The replacement is not ready yet: no further deletion.
    h.reconcile().await;
    assert_eq!(h.live_pods().len(), 3);
    for _ in 0..6 {
        h.run_pods().await;
        h.reconcile().await;
    }
    let pods = h.live_pods();
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "a:2"),
        "{pods:?}"
    );
    let d = &h.list("DaemonSet")[0];
    assert_eq!(d["status"]["updatedNumberScheduled"], 3, "{d}");
    assert_eq!(d["status"]["observedGeneration"], 2, "{d}");
}

#[tokio::test(start_paused = true)]
async fn rolling_back_renumbers_the_old_revision() {
    let h = harness(&["n1"]).await;
    create(
        &h.api,
        "apps/v1",
        "DaemonSet",
        "ns",
        ds_json(json!({"type": "OnDelete"})),
    )
    .await;
    h.reconcile().await;
    let image = |i: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}});
    for i in ["a:2", "a:1"] {
        h.api
            .patch(pb::PatchRequest {
                kind: Some(kind_ref("apps/v1", "DaemonSet")),
                namespace: "ns".into(),
                name: "agent".into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: Bytes::from(image(i).to_string()),
                status: false,
                options: None,
            })
            .await
            .unwrap();
        h.reconcile().await;
    }
    let revs = h.list("ControllerRevision");
    let by_image: Vec<(String, i64)> = revs
        .iter()
        .map(|r| {
            (
                r["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_image.len(), 2, "{by_image:?}");
    assert!(by_image.contains(&("a:1".into(), 3)), "{by_image:?}");
    assert!(by_image.contains(&("a:2".into(), 2)), "{by_image:?}");
    // OnDelete: the pod was never replaced.
    assert_eq!(h.live_pods().len(), 1);
}
