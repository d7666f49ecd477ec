//! The sync loop against a real in-process API server, with a data plane that records what it
//! is asked to apply (and can be told to fail), so the loop's own rules are what is tested:
//! the map follows the objects, unchanged maps are not re-applied, and a failed sync is
//! retried.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_proxy::dataplane::{DataPlane, DataPlaneError};
use rudder_proxy::services::Desired;
use rudder_proxy::sync::{Config, SyncStatus, run};
use rudder_testkit::TestServer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Vec<Desired>>>,
    fail_next: Arc<Mutex<usize>>,
}

impl DataPlane for Recorder {
    fn sync<'a>(&'a mut self, desired: &'a Desired) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(async move {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(DataPlaneError::Apply {
                    plane: "recorder",
                    reason: "told to fail".into(),
                });
            }
            self.applied.lock().unwrap().push(desired.clone());
            Ok(())
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), DataPlaneError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    fn last(&self) -> Option<Desired> {
        self.applied.lock().unwrap().last().cloned()
    }

    fn count(&self) -> usize {
        self.applied.lock().unwrap().len()
    }
}

async fn create(s: &TestServer, api_version: &str, kind: &str, body: Value) -> Value {
    let o = s
        .client()
        .create(pb::CreateRequest {
            kind: Some(kind_ref(api_version, kind)),
            namespace: "default".into(),
            json: Bytes::from(body.to_string()),
            options: None,
        })
        .await
        .expect("create");
    serde_json::from_slice(&o.json).unwrap()
}

fn slice(ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
           "endpoints": eps})
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn backends(d: &Desired) -> Vec<String> {
    d.ports
        .iter()
        .flat_map(|p| &p.cluster_backends)
        .map(|b| format!("{}:{}", b.ip, b.port))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_follows_services_and_slices_and_retries_failures() {
    let server = TestServer::start().await.expect("server");
    let rec = Recorder::default();
    let status = Arc::new(SyncStatus::default());
    let cancel = CancellationToken::new();
    let mut cfg = Config::new("node-1");
    cfg.min_sync_interval = Duration::from_millis(20);
    let task = tokio::spawn(run(
        server.api(),
        RealClock::shared(),
        cfg,
        Box::new(rec.clone()),
        None,
        Arc::clone(&status),
        cancel.clone(),
    ));
    // The bootstrapped `kubernetes` Service may or may not exist; wait for the first sync.
    wait_for("a first sync", || rec.count() >= 1).await;

    let svc = create(
        &server,
        "v1",
        "Service",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    wait_for("the service without endpoints", || {
        rec.last()
            .is_some_and(|d| d.ports.iter().any(|p| p.service == "default/web"))
    })
    .await;
    let web = |d: &Desired| d.ports.iter().find(|p| p.service == "default/web").cloned();
    let p = web(&rec.last().unwrap()).unwrap();
    assert_eq!(p.cluster_ips[0].to_string(), ip);
    assert!(p.cluster_backends.is_empty());

    create(
        &server,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        slice(&["10.88.1.2", "10.88.1.3"]),
    )
    .await;
    wait_for("two endpoints", || {
        rec.last()
            .and_then(|d| web(&d))
            .is_some_and(|p| p.cluster_backends.len() == 2)
    })
    .await;
    assert_eq!(
        backends(&Desired {
            ports: vec![web(&rec.last().unwrap()).unwrap()]
        }),
        ["10.88.1.2:8080", "10.88.1.3:8080"]
    );

    // Nothing changes: nothing is re-applied (the full period is 30 s).
    let n = rec.count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rec.count(), n, "an unchanged map is not applied again");

    // A failed sync is retried until it applies.
    *rec.fail_next.lock().unwrap() = 2;
    server
        .client()
        .update(pb::UpdateRequest {
            kind: Some(kind_ref("discovery.k8s.io/v1", "EndpointSlice")),
            namespace: "default".into(),
            json: Bytes::from(slice(&["10.88.1.3"]).to_string()),
            options: None,
        })
        .await
        .expect("update");
    wait_for("one endpoint after two failures", || {
        rec.last()
            .and_then(|d| web(&d))
            .is_some_and(|p| p.cluster_backends.len() == 1)
    })
    .await;
    assert_eq!(status.failures.load(Ordering::Relaxed), 2);
    assert!(status.last_ok_ms.load(Ordering::Relaxed) > 0);
    cancel.cancel();
    task.await.unwrap();
}
