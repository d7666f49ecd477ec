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
    /// Node name → its NodeInfo with nothing placed, for one resourceVersion of the node.
    /// Decoding a node and parsing its allocatable once per version instead of once per cycle
    /// (the profile at 5,000 nodes put 38% of the scheduler's time there).
    node_bases: HashMap<String, Memo<NodeInfo>>,
    /// Pod key → what the snapshot takes from that version of the pod: `None` when it does not
    /// count (unbound or finished), else its node and PodInfo.
    /// Keyed by namespace, then name, so that a lookup allocates nothing.
    placed_pods: HashMap<String, HashMap<String, Memo<Placed>>>,
    /// Snapshots taken so far: entries not seen in the latest one are dropped.
    generation: u64,
}

/// A pod's node and PodInfo when it counts as placed (bound, not finished).
type Placed = Option<(String, PodInfo)>;

/// A value derived from one resourceVersion of a cached object.
#[derive(Debug)]
struct Memo<T> {
    resource_version: u64,
    seen: u64,
    value: T,
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
    /// assumptions the watch has confirmed or made moot. Per-object work (decoding, requests,
    /// allocatable) is redone only for objects whose resourceVersion changed.
    pub fn snapshot(&mut self, pods: &Reader, nodes: &Reader) -> Snapshot {
        self.generation += 1;
        let generation = self.generation;
        // Sorted as pointers, not as NodeInfos: moving thousands of large structs in a sort
        // showed as memmove in the profile.
        let mut listed = nodes.list();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        let mut infos: Vec<NodeInfo> = Vec::with_capacity(listed.len());
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(listed.len());
        for o in &listed {
            index.insert(o.name.as_str(), infos.len());
            let memo = self.node_bases.get_mut(&o.name);
            if let Some(m) = memo
                && m.resource_version == o.resource_version
            {
                m.seen = generation;
                infos.push(m.value.clone());
                continue;
            }
            match o.typed::<Node>() {
                Ok(n) => {
                    let base = NodeInfo::new(n);
                    infos.push(base.clone());
                    self.node_bases.insert(
                        o.name.clone(),
                        Memo {
                            resource_version: o.resource_version,
                            seen: generation,
                            value: base,
                        },
                    );
                }
                Err(e) => {
                    index.remove(o.name.as_str());
                    tracing::warn!(node = %o.name, error = %e, "undecodable node skipped");
                }
            }
        }
        self.node_bases.retain(|_, m| m.seen == generation);
        for o in pods.list() {
            if !self.placed_pods.contains_key(&o.namespace) {
                self.placed_pods.insert(o.namespace.clone(), HashMap::new());
            }
            let Some(ns) = self.placed_pods.get_mut(&o.namespace) else {
                continue;
            };
            let memo = match ns.get_mut(o.name.as_str()) {
                Some(m) if m.resource_version == o.resource_version => m,
                _ => {
                    let value = o.typed::<Pod>().ok().and_then(|p| {
                        let node = node_name(&p)?.to_string();
                        (!is_terminal(&p)).then(|| (node, PodInfo::new(Arc::clone(&p))))
                    });
                    let m = Memo {
                        resource_version: o.resource_version,
                        seen: generation,
                        value,
                    };
                    ns.entry(o.name.clone()).insert_entry(m).into_mut()
                }
            };
            memo.seen = generation;
            if let Some((node, info)) = &memo.value
                && let Some(&i) = index.get(node.as_str())
            {
                infos[i].add_pod(info);
            }
        }
        self.placed_pods.retain(|_, ns| {
            ns.retain(|_, m| m.seen == generation);
            !ns.is_empty()
        });
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
