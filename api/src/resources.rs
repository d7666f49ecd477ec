//! Resource arithmetic as Kubernetes' scheduler and kubelet do it: a pod's effective requests (the max of
//! its init containers against the sum of its containers, restartable init containers
//! (sidecars) counted with both, plus the pod overhead) and a node's allocatable.
//!
//! Units: CPU in millicores, memory and ephemeral storage in bytes, pods as a count. A quantity
//! that does not parse counts as zero (the API server validated it when the pod was written).

use std::collections::BTreeMap;

use crate::quantity::parse_quantity;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Kubernetes' defaults for a container that requests nothing, used for scoring only, so that
/// pods without requests still spread (`DefaultMilliCPURequest`, `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Pods: allocatable count on a node; always 0 for a pod's requests (each pod counts one).
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
    }

    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.pods = self.pods.max(o.pods);
    }

    /// CPU and memory with Kubernetes' defaults where zero (for scoring).
    pub fn non_zero(&self) -> Resources {
        Resources {
            milli_cpu: if self.milli_cpu == 0 {
                DEFAULT_MILLI_CPU_REQUEST
            } else {
                self.milli_cpu
            },
            memory: if self.memory == 0 {
                DEFAULT_MEMORY_REQUEST
            } else {
                self.memory
            },
            ..*self
        }
    }

    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        let Some(list) = list else {
            return r;
        };
        for (name, q) in list {
            let Ok(v) = parse_quantity(&q.0) else {
                continue;
            };
            let clamp = |x: i128| x.clamp(0, i64::MAX as i128) as i64;
            match name.as_str() {
                "cpu" => r.milli_cpu = clamp(v.milli_value()),
                "memory" => r.memory = clamp(v.value()),
                "ephemeral-storage" => r.ephemeral_storage = clamp(v.value()),
                "pods" => r.pods = clamp(v.value()),
                _ => {}
            }
        }
        r
    }
}

/// A container's requests; a resource with a limit but no request requests its limit, as the
/// API server's defaulting makes it.
pub fn container_requests(c: &Container) -> Resources {
    let res = c.resources.as_ref();
    let req = Resources::from_list(res.and_then(|r| r.requests.as_ref()));
    let lim = Resources::from_list(res.and_then(|r| r.limits.as_ref()));
    let has = |name: &str| {
        res.and_then(|r| r.requests.as_ref())
            .is_some_and(|m| m.contains_key(name))
    };
    Resources {
        milli_cpu: if has("cpu") {
            req.milli_cpu
        } else {
            lim.milli_cpu
        },
        memory: if has("memory") {
            req.memory
        } else {
            lim.memory
        },
        ephemeral_storage: if has("ephemeral-storage") {
            req.ephemeral_storage
        } else {
            lim.ephemeral_storage
        },
        pods: 0,
    }
}

/// The pod's effective requests (Kubernetes' `PodRequests`): regular containers and sidecars
/// run together; each ordinary init container runs alone beside the sidecars started before
/// it; the larger of the two phases counts, plus the overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let phase = if c.restart_policy.as_deref() == Some("Always") {
            total.add(&r);
            sidecars.add(&r);
            sidecars
        } else {
            let mut p = r;
            p.add(&sidecars);
            p
        };
        init_peak.max_with(&phase);
    }
    total.max_with(&init_peak);
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total.pods = 0;
    total
}

/// `status.allocatable`, falling back to `status.capacity` per resource when absent.
pub fn node_allocatable(node: &Node) -> Resources {
    let st = node.status.as_ref();
    let alloc = st.and_then(|s| s.allocatable.as_ref());
    let cap = st.and_then(|s| s.capacity.as_ref());
    let mut merged: BTreeMap<String, Quantity> = cap.cloned().unwrap_or_default();
    for (k, v) in alloc.into_iter().flatten() {
        merged.insert(k.clone(), v.clone());
    }
    Resources::from_list(Some(&merged))
}

/// A container's limits (zero where none is set).
pub fn container_limits(c: &Container) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
}

/// The pod's quality-of-service class, as Kubernetes derives it from CPU and memory:
/// `Guaranteed` when every container limits both and requests what it limits, `BestEffort` when
/// no container requests or limits either, `Burstable` otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let res = c.resources.as_ref();
        let names = |m: Option<&BTreeMap<String, Quantity>>| {
            m.map(|m| m.keys().filter(|k| *k == "cpu" || *k == "memory").count())
                .unwrap_or(0)
        };
        let (nreq, nlim) = (
            names(res.and_then(|r| r.requests.as_ref())),
            names(res.and_then(|r| r.limits.as_ref())),
        );
        any |= nreq + nlim > 0;
        let (req, lim) = (container_requests(c), container_limits(c));
        if nlim < 2 || req.milli_cpu != lim.milli_cpu || req.memory != lim.memory {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn sum_of_containers_against_max_of_init_containers() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1"}}},
                {"name": "i2", "resources": {"requests": {"memory": "512Mi"}}}
            ]
        }}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 1 << 30);
    }

    #[test]
    fn sidecars_add_to_containers_and_to_later_init_containers() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "300m"}}},
                {"name": "init", "resources": {"requests": {"cpu": "500m"}}}
            ],
            "overhead": {"cpu": "10m"}
        }}));
        // init phase: 500m + 300m sidecar = 800m; run phase: 100m + 300m = 400m; + overhead.
        assert_eq!(pod_requests(&p).milli_cpu, 810);
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "2", "memory": "1Mi"}, "requests": {"memory": "1Ki"}}}
        ]}}));
        let r = pod_requests(&p);
        assert_eq!((r.milli_cpu, r.memory), (2000, 1024));
    }

    #[test]
    fn allocatable_falls_back_to_capacity() {
        let n: Node = serde_json::from_value(json!({"status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3500m"}
        }}))
        .expect("node");
        let a = node_allocatable(&n);
        assert_eq!((a.milli_cpu, a.memory, a.pods), (3500, 8 << 30, 110));
    }
    #[test]
    fn qos_classes() {
        let g = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
        ]}}));
        assert_eq!(qos_class(&g), "Guaranteed", "requests default to limits");
        let b = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}
        ]}}));
        assert_eq!(qos_class(&b), "Burstable");
        let only_cpu = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}}}
        ]}}));
        assert_eq!(qos_class(&only_cpu), "Burstable");
        let e = pod(json!({"spec": {"containers": [{"name": "a"}],
            "initContainers": [{"name": "i", "resources": {"requests": {"ephemeral-storage": "1Gi"}}}]}}));
        assert_eq!(qos_class(&e), "BestEffort");
    }
}
