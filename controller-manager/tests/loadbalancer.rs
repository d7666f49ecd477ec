//! The load-balancer controller on the in-process cluster: addresses from the pool, an asked
//! address honoured, exhaustion waits, and an address given back goes to the waiting Service.

mod common;

use common::Cluster;
use rudder_controller_manager::Config;
use serde_json::{Value, json};

const NS: &str = "default";

fn lb(name: &str, extra: Value) -> Value {
    let mut spec =
        json!({"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

async fn ingress(c: &Cluster, name: &str) -> Option<String> {
    c.get("v1", "Service", NS, name)
        .await?
        .pointer("/status/loadBalancer/ingress/0/ip")
        .and_then(Value::as_str)
        .map(str::to_string)
}

async fn wait_ip(c: &Cluster, name: &str, want: Option<&str>) {
    c.wait_for(&format!("{name} at {want:?}"), || async {
        let got = ingress(c, name).await;
        if got.as_deref() == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_get_pool_addresses_and_give_them_back() {
    let mut c = Cluster::without_controllers(1).await;
    c.start_controllers_with(Config {
        load_balancer_pool: Some("192.0.2.0/30".parse().unwrap()),
        ..Config::default()
    });
    // A /30 holds two addresses: .1 and .2.
    c.create(
        "v1",
        "Service",
        NS,
        lb("asks", json!({"loadBalancerIP": "192.0.2.2"})),
    )
    .await;
    wait_ip(&c, "asks", Some("192.0.2.2")).await;
    c.create("v1", "Service", NS, lb("first", json!({}))).await;
    wait_ip(&c, "first", Some("192.0.2.1")).await;
    c.create("v1", "Service", NS, lb("waits", json!({}))).await;
    c.create(
        "v1",
        "Service",
        NS,
        lb("other", json!({"loadBalancerClass": "example.com/lb"})),
    )
    .await;
    c.wait_for("an AllocationFailed event for the third", || async {
        let events = c.list("v1", "Event", NS).await;
        if events
            .iter()
            .any(|e| e["reason"] == "AllocationFailed" && e["involvedObject"]["name"] == "waits")
        {
            Ok(())
        } else {
            Err(format!("{} events", events.len()))
        }
    })
    .await;
    assert_eq!(ingress(&c, "waits").await, None);
    // No longer a LoadBalancer: its address is given back and goes to the waiting Service.
    c.patch(
        "v1",
        "Service",
        NS,
        "first",
        json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}),
    )
    .await;
    wait_ip(&c, "first", None).await;
    wait_ip(&c, "waits", Some("192.0.2.1")).await;
    assert_eq!(
        ingress(&c, "other").await,
        None,
        "another class's Service is left alone"
    );
    assert_eq!(ingress(&c, "asks").await.as_deref(), Some("192.0.2.2"));
}
