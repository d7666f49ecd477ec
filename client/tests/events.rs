//! Event recorder aggregation and non-blocking behaviour on the fake.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rudder_client::Api;
use rudder_client::clock::ManualClock;
use rudder_client::conn::kind_ref;
use rudder_client::events::EventRecorder;
use rudder_client::fake::FakeApi;
use serde_json::{Value, json};

fn recorder(fake: &Arc<FakeApi>, capacity: usize) -> EventRecorder {
    let api: Arc<dyn Api> = fake.clone();
    EventRecorder::new(
        api,
        "rudder-scheduler",
        "node-1",
        ManualClock::shared(1),
        capacity,
    )
    .0
}

fn events(fake: &FakeApi) -> Vec<Value> {
    fake.list_json(&kind_ref("v1", "Event"))
}

async fn stored_pod(fake: &Arc<FakeApi>) -> Value {
    create(fake, &pods(), &pod("ns", "web-1", json!({}))).await;
    fake.get_json(&pods(), "ns", "web-1").expect("pod")
}

#[tokio::test(start_paused = true)]
async fn repeats_aggregate_into_one_event_with_a_count() {
    let fake = FakeApi::new();
    let pod = stored_pod(&fake).await;
    let rec = recorder(&fake, 100);
    for _ in 0..3 {
        rec.warning(&pod, "FailedScheduling", "0/3 nodes are available");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    rec.normal(&pod, "Scheduled", "assigned ns/web-1 to n1");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let evs = events(&fake);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    let failed = evs
        .iter()
        .find(|e| e["reason"] == "FailedScheduling")
        .expect("aggregated");
    assert_eq!(failed["count"], 3);
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["firstTimestamp"], "2025-01-01T00:00:00Z");
    assert_eq!(failed["lastTimestamp"], "2025-01-01T00:00:04Z");
    assert_eq!(failed["source"]["component"], "rudder-scheduler");
    let name = failed["metadata"]["name"].as_str().unwrap_or("");
    assert!(
        name.starts_with("web-1.") && name.len() > "web-1.".len(),
        "{name}"
    );
    assert_eq!(failed["metadata"]["namespace"], "ns");
    let involved = &failed["involvedObject"];
    assert_eq!(involved["kind"], "Pod");
    assert_eq!(involved["apiVersion"], "v1");
    assert_eq!(involved["name"], "web-1");
    assert_eq!(involved["uid"], pod["metadata"]["uid"]);
    assert_eq!(involved["resourceVersion"], "1");
    let scheduled = evs
        .iter()
        .find(|e| e["reason"] == "Scheduled")
        .expect("separate");
    assert_eq!(scheduled["count"], 1);
    assert_eq!(scheduled["type"], "Normal");
}

#[tokio::test(start_paused = true)]
async fn an_aggregated_event_deleted_meanwhile_is_created_again() {
    let fake = FakeApi::new();
    let pod = stored_pod(&fake).await;
    let rec = recorder(&fake, 100);
    rec.normal(&pod, "Pulled", "image pulled");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let first = events(&fake)[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    delete(&fake, &kind_ref("v1", "Event"), "ns", &first).await;
    rec.normal(&pod, "Pulled", "image pulled");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let evs = events(&fake);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["count"], 1);
    assert_ne!(evs[0]["metadata"]["name"], first.as_str());
}

#[tokio::test(start_paused = true)]
async fn cluster_scoped_objects_get_events_in_default() {
    let fake = FakeApi::new();
    let rec = recorder(&fake, 100);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u"}});
    rec.warning(&node, "NodeNotReady", "kubelet stopped posting status");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let evs = events(&fake);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["metadata"]["namespace"], "default");
}

#[tokio::test(start_paused = true)]
async fn recording_never_blocks_and_drops_when_the_backlog_is_full() {
    let fake = FakeApi::new();
    let pod = stored_pod(&fake).await;
    let rec = recorder(&fake, 2);
    // No await in between: the background task cannot drain, so the third onwards are dropped.
    for i in 0..10 {
        rec.normal(&pod, "Tick", &format!("tick {i}"));
    }
    assert_eq!(rec.dropped(), 8);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(events(&fake).len(), 2);
}
