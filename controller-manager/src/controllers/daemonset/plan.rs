//! The DaemonSet's decisions, pure: which nodes need a pod and which pods go
//! ([`manage`], Kubernetes' `podsShouldBeOnNode`), what a rolling update replaces next
//! ([`rolling`], `rollingUpdate` with and without surge), and the status counts ([`counts`]).
//!
//! Pods are grouped by the node they are for ([`by_node`]); a pod being deleted still holds its
//! node (no second pod is placed there until it is gone), except one that has also finished.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rudder_client::cache::CachedObject;
use serde_json::Value;

use super::Ds;
use super::nodes::{Fit, should_run, target_node};
use crate::util::intstr::scaled;
use crate::util::pods::{is_available, is_ready, phase};
use crate::util::revision::POD_REVISION_LABEL;
use crate::util::str_at;

/// The label with the DaemonSet's template generation a pod was made from.
pub const GENERATION_LABEL: &str = "pod-template-generation";

pub type ByNode = BTreeMap<String, Vec<Arc<CachedObject>>>;

/// What one pass does: place pods on nodes, delete pods, tell the user, look again later.
#[derive(Debug, Default)]
pub struct Plan {
    pub create_on: Vec<String>,
    pub delete: Vec<Arc<CachedObject>>,
    /// FailedDaemonPod warnings.
    pub failed: Vec<String>,
    /// A failed pod left in place for its back-off: look again then.
    pub retry_after: Option<Duration>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create_on.is_empty() && self.delete.is_empty()
    }
}

/// The DaemonSet's pods by the node they are for; finished pods being deleted are left out.
pub fn by_node(pods: &[Arc<CachedObject>]) -> ByNode {
    let mut m = ByNode::new();
    for p in pods {
        let done = matches!(phase(&p.value), "Succeeded" | "Failed");
        if p.is_deleting() && done {
            continue;
        }
        if let Some(n) = target_node(&p.value) {
            m.entry(n).or_default().push(Arc::clone(p));
        }
    }
    m
}

/// Scheduled first, then oldest, then by name (`podByCreationTimestampAndPhase`).
pub fn sort_oldest_first(pods: &mut [Arc<CachedObject>]) {
    pods.sort_by(|a, b| {
        let unscheduled = |p: &CachedObject| str_at(&p.value, "/spec/nodeName").is_empty();
        unscheduled(a)
            .cmp(&unscheduled(b))
            .then_with(|| {
                str_at(&a.value, "/metadata/creationTimestamp")
                    .cmp(str_at(&b.value, "/metadata/creationTimestamp"))
            })
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Whether the pod is of the current template: its revision hash or, for pods made before
/// revisions, its template generation (`IsPodUpdated`).
pub fn is_updated(pod: &CachedObject, hash: &str, generation: i64) -> bool {
    let label = |k: &str| {
        pod.value
            .pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (!hash.is_empty() && label(POD_REVISION_LABEL) == hash)
        || label(GENERATION_LABEL) == generation.to_string()
}

/// Whether the update strategy lets a new pod start beside an old one (`AllowsSurge`).
pub fn allows_surge(ds: &Ds) -> bool {
    ds.rolling
        .as_ref()
        .is_some_and(|(surge, _)| scaled(surge.as_ref(), 1, true, 0).is_ok_and(|s| s > 0))
}

fn node_name(n: &CachedObject) -> &str {
    &n.name
}

/// Nodes needing a pod and pods to delete (`manage`): a pod for each eligible node without one;
/// the pods of nodes where none may continue; failed pods (within their back-off, which
/// `backoff(node)` grants or refuses with the delay left) and succeeded ones; all but the
/// oldest of several, or with surge, the old pod once its replacement is available; and pods
/// for nodes that no longer exist.
pub fn manage(
    ds: &Ds,
    nodes: &[Arc<CachedObject>],
    pods: &ByNode,
    hash: &str,
    now: Timestamp,
    backoff: &mut dyn FnMut(&str) -> Result<(), Duration>,
) -> Plan {
    let mut plan = Plan::default();
    let surge = allows_surge(ds);
    for node in nodes {
        let name = node_name(node);
        let Fit {
            should_run,
            should_continue,
        } = should_run(&node.value, &ds.template);
        let here = pods.get(name).map(Vec::as_slice).unwrap_or_default();
        if should_run && here.is_empty() {
            plan.create_on.push(name.to_string());
        } else if should_continue {
            let mut running = Vec::new();
            for p in here {
                if p.is_deleting() {
                    continue;
                }
                match phase(&p.value) {
                    "Failed" => match backoff(name) {
                        Ok(()) => {
                            plan.failed.push(format!(
                                "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                                p.namespace, p.name
                            ));
                            plan.delete.push(Arc::clone(p));
                        }
                        Err(wait) => {
                            plan.retry_after = Some(plan.retry_after.map_or(wait, |w| w.min(wait)));
                        }
                    },
                    "Succeeded" => plan.delete.push(Arc::clone(p)),
                    _ => running.push(Arc::clone(p)),
                }
            }
            if running.len() > 1 {
                sort_oldest_first(&mut running);
                if surge {
                    plan.delete
                        .extend(surplus_with_surge(ds, &running, hash, now));
                } else {
                    plan.delete.extend(running.into_iter().skip(1));
                }
            }
        } else {
            plan.delete
                .extend(here.iter().filter(|p| !p.is_deleting()).cloned());
        }
    }
    // Pods for nodes that are gone: no node agent will run them.
    for (name, here) in pods {
        if !nodes.iter().any(|n| node_name(n) == name) {
            plan.delete
                .extend(here.iter().filter(|p| !p.is_deleting()).cloned());
        }
    }
    plan
}

/// With surge, a node keeps its oldest new pod and its oldest old pod, and the old one goes as
/// soon as it is not ready or the new one is available.
fn surplus_with_surge(
    ds: &Ds,
    running: &[Arc<CachedObject>],
    hash: &str,
    now: Timestamp,
) -> Vec<Arc<CachedObject>> {
    let (mut newest, mut oldest, mut out) = (None, None, Vec::new());
    for p in running {
        let slot = if is_updated(p, hash, ds.generation) {
            &mut newest
        } else {
            &mut oldest
        };
        if slot.is_none() {
            *slot = Some(Arc::clone(p));
        } else {
            out.push(Arc::clone(p));
        }
    }
    if let (Some(new), Some(old)) = (newest, oldest)
        && (!is_ready(&old.value) || is_available(&new.value, ds.min_ready, now))
    {
        out.push(old);
    }
    out
}

/// The new and old pod on a node, ignoring pods being deleted; `None` when there are several
/// of either (`findUpdatedPodsOnNode`): the manage pass sorts that node out first.
type Pair = (Option<Arc<CachedObject>>, Option<Arc<CachedObject>>);

fn pair(pods: &[Arc<CachedObject>], hash: &str, generation: i64) -> Option<Pair> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !p.is_deleting()) {
        let slot = if is_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(Arc::clone(p));
    }
    Some((new, old))
}

/// `maxSurge` and `maxUnavailable` against the number of nodes that should run the pod, both
/// rounded up as Kubernetes does for DaemonSets; both zero means one may be unavailable.
pub fn surge_and_unavailable(ds: &Ds, desired: i64) -> Result<(i64, i64), String> {
    let (s, u) = match &ds.rolling {
        Some((s, u)) => (s.as_ref(), u.as_ref()),
        None => (None, None),
    };
    let surge = scaled(s, desired, true, 0).map_err(|e| format!("maxSurge: {e}"))?;
    let mut unavailable =
        scaled(u, desired, true, 1).map_err(|e| format!("maxUnavailable: {e}"))?;
    if desired > 0 && surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// What a rolling update does next (`rollingUpdate`). Without surge: delete old pods, their
/// unavailable ones first, while no more than `maxUnavailable` eligible nodes lack an available
/// new pod (the manage pass then places the new ones). With surge: start new pods beside old
/// ones on up to `maxSurge` nodes at a time (at once where the old pod is unavailable), and
/// delete each old pod once its replacement is available.
pub fn rolling(
    ds: &Ds,
    nodes: &[Arc<CachedObject>],
    pods: &ByNode,
    hash: &str,
    now: Timestamp,
) -> Result<Plan, String> {
    let mut all = pods.clone();
    let mut desired = 0;
    let mut fits = BTreeMap::new();
    for n in nodes {
        let fit = should_run(&n.value, &ds.template);
        fits.insert(node_name(n).to_string(), fit.should_run);
        if fit.should_run {
            desired += 1;
            all.entry(node_name(n).to_string()).or_default();
        }
    }
    let (max_surge, max_unavailable) = surge_and_unavailable(ds, desired)?;
    let available = |p: &CachedObject| is_available(&p.value, ds.min_ready, now);
    let mut plan = Plan::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let (mut replace, mut candidates) = (Vec::new(), Vec::new());
        for here in all.values() {
            match pair(here, hash, ds.generation) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(&new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(&old) {
                        replace.push(old);
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(old);
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i64) as usize;
        plan.delete = replace;
        plan.delete.extend(candidates.into_iter().take(room));
        return Ok(plan);
    }
    let (mut surging, mut available_nodes) = (0, 0);
    let (mut allowed, mut candidates, mut off_nodes) = (Vec::new(), Vec::new(), Vec::new());
    for (name, here) in &all {
        let Some((new, old)) = pair(here, hash, ds.generation) else {
            surging += 1;
            continue;
        };
        if old.as_deref().is_some_and(available) || new.as_deref().is_some_and(available) {
            available_nodes += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(&old) {
                    if !fits.get(name).copied().unwrap_or(false) {
                        off_nodes.push(old);
                        continue;
                    }
                    allowed.push(name.clone());
                } else if surging < max_surge {
                    candidates.push(name.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(&new) {
                    plan.delete.push(old);
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Every eligible node keeps an available pod: an unavailable pod on a node that no longer
    // fits goes only while more nodes are available than need to be.
    let deletable = (available_nodes - desired).clamp(0, off_nodes.len() as i64) as usize;
    plan.delete.extend(off_nodes.into_iter().take(deletable));
    let room = (max_surge - surging).clamp(0, candidates.len() as i64) as usize;
    plan.create_on = allowed;
    plan.create_on.extend(candidates.into_iter().take(room));
    Ok(plan)
}

/// The status counts (`updateDaemonSetStatus`), judged on each node's oldest pod.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub desired: i64,
    pub current: i64,
    pub misscheduled: i64,
    pub ready: i64,
    pub available: i64,
    pub updated: i64,
}

pub fn counts(
    ds: &Ds,
    nodes: &[Arc<CachedObject>],
    pods: &ByNode,
    hash: &str,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for n in nodes {
        let fit = should_run(&n.value, &ds.template);
        let here = pods.get(node_name(n)).cloned().unwrap_or_default();
        if !fit.should_run {
            if !here.is_empty() {
                c.misscheduled += 1;
            }
            continue;
        }
        c.desired += 1;
        let mut here = here;
        sort_oldest_first(&mut here);
        let Some(pod) = here.first() else { continue };
        c.current += 1;
        if is_ready(&pod.value) {
            c.ready += 1;
            if is_available(&pod.value, ds.min_ready, now) {
                c.available += 1;
            }
        }
        if is_updated(pod, hash, ds.generation) {
            c.updated += 1;
        }
    }
    c
}
