//! The disruption controller and the eviction subresource on the in-process cluster (real API
//! server, scheduler, simulated nodes, every controller): a 3-replica Deployment under
//! `minAvailable: 2` lets one of two simultaneous evictions through and refuses the other with
//! TooManyRequests until the replacement is Ready.

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::deploy::{NS, deployment, rolling};
use common::{Cluster, int, pod_available};
use rudder_client::ClientError;
use rudder_client::proto as pb;
use rudder_testkit::TestServer;
use serde_json::{Value, json};

fn evict_req(name: &str) -> pb::EvictRequest {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": NS}});
    pb::EvictRequest {
        namespace: NS.into(),
        name: name.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    }
}

async fn web_pods(c: &Cluster) -> Vec<Value> {
    c.list("v1", "Pod", NS)
        .await
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web")
        .collect()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_lets_one_of_two_evictions_through_until_the_replacement_is_ready() {
    // New pods become Ready only while the flag is set: the replacements wait for the test.
    let (ready_on_start, fate) = rudder_testkit::nodesim::ready_while_set();
    let server = TestServer::start().await.expect("server");
    let mut c = Cluster::on_server_with_fate(server, 2, fate).await;
    c.start_controllers();
    c.create(
        "apps/v1",
        "Deployment",
        NS,
        deployment("web", 3, "nginx:1.27", rolling(json!(1), json!(0))),
    )
    .await;
    c.create(
        "policy/v1",
        "PodDisruptionBudget",
        NS,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .await;
    let pods = c
        .wait_for("three Ready pods and one disruption allowed", || async {
            let ps = web_pods(&c).await;
            let b = c
                .get("policy/v1", "PodDisruptionBudget", NS, "web")
                .await
                .unwrap_or_default();
            let s = &b["status"];
            if ps.len() == 3
                && ps.iter().all(pod_available)
                && int(s, "/disruptionsAllowed") == 1
                && int(s, "/currentHealthy") == 3
                && int(s, "/desiredHealthy") == 2
                && int(s, "/expectedPods") == 3
            {
                Ok(ps)
            } else {
                Err(format!("{} pods; budget status {s}", ps.len()))
            }
        })
        .await;
    ready_on_start.store(false, Ordering::SeqCst);

    let (a, b) = (name(&pods[0]), name(&pods[1]));
    let (ra, rb) = tokio::join!(c.api.evict(evict_req(&a)), c.api.evict(evict_req(&b)));
    let (won, lost) = match (&ra, &rb) {
        (Ok(_), Err(ClientError::TooManyRequests(_))) => (a, b),
        (Err(ClientError::TooManyRequests(_)), Ok(_)) => (b, a),
        other => panic!("one eviction is allowed and the other refused with 429: {other:?}"),
    };
    let refusal = ra
        .err()
        .or(rb.err())
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refusal.contains("The disruption budget web needs 2 healthy pods and has"),
        "{refusal}"
    );

    // The replacement comes but is not Ready: the budget keeps refusing.
    let replacement = c
        .wait_for(
            "the evicted pod gone and its replacement running",
            || async {
                let ps = web_pods(&c).await;
                let fresh: Vec<String> = ps
                    .iter()
                    .map(name)
                    .filter(|n| !pods.iter().any(|p| name(p) == *n))
                    .collect();
                let gone = !ps.iter().any(|p| name(p) == won);
                let running = ps
                    .iter()
                    .any(|p| fresh.contains(&name(p)) && p["status"]["phase"] == "Running");
                match (gone, running, fresh.first()) {
                    (true, true, Some(n)) => Ok(n.clone()),
                    _ => Err(format!(
                        "pods {:?}",
                        ps.iter().map(name).collect::<Vec<_>>()
                    )),
                }
            },
        )
        .await;
    c.wait_for("the budget to see the replacement", || async {
        let b = c.get("policy/v1", "PodDisruptionBudget", NS, "web").await;
        let s = b.map(|b| b["status"].clone()).unwrap_or_default();
        let settled = int(&s, "/currentHealthy") == 2 && s.get("disruptedPods").is_none();
        if settled { Ok(()) } else { Err(format!("{s}")) }
    })
    .await;
    match c.api.evict(evict_req(&lost)).await {
        Err(ClientError::TooManyRequests(m)) => {
            assert!(m.contains("needs 2 healthy pods and has 2"), "{m}")
        }
        other => panic!("refused while the replacement is not Ready: {other:?}"),
    }

    c.sim
        .set_ready(NS, &replacement, true)
        .await
        .expect("ready");
    c.wait_for("the second eviction to be allowed", || async {
        match c.api.evict(evict_req(&lost)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_too_many_requests() => Err(e.to_string()),
            Err(e) => panic!("eviction: {e}"),
        }
    })
    .await;
}
