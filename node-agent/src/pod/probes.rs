//! Liveness, readiness and startup probes.
//!
//! Probes run from the node, as kubelet's do: httpGet, tcpSocket and grpc connect to the pod IP
//! (reachable from the node on the pod network) through a [`Prober`], the network boundary;
//! exec runs in the container through the runtime. Running them from the node needs nothing in
//! the image (a scratch image has no shell, no curl) and matches what Kubernetes users expect of
//! `host` and of named ports; see `docs/node-agent.md`.
//!
//! [`Tracker`] is the timing and threshold logic of one probe of one container, pure and driven
//! by the pod worker: the first probe at start + `initialDelaySeconds`, then every
//! `periodSeconds`; a result flips after `successThreshold` consecutive successes or
//! `failureThreshold` consecutive failures. Liveness starts as passing, readiness as failing,
//! startup as not yet passed; while a startup probe has not passed, the others do not run.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudder_api::k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use rudder_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// An HTTP GET probe's target, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// Network probes from the node.
pub trait Prober: Send + Sync + 'static {
    fn http_get<'a>(&'a self, target: &'a HttpTarget, timeout: Duration) -> ProbeFuture<'a>;
    fn tcp<'a>(&'a self, host: &'a str, port: u16, timeout: Duration) -> ProbeFuture<'a>;
    fn grpc<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        service: &'a str,
        timeout: Duration,
    ) -> ProbeFuture<'a>;
}

/// Probes over real sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetProber;

impl Prober for NetProber {
    fn http_get<'a>(&'a self, t: &'a HttpTarget, timeout: Duration) -> ProbeFuture<'a> {
        Box::pin(async move {
            if t.https {
                return Outcome::Failure(
                    "HTTPS probes are not supported yet by rudder-node-agent".into(),
                );
            }
            match tokio::time::timeout(timeout, http_get(t)).await {
                Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
                Ok(Ok(code)) => {
                    Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                }
                Ok(Err(e)) => Outcome::Failure(format!(
                    "Get \"http://{}:{}{}\": {e}",
                    t.host, t.port, t.path
                )),
                Err(_) => Outcome::Failure(format!(
                    "Get \"http://{}:{}{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                    t.host, t.port, t.path
                )),
            }
        })
    }

    fn tcp<'a>(&'a self, host: &'a str, port: u16, timeout: Duration) -> ProbeFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await
            {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
                Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
            }
        })
    }

    fn grpc<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        service: &'a str,
        timeout: Duration,
    ) -> ProbeFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, super::grpc_health::check(host, port, service))
                .await
            {
                Ok(Ok(true)) => Outcome::Success,
                Ok(Ok(false)) => Outcome::Failure(format!(
                    "service unhealthy (responded with \"NOT_SERVING\") at {host}:{port}"
                )),
                Ok(Err(e)) => Outcome::Failure(format!("gRPC health check at {host}:{port}: {e}")),
                Err(_) => Outcome::Failure(format!(
                    "timeout: health rpc did not complete within {}s",
                    timeout.as_secs_f64()
                )),
            }
        })
    }
}

/// A bare HTTP/1.1 GET: the status code of the response. The body is not read.
async fn http_get(t: &HttpTarget) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await?;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: rudder-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n",
        if t.path.is_empty() { "/" } else { &t.path },
        t.host,
        t.port
    );
    for (k, v) in &t.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

/// A prober with scripted answers per `host:port`, for tests. Unknown targets refuse the
/// connection, as a closed port does.
#[derive(Debug, Default, Clone)]
pub struct FakeProber {
    answers: Arc<Mutex<HashMap<(String, u16), Outcome>>>,
    calls: Arc<Mutex<Vec<(String, u16)>>>,
}

impl FakeProber {
    pub fn set(&self, host: &str, port: u16, outcome: Outcome) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((host.to_string(), port), outcome);
    }

    /// How many probes reached `host:port`.
    pub fn count(&self, host: &str, port: u16) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(h, p)| h == host && *p == port)
            .count()
    }

    fn answer(&self, host: &str, port: u16) -> Outcome {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((host.to_string(), port));
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(host.to_string(), port))
            .cloned()
            .unwrap_or_else(|| {
                Outcome::Failure(format!("dial tcp {host}:{port}: connection refused"))
            })
    }
}

impl Prober for FakeProber {
    fn http_get<'a>(&'a self, t: &'a HttpTarget, _timeout: Duration) -> ProbeFuture<'a> {
        Box::pin(async move { self.answer(&t.host, t.port) })
    }

    fn tcp<'a>(&'a self, host: &'a str, port: u16, _timeout: Duration) -> ProbeFuture<'a> {
        Box::pin(async move { self.answer(host, port) })
    }

    fn grpc<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        _service: &'a str,
        _timeout: Duration,
    ) -> ProbeFuture<'a> {
        Box::pin(async move { self.answer(host, port) })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// How to run one probe, resolved from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Http(HttpTarget),
    Tcp {
        host: String,
        port: u16,
    },
    Grpc {
        host: String,
        port: u16,
        service: String,
    },
}

/// A container port by number or by the name the container gives it.
pub fn resolve_port(v: &IntOrString, c: &Container) -> Result<u16, String> {
    match v {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a named port of container {}", c.name)),
    }
}

/// An httpGet handler (probe or lifecycle hook) resolved against the container and pod IP.
pub fn http_target(h: &HTTPGetAction, c: &Container, pod_ip: &str) -> Result<HttpTarget, String> {
    Ok(HttpTarget {
        https: h.scheme.as_deref() == Some("HTTPS"),
        host: h
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| pod_ip.to_string()),
        port: resolve_port(&h.port, c)?,
        path: h.path.clone().unwrap_or_else(|| "/".into()),
        headers: h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect(),
    })
}

/// Resolves the probe's handler against the container's ports and the pod IP. An error names
/// what is wrong (a named port the container does not declare).
pub fn action(p: &Probe, c: &Container, pod_ip: &str) -> Result<Action, String> {
    let port = |v: &IntOrString| resolve_port(v, c);
    if let Some(e) = &p.exec {
        return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        return Ok(Action::Http(http_target(h, c, pod_ip)?));
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(Action::Tcp {
            host: t
                .host
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: port(&t.port)?,
        });
    }
    if let Some(g) = &p.grpc {
        return Ok(Action::Grpc {
            host: pod_ip.to_string(),
            port: u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?,
            service: g.service.clone().unwrap_or_default(),
        });
    }
    Err("probe has no handler".into())
}

/// The current verdict of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Pass,
    Fail,
}

/// The timing and thresholds of one probe of one running container.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub kind: Kind,
    pub period: Duration,
    pub timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    pub verdict: Verdict,
    /// When the next probe is due.
    pub next: Instant,
    /// The last failure's message (for the Unhealthy event).
    pub last_message: String,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

impl Tracker {
    /// A tracker for a container that started at `started`.
    pub fn new(kind: Kind, p: &Probe, started: Instant) -> Tracker {
        Tracker {
            kind,
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            // Liveness and startup need one success by Kubernetes' validation.
            success_threshold: u32::try_from(p.success_threshold.unwrap_or(1).max(1)).unwrap_or(1),
            failure_threshold: u32::try_from(p.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3),
            successes: 0,
            failures: 0,
            verdict: match kind {
                Kind::Liveness => Verdict::Pass,
                Kind::Readiness => Verdict::Fail,
                Kind::Startup => Verdict::Unknown,
            },
            next: started + secs(p.initial_delay_seconds, 0),
            last_message: String::new(),
        }
    }

    /// Records one probe's outcome at `now`; returns whether the verdict changed.
    pub fn observe(&mut self, outcome: &Outcome, now: Instant) -> bool {
        self.next = now + self.period;
        let before = self.verdict;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.success_threshold {
                    self.verdict = Verdict::Pass;
                }
            }
            Outcome::Failure(msg) => {
                self.successes = 0;
                self.failures += 1;
                self.last_message = msg.clone();
                if self.failures >= self.failure_threshold {
                    self.verdict = Verdict::Fail;
                }
            }
        }
        self.verdict != before
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use serde_json::json;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_and_timing() {
        let t0 = Instant::now();
        let p = probe(
            json!({"httpGet": {"port": 80}, "initialDelaySeconds": 5, "periodSeconds": 2,
            "failureThreshold": 2, "successThreshold": 2}),
        );
        let mut r = Tracker::new(Kind::Readiness, &p, t0);
        assert_eq!(r.next, t0 + Duration::from_secs(5));
        assert_eq!(r.verdict, Verdict::Fail, "readiness starts failing");
        assert!(
            !r.observe(&Outcome::Success, t0),
            "one success is not enough"
        );
        assert!(r.observe(&Outcome::Success, t0));
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.next, t0 + Duration::from_secs(2));
        let f = Outcome::Failure("x".into());
        assert!(!r.observe(&f, t0));
        assert!(
            !r.observe(&Outcome::Success, t0),
            "a success resets the failure count"
        );
        assert!(!r.observe(&f, t0));
        assert!(r.observe(&f, t0));
        assert_eq!(r.verdict, Verdict::Fail);
        let l = Tracker::new(Kind::Liveness, &p, t0);
        assert_eq!(l.verdict, Verdict::Pass, "liveness starts passing");
    }

    #[test]
    fn named_ports_and_hosts_resolve() {
        let c: Container = serde_json::from_value(json!({"name": "web",
            "ports": [{"name": "http", "containerPort": 8080}]}))
        .expect("container");
        let p = probe(json!({"httpGet": {"port": "http", "path": "/healthz",
            "httpHeaders": [{"name": "X-A", "value": "1"}]}}));
        let Ok(Action::Http(t)) = action(&p, &c, "10.88.1.5") else {
            panic!("http action");
        };
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("10.88.1.5", 8080, "/healthz")
        );
        assert_eq!(t.headers, vec![("X-A".to_string(), "1".to_string())]);
        let bad = probe(json!({"tcpSocket": {"port": "metrics"}}));
        let err = action(&bad, &c, "10.88.1.5").expect_err("unknown named port");
        assert!(err.contains("metrics"), "{err}");
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_code() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for code in [200, 503] {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        let t = HttpTarget {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: vec![],
        };
        let d = Duration::from_secs(2);
        assert_eq!(NetProber.http_get(&t, d).await, Outcome::Success);
        let Outcome::Failure(m) = NetProber.http_get(&t, d).await else {
            panic!("503 fails");
        };
        assert!(m.contains("503"), "{m}");
        let Outcome::Failure(m) = NetProber.tcp("127.0.0.1", 1, d).await else {
            panic!("closed port fails");
        };
        assert!(m.contains("127.0.0.1:1"), "{m}");
    }
}
