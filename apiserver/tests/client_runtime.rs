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
use rudder_client::proto as pb;
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

/// Counts the calls a component makes, passing them to the real client.
struct Counting {
    inner: Client,
    lists: std::sync::atomic::AtomicUsize,
    watches: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn new(inner: Client) -> Self {
        Counting {
            inner,
            lists: Default::default(),
            watches: Default::default(),
        }
    }

    fn lists(&self) -> usize {
        self.lists.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn watches(&self) -> usize {
        self.watches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type Fut<'a, T> = rudder_client::api::ApiFuture<'a, T>;

impl Api for Counting {
    fn get(&self, req: pb::GetRequest) -> Fut<'_, pb::Object> {
        Api::get(&self.inner, req)
    }
    fn list(&self, req: pb::ListRequest) -> Fut<'_, pb::ListResponse> {
        self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Api::list(&self.inner, req)
    }
    fn watch(&self, req: pb::WatchRequest) -> Fut<'_, rudder_client::WatchStream> {
        self.watches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Api::watch(&self.inner, req)
    }
    fn create(&self, req: pb::CreateRequest) -> Fut<'_, pb::Object> {
        Api::create(&self.inner, req)
    }
    fn update(&self, req: pb::UpdateRequest) -> Fut<'_, pb::Object> {
        Api::update(&self.inner, req)
    }
    fn update_status(&self, req: pb::UpdateRequest) -> Fut<'_, pb::Object> {
        Api::update_status(&self.inner, req)
    }
    fn patch(&self, req: pb::PatchRequest) -> Fut<'_, pb::Object> {
        Api::patch(&self.inner, req)
    }
    fn delete(&self, req: pb::DeleteRequest) -> Fut<'_, pb::DeleteResponse> {
        Api::delete(&self.inner, req)
    }
    fn bind(&self, req: pb::BindRequest) -> Fut<'_, pb::Object> {
        Api::bind(&self.inner, req)
    }
    fn finalize(&self, req: pb::UpdateRequest) -> Fut<'_, pb::Object> {
        Api::finalize(&self.inner, req)
    }
    fn evict(&self, req: pb::EvictRequest) -> Fut<'_, pb::DeleteResponse> {
        Api::evict(&self.inner, req)
    }
    fn api_resources(&self) -> Fut<'_, pb::DiscoveryResponse> {
        Api::api_resources(&self.inner)
    }
}

/// The server cuts a watcher that stops reading as "too slow"; the reflector must resume from
/// the version it reached, not relist (a relist of a large kind is what the cut is meant to
/// avoid). Fails if the client decides by the ERROR event's code rather than its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_cut_off_as_too_slow_resumes_without_relisting() {
    use rudder_client::reflector::State;
    let s = TestServer::start(&["--watch-buffer", "16"]);
    let counting = Arc::new(Counting::new(s.client.clone()));
    let api: Arc<dyn Api> = counting.clone();
    let mut cfg = ReflectorConfig::new("v1", "ConfigMap");
    cfg.namespace = "default".into();
    let (mut r, reader) = Reflector::new(api, cfg, RealClock::shared());
    while !matches!(
        r.state(),
        State::Watching {
            stream: Some(_),
            ..
        }
    ) {
        r.step().await;
    }
    assert!(reader.has_synced());
    // Far more than the HTTP/2 window and the server's buffers, while nobody reads the watch.
    let big = "x".repeat(30_000);
    for i in 0..400 {
        create(
            &s.client,
            "v1",
            "ConfigMap",
            "default",
            configmap(&format!("big{i:03}"), json!({ "v": big })),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader.len() < 400 {
        assert!(Instant::now() < deadline, "the reflector caught up in time");
        tokio::time::timeout(Duration::from_secs(20), r.step())
            .await
            .expect("a step in time");
    }
    assert!(
        counting.watches() >= 2,
        "the server cut the watcher off at least once (watches: {})",
        counting.watches()
    );
    assert_eq!(counting.lists(), 1, "resumed without relisting");
}

/// Accepts connections and holds them open without a byte in reply.
fn silent_listener() -> (String, Arc<std::sync::atomic::AtomicBool>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr").to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((c, _)) = l.accept() {
                held.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (addr, stop)
}

/// A server that accepts connections but never answers must not hang calls or the reflector:
/// each call gives up at its deadline and moves on to the next address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_skipped_at_the_deadline() {
    let s = TestServer::start(&[]);
    let (silent, stop) = silent_listener();
    let cfg = rudder_client::conn::ClientConfig {
        request_timeout: Duration::from_millis(700),
        ..Default::default()
    };
    let c = Client::with_config(&[silent.as_str(), s.addr.as_str()], cfg).unwrap();
    let t = Instant::now();
    c.list(list_req("v1", "ConfigMap", "default"))
        .await
        .expect("the second address answers");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // The client now starts from the answering server.
    let t = Instant::now();
    c.list(list_req("v1", "ConfigMap", "default"))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "took {:?}",
        t.elapsed()
    );

    let api: Arc<dyn Api> = Arc::new(
        Client::with_config(
            &[silent.as_str(), s.addr.as_str()],
            rudder_client::conn::ClientConfig {
                request_timeout: Duration::from_millis(700),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let (reflector, reader) = Reflector::new(
        api,
        ReflectorConfig::new("v1", "ConfigMap"),
        RealClock::shared(),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn(reflector.run(cancel.clone()));
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_synced())
        .await
        .expect("the reflector syncs through the answering server");
    cancel.cancel();
    let _ = task.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A TCP proxy to `upstream` that can be frozen: it then holds every byte in both directions,
/// as a stuck server or a black-holed path would.
struct FreezableProxy {
    addr: String,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(upstream: String) -> FreezableProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let f = f.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while f.load(std::sync::atomic::Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        FreezableProxy { addr, frozen, task }
    }

    fn freeze(&self) {
        self.frozen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A watch that goes silent (no event, no bookmark) is restarted on another address: without
/// the idle deadline the reflector would wait on the stuck stream for as long as TCP lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_restarted_on_another_server() {
    let s = TestServer::start(&[]);
    let proxy = FreezableProxy::start(s.addr.clone()).await;
    let cfg = rudder_client::conn::ClientConfig {
        request_timeout: Duration::from_secs(1),
        watch_idle_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let api: Arc<dyn Api> =
        Arc::new(Client::with_config(&[proxy.addr.as_str(), s.addr.as_str()], cfg).unwrap());
    let mut rcfg = ReflectorConfig::new("v1", "ConfigMap");
    rcfg.namespace = "default".into();
    let (reflector, reader) = Reflector::new(api, rcfg, RealClock::shared());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(reflector.run(cancel.clone()));
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_synced())
        .await
        .expect("synced through the proxy");
    // Past the first bookmarks, so the watch is known to be healthy before the freeze.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.freeze();
    create(
        &s.client,
        "v1",
        "ConfigMap",
        "default",
        configmap("after-freeze", json!({})),
    )
    .await;
    eventually("the change, through the other server", || {
        reader.get("default", "after-freeze").is_some()
    })
    .await;
    cancel.cancel();
    let _ = task.await;
}

/// The write helpers against the real server: finalizers guarded by resourceVersion, the
/// finalize pattern through deletion, and status patches that skip no-op writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_helpers_manage_finalizers_and_status() {
    use rudder_client::cache::CachedObject;
    use rudder_client::write::{self, Finalized};
    let s = TestServer::start(&[]);
    let api = s.client.clone();
    let cached = |o: &pb::Object| CachedObject::from_wire(o).expect("decodable");
    let obj = create(
        &api,
        "apps/v1",
        "Deployment",
        "default",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    )
    .await;
    let first = cached(&obj);
    let apply = || async { Ok::<_, rudder_client::ClientError>("applied") };
    let cleanup = || async { Ok::<_, rudder_client::ClientError>("cleaned") };
    let r = write::finalize(&api, &first, "test/cleanup", apply, cleanup).await;
    assert_eq!(r.unwrap(), Some(Finalized::FinalizerAdded));
    // A stale copy cannot overwrite the finalizer list.
    let stale = write::add_finalizer(&api, &first, "test/other").await;
    assert!(
        matches!(stale, Err(rudder_client::ClientError::Conflict(_))),
        "{stale:?}"
    );
    let now = cached(
        &api.get(get_req("apps/v1", "Deployment", "default", "web"))
            .await
            .unwrap(),
    );
    assert!(now.has_finalizer("test/cleanup"));
    let r = write::finalize(&api, &now, "test/cleanup", apply, cleanup).await;
    assert_eq!(r.unwrap(), Some(Finalized::Applied("applied")));

    // Status: observedGeneration written once; the same status again is not sent.
    let patched = write::patch_status_observed(&api, &now, json!({"replicas": 0}))
        .await
        .unwrap()
        .expect("a first status write");
    let after = cached(&patched);
    assert_eq!(after.observed_generation(), after.generation());
    let again = write::patch_status_observed(&api, &after, json!({"replicas": 0}))
        .await
        .unwrap();
    assert!(again.is_none(), "no-op status writes are skipped");

    // Deletion waits for the finalizer; finalize cleans up and lets it go.
    api.delete(delete_req("apps/v1", "Deployment", "default", "web"))
        .await
        .unwrap();
    let deleting = cached(
        &api.get(get_req("apps/v1", "Deployment", "default", "web"))
            .await
            .unwrap(),
    );
    assert!(deleting.is_deleting());
    let r = write::finalize(&api, &deleting, "test/cleanup", apply, cleanup).await;
    assert_eq!(r.unwrap(), Some(Finalized::CleanedUp("cleaned")));
    let gone = api
        .get(get_req("apps/v1", "Deployment", "default", "web"))
        .await;
    assert!(
        matches!(gone, Err(rudder_client::ClientError::NotFound(_))),
        "{gone:?}"
    );
}

/// A process that abandons many calls at once (a controller-manager losing its lease drops
/// every watch; a CLI interrupted mid-listing) resets all those streams on its one HTTP/2
/// connection. The server must not read that as a rapid-reset attack and close the connection
/// under the calls still going. Driven over a bare channel, which never retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abandoning_hundreds_of_calls_keeps_its_connection() {
    let s = TestServer::start(&[]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let client = pb::resources_client::ResourcesClient::new(channel);
    for round in 0..10 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200 {
            let mut c = client.clone();
            set.spawn(async move {
                if i % 2 == 0 {
                    let _ = c
                        .watch(pb::WatchRequest {
                            kind: Some(rudder_client::conn::kind_ref("v1", "ConfigMap")),
                            namespace: "default".into(),
                            ..Default::default()
                        })
                        .await;
                } else {
                    let _ = c.list(list_req("v1", "Namespace", "")).await;
                }
                std::future::pending::<()>().await;
            });
        }
        tokio::time::sleep(Duration::from_millis(round % 3)).await;
        set.abort_all();
        while set.join_next().await.is_some() {}
        client
            .clone()
            .list(list_req("v1", "Namespace", ""))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the connection was closed: {e:?}"));
    }
}

/// A call that meets a connection closed under it (a server restarting, a proxy or load
/// balancer dropping the connection) is tried again on a fresh connection, even with one
/// server address. A relay in front of the server cuts the first connection as soon as the
/// client has sent its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_connection_closed_under_it_is_retried_on_a_new_one() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let s = TestServer::start(&[]);
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let (accepted, server) = (Arc::clone(&accepted), s.addr.clone());
        async move {
            while let Ok((mut conn, _)) = relay.accept().await {
                if accepted.fetch_add(1, Ordering::SeqCst) == 0 {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    drop(conn);
                    continue;
                }
                let server = server.clone();
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                });
            }
        }
    });
    let client = Client::new(&[relay_addr.to_string()]).expect("client");
    let listed = client.list(list_req("v1", "Namespace", "")).await;
    task.abort();
    let listed = listed.expect("the call succeeds on the second connection");
    assert!(!listed.items.is_empty());
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one cut, one good");
}
