//! Rudder's scheduler: watches unscheduled pods and the nodes through the API server and binds
//! each pod to a node with the binding call, as kube-scheduler.
//!
//! Layout:
//! - [`framework`]: the plugin contract (`filter`, `score`, [`framework::Status`] codes), the
//!   resource arithmetic and the [`framework::Profile`] that lists the plugins.
//! - [`plugins`]: one module per plugin.
//! - [`queue`]: active, back-off and unschedulable queues.
//! - [`cache`]: the snapshot of nodes and placed pods, with assumed pods.
//! - [`scheduler`]: the cycle (pop, snapshot, filter, score, assume, bind).
//! - [`health`]: the `/healthz` endpoint.
//!
//! [`run`] wires them to shared informers, optionally under leader election (only the leader
//! binds). See `docs/scheduler.md`.

pub mod cache;
pub mod framework;
pub use rudder_client::health;
pub mod plugins;
pub mod queue;
pub mod scheduler;

use std::sync::Arc;

use rudder_client::Api;
use rudder_client::clock::SharedClock;
use rudder_client::events::EventRecorder;
use rudder_client::informer::InformerFactory;
use rudder_client::leader::{LeaderConfig, LeaderElector, LeaderError};
use tokio_util::sync::CancellationToken;

pub use scheduler::{DEFAULT_SCHEDULER_NAME, Scheduler};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub scheduler_name: String,
    pub scoring_strategy: framework::ScoringStrategy,
    /// Reported as the Events' source host.
    pub host: String,
    /// `None`: schedule without election (a single replica).
    pub leader: Option<LeaderConfig>,
    /// Kubernetes' `percentageOfNodesToScore` (0: adaptive).
    pub percentage_of_nodes_to_score: u32,
}

impl Config {
    pub fn new(scheduler_name: &str) -> Self {
        Config {
            scheduler_name: scheduler_name.to_string(),
            scoring_strategy: framework::ScoringStrategy::default(),
            host: String::new(),
            leader: None,
            percentage_of_nodes_to_score: 0,
        }
    }
}

/// Runs the scheduler until `cancel`. With leader election each term gets a fresh queue and
/// cache over the shared informers, and scheduling stops when the term ends.
pub async fn run(
    api: Arc<dyn Api>,
    clock: SharedClock,
    cfg: Config,
    cancel: CancellationToken,
) -> Result<(), LeaderError> {
    let factory = InformerFactory::new(Arc::clone(&api), Arc::clone(&clock));
    let pods = factory.for_kind("v1", "Pod");
    let nodes = factory.for_kind("v1", "Node");
    factory.start(&cancel);
    let (events, events_task) = EventRecorder::new(
        Arc::clone(&api),
        &cfg.scheduler_name,
        &cfg.host,
        Arc::clone(&clock),
        1024,
    );
    let make = || {
        Scheduler::new(
            Arc::clone(&api),
            framework::Profile::with_strategy(&cfg.scheduler_name, cfg.scoring_strategy),
            pods.clone(),
            nodes.clone(),
            Arc::clone(&clock),
        )
        .with_events(events.clone())
        .with_percentage_of_nodes_to_score(cfg.percentage_of_nodes_to_score)
    };
    match cfg.leader.clone() {
        None => make().run(cancel).await,
        Some(lc) => {
            let elector = LeaderElector::new(Arc::clone(&api), lc, Arc::clone(&clock))?;
            elector
                .run_while_leading(cancel, |term| make().run(term))
                .await;
        }
    }
    // Let the recorder send what is pending, briefly: shutdown must not hang on a dead server.
    drop(events);
    let mut events_task = events_task;
    if tokio::time::timeout(std::time::Duration::from_secs(2), &mut events_task)
        .await
        .is_err()
    {
        events_task.abort();
    }
    Ok(())
}
