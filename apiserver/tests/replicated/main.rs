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
mod membership;
mod reads;
mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use checker::{Holding, Op, Outcome};
use cluster::Cluster;
use rand::{Rng, SeedableRng};
use rudder_client::Client;
use rudder_proto as pb;
use tokio_stream::StreamExt;

pub const NS: &str = "default";

pub fn kind() -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    })
}

fn seed() -> u64 {
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

/// One watch that follows the cluster: on any end or error it resumes from the last version it
/// saw on the next member, as a client losing its master does.
async fn follow(
    addrs: Vec<String>,
    from: u64,
    stop_at: Arc<Mutex<Option<u64>>>,
    seen: Arc<Mutex<Vec<(u64, String, String)>>>,
    resumes: Arc<Mutex<Vec<String>>>,
) {
    let clients: Vec<Client> = addrs
        .iter()
        .map(|a| Client::new(&[a.as_str()]).expect("client"))
        .collect();
    let mut last = from;
    let mut at = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if stop_at.lock().unwrap().is_some_and(|t| last >= t) {
            return;
        }
        let opened = clients[at]
            .watch(pb::WatchRequest {
                kind: kind(),
                namespace: NS.into(),
                resource_version: last,
                allow_bookmarks: true,
                bookmark_interval_ms: 200,
                ..Default::default()
            })
            .await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                resumes
                    .lock()
                    .unwrap()
                    .push(format!("open on {}: {e}", addrs[at]));
                at = (at + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
            let ev = match next {
                Ok(Some(Ok(ev))) => ev,
                other => {
                    resumes.lock().unwrap().push(format!(
                        "stream on {} ended at {last}: {other:?}",
                        addrs[at]
                    ));
                    break;
                }
            };
            match pb::EventType::try_from(ev.r#type) {
                Ok(pb::EventType::Added | pb::EventType::Modified | pb::EventType::Deleted) => {
                    let Some(o) = ev.object else { continue };
                    let v: serde_json::Value = serde_json::from_slice(&o.json).unwrap_or_default();
                    let value = v["data"]["v"].as_str().unwrap_or_default().to_string();
                    last = last.max(o.resource_version);
                    seen.lock()
                        .unwrap()
                        .push((o.resource_version, o.name, value));
                }
                Ok(pb::EventType::Bookmark) => last = last.max(ev.resource_version),
                _ => {
                    resumes
                        .lock()
                        .unwrap()
                        .push(format!("error on {} at {last}: {:?}", addrs[at], ev.error));
                    break;
                }
            }
            if stop_at.lock().unwrap().is_some_and(|t| last >= t) {
                return;
            }
        }
        at = (at + 1) % clients.len();
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
    let addrs = cluster.api_addrs();
    // The namespaces are created once a leader exists; wait for them on every member.
    for m in &cluster.members {
        let until = Instant::now() + Duration::from_secs(20);
        while m
            .client
            .get(pb::GetRequest {
                kind: Some(pb::KindRef {
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                }),
                namespace: String::new(),
                name: NS.into(),
                allow_stale: false,
            })
            .await
            .is_err()
        {
            assert!(
                Instant::now() < until,
                "the default namespace never appeared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let start_rv = cluster
        .converged(1, Duration::from_secs(20))
        .await
        .expect("members converge after bootstrap");

    let stop_at = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let resumes = Arc::new(Mutex::new(Vec::new()));
    // The watch starts on the leader, which is killed first: it must resume elsewhere.
    let mut watch_addrs = addrs.clone();
    watch_addrs.rotate_left(leader);
    let watcher = tokio::spawn(follow(
        watch_addrs,
        start_rv,
        stop_at.clone(),
        seen.clone(),
        resumes.clone(),
    ));

    let ops: Arc<Mutex<Vec<Op>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            // Each writer starts on a different member and fails over through the rest.
            let mut mine = addrs.clone();
            mine.rotate_left(w % addrs.len());
            let client = Client::new(&mine).expect("client");
            let (ops, stop) = (ops.clone(), stop.clone());
            let salt: u64 = rng.random();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let value = format!("{:x}", salt.wrapping_mul(i + 1));
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name}, "data": {"v": value}});
                    let started = Instant::now();
                    let r = client
                        .create(pb::CreateRequest {
                            kind: kind(),
                            namespace: NS.into(),
                            json: Bytes::from(body.to_string()),
                            options: None,
                        })
                        .await;
                    let outcome = match r {
                        Ok(o) => Outcome::Acked(o.resource_version),
                        Err(e) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Outcome::Failed(e.to_string())
                        }
                    };
                    ops.lock().unwrap().push(Op {
                        name,
                        value,
                        started,
                        ended: Instant::now(),
                        outcome,
                    });
                    i += 1;
                }
            })
        })
        .collect();

    let acked = |ops: &Arc<Mutex<Vec<Op>>>| {
        ops.lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Acked(_)))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(rng.random_range(800..1500))).await;

    // 1. The leader dies under the stream of writes.
    let before = acked(&ops);
    cluster.kill9(leader);
    let killed_at = Instant::now();
    let mut failover = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        if acked(&ops) > before + 8 {
            failover = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failover = failover.unwrap_or_else(|| {
        panic!(
            "seed {seed}: writes did not resume after the leader was killed; logs:\n{}",
            (0..3)
                .map(|i| cluster.log_tail(i))
                .collect::<Vec<_>>()
                .join("\n---\n")
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
    let leader_now = cluster
        .leader(Duration::from_secs(10))
        .await
        .expect("a leader");
    let follower = (0..3)
        .filter(|i| *i != leader_now)
        .nth(rng.random_range(0..2))
        .expect("a follower");
    cluster.kill9(follower);
    tokio::time::sleep(Duration::from_millis(rng.random_range(800..1500))).await;
    cluster.spawn(follower);
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let ops = ops.lock().unwrap().clone();
    let top = ops
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Acked(rv) => Some(rv),
            Outcome::Failed(_) => None,
        })
        .max()
        .unwrap_or(0);
    let end = cluster
        .converged(top, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    *stop_at.lock().unwrap() = Some(end);
    let watch_done = tokio::time::timeout(Duration::from_secs(30), watcher).await;
    let mut members = Vec::new();
    for (i, m) in cluster.members.iter().enumerate() {
        let held = holding(&m.client)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: listing member {}: {e}", i + 1));
        members.push((m.id, held));
    }
    let seen = seen.lock().unwrap().clone();
    let resumes = resumes.lock().unwrap().clone();
    assert!(
        watch_done.is_ok(),
        "seed {seed}: the watch did not reach version {end}; resumes: {resumes:?}"
    );
    match checker::check(&ops, &members, start_rv, &seen) {
        Ok(report) => {
            eprintln!(
                "checked: {} acknowledged, {} indeterminate (e.g. {:?}), {} watch events, {} watch resumptions",
                report.acked,
                report.failed,
                report.failures,
                report.events,
                resumes.len()
            );
            assert!(
                report.acked > 100,
                "seed {seed}: too few writes to mean anything"
            );
            assert!(
                !resumes.is_empty(),
                "seed {seed}: the watch never had to resume, so it tested no failover"
            );
        }
        Err(errors) => panic!(
            "seed {seed}: {} violations:\n{}\nwatch resumptions: {resumes:?}",
            errors.len(),
            errors.join("\n")
        ),
    }
}
