//! Shared by the Ingress tests: a real in-process API server, the proxy's sync loop with Ingress
//! on (and a data plane that applies nothing), the Ingress servers on 127.0.0.1 ports, and
//! backend HTTP servers on 127.0.0.1 that EndpointSlices point at.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rudder_client::clock::RealClock;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_proxy::dataplane::{DataPlane, DataPlaneError};
use rudder_proxy::ingress::IngressState;
use rudder_proxy::ingress::server::{self, ForwardConfig, Forwarder};
use rudder_proxy::services::Desired;
use rudder_proxy::sync::{Config, SyncStatus, run};
use rudder_testkit::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct NoPlane;

impl DataPlane for NoPlane {
    fn sync<'a>(&'a mut self, _: &'a Desired) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(async { Ok(()) })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), DataPlaneError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The API server, the proxy's loop and its Ingress servers; all stop when dropped.
pub struct Harness {
    pub api: TestServer,
    pub state: Arc<IngressState>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(ForwardConfig::default()).await
    }

    pub async fn start_with(fc: ForwardConfig) -> Harness {
        let api = TestServer::start().await.expect("API server");
        let cancel = CancellationToken::new();
        let state = IngressState::with_status_address("127.0.0.1".parse().unwrap());
        let mut cfg = Config::new("node-1");
        cfg.min_sync_interval = Duration::from_millis(20);
        cfg.ingress = Some(Arc::clone(&state));
        tokio::spawn(run(
            api.api(),
            RealClock::shared(),
            cfg,
            Box::new(NoPlane),
            None,
            Arc::new(SyncStatus::default()),
            cancel.clone(),
        ));
        let fwd = Arc::new(Forwarder::new(Arc::clone(&state), fc));
        let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http, https) = (http_l.local_addr().unwrap(), https_l.local_addr().unwrap());
        tokio::spawn(server::serve_http(http_l, Arc::clone(&fwd), cancel.clone()));
        let st = Arc::clone(&state);
        let c = cancel.clone();
        tokio::spawn(async move { server::serve_https(https_l, st, fwd, c).await.unwrap() });
        Harness {
            api,
            state,
            http,
            https,
            cancel,
        }
    }

    pub async fn create(&self, api_version: &str, kind: &str, body: Value) -> Value {
        let o = self
            .api
            .client()
            .create(pb::CreateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: "default".into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        serde_json::from_slice(&o.json).unwrap()
    }

    pub async fn update(&self, api_version: &str, kind: &str, body: Value) -> Value {
        let o = self
            .api
            .client()
            .update(pb::UpdateRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: "default".into(),
                json: Bytes::from(body.to_string()),
                options: None,
            })
            .await
            .unwrap_or_else(|e| panic!("update {kind}: {e}"));
        serde_json::from_slice(&o.json).unwrap()
    }

    /// A Service `name` (port 80, named `http`) and its EndpointSlice listing `backends`
    /// (127.0.0.1 ports) as ready, and `unready` ones as not.
    pub async fn service(&self, name: &str, backends: &[SocketAddr]) {
        self.create(
            "v1",
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                   "spec": {"ports": [{"name": "http", "port": 80}]}}),
        )
        .await;
        self.slice(name, backends).await;
    }

    /// The Service's slice: every backend must share one port (a slice has one port set), so
    /// a Service with several 127.0.0.1 backends gets one slice per backend.
    pub async fn slice(&self, svc: &str, backends: &[SocketAddr]) {
        for b in backends {
            self.create(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": format!("{svc}-{}", b.port()),
                                    "labels": {"kubernetes.io/service-name": svc}},
                       "addressType": "IPv4",
                       "ports": [{"name": "http", "port": b.port(), "protocol": "TCP"}],
                       "endpoints": [{"addresses": [b.ip().to_string()], "conditions": {"ready": true}}]}),
            )
            .await;
        }
    }

    pub async fn get_obj(&self, api_version: &str, kind: &str, name: &str) -> Value {
        let o = self
            .api
            .client()
            .get(pb::GetRequest {
                kind: Some(kind_ref(api_version, kind)),
                namespace: "default".into(),
                name: name.into(),
                allow_stale: false,
            })
            .await
            .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"));
        serde_json::from_slice(&o.json).unwrap()
    }

    pub async fn ingress(&self, body: Value) -> Value {
        self.create("networking.k8s.io/v1", "Ingress", body).await
    }

    /// Waits until the table serves `n` Ingresses and `host` `path` routes to `service`.
    pub async fn wait_route(&self, host: &str, path: &str, service: &str) {
        wait_for(&format!("{host}{path} → {service}"), || {
            let t = self.state.table();
            t.route(host, path)
                .route()
                .is_some_and(|r| r.backend.service == service && !r.backend.endpoints.is_empty())
        })
        .await;
    }
}

pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn path_rule(path: &str, kind: &str, svc: &str) -> Value {
    json!({"path": path, "pathType": kind,
           "backend": {"service": {"name": svc, "port": {"name": "http"}}}})
}

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

fn full(s: String) -> Body {
    Full::new(Bytes::from(s))
        .map_err(|n| match n {})
        .boxed_unsync()
}

/// What a backend answers:
/// - `/echo...`: the request body streamed back as it comes;
/// - an `Upgrade` request: 101, then every byte echoed;
/// - anything else: `<name> <method> <path>` and the forwarding headers, one per line.
async fn backend_answer(name: Arc<str>, mut req: Request<Incoming>) -> Response<Body> {
    if req.headers().contains_key(http::header::UPGRADE) {
        let proto = req.headers()[http::header::UPGRADE].clone();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(full(String::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        r.headers_mut().insert(http::header::UPGRADE, proto);
        return r;
    }
    if req.uri().path().starts_with("/echo") {
        return Response::new(req.into_body().boxed_unsync());
    }
    let mut out = format!("{name} {} {}\n", req.method(), req.uri().path());
    for h in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "connection",
        "keep-alive",
        "x-hop",
    ] {
        if let Some(v) = req.headers().get(h) {
            out.push_str(&format!("{h}: {}\n", v.to_str().unwrap()));
        }
    }
    let mut r = Response::new(full(out));
    r.headers_mut()
        .insert("x-backend", name.to_string().parse().unwrap());
    r.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    r
}

/// A backend HTTP/1.1 server on a 127.0.0.1 port, answering as [`backend_answer`]; it runs
/// until the test's runtime ends.
pub async fn backend(name: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name: Arc<str> = name.into();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let name = Arc::clone(&name);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let name = Arc::clone(&name);
                    async move { Ok::<_, Infallible>(backend_answer(name, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A plain HTTP/1.1 request over a new connection: status, headers and the whole body.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::get(path).header("host", host);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let resp = send
        .send_request(b.body(http_body_util::Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}
