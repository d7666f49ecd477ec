//! One dependent's verdict, as Kubernetes' `attemptToDeleteItem` with background propagation:
//! classify each owner reference as solid (the owner exists with that uid) or dangling (it does
//! not), then delete a dependent with no solid owner, or strip the dangling references from
//! one that keeps a solid owner.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rudder_client::cache::{CachedObject, OwnerRef};
use rudder_client::conn::kind_ref;
use rudder_client::controller::Action;
use rudder_client::proto as pb;
use rudder_client::workqueue::Key;
use serde_json::{Value, json};

use super::Ctx;
use super::kinds::{INDEX_UID, Watched};
use crate::error::Error;

/// Owners confirmed absent that are remembered (Kubernetes' `absentOwnerCache` holds 500).
pub const ABSENT_OWNERS: usize = 500;

/// Owners a live read found gone. A uid never comes back, so "absent" stays true: many
/// dependents of one deleted owner cost one read of it, not one each.
#[derive(Default)]
pub struct AbsentOwners {
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl AbsentOwners {
    fn coordinates(w: &Watched, namespace: &str, r: &OwnerRef) -> String {
        format!("{}/{namespace}/{}/{}", w.id(), r.name, r.uid)
    }

    fn has(&self, id: &str) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.contains(id)
    }

    fn add(&self, id: String) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *g;
        if set.insert(id.clone()) {
            order.push_back(id);
            while order.len() > ABSENT_OWNERS {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

/// What one owner reference is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The owner exists, or cannot be judged (unknown kind, no uid): the dependent stays.
    Solid,
    /// The owner is gone, or was replaced by an object with another uid.
    Dangling,
    /// A cluster-scoped dependent naming a namespaced owner: unresolvable, never collected.
    Invalid,
}

/// Reconciles one dependent by key (`Kind.group/namespace/name`).
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some((kind, obj_key)) = ctx.kinds.resolve(&key) else {
        return Ok(Action::AwaitChange);
    };
    let Some(cached) = kind.reader.get_key(obj_key) else {
        return Ok(Action::AwaitChange);
    };
    if super::propagate::propagating(&cached) {
        return super::propagate::owner(&ctx, &cached).await;
    }
    if cached.is_deleting() {
        return Ok(Action::AwaitChange);
    }
    let refs = cached.owner_references();
    // The common case costs no request: every owner is in its cache with the referenced uid.
    if refs.iter().all(|r| cached_solid(&ctx, &cached, r)) {
        return Ok(Action::AwaitChange);
    }
    // The cached dependent may be behind (an owner added since): judge the live one.
    let Some(latest) = get(&ctx, kind, &cached.namespace, &cached.name).await? else {
        return Ok(Action::AwaitChange);
    };
    if latest.uid() != cached.uid() || latest.is_deleting() {
        // Replaced or going: the new object's own event brings it here if need be.
        return Ok(Action::AwaitChange);
    }
    let refs = latest.owner_references();
    if refs.is_empty() {
        return Ok(Action::AwaitChange);
    }
    let (mut solid, mut dangling) = (0, Vec::new());
    for r in &refs {
        match classify(&ctx, &latest, r).await? {
            Verdict::Solid => solid += 1,
            Verdict::Dangling => dangling.push(r.uid.clone()),
            Verdict::Invalid => {
                invalid_namespace_event(&ctx, &latest, r);
                return Ok(Action::AwaitChange);
            }
        }
    }
    if solid == 0 {
        delete(&ctx, kind, &latest).await?;
    } else if !dangling.is_empty() {
        strip_references(&ctx, &latest, &dangling).await?;
    }
    Ok(Action::AwaitChange)
}

/// Whether the caches alone show `r`'s owner alive (or `r` cannot be judged).
fn cached_solid(ctx: &Ctx, dep: &CachedObject, r: &OwnerRef) -> bool {
    let Some(w) = ctx.kinds.find(&r.api_version, &r.kind) else {
        return true;
    };
    if r.uid.is_empty() || r.name.is_empty() {
        return true;
    }
    if dep.namespace.is_empty() && w.namespaced {
        return false;
    }
    let ns = if w.namespaced {
        dep.namespace.as_str()
    } else {
        ""
    };
    w.reader.get(ns, &r.name).is_some_and(|o| o.uid() == r.uid)
}

/// Kubernetes' `isDangling`: the cache first, then what is known absent, then a live read, so a
/// cache that has not seen an owner yet does not get its dependents deleted.
async fn classify(ctx: &Ctx, dep: &CachedObject, r: &OwnerRef) -> Result<Verdict, Error> {
    let Some(w) = ctx.kinds.find(&r.api_version, &r.kind) else {
        tracing::debug!(kind = %r.kind, api_version = %r.api_version, "owner of an unknown kind counts as present");
        return Ok(Verdict::Solid);
    };
    if r.uid.is_empty() || r.name.is_empty() {
        return Ok(Verdict::Solid);
    }
    if dep.namespace.is_empty() && w.namespaced {
        return Ok(Verdict::Invalid);
    }
    let ns = if w.namespaced {
        dep.namespace.as_str()
    } else {
        ""
    };
    if w.reader.get(ns, &r.name).is_some_and(|o| o.uid() == r.uid) {
        return Ok(Verdict::Solid);
    }
    let coordinates = AbsentOwners::coordinates(w, ns, r);
    if ctx.absent.has(&coordinates) {
        return Ok(Verdict::Dangling);
    }
    let present = match get(ctx, w, ns, &r.name).await? {
        Some(o) => o.uid() == r.uid,
        None => false,
    };
    if present {
        return Ok(Verdict::Solid);
    }
    ctx.absent.add(coordinates);
    if w.namespaced
        && w.reader
            .by_index(INDEX_UID, &r.uid)
            .iter()
            .any(|o| o.namespace != ns)
    {
        // The owner lives in another namespace, which an owner reference cannot reach.
        invalid_namespace_event(ctx, dep, r);
    }
    Ok(Verdict::Dangling)
}

/// A live read; `None` when the object does not exist.
pub(super) async fn get(
    ctx: &Ctx,
    w: &Watched,
    namespace: &str,
    name: &str,
) -> Result<Option<CachedObject>, Error> {
    let req = pb::GetRequest {
        kind: Some(kind_ref(&w.api_version, &w.kind)),
        namespace: namespace.to_string(),
        name: name.to_string(),
        allow_stale: false,
    };
    match ctx.api.get(req).await {
        Ok(o) => Ok(CachedObject::from_wire(&o)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a dependent whose owners are all gone, in the background, guarded by its uid.
pub(super) async fn delete(ctx: &Ctx, w: &Watched, dep: &CachedObject) -> Result<(), Error> {
    tracing::info!(kind = %w.kind, namespace = %dep.namespace, name = %dep.name,
        "deleting an object whose owners are all gone");
    let req = pb::DeleteRequest {
        kind: Some(kind_ref(&w.api_version, &w.kind)),
        namespace: dep.namespace.clone(),
        name: dep.name.clone(),
        precondition_uid: dep.uid().to_string(),
        propagation_policy: "Background".into(),
        ..Default::default()
    };
    match ctx.api.delete(req).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by a new object (the uid precondition): nothing of ours.
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the references to `dangling` owners, keeping every other reference as written. The
/// patch carries the version read, so a dependent changed since is re-judged, not overwritten.
pub(super) async fn strip_references(
    ctx: &Ctx,
    dep: &CachedObject,
    dangling: &[String],
) -> Result<(), Error> {
    let kept: Vec<Value> = dep
        .value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| {
                    let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
                    !dangling.iter().any(|d| d == uid)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(kind = %dep.kind, namespace = %dep.namespace, name = %dep.name,
        removed = ?dangling, "removing references to owners that are gone");
    let patch = json!({"metadata": {
        "resourceVersion": dep.resource_version.to_string(),
        "uid": dep.uid(),
        "ownerReferences": kept,
    }});
    let req = pb::PatchRequest {
        kind: Some(kind_ref(&dep.api_version, &dep.kind)),
        namespace: dep.namespace.clone(),
        name: dep.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: Bytes::from(patch.to_string()),
        status: false,
        options: None,
    };
    match ctx.api.patch(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        // A conflict is retried with back-off, on a fresh read.
        Err(e) => Err(e.into()),
    }
}

/// Kubernetes' `OwnerRefInvalidNamespace` warning on the dependent.
fn invalid_namespace_event(ctx: &Ctx, dep: &CachedObject, r: &OwnerRef) {
    let mut obj = dep.value.clone();
    if let Value::Object(m) = &mut obj {
        m.entry("apiVersion")
            .or_insert_with(|| json!(dep.api_version));
        m.entry("kind").or_insert_with(|| json!(dep.kind));
    }
    let message = format!(
        "ownerRef [{}/{}, namespace: {}, name: {}, uid: {}] does not exist in namespace {:?}",
        r.api_version, r.kind, dep.namespace, r.name, r.uid, dep.namespace
    );
    ctx.events
        .warning(&obj, "OwnerRefInvalidNamespace", &message);
}
