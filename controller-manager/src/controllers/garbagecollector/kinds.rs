//! The kinds the garbage collector watches, how it finds one from an owner reference, and how
//! its work-queue keys name an object of any of them.
//!
//! [`WATCHED`] is the one list: every kind listed is watched as a possible dependent and known
//! as an owner. An owner reference to a kind not in it is treated as a live owner, so the
//! collector never deletes out of ignorance. [`IGNORED`] names the registry's kinds left out on
//! purpose; a unit test holds the two lists to the registry, so a new kind is a decision.

use std::collections::HashMap;
use std::sync::Arc;

use rudder_api::registry::Registry;
use rudder_client::cache::{CachedObject, IndexFn, Reader, api_group};
use rudder_client::informer::{Informer, InformerFactory};
use rudder_client::workqueue::Key;

/// Every kind that can be a dependent, as `(apiVersion, kind)` in its storage version.
pub const WATCHED: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "Service"),
    ("v1", "Endpoints"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "PersistentVolume"),
    ("v1", "ReplicationController"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "ControllerRevision"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "IngressClass"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("coordination.k8s.io/v1", "Lease"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("policy/v1", "PodDisruptionBudget"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
];

/// Registry kinds not watched: Events, as Kubernetes' default ignored resources (they churn,
/// and expire on their own).
pub const IGNORED: &[(&str, &str)] = &[("v1", "Event")];

/// Index of objects by the kind of each owner they reference (`ReplicaSet.apps`, `Node`), to
/// re-check every dependent of a kind after that kind's cache relisted.
pub const INDEX_OWNER_KIND: &str = "gc-owner-kind";
/// Index of objects by uid, to tell an owner in another namespace from an absent one.
pub const INDEX_UID: &str = "gc-uid";

/// `Kind` for the core group, else `Kind.group`: the kind's part of a key and of the owner-kind
/// index.
pub fn kind_id(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// One watched kind.
pub struct Watched {
    pub api_version: String,
    pub kind: String,
    pub group: String,
    pub namespaced: bool,
    pub reader: Reader,
}

impl Watched {
    pub fn id(&self) -> String {
        kind_id(&self.group, &self.kind)
    }

    /// The work-queue key of an object of this kind: `Kind.group/namespace/name`
    /// (`ReplicaSet.apps/default/web`, `Pod/default/web-x`, `Node/node-1`).
    pub fn key(&self, obj: &CachedObject) -> Key {
        format!("{}/{}", self.id(), obj.key())
    }
}

/// The watched kinds with their caches.
pub struct Kinds {
    list: Vec<Watched>,
    by_id: HashMap<String, usize>,
}

impl Kinds {
    /// Kinds over given caches: `(apiVersion, kind, namespaced, cache)`. The runner uses
    /// [`Kinds::from_informers`]; tests may hand in caches they fill themselves.
    pub fn new(entries: Vec<(String, String, bool, Reader)>) -> Kinds {
        let list: Vec<Watched> = entries
            .into_iter()
            .map(|(api_version, kind, namespaced, reader)| Watched {
                group: api_group(&api_version).to_string(),
                api_version,
                kind,
                namespaced,
                reader,
            })
            .collect();
        let by_id = list.iter().enumerate().map(|(i, w)| (w.id(), i)).collect();
        Kinds { list, by_id }
    }

    /// The shared informer of every [`WATCHED`] kind the registry serves, with the collector's
    /// indexes added to each cache.
    pub fn from_informers(factory: &InformerFactory) -> (Kinds, Vec<Informer>) {
        let registry = Registry::builtin();
        let mut entries = Vec::new();
        let mut informers = Vec::new();
        for &(api_version, kind) in WATCHED {
            let Ok(info) = registry.by_api_version_kind(api_version, kind) else {
                // Watching a kind the server does not serve would keep the collector waiting
                // for a cache that never syncs.
                tracing::warn!(api_version, kind, "not a served kind; not collecting it");
                continue;
            };
            let inf = factory.for_kind(api_version, kind);
            inf.ensure_index(INDEX_OWNER_KIND, owner_kind_index());
            inf.ensure_index(INDEX_UID, uid_index());
            entries.push((
                api_version.to_string(),
                kind.to_string(),
                info.namespaced,
                inf.reader(),
            ));
            informers.push(inf);
        }
        (Kinds::new(entries), informers)
    }

    pub fn all(&self) -> &[Watched] {
        &self.list
    }

    /// The watched kind an owner reference names: same group and kind, any version (a
    /// reference may name an older version of the kind).
    pub fn find(&self, api_version: &str, kind: &str) -> Option<&Watched> {
        self.by_id
            .get(&kind_id(api_group(api_version), kind))
            .map(|&i| &self.list[i])
    }

    /// The watched kind and cache key a work-queue key names.
    pub fn resolve<'a>(&self, key: &'a str) -> Option<(&Watched, &'a str)> {
        let (id, rest) = key.split_once('/')?;
        let w = self.by_id.get(id).map(|&i| &self.list[i])?;
        Some((w, rest))
    }
}

pub fn owner_kind_index() -> IndexFn {
    Arc::new(|o| {
        let mut ids: Vec<String> = o
            .owner_references()
            .iter()
            .map(|r| kind_id(api_group(&r.api_version), &r.kind))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    })
}

pub fn uid_index() -> IndexFn {
    Arc::new(|o| {
        let uid = o.uid();
        if uid.is_empty() {
            Vec::new()
        } else {
            vec![uid.to_string()]
        }
    })
}

#[cfg(test)]
mod tests {
    use rudder_client::cache::Store;

    use super::*;

    #[test]
    fn the_lists_cover_the_registry() {
        let registry = Registry::builtin();
        for &(av, kind) in WATCHED.iter().chain(IGNORED) {
            let info = registry
                .by_api_version_kind(av, kind)
                .unwrap_or_else(|e| panic!("{av} {kind}: {e}"));
            assert!(info.is_storage(), "{av} {kind} is not the storage version");
        }
        for k in registry.kinds() {
            let me = (k.api_version(), k.kind.to_string());
            let listed =
                |l: &[(&str, &str)]| l.iter().any(|&(a, b)| (a.to_string(), b.into()) == me);
            assert!(
                listed(WATCHED) != listed(IGNORED),
                "{} {} must be in exactly one of WATCHED and IGNORED",
                me.0,
                me.1
            );
        }
    }

    #[test]
    fn keys_name_the_kind_and_the_object() {
        let (_s1, pods) = Store::new();
        let (_s2, nodes) = Store::new();
        let (_s3, sets) = Store::new();
        let kinds = Kinds::new(vec![
            ("v1".into(), "Pod".into(), true, pods),
            ("v1".into(), "Node".into(), false, nodes),
            ("apps/v1".into(), "ReplicaSet".into(), true, sets),
        ]);
        let obj =
            |ns: &str, name: &str| CachedObject::new("", "", ns, name, 1, serde_json::json!({}));
        let (pod, node, rs) = (&kinds.all()[0], &kinds.all()[1], &kinds.all()[2]);
        assert_eq!(pod.key(&obj("ns", "p")), "Pod/ns/p");
        assert_eq!(node.key(&obj("", "n1")), "Node/n1");
        assert_eq!(rs.key(&obj("ns", "r")), "ReplicaSet.apps/ns/r");
        let (w, k) = kinds.resolve("ReplicaSet.apps/ns/r").unwrap();
        assert_eq!(
            (w.kind.as_str(), w.namespaced, k),
            ("ReplicaSet", true, "ns/r")
        );
        let (w, k) = kinds.resolve("Node/n1").unwrap();
        assert_eq!((w.kind.as_str(), w.namespaced, k), ("Node", false, "n1"));
        assert!(kinds.resolve("Widget.example.com/ns/w").is_none());
        // Any version of a known group and kind is that kind; another group is not.
        assert!(kinds.find("apps/v1beta2", "ReplicaSet").is_some());
        assert!(kinds.find("extensions/v1beta1", "ReplicaSet").is_none());
        assert!(kinds.find("v1", "ReplicaSet").is_none());
    }
}
