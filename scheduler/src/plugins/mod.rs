//! One module per plugin, each behind the [`crate::framework`] contract, each with unit tests
//! on hand-built snapshots.

pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod tainttoleration;

#[cfg(test)]
pub(crate) mod testutil {
    //! Hand-built pods and nodes for plugin tests.
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::framework::{NodeInfo, PodInfo};

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
}
