//! One module per plugin, each behind the [`crate::framework`] contract, each with unit tests
//! on hand-built snapshots.

pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod podtopologyspread;
pub mod tainttoleration;

#[cfg(test)]
pub(crate) mod testutil {
    //! Hand-built pods and nodes for plugin tests.
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::framework::{FilterPlugin, NodeInfo, PodInfo, PreFilterPlugin, ScorePlugin, Status};

    pub fn pod(spec: Value) -> PodInfo {
        let p = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": spec,
        }))
        .expect("pod");
        PodInfo::new(Arc::new(p))
    }

    pub fn pod_cpu(cpu: &str) -> PodInfo {
        pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}))
    }

    /// A ready node with `cpu`, 4Gi memory, 10Gi storage and 110 pods allocatable.
    pub fn node(name: &str, cpu: &str) -> Value {
        json!({
            "metadata": {"name": name},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "4Gi", "ephemeral-storage": "10Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        })
    }

    pub fn info(v: Value) -> NodeInfo {
        NodeInfo::new(Arc::new(serde_json::from_value(v).expect("node")))
    }

    /// A pod with name, namespace, labels and spec, as the snapshot would hold it.
    pub fn placed_pod(name: &str, ns: &str, labels: Value, spec: Value) -> PodInfo {
        let p = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
        }))
        .expect("pod");
        PodInfo::new(Arc::new(p))
    }

    /// A node labelled with hostname `name` and `zone` (as both `zone` and the well-known
    /// zone key).
    pub fn labelled_node(name: &str, zone: &str) -> NodeInfo {
        let mut n = node(name, "4");
        n["metadata"]["labels"] = json!({
            "kubernetes.io/hostname": name, "zone": zone, "topology.kubernetes.io/zone": zone,
        });
        info(n)
    }

    /// Pre-filters `pod` over `nodes`, then filters each node.
    pub fn run_filter<P: PreFilterPlugin + FilterPlugin>(
        p: &P,
        mut pod: PodInfo,
        nodes: &[NodeInfo],
    ) -> Vec<Status> {
        if let Some(s) = PreFilterPlugin::pre_filter(p, &pod, nodes) {
            pod.state.insert(PreFilterPlugin::name(p), s);
        }
        nodes.iter().map(|n| p.filter(&pod, n)).collect()
    }

    /// Pre-filters `pod` over `nodes`, then scores and normalises every node.
    pub fn run_score<P: PreFilterPlugin + ScorePlugin>(
        p: &P,
        mut pod: PodInfo,
        nodes: &[NodeInfo],
    ) -> Vec<i64> {
        if let Some(s) = PreFilterPlugin::pre_filter(p, &pod, nodes) {
            pod.state.insert(PreFilterPlugin::name(p), s);
        }
        let all: Vec<&NodeInfo> = nodes.iter().collect();
        if let Some(s) = p.pre_score(&pod, &all) {
            pod.state.insert_pre_score(ScorePlugin::name(p), s);
        }
        let mut s: Vec<i64> = nodes.iter().map(|n| p.score(&pod, n)).collect();
        p.normalize(&mut s);
        s
    }
}
