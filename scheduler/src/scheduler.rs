//! The scheduling cycle: pop a pod, snapshot the cluster, filter, score, assume, bind.
//!
//! One task owns the queue and the cache and runs cycles one at a time, between handling the
//! informers' events; so a decision always sees every earlier decision (assumed pods). A pod
//! that fits nowhere is parked as unschedulable with its reasons summed per filter as
//! Kubernetes prints them, gets the condition PodScheduled=False (reason Unschedulable, that
//! message) and a Warning Event FailedScheduling with it; a failed bind is forgotten and
//! retried after a back-off. A pod is
//! this scheduler's when its `spec.schedulerName` (default `default-scheduler`) is ours, it is
//! unbound, not being deleted and not finished.

use std::collections::BTreeMap;
use std::sync::Arc;

use rudder_api::k8s_openapi::api::core::v1::Pod;
use rudder_client::Api;
use rudder_client::cache::CachedObject;
use rudder_client::clock::SharedClock;
use rudder_client::events::EventRecorder;
use rudder_client::informer::{Informer, Subscription};
use rudder_client::proto as pb;
use rudder_client::reflector::ReflectorEvent;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Cache};
use crate::framework::{NodeInfo, PodInfo, Profile};
use crate::queue::SchedulingQueue;

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// What one cycle decided for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Bound(String),
    /// Fits nowhere; the Kubernetes-style summary ("0/3 nodes are available: ...").
    Unschedulable(String),
    /// The bind or a read failed; retried after a back-off.
    Failed(String),
    /// Nothing to do (gone, bound meanwhile, not ours).
    Skipped,
}

/// Kubernetes' `FitError` message: per-reason node counts, sorted, after the node total.
pub fn fit_error_message(total_nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{total_nodes} nodes are available.")
    } else {
        format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
    }
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The scheduler state one leader term works with.
pub struct Scheduler {
    api: Arc<dyn Api>,
    profile: Profile,
    pods: Informer,
    nodes: Informer,
    queue: SchedulingQueue,
    cache: Cache,
    clock: SharedClock,
    events: Option<EventRecorder>,
    /// Kubernetes' `percentageOfNodesToScore` (0: adaptive).
    percentage_of_nodes_to_score: u32,
    /// Where the next cycle's filtering starts, so that every node gets its turn.
    next_start: usize,
}

/// Nodes the scheduler always considers before it may stop looking (`minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this (`minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes a cycle looks for before scoring, as kube-scheduler's
/// `numFeasibleNodesToFind`: every node in small clusters; otherwise `percentage` of them (0:
/// adaptive, 50% less 1% per 125 nodes, at least 5%), and never fewer than 100.
pub fn num_feasible_nodes_to_find(nodes: usize, percentage: u32) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return nodes;
    }
    let pct = if percentage == 0 {
        50usize
            .saturating_sub(nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE)
    } else {
        percentage as usize
    };
    (nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

impl Scheduler {
    pub fn new(
        api: Arc<dyn Api>,
        profile: Profile,
        pods: Informer,
        nodes: Informer,
        clock: SharedClock,
    ) -> Self {
        Scheduler {
            api,
            profile,
            pods,
            nodes,
            queue: SchedulingQueue::new(),
            cache: Cache::default(),
            clock,
            events: None,
            percentage_of_nodes_to_score: 0,
            next_start: 0,
        }
    }

    /// Sets `percentageOfNodesToScore` (0: adaptive; 100: every node, every cycle).
    pub fn with_percentage_of_nodes_to_score(mut self, pct: u32) -> Self {
        self.percentage_of_nodes_to_score = pct.min(100);
        self
    }

    /// Records a FailedScheduling Event for each unschedulable attempt.
    pub fn with_events(mut self, events: EventRecorder) -> Self {
        self.events = Some(events);
        self
    }

    /// Writes PodScheduled=False/Unschedulable with `msg` (unless the pod already says so) and
    /// records the Event. Failures are logged: the pod stays parked either way.
    async fn report_unschedulable(&self, obj: &CachedObject, pod: &Pod, msg: &str) {
        if let Some(ev) = &self.events {
            ev.warning(&obj.value, "FailedScheduling", msg);
        }
        let existing = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let same = existing.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(msg)
        });
        if same {
            return;
        }
        // A merge patch replaces the list whole: keep the other conditions as they are.
        let mut conditions: Vec<serde_json::Value> = obj
            .value
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.get("type").and_then(|t| t.as_str()) != Some("PodScheduled"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let now = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        conditions.push(serde_json::json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": msg,
            "lastTransitionTime": now,
        }));
        let status = serde_json::json!({ "conditions": conditions });
        if let Err(e) = rudder_client::write::patch_status(&*self.api, obj, status).await {
            tracing::warn!(pod = %obj.name, error = %e, "cannot write the PodScheduled condition");
        }
    }

    fn is_ours(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_SCHEDULER_NAME);
        name == self.profile.scheduler_name
    }

    fn wants_scheduling(&self, pod: &Pod) -> bool {
        self.is_ours(pod)
            && cache::node_name(pod).is_none()
            && pod.metadata.deletion_timestamp.is_none()
            && !cache::is_terminal(pod)
    }

    fn on_pod(&mut self, obj: &CachedObject, spec_changed: bool) {
        let key = rudder_client::cache::object_key(&obj.namespace, &obj.name);
        let Ok(pod) = obj.typed::<Pod>() else {
            return;
        };
        if self.wants_scheduling(&pod) {
            if spec_changed {
                self.queue.update(&key, priority(&pod));
            } else {
                self.queue.add(&key, priority(&pod));
            }
        } else {
            self.queue.delete(&key);
        }
    }

    /// Maps an informer event to queue changes. Level-triggered: the cycle re-reads the cache.
    pub fn handle_pod_event(&mut self, ev: ReflectorEvent) {
        match ev {
            ReflectorEvent::Added(o) => self.on_pod(&o, false),
            ReflectorEvent::Updated { old, new } => {
                // Only a change the scheduler did not make itself retries an unschedulable
                // pod: its own status write must not loop it.
                let changed = old.value.get("spec") != new.value.get("spec")
                    || old.value.pointer("/metadata/labels")
                        != new.value.pointer("/metadata/labels");
                self.on_pod(&new, changed);
                let freed = match (old.typed::<Pod>(), new.typed::<Pod>()) {
                    (Ok(o), Ok(n)) => {
                        cache::node_name(&o).is_some()
                            && !cache::is_terminal(&o)
                            && cache::is_terminal(&n)
                    }
                    _ => false,
                };
                if freed {
                    self.queue.move_all_to_active();
                }
            }
            ReflectorEvent::Deleted(o) => {
                let key = rudder_client::cache::object_key(&o.namespace, &o.name);
                self.queue.delete(&key);
                self.cache.forget(&key);
                if o.typed::<Pod>()
                    .is_ok_and(|p| cache::node_name(&p).is_some())
                {
                    self.queue.move_all_to_active();
                }
            }
            ReflectorEvent::Restarted(all) => {
                for o in &all {
                    self.on_pod(o, false);
                }
                self.queue.move_all_to_active();
            }
        }
    }

    pub fn handle_node_event(&mut self, ev: ReflectorEvent) {
        if !matches!(ev, ReflectorEvent::Deleted(_)) {
            self.queue.move_all_to_active();
        }
    }

    /// Runs one cycle if a pod is waiting; `None` when the active queue is empty.
    pub async fn schedule_one(&mut self) -> Option<(String, Outcome)> {
        let key = self.queue.pop()?;
        let outcome = self.schedule(&key).await;
        Some((key, outcome))
    }

    async fn schedule(&mut self, key: &str) -> Outcome {
        let reader = self.pods.reader();
        let Some(obj) = reader.get_key(key) else {
            return Outcome::Skipped;
        };
        let Ok(pod) = obj.typed::<Pod>() else {
            return Outcome::Skipped;
        };
        if !self.wants_scheduling(&pod) || self.cache.is_assumed(key) {
            return Outcome::Skipped;
        }
        let prio = priority(&pod);
        let mut info = PodInfo::new(pod);
        let snap = self.cache.snapshot(&reader, &self.nodes.reader());
        self.profile.pre_filter(&mut info, &snap.nodes);
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        // Filter from a rotating start until enough nodes fit (every node when none fits), as
        // kube-scheduler does: in a large cluster scoring every feasible node costs more than
        // the better choice is worth.
        let total = snap.nodes.len();
        let want = num_feasible_nodes_to_find(total, self.percentage_of_nodes_to_score);
        let start = if total == 0 {
            0
        } else {
            self.next_start % total
        };
        let mut processed = 0;
        for n in snap.nodes[start..].iter().chain(&snap.nodes[..start]) {
            if feasible.len() >= want {
                break;
            }
            processed += 1;
            let s = self.profile.run_filters(&info, n);
            if s.is_success() {
                feasible.push(n);
            } else {
                for r in s.reasons {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
        if total > 0 {
            self.next_start = (start + processed) % total;
        }
        let now = tokio::time::Instant::now();
        if feasible.is_empty() {
            let msg = fit_error_message(snap.nodes.len(), &reasons);
            tracing::info!(pod = %key, %msg, "unschedulable");
            self.queue.add_unschedulable(key, prio, now);
            self.report_unschedulable(&obj, &info.pod, &msg).await;
            return Outcome::Unschedulable(msg);
        }
        let scores = self.profile.run_scores(&info, &feasible);
        // Highest score; ties go to the first node found, so decisions are reproducible.
        let mut best = 0;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
            }
        }
        let node = feasible[best].name.clone();
        self.cache.assume(&info, &node);
        let req = pb::BindRequest {
            namespace: obj.namespace.clone(),
            name: obj.name.clone(),
            node_name: node.clone(),
            uid: info.pod.metadata.uid.clone().unwrap_or_default(),
            options: None,
        };
        match self.api.bind(req).await {
            Ok(_) => {
                tracing::info!(pod = %key, %node, "bound");
                self.queue.done(key);
                Outcome::Bound(node)
            }
            Err(e) => {
                self.cache.forget(key);
                if e.is_conflict() {
                    // Bound by someone else, deleted or recreated: the watch will tell.
                    tracing::info!(pod = %key, error = %e, "bind conflict");
                    Outcome::Skipped
                } else {
                    tracing::warn!(pod = %key, %node, error = %e, "bind failed; backing off");
                    self.queue.add_backoff(key, prio, now);
                    Outcome::Failed(e.to_string())
                }
            }
        }
    }

    /// Schedules until `cancel`: events first, then one cycle at a time.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut pod_events: Subscription = self.pods.subscribe();
        let mut node_events: Subscription = self.nodes.subscribe();
        let readers = [self.pods.reader(), self.nodes.reader()];
        if !rudder_client::informer::wait_for_cache_sync(&readers, &cancel).await {
            return;
        }
        loop {
            while let Some(ev) = pod_events.try_recv() {
                self.handle_pod_event(ev);
            }
            while let Some(ev) = node_events.try_recv() {
                self.handle_node_event(ev);
            }
            self.queue.flush(tokio::time::Instant::now());
            if self.queue.active_len() > 0 {
                if cancel.is_cancelled() {
                    return;
                }
                self.schedule_one().await;
                continue;
            }
            let wake = self.queue.next_wakeup();
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = pod_events.recv() => match ev {
                    Some(ev) => self.handle_pod_event(ev),
                    None => return,
                },
                ev = node_events.recv() => match ev {
                    Some(ev) => self.handle_node_event(ev),
                    None => return,
                },
                _ = async {
                    match wake {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_sums_and_sorts_reasons() {
        let mut r = BTreeMap::new();
        r.insert("Insufficient cpu".to_string(), 2);
        r.insert("node(s) were unschedulable".to_string(), 1);
        assert_eq!(
            fit_error_message(3, &r),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
        assert_eq!(
            fit_error_message(0, &BTreeMap::new()),
            "0/0 nodes are available."
        );
    }
}

#[cfg(test)]
mod feasible_tests {
    use super::num_feasible_nodes_to_find;

    #[test]
    fn how_many_nodes_a_cycle_looks_for() {
        assert_eq!(
            num_feasible_nodes_to_find(50, 0),
            50,
            "small clusters: every node"
        );
        assert_eq!(num_feasible_nodes_to_find(99, 10), 99);
        // Adaptive: 50% less 1% per 125 nodes.
        assert_eq!(num_feasible_nodes_to_find(500, 0), 500 * 46 / 100);
        assert_eq!(num_feasible_nodes_to_find(5_000, 0), 5_000 * 10 / 100);
        // Never below 5%, never below 100 nodes.
        assert_eq!(num_feasible_nodes_to_find(10_000, 0), 10_000 * 5 / 100);
        assert_eq!(num_feasible_nodes_to_find(1_000, 1), 100);
        assert_eq!(num_feasible_nodes_to_find(1_000, 30), 300);
        assert_eq!(num_feasible_nodes_to_find(1_000, 100), 1_000);
    }
}
