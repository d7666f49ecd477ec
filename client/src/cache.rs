//! The informer cache: one writer ([`Store`], owned by a reflector) and any number of cheap,
//! cloneable readers ([`Reader`]).
//!
//! Objects are held as `Arc<CachedObject>` (routing keys, resourceVersion and the parsed JSON),
//! keyed by `namespace/name` (just `name` for cluster-scoped objects, as client-go's
//! `MetaNamespaceKeyFunc`). Readers get `Arc` clones, never copies of the JSON, and must treat
//! them as read-only snapshots: to change an object, write it through the API and let the watch
//! bring the new version back.
//!
//! Guarantees: every read sees a state the writer produced as a whole (a relist swaps the whole
//! map under one lock); `has_synced` turns true after the first complete list and never back.
//! Caveat: the cache lags the server by the watch's latency, so a reconcile may read an older
//! version than the one it just wrote; conflicts on write are the expected outcome.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rudder_api::meta;
use rudder_api::selector::LabelSelector;
use rudder_proto as pb;
use serde_json::Value;
use tokio::sync::watch;

/// One cached object.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: u64,
    /// The whole object, parsed.
    pub value: Value,
}

impl CachedObject {
    /// Parses a wire object; `None` (with a log) when its JSON is unreadable.
    pub fn from_wire(obj: &pb::Object) -> Option<Self> {
        match crate::api::decode_json(obj) {
            Ok(value) => Some(CachedObject {
                api_version: obj.api_version.clone(),
                kind: obj.kind.clone(),
                namespace: obj.namespace.clone(),
                name: obj.name.clone(),
                resource_version: obj.resource_version,
                value,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an object the cache cannot decode");
                None
            }
        }
    }

    /// The cache key, `namespace/name` or `name`.
    pub fn key(&self) -> String {
        object_key(&self.namespace, &self.name)
    }

    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        meta::labels(&self.value)
    }
}

/// `namespace/name`, or `name` when the namespace is empty.
pub fn object_key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Splits a key made by [`object_key`] into namespace and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

type Map = HashMap<String, Arc<CachedObject>>;

#[derive(Default)]
struct Shared {
    map: RwLock<Map>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cache's single writer.
pub struct Store {
    shared: Arc<Shared>,
    synced: watch::Sender<bool>,
}

/// A read handle on the cache; clone freely.
#[derive(Clone)]
pub struct Reader {
    shared: Arc<Shared>,
    synced: watch::Receiver<bool>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("len", &self.len())
            .field("synced", &self.has_synced())
            .finish()
    }
}

impl Store {
    /// An empty, unsynced cache and its first reader.
    pub fn new() -> (Store, Reader) {
        let shared = Arc::new(Shared::default());
        let (synced, rx) = watch::channel(false);
        let reader = Reader {
            shared: shared.clone(),
            synced: rx,
        };
        (Store { shared, synced }, reader)
    }

    /// Another reader.
    pub fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
            synced: self.synced.subscribe(),
        }
    }

    /// Inserts or replaces an object; returns the previous version.
    pub fn apply(&mut self, obj: Arc<CachedObject>) -> Option<Arc<CachedObject>> {
        self.shared.write().insert(obj.key(), obj)
    }

    /// Removes an object by key; returns what was cached.
    pub fn delete(&mut self, key: &str) -> Option<Arc<CachedObject>> {
        self.shared.write().remove(key)
    }

    /// Replaces the whole content at once (a relist) and marks the cache synced. Returns the
    /// objects that were cached but are not in `objects`: deleted while we were not watching.
    pub fn replace(&mut self, objects: Vec<Arc<CachedObject>>) -> Vec<Arc<CachedObject>> {
        let fresh: Map = objects.into_iter().map(|o| (o.key(), o)).collect();
        let old = std::mem::replace(&mut *self.shared.write(), fresh);
        let map = self.shared.read();
        let vanished = old
            .into_iter()
            .filter(|(k, _)| !map.contains_key(k))
            .map(|(_, o)| o);
        let vanished = vanished.collect();
        drop(map);
        self.synced.send_replace(true);
        vanished
    }
}

impl Reader {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedObject>> {
        self.get_key(&object_key(namespace, name))
    }

    pub fn get_key(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.shared.read().get(key).cloned()
    }

    /// Every cached object, in no particular order.
    pub fn list(&self) -> Vec<Arc<CachedObject>> {
        self.shared.read().values().cloned().collect()
    }

    /// Objects in `namespace` (empty: all) whose labels match `selector`.
    pub fn list_by(&self, namespace: &str, selector: &LabelSelector) -> Vec<Arc<CachedObject>> {
        let map = self.shared.read();
        map.values()
            .filter(|o| namespace.is_empty() || o.namespace == namespace)
            .filter(|o| selector.matches(&o.labels()))
            .cloned()
            .collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.shared.read().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.shared.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first complete list has been loaded.
    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first complete list. Returns false if the writer was dropped before.
    pub async fn wait_until_synced(&self) -> bool {
        let mut rx = self.synced.clone();
        rx.wait_for(|s| *s).await.is_ok()
    }
}
