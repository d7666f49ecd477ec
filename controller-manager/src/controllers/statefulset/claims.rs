//! A StatefulSet's PersistentVolumeClaims: made before their pod and kept across restarts,
//! rescheduling and scale-down; owner references per `persistentVolumeClaimRetentionPolicy`
//! as Kubernetes sets them (`createPersistentVolumeClaims`, `UpdatePodClaimForRetentionPolicy`,
//! `PodClaimIsStale`).
//!
//! Kubernetes leaves the deletion of claims whose owners are gone to its garbage collector.
//! Rudder has none yet, so [`collect_scaled_down`] and [`collect_for_deleted_set`] do that
//! collector's work for these claims: a claim whose every owner (the set, a pod of the set) is
//! gone is deleted, and a claim still held by an earlier pod of the same name is deleted before
//! the new pod is made ([`delete_stale`]).

use std::sync::Arc;

use bytes::Bytes;
use rudder_client::ClientError;
use rudder_client::cache::{CachedObject, INDEX_NAMESPACE, split_key};
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use super::identity::{self, claims, in_range, is_member, is_stale, wanted_claim_refs};
use super::{Ctx, Ss};
use crate::error::Error;
use crate::util::merge_patch;

fn claim_event(ctx: &Ctx, ss: &Ss, claim: &str, pod: &str, err: Option<&ClientError>) {
    match err {
        None => {
            let m = format!(
                "create Claim {claim} Pod {pod} in StatefulSet {} success",
                ss.obj.name
            );
            ctx.events.normal(&ss.obj.value, "SuccessfulCreate", &m);
        }
        Some(e) => {
            let m = format!(
                "create Claim {claim} for Pod {pod} in StatefulSet {} failed error: {e}",
                ss.obj.name
            );
            ctx.events.warning(&ss.obj.value, "FailedCreate", &m);
        }
    }
}

/// Creates the claims of the pod with `ordinal` that do not exist yet; a claim being deleted is
/// an error (retried) until it is gone.
pub async fn create_missing(ctx: &Ctx, ss: &Ss, ordinal: i64, pod: &str) -> Result<(), Error> {
    for (_, mut body) in claims(ss, ordinal) {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match ctx.claims.get(&ss.obj.namespace, &name) {
            Some(c) if c.is_deleting() => {
                return Err(ClientError::Conflict(format!("pvc {name} is being deleted")).into());
            }
            Some(_) => continue,
            None => {}
        }
        if ss.retention.when_deleted && in_range(ss, ordinal) {
            body["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "name": ss.obj.name, "uid": ss.obj.uid(),
            }]);
        }
        let req = pb::CreateRequest {
            kind: Some(kind_ref("v1", "PersistentVolumeClaim")),
            namespace: ss.obj.namespace.clone(),
            json: Bytes::from(body.to_string()),
            options: None,
        };
        match ctx.api.create(req).await {
            Ok(_) => claim_event(ctx, ss, &name, pod, None),
            // Made already; the cache had not seen it.
            Err(ClientError::AlreadyExists(_)) => {}
            Err(e) => {
                claim_event(ctx, ss, &name, pod, Some(&e));
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Brings the owner references of `pod`'s claims in line with the retention policy.
pub async fn fix_refs(ctx: &Ctx, ss: &Ss, pod: &CachedObject) -> Result<(), Error> {
    let Some(ord) = identity::ordinal(pod) else {
        return Ok(());
    };
    for (_, body) in claims(ss, ord) {
        let name = body["metadata"]["name"].as_str().unwrap_or_default();
        let Some(claim) = ctx.claims.get(&ss.obj.namespace, name) else {
            continue;
        };
        let Some(refs) = wanted_claim_refs(ss, &claim, &pod.value) else {
            continue;
        };
        let patch = json!({"metadata": {
            "resourceVersion": claim.resource_version.to_string(),
            "ownerReferences": refs,
        }});
        match ctx.api.patch(merge_patch(&claim, &patch)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn delete_claim(ctx: &Ctx, claim: &CachedObject) -> Result<bool, Error> {
    let req = pb::DeleteRequest {
        kind: Some(kind_ref("v1", "PersistentVolumeClaim")),
        namespace: claim.namespace.clone(),
        name: claim.name.clone(),
        precondition_uid: claim.uid().to_string(),
        ..Default::default()
    };
    match ctx.api.delete(req).await {
        Ok(_) => {
            tracing::info!(claim = %claim.key(), "deleted a claim whose owners are gone");
            Ok(true)
        }
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Under `whenScaled: Delete`, deletes claims of the missing pod with `ordinal` that an earlier
/// pod of that name still holds; whether any was found (the pod must wait for them to go).
pub async fn delete_stale(ctx: &Ctx, ss: &Ss, ordinal: i64) -> Result<bool, Error> {
    if !ss.retention.when_scaled {
        return Ok(false);
    }
    let pod = identity::pod_name(&ss.obj.name, ordinal);
    let mut found = false;
    for (_, body) in claims(ss, ordinal) {
        let name = body["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(c) = ctx.claims.get(&ss.obj.namespace, name)
            && is_stale(&c, &pod, "")
        {
            found = true;
            if !c.is_deleting() {
                delete_claim(ctx, &c).await?;
            }
        }
    }
    Ok(found)
}

/// Whether the owner a reference names is gone: a pod or StatefulSet no longer cached with
/// that uid. Owners of other kinds are taken to exist.
fn owner_gone(ctx: &Ctx, ns: &str, r: &Value) -> bool {
    let (kind, name, uid) = (
        r.get("kind").and_then(Value::as_str).unwrap_or(""),
        r.get("name").and_then(Value::as_str).unwrap_or(""),
        r.get("uid").and_then(Value::as_str).unwrap_or(""),
    );
    let cached = match kind {
        "Pod" => ctx.pods.get(ns, name),
        "StatefulSet" => ctx.sets.get(ns, name),
        _ => return false,
    };
    cached.is_none_or(|o| o.uid() != uid)
}

fn all_owners_gone(ctx: &Ctx, claim: &CachedObject) -> bool {
    let refs = claim
        .value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    !refs.is_empty() && refs.iter().all(|r| owner_gone(ctx, &claim.namespace, r))
}

/// Deletes the set's claims whose owner pods (set there by a scale-down under
/// `whenScaled: Delete`) are all gone.
pub async fn collect_scaled_down(ctx: &Ctx, ss: &Ss) -> Result<(), Error> {
    if !ss.retention.when_scaled {
        return Ok(());
    }
    let ours: Vec<Arc<CachedObject>> = ctx
        .claims
        .by_index(INDEX_NAMESPACE, &ss.obj.namespace)
        .into_iter()
        .filter(|c| !c.is_deleting() && ss.selector.matches(&c.labels()))
        .filter(|c| {
            c.owner_references()
                .iter()
                .any(|r| r.kind == "Pod" && is_member(&ss.obj.name, &r.name))
        })
        .collect();
    for c in ours {
        if all_owners_gone(ctx, &c) {
            delete_claim(ctx, &c).await?;
        }
    }
    Ok(())
}

/// After the StatefulSet `key` is gone: deletes claims it owned (`whenDeleted: Delete`) whose
/// every owner is gone.
pub async fn collect_for_deleted_set(ctx: &Ctx, key: &str) -> Result<(), Error> {
    let (ns, name) = split_key(key);
    let owned: Vec<Arc<CachedObject>> = ctx
        .claims
        .by_index(INDEX_NAMESPACE, ns)
        .into_iter()
        .filter(|c| !c.is_deleting())
        .filter(|c| {
            c.owner_references()
                .iter()
                .any(|r| r.kind == "StatefulSet" && r.name == name)
        })
        .collect();
    for c in owned {
        if all_owners_gone(ctx, &c) {
            delete_claim(ctx, &c).await?;
        }
    }
    Ok(())
}
