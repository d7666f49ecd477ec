//! `LeaderElector::run_while_leading` against a real server: the successor's first write comes
//! after the old leader's last one, on a clean shutdown and when the old leader is cut off.
//! Order is judged by resourceVersion, the server's log position, so no clock is trusted.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rudder_client::api::ApiFuture;
use rudder_client::clock::RealClock;
use rudder_client::leader::{LeaderConfig, LeaderElector};
use rudder_client::proto as pb;
use rudder_client::{Api, Client, ClientError, WatchStream};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client whose calls can be cut off: while cut, every call waits (a partition); calls
/// abandoned meanwhile never reach the server.
struct Cuttable {
    inner: Client,
    cut: watch::Sender<bool>,
}

impl Cuttable {
    async fn call<T>(&self, fwd: ApiFuture<'_, T>) -> Result<T, ClientError> {
        let mut cut = self.cut.subscribe();
        let _ = cut.wait_for(|c| !*c).await;
        fwd.await
    }
}

impl Api for Cuttable {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::get(&self.inner, req)))
    }
    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse> {
        Box::pin(self.call(Api::list(&self.inner, req)))
    }
    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream> {
        Box::pin(self.call(Api::watch(&self.inner, req)))
    }
    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::create(&self.inner, req)))
    }
    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::update(&self.inner, req)))
    }
    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::update_status(&self.inner, req)))
    }
    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::patch(&self.inner, req)))
    }
    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        Box::pin(self.call(Api::delete(&self.inner, req)))
    }
    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::bind(&self.inner, req)))
    }
    fn finalize(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        Box::pin(self.call(Api::finalize(&self.inner, req)))
    }
    fn evict(&self, req: pb::EvictRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        Box::pin(self.call(Api::evict(&self.inner, req)))
    }
    fn api_resources(&self) -> ApiFuture<'_, pb::DiscoveryResponse> {
        Box::pin(self.call(Api::api_resources(&self.inner)))
    }
}

/// The resourceVersions of every write each leader's work made, in the order made.
type Writes = Arc<Mutex<Vec<(String, u64)>>>;

struct Candidate {
    leading: watch::Receiver<bool>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    api: Arc<Cuttable>,
}

/// A candidate whose guarded work creates a ConfigMap every 50 ms while leading and keeps
/// writing for `wind_down` after being told to stop (writes in flight).
fn candidate(s: &TestServer, id: &str, writes: &Writes, wind_down: Duration) -> Candidate {
    let api = Arc::new(Cuttable {
        inner: s.client.clone(),
        cut: watch::channel(false).0,
    });
    let mut cfg = LeaderConfig::new("kube-system", "rudder-handover", id);
    cfg.lease_duration = Duration::from_secs(6);
    cfg.renew_deadline = Duration::from_secs(3);
    cfg.retry_period = Duration::from_millis(500);
    let e = LeaderElector::new(api.clone(), cfg, RealClock::shared()).expect("config");
    let leading = e.subscribe();
    let cancel = CancellationToken::new();
    let (writes, who, client) = (writes.clone(), id.to_string(), s.client.clone());
    let task = tokio::spawn(e.run_while_leading(cancel.clone(), move |term| {
        let (writes, who, client) = (writes.clone(), who.clone(), client.clone());
        async move {
            let mut stop_at = None;
            for n in 0.. {
                if stop_at.is_none() && term.is_cancelled() {
                    stop_at = Some(Instant::now() + wind_down);
                }
                if stop_at.is_some_and(|t| Instant::now() >= t) {
                    return;
                }
                let name = format!("{who}-{n}-{}", writes.lock().expect("writes").len());
                let body = configmap(&name, json!({}));
                if let Ok(obj) = client
                    .create(create_req("v1", "ConfigMap", "default", body))
                    .await
                {
                    writes
                        .lock()
                        .expect("writes")
                        .push((who.clone(), obj.resource_version));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }));
    Candidate {
        leading,
        cancel,
        task,
        api,
    }
}

fn is(c: &Candidate) -> bool {
    *c.leading.borrow()
}

/// Every write of `first` precedes every write of `second` in the server's order.
fn assert_ordered(writes: &Writes, first: &str, second: &str) {
    let w = writes.lock().expect("writes").clone();
    let last_first = w
        .iter()
        .filter(|(who, _)| who == first)
        .map(|(_, rv)| *rv)
        .max();
    let first_second = w
        .iter()
        .filter(|(who, _)| who == second)
        .map(|(_, rv)| *rv)
        .min();
    let (Some(last_first), Some(first_second)) = (last_first, first_second) else {
        panic!("both leaders wrote: {w:?}");
    };
    assert!(
        last_first < first_second,
        "{second} wrote at {first_second} before {first}'s last write at {last_first}"
    );
}

async fn lease_holder(c: &Client) -> String {
    let lease = c
        .get(get_req(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-system",
            "rudder-handover",
        ))
        .await
        .expect("lease");
    json(&lease)["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_the_successor_writes_only_after_the_old_leaders_last_write() {
    let s = TestServer::start(&[]);
    let writes = Writes::default();
    let wind_down = Duration::from_secs(2);
    let a = candidate(&s, "a", &writes, wind_down);
    eventually("a leads", || is(&a)).await;
    let b = candidate(&s, "b", &writes, wind_down);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(is(&a) && !is(&b));

    a.cancel.cancel();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        lease_holder(&s.client).await,
        "a",
        "held while a winds down"
    );
    assert!(!is(&b));
    a.task
        .await
        .expect("a returns after winding down and releasing");
    eventually("b leads", || is(&b)).await;
    eventually("b writes", || {
        writes.lock().expect("w").iter().any(|w| w.0 == "b")
    })
    .await;
    assert_ordered(&writes, "a", "b");
    assert_eq!(lease_holder(&s.client).await, "b");
    b.cancel.cancel();
    let _ = b.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_stops_writing_before_the_challenger_starts() {
    let s = TestServer::start(&[]);
    let writes = Writes::default();
    // Well within lease_duration - renew_deadline (3 s).
    let wind_down = Duration::from_millis(500);
    let a = candidate(&s, "a", &writes, wind_down);
    eventually("a leads", || is(&a)).await;
    let b = candidate(&s, "b", &writes, wind_down);
    tokio::time::sleep(Duration::from_millis(700)).await;

    // a's elector loses the server; its work's own client still reaches it.
    a.api.cut.send_replace(true);
    let cut = Instant::now();
    eventually("a steps down", || !is(&a)).await;
    assert!(
        cut.elapsed() <= Duration::from_millis(3500),
        "within the renew deadline"
    );
    eventually("b leads", || is(&b)).await;
    assert!(!is(&a));
    eventually("b writes", || {
        writes.lock().expect("w").iter().any(|w| w.0 == "b")
    })
    .await;
    assert_ordered(&writes, "a", "b");

    // Shutdown while cut off is not held up by the hung calls.
    a.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), a.task)
        .await
        .expect("a returns at once")
        .expect("joined");
    assert_eq!(lease_holder(&s.client).await, "b");
    b.cancel.cancel();
    let _ = b.task.await;
}
