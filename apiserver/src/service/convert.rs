//! Stored objects shown in the served version a request asked for, converted once.
//!
//! Guarantees:
//! - Objects are stored in their kind's storage version; a request in that version is answered
//!   with the stored bytes as they are, with no conversion.
//! - A request in another served version gets the object converted by the registry entry's
//!   [`rudder_api::convert::Convert`]. A given stored object is converted to a given version at
//!   most once while it is cached: every watcher of that version (and a get or list right after)
//!   shares the converted bytes, so a write costs one conversion per version watched, not one
//!   per watcher. Concurrent requests for the same conversion wait for the first.
//! - The cache is keyed by the identity of the stored bytes (which are immutable, and which the
//!   entry keeps alive, so the identity cannot be reused while cached) and the target version.
//!   It holds at most [`CAPACITY`] conversions; the oldest goes first.
//! - A stored object that cannot be converted (it cannot happen for objects admitted by this
//!   server) is shown in its storage version, labelled as such, and logged: never mislabelled.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use rudder_api::registry::KindInfo;

/// How many conversions are kept.
pub const CAPACITY: usize = 4096;

/// Stored bytes (by address and length) and the target entry (group, version, kind).
type Key = (usize, usize, &'static str, &'static str, &'static str);

/// One conversion: the source it was made from (kept alive) and its result, made once.
type Slot = (Bytes, Arc<OnceLock<Option<Bytes>>>);

#[derive(Default)]
pub(crate) struct Conversions {
    cache: Mutex<Cache>,
    made: AtomicU64,
}

#[derive(Default)]
struct Cache {
    slots: HashMap<Key, Slot>,
    order: VecDeque<Key>,
}

impl Conversions {
    /// The object as `info`'s version shows it: its apiVersion and JSON.
    pub(crate) fn show(&self, info: &KindInfo, stored: &Bytes) -> (String, Bytes) {
        let Some(convert) = info.conversion.as_ref() else {
            return (info.api_version(), stored.clone());
        };
        let key = (
            stored.as_ptr() as usize,
            stored.len(),
            info.group,
            info.version,
            info.kind,
        );
        let once = self.slot(key, stored);
        let converted = once.get_or_init(|| {
            self.made.fetch_add(1, Ordering::Relaxed);
            let result = serde_json::from_slice(stored)
                .map_err(|e| e.to_string())
                .and_then(|v| convert.to_served(v).map_err(|e| e.to_string()))
                .and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string()));
            match result {
                Ok(bytes) => Some(Bytes::from(bytes)),
                Err(error) => {
                    tracing::error!(kind = info.kind, version = info.version, %error,
                        "stored object not convertible; shown in its storage version");
                    None
                }
            }
        });
        match converted {
            Some(bytes) => (info.api_version(), bytes.clone()),
            None => (info.storage_api_version(), stored.clone()),
        }
    }

    /// Conversions made so far (cache misses).
    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    fn slot(&self, key: Key, stored: &Bytes) -> Arc<OnceLock<Option<Bytes>>> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, once)) = cache.slots.get(&key) {
            return once.clone();
        }
        if cache.order.len() >= CAPACITY
            && let Some(old) = cache.order.pop_front()
        {
            cache.slots.remove(&old);
        }
        let once = Arc::new(OnceLock::new());
        cache.slots.insert(key, (stored.clone(), once.clone()));
        cache.order.push_back(key);
        once
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rudder_api::Registry;

    fn hpa(max: i64) -> Bytes {
        Bytes::from(
            serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "h", "resourceVersion": "7"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": max,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}}]}})
            .to_string(),
        )
    }

    #[test]
    fn one_conversion_per_stored_object_and_version() {
        let r = Registry::builtin();
        let v1 = r
            .by_api_version_kind("autoscaling/v1", "HorizontalPodAutoscaler")
            .expect("v1");
        let v2 = r.storage_of(v1).expect("v2");
        let c = Conversions::default();
        let stored = hpa(3);
        let (av, a) = c.show(v1, &stored);
        assert_eq!(av, "autoscaling/v1");
        let (_, b) = c.show(v1, &stored.clone());
        assert_eq!(c.made(), 1, "a clone of the same bytes is the same object");
        assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not re-encoded");
        let shown: serde_json::Value = serde_json::from_slice(&a).expect("json");
        assert_eq!(shown["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(shown["metadata"]["resourceVersion"], "7");
        // The storage version is the stored bytes themselves.
        let (av, same) = c.show(v2, &stored);
        assert_eq!(
            (av.as_str(), same.as_ptr()),
            ("autoscaling/v2", stored.as_ptr())
        );
        // Another stored object (same content, other bytes) is another conversion.
        c.show(v1, &hpa(3));
        assert_eq!(c.made(), 2);
    }

    #[test]
    fn the_cache_is_bounded_and_unconvertible_objects_keep_their_label() {
        let r = Registry::builtin();
        let v1 = r
            .by_api_version_kind("autoscaling/v1", "HorizontalPodAutoscaler")
            .expect("v1");
        let c = Conversions::default();
        let first = hpa(1);
        c.show(v1, &first);
        for i in 0..CAPACITY {
            c.show(v1, &hpa(i as i64 + 2));
        }
        assert_eq!(c.cache.lock().expect("lock").slots.len(), CAPACITY);
        c.show(v1, &first);
        assert_eq!(c.made() as usize, CAPACITY + 2, "the oldest was evicted");
        let broken = Bytes::from_static(b"[1, 2]");
        let (av, shown) = c.show(v1, &broken);
        assert_eq!(
            (av.as_str(), &shown[..]),
            ("autoscaling/v2", &b"[1, 2]"[..])
        );
    }
}
