//! The connection's deadlines and connector seam, against a server that accepts connections
//! and never answers (real sockets, real time: the deadlines are short).
// Tests measure elapsed time on the clock they drive themselves (paused tokio time, or real
// sockets with real deadlines); the ban on ambient clocks is for the library.
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rudder_client::conn::ClientConfig;
use rudder_client::proto as pb;
use rudder_client::{Client, ClientError};

/// Accepts connections and holds them open, reading nothing and answering nothing, until
/// dropped.
struct SilentServer {
    addr: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok((c, _)) = l.accept() {
                    held.push(c);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SilentServer { addr, stop }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn short() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

fn list() -> pb::ListRequest {
    pb::ListRequest {
        kind: Some(rudder_client::conn::kind_ref("v1", "ConfigMap")),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_server_that_never_answers_fails_calls_at_the_deadline() {
    let silent = SilentServer::start();
    let c = Client::with_config(&[silent.addr.as_str()], short()).expect("client");
    let t = Instant::now();
    let e = c.list(list()).await.expect_err("no answer");
    assert!(matches!(e, ClientError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("did not answer within"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // Opening a watch is bounded the same way.
    let t = Instant::now();
    let req = pb::WatchRequest {
        kind: Some(rudder_client::conn::kind_ref("v1", "ConfigMap")),
        allow_bookmarks: true,
        ..Default::default()
    };
    assert!(rudder_client::Api::watch(&c, req).await.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn connections_go_through_the_given_connector() {
    let silent = SilentServer::start();
    let dials = Arc::new(AtomicUsize::new(0));
    let (d, target) = (dials.clone(), silent.addr.clone());
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let (d, target) = (d.clone(), target.clone());
        async move {
            d.fetch_add(1, Ordering::SeqCst);
            let s = tokio::net::TcpStream::connect(target).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    });
    // The address is never dialled directly: only the connector knows where to go.
    let c = Client::with_connector(&["simulated-host:1"], short(), connector).expect("client");
    let _ = c.list(list()).await;
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "the connector made the connection"
    );
}
