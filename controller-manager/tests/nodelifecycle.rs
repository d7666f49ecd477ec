//! Node loss on the in-process cluster (real API server with its DefaultTolerationSeconds
//! admission, real scheduler, simulated nodes, every controller): a node that stops
//! renewing its Lease is marked Unknown after the grace period and tainted; its pods are
//! evicted once their (defaulted) toleration runs out and replaced on the other nodes, a pod
//! that tolerates the taint for ever stays; when the node comes back it is Ready and
//! untainted again.

mod common;

use std::time::{Duration, Instant};

use common::deploy::{NS, deployment};
use common::{Cluster, condition, pod_available};
use rudder_controller_manager::Config;
use rudder_testkit::TestServer;
use serde_json::{Value, json};

const GRACE: Duration = Duration::from_secs(2);
const TOLERATION_SECONDS: i64 = 1;

fn on(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

fn app(p: &Value) -> &str {
    p.pointer("/metadata/labels/app")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn taint_keys(node: &Value) -> Vec<String> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_pods_are_replaced_elsewhere_and_it_comes_back_clean() {
    let server = TestServer::builder()
        .default_toleration_seconds(TOLERATION_SECONDS)
        .start()
        .await
        .expect("server starts");
    let mut c = Cluster::on_server(server, 3).await;
    c.sim.set_lease_interval(Duration::from_millis(300));
    let mut cfg = Config::default();
    cfg.nodes.lifecycle.grace_period = GRACE;
    cfg.nodes.lifecycle.monitor_period = Duration::from_millis(500);
    c.start_controllers_with(cfg);

    // A pod on node-3 that tolerates its loss for ever, and six that tolerate it for 1 s
    // (the server's default), two per node.
    let mut sticky = deployment("sticky", 1, "sticky:v1", json!({"type": "Recreate"}));
    sticky["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"kubernetes.io/hostname": "node-3"});
    sticky["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
    c.create("apps/v1", "Deployment", NS, sticky).await;
    let mut web = deployment("web", 6, "web:v1", json!({"type": "RollingUpdate"}));
    web["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1", "memory": "1Gi"}});
    c.create("apps/v1", "Deployment", NS, web).await;
    let before = c
        .wait_for(
            "six web pods, two on node-3, and the sticky one",
            || async {
                let pods = c.list("v1", "Pod", NS).await;
                let web: Vec<&Value> = pods
                    .iter()
                    .filter(|p| app(p) == "web" && pod_available(p))
                    .collect();
                let on3 = web.iter().filter(|p| on(p) == "node-3").count();
                let sticky = pods.iter().any(|p| app(p) == "sticky" && pod_available(p));
                if web.len() == 6 && on3 == 2 && sticky {
                    Ok(pods)
                } else {
                    Err(format!(
                        "{} web available, {on3} on node-3, sticky {sticky}",
                        web.len()
                    ))
                }
            },
        )
        .await;
    let lost: Vec<String> = before
        .iter()
        .filter(|p| app(p) == "web" && on(p) == "node-3")
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    let default_tolerations =
        &before.iter().find(|p| app(p) == "web").expect("a web pod")["spec"]["tolerations"];
    assert_eq!(
        default_tolerations,
        &json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}
        ]),
        "DefaultTolerationSeconds"
    );

    let t0 = Instant::now();
    c.sim.stop_node("node-3");
    let replaced = c
        .wait_for("six web pods available off node-3", || async {
            let pods = c.list("v1", "Pod", NS).await;
            let off: usize = pods
                .iter()
                .filter(|p| app(p) == "web" && pod_available(p) && on(p) != "node-3")
                .count();
            if off == 6 {
                Ok(t0.elapsed())
            } else {
                Err(format!("{off} available elsewhere"))
            }
        })
        .await;
    let floor = GRACE + Duration::from_secs(TOLERATION_SECONDS as u64);
    assert!(
        replaced >= floor,
        "replaced after {replaced:?}, before grace + toleration ({floor:?})"
    );

    let node3 = c.get("v1", "Node", "", "node-3").await.expect("node-3");
    assert_eq!(
        condition(&node3, "Ready").map(|r| r["status"].clone()),
        Some(json!("Unknown")),
        "{node3}"
    );
    let taints = taint_keys(&node3);
    for t in [
        "node.kubernetes.io/unreachable:NoSchedule",
        "node.kubernetes.io/unreachable:NoExecute",
    ] {
        assert!(taints.contains(&t.to_string()), "{t} on {node3}");
    }
    let pods = c.list("v1", "Pod", NS).await;
    for name in &lost {
        let p = pods
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str())
            .expect("still there");
        assert!(
            p.pointer("/metadata/deletionTimestamp").is_some(),
            "evicted: {p}"
        );
        assert_eq!(
            condition(p, "Ready").map(|r| r["status"].clone()),
            Some(json!("False")),
            "marked not ready: {p}"
        );
    }
    let sticky: Vec<&Value> = pods.iter().filter(|p| app(p) == "sticky").collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    assert!(
        sticky[0].pointer("/metadata/deletionTimestamp").is_none(),
        "tolerates for ever: {}",
        sticky[0]
    );
    assert_eq!(on(sticky[0]), "node-3");

    c.sim.resume_node("node-3").await.expect("node-3 resumes");
    c.wait_for("node-3 Ready without taints, its evicted pods gone", || async {
        let n = c.get("v1", "Node", "", "node-3").await.expect("node-3");
        let ready = condition(&n, "Ready").map(|r| r["status"].clone());
        let pods = c.list("v1", "Pod", NS).await;
        let left = pods.iter().filter(|p| lost.iter().any(|l| p["metadata"]["name"] == l.as_str())).count();
        let sticky_ok = pods.iter().any(|p| app(p) == "sticky" && pod_available(p) && on(p) == "node-3");
        if ready == Some(json!("True")) && taint_keys(&n).is_empty() && left == 0 && sticky_ok {
            Ok(())
        } else {
            Err(format!("Ready {ready:?}, taints {:?}, {left} evicted pods left, sticky ready {sticky_ok}", taint_keys(&n)))
        }
    })
    .await;
    for n in ["node-1", "node-2"] {
        let node = c.get("v1", "Node", "", n).await.expect("node");
        assert_eq!(
            condition(&node, "Ready").map(|r| r["status"].clone()),
            Some(json!("True")),
            "{node}"
        );
    }
}
