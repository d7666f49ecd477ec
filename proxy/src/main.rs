//! `rudder-proxy`: parses flags, sets up logging, serves health, keeps the node's data plane in
//! step with Services and EndpointSlices until SIGTERM/SIGINT.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rudder_client::clock::RealClock;
use rudder_client::{Api, Client};
use rudder_proxy::dataplane::DataPlane;
use rudder_proxy::dataplane::nft::{Nft, NftCommand, NftOptions};
use rudder_proxy::dataplane::userspace::Userspace;
use rudder_proxy::dns::server::{DnsConfig, SharedZone, upstreams_from_resolv_conf};
use rudder_proxy::dns::zone::Zone;
use rudder_proxy::sync::{Config, SyncStatus};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// The kernel NATs each connection (nftables).
    Nftables,
    /// nftables redirects to listeners in this process, which copy the bytes.
    Userspace,
}

#[derive(Parser)]
#[command(name = "rudder-proxy", version, about = "Rudder's service proxy")]
struct Args {
    /// API server address(es), comma separated.
    #[arg(
        long,
        env = "RUDDER_SERVER",
        default_value = "127.0.0.1:6443",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// This node's name (Local traffic policies); the host name by default.
    #[arg(long)]
    node_name: Option<String>,
    /// The pod range: cluster-IP traffic from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The data plane.
    #[arg(long, value_enum, default_value_t = Mode::Nftables)]
    proxy_mode: Mode,
    /// The nftables table the proxy owns.
    #[arg(long, default_value = "rudder-proxy")]
    nft_table: String,
    /// Least milliseconds between two syncs.
    #[arg(long, default_value_t = 100)]
    min_sync_period_ms: u64,
    /// Seconds between full re-applies.
    #[arg(long, default_value_t = 30)]
    sync_period: u64,
    /// Where `GET /healthz` answers.
    #[arg(long, default_value = "127.0.0.1:10256")]
    health_addr: String,
    /// Where cluster DNS answers (UDP and TCP); "" for none. Pods reach it as their node's
    /// DNS server (the node agent's --cluster-dns).
    #[arg(long, default_value = "")]
    dns_addr: String,
    /// The cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Servers for names outside the cluster domain, comma separated; default: the host's
    /// resolv.conf; "none" for none (such names then fail at once).
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// Remove the proxy's rules and exit.
    #[arg(long)]
    cleanup: bool,
}

fn parse_cidr(s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .with_context(|| format!("--cluster-cidr {s:?}: expected a.b.c.d/len"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .with_context(|| format!("--cluster-cidr {s:?}: the prefix length must be 0 to 32"))?;
    let ip = ip
        .parse()
        .with_context(|| format!("--cluster-cidr {s:?}: {ip:?} is not an IPv4 address"))?;
    Ok((ip, len))
}

/// `--dns-upstream`: the given servers (port 53 unless given), "none", or the host's.
fn upstreams(given: &[String]) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    if given.iter().any(|g| g == "none") {
        return Ok(Vec::new());
    }
    if given.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        return Ok(upstreams_from_resolv_conf(&text));
    }
    given
        .iter()
        .map(|g| {
            g.parse()
                .or_else(|_| g.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .with_context(|| format!("--dns-upstream {g:?}: expected IP or IP:port"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rudder_client::health::init_logging();
    let args = Args::parse();
    let opts = NftOptions {
        table: args.nft_table.clone(),
        cluster_cidr: args.cluster_cidr.as_deref().map(parse_cidr).transpose()?,
    };
    NftCommand::default().probe().await.map_err(|e| {
        anyhow::anyhow!(
            "the nftables data plane needs the nft command and CAP_NET_ADMIN (run as root): {e}"
        )
    })?;
    let mut plane: Box<dyn DataPlane> = match args.proxy_mode {
        Mode::Nftables => Box::new(Nft::new(opts, Box::new(NftCommand::default()))),
        Mode::Userspace => Box::new(Userspace::new(
            &args.nft_table,
            Box::new(NftCommand::default()),
        )),
    };
    if args.cleanup {
        plane.cleanup().await.context("removing the rules")?;
        return Ok(());
    }
    let client = Client::new(&args.server).context("invalid --server")?;
    let api: Arc<dyn Api> = Arc::new(client);
    let node = args
        .node_name
        .clone()
        .unwrap_or_else(rudder_client::health::hostname);
    let mut cfg = Config::new(&node);
    cfg.min_sync_interval = Duration::from_millis(args.min_sync_period_ms.max(1));
    cfg.sync_period = Duration::from_secs(args.sync_period.max(1));
    cfg.cluster_domain = args.cluster_domain.clone();

    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(&args.health_addr)
        .await
        .with_context(|| format!("cannot listen on --health-addr {}", args.health_addr))?;
    tokio::spawn(rudder_client::health::serve(listener, cancel.clone()));
    let zone = if args.dns_addr.is_empty() {
        None
    } else {
        let listen = args
            .dns_addr
            .parse()
            .with_context(|| format!("--dns-addr {:?}: expected IP:port", args.dns_addr))?;
        let mut dns = DnsConfig::new(listen);
        dns.upstreams = upstreams(&args.dns_upstream)?;
        let zone: SharedZone = Arc::new(RwLock::new(Arc::new(Zone::build(
            &args.cluster_domain,
            &[],
            &[],
        ))));
        tokio::spawn(rudder_proxy::dns::server::serve(
            dns,
            Arc::clone(&zone),
            cancel.clone(),
        ));
        Some(zone)
    };
    tracing::info!(node = %node, health = %args.health_addr, "rudder-proxy starting");
    let task = tokio::spawn(rudder_proxy::sync::run(
        api,
        RealClock::shared(),
        cfg,
        plane,
        zone,
        Arc::new(SyncStatus::default()),
        cancel.clone(),
    ));
    rudder_client::health::shutdown_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    let _ = task.await;
    Ok(())
}
