//! Rudder's controller-manager: every workload controller in one process, each in its own
//! module behind one contract, over shared informers, under leader election, as
//! kube-controller-manager.
//!
//! Layout:
//! - [`runner`]: the contract ([`runner::Descriptor`], [`runner::Env`]) and `--controllers`.
//! - [`controllers`]: one module per controller.
//! - [`claim`]: adoption and release of owned objects; [`podwrite`]: pod creations and
//!   deletions with their Events.
//! - [`util`]: pure helpers shared by controllers (readiness, ranking, surge arithmetic, hash).
//! - [`error`]: the error type and the error policy.
//!
//! [`run`] wires them up. See `docs/controller-manager.md`.

pub mod claim;
pub mod controllers;
pub mod error;
pub mod podwrite;
pub mod runner;
pub mod util;

pub use rudder_client::health;

use std::sync::Arc;

use rudder_client::Api;
use rudder_client::clock::SharedClock;
use rudder_client::informer::InformerFactory;
use rudder_client::leader::{LeaderConfig, LeaderElector, LeaderError};
use tokio_util::sync::CancellationToken;

/// How the controller-manager runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--controllers`: `*`, names, `-name`.
    pub controllers: Vec<String>,
    /// Workers per controller.
    pub workers: usize,
    /// Reported as the Events' source host.
    pub host: String,
    /// `None`: run without election (a single replica).
    pub leader: Option<LeaderConfig>,
    /// `--max-endpoints-per-slice`: the EndpointSlice controller's slice size.
    pub max_endpoints_per_slice: usize,
    /// The node controllers' settings (grace periods, eviction rates, pod GC, IPAM).
    pub nodes: controllers::nodelifecycle::NodeControllers,
    /// `--load-balancer-pool`: addresses for LoadBalancer Services (`None`: none are given).
    pub load_balancer_pool: Option<controllers::loadbalancer::Pool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            controllers: vec!["*".into()],
            workers: 5,
            host: String::new(),
            leader: None,
            max_endpoints_per_slice: controllers::endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            nodes: Default::default(),
            load_balancer_pool: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Runs the chosen controllers until `cancel`. With leader election they run only while this
/// replica holds the Lease, and each term starts them afresh over the shared informers.
pub async fn run(
    api: Arc<dyn Api>,
    clock: SharedClock,
    cfg: Config,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let chosen = runner::select(&controllers::all(), &cfg.controllers).map_err(RunError::Config)?;
    let informers = InformerFactory::new(Arc::clone(&api), Arc::clone(&clock));
    informers.start(&cancel);
    let env = runner::Env {
        api: Arc::clone(&api),
        clock: Arc::clone(&clock),
        informers,
        workers: cfg.workers.max(1),
        host: cfg.host.clone(),
        max_endpoints_per_slice: cfg.max_endpoints_per_slice,
        nodes: cfg.nodes.clone(),
        load_balancer_pool: cfg.load_balancer_pool,
    };
    match cfg.leader {
        None => runner::run_all(env, &chosen, cancel).await,
        Some(lc) => {
            let elector = LeaderElector::new(api, lc, clock)?;
            elector
                .run_while_leading(cancel, |term| {
                    let (env, chosen) = (env.clone(), chosen.clone());
                    async move { runner::run_all(env, &chosen, term).await }
                })
                .await;
        }
    }
    Ok(())
}
