//! The scheduling queue, as Kubernetes': an active queue ordered by priority (higher first)
//! then by arrival, a back-off queue for pods whose attempt failed with an error, and an
//! unschedulable set for pods that fit nowhere. Unschedulable pods go back to active when a
//! cluster event could make them fit ([`SchedulingQueue::move_all_to_active`]: a node added or
//! changed, a placed pod deleted or finished) or when their own spec changes, and also after
//! [`UNSCHEDULABLE_TIMEOUT`] so a missed event cannot strand a pod.
//!
//! A key is in at most one of the three at a time. Time comes from the caller (tokio's clock).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// Back-off after a failed attempt: 1 s doubling to 10 s (Kubernetes' defaults).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest an unschedulable pod waits without a relevant event (Kubernetes: 5 min).
pub const UNSCHEDULABLE_TIMEOUT: Duration = Duration::from_secs(300);

type Order = (Reverse<i32>, u64);

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    seq: u64,
    active: BTreeSet<(Order, String)>,
    active_keys: HashMap<String, Order>,
    backoff: HashMap<String, (i32, Instant)>,
    unschedulable: HashMap<String, (i32, Instant)>,
    attempts: HashMap<String, u32>,
}

impl SchedulingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn push_active(&mut self, key: &str, priority: i32) {
        if self.active_keys.contains_key(key) {
            return;
        }
        self.seq += 1;
        let order = (Reverse(priority), self.seq);
        self.active.insert((order, key.to_string()));
        self.active_keys.insert(key.to_string(), order);
    }

    /// A pod seen for the first time (or again after a resync): queued unless already known.
    pub fn add(&mut self, key: &str, priority: i32) {
        if self.backoff.contains_key(key) || self.unschedulable.contains_key(key) {
            return;
        }
        self.push_active(key, priority);
    }

    /// The pod's own spec changed: an unschedulable pod gets another try now.
    pub fn update(&mut self, key: &str, priority: i32) {
        if self.unschedulable.remove(key).is_some() {
            self.push_active(key, priority);
        } else {
            self.add(key, priority);
        }
    }

    /// Forgets the pod (deleted, bound by someone else, no longer ours).
    pub fn delete(&mut self, key: &str) {
        if let Some(order) = self.active_keys.remove(key) {
            self.active.remove(&(order, key.to_string()));
        }
        self.backoff.remove(key);
        self.unschedulable.remove(key);
        self.attempts.remove(key);
    }

    /// The next pod to try: highest priority, then oldest in the queue.
    pub fn pop(&mut self) -> Option<String> {
        let (order, key) = self.active.pop_first()?;
        debug_assert_eq!(self.active_keys.get(&key), Some(&order));
        self.active_keys.remove(&key);
        Some(key)
    }

    /// The pod fits nowhere now: parked until a relevant event.
    pub fn add_unschedulable(&mut self, key: &str, priority: i32, now: Instant) {
        self.unschedulable.insert(key.to_string(), (priority, now));
    }

    /// The attempt failed with an error (e.g. the bind call): retried after a back-off.
    pub fn add_backoff(&mut self, key: &str, priority: i32, now: Instant) {
        let n = self.attempts.entry(key.to_string()).or_insert(0);
        let delay = INITIAL_BACKOFF
            .saturating_mul(1u32 << (*n).min(10))
            .min(MAX_BACKOFF);
        *n += 1;
        self.backoff
            .insert(key.to_string(), (priority, now + delay));
    }

    /// The pod was bound: its back-off history ends.
    pub fn done(&mut self, key: &str) {
        self.attempts.remove(key);
    }

    /// A cluster event that could make unschedulable pods fit.
    pub fn move_all_to_active(&mut self) {
        let parked: Vec<_> = self.unschedulable.drain().collect();
        for (key, (prio, _)) in parked {
            self.push_active(&key, prio);
        }
    }

    /// Moves pods whose back-off ended, or that waited too long unschedulable, to active.
    pub fn flush(&mut self, now: Instant) {
        let due: Vec<_> = self
            .backoff
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, (p, _))| (k.clone(), *p))
            .collect();
        for (k, p) in due {
            self.backoff.remove(&k);
            self.push_active(&k, p);
        }
        let stale: Vec<_> = self
            .unschedulable
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) >= UNSCHEDULABLE_TIMEOUT)
            .map(|(k, (p, _))| (k.clone(), *p))
            .collect();
        for (k, p) in stale {
            self.unschedulable.remove(&k);
            self.push_active(&k, p);
        }
    }

    /// When [`Self::flush`] next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let b = self.backoff.values().map(|(_, t)| *t);
        let u = self
            .unschedulable
            .values()
            .map(|(_, t)| *t + UNSCHEDULABLE_TIMEOUT);
        b.chain(u).min()
    }

    pub fn is_unschedulable(&self, key: &str) -> bool {
        self.unschedulable.contains_key(key)
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn priority_then_age() {
        let mut q = SchedulingQueue::new();
        q.add("a", 0);
        q.add("b", 10);
        q.add("c", 0);
        q.add("a", 0);
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop().as_deref(), Some("c"));
        assert_eq!(q.pop(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_waits_for_an_event_or_its_own_update() {
        let mut q = SchedulingQueue::new();
        let now = Instant::now();
        q.add_unschedulable("a", 0, now);
        q.add("a", 0);
        assert_eq!(
            q.pop(),
            None,
            "a resync does not retry an unschedulable pod"
        );
        q.flush(now + Duration::from_secs(60));
        assert_eq!(q.pop(), None);
        q.move_all_to_active();
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.add_unschedulable("a", 0, now);
        q.update("a", 0);
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.add_unschedulable("a", 0, now);
        q.flush(now + UNSCHEDULABLE_TIMEOUT);
        assert_eq!(q.pop().as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_flushes_when_due() {
        let mut q = SchedulingQueue::new();
        let now = Instant::now();
        q.add_backoff("a", 0, now);
        assert_eq!(q.next_wakeup(), Some(now + INITIAL_BACKOFF));
        q.flush(now + Duration::from_millis(999));
        assert_eq!(q.pop(), None);
        q.flush(now + INITIAL_BACKOFF);
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.add_backoff("a", 0, now);
        assert_eq!(q.next_wakeup(), Some(now + 2 * INITIAL_BACKOFF));
        q.delete("a");
        assert_eq!(q.next_wakeup(), None);
    }
}
