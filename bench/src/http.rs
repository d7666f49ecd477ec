//! The `http` scenario: HTTP load from wrk (Debian's) straight to a backend, through Rudder's
//! Ingress (the release `rudder-proxy`), and through HAProxy configured for the same backend, in
//! one run, so each hop's cost is a ratio against the same direct figure.
//!
//! The backend is nginx serving one small static file on loopback (a separate process, as a pod
//! would be). Rudder's side is a real API server holding a headless Service, an EndpointSlice
//! naming the backend and an Ingress for one host; the proxy learns it through its informers as
//! in a cluster. The proxy runs with its nftables table of its own (`rudder-bench-http`), which
//! holds no Service rule here (the Service is headless) and is removed at the end. Everything
//! listens on 127.0.0.1 only and every process dies with its guard.
//!
//! Not measured yet: the ClusterIP hop (the kernel and userspace planes need a network namespace
//! of their own to stay off the uplink) and the time from a pod turning ready to its first
//! proxied connection.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rudder_client::conn::kind_ref;
use rudder_proto as pb;
use serde_json::json;

use crate::procs;

const NS: &str = "default";
const HOST: &str = "bench.test";
const TABLE: &str = "rudder-bench-http";

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Seconds of load per target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Open connections wrk keeps.
    #[arg(long, default_value_t = 64)]
    pub connections: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u64,
    /// The rudder-proxy binary (default: next to this binary).
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    #[arg(long, default_value = "wrk")]
    pub wrk_bin: String,
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: String,
    #[arg(long, default_value = "nginx")]
    pub nginx_bin: String,
}

/// What wrk reported for one target.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

#[derive(Debug, Clone, Default)]
pub struct HttpFigures {
    pub direct: Load,
    pub ingress: Load,
    pub haproxy: Load,
    pub seconds: u64,
    pub connections: u64,
}

impl HttpFigures {
    pub fn render(&self) -> String {
        let mut out = format!(
            "HTTP through each hop: wrk, {} connections, {} s each, one nginx backend on loopback\n\n",
            self.connections, self.seconds
        );
        out.push_str(&format!(
            "{:<22} {:>12} {:>10} {:>10} {:>8} {:>12}\n",
            "target", "requests/s", "p50", "p99", "errors", "vs direct"
        ));
        for (name, l) in [
            ("direct to the backend", &self.direct),
            ("Rudder Ingress", &self.ingress),
            ("HAProxy", &self.haproxy),
        ] {
            let ratio = l.requests_per_sec / self.direct.requests_per_sec.max(1e-9);
            out.push_str(&format!(
                "{:<22} {:>12.0} {:>10} {:>10} {:>8} {:>11.2}x\n",
                name,
                l.requests_per_sec,
                fmt_dur(l.p50),
                fmt_dur(l.p99),
                l.errors,
                ratio
            ));
        }
        let thr = self.ingress.requests_per_sec / self.haproxy.requests_per_sec.max(1e-9);
        out.push_str(&format!(
            "\nIngress vs HAProxy: {:.2}x the throughput (target: at least 1.00x), p99 {} vs {} (target: equal or lower): {}\n",
            thr,
            fmt_dur(self.ingress.p99),
            fmt_dur(self.haproxy.p99),
            if thr >= 1.0 && self.ingress.p99 <= self.haproxy.p99 {
                "met"
            } else {
                "MISSED"
            }
        ));
        out
    }
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// A child process killed and reaped on drop.
struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(&log).with_context(|| format!("creating {name}'s log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| {
                format!("starting {name} (is it installed? bench/http.sh installs it)")
            })?;
        Ok(Proc {
            child,
            name: name.to_string(),
            log,
        })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("{} exited ({status}):\n{log}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the proxy's table even when the run fails.
struct TableGuard<'a>(&'a Path);

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0)
            .args(["--cleanup", "--nft-table", TABLE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// One plain HTTP/1.1 GET; the status code, or the error.
async fn get_status(port: u16, host: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))
}

async fn wait_200(
    port: u16,
    host: &str,
    what: &str,
    procs: &mut [&mut Proc],
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(30) {
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        match get_status(port, host).await {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("status {code}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not answer 200 within 30 s (last: {last})")
}

/// Parses wrk's `--latency` report.
pub fn parse_wrk(out: &str) -> anyhow::Result<Load> {
    let mut l = Load::default();
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut parts = t.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("50%"), Some(v)) => l.p50 = parse_wrk_duration(v)?,
                (Some("99%"), Some(v)) => l.p99 = parse_wrk_duration(v)?,
                (Some(p), _) if p.ends_with('%') => {}
                _ => in_dist = false,
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            l.requests_per_sec = v.trim().parse().context("wrk's Requests/sec")?;
        }
        if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            l.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            l.errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if l.requests_per_sec == 0.0 || l.p99.is_zero() {
        bail!("wrk printed no figures:\n{out}");
    }
    Ok(l)
}

fn parse_wrk_duration(v: &str) -> anyhow::Result<Duration> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        bail!("unknown wrk duration {v:?}");
    };
    let n: f64 = num.parse().with_context(|| format!("wrk duration {v:?}"))?;
    Ok(Duration::from_secs_f64(n * scale))
}

fn wrk(a: &HttpArgs, port: u16, host: &str) -> anyhow::Result<Load> {
    let out = Command::new(&a.wrk_bin)
        .args([
            "-t",
            &a.threads.to_string(),
            "-c",
            &a.connections.to_string(),
            "-d",
            &format!("{}s", a.seconds),
            "--latency",
            "-H",
            &format!("Host: {host}"),
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .with_context(|| format!("running {} (bench/http.sh installs it)", a.wrk_bin))?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

async fn create(
    api: &rudder_client::Client,
    api_version: &str,
    kind: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    api.create(pb::CreateRequest {
        kind: Some(kind_ref(api_version, kind)),
        namespace: NS.into(),
        json: Bytes::from(body.to_string()),
        options: None,
    })
    .await
    .with_context(|| format!("creating the {kind}"))?;
    Ok(())
}

pub async fn run(apiserver_bin: &Path, a: &HttpArgs) -> anyhow::Result<HttpFigures> {
    let proxy_bin = match &a.proxy_bin {
        Some(p) => p.clone(),
        None => apiserver_bin.with_file_name("rudder-proxy"),
    };
    let dir = tempfile::Builder::new()
        .prefix("rudder-bench-http-")
        .tempdir()
        .context("creating the scenario's directory")?;

    // The backend: nginx with one small file, keep-alive as any real backend.
    let backend_port = free_port()?;
    std::fs::create_dir_all(dir.path().join("www"))?;
    std::fs::write(
        dir.path().join("www/index.html"),
        "hello from the backend\n",
    )?;
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}/tmp;\n\
           proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           server {{ listen 127.0.0.1:{backend_port}; root {d}/www; }} }}\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf)?;
    let mut nginx = Proc::spawn(
        "nginx",
        Command::new(&a.nginx_bin)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path()),
        dir.path().join("nginx.log"),
    )?;
    wait_200(backend_port, HOST, "nginx", &mut [&mut nginx]).await?;

    // HAProxy for the same backend, with connection reuse as a production setup would have.
    // maxconn 4096 needs ~8k descriptors: a higher one fails where the hard limit is 20,000.
    let haproxy_port = free_port()?;
    let cfg = format!(
        "global\n  maxconn 4096\n  nbthread 1\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\
         frontend fe\n  bind 127.0.0.1:{haproxy_port}\n  default_backend be\n\
         backend be\n  server s1 127.0.0.1:{backend_port}\n"
    );
    std::fs::write(dir.path().join("haproxy.cfg"), cfg)?;
    let mut haproxy = Proc::spawn(
        "haproxy",
        Command::new(&a.haproxy_bin)
            .arg("-db")
            .arg("-f")
            .arg(dir.path().join("haproxy.cfg")),
        dir.path().join("haproxy.log"),
    )?;
    wait_200(haproxy_port, HOST, "HAProxy", &mut [&mut haproxy]).await?;

    // Rudder: an API server holding the Ingress, the proxy serving it.
    let mut server = procs::start_rudder(apiserver_bin, &[])?;
    let client = rudder_client::Client::new(std::slice::from_ref(&server.addr))?;
    {
        let first = client.clone();
        procs::wait_ready(&mut server, Duration::from_secs(20), move || {
            let c = first.clone();
            async move {
                c.health().await?;
                Ok(())
            }
        })
        .await?;
    }
    create(
        &client,
        "v1",
        "Service",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": backend_port}]}}),
    )
    .await?;
    create(
        &client,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "backend-1", "labels": {"kubernetes.io/service-name": "backend"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}]}),
    )
    .await?;
    create(
        &client,
        "networking.k8s.io/v1",
        "Ingress",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "bench"},
            "spec": {"rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "backend", "port": {"number": 80}}}}]}}]}}),
    )
    .await?;
    let ingress_port = free_port()?;
    let _table = TableGuard(&proxy_bin);
    let mut proxy = procs::Component::start(
        "rudder-proxy",
        &proxy_bin,
        &server.addr,
        &[
            "--node-name",
            "bench-node",
            "--nft-table",
            TABLE,
            "--ingress-http-addr",
            &format!("127.0.0.1:{ingress_port}"),
        ],
    )?;
    if let Err(e) = wait_200(ingress_port, HOST, "Rudder's Ingress", &mut []).await {
        bail!("{e:#}\nproxy log:\n{}", proxy.log_tail(20));
    }

    eprintln!("  http: direct");
    let direct = wrk(a, backend_port, HOST)?;
    eprintln!("  http: Rudder Ingress");
    let ingress = wrk(a, ingress_port, HOST)?;
    eprintln!("  http: HAProxy");
    let haproxy_load = wrk(a, haproxy_port, HOST)?;
    nginx.check_alive()?;
    haproxy.check_alive()?;
    proxy.stop();
    Ok(HttpFigures {
        direct,
        ingress,
        haproxy: haproxy_load,
        seconds: a.seconds,
        connections: a.connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.35us  201.11us   9.87ms   90.12%
    Req/Sec    51.2k     2.1k   55.0k    70.00%
  Latency Distribution
     50%  580.00us
     75%  650.00us
     90%  760.00us
     99%    1.42ms
  1018234 requests in 10.00s, 200.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 101823.40
Transfer/sec:     20.00MB
";

    #[test]
    fn reads_wrk_figures() {
        let l = parse_wrk(WRK).unwrap();
        assert!((l.requests_per_sec - 101823.4).abs() < 0.01);
        assert_eq!(l.p50, Duration::from_micros(580));
        assert_eq!(l.p99, Duration::from_micros(1420));
        assert_eq!(l.errors, 8);
    }

    #[test]
    fn wrk_without_figures_is_an_error() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }
}
