//! `rudder-node-agent`: parses flags, connects to the engine and the API server, runs the agent
//! until SIGTERM/SIGINT. Pods keep running when the agent stops; a restarted agent adopts them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rudder_api::quantity::parse_quantity;
use rudder_client::clock::RealClock;
use rudder_client::{Api, Client};
use rudder_node_agent::agent::{self, AgentConfig};
use rudder_node_agent::host::{HostFacts, ProcHost};
use rudder_node_agent::node::NodeConfig;
use rudder_node_agent::pod::probes::NetProber;
use rudder_node_agent::runtime::docker::DockerRuntime;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "rudder-node-agent",
    version,
    about = "Rudder's node agent (kubelet)"
)]
struct Args {
    /// This node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
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
    /// Where pod volumes and container files live.
    #[arg(long, default_value = "/var/lib/rudder/node-agent")]
    data_dir: PathBuf,
    /// The node's pod range, e.g. 10.88.1.0/24 (default: the Node's spec.podCIDR, waiting for
    /// the controller-manager's node IPAM to set it).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The engine network pods join, created if missing.
    #[arg(long, default_value = "rudder")]
    network: String,
    /// That network's subnet; it must hold the pod CIDR. Nodes on one host share it.
    #[arg(long, default_value = "10.88.0.0/16")]
    network_subnet: String,
    /// The engine network that keeps the Service range on this host, created if missing.
    #[arg(long, default_value = "rudder-services")]
    service_network: String,
    /// The Service range (the API server's --service-cluster-ip-range); "" for no services
    /// network.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// The DNS server `ClusterFirst` pods use; default: the node's address (where the proxy
    /// serves cluster DNS); "" for none (pods then use the engine's resolver).
    #[arg(long)]
    cluster_dns: Option<String>,
    /// The cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's address (hostIP, InternalIP). Default: the pod network's gateway, which
    /// every pod on this host reaches.
    #[arg(long)]
    address: Option<String>,
    /// Node labels, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Taints registered with the node, `key=value:Effect` or `key:Effect`.
    #[arg(long, value_delimiter = ',')]
    taints: Vec<String>,
    /// CPU kept from pods (e.g. 500m).
    #[arg(long, default_value = "0")]
    reserved_cpu: String,
    /// Memory kept from pods (e.g. 512Mi).
    #[arg(long, default_value = "0")]
    reserved_memory: String,
    #[arg(long, default_value_t = 110)]
    max_pods: i64,
    /// Allow containers with securityContext.privileged.
    #[arg(long, default_value_t = false)]
    allow_privileged: bool,
    /// Docker endpoint (unix:///var/run/docker.sock, tcp://host:port); default: DOCKER_HOST or
    /// the local socket.
    #[arg(long)]
    docker_endpoint: Option<String>,
    /// Seconds between heartbeat Lease renewals.
    #[arg(long, default_value_t = 10)]
    lease_renew_seconds: u64,
    /// Without --pod-cidr: seconds to wait for the controller-manager's node IPAM to set the
    /// Node's spec.podCIDR.
    #[arg(long, default_value_t = 120)]
    pod_cidr_wait_seconds: u64,
    /// Where `GET /healthz` answers.
    #[arg(long, default_value = "127.0.0.1:10248")]
    health_addr: String,
    /// Seconds between refreshes of running pods' ConfigMap, Secret and downward API volumes.
    #[arg(long, default_value_t = 30)]
    volume_refresh_seconds: u64,
    /// Seconds between relists of the engine's containers.
    #[arg(long, default_value_t = 1)]
    relist_seconds: u64,
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for it in items.iter().filter(|s| !s.is_empty()) {
        let (k, v) = it
            .split_once('=')
            .with_context(|| format!("--labels: {it:?} is not key=value"))?;
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

fn parse_taints(items: &[String]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for it in items.iter().filter(|s| !s.is_empty()) {
        let (kv, effect) = it
            .rsplit_once(':')
            .with_context(|| format!("--taints: {it:?} is not key[=value]:Effect"))?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            bail!("--taints: {it:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute");
        }
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        out.push(json!({"key": k, "value": v, "effect": effect}));
    }
    Ok(out)
}

fn quantity(flag: &str, s: &str, milli: bool) -> anyhow::Result<i64> {
    let q = parse_quantity(s).map_err(|e| anyhow::anyhow!("{flag}: {s:?}: {e}"))?;
    let v = if milli { q.milli_value() } else { q.value() };
    i64::try_from(v).with_context(|| format!("{flag}: {s:?} is too large"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rudder_client::health::init_logging();
    let args = Args::parse();
    let node_name = match args.node_name.clone() {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .context("cannot read the host name; pass --node-name")?,
    };
    let subnet = rudder_node_agent::pod::ipam::Cidr::parse(&args.network_subnet)
        .context("--network-subnet")?;
    let address = args
        .address
        .clone()
        .unwrap_or_else(|| std::net::Ipv4Addr::from(u32::from(subnet.base) + 1).to_string());
    if !args.service_cidr.is_empty() {
        rudder_node_agent::pod::ipam::Cidr::parse(&args.service_cidr).context("--service-cidr")?;
    }
    let mut node = NodeConfig::new(&node_name, &address);
    node.labels = parse_labels(&args.labels)?;
    node.taints = parse_taints(&args.taints)?;
    node.pod_cidr = args.pod_cidr.clone();
    node.reserved_cpu_milli = quantity("--reserved-cpu", &args.reserved_cpu, true)?;
    node.reserved_memory = quantity("--reserved-memory", &args.reserved_memory, false)?;
    node.max_pods = args.max_pods;
    node.lease_renew = Duration::from_secs(args.lease_renew_seconds.max(1));
    node.pod_cidr_wait = Duration::from_secs(args.pod_cidr_wait_seconds);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let clock = RealClock::shared();
    let runtime = DockerRuntime::connect(args.docker_endpoint.as_deref(), Arc::clone(&clock))
        .await
        .context("cannot reach the Docker engine")?;
    let client = Client::from_credentials_file(&args.server, args.credentials.as_deref())
        .context("cannot use --server or --credentials")?;
    let api: Arc<dyn Api> = Arc::new(client.clone());
    let facts = HostFacts::read(&args.data_dir);
    let cfg = AgentConfig {
        node,
        data_dir: args.data_dir.clone(),
        network: args.network.clone(),
        network_subnet: subnet.to_string(),
        cluster_dns: match args.cluster_dns.as_deref() {
            None => Some(address.clone()),
            Some("") => None,
            Some(s) => Some(s.to_string()),
        },
        cluster_domain: args.cluster_domain.clone(),
        service_network: (!args.service_cidr.is_empty())
            .then(|| (args.service_network.clone(), args.service_cidr.clone())),
        allow_privileged: args.allow_privileged,
        relist_period: Duration::from_secs(args.relist_seconds.max(1)),
        volume_refresh: Duration::from_secs(args.volume_refresh_seconds.max(1)),
    };
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(&args.health_addr)
        .await
        .with_context(|| format!("cannot listen on --health-addr {}", args.health_addr))?;
    let health = tokio::spawn(rudder_client::health::serve(listener, cancel.clone()));
    tracing::info!(node = %node_name, health = %args.health_addr, "rudder-node-agent starting");
    let deps = agent::Deps {
        api,
        runtime: Arc::new(runtime),
        prober: Arc::new(NetProber),
        host: Arc::new(ProcHost::new(&args.data_dir)),
        facts,
        clock,
        relay: Some(client),
    };
    let mut work = tokio::spawn(agent::run(deps, cfg, cancel.clone()));
    tokio::select! {
        _ = rudder_client::health::shutdown_signal() => {
            tracing::info!("shutting down; pods keep running");
            cancel.cancel();
            work.await.context("agent task")??;
        }
        // The agent ends by itself only on a start-up error.
        r = &mut work => r.context("agent task")??,
    }
    cancel.cancel();
    let _ = health.await;
    Ok(())
}
