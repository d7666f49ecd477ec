//! Ingress over HTTP, in process: a real API server, the proxy's sync loop with Ingress on, the
//! real HTTP server on a 127.0.0.1 port, and backend servers on 127.0.0.1 ports that the
//! EndpointSlices list. What the tests drive is the whole path from objects to bytes.

mod ingress_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use ingress_support::{Harness, backend, get, path_rule, wait_for};
use rudder_proxy::ingress::server::ForwardConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn two_hosts_two_paths() -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "web"},
           "spec": {"rules": [
               {"host": "one.test", "http": {"paths": [
                   path_rule("/", "Prefix", "alpha"), path_rule("/api", "Prefix", "beta")]}},
               {"host": "two.test", "http": {"paths": [
                   path_rule("/", "Prefix", "beta"), path_rule("/alpha", "Exact", "alpha")]}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_and_two_paths_reach_two_services_with_forwarding_headers() {
    let h = Harness::start().await;
    let (a1, a2, b) = (
        backend("alpha-1").await,
        backend("alpha-2").await,
        backend("beta").await,
    );
    h.service("alpha", &[a1, a2]).await;
    h.service("beta", &[b]).await;
    h.ingress(two_hosts_two_paths()).await;
    h.wait_route("one.test", "/", "default/alpha").await;
    h.wait_route("one.test", "/api", "default/beta").await;
    wait_for("both alpha endpoints", || {
        h.state
            .table()
            .route("one.test", "/")
            .route()
            .is_some_and(|r| r.backend.endpoints.len() == 2)
    })
    .await;

    let who = |body: &str| body.split(' ').next().unwrap_or("").to_string();
    let (s, _, body) = get(h.http, "one.test", "/api/users", &[]).await;
    assert_eq!((s, who(&body)), (StatusCode::OK, "beta".into()), "{body}");
    assert!(body.contains("beta GET /api/users\n"), "path kept: {body}");
    let (_, _, body) = get(h.http, "one.test", "/apiary", &[]).await;
    assert!(body.starts_with("alpha-"), "element-wise prefix: {body}");
    let (_, _, body) = get(h.http, "TWO.test:80", "/alpha", &[]).await;
    assert!(
        body.starts_with("alpha-"),
        "Exact on the second host: {body}"
    );
    let (_, _, body) = get(h.http, "two.test", "/alpha/x", &[]).await;
    assert!(
        body.starts_with("beta "),
        "Exact does not match below: {body}"
    );

    // Round-robin over the two ready alpha endpoints.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..6 {
        let (_, _, body) = get(h.http, "one.test", "/", &[]).await;
        *seen.entry(who(&body)).or_insert(0) += 1;
    }
    assert_eq!(seen.get("alpha-1"), Some(&3), "{seen:?}");
    assert_eq!(seen.get("alpha-2"), Some(&3), "{seen:?}");

    // Forwarding headers; hop-by-hop ones dropped both ways.
    let (_, headers, body) = get(
        h.http,
        "one.test",
        "/api",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "x-hop"),
            ("x-hop", "must go"),
            ("keep-alive", "timeout=1"),
        ],
    )
    .await;
    assert!(body.contains("host: one.test\n"), "{body}");
    assert!(
        body.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\n"),
        "{body}"
    );
    assert!(body.contains("x-real-ip: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains("x-forwarded-host: one.test\n"), "{body}");
    assert!(!body.contains("x-hop"), "a header Connection names: {body}");
    assert!(!body.contains("keep-alive"), "{body}");
    assert_eq!(headers["x-backend"], "beta");
    assert!(!headers.contains_key("keep-alive"), "{headers:?}");

    // The served Ingress carries the proxy's address in its status.
    let mut status = Value::Null;
    for _ in 0..200 {
        status = h.get_obj("networking.k8s.io/v1", "Ingress", "web").await["status"].clone();
        if status.pointer("/loadBalancer/ingress/0/ip").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        status,
        json!({"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_default_backend_and_the_proxys_own_answers() {
    let h = Harness::start().await;
    let (old, new, dflt) = (
        backend("old").await,
        backend("new").await,
        backend("dflt").await,
    );
    h.service("old", &[old]).await;
    h.service("new", &[new]).await;
    // A Service without endpoints.
    h.service("empty", &[]).await;
    let ing = |name: &str, svc: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
               "spec": {"rules": [{"host": "p.test", "http": {"paths": [
                   path_rule("/", "Prefix", svc), path_rule("/empty", "Prefix", "empty"),
                   path_rule("/gone", "Prefix", "missing")]}}]}})
    };
    // Named so that by name alone the newer one would win.
    h.ingress(ing("z-old", "old")).await;
    // creationTimestamp has whole seconds: make the second one visibly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.ingress(ing("a-new", "new")).await;
    wait_for("both Ingresses served", || {
        h.state.table().served.len() == 2
    })
    .await;
    h.wait_route("p.test", "/", "default/old").await;
    let (_, _, body) = get(h.http, "p.test", "/x", &[]).await;
    assert!(
        body.starts_with("old "),
        "the oldest Ingress keeps the rule: {body}"
    );

    let (s, _, body) = get(h.http, "nobody.test", "/", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no Ingress rule matches host \"nobody.test\" and path \"/\""),
        "{body}"
    );
    let (s, _, body) = get(h.http, "p.test", "/empty", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("service default/empty port http has no ready endpoint"),
        "{body}"
    );
    let (s, _, body) = get(h.http, "p.test", "/gone", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("(service default/missing does not exist)"),
        "{body}"
    );

    // A default backend takes what no rule matches.
    h.service("dflt", &[dflt]).await;
    h.ingress(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": "fallback"},
                     "spec": {"defaultBackend": {"service": {"name": "dflt", "port": {"number": 80}}}}}))
        .await;
    wait_for("the default backend", || {
        h.state
            .table()
            .route("nobody.test", "/")
            .route()
            .is_some_and(|r| !r.backend.endpoints.is_empty())
    })
    .await;
    let (s, _, body) = get(h.http, "nobody.test", "/", &[]).await;
    assert_eq!(
        (s, body.split(' ').next()),
        (StatusCode::OK, Some("dflt")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_without_buffering() {
    let h = Harness::start().await;
    let b = backend("echo").await;
    h.service("echo", &[b]).await;
    h.ingress(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "e"},
                     "spec": {"rules": [{"http": {"paths": [path_rule("/echo", "Prefix", "echo")]}}]}}))
        .await;
    h.wait_route("any", "/echo", "default/echo").await;

    let s = tokio::net::TcpStream::connect(h.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = Request::post("/echo")
        .header("host", "any")
        .body(body)
        .unwrap();
    let resp = send.send_request(req);
    // A chunk goes in; the same chunk must come back before the next one is sent, which only a
    // proxy that streams (both ways) can do. 128 chunks of 64 KiB: 8 MiB in all, chunked.
    let chunk = |i: usize| Bytes::from(vec![b'a' + (i % 26) as u8; 64 * 1024]);
    tx.send(Ok(Frame::data(chunk(0)))).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("response headers before the body ended")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("content-length").is_none());
    let mut body = resp.into_body();
    let mut got = 0usize;
    for i in 0..128 {
        let want = 64 * 1024 * (i + 1);
        while got < want {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .unwrap_or_else(|_| panic!("chunk {i} never came back: the body was held"))
                .expect("body ended early")
                .unwrap();
            if let Ok(d) = frame.into_data() {
                assert!(d.iter().all(|c| *c == b'a' + (i % 26) as u8), "chunk {i}");
                got += d.len();
            }
        }
        if i + 1 < 128 {
            tx.send(Ok(Frame::data(chunk(i + 1)))).await.unwrap();
        }
    }
    drop(tx);
    assert!(
        body.frame().await.is_none(),
        "the body ends with the request's"
    );
    assert_eq!(got, 8 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_passed_through_and_echoed() {
    let h = Harness::start().await;
    let b = backend("ws").await;
    h.service("ws", &[b]).await;
    h.ingress(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ws"},
                     "spec": {"rules": [{"host": "ws.test", "http": {"paths": [path_rule("/", "Prefix", "ws")]}}]}}))
        .await;
    h.wait_route("ws.test", "/socket", "default/ws").await;
    let mut s = tokio::net::TcpStream::connect(h.http).await.unwrap();
    s.write_all(
        b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [
        &b"hello"[..],
        b"over the upgraded connection",
        &[0u8, 255, 7],
    ] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo")
            .unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_skipped_for_idempotent_requests_and_a_502_otherwise() {
    let h = Harness::start_with(ForwardConfig {
        connect_timeout: Duration::from_secs(2),
        response_header_timeout: Duration::from_secs(5),
    })
    .await;
    // A port nobody listens on (bound, then closed).
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let live = backend("live").await;
    h.service("mixed", &[dead, live]).await;
    h.service("dead", &[dead]).await;
    h.ingress(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "m"},
                     "spec": {"rules": [{"http": {"paths": [
                         path_rule("/dead", "Prefix", "dead"), path_rule("/", "Prefix", "mixed")]}}]}}))
        .await;
    wait_for("two mixed endpoints", || {
        h.state
            .table()
            .route("x", "/")
            .route()
            .is_some_and(|r| r.backend.endpoints.len() == 2)
    })
    .await;
    h.wait_route("x", "/dead", "default/dead").await;
    for _ in 0..4 {
        let (s, _, body) = get(h.http, "x", "/", &[]).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "a GET retried on the next endpoint: {body}"
        );
        assert!(body.starts_with("live "), "{body}");
    }
    let (s, _, body) = get(h.http, "x", "/dead", &[]).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains(&format!("endpoint {dead} of service default/dead")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_canary_takes_its_share_of_requests() {
    let h = Harness::start().await;
    let (stable, canary) = (backend("stable").await, backend("canary").await);
    h.service("stable", &[stable]).await;
    h.service("canary", &[canary]).await;
    let ing = |name: &str, svc: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
               "spec": {"rules": [{"host": "c.test", "http": {"paths": [path_rule("/", "Prefix", svc)]}}]}})
    };
    h.ingress(ing("main", "stable")).await;
    let mut c = ing("main-canary", "canary");
    c["metadata"]["annotations"] =
        json!({"rudder.io/canary": "true", "rudder.io/canary-weight": "10"});
    h.ingress(c).await;
    wait_for("the canary attached", || {
        h.state
            .table()
            .route("c.test", "/")
            .route()
            .is_some_and(|r| {
                r.canary
                    .as_ref()
                    .is_some_and(|c| c.weight == 10 && !c.backend.endpoints.is_empty())
            })
    })
    .await;
    let mut hits = 0;
    for _ in 0..1000 {
        let (s, _, body) = get(h.http, "c.test", "/", &[]).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        hits += usize::from(body.starts_with("canary "));
    }
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5. 60..=140 is over four deviations
    // each way, so a correct split fails less than once in 30,000 runs; a canary ignored (0),
    // always taken (1000) or with the weight read per mille (~10) fails it.
    assert!(
        (60..=140).contains(&hits),
        "{hits} of 1000 reached the canary"
    );

    // Weight 100: everything goes to the canary; weight 0: nothing.
    for (weight, want) in [(100u32, 50), (0, 0)] {
        // The latest version: the proxy writes the status meanwhile.
        let mut current = h
            .get_obj("networking.k8s.io/v1", "Ingress", "main-canary")
            .await;
        current["metadata"]["annotations"]["rudder.io/canary-weight"] = json!(weight.to_string());
        h.update("networking.k8s.io/v1", "Ingress", current).await;
        wait_for("the new weight", || {
            h.state
                .table()
                .route("c.test", "/")
                .route()
                .is_some_and(|r| r.canary.as_ref().is_some_and(|c| c.weight == weight))
        })
        .await;
        let mut n = 0;
        for _ in 0..50 {
            let (_, _, body) = get(h.http, "c.test", "/", &[]).await;
            n += usize::from(body.starts_with("canary "));
        }
        assert_eq!(n, want, "weight {weight}");
    }
}
