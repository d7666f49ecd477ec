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
    /// Most endpoints the EndpointSlice controller puts in one slice (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_endpoints_per_slice: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rudder_client::health::init_logging();
    let args = Args::parse();
    let client = Client::new(&args.server).context("invalid --server")?;
    let api: Arc<dyn Api> = Arc::new(client);
    let mut cfg = Config {
        controllers: args.controllers.clone(),
        workers: args.concurrent_syncs,
        max_endpoints_per_slice: usize::from(args.max_endpoints_per_slice),
        ..Config::default()
    };
    cfg.host = rudder_client::health::hostname();
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
