//! `rudder drain` against a real API server and controller-manager, with simulated nodes in
//! the test process (and the test binding pending pods, as a scheduler would): a drain whose
//! pods' budget forbids progress waits until the replacements elsewhere become Ready, then
//! completes.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Server;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_client::{Api, Client};
use rudder_testkit::NodeSim;
use serde_json::Value;

const MANIFESTS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx:1.27}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
";

async fn pods(api: &dyn Api) -> Vec<Value> {
    let l = api
        .list(pb::ListRequest {
            kind: Some(kind_ref("v1", "Pod")),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list pods");
    l.items
        .iter()
        .map(|o| serde_json::from_slice(&o.json).expect("json"))
        .collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn on(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

async fn allowed(api: &dyn Api) -> i64 {
    let b = api
        .get(pb::GetRequest {
            kind: Some(kind_ref("policy/v1", "PodDisruptionBudget")),
            namespace: "default".into(),
            name: "web".into(),
            allow_stale: false,
        })
        .await
        .expect("budget");
    let v: Value = serde_json::from_slice(&b.json).expect("json");
    v["status"]["disruptionsAllowed"].as_i64().unwrap_or(-1)
}

/// Polls `check` for up to 30 s.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_the_budget_then_completes() {
    let mut s = Server::start();
    s.start_controller_manager();
    let client = Client::new(&[s.addr.as_str()]).expect("client");
    let api: Arc<dyn Api> = Arc::new(client);
    // New pods become Ready only while the flag is set: the replacements wait for the test.
    let (ready_on_start, fate) = rudder_testkit::nodesim::ready_while_set();
    let sim = NodeSim::start_with(
        Arc::clone(&api),
        RealClock::shared(),
        &["node-1", "node-2"],
        fate,
    )
    .await
    .expect("nodes");
    // The test schedules: pending pods go to `target`.
    let target = Arc::new(std::sync::Mutex::new("node-1".to_string()));
    let binder = tokio::spawn({
        let (api, target) = (Arc::clone(&api), Arc::clone(&target));
        async move {
            loop {
                for p in pods(api.as_ref()).await {
                    if on(&p).is_empty() && p["metadata"]["deletionTimestamp"].is_null() {
                        let node = target.lock().expect("lock").clone();
                        let _ = api
                            .bind(pb::BindRequest {
                                namespace: "default".into(),
                                name: p["metadata"]["name"].as_str().unwrap_or("").into(),
                                node_name: node,
                                uid: String::new(),
                                options: None,
                            })
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let f = s.file("web.yaml", MANIFESTS);
    s.run(&["apply", "-f", &f]).ok();
    until(
        "two Ready pods on node-1 and one disruption allowed",
        || async {
            let ps = pods(api.as_ref()).await;
            ps.len() == 2
                && ps.iter().all(|p| ready(p) && on(p) == "node-1")
                && allowed(api.as_ref()).await == 1
        },
    )
    .await;
    *target.lock().expect("lock") = "node-2".into();
    ready_on_start.store(false, Ordering::SeqCst);

    let started = Instant::now();
    let (home, addr) = (s.home().to_path_buf(), s.addr.clone());
    let drain = std::thread::spawn(move || {
        common::run_rudder(
            Some(&addr),
            &home,
            &["drain", "node-1", "--timeout", "2m"],
            None,
            &[],
        )
    });
    // One pod goes, its replacement on node-2 is not Ready: the other stays, refused.
    until("one pod evicted and its replacement on node-2", || async {
        let ps = pods(api.as_ref()).await;
        ps.iter().filter(|p| on(p) == "node-1").count() == 1 && ps.iter().any(|p| on(p) == "node-2")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let ps = pods(api.as_ref()).await;
    assert_eq!(
        ps.iter().filter(|p| on(p) == "node-1").count(),
        1,
        "the budget holds the second pod while the replacement is not Ready"
    );
    assert!(!drain.is_finished(), "the drain waits for the budget");
    let held = started.elapsed();
    for p in ps.iter().filter(|p| on(p) == "node-2") {
        sim.set_ready(
            "default",
            p["metadata"]["name"].as_str().unwrap_or(""),
            true,
        )
        .await
        .expect("ready");
    }
    let out = tokio::task::spawn_blocking(move || drain.join().expect("drain thread"))
        .await
        .expect("join");
    let stdout = out.ok().to_string();
    assert!(stdout.ends_with("node/node-1 drained\n"), "{stdout}");
    assert!(stdout.starts_with("node/node-1 cordoned\n"), "{stdout}");
    assert_eq!(stdout.matches(" evicted\n").count(), 2, "{stdout}");
    assert_eq!(
        out.stderr
            .matches("Cannot evict pod as it would violate the pod's disruption budget")
            .count(),
        1,
        "the refusal is printed once for the pod that waited: {}",
        out.stderr
    );
    assert!(started.elapsed() > held, "it completed only after the wait");
    // The last eviction's replacement may not be bound yet when the drain ends.
    until("every pod on node-2, nothing left on node-1", || async {
        pods(api.as_ref()).await.iter().all(|p| on(p) == "node-2")
    })
    .await;
    binder.abort();
    drop(sim);
}

#[test]
fn a_drain_takes_only_the_selected_pods_listing_them_page_by_page() {
    let s = Server::start();
    let node = s.file(
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-9\n",
    );
    s.run(&["apply", "-f", &node]).ok();
    let pod = |name: &str, app: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {app}}}\nspec:\n  nodeName: node-9\n  containers:\n  - name: c\n    image: busybox\n"
        )
    };
    let all = [
        pod("a1", "a"),
        pod("b1", "b"),
        pod("a2", "a"),
        pod("a3", "a"),
    ]
    .concat();
    let f = s.file("pods.yaml", &all);
    s.run(&["apply", "-f", &f]).ok();
    // Pages of one: every selected pod must still be found.
    let out = s.run(&[
        "drain",
        "node-9",
        "--pod-selector",
        "app=a",
        "--chunk-size",
        "1",
        "--force",
        "--dry-run=client",
    ]);
    let text = out.ok().to_string();
    for p in ["a1", "a2", "a3"] {
        assert!(
            text.contains(&format!("evicting pod default/{p} (dry run)")),
            "{p}: {text}"
        );
    }
    assert!(!text.contains("b1"), "b1 is not selected: {text}");
    assert!(text.contains("node/node-9 drained (dry run)"), "{text}");
}
