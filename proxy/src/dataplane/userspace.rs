//! The userspace data plane: one tokio listener per TCP Service port, which the kernel reaches
//! through nftables `redirect` rules (kube-proxy's old `userspace` mode), copying each
//! connection to an endpoint it picks.
//!
//! - The table (`ip <table>`) redirects `daddr . dport` of cluster and external IPs, and node
//!   ports on local non-loopback addresses, to the listener's port on the node, in one
//!   transaction per sync; ports without endpoints are rejected as in the kernel plane.
//! - A new connection goes to the next endpoint in turn (ClientIP affinity first: a client seen
//!   within the timeout goes back to its endpoint); an endpoint that refuses the connection is
//!   skipped for the next one, so a just-removed pod costs a retry, not an error.
//! - Bytes are copied with 64 KiB buffers each way until both sides close.
//! - Endpoints change under open connections without touching them; a Service port that goes
//!   stops its listener, and its open connections finish on their own.
//!
//! Limits against the kernel plane: every proxied connection comes from the node (the client's
//! address is not kept), cluster and external traffic share one listener and so the cluster
//! endpoints (Local traffic policies are not honoured), UDP and SCTP ports are not proxied
//! (logged), and each byte crosses user space twice.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::nft::{NftRunner, delete_table, table_header};
use super::{DataPlane, DataPlaneError};
use crate::services::{Backend, Desired, Protocol, ServicePort};

/// Buffer per direction, as crates.md chose for the L4 proxy.
const COPY_BUFFER: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What one listener forwards to, swapped by each sync.
#[derive(Default)]
struct Targets {
    backends: Vec<Backend>,
    affinity: Option<Duration>,
    next: usize,
    clients: HashMap<Ipv4Addr, (Backend, Instant)>,
}

impl Targets {
    /// The endpoints to try for `client`, in order.
    fn order(&mut self, client: Option<Ipv4Addr>) -> Vec<Backend> {
        let n = self.backends.len();
        if n == 0 {
            return Vec::new();
        }
        if let (Some(timeout), Some(ip)) = (self.affinity, client)
            && let Some((b, seen)) = self.clients.get(&ip)
            && seen.elapsed() < timeout
            && self.backends.contains(b)
        {
            let first = *b;
            let mut out = vec![first];
            out.extend(self.backends.iter().copied().filter(|x| *x != first));
            return out;
        }
        let start = self.next % n;
        self.next = self.next.wrapping_add(1);
        (0..n).map(|i| self.backends[(start + i) % n]).collect()
    }

    fn remember(&mut self, client: Option<Ipv4Addr>, b: Backend) {
        if let (Some(_), Some(ip)) = (self.affinity, client) {
            self.clients.insert(ip, (b, Instant::now()));
        }
    }
}

struct Listener {
    port: u16,
    targets: Arc<Mutex<Targets>>,
    stop: CancellationToken,
}

/// The userspace data plane.
pub struct Userspace {
    table: String,
    runner: Box<dyn NftRunner>,
    /// Where listeners bind (0.0.0.0: every address the redirect may pick).
    bind: Ipv4Addr,
    listeners: BTreeMap<String, Listener>,
    first: bool,
}

impl Userspace {
    pub fn new(table: &str, runner: Box<dyn NftRunner>) -> Userspace {
        Userspace {
            table: table.to_string(),
            runner,
            bind: Ipv4Addr::UNSPECIFIED,
            listeners: BTreeMap::new(),
            first: true,
        }
    }

    /// The local port serving `id` (`namespace/name:port`), for tests and logs.
    pub fn listener_port(&self, id: &str) -> Option<u16> {
        self.listeners.get(id).map(|l| l.port)
    }

    async fn ensure_listener(&mut self, p: &ServicePort) -> Result<u16, DataPlaneError> {
        let id = p.id();
        let backends = p.cluster_backends.clone();
        if let Some(l) = self.listeners.get(&id) {
            let mut t = lock(&l.targets);
            t.backends = backends;
            t.affinity = p.affinity;
            return Ok(l.port);
        }
        let listener = TcpListener::bind(SocketAddr::from((self.bind, 0))).await?;
        let port = listener.local_addr()?.port();
        let targets = Arc::new(Mutex::new(Targets {
            backends,
            affinity: p.affinity,
            ..Default::default()
        }));
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            Arc::clone(&targets),
            stop.clone(),
            id.clone(),
        ));
        self.listeners.insert(
            id,
            Listener {
                port,
                targets,
                stop,
            },
        );
        Ok(port)
    }
}

fn lock(m: &Mutex<Targets>) -> std::sync::MutexGuard<'_, Targets> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(
    listener: TcpListener,
    targets: Arc<Mutex<Targets>>,
    stop: CancellationToken,
    id: String,
) {
    loop {
        let (conn, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(service = %id, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let targets = Arc::clone(&targets);
        let id = id.clone();
        tokio::spawn(async move {
            let client = match peer.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            };
            let order = lock(&targets).order(client);
            for b in order {
                let to = SocketAddr::from((b.ip, b.port));
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
                    Ok(Ok(mut up)) => {
                        lock(&targets).remember(client, b);
                        let _ = up.set_nodelay(true);
                        let _ = conn.set_nodelay(true);
                        let mut conn = conn;
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut conn,
                            &mut up,
                            COPY_BUFFER,
                            COPY_BUFFER,
                        )
                        .await;
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(service = %id, endpoint = %to, error = %e, "endpoint refused; trying the next")
                    }
                    Err(_) => {
                        tracing::debug!(service = %id, endpoint = %to, "endpoint did not answer; trying the next")
                    }
                }
            }
            // No endpoint took it: the client sees the connection closed.
        });
    }
}

/// The redirect table for `ports` (id → listener port).
fn render(table: &str, first: bool, desired: &Desired, ports: &BTreeMap<String, u16>) -> String {
    let t = table;
    let mut s = String::new();
    s.push_str(&table_header(t, first));
    for (name, hook) in [
        (
            "nat-prerouting",
            "type nat hook prerouting priority -100; policy accept;",
        ),
        (
            "nat-output",
            "type nat hook output priority -100; policy accept;",
        ),
        (
            "filter-input",
            "type filter hook input priority -110; policy accept;",
        ),
        (
            "filter-output",
            "type filter hook output priority -110; policy accept;",
        ),
    ] {
        let _ = writeln!(
            s,
            "add chain ip {t} {name} {{ {hook} }}\nflush chain ip {t} {name}"
        );
    }
    for p in &desired.ports {
        if p.protocol != Protocol::Tcp {
            continue;
        }
        let mut frontends: Vec<String> = p
            .cluster_ips
            .iter()
            .chain(&p.external_ips)
            .map(|ip| format!("ip daddr {ip} tcp dport {}", p.port))
            .collect();
        if let Some(np) = p.node_port {
            frontends.push(format!(
                "fib daddr type local ip daddr != 127.0.0.0/8 tcp dport {np}"
            ));
        }
        match ports.get(&p.id()) {
            Some(local) => {
                for f in &frontends {
                    for chain in ["nat-prerouting", "nat-output"] {
                        let _ = writeln!(s, "add rule ip {t} {chain} {f} redirect to :{local}");
                    }
                }
            }
            None => {
                for f in &frontends {
                    for chain in ["filter-input", "filter-output"] {
                        let _ = writeln!(s, "add rule ip {t} {chain} ct state new {f} reject");
                    }
                }
            }
        }
    }
    s
}

impl DataPlane for Userspace {
    fn sync<'a>(&'a mut self, desired: &'a Desired) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(async move {
            let mut ports = BTreeMap::new();
            for p in &desired.ports {
                if p.protocol != Protocol::Tcp {
                    tracing::debug!(service = %p.id(), "the userspace data plane proxies TCP only");
                    continue;
                }
                if !p.cluster_backends.is_empty() {
                    ports.insert(p.id(), self.ensure_listener(p).await?);
                }
            }
            // Listeners no longer wanted stop accepting; their connections run out.
            let gone: Vec<String> = self
                .listeners
                .keys()
                .filter(|k| !ports.contains_key(*k))
                .cloned()
                .collect();
            for id in gone {
                if let Some(l) = self.listeners.remove(&id) {
                    l.stop.cancel();
                }
            }
            let script = render(&self.table, self.first, desired, &ports);
            match self.runner.run(&script).await {
                Ok(()) => {
                    self.first = false;
                    Ok(())
                }
                Err(reason) => {
                    self.first = true;
                    Err(DataPlaneError::Apply {
                        plane: "userspace (nftables redirects)",
                        reason,
                    })
                }
            }
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), DataPlaneError>> {
        Box::pin(async move {
            for (_, l) in std::mem::take(&mut self.listeners) {
                l.stop.cancel();
            }
            let t = &self.table;
            self.first = true;
            self.runner
                .run(&delete_table(t))
                .await
                .map_err(|reason| DataPlaneError::Apply {
                    plane: "userspace (nftables redirects)",
                    reason,
                })
        })
    }
}

#[cfg(test)]
mod tests;
