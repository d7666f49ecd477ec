//! Nothing acknowledged is lost: kill -9 the server during concurrent writes, restart it on the
//! same data directory, and find every acknowledged object.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut s = TestServer::start(&[]);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let c = s.client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    match c
                        .create(create_req(
                            "v1",
                            "ConfigMap",
                            "default",
                            configmap(&name, json!({"i": i.to_string()})),
                        ))
                        .await
                    {
                        Ok(_) => {
                            acked.lock().unwrap().insert(name);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Let writes flow, then kill the server mid-stream.
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.kill9();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "enough writes happened before the kill: {}",
        acked.len()
    );

    s.restart(&[]);
    let mut stored = BTreeSet::new();
    let mut token = String::new();
    loop {
        let mut req = list_req("v1", "ConfigMap", "default");
        req.limit = 500;
        req.continue_token = token;
        let page = s.client.list(req).await.unwrap();
        stored.extend(page.items.into_iter().map(|o| o.name));
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );

    // Versions continue after the restart, above everything stored.
    let max_rv = s
        .client
        .list(list_req("v1", "ConfigMap", "default"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.resource_version)
        .max()
        .unwrap_or(0);
    let next = s
        .client
        .create(create_req(
            "v1",
            "ConfigMap",
            "default",
            configmap("after", json!({})),
        ))
        .await
        .unwrap();
    assert!(next.resource_version > max_rv);
    let got = s
        .client
        .get(get_req("v1", "ConfigMap", "default", "after"))
        .await
        .unwrap();
    assert_eq!(got.resource_version, next.resource_version);
}
