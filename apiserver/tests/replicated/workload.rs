//! The workload the failover tests share: writers that stream creates through clients failing
//! over between the masters, recording every operation and its outcome, and one watch that
//! follows the cluster through every failover. [`Workload::finish`] stops the writers, waits
//! for the members to agree, and runs the checker over what every member holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use rudder_client::Client;
use rudder_proto as pb;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use super::checker::{self, Op, Outcome, Report};
use super::cluster::Cluster;
use super::{NS, holding, kind};

/// Waits until every member serves the default namespace and the members agree; the version
/// they agree on.
pub async fn ready(cluster: &Cluster) -> u64 {
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
                "the default namespace never appeared on member {}",
                m.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster
        .converged(1, Duration::from_secs(20))
        .await
        .expect("members converge after bootstrap")
}

type Seen = Arc<Mutex<Vec<(u64, String, String)>>>;

pub struct Workload {
    seed: u64,
    start_rv: u64,
    ops: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<()>>,
    stop_at: Arc<Mutex<Option<u64>>>,
    seen: Seen,
    resumes: Arc<Mutex<Vec<String>>>,
    watcher: JoinHandle<()>,
}

impl Workload {
    /// Eight writers, each starting on a different member, and the watch, starting on
    /// `watch_first` (the member to fail first) from `start_rv`.
    pub fn start(
        addrs: &[String],
        watch_first: usize,
        start_rv: u64,
        seed: u64,
        rng: &mut impl Rng,
    ) -> Workload {
        let stop_at = Arc::new(Mutex::new(None));
        let seen: Seen = Arc::default();
        let resumes = Arc::new(Mutex::new(Vec::new()));
        let mut watch_addrs = addrs.to_vec();
        watch_addrs.rotate_left(watch_first);
        let watcher = tokio::spawn(follow(
            watch_addrs,
            start_rv,
            stop_at.clone(),
            seen.clone(),
            resumes.clone(),
        ));
        let ops: Arc<Mutex<Vec<Op>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..8)
            .map(|w| {
                let mut mine = addrs.to_vec();
                mine.rotate_left(w % addrs.len());
                let client = Client::new(&mine).expect("client");
                let salt: u64 = rng.random();
                tokio::spawn(write_stream(client, w, salt, ops.clone(), stop.clone()))
            })
            .collect();
        Workload {
            seed,
            start_rv,
            ops,
            stop,
            writers,
            stop_at,
            seen,
            resumes,
            watcher,
        }
    }

    /// How long after `since` more than `n` creates that began after it were acknowledged;
    /// None if that took longer than `limit`.
    pub async fn resumed(&self, since: Instant, n: usize, limit: Duration) -> Option<Duration> {
        while since.elapsed() < limit {
            let after = self
                .ops
                .lock()
                .unwrap()
                .iter()
                .filter(|o| o.started >= since && matches!(o.outcome, Outcome::Acked(_)))
                .count();
            if after > n {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Stops the writers, waits until every member holds the last acknowledged version and the
    /// watch reached it, and checks everything; panics, naming the seed, on any violation.
    pub async fn finish(self, cluster: &Cluster) -> Report {
        let seed = self.seed;
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        let ops = self.ops.lock().unwrap().clone();
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
            .unwrap_or_else(|e| panic!("seed {seed}: {e}; logs:\n{}", cluster.log_tails()));
        *self.stop_at.lock().unwrap() = Some(end);
        let watch_done = tokio::time::timeout(Duration::from_secs(30), self.watcher).await;
        let mut members = Vec::new();
        for (i, m) in cluster.members.iter().enumerate() {
            let held = holding(&m.client)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: listing member {}: {e}", i + 1));
            members.push((m.id, held));
        }
        let seen = self.seen.lock().unwrap().clone();
        let resumes = self.resumes.lock().unwrap().clone();
        assert!(
            watch_done.is_ok(),
            "seed {seed}: the watch did not reach version {end}; resumes: {resumes:?}"
        );
        match checker::check(&ops, &members, self.start_rv, &seen) {
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
                report
            }
            Err(errors) => panic!(
                "seed {seed}: {} violations:\n{}\nwatch resumptions: {resumes:?}",
                errors.len(),
                errors.join("\n")
            ),
        }
    }
}

/// One writer: creates `w{w}-{i}` until stopped, recording each outcome.
async fn write_stream(
    client: Client,
    w: usize,
    salt: u64,
    ops: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
) {
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
