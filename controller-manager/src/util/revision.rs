//! ControllerRevision history for DaemonSets and StatefulSets, as Kubernetes' `history` package
//! and the two controllers keep it.
//!
//! A revision (apps/v1 ControllerRevision) records one pod template of its owner: `data` is the
//! patch `{"spec": {"template": {..., "$patch": "replace"}}}` that puts the template back, and
//! `revision` its number, one above every older revision's. It is named `<owner>-<hash>` (the
//! hash of `data` and the owner's `status.collisionCount`), labelled with the template's labels
//! and `controller.kubernetes.io/hash`, carries the owner's annotations (so
//! `kubernetes.io/change-cause` reaches `rollout history`) and a controller reference to it.
//!
//! A name already taken by a revision with other data is a hash collision: the collision count
//! goes up and the next name is tried. Rolling back to an old template reuses its revision and
//! raises its number. Old revisions beyond `revisionHistoryLimit` that no pod uses are deleted,
//! oldest first.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rudder_client::cache::CachedObject;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use rudder_client::{Api, ClientError};
use serde_json::{Map, Value, json};

use super::hash::template_hash;
use super::merge_patch;
use super::template::controller_ref;
use crate::error::Error;

/// The label every revision carries with its hash (`history.ControllerRevisionHashLabel`).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// The label naming a pod's revision (`apps.ControllerRevisionHashLabelKey`): the revision's
/// hash for DaemonSet pods, its name for StatefulSet pods.
pub const POD_REVISION_LABEL: &str = "controller-revision-hash";
/// Kubernetes' default `revisionHistoryLimit`.
pub const DEFAULT_HISTORY_LIMIT: i64 = 10;
/// Hash collisions tried before giving up on one reconcile.
const MAX_COLLISIONS: usize = 16;

/// The patch a revision stores for `template`: the whole template, replacing the owner's.
pub fn patch_for(template: &Value) -> Value {
    let mut t = match template {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    t.insert("$patch".into(), json!("replace"));
    json!({"spec": {"template": t}})
}

/// The pod template a revision records (its patch without the `$patch` directive).
pub fn template_of(cr: &CachedObject) -> Value {
    let mut t = cr
        .value
        .pointer("/data/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// The revision's number.
pub fn number(cr: &CachedObject) -> i64 {
    cr.value
        .get("revision")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// Whether the revision records exactly `data`.
pub fn records(cr: &CachedObject, data: &Value) -> bool {
    cr.value.get("data") == Some(data)
}

/// Oldest first: by number, then creation time, then name (`SortControllerRevisions`).
pub fn sort(revs: &mut [Arc<CachedObject>]) {
    let created = |o: &CachedObject| {
        o.value
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    revs.sort_by(|a, b| {
        number(a)
            .cmp(&number(b))
            .then_with(|| created(a).cmp(&created(b)))
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// One above the highest number in `revs` (1 for none).
pub fn next_number(revs: &[Arc<CachedObject>]) -> i64 {
    revs.iter().map(|r| number(r)).max().unwrap_or(0) + 1
}

/// The hash naming a revision of `data` under `collision_count`.
pub fn hash_of(data: &Value, collision_count: i64) -> String {
    template_hash(data, Some(collision_count))
}

/// `<owner>-<hash>`, the owner's name cut so the whole stays a valid name
/// (`ControllerRevisionName`).
pub fn name_for(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// Labels for a new revision: the owner's template's, and the hash under [`HASH_LABEL`] and
/// `also_hash` (the DaemonSet controller's `controller-revision-hash`).
pub struct Labels<'a> {
    pub template: &'a BTreeMap<String, String>,
    pub also_hash: Option<&'a str>,
}

/// A new revision of `owner` recording `data` as number `n`, labelled as `labels` says and
/// annotated as the owner.
pub fn build(owner: &CachedObject, labels: &Labels, data: &Value, n: i64, hash: &str) -> Value {
    let mut m: Map<String, Value> = labels
        .template
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    m.insert(HASH_LABEL.into(), json!(hash));
    if let Some(k) = labels.also_hash {
        m.insert(k.into(), json!(hash));
    }
    let labels = m;
    let mut meta = json!({
        "name": name_for(&owner.name, hash),
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [controller_ref(&owner.value)],
    });
    if let Some(a) = owner.value.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": meta,
        "data": data,
        "revision": n,
    })
}

/// Creates the revision of `owner` recording `data` as number `n`, trying further names while
/// another revision holds the name with other data; `collision_count` is raised for each such
/// collision (the caller records it in the owner's status). A name held by the owner's own
/// revision of the same data (the cache had not seen it yet) is that revision.
pub async fn create(
    api: &dyn Api,
    owner: &CachedObject,
    labels: &Labels<'_>,
    data: &Value,
    n: i64,
    collision_count: &mut i64,
) -> Result<Arc<CachedObject>, Error> {
    for _ in 0..MAX_COLLISIONS {
        let hash = hash_of(data, *collision_count);
        let body = build(owner, labels, data, n, &hash);
        let req = pb::CreateRequest {
            kind: Some(kind_ref("apps/v1", "ControllerRevision")),
            namespace: owner.namespace.clone(),
            json: Bytes::from(body.to_string()),
            options: None,
        };
        match api.create(req).await {
            Ok(o) => return wire(&o),
            Err(ClientError::AlreadyExists(_)) => {
                let got = api
                    .get(pb::GetRequest {
                        kind: Some(kind_ref("apps/v1", "ControllerRevision")),
                        namespace: owner.namespace.clone(),
                        name: name_for(&owner.name, &hash),
                        allow_stale: false,
                    })
                    .await?;
                let existing = wire(&got)?;
                if existing.is_controlled_by(owner) && records(&existing, data) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid(format!(
        "{} {}: {MAX_COLLISIONS} revision name collisions in a row",
        owner.kind,
        owner.key()
    )))
}

fn wire(o: &pb::Object) -> Result<Arc<CachedObject>, Error> {
    CachedObject::from_wire(o)
        .map(Arc::new)
        .ok_or_else(|| Error::Invalid(format!("unreadable ControllerRevision {}", o.name)))
}

/// Gives `cr` the number `n` (a rollback to its template), guarded by its resourceVersion.
pub async fn renumber(
    api: &dyn Api,
    cr: &CachedObject,
    n: i64,
) -> Result<Arc<CachedObject>, Error> {
    let patch = json!({
        "metadata": {"resourceVersion": cr.resource_version.to_string()},
        "revision": n,
    });
    wire(&api.patch(merge_patch(cr, &patch)).await?)
}

/// Deletes `cr` if it is still the version seen; gone or changed meanwhile is fine (the next
/// reconcile looks again).
pub async fn delete(api: &dyn Api, cr: &CachedObject) -> Result<(), Error> {
    let req = pb::DeleteRequest {
        kind: Some(kind_ref("apps/v1", "ControllerRevision")),
        namespace: cr.namespace.clone(),
        name: cr.name.clone(),
        precondition_uid: cr.uid().to_string(),
        ..Default::default()
    };
    match api.delete(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How the history limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The limit is on revisions neither current nor used by a pod (StatefulSet's
    /// `truncateHistory`).
    Unused,
    /// The limit is on every non-current revision, but only unused ones are deleted
    /// (DaemonSet's `cleanupHistory`).
    AllOld,
}

/// The revisions to delete from `revs` (sorted oldest first) so that `limit` remain, never one
/// that `keep` holds (current, update, or used by a live pod).
pub fn surplus(
    revs: &[Arc<CachedObject>],
    keep: impl Fn(&CachedObject) -> bool,
    is_current: impl Fn(&CachedObject) -> bool,
    limit: i64,
    rule: Limit,
) -> Vec<Arc<CachedObject>> {
    let limit = limit.max(0) as usize;
    let unused: Vec<&Arc<CachedObject>> =
        revs.iter().filter(|r| !is_current(r) && !keep(r)).collect();
    let counted = match rule {
        Limit::Unused => unused.len(),
        Limit::AllOld => revs.iter().filter(|r| !is_current(r)).count(),
    };
    let n = counted.saturating_sub(limit).min(unused.len());
    unused.into_iter().take(n).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, n: i64, data: Value) -> Arc<CachedObject> {
        let v = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")},
            "data": data, "revision": n});
        Arc::new(CachedObject::new(
            "apps/v1",
            "ControllerRevision",
            "ns",
            name,
            1,
            v,
        ))
    }

    #[test]
    fn a_revision_records_the_template_as_a_replace_patch() {
        let t = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let data = patch_for(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let owner = CachedObject::new(
            "apps/v1",
            "StatefulSet",
            "ns",
            "web",
            3,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "web", "namespace": "ns", "uid": "s1",
                "annotations": {"kubernetes.io/change-cause": "v1"}}}),
        );
        let template = BTreeMap::from([("app".to_string(), "a".to_string())]);
        let labels = Labels {
            template: &template,
            also_hash: Some(POD_REVISION_LABEL),
        };
        let hash = hash_of(&data, 0);
        let body = build(&owner, &labels, &data, 4, &hash);
        assert_eq!(body["metadata"]["labels"][POD_REVISION_LABEL], hash);
        assert_eq!(body["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(body["metadata"]["labels"][HASH_LABEL], hash);
        assert_eq!(body["metadata"]["labels"]["app"], "a");
        assert_eq!(
            body["metadata"]["annotations"]["kubernetes.io/change-cause"],
            "v1"
        );
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "s1");
        assert_eq!(body["revision"], 4);
        let cr = rev("web-x", 4, body["data"].clone());
        assert_eq!(
            template_of(&cr),
            t,
            "the template comes back without $patch"
        );
        assert!(records(&cr, &data));
        assert_ne!(hash_of(&data, 0), hash_of(&data, 1), "collisions rename");
    }

    #[test]
    fn order_numbers_and_history_limits() {
        let mut revs = vec![
            rev("c", 3, json!(3)),
            rev("a", 1, json!(1)),
            rev("b", 2, json!(2)),
        ];
        sort(&mut revs);
        let names: Vec<&str> = revs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(next_number(&revs), 4);
        assert_eq!(next_number(&[]), 1);

        let current = |r: &CachedObject| r.name == "c";
        let used = |r: &CachedObject| r.name == "a";
        // Limit 0: every unused old revision goes, never a used or the current one.
        let gone = surplus(&revs, used, current, 0, Limit::Unused);
        assert_eq!(
            gone.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // Limit 1: one unused revision may stay under the StatefulSet rule; the DaemonSet
        // rule counts the used one too, so the unused one still goes.
        assert!(surplus(&revs, used, current, 1, Limit::Unused).is_empty());
        assert_eq!(surplus(&revs, used, current, 1, Limit::AllOld).len(), 1);
        assert!(surplus(&revs, used, current, 2, Limit::AllOld).is_empty());
    }

    #[tokio::test]
    async fn create_reuses_its_own_revision_and_steps_over_collisions() {
        use rudder_client::fake::FakeApi;
        let api = FakeApi::new();
        let owner_json = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "ds", "namespace": "ns", "uid": "d1"}});
        let owner = CachedObject::new("apps/v1", "DaemonSet", "ns", "ds", 1, owner_json);
        let none = BTreeMap::new();
        let labels = Labels {
            template: &none,
            also_hash: None,
        };
        let data = patch_for(&json!({"spec": {"containers": []}}));
        let mut count = 0;
        let first = create(api.as_ref(), &owner, &labels, &data, 1, &mut count)
            .await
            .unwrap();
        assert_eq!(count, 0);
        // The cache had not seen it: the same call finds it.
        let again = create(api.as_ref(), &owner, &labels, &data, 1, &mut count)
            .await
            .unwrap();
        assert_eq!((again.uid(), count), (first.uid(), 0));
        // Another owner's revision under the name this data hashes to: a collision.
        let other = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "ds", "namespace": "ns", "uid": "d2"}});
        let other = CachedObject::new("apps/v1", "DaemonSet", "ns", "ds", 1, other);
        let data2 = patch_for(&json!({"spec": {"containers": [{"name": "x"}]}}));
        let squatter = build(&other, &labels, &json!("foreign"), 1, &hash_of(&data2, 0));
        api.create(pb::CreateRequest {
            kind: Some(kind_ref("apps/v1", "ControllerRevision")),
            namespace: "ns".into(),
            json: Bytes::from(squatter.to_string()),
            options: None,
        })
        .await
        .unwrap();
        let second = create(api.as_ref(), &owner, &labels, &data2, 2, &mut count)
            .await
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(second.name, name_for("ds", &hash_of(&data2, 1)));
        assert!(second.is_controlled_by(&owner));
    }
}
