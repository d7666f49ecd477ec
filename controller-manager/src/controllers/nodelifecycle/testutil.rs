//! What the node controllers' component tests share: chosen controllers on the client's fake
//! under paused time, with simulated nodes.

use std::sync::Arc;
use std::time::Duration;

use rudder_client::Api;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::FakeApi;
use rudder_client::proto as pb;
use rudder_testkit::NodeSim;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::NodeControllers;
use crate::Config;

pub struct Harness {
    pub api: Arc<FakeApi>,
    pub clock: SharedClock,
    pub sim: NodeSim,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Harness {
    /// `controllers` over `nodes` (simulated, renewing their Leases), settings changed by `tune`.
    pub async fn start(
        controllers: &[&str],
        nodes: &[&str],
        tune: impl FnOnce(&mut NodeControllers),
    ) -> Harness {
        let clock: SharedClock = ManualClock::shared(11);
        let api = FakeApi::builder().clock(Arc::clone(&clock)).build();
        let dynapi: Arc<dyn Api> = api.clone();
        let sim = NodeSim::start(Arc::clone(&dynapi), Arc::clone(&clock), nodes)
            .await
            .expect("nodes");
        let mut cfg = Config {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            ..Config::default()
        };
        tune(&mut cfg.nodes);
        let stop = CancellationToken::new();
        tokio::spawn(crate::run(dynapi, Arc::clone(&clock), cfg, stop.clone()));
        Harness {
            api,
            clock,
            sim,
            stop,
        }
    }

    /// The object, or `None` once it is gone.
    pub async fn find(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let req = pb::GetRequest {
            kind: Some(kind_ref("v1", kind)),
            namespace: ns.into(),
            name: name.into(),
            allow_stale: false,
        };
        match self.api.get(req).await {
            Ok(o) => Some(serde_json::from_slice(&o.json).expect("json")),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("get {kind} {name}: {e}"),
        }
    }

    pub async fn get(&self, kind: &str, ns: &str, name: &str) -> Value {
        self.find(kind, ns, name)
            .await
            .unwrap_or_else(|| panic!("{kind} {name} exists"))
    }

    /// A pod in `default` with these tolerations, bound to `node`.
    pub async fn pod_with(&self, name: &str, node: &str, tolerations: Value) {
        let spec =
            json!({"containers": [{"name": "c", "image": "web"}], "tolerations": tolerations});
        self.pod_spec(name, node, spec).await;
    }

    /// A pod in `default` with this spec, bound to `node`.
    pub async fn pod_spec(&self, name: &str, node: &str, spec: Value) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec});
        self.api
            .create(pb::CreateRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: "default".into(),
                json: pod.to_string().into(),
                options: None,
            })
            .await
            .expect("create pod");
        self.api
            .bind(pb::BindRequest {
                namespace: "default".into(),
                name: name.into(),
                node_name: node.into(),
                ..Default::default()
            })
            .await
            .expect("bind");
    }

    /// Every Event's reason and message, in `default`.
    pub async fn events(&self) -> Vec<(String, String)> {
        let req = pb::ListRequest {
            kind: Some(kind_ref("v1", "Event")),
            namespace: "default".into(),
            ..Default::default()
        };
        let list = self.api.list(req).await.expect("list events");
        list.items
            .iter()
            .map(|o| {
                let e: Value = serde_json::from_slice(&o.json).expect("json");
                let s = |f: &str| e[f].as_str().unwrap_or("").to_string();
                (s("reason"), s("message"))
            })
            .collect()
    }

    pub async fn pod_on(&self, name: &str, node: &str) {
        self.pod_with(name, node, json!([])).await;
    }

    /// Deletes a `default` pod (gracefully) or a Node.
    pub async fn delete(&self, kind: &str, ns: &str, name: &str) {
        self.api
            .delete(pb::DeleteRequest {
                kind: Some(kind_ref("v1", kind)),
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("delete");
    }

    /// A merge patch of a cluster-scoped or `default` object (`status`: of its status).
    pub async fn patch(&self, kind: &str, ns: &str, name: &str, patch: Value, status: bool) {
        self.api
            .patch(pb::PatchRequest {
                kind: Some(kind_ref("v1", kind)),
                namespace: ns.into(),
                name: name.into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: patch.to_string().into(),
                status,
                options: None,
            })
            .await
            .expect("patch");
    }
}

/// Lets paused time run for `secs`, in small steps so that every task gets its turn.
pub async fn settle(secs: u64) {
    for _ in 0..secs * 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The object's condition of type `ty` (`null` when absent).
pub fn condition<'a>(obj: &'a Value, ty: &str) -> &'a Value {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}
