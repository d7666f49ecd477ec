//! A one-node cluster for the tests against the real engine: an in-process API server and a real
//! agent over the Docker engine, with the tests' namespace ([`NS`]) created and helpers to
//! write objects and read pods and Events. Each test has its own node name, network and subnet
//! (`10.215.<n>.0/24`: 1-9 for `docker_pods.rs`, 20 and up for `registry.rs`);
//! the node's containers and network are removed when the cluster drops, also on failure, and
//! before it starts (what a crashed earlier run left).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rudder_client::Api;
use rudder_client::api::WatchEvent;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_node_agent::agent::{self, AgentConfig, Deps};
use rudder_node_agent::host::{FakeHost, HostFacts};
use rudder_node_agent::node::NodeConfig;
use rudder_node_agent::pod::probes::NetProber;
use rudder_node_agent::runtime::docker::DockerRuntime;
use rudder_node_agent::runtime::labels;
use rudder_proto as pb;
use rudder_testkit::TestServer;
use rudder_testkit::images::{self, DockerCleanup};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The namespace the tests' objects live in (not `default`: its ServiceAccount is the tests').
pub const NS: &str = "node-tests";

pub struct Cluster {
    pub api: Arc<dyn Api>,
    pub node: String,
    cfg: AgentConfig,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    // Dropped in this order: the agent is told to stop, its containers and network go, then
    // the server and the agent's data directory.
    _cleanup: DockerCleanup,
    server: Option<TestServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(test: &str, n: u8) -> Cluster {
        images::require_docker();
        let server = TestServer::start().await.expect("API server");
        let api = server.api();
        let node = format!("t-{test}");
        let dir = tempfile::tempdir().expect("agent data dir");
        let mut node_cfg = NodeConfig::new(&node, &format!("10.215.{n}.1"));
        node_cfg.pod_cidr = Some(format!("10.215.{n}.0/24"));
        let cfg = AgentConfig {
            node: node_cfg,
            data_dir: dir.path().to_path_buf(),
            network: format!("rudder-test-{n}"),
            network_subnet: format!("10.215.{n}.0/24"),
            service_network: None,
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
            allow_privileged: false,
            relist_period: Duration::from_millis(500),
            volume_refresh: Duration::from_secs(2),
        };
        let mut cleanup = DockerCleanup::new();
        cleanup.label(labels::NODE, &node).network(&cfg.network);
        cleanup.run();
        let (cancel, task) = spawn_agent(&server, cfg.clone()).await;
        let cluster = Cluster {
            api,
            node,
            cfg,
            cancel,
            task: Some(task),
            _cleanup: cleanup,
            server: Some(server),
            _dir: dir,
        };
        cluster
            .create(
                "Namespace",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            )
            .await;
        cluster
    }

    /// A client of the API server (for logs, exec, port-forward).
    pub fn client(&self) -> rudder_client::Client {
        self.server.as_ref().expect("server running").client()
    }

    /// Stops the agent and starts a new one over the same data directory (pods keep running).
    pub async fn restart_agent(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("agent task");
        }
        let server = self.server.as_ref().expect("server running");
        let (cancel, task) = spawn_agent(server, self.cfg.clone()).await;
        self.cancel = cancel;
        self.task = Some(task);
    }

    /// Deletes a pod (gracefully, as a user would).
    pub async fn delete_pod(&self, name: &str) {
        self.api
            .delete(pb::DeleteRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: NS.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("delete pod");
    }

    /// Waits until the pod is gone from the API (its deletion confirmed by the agent).
    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.get_pod(name).await.is_some() {
            assert!(Instant::now() < deadline, "pod {name} not gone in {secs}s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a core/v1 object (namespaced ones in [`NS`]).
    pub async fn create(&self, kind: &str, obj: Value) {
        let cluster_scoped = ["Namespace", "PersistentVolume", "Node"].contains(&kind);
        let namespace = if cluster_scoped { "" } else { NS };
        self.api
            .create(pb::CreateRequest {
                kind: Some(kind_ref("v1", kind)),
                namespace: namespace.into(),
                json: serde_json::to_vec(&obj).expect("json").into(),
                options: None,
            })
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
    }

    /// A merge patch of a core/v1 object in [`NS`].
    pub async fn patch(&self, kind: &str, name: &str, patch: Value) {
        self.api
            .patch(pb::PatchRequest {
                kind: Some(kind_ref("v1", kind)),
                namespace: NS.into(),
                name: name.into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: serde_json::to_vec(&patch).expect("json").into(),
                status: false,
                options: None,
            })
            .await
            .unwrap_or_else(|e| panic!("patch {kind} {name}: {e}"));
    }

    /// A pod on this node, in [`NS`].
    pub async fn pod(&self, name: &str, spec: Value) {
        let mut spec = spec;
        spec["nodeName"] = json!(self.node);
        self.create(
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .await;
    }

    pub async fn get_pod(&self, name: &str) -> Option<Value> {
        let r = self
            .api
            .get(pb::GetRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: NS.into(),
                name: name.into(),
                allow_stale: false,
            })
            .await;
        match r {
            Ok(o) => Some(rudder_client::api::decode_json(&o).expect("json")),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("get pod {name}: {e}"),
        }
    }

    /// Polls the pod until `f` holds; panics with the pod and its Events after `secs`.
    pub async fn wait_pod(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(p) = self.get_pod(name).await
                && f(&p)
            {
                return p;
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} not reached in {secs}s: {:#}\nevents: {:#?}",
                    self.get_pod(name).await.unwrap_or(Value::Null),
                    self.events(name).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The (reason, message) of the Events about pod `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let list = self
            .api
            .list(pb::ListRequest {
                kind: Some(kind_ref("v1", "Event")),
                namespace: NS.into(),
                ..Default::default()
            })
            .await
            .expect("list events");
        let mut out: Vec<(String, String, String)> = list
            .items
            .iter()
            .map(|o| rudder_client::api::decode_json(o).expect("event json"))
            .filter(|e| e.pointer("/involvedObject/name") == Some(&json!(name)))
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                (s("firstTimestamp"), s("reason"), s("message"))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, r, m)| (r, m)).collect()
    }

    /// From now on, records each waiting reason container `c` of pod `name` shows, in order
    /// (a repeat of the last one once): a watch sees every stored version of the pod, so a
    /// state that did not last until the next poll is still seen.
    pub async fn record_waiting(&self, name: &str) -> WaitingLog {
        let mut stream = self
            .api
            .watch(pb::WatchRequest {
                kind: Some(kind_ref("v1", "Pod")),
                namespace: NS.into(),
                field_selector: format!("metadata.name={name}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("watch pod {name}: {e}"));
        let reasons = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = Arc::clone(&reasons);
        let task = tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                let obj = match ev {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
                    WatchEvent::Bookmark(_) => continue,
                    _ => break,
                };
                let Ok(p) = rudder_client::api::decode_json(&obj) else {
                    continue;
                };
                let (reason, _) = waiting(&p, "c");
                let mut seen = r.lock().unwrap_or_else(|e| e.into_inner());
                if !reason.is_empty() && seen.last() != Some(&reason) {
                    seen.push(reason);
                }
            }
        });
        WaitingLog { reasons, task }
    }

    /// Stops the agent and the server (the drop then removes the containers).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("agent task");
        }
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

async fn spawn_agent(
    server: &TestServer,
    cfg: AgentConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let clock = RealClock::shared();
    let runtime = DockerRuntime::connect(None, Arc::clone(&clock))
        .await
        .expect("this test needs a running Docker engine");
    let deps = Deps {
        api: server.api(),
        runtime: Arc::new(runtime),
        prober: Arc::new(NetProber),
        host: Arc::new(FakeHost::new()),
        facts: HostFacts::read(&cfg.data_dir),
        clock,
        relay: Some(server.client()),
    };
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = agent::run(deps, cfg, c).await {
            panic!("agent: {e}");
        }
    });
    (cancel, task)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// See [`Cluster::record_waiting`]; the watch ends when this drops.
pub struct WaitingLog {
    reasons: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WaitingLog {
    pub fn reasons(&self) -> Vec<String> {
        self.reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The reasons once `reason` has been recorded (the watch may trail a GET a little), or
    /// as they are after a few seconds.
    pub async fn seen(&self, reason: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reasons = self.reasons();
            if reasons.iter().any(|r| r == reason) || Instant::now() > deadline {
                return reasons;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WaitingLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The container status of `c`.
pub fn container_status<'a>(p: &'a Value, c: &str) -> &'a Value {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|s| s["name"] == c))
        .unwrap_or(&Value::Null)
}

/// The waiting reason and message of container `c` (empty when it is not waiting).
pub fn waiting(p: &Value, c: &str) -> (String, String) {
    let w = &container_status(p, c)["state"]["waiting"];
    let s = |k: &str| w[k].as_str().unwrap_or("").to_string();
    (s("reason"), s("message"))
}

pub fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}
