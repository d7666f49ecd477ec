//! Two scheduler replicas under leader election against `FakeApi` (paused time): only the
//! Lease holder binds, and when it is cut off from the server the other takes over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::clock::ManualClock;
use rudder_client::conn::kind_ref;
use rudder_client::fake::{FakeApi, FakeClient, Op};
use rudder_client::leader::LeaderConfig;
use rudder_client::proto as pb;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn create(api: &dyn Api, kind: &str, ns: &str, body: Value) {
    let req = pb::CreateRequest {
        kind: Some(kind_ref("v1", kind)),
        namespace: ns.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    };
    api.create(req).await.expect("create");
}

async fn node(api: &dyn Api, name: &str) {
    let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
    create(api, "Node", "", n).await;
    let status = json!({"status": {
        "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"},
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

async fn pod(api: &dyn Api, name: &str) {
    let p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}});
    create(api, "Pod", "default", p).await;
}

async fn bound(api: &dyn Api, name: &str) -> bool {
    let o = api
        .get(pb::GetRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: "default".into(),
            name: name.into(),
            allow_stale: false,
        })
        .await
        .expect("get");
    let v: Value = serde_json::from_slice(&o.json).expect("json");
    v.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some()
}

/// Waits (paused time, so instantly in wall time) for the pods to be bound.
async fn wait_bound(api: &dyn Api, pods: &[&str]) {
    for _ in 0..600 {
        let mut all = true;
        for p in pods {
            all &= bound(api, p).await;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pods {pods:?} not bound within 60 s of tokio time");
}

fn replica(fake: &Arc<FakeApi>, name: &str, cancel: &CancellationToken) -> Arc<FakeClient> {
    let client = fake.client(name);
    let mut cfg = rudder_scheduler::Config::new(rudder_scheduler::DEFAULT_SCHEDULER_NAME);
    cfg.leader = Some(LeaderConfig::new("kube-system", "rudder-scheduler", name));
    let api: Arc<dyn Api> = client.clone();
    tokio::spawn(rudder_scheduler::run(
        api,
        ManualClock::shared(7),
        cfg,
        cancel.clone(),
    ));
    client
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_binds_and_the_other_takes_over_when_it_is_cut_off() {
    let fake = FakeApi::new();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    node(&*fake, "n1").await;
    let r1 = replica(&fake, "s1", &cancel);
    let r2 = replica(&fake, "s2", &cancel);
    let first = ["p0", "p1", "p2"];
    for p in first {
        pod(&*fake, p).await;
    }
    wait_bound(&*fake, &first).await;
    let (b1, b2) = (r1.calls(Op::Bind), r2.calls(Op::Bind));
    assert_eq!(b1 + b2, 3, "each pod bound once");
    assert!(b1 == 0 || b2 == 0, "both replicas bound: {b1} and {b2}");
    let (leader, follower) = if b1 > 0 { (&r1, &r2) } else { (&r2, &r1) };
    leader.hang_all();
    pod(&*fake, "p3").await;
    wait_bound(&*fake, &["p3"]).await;
    assert!(follower.calls(Op::Bind) >= 1, "the new leader bound p3");
}
