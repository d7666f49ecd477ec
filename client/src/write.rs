//! Write helpers every controller needs, so none builds its own request JSON: status merge
//! patches with observedGeneration, and finalizers (kube-runtime's `finalizer` pattern).
//!
//! Every helper that changes a list (finalizers) sends the object's resourceVersion as a
//! precondition, so a concurrent change of that list is a `Conflict` (retry after the cache
//! caught up) and never a lost update. Status patches carry no precondition: the status
//! belongs to one controller, and a merge patch only touches the fields it names.

use std::future::Future;

use rudder_proto as pb;
use serde_json::{Value, json};

use crate::api::Api;
use crate::cache::CachedObject;
use crate::conn::{ClientError, kind_ref};

fn encode(v: &Value) -> Result<bytes::Bytes, ClientError> {
    serde_json::to_vec(v)
        .map(Into::into)
        .map_err(|e| ClientError::Invalid(format!("unencodable patch: {e}")))
}

fn kind_of(obj: &CachedObject) -> pb::KindRef {
    kind_ref(&obj.api_version, &obj.kind)
}

/// A merge patch of `obj`'s status subresource with `status` (RFC 7386: fields set to `null`
/// are removed, others replaced; lists are replaced whole).
pub async fn patch_status(
    api: &dyn Api,
    obj: &CachedObject,
    status: Value,
) -> Result<pb::Object, ClientError> {
    api.patch(status_patch(obj, &json!({ "status": status }))?)
        .await
}

/// A merge patch request of `obj`'s status subresource.
fn status_patch(obj: &CachedObject, patch: &Value) -> Result<pb::PatchRequest, ClientError> {
    Ok(pb::PatchRequest {
        kind: Some(kind_of(obj)),
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: encode(patch)?,
        status: true,
        options: None,
    })
}

/// [`patch_status`] with `status.observedGeneration` set to the generation that was
/// reconciled, as every Kubernetes controller reports it. Skipped (returning `Ok(None)`) when
/// the object's status already has every field of `status` with the same value and the same
/// observedGeneration: a no-op status write is never sent.
pub async fn patch_status_observed(
    api: &dyn Api,
    obj: &CachedObject,
    status: Value,
) -> Result<Option<pb::Object>, ClientError> {
    observed(api, obj, status, false).await
}

/// [`patch_status_observed`] guarded by the object's resourceVersion: a status computed from a
/// cached version older than the stored one is refused with `Conflict` instead of overwriting
/// a newer status (a merge patch replaces whole lists such as `conditions`). For controllers
/// whose status carries conditions another write of theirs may have just set.
pub async fn patch_status_observed_guarded(
    api: &dyn Api,
    obj: &CachedObject,
    status: Value,
) -> Result<Option<pb::Object>, ClientError> {
    observed(api, obj, status, true).await
}

async fn observed(
    api: &dyn Api,
    obj: &CachedObject,
    mut status: Value,
    guarded: bool,
) -> Result<Option<pb::Object>, ClientError> {
    if let Value::Object(m) = &mut status {
        m.insert("observedGeneration".into(), json!(obj.generation()));
    }
    let current = obj.value.get("status").cloned().unwrap_or(Value::Null);
    if is_subset(&status, &current) {
        return Ok(None);
    }
    let mut patch = json!({ "status": status });
    if guarded {
        patch["metadata"] = json!({"resourceVersion": obj.resource_version.to_string()});
    }
    api.patch(status_patch(obj, &patch)?).await.map(Some)
}

/// Whether every field of `patch` is present in `target` with the same value.
fn is_subset(patch: &Value, target: &Value) -> bool {
    match (patch, target) {
        (Value::Object(p), Value::Object(t)) => p
            .iter()
            .all(|(k, v)| t.get(k).is_some_and(|tv| is_subset(v, tv))),
        (Value::Null, Value::Null) => true,
        _ => patch == target,
    }
}

/// A merge patch that sets `metadata.finalizers` to `finalizers`, guarded by the object's
/// resourceVersion (a merge patch naming `metadata.resourceVersion` is a precondition, as in
/// Kubernetes).
async fn set_finalizers(
    api: &dyn Api,
    obj: &CachedObject,
    finalizers: Vec<String>,
) -> Result<pb::Object, ClientError> {
    let patch = json!({"metadata": {
        "resourceVersion": obj.resource_version.to_string(),
        "finalizers": finalizers,
    }});
    let req = pb::PatchRequest {
        kind: Some(kind_of(obj)),
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        patch_type: pb::PatchType::Merge as i32,
        patch: encode(&patch)?,
        status: false,
        options: None,
    };
    api.patch(req).await
}

/// Adds `finalizer` to `obj` unless present (`Ok(None)` then).
pub async fn add_finalizer(
    api: &dyn Api,
    obj: &CachedObject,
    finalizer: &str,
) -> Result<Option<pb::Object>, ClientError> {
    let mut fs = obj.finalizers();
    if fs.iter().any(|f| f == finalizer) {
        return Ok(None);
    }
    fs.push(finalizer.to_string());
    set_finalizers(api, obj, fs).await.map(Some)
}

/// Removes `finalizer` from `obj` if present (`Ok(None)` when absent). Removing the last
/// finalizer of an object being deleted lets the server delete it.
pub async fn remove_finalizer(
    api: &dyn Api,
    obj: &CachedObject,
    finalizer: &str,
) -> Result<Option<pb::Object>, ClientError> {
    let fs = obj.finalizers();
    if !fs.iter().any(|f| f == finalizer) {
        return Ok(None);
    }
    let rest = fs.into_iter().filter(|f| f != finalizer).collect();
    match set_finalizers(api, obj, rest).await {
        // Already gone: the finalizer no longer holds anything.
        Err(ClientError::NotFound(_)) => Ok(None),
        r => r.map(Some),
    }
}

/// What [`finalize`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalized<T> {
    /// The finalizer was just added; nothing else ran. The watch brings the object back, and
    /// the next reconcile applies it.
    FinalizerAdded,
    /// The object is live and carries the finalizer: `apply` ran.
    Applied(T),
    /// The object is being deleted: `cleanup` ran and succeeded, then the finalizer was
    /// removed.
    CleanedUp(T),
}

/// The finalizer pattern in one call (kube-runtime's `finalizer`):
/// - live object without `finalizer`: add it, and return (the next reconcile applies);
/// - live object with it: run `apply`;
/// - object being deleted, with it: run `cleanup`; only if that succeeds, remove the finalizer
///   (a failed cleanup keeps the object, and the reconcile's error policy retries);
/// - object being deleted without it: nothing of ours is left to clean up: `Ok(None)`.
pub async fn finalize<T, E, A, AF, C, CF>(
    api: &dyn Api,
    obj: &CachedObject,
    finalizer: &str,
    apply: A,
    cleanup: C,
) -> Result<Option<Finalized<T>>, E>
where
    E: From<ClientError>,
    A: FnOnce() -> AF,
    AF: Future<Output = Result<T, E>>,
    C: FnOnce() -> CF,
    CF: Future<Output = Result<T, E>>,
{
    let has = obj.has_finalizer(finalizer);
    match (obj.is_deleting(), has) {
        (false, false) => {
            add_finalizer(api, obj, finalizer).await?;
            Ok(Some(Finalized::FinalizerAdded))
        }
        (false, true) => Ok(Some(Finalized::Applied(apply().await?))),
        (true, true) => {
            let out = cleanup().await?;
            remove_finalizer(api, obj, finalizer).await?;
            Ok(Some(Finalized::CleanedUp(out)))
        }
        (true, false) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_compares_nested_fields() {
        let cur = json!({"replicas": 3, "observedGeneration": 2, "conditions": [{"type": "A"}]});
        assert!(is_subset(
            &json!({"replicas": 3, "observedGeneration": 2}),
            &cur
        ));
        assert!(!is_subset(
            &json!({"replicas": 3, "observedGeneration": 3}),
            &cur
        ));
        assert!(!is_subset(&json!({"readyReplicas": 1}), &cur));
        assert!(!is_subset(&json!({"conditions": []}), &cur));
        assert!(
            !is_subset(&json!({"replicas": 1}), &Value::Null),
            "no status yet"
        );
    }
}
