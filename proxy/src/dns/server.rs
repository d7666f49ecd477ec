//! The node's DNS server, over UDP and TCP: names under the cluster domain answered from the
//! current [`Zone`] (authoritative, NXDOMAIN with the zone's SOA for names it does not hold),
//! others forwarded as they are to the upstream servers (the host's, from its resolv.conf),
//! one after the other, each for `upstream_timeout`; with none, or none answering, a SERVFAIL,
//! so a pod's lookup fails fast instead of hanging.
//!
//! Wire format through `hickory-proto`; everything else here is Rudder's.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::zone::{Entry, Lookup, Zone};

/// The zone the server answers from, replaced whole by the sync loop.
pub type SharedZone = Arc<RwLock<Arc<Zone>>>;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// TTL of cluster records (CoreDNS' default is 5 s).
    pub ttl: u32,
}

impl DnsConfig {
    pub fn new(listen: SocketAddr) -> DnsConfig {
        DnsConfig {
            listen,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            ttl: 5,
        }
    }
}

/// The `nameserver` lines of a resolv.conf, as servers on port 53.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn current(zone: &SharedZone) -> Arc<Zone> {
    match zone.read() {
        Ok(z) => Arc::clone(&z),
        Err(p) => Arc::clone(&p.into_inner()),
    }
}

/// Serves until `cancel`. Binding is retried every second until it succeeds (the address may
/// be a bridge that the node agent has not created yet).
pub async fn serve(cfg: DnsConfig, zone: SharedZone, cancel: CancellationToken) {
    let (udp, tcp) = loop {
        match (
            UdpSocket::bind(cfg.listen).await,
            TcpListener::bind(cfg.listen).await,
        ) {
            (Ok(u), Ok(t)) => break (u, t),
            (u, t) => {
                let e = u
                    .err()
                    .or(t.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!(addr = %cfg.listen, error = %e, "cannot listen for DNS yet; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(addr = %cfg.listen, upstreams = ?cfg.upstreams, "serving DNS");
    let udp = Arc::new(udp);
    let cfg = Arc::new(cfg);
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = udp.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                let (q, udp, cfg, zone) = (buf[..n].to_vec(), Arc::clone(&udp), Arc::clone(&cfg), current(&zone));
                tokio::spawn(async move {
                    if let Some(reply) = answer(&q, &zone, &cfg).await {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                });
            }
            r = tcp.accept() => {
                let Ok((stream, _)) = r else { continue };
                let (cfg, zone) = (Arc::clone(&cfg), Arc::clone(&zone));
                tokio::spawn(async move { let _ = serve_tcp(stream, &cfg, &zone).await; });
            }
        }
    }
}

/// DNS over TCP: length-prefixed messages until the client closes.
async fn serve_tcp(
    mut s: tokio::net::TcpStream,
    cfg: &DnsConfig,
    zone: &SharedZone,
) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(Duration::from_secs(10), s.read_u16()).await {
            Ok(Ok(l)) => usize::from(l),
            _ => return Ok(()),
        };
        let mut q = vec![0u8; len];
        s.read_exact(&mut q).await?;
        let Some(reply) = answer(&q, &current(zone), cfg).await else {
            return Ok(());
        };
        let n = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        s.write_u16(n).await?;
        s.write_all(&reply[..usize::from(n)]).await?;
    }
}

/// The reply to one query message (`None` when it cannot be parsed at all).
pub async fn answer(query: &[u8], zone: &Zone, cfg: &DnsConfig) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries.iter().cloned());
    let q = match (
        req.metadata.op_code,
        req.metadata.message_type,
        req.queries.as_slice(),
    ) {
        (OpCode::Query, MessageType::Query, [q]) => q.clone(),
        (OpCode::Query, _, _) => return encode(resp, ResponseCode::FormErr),
        _ => return encode(resp, ResponseCode::NotImp),
    };
    let name = q.name().to_ascii();
    match zone.lookup(&name) {
        Lookup::NotOurs => forward(query, &req, cfg).await,
        Lookup::NxDomain => {
            resp.metadata.authoritative = true;
            resp.authorities.push(soa(zone, cfg.ttl)?);
            encode(resp, ResponseCode::NXDomain)
        }
        Lookup::Found(entry) => {
            resp.metadata.authoritative = true;
            let records = records(q.name(), q.query_type(), &entry, cfg.ttl);
            if records.is_empty() {
                resp.authorities.push(soa(zone, cfg.ttl)?);
            }
            resp.answers.extend(records);
            encode(resp, ResponseCode::NoError)
        }
    }
}

fn records(name: &Name, ty: RecordType, e: &Entry, ttl: u32) -> Vec<Record> {
    let rec = |data: RData| Record::from_rdata(name.clone(), ttl, data);
    // A CNAME answers every type, and its target is the client's to chase.
    if let Some(target) = &e.cname {
        return Name::from_ascii(format!("{target}."))
            .map(|t| vec![rec(RData::CNAME(CNAME(t)))])
            .unwrap_or_default();
    }
    let mut out = Vec::new();
    if matches!(ty, RecordType::A | RecordType::ANY) {
        out.extend(e.a.iter().map(|ip| rec(RData::A(A(*ip)))));
    }
    if matches!(ty, RecordType::SRV | RecordType::ANY) {
        for s in &e.srv {
            if let Ok(target) = Name::from_ascii(format!("{}.", s.target)) {
                out.push(rec(RData::SRV(SRV::new(0, 100, s.port, target))));
            }
        }
    }
    out
}

fn soa(zone: &Zone, ttl: u32) -> Option<Record> {
    let origin = Name::from_ascii(format!("{}.", zone.domain())).ok()?;
    let mname = Name::from_ascii(format!("ns.dns.{}.", zone.domain())).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{}.", zone.domain())).ok()?;
    let data = SOA::new(mname, rname, 1, 7200, 1800, 86400, ttl);
    Some(Record::from_rdata(origin, ttl, RData::SOA(data)))
}

fn encode(mut resp: Message, code: ResponseCode) -> Option<Vec<u8>> {
    resp.metadata.response_code = code;
    resp.to_vec().ok()
}

/// The upstream's reply, as it is; SERVFAIL when no upstream answers.
async fn forward(query: &[u8], req: &Message, cfg: &DnsConfig) -> Option<Vec<u8>> {
    for up in &cfg.upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(cfg.upstream_timeout, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == *up => return Some(buf[..n].to_vec()),
            _ => tracing::debug!(upstream = %up, "no answer from the upstream DNS server"),
        }
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries.iter().cloned());
    encode(resp, ResponseCode::ServFail)
}

#[cfg(test)]
mod tests;
