//! Three real masters as processes: writes stream in through clients that fail over between
//! them while the leader is killed, a follower is killed, and both come back. Afterwards the
//! checker ([`checker`]) verifies that every acknowledged write is on every member, that no
//! version names two writes, that versions follow real time, and that one watch that followed
//! the cluster through every failover saw each creation once, in order.
//!
//! The schedule (which member dies when, the values written) comes from a seed printed at the
//! start; `RUDDER_TEST_SEED=N` replays it.

mod backup;
mod checker;
mod cluster;
mod history;
mod membership;
mod partition;
mod reads;
mod rejoin;
mod snapshot;
mod workload;

use std::time::Duration;

use bytes::Bytes;
use checker::Holding;
use cluster::Cluster;
use rand::{Rng, SeedableRng};
use rudder_client::Client;
use rudder_proto as pb;
use workload::Workload;

pub const NS: &str = "default";

pub fn kind() -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    })
}

pub fn seed() -> u64 {
    std::env::var("RUDDER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Creates a config map named `name` (its value is its name); the version it got.
pub async fn create_cm(c: &Client, name: &str) -> Result<u64, String> {
    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"v": name}});
    c.create(pb::CreateRequest {
        kind: kind(),
        namespace: NS.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    })
    .await
    .map(|o| o.resource_version)
    .map_err(|e| e.to_string())
}

/// Every config map a member holds (its own state: the client talks to it alone).
pub async fn holding(c: &Client) -> Result<Holding, String> {
    let mut out = Holding::new();
    let mut token = String::new();
    loop {
        let page = c
            .list(pb::ListRequest {
                kind: kind(),
                namespace: NS.into(),
                limit: 1000,
                continue_token: token,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        for o in page.items {
            let v: serde_json::Value =
                serde_json::from_slice(&o.json).map_err(|e| e.to_string())?;
            let value = v["data"]["v"].as_str().unwrap_or_default().to_string();
            out.insert(o.name, (o.resource_version, value));
        }
        if page.continue_token.is_empty() {
            return Ok(out);
        }
        token = page.continue_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_leader_and_follower_loss_and_every_member_agrees() {
    let seed = seed();
    eprintln!("seed {seed} (replay with RUDDER_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3);
    let leader = cluster
        .leader(Duration::from_secs(20))
        .await
        .expect("a leader is elected");
    let start_rv = workload::ready(&cluster).await;
    // The watch starts on the leader, which is killed first: it must resume elsewhere.
    let load = Workload::start(&cluster.api_addrs(), leader, start_rv, seed, &mut rng);
    tokio::time::sleep(Duration::from_millis(rng.random_range(800..1500))).await;

    // 1. The leader dies under the stream of writes.
    cluster.kill9(leader);
    let killed_at = std::time::Instant::now();
    let failover = load
        .resumed(killed_at, 8, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: writes did not resume after the leader was killed; logs:\n{}",
                cluster.log_tails()
            )
        });
    eprintln!("writes resumed {failover:?} after the leader was killed");
    let new_leader = cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..1200))).await;

    // 2. The old leader comes back from its disk.
    cluster.spawn(leader);
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;

    // 3. A follower dies, then comes back.
    let follower = cluster.random_follower(&mut rng).await;
    cluster.kill9(follower);
    tokio::time::sleep(Duration::from_millis(rng.random_range(800..1500))).await;
    cluster.spawn(follower);
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;

    load.finish(&cluster).await;
}
