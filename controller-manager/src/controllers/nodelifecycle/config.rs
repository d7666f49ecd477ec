//! Settings of the node controllers (node lifecycle, taint eviction, pod GC, node IPAM), with
//! kube-controller-manager's defaults; `rudder-controller-manager` sets them from the flags of
//! the same names.

use std::time::Duration;

/// Everything the node controllers read, carried to them through [`crate::runner::Env`].
#[derive(Debug, Clone, Default)]
pub struct NodeControllers {
    pub lifecycle: LifecycleConfig,
    pub podgc: PodGcConfig,
    pub ipam: IpamConfig,
}

/// The node lifecycle controller's settings.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// `--node-monitor-period`: how often zone states are computed, and a node without news is
    /// looked at again.
    pub monitor_period: Duration,
    /// `--node-monitor-grace-period`: how long a node may go without a heartbeat (Lease
    /// renewal or Ready heartbeat) before its conditions turn Unknown.
    pub grace_period: Duration,
    /// `--node-startup-grace-period`: the same for a node that never posted a Ready condition.
    pub startup_grace_period: Duration,
    /// `--node-eviction-rate`: nodes per second that get a NoExecute taint in a healthy zone.
    pub eviction_rate: f64,
    /// `--secondary-node-eviction-rate`: the same in a partially disrupted zone larger than
    /// `large_cluster_size_threshold`.
    pub secondary_eviction_rate: f64,
    /// `--large-cluster-size-threshold`: a partially disrupted zone with at most this many
    /// nodes gets no NoExecute taints at all.
    pub large_cluster_size_threshold: usize,
    /// `--unhealthy-zone-threshold`: the share of not-ready nodes (more than two) that makes a
    /// zone partially disrupted.
    pub unhealthy_zone_threshold: f64,
    /// How often the rate-limited NoExecute tainting runs (Kubernetes' `NodeEvictionPeriod`).
    pub tainting_period: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            startup_grace_period: Duration::from_secs(60),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
            tainting_period: Duration::from_millis(100),
        }
    }
}

/// The pod garbage collector's settings.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// `--terminated-pod-gc-threshold`: terminated pods kept before the oldest are deleted;
    /// 0 turns that collection off.
    pub terminated_pod_gc_threshold: usize,
    /// How often it looks (Kubernetes' `gcCheckPeriod`).
    pub period: Duration,
    /// How long a pod's node must stay missing before the pod goes (Kubernetes'
    /// `quarantineTime`), so a node that is being re-created keeps its pods.
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_gc_threshold: 12_500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

/// Node IPAM: `--allocate-node-cidrs`, `--cluster-cidr`, `--node-cidr-mask-size`.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub allocate_node_cidrs: bool,
    /// The range node CIDRs are cut from, e.g. `10.88.0.0/16` (IPv4).
    pub cluster_cidr: Option<String>,
    pub node_cidr_mask_size: u8,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            allocate_node_cidrs: false,
            cluster_cidr: None,
            node_cidr_mask_size: 24,
        }
    }
}
