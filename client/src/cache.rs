//! The informer cache: one writer ([`Store`], owned by a reflector) and any number of cheap,
//! cloneable readers ([`Reader`]), with secondary indexes.
//!
//! Objects are held as `Arc<CachedObject>` (routing keys, resourceVersion and the parsed JSON),
//! keyed by `namespace/name` (just `name` for cluster-scoped objects, as client-go's
//! `MetaNamespaceKeyFunc`). Readers get `Arc` clones, never copies of the JSON, and must treat
//! them as read-only snapshots: to change an object, write it through the API and let the watch
//! bring the new version back.
//!
//! Indexes (client-go's `Indexers`): a named function from an object to the values it is filed
//! under. Every cache has [`INDEX_NAMESPACE`], [`INDEX_OWNER_UID`] (the uids in
//! `metadata.ownerReferences`) and [`INDEX_NODE_NAME`] (`spec.nodeName`, for pods); more may be
//! added at any time with [`Reader::add_index`] (the index is built from the current content at
//! once). Indexes are updated under the same lock as the objects, so a lookup by index always
//! agrees with [`Reader::get`].
//!
//! Guarantees: every read sees a state the writer produced as a whole (a relist swaps the whole
//! map and rebuilds the indexes under one lock); `has_synced` turns true after the first complete
//! list and never back.
//! Caveat: the cache lags the server by the watch's latency, so a reconcile may read an older
//! version than the one it just wrote; conflicts on write are the expected outcome.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rudder_api::meta;
use rudder_api::selector::LabelSelector;
use rudder_api::typed::Object;
use rudder_proto as pb;
use serde_json::Value;
use tokio::sync::watch;

use crate::conn::ClientError;

/// One cached object.
#[derive(Debug)]
pub struct CachedObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: u64,
    /// The whole object, parsed.
    pub value: Value,
    /// The typed decoding, made on first [`CachedObject::typed`] call and shared after.
    typed: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Clone for CachedObject {
    fn clone(&self) -> Self {
        CachedObject::new(
            &self.api_version,
            &self.kind,
            &self.namespace,
            &self.name,
            self.resource_version,
            self.value.clone(),
        )
    }
}

impl PartialEq for CachedObject {
    fn eq(&self, o: &Self) -> bool {
        (&self.api_version, &self.kind, &self.namespace, &self.name)
            == (&o.api_version, &o.kind, &o.namespace, &o.name)
            && self.resource_version == o.resource_version
            && self.value == o.value
    }
}

/// An owner reference, as read from `metadata.ownerReferences`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub controller: bool,
    pub block_owner_deletion: bool,
}

impl CachedObject {
    pub fn new(
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        resource_version: u64,
        value: Value,
    ) -> Self {
        CachedObject {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            resource_version,
            value,
            typed: OnceLock::new(),
        }
    }

    /// Parses a wire object; `None` (with a log) when its JSON is unreadable.
    pub fn from_wire(obj: &pb::Object) -> Option<Self> {
        match crate::api::decode_json(obj) {
            Ok(value) => Some(CachedObject::new(
                &obj.api_version,
                &obj.kind,
                &obj.namespace,
                &obj.name,
                obj.resource_version,
                value,
            )),
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

    pub fn uid(&self) -> &str {
        meta::uid(&self.value)
    }

    /// `metadata.generation` (0 when unset).
    pub fn generation(&self) -> i64 {
        meta::generation(&self.value)
    }

    /// `status.observedGeneration` (0 when unset).
    pub fn observed_generation(&self) -> i64 {
        self.value
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    /// Whether `metadata.deletionTimestamp` is set.
    pub fn is_deleting(&self) -> bool {
        meta::is_deleting(&self.value)
    }

    pub fn finalizers(&self) -> Vec<String> {
        meta::finalizers(&self.value)
    }

    pub fn has_finalizer(&self, name: &str) -> bool {
        self.finalizers().iter().any(|f| f == name)
    }

    /// Every owner reference, in order.
    pub fn owner_references(&self) -> Vec<OwnerRef> {
        let Some(refs) = self
            .value
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        let s = |r: &Value, f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let b = |r: &Value, f: &str| r.get(f).and_then(Value::as_bool).unwrap_or(false);
        refs.iter()
            .map(|r| OwnerRef {
                api_version: s(r, "apiVersion"),
                kind: s(r, "kind"),
                name: s(r, "name"),
                uid: s(r, "uid"),
                controller: b(r, "controller"),
                block_owner_deletion: b(r, "blockOwnerDeletion"),
            })
            .collect()
    }

    /// The owner reference with `controller: true`, if any (at most one is valid).
    pub fn controller_ref(&self) -> Option<OwnerRef> {
        self.owner_references().into_iter().find(|r| r.controller)
    }

    /// Whether `owner` is this object's controller: same group, kind, name and, crucially, uid
    /// (a new owner recreated under the old name does not own its predecessor's objects).
    pub fn is_controlled_by(&self, owner: &CachedObject) -> bool {
        self.controller_ref().is_some_and(|r| {
            r.uid == owner.uid()
                && !r.uid.is_empty()
                && r.kind == owner.kind
                && r.name == owner.name
                && api_group(&r.api_version) == api_group(&owner.api_version)
        })
    }

    /// The object as its k8s-openapi type, decoded on first use and shared by later calls (and
    /// by every reader holding this `Arc`). A type other than the object's own is decoded
    /// afresh each time.
    pub fn typed<T: Object>(&self) -> Result<Arc<T>, ClientError> {
        if let Some(t) = self.typed.get().cloned()
            && let Ok(t) = t.downcast::<T>()
        {
            return Ok(t);
        }
        let decoded = Arc::new(T::from_json(self.value.clone()).map_err(|e| {
            ClientError::Other(format!(
                "cannot read {} {} as {}: {e}",
                self.kind,
                self.key(),
                T::KIND
            ))
        })?);
        if self.kind == T::KIND && api_group(&self.api_version) == api_group(T::API_VERSION) {
            let _ = self.typed.set(decoded.clone());
        }
        Ok(decoded)
    }
}

/// The group of an apiVersion (`apps/v1` → `apps`, `v1` → ``).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
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

/// Files an object under zero or more values of an index.
pub type IndexFn = Arc<dyn Fn(&CachedObject) -> Vec<String> + Send + Sync>;

/// Index of objects by namespace.
pub const INDEX_NAMESPACE: &str = "namespace";
/// Index of objects by the uid of each of their owners.
pub const INDEX_OWNER_UID: &str = "owner-uid";
/// Index of pods by `spec.nodeName` (unbound pods are not filed).
pub const INDEX_NODE_NAME: &str = "spec.nodeName";

fn builtin_indexes() -> Vec<(String, IndexFn)> {
    let ns: IndexFn = Arc::new(|o| vec![o.namespace.clone()]);
    let owners: IndexFn = Arc::new(|o| {
        o.owner_references()
            .into_iter()
            .map(|r| r.uid)
            .filter(|u| !u.is_empty())
            .collect()
    });
    let node: IndexFn = Arc::new(|o| {
        o.value
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(|n| vec![n.to_string()])
            .unwrap_or_default()
    });
    vec![
        (INDEX_NAMESPACE.into(), ns),
        (INDEX_OWNER_UID.into(), owners),
        (INDEX_NODE_NAME.into(), node),
    ]
}

type Map = HashMap<String, Arc<CachedObject>>;

/// One index: its function and value → keys.
struct Index {
    f: IndexFn,
    entries: HashMap<String, HashSet<String>>,
}

impl Index {
    fn insert(&mut self, key: &str, obj: &CachedObject) {
        for v in (self.f)(obj) {
            self.entries.entry(v).or_default().insert(key.to_string());
        }
    }

    fn remove(&mut self, key: &str, obj: &CachedObject) {
        for v in (self.f)(obj) {
            if let Some(keys) = self.entries.get_mut(&v) {
                keys.remove(key);
                if keys.is_empty() {
                    self.entries.remove(&v);
                }
            }
        }
    }
}

struct Content {
    map: Map,
    indexes: HashMap<String, Index>,
}

impl Content {
    fn insert(&mut self, obj: Arc<CachedObject>) -> Option<Arc<CachedObject>> {
        let key = obj.key();
        let prev = self.map.insert(key.clone(), obj.clone());
        for idx in self.indexes.values_mut() {
            if let Some(p) = &prev {
                idx.remove(&key, p);
            }
            idx.insert(&key, &obj);
        }
        prev
    }

    fn remove(&mut self, key: &str) -> Option<Arc<CachedObject>> {
        let prev = self.map.remove(key)?;
        for idx in self.indexes.values_mut() {
            idx.remove(key, &prev);
        }
        Some(prev)
    }
}

struct Shared {
    content: RwLock<Content>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Content> {
        self.content.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Content> {
        self.content.write().unwrap_or_else(|e| e.into_inner())
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

/// An index name was registered twice.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the cache already has an index named \"{0}\"")]
pub struct IndexExists(pub String);

impl Store {
    /// An empty, unsynced cache (with the built-in indexes) and its first reader.
    pub fn new() -> (Store, Reader) {
        let indexes = builtin_indexes()
            .into_iter()
            .map(|(n, f)| {
                let idx = Index {
                    f,
                    entries: HashMap::new(),
                };
                (n, idx)
            })
            .collect();
        let shared = Arc::new(Shared {
            content: RwLock::new(Content {
                map: HashMap::new(),
                indexes,
            }),
        });
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
        self.shared.write().insert(obj)
    }

    /// Removes an object by key; returns what was cached.
    pub fn delete(&mut self, key: &str) -> Option<Arc<CachedObject>> {
        self.shared.write().remove(key)
    }

    /// Replaces the whole content at once (a relist) and marks the cache synced. Returns the
    /// objects that were cached but are not in `objects`: deleted while we were not watching.
    pub fn replace(&mut self, objects: Vec<Arc<CachedObject>>) -> Vec<Arc<CachedObject>> {
        let fresh: Map = objects.into_iter().map(|o| (o.key(), o)).collect();
        let mut content = self.shared.write();
        let old = std::mem::replace(&mut content.map, fresh);
        let Content { map, indexes } = &mut *content;
        for idx in indexes.values_mut() {
            idx.entries.clear();
            for (k, o) in map.iter() {
                idx.insert(k, o);
            }
        }
        let vanished = old
            .into_iter()
            .filter(|(k, _)| !map.contains_key(k))
            .map(|(_, o)| o)
            .collect();
        drop(content);
        self.synced.send_replace(true);
        vanished
    }
}

impl Reader {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedObject>> {
        self.get_key(&object_key(namespace, name))
    }

    pub fn get_key(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.shared.read().map.get(key).cloned()
    }

    /// Every cached object, in no particular order.
    pub fn list(&self) -> Vec<Arc<CachedObject>> {
        self.shared.read().map.values().cloned().collect()
    }

    /// Objects in `namespace` (empty: all) whose labels match `selector`.
    pub fn list_by(&self, namespace: &str, selector: &LabelSelector) -> Vec<Arc<CachedObject>> {
        let candidates = if namespace.is_empty() {
            self.list()
        } else {
            self.by_index(INDEX_NAMESPACE, namespace)
        };
        candidates
            .into_iter()
            .filter(|o| selector.matches(&o.labels()))
            .collect()
    }

    /// Objects filed under `value` in index `index` (none for an unknown index).
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<CachedObject>> {
        let content = self.shared.read();
        let Some(keys) = content
            .indexes
            .get(index)
            .and_then(|i| i.entries.get(value))
        else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| content.map.get(k).cloned())
            .collect()
    }

    /// Objects owned (through any owner reference) by the object with this uid.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<Arc<CachedObject>> {
        self.by_index(INDEX_OWNER_UID, owner_uid)
    }

    /// Adds an index, built at once from the current content and kept up to date after.
    pub fn add_index(&self, name: &str, f: IndexFn) -> Result<(), IndexExists> {
        let mut content = self.shared.write();
        if content.indexes.contains_key(name) {
            return Err(IndexExists(name.to_string()));
        }
        let mut idx = Index {
            f,
            entries: HashMap::new(),
        };
        for (k, o) in &content.map {
            idx.insert(k, o);
        }
        content.indexes.insert(name.to_string(), idx);
        Ok(())
    }

    pub fn keys(&self) -> Vec<String> {
        self.shared.read().map.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.shared.read().map.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, owner_uid: &str) -> Arc<CachedObject> {
        let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                 "uid": owner_uid, "controller": true}]},
            "spec": {"nodeName": node}});
        Arc::new(CachedObject::new("v1", "Pod", "ns", name, 1, v))
    }

    fn names(mut v: Vec<Arc<CachedObject>>) -> Vec<String> {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.iter().map(|o| o.name.clone()).collect()
    }

    #[test]
    fn indexes_follow_applies_deletes_and_relists() {
        let (mut store, reader) = Store::new();
        store.apply(pod("a", "n1", "rs1"));
        store.apply(pod("b", "n1", "rs2"));
        assert_eq!(names(reader.by_index(INDEX_NODE_NAME, "n1")), ["a", "b"]);
        // Moving a pod re-files it.
        store.apply(pod("b", "n2", "rs2"));
        assert_eq!(names(reader.by_index(INDEX_NODE_NAME, "n1")), ["a"]);
        assert_eq!(names(reader.by_index(INDEX_NODE_NAME, "n2")), ["b"]);
        assert_eq!(names(reader.owned_by("rs2")), ["b"]);
        store.delete("ns/a");
        assert!(reader.by_index(INDEX_NODE_NAME, "n1").is_empty());
        assert_eq!(names(reader.by_index(INDEX_NAMESPACE, "ns")), ["b"]);
        store.replace(vec![pod("c", "n1", "rs1")]);
        assert!(
            reader.owned_by("rs2").is_empty(),
            "a relist rebuilds indexes"
        );
        assert_eq!(names(reader.owned_by("rs1")), ["c"]);
    }

    #[test]
    fn a_custom_index_is_built_from_current_content() {
        let (mut store, reader) = Store::new();
        store.apply(pod("a", "n1", "rs1"));
        let by_uid: IndexFn = Arc::new(|o| vec![o.uid().to_string()]);
        reader.add_index("uid", by_uid.clone()).unwrap();
        assert!(reader.add_index("uid", by_uid).is_err());
        store.apply(pod("b", "n1", "rs1"));
        assert_eq!(names(reader.by_index("uid", "u-a")), ["a"]);
        assert_eq!(names(reader.by_index("uid", "u-b")), ["b"]);
    }

    #[test]
    fn control_requires_the_owner_uid() {
        let owner = |uid: &str| {
            CachedObject::new(
                "apps/v1",
                "ReplicaSet",
                "ns",
                "rs",
                1,
                json!({"metadata": {"name": "rs", "namespace": "ns", "uid": uid}}),
            )
        };
        let p = pod("a", "n1", "old-uid");
        assert!(p.is_controlled_by(&owner("old-uid")));
        assert!(
            !p.is_controlled_by(&owner("new-uid")),
            "a ReplicaSet recreated under the same name does not own the old pods"
        );
    }

    #[test]
    fn typed_decoding_is_done_once_and_shared() {
        use rudder_api::k8s_openapi::api::core::v1::Pod;
        let p = pod("a", "n1", "rs1");
        let first = p.typed::<Pod>().unwrap();
        let again = p.typed::<Pod>().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            first.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("n1")
        );
    }
}
