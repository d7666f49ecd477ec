//! The harness itself: a server that answers, and a data directory that is gone afterwards
//! whichever way the test ends.

use std::path::PathBuf;

use rudder_client::proto as pb;
use rudder_testkit::TestServer;

fn namespace_get(name: &str) -> pb::GetRequest {
    pb::GetRequest {
        kind: Some(pb::KindRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        }),
        namespace: String::new(),
        name: name.into(),
        allow_stale: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_bootstrapped_namespaces_and_shutdown_removes_the_data_dir() {
    let s = TestServer::start().await.expect("test server");
    let dir: PathBuf = s.data_dir().expect("data dir").to_path_buf();
    assert!(dir.join("log").exists(), "the store lives in the temp dir");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        s.client()
            .get(namespace_get(ns))
            .await
            .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    }
    assert!(s.addr().ip().is_loopback());
    s.shutdown().await;
    assert!(!dir.exists(), "shutdown removes the data directory");
}

#[test]
fn dropping_the_handle_stops_the_server_and_removes_the_data_dir() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, addr) = rt.block_on(async {
        let s = TestServer::start().await.expect("test server");
        let dir = s.data_dir().expect("data dir").to_path_buf();
        let addr = s.addr();
        drop(s);
        (dir, addr)
    });
    // Even a test that panics ends its runtime; that is the latest point of cleanup.
    drop(rt);
    assert!(!dir.exists(), "the data directory is removed after drop");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after drop"
    );
}
