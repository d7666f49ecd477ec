//! Heartbeats as the controller observes them (Kubernetes' `nodeHealthMap`): a node's last
//! heartbeat is the controller's own monotonic time when it last saw the node's Lease renewed
//! (`spec.renewTime` changed) or its Ready condition's `lastHeartbeatTime` change. Times
//! written by the node are compared only with themselves, never with the controller's clock,
//! so a node whose clock is off is judged by when its news arrived.
//!
//! The table lives in memory: a controller that starts (or takes over the leader Lease) knows
//! no heartbeat yet and grants every node a full grace period from that moment, as Kubernetes
//! does.

use std::collections::HashMap;

use serde_json::Value;
use tokio::time::Instant;

use crate::util::str_at;

/// What was last seen of one node.
#[derive(Debug, Clone)]
struct Seen {
    lease_renew: String,
    ready_heartbeat: Option<String>,
    probe: Instant,
}

/// The heartbeat table.
#[derive(Debug, Default)]
pub struct Heartbeats {
    nodes: HashMap<String, Seen>,
}

/// The Ready condition's `lastHeartbeatTime`, or `None` without a Ready condition.
pub fn ready_heartbeat(node: &Value) -> Option<String> {
    ready_condition(node).map(|c| str_at(c, "/lastHeartbeatTime").to_string())
}

/// The node's Ready condition, if it has one.
pub fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| str_at(c, "/type") == "Ready")
}

/// The Ready condition's status: `True`, `False`, `Unknown`, or `""` when it has none.
pub fn ready_status(node: &Value) -> &str {
    ready_condition(node).map_or("", |c| str_at(c, "/status"))
}

impl Heartbeats {
    /// Records what `node` and its Lease show at `now` and returns the node's last heartbeat.
    /// A first sighting counts as a heartbeat.
    pub fn observe(
        &mut self,
        name: &str,
        node: &Value,
        lease: Option<&Value>,
        now: Instant,
    ) -> Instant {
        let renew = lease
            .map_or("", |l| str_at(l, "/spec/renewTime"))
            .to_string();
        let heartbeat = ready_heartbeat(node);
        match self.nodes.get_mut(name) {
            None => {
                self.nodes.insert(
                    name.to_string(),
                    Seen {
                        lease_renew: renew,
                        ready_heartbeat: heartbeat,
                        probe: now,
                    },
                );
                now
            }
            Some(seen) => {
                if seen.ready_heartbeat != heartbeat {
                    seen.ready_heartbeat = heartbeat;
                    seen.probe = now;
                }
                if !renew.is_empty() && seen.lease_renew != renew {
                    seen.lease_renew = renew;
                    seen.probe = now;
                }
                seen.probe
            }
        }
    }

    /// Takes note of the Ready heartbeat the controller itself wrote, so that its own write is
    /// not mistaken for news from the node.
    pub fn wrote(&mut self, name: &str, node_after: &Value) {
        if let Some(seen) = self.nodes.get_mut(name) {
            seen.ready_heartbeat = ready_heartbeat(node_after);
        }
    }

    /// Whether the node was seen before (its first sighting is an Event).
    pub fn knows(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub fn forget(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Every node's heartbeat moves to `now` (leaving the all-zones-down mode: nodes get a full
    /// grace period to report before anything is done to them).
    pub fn reset_all(&mut self, now: Instant) {
        for seen in self.nodes.values_mut() {
            seen.probe = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn node(heartbeat: &str) -> Value {
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]}})
    }

    fn lease(renew: &str) -> Value {
        json!({"spec": {"renewTime": renew}})
    }

    #[tokio::test(start_paused = true)]
    async fn lease_renewals_and_ready_heartbeats_both_count() {
        let mut hb = Heartbeats::default();
        let t0 = tokio::time::Instant::now();
        let n = node("2025-01-01T00:00:00Z");
        assert_eq!(hb.observe("a", &n, Some(&lease("r1")), t0), t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            hb.observe("a", &n, Some(&lease("r1")), t1),
            t0,
            "nothing new: the last heartbeat stays"
        );
        assert_eq!(hb.observe("a", &n, Some(&lease("r2")), t1), t1, "renewed");
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(
            hb.observe("a", &node("2025-01-01T00:00:20Z"), Some(&lease("r2")), t2),
            t2,
            "Ready heartbeat moved"
        );
        let t3 = t2 + Duration::from_secs(10);
        assert_eq!(
            hb.observe("a", &node("2025-01-01T00:00:20Z"), None, t3),
            t2,
            "a Lease that went away is no heartbeat"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn own_writes_are_not_heartbeats_and_reset_grants_grace() {
        let mut hb = Heartbeats::default();
        let t0 = tokio::time::Instant::now();
        let silent = json!({"status": {}});
        hb.observe("a", &silent, None, t0);
        // The controller adds Unknown conditions itself.
        let written = node("2024-12-31T00:00:00Z");
        hb.wrote("a", &written);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(hb.observe("a", &written, None, t1), t0);
        hb.reset_all(t1);
        assert_eq!(hb.observe("a", &written, None, t1), t1);
        assert!(hb.knows("a"));
        hb.forget("a");
        assert!(!hb.knows("a"));
    }
}
