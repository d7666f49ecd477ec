//! `rudder-proxy`: parses flags, sets up logging, serves health, keeps the node's data plane in
//! step with Services and EndpointSlices until SIGTERM/SIGINT; serves cluster DNS and Ingress
//! when asked to.

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
use rudder_proxy::ingress::IngressState;
use rudder_proxy::ingress::server::{self, ForwardConfig, Forwarder};
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
    /// Credentials for the API servers (the cluster CA, this component's client certificate
    /// and key): the file the first master writes under its PKI directory.
    #[arg(long, env = "RUDDER_CREDENTIALS")]
    credentials: Option<std::path::PathBuf>,
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
    /// Where Ingress is served over HTTP (IP:port); "" for not at all.
    #[arg(long, default_value = "")]
    ingress_http_addr: String,
    /// Where Ingress is served over HTTPS (IP:port; certificates from the Ingresses' TLS
    /// Secrets, by SNI); "" for not at all.
    #[arg(long, default_value = "")]
    ingress_https_addr: String,
    /// Written into served Ingresses' status.loadBalancer.ingress (the address clients reach
    /// Ingress at); "" for no status.
    #[arg(long, default_value = "")]
    ingress_status_address: String,
    /// Seconds to connect to an Ingress backend's endpoint.
    #[arg(long, default_value_t = 5)]
    ingress_connect_timeout: u64,
    /// Seconds an Ingress backend's endpoint may take to send its response headers.
    #[arg(long, default_value_t = 60)]
    ingress_response_header_timeout: u64,
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

fn listen_addr(flag: &str, value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("{flag} {value:?}: expected IP:port"))
}

/// The Ingress servers the flags ask for, with the state the sync loop keeps current.
fn start_ingress(
    args: &Args,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Arc<IngressState>>> {
    let http = listen_addr("--ingress-http-addr", &args.ingress_http_addr)?;
    let https = listen_addr("--ingress-https-addr", &args.ingress_https_addr)?;
    if http.is_none() && https.is_none() {
        return Ok(None);
    }
    // Rudder links ring only; should another provider come in, ring stays the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = if args.ingress_status_address.is_empty() {
        IngressState::new()
    } else {
        IngressState::with_status_address(args.ingress_status_address.parse().with_context(
            || {
                format!(
                    "--ingress-status-address {:?}: expected an IP address",
                    args.ingress_status_address
                )
            },
        )?)
    };
    let fwd = Arc::new(Forwarder::new(
        Arc::clone(&state),
        ForwardConfig {
            connect_timeout: Duration::from_secs(args.ingress_connect_timeout.max(1)),
            response_header_timeout: Duration::from_secs(
                args.ingress_response_header_timeout.max(1),
            ),
        },
    ));
    if let Some(addr) = http {
        let (fwd, cancel) = (Arc::clone(&fwd), cancel.clone());
        tokio::spawn(async move {
            if let Some(l) = server::bind(addr, "Ingress HTTP", &cancel).await {
                server::serve_http(l, fwd, cancel).await;
            }
        });
    }
    if let Some(addr) = https {
        let (state, cancel) = (Arc::clone(&state), cancel.clone());
        tokio::spawn(async move {
            if let Some(l) = server::bind(addr, "Ingress HTTPS", &cancel).await
                && let Err(e) = server::serve_https(l, state, fwd, cancel).await
            {
                tracing::error!(error = %e, "cannot serve Ingress over HTTPS");
            }
        });
    }
    Ok(Some(state))
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
    let client = Client::from_credentials_file(&args.server, args.credentials.as_deref())
        .context("cannot use --server or --credentials")?;
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
    cfg.ingress = start_ingress(&args, &cancel)?;
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
