//! Zone-aware, rate-limited NoExecute tainting (Kubernetes' `handleDisruption`,
//! `ComputeZoneState`, `setLimiterInZone` and `doNoExecuteTaintingPass`).
//!
//! Nodes are grouped by zone (the `topology.kubernetes.io/region` and `…/zone` labels, or
//! their `failure-domain.beta` predecessors; nodes without them form the zone `""`; nodes
//! labelled `node.kubernetes.io/exclude-disruption` are left out of the count). Each zone is:
//! - **FullDisruption** when none of its nodes is Ready;
//! - **PartialDisruption** when more than two are not Ready and they are at least
//!   `unhealthy_zone_threshold` of the zone;
//! - **Normal** otherwise.
//!
//! Each zone has a token bucket (burst 1) for the NoExecute taints that start evictions:
//! `eviction_rate` per second when Normal or FullDisruption, `secondary_eviction_rate` when
//! PartialDisruption and the zone has more than `large_cluster_size_threshold` nodes, none
//! when it has fewer (a small zone losing most of its nodes is more likely a network split
//! than dead machines). A zone's bucket is replaced, full, when its state changes. When every
//! zone is fully disrupted the controller is probably the one cut off: it stops tainting and
//! removes the NoExecute taints it set; when some node comes back, every node gets a fresh
//! grace period first.
//!
//! A not-ready node joins its zone's queue only when the previous pass already saw it not
//! ready, so the zone states that admit it account for every node that went silent at about
//! the same time (Kubernetes gets the same lag from tainting on the previous pass' view).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::config::LifecycleConfig;
use super::health::ready_status;
use crate::util::str_at;

pub const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// The zone key of a node (Kubernetes' `GetZoneKey`): region and zone, `""` for neither.
pub fn zone_of(node: &Value) -> String {
    let label =
        |k: &str| str_at(node, &format!("/metadata/labels/{}", k.replace('/', "~1"))).to_string();
    let first = |a: &str, b: &str| {
        let v = label(a);
        if v.is_empty() { label(b) } else { v }
    };
    let region = first(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = first(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:{zone}")
    }
}

/// A zone's state from its nodes' readiness (true: Ready).
pub fn zone_state(ready: &[bool], unhealthy_threshold: f64) -> ZoneState {
    let up = ready.iter().filter(|r| **r).count();
    let down = ready.len() - up;
    if up == 0 && down > 0 {
        ZoneState::FullDisruption
    } else if down > 2 && down as f64 / ready.len() as f64 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The tainting rate (nodes per second) of a zone of `size` nodes in `state`.
pub fn zone_rate(state: ZoneState, size: usize, cfg: &LifecycleConfig) -> f64 {
    match state {
        ZoneState::PartialDisruption if size > cfg.large_cluster_size_threshold => {
            cfg.secondary_eviction_rate
        }
        ZoneState::PartialDisruption => 0.0,
        _ => cfg.eviction_rate,
    }
}

/// A token bucket of burst 1 on the monotonic clock; rate 0 never grants.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    /// When the next token is available.
    next: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, now: Instant) -> Self {
        TokenBucket { rate, next: now }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Gives back the token just taken.
    pub fn refund(&mut self, now: Instant) {
        if self.rate > 0.0 {
            self.next = self.next.min(now);
        }
    }

    /// Takes a token if one is available at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 || now < self.next {
            return false;
        }
        // Burst 1: idle time does not pile up tokens, so the next one is a period away.
        self.next = now + Duration::from_secs_f64((1.0 / self.rate).min(1e9));
        true
    }
}

struct Zone {
    state: ZoneState,
    bucket: TokenBucket,
    queue: VecDeque<String>,
}

/// What a zone pass changed that the caller must act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Every zone just became fully disrupted: remove the NoExecute taints of every node.
    pub entered_full_disruption: bool,
    /// Some node is Ready again after that: every node gets a fresh grace period.
    pub left_full_disruption: bool,
}

/// Zone states, their buckets and tainting queues. It starts as Kubernetes does: not every
/// zone fully disrupted.
#[derive(Default)]
pub struct Disruption {
    zones: BTreeMap<String, Zone>,
    all_down: bool,
    /// Nodes the previous pass saw not ready.
    not_ready_before: HashSet<String>,
}

impl Disruption {
    /// Recomputes zone states from `nodes` (name, JSON) and queues the not-ready nodes that may
    /// be tainted. `tainted(node)` says whether a node already has its NoExecute taint.
    pub fn pass(
        &mut self,
        nodes: &[(String, &Value)],
        tainted: impl Fn(&Value) -> bool,
        now: Instant,
        cfg: &LifecycleConfig,
    ) -> PassOutcome {
        let mut ready_by_zone: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        let mut not_ready = HashSet::new();
        for (name, node) in nodes {
            let ready = ready_status(node) == "True";
            if !ready {
                not_ready.insert(name.clone());
            }
            let excluded = node
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .is_some_and(|l| l.contains_key(EXCLUDE_DISRUPTION));
            if !excluded {
                ready_by_zone.entry(zone_of(node)).or_default().push(ready);
            }
        }
        let states: BTreeMap<&String, (ZoneState, usize)> = ready_by_zone
            .iter()
            .map(|(z, r)| (z, (zone_state(r, cfg.unhealthy_zone_threshold), r.len())))
            .collect();
        self.zones.retain(|z, _| ready_by_zone.contains_key(z));
        for z in ready_by_zone.keys() {
            self.zones.entry(z.clone()).or_insert_with(|| Zone {
                state: ZoneState::Initial,
                bucket: TokenBucket::new(cfg.eviction_rate, now),
                queue: VecDeque::new(),
            });
        }
        let all_down = !states.is_empty()
            && states
                .values()
                .all(|(s, _)| *s == ZoneState::FullDisruption);
        let mut out = PassOutcome::default();
        if all_down && !self.all_down {
            tracing::info!("no node is Ready in any zone: NoExecute tainting stops");
            for z in self.zones.values_mut() {
                z.state = ZoneState::FullDisruption;
                z.bucket = TokenBucket::new(0.0, now);
                z.queue.clear();
            }
            out.entered_full_disruption = true;
        } else if !all_down {
            if self.all_down {
                tracing::info!("nodes are Ready again: leaving the all-zones-disrupted mode");
                out.left_full_disruption = true;
            }
            for (z, (state, size)) in &states {
                let Some(zone) = self.zones.get_mut(*z) else {
                    continue;
                };
                if zone.state != *state || out.left_full_disruption {
                    if zone.state != *state {
                        tracing::info!(zone = %z, state = ?state, "zone changed state");
                    }
                    zone.state = *state;
                    zone.bucket = TokenBucket::new(zone_rate(*state, *size, cfg), now);
                }
            }
        }
        self.all_down = all_down;
        if !all_down && !out.left_full_disruption {
            for (name, node) in nodes {
                if !not_ready.contains(name)
                    || !self.not_ready_before.contains(name)
                    || tainted(node)
                {
                    continue;
                }
                if let Some(zone) = self.zones.get_mut(&zone_of(node))
                    && !zone.queue.contains(name)
                {
                    zone.queue.push_back(name.clone());
                }
            }
        }
        self.not_ready_before = not_ready;
        out
    }

    /// The queued nodes whose turn it is at `now`, as the zones' buckets allow, in queue order.
    /// `still_due(name)` drops a node that became Ready, was tainted or went away (no token is
    /// spent on it).
    pub fn take_due(&mut self, now: Instant, still_due: impl Fn(&str) -> bool) -> Vec<String> {
        let mut due = Vec::new();
        for zone in self.zones.values_mut() {
            while let Some(name) = zone.queue.front() {
                if !still_due(name) {
                    zone.queue.pop_front();
                    continue;
                }
                if !zone.bucket.try_take(now) {
                    break;
                }
                if let Some(n) = zone.queue.pop_front() {
                    due.push(n);
                }
            }
        }
        due
    }

    /// Puts a node whose tainting failed back at the front of its zone's queue, with the token
    /// it spent (a conflict with a concurrent write is no reason to wait a whole period).
    pub fn retry(&mut self, name: &str, zone: &str, now: Instant) {
        if let Some(z) = self.zones.get_mut(zone)
            && !z.queue.iter().any(|n| n == name)
        {
            z.queue.push_front(name.to_string());
            z.bucket.refund(now);
        }
    }

    /// A zone's state and tainting rate, for tests and logs.
    pub fn zone(&self, zone: &str) -> Option<(ZoneState, f64)> {
        self.zones.get(zone).map(|z| (z.state, z.bucket.rate()))
    }
}
