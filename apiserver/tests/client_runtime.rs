//! The shared client library against a real server: reflector sync, recovery across a server
//! restart (expired history → relist), Lease leader election, and address failover.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rudder_client::Api;
use rudder_client::Client;
use rudder_client::clock::RealClock;
use rudder_client::leader::{LeaderConfig, LeaderElector};
use rudder_client::reflector::{Reflector, ReflectorConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_syncs_follows_and_recovers_after_a_restart() {
    let mut s = TestServer::start(&[]);
    for i in 0..30 {
        create(
            &s.client,
            "v1",
            "ConfigMap",
            "default",
            configmap(&format!("c{i:02}"), json!({})),
        )
        .await;
    }
    let api: Arc<dyn Api> = Arc::new(s.client.clone());
    let mut cfg = ReflectorConfig::new("v1", "ConfigMap");
    cfg.namespace = "default".into();
    cfg.page_size = 7;
    let (reflector, reader) = Reflector::new(api, cfg, RealClock::shared());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(reflector.run(cancel.clone()));
    tokio::time::timeout(Duration::from_secs(20), reader.wait_until_synced())
        .await
        .expect("synced in time");
    assert_eq!(reader.len(), 30);

    create(
        &s.client,
        "v1",
        "ConfigMap",
        "default",
        configmap("live", json!({})),
    )
    .await;
    s.client
        .delete(delete_req("v1", "ConfigMap", "default", "c00"))
        .await
        .unwrap();
    eventually("live changes", || {
        reader.get("default", "live").is_some() && reader.get("default", "c00").is_none()
    })
    .await;

    // The server dies and returns with an empty history: the reflector's resume version is
    // expired, so it must relist, and then follow again.
    s.restart_same_addr();
    create(
        &s.client,
        "v1",
        "ConfigMap",
        "default",
        configmap("after-restart", json!({})),
    )
    .await;
    s.client
        .delete(delete_req("v1", "ConfigMap", "default", "c01"))
        .await
        .unwrap();
    eventually("changes after the restart", || {
        reader.get("default", "after-restart").is_some() && reader.get("default", "c01").is_none()
    })
    .await;
    assert_eq!(reader.len(), 30);
    cancel.cancel();
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_clean_release_hands_over_at_once() {
    let s = TestServer::start(&[]);
    let start = |id: &str| {
        let api: Arc<dyn Api> = Arc::new(s.client.clone());
        let mut cfg = LeaderConfig::new("kube-system", "rudder-test", id);
        cfg.lease_duration = Duration::from_secs(30);
        cfg.renew_deadline = Duration::from_secs(20);
        cfg.retry_period = Duration::from_millis(100);
        let e = LeaderElector::new(api, cfg, RealClock::shared()).expect("config");
        let leading = e.subscribe();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(e.run(cancel.clone()));
        (leading, cancel, task)
    };
    let (a, a_cancel, a_task) = start("a");
    let (b, b_cancel, b_task) = start("b");
    eventually("a leader", || *a.borrow() || *b.borrow()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(*a.borrow() ^ *b.borrow(), "exactly one leader");
    let (winner, loser, w_cancel, w_task, l_cancel, l_task) = if *a.borrow() {
        (a, b, a_cancel, a_task, b_cancel, b_task)
    } else {
        (b, a, b_cancel, b_task, a_cancel, a_task)
    };
    // Releasing on shutdown lets the other take over well before the 30 s lease would expire.
    let t = Instant::now();
    w_cancel.cancel();
    let _ = w_task.await;
    assert!(!*winner.borrow());
    eventually("takeover", || *loser.borrow()).await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let lease = json(
        &s.client
            .get(get_req(
                "coordination.k8s.io/v1",
                "Lease",
                "kube-system",
                "rudder-test",
            ))
            .await
            .unwrap(),
    );
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    l_cancel.cancel();
    let _ = l_task.await;
}

#[tokio::test]
async fn the_client_fails_over_to_a_reachable_server() {
    let s = TestServer::start(&[]);
    // A port nobody listens on: bind, learn the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let c = Client::new(&[dead.as_str(), s.addr.as_str()]).unwrap();
    let h = c.health().await.expect("second address answers");
    assert!(h.writable);
    create(
        &c,
        "v1",
        "ConfigMap",
        "default",
        configmap("via-failover", json!({})),
    )
    .await;
    let only_dead = Client::new(&[dead.as_str()]).unwrap();
    let e = only_dead.health().await.unwrap_err();
    assert!(
        matches!(e, rudder_client::ClientError::Unavailable(_)),
        "{e:?}"
    );
    assert!(e.to_string().contains(&dead), "{e}");
}
