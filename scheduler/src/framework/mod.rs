//! The plugin contract: small synchronous functions over an immutable snapshot, at Kubernetes'
//! extension points (filter, score so far). No plugin does I/O; the cycle in
//! [`crate::scheduler`] calls them and alone talks to the API server.
//!
//! A filter's [`Status`] code tells the queue how to retry, as Kubernetes' framework does:
//! `Unschedulable` may be fixed by a change elsewhere in the cluster (preemption, a pod leaving),
//! `UnschedulableAndUnresolvable` only by a change of the node itself, `Error` is a bug or bad
//! input and is retried with back-off.

pub use rudder_api::resources;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::{Node, Pod};

pub use resources::Resources;

/// How a plugin judged a pod on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    Unschedulable,
    UnschedulableAndUnresolvable,
    Error,
}

/// A plugin's verdict, with the reasons Kubernetes prints ("Insufficient cpu").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Status {
    pub fn success() -> Self {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
        }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
        }
    }
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
        }
    }
    pub fn error(reason: impl Into<String>) -> Self {
        Status {
            code: Code::Error,
            reasons: vec![reason.into()],
        }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// The pod being scheduled, with what the plugins derive from it once per cycle.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// Effective requests as Kubernetes computes them (see [`resources::pod_requests`]).
    pub requests: Resources,
    /// Host ports its containers (and sidecars) ask for.
    pub host_ports: Vec<HostPort>,
    /// What the pre-filter plugins computed from the whole snapshot this cycle.
    pub state: CycleState,
}

/// Per-cycle plugin state, keyed by plugin name, as Kubernetes' `CycleState`: written by
/// [`Profile::pre_filter`] before any filter runs and by the pre-scores in
/// [`Profile::run_scores`] before any score, then only read.
#[derive(Clone, Default)]
pub struct CycleState {
    pre_filter: HashMap<&'static str, Arc<dyn Any + Send + Sync>>,
    pre_score: HashMap<&'static str, Arc<dyn Any + Send + Sync>>,
}

impl CycleState {
    pub fn insert(&mut self, plugin: &'static str, v: Arc<dyn Any + Send + Sync>) {
        self.pre_filter.insert(plugin, v);
    }
    pub fn get<T: 'static>(&self, plugin: &str) -> Option<&T> {
        self.pre_filter
            .get(plugin)
            .and_then(|v| v.downcast_ref::<T>())
    }
    pub fn insert_pre_score(&mut self, plugin: &'static str, v: Arc<dyn Any + Send + Sync>) {
        self.pre_score.insert(plugin, v);
    }
    pub fn get_pre_score<T: 'static>(&self, plugin: &str) -> Option<&T> {
        self.pre_score
            .get(plugin)
            .and_then(|v| v.downcast_ref::<T>())
    }
}

impl fmt::Debug for CycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CycleState")
            .field("pre_filter", &self.pre_filter.keys())
            .field("pre_score", &self.pre_score.keys())
            .finish()
    }
}

/// One host port a pod occupies: `hostIP` (empty: every address), protocol, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Kubernetes' rule: same protocol and port, and the addresses overlap (equal, or either
    /// is the wildcard).
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || wild(&self.ip) || wild(&o.ip))
    }
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| HostPort {
            ip: p.host_ip.clone().unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        let requests = resources::pod_requests(&pod);
        let host_ports = host_ports(&pod);
        PodInfo {
            pod,
            key,
            requests,
            host_ports,
            state: CycleState::default(),
        }
    }
}

/// A node in the snapshot with what is placed on it: bound pods (running or not yet) and the
/// pods this scheduler assumed but whose binding the cache has not seen yet.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    /// `status.allocatable` (capacity when absent), in scheduler units.
    pub allocatable: Resources,
    /// Sum of the placed pods' effective requests.
    pub requested: Resources,
    /// Sum of the placed pods' requests with Kubernetes' non-zero defaults, for scoring.
    pub non_zero_requested: Resources,
    /// Keys of the pods placed here.
    pub pods: Vec<String>,
    /// The pods placed here (same order as `pods`), for plugins that look at other pods.
    pub placed: Vec<Arc<Pod>>,
    /// Host ports the placed pods occupy.
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let allocatable = resources::node_allocatable(&node);
        NodeInfo {
            node,
            name,
            allocatable,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
            placed: Vec::new(),
            used_ports: Vec::new(),
        }
    }

    /// Counts `pod` (its requests and host ports) as placed here.
    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.requests.non_zero());
        self.pods.push(pod.key.clone());
        self.placed.push(Arc::clone(&pod.pod));
        self.used_ports.extend(pod.host_ports.iter().cloned());
    }
}

/// A pre-filter: computes, once per cycle and from every node, what its filter and score
/// need (Kubernetes' PreFilter and PreScore in one); the result lands in [`PodInfo::state`].
pub trait PreFilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_filter(&self, pod: &PodInfo, nodes: &[NodeInfo]) -> Option<Arc<dyn Any + Send + Sync>>;
}

/// A filter: can `pod` run on `node`?
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Highest score a plugin gives, as Kubernetes' `MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// A score: how good is `node` for `pod`, in `0..=MAX_NODE_SCORE` once normalised.
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Once per cycle before any score, over the feasible nodes (Kubernetes' PreScore); the
    /// result is in `pod.state.get_pre_score(name)` for `score`. Default: nothing.
    fn pre_score(
        &self,
        _pod: &PodInfo,
        _feasible: &[&NodeInfo],
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }
    /// Rescales the scores of all feasible nodes (same order as given); default: none.
    fn normalize(&self, _scores: &mut [i64]) {}
    fn weight(&self) -> i64 {
        1
    }
}

/// How NodeResourcesFit scores: spread (Kubernetes' default) or bin packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    #[default]
    LeastAllocated,
    MostAllocated,
}

/// The plugins a profile runs, in order.
pub struct Profile {
    pub scheduler_name: String,
    pub pre_filters: Vec<Box<dyn PreFilterPlugin>>,
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<Box<dyn ScorePlugin>>,
}

impl Profile {
    /// Kubernetes' default plugins that exist here, in its order, with its score weights.
    pub fn default_profile(scheduler_name: &str) -> Self {
        Self::with_strategy(scheduler_name, ScoringStrategy::default())
    }

    pub fn with_strategy(scheduler_name: &str, strategy: ScoringStrategy) -> Self {
        use crate::plugins::*;
        let fit_score: Box<dyn ScorePlugin> = match strategy {
            ScoringStrategy::LeastAllocated => Box::new(noderesources::LeastAllocated),
            ScoringStrategy::MostAllocated => Box::new(noderesources::MostAllocated),
        };
        Profile {
            scheduler_name: scheduler_name.to_string(),
            pre_filters: vec![
                Box::new(interpodaffinity::InterPodAffinity),
                Box::new(podtopologyspread::PodTopologySpread),
            ],
            filters: vec![
                Box::new(nodeunschedulable::NodeUnschedulable),
                Box::new(nodename::NodeName),
                Box::new(tainttoleration::TaintToleration),
                Box::new(nodeaffinity::NodeAffinity),
                Box::new(nodeports::NodePorts),
                Box::new(noderesources::Fit),
                Box::new(podtopologyspread::PodTopologySpread),
                Box::new(interpodaffinity::InterPodAffinity),
            ],
            scores: vec![
                Box::new(tainttoleration::TaintToleration),
                Box::new(nodeaffinity::NodeAffinity),
                fit_score,
                Box::new(noderesources::BalancedAllocation),
                Box::new(podtopologyspread::PodTopologySpread),
                Box::new(interpodaffinity::InterPodAffinity),
            ],
        }
    }

    /// Runs every pre-filter over the snapshot, storing their state in `pod`.
    pub fn pre_filter(&self, pod: &mut PodInfo, nodes: &[NodeInfo]) {
        for p in &self.pre_filters {
            if let Some(v) = p.pre_filter(pod, nodes) {
                pod.state.insert(p.name(), v);
            }
        }
    }

    /// Runs every filter; the first failure decides (as Kubernetes, which stops at the first).
    pub fn run_filters(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        for f in &self.filters {
            let s = f.filter(pod, node);
            if !s.is_success() {
                return s;
            }
        }
        Status::success()
    }

    /// Weighted, normalised total score per feasible node (same order as `nodes`).
    pub fn run_scores(&self, pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
        let mut total = vec![0i64; nodes.len()];
        let mut pod = pod.clone();
        for p in &self.scores {
            if let Some(v) = p.pre_score(&pod, nodes) {
                pod.state.insert_pre_score(p.name(), v);
            }
        }
        let pod = &pod;
        for p in &self.scores {
            let mut s: Vec<i64> = nodes.iter().map(|n| p.score(pod, n)).collect();
            p.normalize(&mut s);
            for (t, v) in total.iter_mut().zip(s) {
                *t += v * p.weight();
            }
        }
        total
    }
}
