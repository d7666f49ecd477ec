//! The scheduler's cache: the informers' pods and nodes plus the pods this scheduler assumed.
//!
//! A pod counts as placed from the moment the scheduler decides ([`Cache::assume`]), so a burst
//! of pods does not pile onto one node while bindings are in flight; a failed bind is rolled
//! back with [`Cache::forget`]. Assumed pods are reconciled with the watch at every snapshot:
//! once the pod cache shows the pod bound (or gone) the assumption is dropped and the watched
//! object counts instead. Bound pods count whatever their phase, except finished ones.

use std::collections::HashMap;
use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::{Node, Pod};
use rudder_client::cache::Reader;

use crate::framework::{NodeInfo, PodInfo};

/// An immutable view of the cluster for one scheduling cycle: nodes by name, sorted.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Default)]
pub struct Cache {
    /// Pod key → (node, the pod as decided).
    assumed: HashMap<String, (String, PodInfo)>,
}

/// Whether a bound pod still holds its resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.assumed
            .insert(pod.key.clone(), (node.to_string(), pod.clone()));
    }

    pub fn forget(&mut self, key: &str) {
        self.assumed.remove(key);
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains_key(key)
    }

    pub fn assumed_len(&self) -> usize {
        self.assumed.len()
    }

    /// Builds the snapshot from the informers' caches and the assumed pods, dropping the
    /// assumptions the watch has confirmed or made moot.
    pub fn snapshot(&mut self, pods: &Reader, nodes: &Reader) -> Snapshot {
        let mut infos: Vec<NodeInfo> = nodes
            .list()
            .iter()
            .filter_map(|o| match o.typed::<Node>() {
                Ok(n) => Some(NodeInfo::new(n)),
                Err(e) => {
                    tracing::warn!(node = %o.name, error = %e, "undecodable node skipped");
                    None
                }
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let index: HashMap<String, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for o in pods.list() {
            let Ok(p) = o.typed::<Pod>() else { continue };
            let Some(node) = node_name(&p) else { continue };
            if is_terminal(&p) {
                continue;
            }
            if let Some(&i) = index.get(node) {
                infos[i].add_pod(&PodInfo::new(Arc::clone(&p)));
            }
        }
        self.assumed.retain(|key, (node, pod)| {
            let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
            let confirmed_or_gone = match pods.get(ns, name) {
                None => true,
                Some(o) => o.typed::<Pod>().map_or(true, |p| node_name(&p).is_some()),
            };
            if confirmed_or_gone {
                return false;
            }
            if let Some(&i) = index.get(node.as_str()) {
                infos[i].add_pod(pod);
            }
            true
        });
        Snapshot { nodes: infos }
    }
}
