//! The Deployment controller's timing on the client's fake under paused time: the real scheduler
//! and simulated nodes run on the fake too, every clock is the same `ManualClock`, and tokio's
//! time only moves when the test sleeps, so a 600 s progress deadline and a 60 s canary pause are
//! checked to the second without waiting for them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rudder_client::Api;
use rudder_client::clock::{ManualClock, SharedClock};
use rudder_client::conn::kind_ref;
use rudder_client::fake::FakeApi;
use rudder_client::proto as pb;
use rudder_controller_manager::Config;
use rudder_testkit::NodeSim;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

struct Env {
    fake: Arc<FakeApi>,
    stop: CancellationToken,
    _sim: NodeSim,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env() -> Env {
    let clock: SharedClock = ManualClock::shared(3);
    let fake = FakeApi::builder().clock(Arc::clone(&clock)).build();
    let api: Arc<dyn Api> = fake.clone();
    let sim = NodeSim::start(Arc::clone(&api), Arc::clone(&clock), &["n1", "n2"])
        .await
        .expect("nodes");
    let stop = CancellationToken::new();
    let cfg = rudder_scheduler::Config::new(rudder_scheduler::DEFAULT_SCHEDULER_NAME);
    tokio::spawn(rudder_scheduler::run(
        Arc::clone(&api),
        Arc::clone(&clock),
        cfg,
        stop.clone(),
    ));
    let cfg = Config {
        controllers: vec!["replicaset".into(), "deployment".into()],
        ..Config::default()
    };
    tokio::spawn(rudder_controller_manager::run(
        api,
        clock,
        cfg,
        stop.clone(),
    ));
    Env {
        fake,
        stop,
        _sim: sim,
    }
}

impl Env {
    async fn create(&self, body: Value) {
        self.fake
            .create(pb::CreateRequest {
                kind: Some(kind_ref("apps/v1", "Deployment")),
                namespace: NS.into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .expect("create");
    }

    async fn patch(&self, name: &str, patch: Value) {
        self.fake
            .patch(pb::PatchRequest {
                kind: Some(kind_ref("apps/v1", "Deployment")),
                namespace: NS.into(),
                name: name.into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: Bytes::from(patch.to_string()),
                status: false,
                options: None,
            })
            .await
            .expect("patch");
    }

    fn deployment(&self, name: &str) -> Value {
        self.fake
            .get_json(&kind_ref("apps/v1", "Deployment"), NS, name)
            .expect("deployment")
    }

    fn progressing(&self, name: &str) -> Value {
        let d = self.deployment(name);
        d.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing").cloned())
            .unwrap_or(Value::Null)
    }

    /// Spec sizes of the Deployment's ReplicaSets, oldest revision first.
    fn sizes(&self) -> Vec<i64> {
        let mut sets: Vec<(i64, i64)> = self
            .fake
            .list_json(&kind_ref("apps/v1", "ReplicaSet"))
            .iter()
            .map(|rs| {
                let rev = rs
                    .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                (rev, rs["spec"]["replicas"].as_i64().unwrap_or(0))
            })
            .collect();
        sets.sort();
        sets.into_iter().map(|(_, n)| n).collect()
    }

    /// Lets everything run for `secs` of paused time.
    async fn settle(&self, secs: u64) {
        for _ in 0..secs * 4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn deployment(name: &str, image: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {
            "replicas": 4,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    })
}

fn image(i: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}})
}

#[tokio::test(start_paused = true)]
async fn the_progress_deadline_passes_at_600_seconds_and_not_before() {
    let e = env().await;
    e.create(deployment("web", "web:v1", json!({}))).await;
    e.settle(5).await;
    assert_eq!(e.progressing("web")["reason"], "NewReplicaSetAvailable");
    e.patch("web", image("web:notready")).await;
    e.settle(5).await;
    let p = e.progressing("web");
    assert_eq!(p["reason"], "ReplicaSetUpdated", "{p}");
    // Nothing progresses from here: the controller's own requeue must notice the deadline.
    e.settle(590).await;
    assert_eq!(
        e.progressing("web")["reason"],
        "ReplicaSetUpdated",
        "not yet at 595 s"
    );
    e.settle(10).await;
    let p = e.progressing("web");
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("False"), Some("ProgressDeadlineExceeded")),
        "{p}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_canary_pause_lasts_its_time_on_the_clock() {
    let e = env().await;
    e.create(deployment(
        "shop",
        "shop:v1",
        json!({"rudder.io/canary-steps": "25%,pause 60s"}),
    ))
    .await;
    e.settle(5).await;
    e.patch("shop", image("shop:v2")).await;
    e.settle(5).await;
    assert_eq!(e.sizes(), [3, 1]);
    assert_eq!(e.progressing("shop")["reason"], "CanaryPaused");
    e.settle(50).await;
    assert_eq!(e.sizes(), [3, 1], "still paused 55 s in");
    e.settle(15).await;
    assert_eq!(
        e.sizes(),
        [0, 4],
        "the pause ended and the rollout finished"
    );
    assert_eq!(e.progressing("shop")["reason"], "NewReplicaSetAvailable");
}
