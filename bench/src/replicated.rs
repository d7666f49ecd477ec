//! The `replicated` scenario: write throughput and latency of creates (64 clients, the same
//! 1.5 KB Pod, fsync on) with one master on the local log, one replicated member, and three
//! replicated masters, beside a three-member etcd on the same machine in the same run; then the
//! time from killing the leader to the first write that began after the kill being acknowledged.
//!
//! Every system gets its clients spread round-robin over all members (as etcd's client
//! balancer does); writes to a follower are forwarded to the leader by the follower in both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rudder_client::Client;
use rudder_client::proto as pb;

use crate::etcd::pb as epb;
use crate::measure::{Throughput, closed_loop};
use crate::pod::{self, PodTemplate};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplArgs {
    /// Creates measured per system.
    #[arg(long, default_value_t = 20_000)]
    pub creates: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Connections the clients are spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Leader kills timed.
    #[arg(long, default_value_t = 5)]
    pub failovers: usize,
    /// Measure Rudder only.
    #[arg(long)]
    pub skip_etcd: bool,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// An extra flag for every replicated master (repeat it), e.g.
    /// `--master-arg=--raft-election-timeout-ms=300,400`.
    #[arg(long = "master-arg", allow_hyphen_values = true)]
    pub master_args: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Server processes that die with the guard.
struct Procs {
    children: Vec<Option<Child>>,
    cmds: Vec<Command>,
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Procs {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs[i])?;
        let child = self.cmds[i]
            .stderr(Stdio::from(log))
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", self.cmds[i].get_program()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().map_or(0, |c| c.id())
    }

    fn tail(&self, i: usize) -> String {
        let t = std::fs::read_to_string(&self.logs[i]).unwrap_or_default();
        let l: Vec<_> = t.lines().collect();
        l[l.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// `n` Rudder masters (replicated when `raft`, else one single master); API addresses.
fn rudder_group(
    bin: &Path,
    n: usize,
    raft: bool,
    extra: &[String],
) -> anyhow::Result<(Procs, Vec<String>)> {
    let dir = tempfile::Builder::new()
        .prefix("rudder-bench-repl-")
        .tempdir()?;
    let mut apis = Vec::new();
    let mut rafts = Vec::new();
    for _ in 0..n {
        apis.push(format!("127.0.0.1:{}", free_port()?));
        rafts.push(format!("127.0.0.1:{}", free_port()?));
    }
    let members = rafts
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}={r}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmds = Vec::new();
    let mut logs = Vec::new();
    for i in 0..n {
        let mut c = Command::new(bin);
        c.arg("--data-dir")
            .arg(dir.path().join(format!("m{i}")))
            .args(["--listen", &apis[i]])
            .env("RUST_LOG", "warn,openraft=error");
        if raft {
            c.args(["--raft-id", &(i + 1).to_string()])
                .args(["--raft-listen", &rafts[i]])
                .args(["--raft-members", &members])
                .args(extra);
        }
        cmds.push(c);
        logs.push(dir.path().join(format!("m{i}.log")));
    }
    let mut p = Procs {
        children: (0..n).map(|_| None).collect(),
        cmds,
        logs,
        _dir: dir,
    };
    for i in 0..n {
        p.spawn(i)?;
    }
    Ok((p, apis))
}

fn pods_kind() -> Option<pb::KindRef> {
    Some(pb::KindRef {
        api_version: "v1".into(),
        kind: "Pod".into(),
    })
}

/// Waits until a create goes through (a leader exists and the namespaces are there).
async fn rudder_ready(addrs: &[String], procs: &Procs) -> anyhow::Result<()> {
    let c = Client::new(addrs)?;
    let until = Instant::now() + Duration::from_secs(30);
    let template = PodTemplate::new();
    loop {
        let r = c
            .create(pb::CreateRequest {
                kind: pods_kind(),
                namespace: pod::NAMESPACE.into(),
                json: template.json("warm-up"),
                options: None,
            })
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > until => {
                bail!("Rudder never took a write: {e}; log:\n{}", procs.tail(0))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn leader_index(addrs: &[String]) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        let Ok(c) = Client::new(&[a.as_str()]) else {
            continue;
        };
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.stats()).await
            && s.raft.is_some_and(|r| r.role == "Leader")
        {
            return Some(i);
        }
    }
    None
}

async fn rudder_creates(
    addrs: &[String],
    pid: u32,
    a: &ReplArgs,
    prefix: &'static str,
) -> anyhow::Result<Throughput> {
    let pool: Vec<Client> = (0..a.connections.max(1))
        .map(|i| {
            let mut mine = addrs.to_vec();
            mine.rotate_left(i % addrs.len());
            Client::new(&mine)
        })
        .collect::<Result<_, _>>()?;
    for c in &pool {
        c.health().await.context("warming up")?;
    }
    let pool = Arc::new(pool);
    let template = PodTemplate::new();
    closed_loop(pid, a.clients, 0, a.creates, move |client, i| {
        let c = pool[client % pool.len()].clone();
        let req = pb::CreateRequest {
            kind: pods_kind(),
            namespace: pod::NAMESPACE.into(),
            json: template.json(&pod::name(prefix, i)),
            options: None,
        };
        async move {
            c.create(req).await.context("create")?;
            Ok(())
        }
    })
    .await
}

/// Kills the leader under writes `times` times; each figure is the time from the kill to the
/// first acknowledgement of a write that began after it.
async fn failovers(
    procs: &mut Procs,
    addrs: &[String],
    times: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    for round in 0..times {
        let Some(leader) = leader_index(addrs).await else {
            bail!("no leader before failover {round}");
        };
        let stop = Arc::new(AtomicBool::new(false));
        let first_ack: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let mut mine = addrs.to_vec();
            mine.rotate_left(w % addrs.len());
            let c = Client::new(&mine)?;
            let (stop, first_ack, killed_at) = (stop.clone(), first_ack.clone(), killed_at.clone());
            let template = PodTemplate::new();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let name = format!("f{round}-{w}-{i}");
                    let r = c
                        .create(pb::CreateRequest {
                            kind: pods_kind(),
                            namespace: pod::NAMESPACE.into(),
                            json: template.json(&name),
                            options: None,
                        })
                        .await;
                    i += 1;
                    let kill = *killed_at.lock().unwrap_or_else(|p| p.into_inner());
                    if r.is_ok() && kill.is_some_and(|k| started > k) {
                        let mut f = first_ack.lock().unwrap_or_else(|p| p.into_inner());
                        if f.is_none() {
                            *f = Some(Instant::now());
                        }
                    }
                    if r.is_err() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        procs.kill(leader);
        *killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        let until = t + Duration::from_secs(30);
        let took = loop {
            if let Some(f) = *first_ack.lock().unwrap_or_else(|p| p.into_inner()) {
                break f - t;
            }
            if Instant::now() > until {
                bail!("no write was acknowledged within 30 s of killing the leader");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        eprintln!(
            "  failover {}: {:.0} ms",
            round + 1,
            took.as_secs_f64() * 1000.0
        );
        out.push(took);
        procs.spawn(leader)?;
        // Let it rejoin before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(out)
}

/// A three-member etcd on loopback; client URLs.
fn etcd_group(bin: &str) -> anyhow::Result<(Procs, Vec<String>)> {
    let dir = tempfile::Builder::new()
        .prefix("rudder-bench-etcd3-")
        .tempdir()?;
    let mut clients = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..3 {
        clients.push(format!("http://127.0.0.1:{}", free_port()?));
        peers.push(format!("http://127.0.0.1:{}", free_port()?));
    }
    let cluster = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{i}={p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmds = Vec::new();
    let mut logs = Vec::new();
    for i in 0..3 {
        let mut c = Command::new(bin);
        c.args(["--name", &format!("e{i}")])
            .arg("--insecure-allow-all")
            .arg("--data-dir")
            .arg(dir.path().join(format!("e{i}")))
            .args(["--listen-client-urls", &clients[i]])
            .args(["--advertise-client-urls", &clients[i]])
            .args(["--listen-peer-urls", &peers[i]])
            .args(["--initial-advertise-peer-urls", &peers[i]])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"]);
        cmds.push(c);
        logs.push(dir.path().join(format!("e{i}.log")));
    }
    let mut p = Procs {
        children: (0..3).map(|_| None).collect(),
        cmds,
        logs,
        _dir: dir,
    };
    for i in 0..3 {
        p.spawn(i).map_err(|e| {
            anyhow::anyhow!(
                "{e}. Install etcd with: apt-get update && apt-get install -y etcd-server"
            )
        })?;
    }
    Ok((p, clients))
}

async fn etcd_creates(urls: &[String], pid: u32, a: &ReplArgs) -> anyhow::Result<Throughput> {
    let mut pool = Vec::new();
    for i in 0..a.connections.max(1) {
        let url = &urls[i % urls.len()];
        let until = Instant::now() + Duration::from_secs(30);
        let ch = loop {
            let ch = tonic::transport::Endpoint::from_shared(url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await;
            match ch {
                Ok(ch) => {
                    let mut kv = epb::kv_client::KvClient::new(ch.clone());
                    if kv
                        .put(epb::PutRequest {
                            key: bytes::Bytes::from_static(b"/health"),
                            value: bytes::Bytes::from_static(b"ok"),
                            ..Default::default()
                        })
                        .await
                        .is_ok()
                    {
                        break ch;
                    }
                }
                Err(e) if Instant::now() > until => bail!("etcd at {url}: {e}"),
                Err(_) => {}
            }
            if Instant::now() > until {
                bail!("etcd at {url} never took a put");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        pool.push(ch);
    }
    let pool = Arc::new(pool);
    let template = PodTemplate::new();
    closed_loop(pid, a.clients, 0, a.creates, move |client, i| {
        let mut kv = epb::kv_client::KvClient::new(pool[client % pool.len()].clone());
        let name = pod::name(pod::BULK_PREFIX, i);
        let req = epb::PutRequest {
            key: pod::etcd_key(&name),
            value: template.json(&name),
            ..Default::default()
        };
        async move {
            kv.put(req).await.context("put")?;
            Ok(())
        }
    })
    .await
}

pub struct Figures {
    rows: Vec<(String, Throughput)>,
    failovers: Vec<Duration>,
}

pub async fn run(bin: &Path, a: &ReplArgs) -> anyhow::Result<Figures> {
    let mut rows = Vec::new();
    for (label, n, raft) in [
        ("rudder, 1 master (local log)", 1, false),
        ("rudder, 1 member (raft)", 1, true),
        ("rudder, 3 masters (raft)", 3, true),
    ] {
        eprintln!("  {label}: {} creates, {} clients", a.creates, a.clients);
        let (procs, addrs) = rudder_group(bin, n, raft, &a.master_args)?;
        rudder_ready(&addrs, &procs).await?;
        let leader = if raft {
            leader_index(&addrs).await.unwrap_or(0)
        } else {
            0
        };
        let t = rudder_creates(&addrs, procs.pid(leader), a, pod::BULK_PREFIX)
            .await
            .with_context(|| format!("{label}; log:\n{}", procs.tail(leader)))?;
        rows.push((label.to_string(), t));
    }
    eprintln!(
        "  rudder, 3 masters: {} leader kills under writes",
        a.failovers
    );
    let (mut procs, addrs) = rudder_group(bin, 3, true, &a.master_args)?;
    rudder_ready(&addrs, &procs).await?;
    let fails = failovers(&mut procs, &addrs, a.failovers).await?;
    drop(procs);
    if !a.skip_etcd {
        eprintln!(
            "  etcd, 3 members: {} puts, {} clients",
            a.creates, a.clients
        );
        let (procs, urls) = etcd_group(&a.etcd_bin)?;
        let t = etcd_creates(&urls, procs.pid(0), a)
            .await
            .with_context(|| format!("etcd; log:\n{}", procs.tail(0)))?;
        rows.push(("etcd, 3 members".to_string(), t));
    }
    Ok(Figures {
        rows,
        failovers: fails,
    })
}

impl Figures {
    pub fn render(&self) -> String {
        let mut s = String::from(
            "\nReplicated writes: creates of a 1.5 KB Pod, fsync on, one run on this machine\n\n",
        );
        s += &format!(
            "{:<32} {:>10} {:>9} {:>9}\n",
            "", "creates/s", "p50 ms", "p99 ms"
        );
        for (label, t) in &self.rows {
            s += &format!(
                "{label:<32} {:>10.0} {:>9.2} {:>9.2}\n",
                t.per_sec(),
                t.latency.p50_ms,
                t.latency.p99_ms
            );
        }
        let three = self.rows.iter().find(|(l, _)| l.starts_with("rudder, 3"));
        let etcd = self.rows.iter().find(|(l, _)| l.starts_with("etcd"));
        let mut fails: Vec<f64> = self
            .failovers
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        fails.sort_by(f64::total_cmp);
        s += "\nTargets (three masters):\n";
        if let Some((_, t)) = three {
            let rate = t.per_sec();
            s += &format!(
                "  >= 5,000 creates/s:         {rate:.0} ({})\n",
                if rate >= 5000.0 { "met" } else { "MISSED" }
            );
            if let Some((_, e)) = etcd {
                s += &format!(
                    "  >= etcd's 3-member rate:    {:.2}x etcd ({})\n",
                    rate / e.per_sec().max(1e-9),
                    if rate >= e.per_sec() { "met" } else { "MISSED" }
                );
            }
            s += &format!(
                "  p99 < 50 ms:                {:.2} ms ({})\n",
                t.latency.p99_ms,
                if t.latency.p99_ms < 50.0 {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
        if let (Some(first), Some(worst)) = (fails.first(), fails.last()) {
            let median = fails[fails.len() / 2];
            s += &format!(
                "  failover < 2 s:             leader kill to the first new write acknowledged: min {first:.0} ms, median {median:.0} ms, max {worst:.0} ms over {} kills ({})\n",
                fails.len(),
                if *worst < 2000.0 { "met" } else { "MISSED" }
            );
        }
        s
    }
}
