//! The in-process cluster for controller tests: a real API server (testkit), the real
//! scheduler, simulated nodes that mark bound pods Running and Ready, and the controllers,
//! which a test may stop and start again as a crash and restart would.

#![allow(dead_code)]

pub mod deploy;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_controller_manager::Config;
use rudder_testkit::{NodeSim, TestServer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub server: TestServer,
    pub api: Arc<dyn Api>,
    pub sim: NodeSim,
    scheduler: CancellationToken,
    controllers: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.scheduler.cancel();
        if let Some((c, _)) = &self.controllers {
            c.cancel();
        }
    }
}

impl Cluster {
    /// Server, scheduler, `nodes` simulated nodes and every controller.
    pub async fn start(nodes: usize) -> Cluster {
        let mut c = Self::without_controllers(nodes).await;
        c.start_controllers();
        c
    }

    pub async fn without_controllers(nodes: usize) -> Cluster {
        let server = TestServer::start().await.expect("server starts");
        Self::on_server(server, nodes).await
    }

    /// The scheduler and `nodes` simulated nodes on a server the test configured.
    pub async fn on_server(server: TestServer, nodes: usize) -> Cluster {
        Self::on_server_with_fate(
            server,
            nodes,
            Arc::new(rudder_testkit::nodesim::fate_by_image),
        )
        .await
    }

    /// [`Cluster::on_server`] with simulated nodes deciding each pod's fate by `fate`.
    pub async fn on_server_with_fate(
        server: TestServer,
        nodes: usize,
        fate: Arc<dyn Fn(&Value) -> rudder_testkit::Fate + Send + Sync>,
    ) -> Cluster {
        let api = server.api();
        let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let sim = NodeSim::start_with(Arc::clone(&api), RealClock::shared(), &refs, fate)
            .await
            .expect("nodes register");
        let scheduler = CancellationToken::new();
        let cfg = rudder_scheduler::Config::new(rudder_scheduler::DEFAULT_SCHEDULER_NAME);
        tokio::spawn(rudder_scheduler::run(
            Arc::clone(&api),
            RealClock::shared(),
            cfg,
            scheduler.clone(),
        ));
        Cluster {
            server,
            api,
            sim,
            scheduler,
            controllers: None,
        }
    }

    pub fn start_controllers(&mut self) {
        self.start_controllers_with(Config::default());
    }

    pub fn start_controllers_with(&mut self, cfg: Config) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (api, cancel) = (Arc::clone(&self.api), cancel.clone());
            async move {
                rudder_controller_manager::run(api, RealClock::shared(), cfg, cancel)
                    .await
                    .expect("controllers run");
            }
        });
        self.controllers = Some((cancel, task));
    }

    /// Stops the controllers abruptly (their in-flight calls are dropped), as a kill would.
    pub async fn kill_controllers(&mut self) {
        if let Some((c, task)) = self.controllers.take() {
            task.abort();
            c.cancel();
            let _ = task.await;
        }
    }

    pub async fn create(&self, api_version: &str, kind: &str, ns: &str, body: Value) -> Value {
        let req = pb::CreateRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: ns.to_string(),
            json: Bytes::from(body.to_string()),
            options: None,
        };
        let o = self.api.create(req).await.expect("create");
        serde_json::from_slice(&o.json).expect("json")
    }

    pub async fn patch(&self, api_version: &str, kind: &str, ns: &str, name: &str, patch: Value) {
        let req = pb::PatchRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: ns.to_string(),
            name: name.to_string(),
            patch_type: pb::PatchType::Merge as i32,
            patch: Bytes::from(patch.to_string()),
            status: false,
            options: None,
        };
        self.api.patch(req).await.expect("patch");
    }

    pub async fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let req = pb::GetRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: ns.to_string(),
            name: name.to_string(),
            allow_stale: false,
        };
        match self.api.get(req).await {
            Ok(o) => Some(serde_json::from_slice(&o.json).expect("json")),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("get {kind} {ns}/{name}: {e}"),
        }
    }

    pub async fn list(&self, api_version: &str, kind: &str, ns: &str) -> Vec<Value> {
        let req = pb::ListRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: ns.to_string(),
            ..Default::default()
        };
        let l = self.api.list(req).await.expect("list");
        l.items
            .iter()
            .map(|o| serde_json::from_slice(&o.json).expect("json"))
            .collect()
    }

    /// Polls `check` until it returns `Some`, failing after [`WAIT`] with `what` and the last
    /// state `describe` prints.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let last = match check().await {
                Ok(t) => return t,
                Err(why) => why,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Ready, not being deleted.
pub fn pod_available(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_none()
        && p.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

pub fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}
