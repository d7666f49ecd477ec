//! Claiming: an owner adopts matching orphans and releases objects that stopped matching, by
//! adding or removing its controller reference (Kubernetes' `ControllerRefManager`).
//!
//! Every write carries the object's resourceVersion as a precondition, so an object changed
//! meanwhile (say, adopted by another owner) is a conflict and the reconcile retries on fresh
//! caches; nothing is taken from another owner. Before the first adoption the owner is read
//! afresh from the server (`canAdopt`): an owner deleted, or deleted and recreated under the same
//! name, since the cache saw it must not adopt anything.

use std::sync::Arc;

use rudder_api::selector::LabelSelector;
use rudder_client::Api;
use rudder_client::ClientError;
use rudder_client::cache::CachedObject;
use rudder_client::conn::kind_ref;
use rudder_client::proto as pb;
use serde_json::{Value, json};

use crate::error::Error;
use crate::util::merge_patch;
use crate::util::owner::{Claim, decide};
use crate::util::template::controller_ref;

fn refs_without(obj: &CachedObject, uid: &str) -> Vec<Value> {
    obj.value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the owner as stored now is the one cached: same uid, not being deleted.
async fn can_adopt(api: &dyn Api, owner: &CachedObject) -> Result<(), Error> {
    let fresh = api
        .get(pb::GetRequest {
            kind: Some(kind_ref(&owner.api_version, &owner.kind)),
            namespace: owner.namespace.clone(),
            name: owner.name.clone(),
        })
        .await?;
    let fresh = CachedObject::from_wire(&fresh)
        .ok_or_else(|| Error::Invalid(format!("{} {} is unreadable", owner.kind, owner.key())))?;
    if fresh.uid() != owner.uid() {
        return Err(ClientError::Conflict(format!(
            "original {} {} is gone: got uid {}, wanted {}",
            owner.kind,
            owner.key(),
            fresh.uid(),
            owner.uid()
        ))
        .into());
    }
    if fresh.is_deleting() {
        return Err(ClientError::Conflict(format!(
            "{} {} has just been deleted",
            owner.kind,
            owner.key()
        ))
        .into());
    }
    Ok(())
}

/// Claims among `candidates` (objects in the owner's namespace): returns the ones the owner
/// controls afterwards, adopted ones in their new version.
pub async fn claim(
    api: &dyn Api,
    owner: &CachedObject,
    selector: &LabelSelector,
    candidates: Vec<Arc<CachedObject>>,
) -> Result<Vec<Arc<CachedObject>>, Error> {
    let mut owned = Vec::new();
    let mut checked = false;
    for obj in candidates {
        match decide(&obj, owner, selector.matches(&obj.labels())) {
            Claim::Owned => owned.push(obj),
            Claim::Ignore => {}
            Claim::Adopt => {
                if !checked {
                    can_adopt(api, owner).await?;
                    checked = true;
                }
                let mut refs = refs_without(&obj, owner.uid());
                refs.push(controller_ref(&owner.value));
                let patch = json!({"metadata": {
                    "resourceVersion": obj.resource_version.to_string(),
                    "ownerReferences": refs,
                }});
                match api.patch(merge_patch(&obj, &patch)).await {
                    Ok(o) => {
                        tracing::info!(owner = %owner.key(), object = %obj.key(), "adopted");
                        if let Some(o) = CachedObject::from_wire(&o) {
                            owned.push(Arc::new(o));
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Claim::Release => {
                let patch = json!({"metadata": {
                    "resourceVersion": obj.resource_version.to_string(),
                    "ownerReferences": refs_without(&obj, owner.uid()),
                }});
                match api.patch(merge_patch(&obj, &patch)).await {
                    Ok(_) => {
                        tracing::info!(owner = %owner.key(), object = %obj.key(), "released")
                    }
                    // Gone, or changed meanwhile: the next reconcile looks again.
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(owned)
}
