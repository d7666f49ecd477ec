//! Claiming: an owner adopts matching orphans and releases objects that stopped matching, by
//! adding or removing its controller reference (Kubernetes' `ControllerRefManager`); and
//! [`owned_mapper`], which sends an owned object's events to the owners that may claim it.
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
use serde_json::{Map, Value, json};

use std::collections::BTreeMap;

use rudder_client::cache::{INDEX_NAMESPACE, Reader};
use rudder_client::controller::{Mapper, controller_owner_key};
use rudder_client::expectations::Expectations;
use rudder_client::reflector::ReflectorEvent;

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
            allow_stale: false,
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
    claim_with(api, owner, selector, candidates, |_, _| Map::new()).await
}

/// [`claim`], with `extra(obj, adopting)` naming more metadata fields the adoption or release
/// patch sets (the Job controller adds or drops its tracking finalizer there).
pub async fn claim_with(
    api: &dyn Api,
    owner: &CachedObject,
    selector: &LabelSelector,
    candidates: Vec<Arc<CachedObject>>,
    extra: impl Fn(&CachedObject, bool) -> Map<String, Value>,
) -> Result<Vec<Arc<CachedObject>>, Error> {
    let mut owned = Vec::new();
    let mut checked = false;
    for obj in candidates {
        let adopting = match decide(&obj, owner, selector.matches(&obj.labels())) {
            Claim::Owned => {
                owned.push(obj);
                continue;
            }
            Claim::Ignore => continue,
            Claim::Adopt => true,
            Claim::Release => false,
        };
        if adopting && !checked {
            can_adopt(api, owner).await?;
            checked = true;
        }
        let mut refs = refs_without(&obj, owner.uid());
        if adopting {
            refs.push(controller_ref(&owner.value));
        }
        let mut meta = extra(&obj, adopting);
        meta.insert(
            "resourceVersion".into(),
            json!(obj.resource_version.to_string()),
        );
        meta.insert("ownerReferences".into(), json!(refs));
        match api
            .patch(merge_patch(&obj, &json!({ "metadata": meta })))
            .await
        {
            Ok(o) if adopting => {
                tracing::info!(owner = %owner.key(), object = %obj.key(), "adopted");
                owned.extend(CachedObject::from_wire(&o).map(Arc::new));
            }
            Ok(_) => tracing::info!(owner = %owner.key(), object = %obj.key(), "released"),
            // Gone, or (a release) changed meanwhile: the next reconcile looks again.
            Err(e) if e.is_not_found() || (!adopting && e.is_conflict()) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(owned)
}

/// Whether an owner's selector (non-empty) matches these labels.
pub type Selects = fn(&Arc<CachedObject>, &BTreeMap<String, String>) -> bool;

/// Maps events on owned objects (pods, ReplicaSets) to owner keys: an object's controller owner
/// (by uid), or, for an orphan, every owner of the kind in its namespace that selects it (which
/// may adopt it); a relist maps to every owner. With `exp`, the owners' expectations are lowered
/// on the way, before any reconcile can read the event's cache.
pub fn owned_mapper(
    owners: Reader,
    api_version: &'static str,
    kind: &'static str,
    exp: Option<Arc<Expectations>>,
    selects: Selects,
) -> Mapper {
    Box::new(move |ev| {
        if let Some(exp) = &exp {
            exp.observe(ev, |o| controller_owner_key(o, &owners, api_version, kind));
        }
        if let ReflectorEvent::Restarted(_) = ev {
            return owners.keys();
        }
        let mut keys = Vec::new();
        for o in ev.objects() {
            if o.controller_ref().is_some() {
                keys.extend(controller_owner_key(o, &owners, api_version, kind));
                continue;
            }
            let labels = o.labels();
            keys.extend(
                owners
                    .by_index(INDEX_NAMESPACE, &o.namespace)
                    .into_iter()
                    .filter(|owner| selects(owner, &labels))
                    .map(|owner| owner.key()),
            );
        }
        keys.sort();
        keys.dedup();
        keys
    })
}
