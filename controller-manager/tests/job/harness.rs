//! The test harness shared by the Job and CronJob tests on the client's fake: a `FakeApi` on a
//! `ManualClock` under paused time, the controller-manager running chosen controllers on it,
//! and the test playing the node agent by writing pod statuses.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::FakeApi;
use rudder_client::proto as pb;
use rudder_controller_manager::Config;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const NS: &str = "default";

pub struct Env {
    pub fake: Arc<FakeApi>,
    pub clock: SharedClock,
    /// The same clock, to move wall time (a controller-manager that was down).
    pub manual: Arc<ManualClock>,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn env() -> Env {
    let manual = ManualClock::shared(3);
    let clock: SharedClock = manual.clone();
    let fake = FakeApi::builder().clock(Arc::clone(&clock)).build();
    Env {
        fake,
        clock,
        manual,
        stop: CancellationToken::new(),
    }
}

impl Env {
    pub fn start(&self, controllers: &[&str]) {
        let cfg = Config {
            controllers: controllers.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        };
        tokio::spawn(rudder_controller_manager::run(
            self.fake.clone(),
            Arc::clone(&self.clock),
            cfg,
            self.stop.clone(),
        ));
    }

    pub async fn create(&self, api_version: &str, kind: &str, body: Value) -> Value {
        let o = self
            .fake
            .create(pb::CreateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .expect("create");
        serde_json::from_slice(&o.json).unwrap()
    }

    pub async fn patch(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        patch: Value,
        status: bool,
    ) {
        self.fake
            .patch(pb::PatchRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                name: name.into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: Bytes::from(patch.to_string()),
                status,
                options: None,
            })
            .await
            .expect("patch");
    }

    pub async fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let l = self
            .fake
            .list(pb::ListRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: NS.into(),
                ..Default::default()
            })
            .await
            .expect("list");
        let mut v: Vec<Value> = l
            .items
            .iter()
            .map(|o| serde_json::from_slice(&o.json).unwrap())
            .collect();
        v.sort_by_key(|o| {
            o["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        v
    }

    pub async fn job(&self, name: &str) -> Value {
        self.list("batch/v1", "Job")
            .await
            .into_iter()
            .find(|j| j["metadata"]["name"] == name)
            .expect("job")
    }

    pub async fn pods(&self) -> Vec<Value> {
        self.list("v1", "Pod").await
    }

    /// Pods not finished and not being deleted.
    pub async fn running(&self) -> Vec<Value> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| p["status"]["phase"] != "Succeeded" && p["status"]["phase"] != "Failed")
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
            .collect()
    }

    /// Reasons of the Events recorded so far, oldest first.
    pub async fn events(&self) -> Vec<String> {
        self.list("v1", "Event")
            .await
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Lets the controllers run for `secs` of (paused) time.
    pub async fn settle(&self, secs: u64) {
        for _ in 0..secs * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Plays the node agent: the pod ends with `exit` (0: Succeeded), now.
    pub async fn finish(&self, pod: &Value, exit: i64) {
        self.finish_with(pod, exit, json!([])).await;
    }

    pub async fn finish_with(&self, pod: &Value, exit: i64, conditions: Value) {
        let now = format!("{:.0}", self.clock.now());
        let name = pod["metadata"]["name"].as_str().unwrap();
        let status = json!({
            "phase": if exit == 0 { "Succeeded" } else { "Failed" },
            "conditions": conditions,
            "containerStatuses": [{"name": "c", "image": "i", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "startedAt": now, "finishedAt": now,
                    "reason": if exit == 0 { "Completed" } else { "Error" }}}}],
        });
        self.patch("v1", "Pod", name, json!({ "status": status }), true)
            .await;
    }

    /// Plays the node agent: every running pod becomes Running and Ready.
    pub async fn run_all(&self) {
        let now = format!("{:.0}", self.clock.now());
        for p in self.running().await {
            if p["status"]["phase"] == "Running" {
                continue;
            }
            let status = json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]});
            let name = p["metadata"]["name"].as_str().unwrap();
            self.patch("v1", "Pod", name, json!({ "status": status }), true)
                .await;
        }
    }
}

pub fn job(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "i"}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

pub fn condition<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}
