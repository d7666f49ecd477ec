//! `rudder-controller-manager`: parses flags, sets up logging, serves health, runs the
//! controllers until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rudder_client::clock::RealClock;
use rudder_client::leader::LeaderConfig;
use rudder_client::{Api, Client};
use rudder_controller_manager::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "rudder-controller-manager",
    version,
    about = "Rudder's controller-manager"
)]
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
    /// Controllers to run: `*` for all, a name to add one, `-name` to remove one.
    #[arg(long, default_value = "*", value_delimiter = ',')]
    controllers: Vec<String>,
    /// Objects each controller reconciles at once.
    #[arg(long, default_value_t = 5)]
    concurrent_syncs: usize,
    /// Where `GET /healthz` answers.
    #[arg(long, default_value = "127.0.0.1:10257")]
    health_addr: String,
    /// Run leader election so that only one replica acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace and name of the Lease.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    #[arg(long, default_value = "rudder-controller-manager")]
    leader_elect_resource_name: String,
    /// Seconds others wait without a renewal before taking over.
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration: u64,
    /// Seconds the leader keeps leading without a successful renewal.
    #[arg(long, default_value_t = 10)]
    leader_elect_renew_deadline: u64,
    /// Seconds between attempts to acquire or renew.
    #[arg(long, default_value_t = 2)]
    leader_elect_retry_period: u64,
    /// How often the node lifecycle controller computes zone states (`5s`, `500ms`, `1m`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// How long a node may go without a heartbeat before it is marked Unknown.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// The same for a node that never reported a Ready condition.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    node_startup_grace_period: Duration,
    /// Nodes per second that get a NoExecute taint (and so have their pods evicted) in a
    /// healthy zone.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// The same in a partially disrupted zone larger than --large-cluster-size-threshold.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// A partially disrupted zone of at most this many nodes gets no NoExecute taints.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// Share of not-ready nodes (more than two) that makes a zone partially disrupted.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// Terminated pods kept before the oldest are deleted (0: never).
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// Give every node without spec.podCIDR a range of --cluster-cidr.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// The range node pod CIDRs are cut from, e.g. 10.88.0.0/16.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Most endpoints the EndpointSlice controller puts in one slice (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_endpoints_per_slice: u16,
    /// Addresses for Services of type LoadBalancer (a CIDR; addresses routed to the nodes);
    /// without it no LoadBalancer Service gets an address.
    #[arg(long)]
    load_balancer_pool: Option<rudder_controller_manager::controllers::loadbalancer::Pool>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rudder_client::health::init_logging();
    let args = Args::parse();
    let client = Client::from_credentials_file(&args.server, args.credentials.as_deref())
        .context("cannot use --server or --credentials")?;
    let api: Arc<dyn Api> = Arc::new(client);
    let mut cfg = Config {
        controllers: args.controllers.clone(),
        workers: args.concurrent_syncs,
        max_endpoints_per_slice: usize::from(args.max_endpoints_per_slice),
        load_balancer_pool: args.load_balancer_pool,
        ..Config::default()
    };
    cfg.host = rudder_client::health::hostname();
    cfg.nodes = node_controllers(&args)?;
    if args.leader_elect {
        let identity = format!("rudder-controller-manager-{}", uuid::Uuid::new_v4());
        let mut lc = LeaderConfig::new(
            &args.leader_elect_resource_namespace,
            &args.leader_elect_resource_name,
            &identity,
        );
        lc.lease_duration = Duration::from_secs(args.leader_elect_lease_duration);
        lc.renew_deadline = Duration::from_secs(args.leader_elect_renew_deadline);
        lc.retry_period = Duration::from_secs(args.leader_elect_retry_period);
        cfg.leader = Some(lc);
    }
    // Refuse a bad --controllers before serving anything.
    rudder_controller_manager::runner::select(
        &rudder_controller_manager::controllers::all(),
        &cfg.controllers,
    )
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&args.health_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.health_addr))?;
    let cancel = CancellationToken::new();
    let health = tokio::spawn(rudder_controller_manager::health::serve(
        listener,
        cancel.clone(),
    ));
    tracing::info!(health = %args.health_addr, "rudder-controller-manager starting");
    let work = tokio::spawn(rudder_controller_manager::run(
        api,
        RealClock::shared(),
        cfg,
        cancel.clone(),
    ));
    rudder_client::health::shutdown_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    work.await.context("controller-manager task")??;
    let _ = health.await;
    Ok(())
}

/// A Kubernetes-style duration: `500ms`, `40s`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 40s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// The node controllers' settings from the flags, refusing an unusable IPAM setup.
fn node_controllers(
    args: &Args,
) -> anyhow::Result<rudder_controller_manager::controllers::nodelifecycle::NodeControllers> {
    use rudder_controller_manager::controllers::nodelifecycle::NodeControllers;
    let mut n = NodeControllers::default();
    let l = &mut n.lifecycle;
    l.monitor_period = args.node_monitor_period.max(Duration::from_millis(10));
    l.grace_period = args.node_monitor_grace_period;
    l.startup_grace_period = args.node_startup_grace_period;
    l.eviction_rate = args.node_eviction_rate.max(0.0);
    l.secondary_eviction_rate = args.secondary_node_eviction_rate.max(0.0);
    l.large_cluster_size_threshold = args.large_cluster_size_threshold;
    l.unhealthy_zone_threshold = args.unhealthy_zone_threshold;
    n.podgc.terminated_pod_gc_threshold = args.terminated_pod_gc_threshold;
    n.ipam.allocate_node_cidrs = args.allocate_node_cidrs;
    n.ipam.cluster_cidr = args.cluster_cidr.clone();
    n.ipam.node_cidr_mask_size = args.node_cidr_mask_size;
    if args.allocate_node_cidrs {
        let cidr = args
            .cluster_cidr
            .as_deref()
            .context("--allocate-node-cidrs needs --cluster-cidr")?;
        rudder_controller_manager::controllers::nodeipam::Ranges::new(
            cidr,
            args.node_cidr_mask_size,
        )
        .map_err(anyhow::Error::msg)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubernetes_writes_them() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
