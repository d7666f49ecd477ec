//! Which of its own writes a controller's cache has not shown yet (Kubernetes'
//! `EndpointSliceTracker` and the Endpoints controller's stale-endpoints tracker).
//!
//! A reconcile reads the cache, which lags the server. One that ran on a cache without the
//! slice it created a moment ago would create it again; one that read a slice older than its
//! own last update would send a stale version and fail on a conflict. So every write is
//! recorded per owner (the Service's key): the version the server answered for an object
//! written, or the uid of one deleted. [`Tracker::caught_up`] is true once the cache holds every
//! written object at that version or later and none of the deleted ones; until then the owner
//! waits (the cache's event for the write queues it again).
//!
//! An entry older than the timeout counts as seen, so a lost event cannot block an owner for
//! ever; a Deleted event at or past a recorded version also clears it (an object of ours someone
//! deleted before the cache showed it). Time is the injected clock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rudder_client::cache::{CachedObject, Reader};
use rudder_client::clock::SharedClock;
use rudder_client::reflector::ReflectorEvent;
use rudder_client::workqueue::Key;
use tokio::time::Instant;

/// How long a write may stay unseen before it stops holding its owner back.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Written: the cache must show this version or a later one.
    Version(u64),
    /// Deleted: the cache must not hold this uid.
    Gone(String),
}

#[derive(Debug)]
struct Entry {
    expect: Expect,
    at: Instant,
}

/// Per-owner records of writes not yet seen. Shared by reconcile and the event mapper.
pub struct Tracker {
    clock: SharedClock,
    timeout: Duration,
    owners: Mutex<HashMap<Key, HashMap<String, Entry>>>,
}

impl Tracker {
    pub fn new(clock: SharedClock) -> Self {
        Tracker {
            clock,
            timeout: TIMEOUT,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, HashMap<String, Entry>>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, owner: &str, name: &str, expect: Expect) {
        let at = self.clock.instant();
        self.lock()
            .entry(owner.to_string())
            .or_default()
            .insert(name.to_string(), Entry { expect, at });
    }

    /// `owner` wrote object `name`; the server answered with `version`.
    pub fn wrote(&self, owner: &str, name: &str, version: u64) {
        self.record(owner, name, Expect::Version(version));
    }

    /// `owner` deleted object `name` with this uid.
    pub fn deleted(&self, owner: &str, name: &str, uid: &str) {
        self.record(owner, name, Expect::Gone(uid.to_string()));
    }

    /// Whether `cache` (objects in `namespace`) shows every write recorded for `owner`. Entries
    /// it shows, and expired ones, are dropped.
    pub fn caught_up(&self, owner: &str, cache: &Reader, namespace: &str) -> bool {
        let now = self.clock.instant();
        let mut owners = self.lock();
        let Some(entries) = owners.get_mut(owner) else {
            return true;
        };
        entries.retain(|name, e| {
            if now >= e.at + self.timeout {
                return false;
            }
            let cached = cache.get(namespace, name);
            let seen = match &e.expect {
                Expect::Version(v) => cached.is_some_and(|o| o.resource_version >= *v),
                Expect::Gone(uid) => cached.is_none_or(|o| o.uid() != uid),
            };
            !seen
        });
        let done = entries.is_empty();
        if done {
            owners.remove(owner);
        }
        done
    }

    /// Whether `owner` has writes recorded that no cache showed yet.
    pub fn pending(&self, owner: &str) -> bool {
        self.lock().get(owner).is_some_and(|e| !e.is_empty())
    }

    /// Clears an owner's records (it is gone).
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }

    /// Lowers records from a cache event: a deletion at or past a recorded version means that
    /// version will never be shown.
    pub fn observe(&self, ev: &ReflectorEvent, owner_of: impl Fn(&CachedObject) -> Option<Key>) {
        let ReflectorEvent::Deleted(o) = ev else {
            return;
        };
        let Some(owner) = owner_of(o) else { return };
        let mut owners = self.lock();
        if let Some(entries) = owners.get_mut(&owner)
            && let Some(e) = entries.get(&o.name)
            && matches!(e.expect, Expect::Version(v) if o.resource_version >= v)
        {
            entries.remove(&o.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rudder_client::cache::Store;
    use rudder_client::clock::ManualClock;
    use serde_json::json;

    use super::*;

    fn slice(name: &str, uid: &str, rv: u64) -> Arc<CachedObject> {
        let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": uid}});
        Arc::new(CachedObject::new(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "ns",
            name,
            rv,
            v,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_cache_to_show_each_write() {
        let t = Tracker::new(ManualClock::shared(1));
        let (mut store, cache) = Store::new();
        assert!(t.caught_up("ns/web", &cache, "ns"), "nothing written");
        t.wrote("ns/web", "web-a", 10);
        assert!(t.pending("ns/web") && !t.pending("ns/other"));
        assert!(!t.caught_up("ns/web", &cache, "ns"), "created, not cached");
        store.apply(slice("web-a", "u1", 9));
        assert!(!t.caught_up("ns/web", &cache, "ns"), "an older version");
        assert!(t.caught_up("ns/other", &cache, "ns"), "owners are apart");
        store.apply(slice("web-a", "u1", 12));
        assert!(
            t.caught_up("ns/web", &cache, "ns"),
            "a later version counts"
        );
        assert!(!t.pending("ns/web"));

        t.deleted("ns/web", "web-a", "u1");
        assert!(!t.caught_up("ns/web", &cache, "ns"), "still cached");
        store.apply(slice("web-a", "u2", 20));
        assert!(
            t.caught_up("ns/web", &cache, "ns"),
            "another object of that name"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deletion_or_the_timeout_clears_a_record() {
        let t = Tracker::new(ManualClock::shared(1));
        let (_store, cache) = Store::new();
        let owner = |_: &CachedObject| Some("ns/web".to_string());
        t.wrote("ns/web", "web-a", 10);
        t.observe(&ReflectorEvent::Deleted(slice("web-a", "u1", 9)), owner);
        assert!(
            !t.caught_up("ns/web", &cache, "ns"),
            "deleted before our write"
        );
        t.observe(&ReflectorEvent::Deleted(slice("web-a", "u1", 11)), owner);
        assert!(t.caught_up("ns/web", &cache, "ns"), "deleted after it");

        t.wrote("ns/web", "web-b", 30);
        tokio::time::advance(TIMEOUT - Duration::from_secs(1)).await;
        assert!(!t.caught_up("ns/web", &cache, "ns"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.caught_up("ns/web", &cache, "ns"), "expired");
        t.wrote("ns/web", "web-c", 40);
        t.forget("ns/web");
        assert!(t.caught_up("ns/web", &cache, "ns"));
    }
}
