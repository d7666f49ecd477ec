//! Expectations: a controller that just created or deleted objects for an owner waits until its
//! cache has seen those changes before acting on that owner again (Kubernetes'
//! `ControllerExpectations` / `UIDTrackingControllerExpectations`, as the ReplicaSet and Job
//! controllers use them).
//!
//! Why: a reconcile reads the cache, which lags the API server. A ReplicaSet controller that
//! created 3 pods and is reconciled again before the watch delivered them would see 0 pods and
//! create 3 more. So before writing, the controller records what it expects
//! ([`Expectations::expect_creations`], [`Expectations::expect_deletions`]); the informer's
//! event handler lowers the expectation as each change is observed
//! ([`Expectations::creation_observed`], [`Expectations::deletion_observed`], or
//! [`Expectations::observe`] for a whole event); and reconcile acts only while
//! [`Expectations::satisfied`] holds.
//!
//! Guarantees:
//! - an owner with no recorded expectations is satisfied (first sight, or after a restart);
//! - creations are counted (their names are not known before the server answers, with
//!   generateName); deletions are tracked by uid, so a deletion observed twice, or of an object
//!   not asked for, does not lower the count;
//! - expectations older than the timeout (5 minutes by default, Kubernetes' value) count as
//!   satisfied, so a lost watch event or a create that failed without the controller lowering
//!   the count cannot block the owner forever. Time is the injected monotonic clock.
//! - a failed create or delete must be lowered by the caller ([`Expectations::creation_observed`]
//!   / [`Expectations::deletion_observed`]) since no event will come for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::CachedObject;
use crate::clock::SharedClock;
use crate::reflector::ReflectorEvent;
use crate::workqueue::Key;

/// Kubernetes' `ExpectationsTimeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expected {
    adds: i64,
    /// Uids whose deletion has not been observed yet.
    dels: HashSet<String>,
    set_at: Instant,
}

/// Per-owner expectations of one controller. Share it between reconcile and event handlers.
pub struct Expectations {
    clock: SharedClock,
    timeout: Duration,
    owners: Mutex<HashMap<Key, Expected>>,
}

impl std::fmt::Debug for Expectations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expectations")
            .field("owners", &self.lock().len())
            .finish()
    }
}

impl Expectations {
    pub fn new(clock: SharedClock) -> Self {
        Self::with_timeout(clock, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(clock: SharedClock, timeout: Duration) -> Self {
        Expectations {
            clock,
            timeout,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Expected>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller may act on `owner`: everything it expected was observed, or the
    /// expectations expired, or none were recorded.
    pub fn satisfied(&self, owner: &str) -> bool {
        let now = self.clock.instant();
        match self.lock().get(owner) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels.is_empty()) || now >= e.set_at + self.timeout,
        }
    }

    /// Records that `n` objects are about to be created for `owner` (replacing any earlier
    /// expectation, as Kubernetes' `ExpectCreations` does: call it only when satisfied).
    pub fn expect_creations(&self, owner: &str, n: usize) {
        self.record(owner, |e| e.adds = n as i64);
    }

    /// Updates (or starts) `owner`'s expectations and restarts their timeout.
    fn record(&self, owner: &str, change: impl FnOnce(&mut Expected)) {
        let now = self.clock.instant();
        let mut owners = self.lock();
        let e = owners.entry(owner.to_string()).or_insert_with(|| Expected {
            adds: 0,
            dels: HashSet::new(),
            set_at: now,
        });
        change(e);
        e.set_at = now;
    }

    /// Records that the objects with these uids are about to be deleted for `owner`.
    pub fn expect_deletions<I: IntoIterator<Item = String>>(&self, owner: &str, uids: I) {
        self.record(owner, |e| e.dels.extend(uids));
    }

    /// One expected creation was observed (or failed and will not be).
    pub fn creation_observed(&self, owner: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.adds -= 1;
        }
    }

    /// The deletion of the object with `uid` was observed (or failed and will not be).
    pub fn deletion_observed(&self, owner: &str, uid: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.dels.remove(uid);
        }
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }

    /// Lowers expectations from an informer event on owned objects, `owner_of` naming each
    /// object's owner key (e.g. through [`crate::controller::controller_owner_key`]). An object
    /// that is being deleted counts as a deletion observed, as Kubernetes' ReplicaSet controller
    /// counts a pod with a deletionTimestamp.
    pub fn observe(&self, ev: &ReflectorEvent, owner_of: impl Fn(&CachedObject) -> Option<Key>) {
        match ev {
            ReflectorEvent::Added(o) => {
                if let Some(owner) = owner_of(o) {
                    if o.is_deleting() {
                        self.deletion_observed(&owner, o.uid());
                    } else {
                        self.creation_observed(&owner);
                    }
                }
            }
            ReflectorEvent::Updated { old, new } => {
                if new.is_deleting()
                    && !old.is_deleting()
                    && let Some(owner) = owner_of(new)
                {
                    self.deletion_observed(&owner, new.uid());
                }
            }
            ReflectorEvent::Deleted(o) => {
                if let Some(owner) = owner_of(o) {
                    self.deletion_observed(&owner, o.uid());
                }
            }
            // A relist says nothing about which changes were ours; the timeout covers it.
            ReflectorEvent::Restarted(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    fn obj(name: &str, deleting: bool) -> Arc<CachedObject> {
        let mut v =
            json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
    }

    fn owner(_: &CachedObject) -> Option<Key> {
        Some("ns/rs".into())
    }

    #[tokio::test(start_paused = true)]
    async fn creations_must_all_be_seen_before_acting_again() {
        let e = Expectations::new(ManualClock::shared(1));
        assert!(e.satisfied("ns/rs"), "nothing recorded");
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.observe(&ReflectorEvent::Added(obj("a", false)), owner);
        assert!(!e.satisfied("ns/rs"), "one of two seen");
        e.observe(&ReflectorEvent::Added(obj("b", false)), owner);
        assert!(e.satisfied("ns/rs"));
        assert!(e.satisfied("ns/other"), "owners are independent");
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_are_tracked_by_uid() {
        let e = Expectations::new(ManualClock::shared(1));
        e.expect_deletions("ns/rs", ["u-a".to_string(), "u-b".to_string()]);
        // An unrelated deletion, and the same one twice, do not count.
        e.observe(&ReflectorEvent::Deleted(obj("x", false)), owner);
        e.observe(&ReflectorEvent::Deleted(obj("a", false)), owner);
        e.observe(&ReflectorEvent::Deleted(obj("a", false)), owner);
        assert!(!e.satisfied("ns/rs"));
        // Graceful deletion: the deletionTimestamp is enough.
        let (old, new) = (obj("b", false), obj("b", true));
        e.observe(&ReflectorEvent::Updated { old, new }, owner);
        assert!(e.satisfied("ns/rs"));
    }

    #[tokio::test(start_paused = true)]
    async fn expectations_expire() {
        let e = Expectations::with_timeout(ManualClock::shared(1), Duration::from_secs(60));
        e.expect_creations("ns/rs", 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!e.satisfied("ns/rs"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            e.satisfied("ns/rs"),
            "a lost event cannot block the owner forever"
        );
        e.forget("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }
}
