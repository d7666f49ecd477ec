//! `rudder-scheduler`: parses flags, sets up logging, serves health, schedules until
//! SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rudder_client::clock::RealClock;
use rudder_client::leader::LeaderConfig;
use rudder_client::{Api, Client};
use rudder_scheduler::framework::ScoringStrategy;
use rudder_scheduler::{Config, DEFAULT_SCHEDULER_NAME};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
}

#[derive(Parser)]
#[command(name = "rudder-scheduler", version, about = "Rudder's scheduler")]
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
    /// Pods whose spec.schedulerName is this are ours.
    #[arg(long, default_value = DEFAULT_SCHEDULER_NAME)]
    scheduler_name: String,
    /// How NodeResourcesFit scores: spread pods (least-allocated) or pack them (most-allocated).
    #[arg(long, value_enum, default_value_t = Strategy::LeastAllocated)]
    scoring_strategy: Strategy,
    /// Percentage of nodes to find feasible before scoring (Kubernetes'
    /// percentageOfNodesToScore); 0: adaptive (50% less 1% per 125 nodes, at least 5%, never
    /// fewer than 100 nodes); 100: every node.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    percentage_of_nodes_to_score: u32,
    /// Where `GET /healthz` answers.
    #[arg(long, default_value = "127.0.0.1:10259")]
    health_addr: String,
    /// Run leader election so that only one replica binds.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace and name of the Lease.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
    #[arg(long, default_value = "rudder-scheduler")]
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rudder_client::health::init_logging();
    let args = Args::parse();
    let client = Client::from_credentials_file(&args.server, args.credentials.as_deref())
        .context("cannot use --server or --credentials")?;
    let api: Arc<dyn Api> = Arc::new(client);
    let mut cfg = Config::new(&args.scheduler_name);
    cfg.host = rudder_client::health::hostname();
    cfg.percentage_of_nodes_to_score = args.percentage_of_nodes_to_score;
    cfg.scoring_strategy = match args.scoring_strategy {
        Strategy::LeastAllocated => ScoringStrategy::LeastAllocated,
        Strategy::MostAllocated => ScoringStrategy::MostAllocated,
    };
    if args.leader_elect {
        let identity = format!("rudder-scheduler-{}", uuid::Uuid::new_v4());
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
    let listener = tokio::net::TcpListener::bind(&args.health_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.health_addr))?;
    let cancel = CancellationToken::new();
    let health = tokio::spawn(rudder_scheduler::health::serve(listener, cancel.clone()));
    tracing::info!(health = %args.health_addr, name = %args.scheduler_name, "rudder-scheduler starting");
    let work = tokio::spawn(rudder_scheduler::run(
        api,
        RealClock::shared(),
        cfg,
        cancel.clone(),
    ));
    rudder_client::health::shutdown_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    work.await.context("scheduler task")??;
    let _ = health.await;
    Ok(())
}
