//! A node agent over the in-tree fakes (API, runtime, prober, host, clock), for lifecycle tests
//! under paused time.

#![allow(dead_code, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use rudder_client::Api;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::FakeApi;
use rudder_node_agent::agent::{self, AgentConfig, Deps};
use rudder_node_agent::host::{FakeHost, test_facts};
use rudder_node_agent::node::NodeConfig;
use rudder_node_agent::pod::probes::FakeProber;
use rudder_node_agent::runtime::fake::FakeRuntime;
use rudder_proto as pb;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NODE: &str = "n1";
pub const NS: &str = "default";

pub struct Agent {
    pub api: Arc<FakeApi>,
    pub rt: FakeRuntime,
    pub prober: FakeProber,
    pub host: FakeHost,
    pub clock: SharedClock,
    pub dir: Arc<tempfile::TempDir>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

pub fn config(dir: &std::path::Path) -> AgentConfig {
    let mut node = NodeConfig::new(NODE, "192.0.2.10");
    node.pod_cidr = Some("10.88.1.0/24".into());
    AgentConfig {
        node,
        data_dir: dir.to_path_buf(),
        network: "rudder".into(),
        network_subnet: "10.88.0.0/16".into(),
        service_network: Some(("rudder-services".into(), "10.96.0.0/12".into())),
        cluster_dns: None,
        cluster_domain: "cluster.local".into(),
        allow_privileged: false,
        relist_period: Duration::from_secs(1),
        volume_refresh: Duration::from_secs(30),
    }
}

impl Agent {
    /// A fresh world: API, runtime with `images` present, and an agent running over them.
    pub async fn start(images: &[&str]) -> Agent {
        let clock: SharedClock = ManualClock::shared(7);
        let api = FakeApi::builder()
            .clock(Arc::clone(&clock))
            .require_namespaces()
            .build();
        let rt = FakeRuntime::new(Arc::clone(&clock));
        for i in images {
            rt.add_image(i);
        }
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Agent::start_over(api, rt, FakeProber::default(), FakeHost::new(), clock, dir).await
    }

    /// An agent over existing fakes (a restart).
    pub async fn start_over(
        api: Arc<FakeApi>,
        rt: FakeRuntime,
        prober: FakeProber,
        host: FakeHost,
        clock: SharedClock,
        dir: Arc<tempfile::TempDir>,
    ) -> Agent {
        let cancel = CancellationToken::new();
        let deps = Deps {
            api: api.clone(),
            runtime: Arc::new(rt.clone()),
            prober: Arc::new(prober.clone()),
            host: Arc::new(host.clone()),
            facts: test_facts(),
            clock: Arc::clone(&clock),
            relay: None,
        };
        let cfg = config(dir.path());
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = agent::run(deps, cfg, c).await {
                panic!("agent failed: {e}");
            }
        });
        Agent {
            api,
            rt,
            prober,
            host,
            clock,
            dir,
            cancel,
            task: Some(task),
        }
    }

    /// Stops the agent (containers stay) and returns the fakes for a restart.
    pub async fn stop(
        mut self,
    ) -> (
        Arc<FakeApi>,
        FakeRuntime,
        FakeProber,
        FakeHost,
        SharedClock,
        Arc<tempfile::TempDir>,
    ) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("agent task");
        }
        (
            self.api.clone(),
            self.rt.clone(),
            self.prober.clone(),
            self.host.clone(),
            Arc::clone(&self.clock),
            Arc::clone(&self.dir),
        )
    }

    pub async fn create(&self, api_version: &str, kind: &str, obj: Value) -> Value {
        let req = pb::CreateRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: NS.into(),
            json: serde_json::to_vec(&obj).expect("json").into(),
            options: None,
        };
        let o = self.api.create(req).await.expect("create");
        rudder_client::api::decode_json(&o).expect("decode")
    }

    /// Creates a pod bound to this node.
    pub async fn pod(&self, name: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(NODE);
        self.create(
            "v1",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .await
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let av = if kind == "Lease" {
            "coordination.k8s.io/v1"
        } else {
            "v1"
        };
        self.api.get_json(&kind_ref(av, kind), ns, name)
    }

    pub fn pod_json(&self, name: &str) -> Option<Value> {
        self.get("Pod", NS, name)
    }

    pub async fn delete(&self, name: &str) {
        let req = pb::DeleteRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: NS.into(),
            name: name.into(),
            ..Default::default()
        };
        self.api.delete(req).await.expect("delete");
    }

    /// Waits (in paused time) until `f` holds for the pod, at most `max`.
    pub async fn wait_pod(
        &self,
        name: &str,
        max: Duration,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            if let Some(p) = self.pod_json(name)
                && f(&p)
            {
                return p;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} not reached in {max:?}; pod: {:#}",
                    self.pod_json(name).unwrap_or(Value::Null)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while self.pod_json(name).is_some() {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "pod {name} not deleted in {max:?}: {:#}",
                    self.pod_json(name).unwrap_or(Value::Null)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn condition(p: &Value, ty: &str) -> String {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

pub fn container_status<'a>(p: &'a Value, name: &str) -> &'a Value {
    p.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn restarts(p: &Value, name: &str) -> i64 {
    container_status(p, name)["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

pub fn waiting_reason(p: &Value, name: &str) -> String {
    container_status(p, name)
        .pointer("/state/waiting/reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}
