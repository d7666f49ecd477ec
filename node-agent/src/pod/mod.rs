//! One worker per pod: the pod's state machine over the runtime, its status, probes and
//! restart back-off.
//!
//! - [`worker`]: the per-pod task (pending → initialising → running → terminating → done),
//!   level-triggered: each pass compares the desired pod with what the runtime shows and takes
//!   the next steps, then sleeps until the pod changes, its containers change, or a timer (probe,
//!   back-off) is due.
//! - [`lifecycle`]: the pure decisions (restart or not, the phase).
//! - [`terminate`]: hooks, the stop order and the grace period.
//! - [`status`], [`probes`], [`backoff`], [`images`], [`env`], [`ipam`]: the parts.

pub mod backoff;
pub mod env;
mod grpc_health;
pub mod images;
pub mod ipam;
pub mod lifecycle;
pub mod probes;
pub mod spec;
pub mod status;
pub mod terminate;
pub mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudder_client::Api;
use rudder_client::clock::SharedClock;
use rudder_client::events::EventRecorder;

use crate::objects::ObjectSource;
use crate::runtime::ContainerRuntime;
use crate::volumes::Volumes;

/// What every pod worker shares.
pub struct PodContext {
    pub api: Arc<dyn Api>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn probes::Prober>,
    pub objects: Arc<dyn ObjectSource>,
    pub volumes: Volumes,
    pub clock: SharedClock,
    pub events: EventRecorder,
    pub node_name: String,
    /// The node's address, reported as the pods' hostIP.
    pub host_ip: String,
    /// The engine network pods join.
    pub network: String,
    /// The DNS server of `ClusterFirst` pods, and the cluster domain for their search paths.
    pub cluster_dns: Option<String>,
    pub cluster_domain: String,
    pub ipam: Mutex<ipam::Ipam>,
    /// Whether `securityContext.privileged: true` is allowed.
    pub allow_privileged: bool,
    /// Where per-container files (termination logs) live: `<data-dir>/pods`.
    pub pods_dir: PathBuf,
    /// Node allocatable, for resourceFieldRef defaults (millicores, bytes).
    pub allocatable_cpu_milli: i64,
    pub allocatable_memory: i64,
    /// How often running pods' configMap, secret and downward API volumes are refreshed.
    pub volume_refresh: Duration,
}
