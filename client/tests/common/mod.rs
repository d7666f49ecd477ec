//! Shared test helpers: object builders over the fake and a paused-time poller.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use rudder_client::Api;
use rudder_client::conn::kind_ref;
use rudder_client::fake::FakeApi;
use rudder_client::proto as pb;
use serde_json::{Value, json};

pub fn pods() -> pb::KindRef {
    kind_ref("v1", "Pod")
}

pub fn pod(ns: &str, name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": labels}})
}

/// Creates `obj` as `kind` in the fake.
pub async fn create(fake: &Arc<FakeApi>, kind: &pb::KindRef, obj: &Value) -> pb::Object {
    let req = pb::CreateRequest {
        kind: Some(kind.clone()),
        namespace: String::new(),
        json: serde_json::to_vec(obj).expect("json").into(),
        options: None,
    };
    fake.create(req).await.expect("create")
}

pub async fn delete(fake: &Arc<FakeApi>, kind: &pb::KindRef, ns: &str, name: &str) {
    let req = pb::DeleteRequest {
        kind: Some(kind.clone()),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    };
    fake.delete(req).await.expect("delete");
}

/// Polls `cond` every 10 ms of (paused) time for up to a minute; panics with `what` otherwise.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
