//! Orphan and Foreground deletion, owner side: an object being deleted with Kubernetes'
//! `orphan` finalizer has its reference removed from every dependent, then the finalizer; one
//! with `foregroundDeletion` has its dependents deleted, and the finalizer is removed once none
//! is left, which lets the API server remove the owner. Dependents are found through the
//! caches' owner-uid index; every write is guarded (dependents by resourceVersion and uid, the
//! finalizer by the owner's resourceVersion), and the owner is looked at again until done.

use std::time::Duration;

use rudder_api::meta::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use rudder_client::cache::CachedObject;
use rudder_client::controller::Action;

use super::Ctx;
use super::collect::{delete, strip_references};
use crate::error::Error;

/// How soon an owner whose dependents are not all handled is looked at again (their own events
/// usually come first).
const AGAIN: Duration = Duration::from_secs(1);

/// Whether the object carries a propagation finalizer this module acts on.
pub fn propagating(obj: &CachedObject) -> bool {
    obj.is_deleting()
        && (obj.has_finalizer(ORPHAN_FINALIZER) || obj.has_finalizer(FOREGROUND_FINALIZER))
}

/// Acts for a deleting owner; see the module doc.
pub async fn owner(ctx: &Ctx, obj: &CachedObject) -> Result<Action, Error> {
    let uid = obj.uid().to_string();
    let mut left = 0;
    for w in ctx.kinds.all() {
        for dep in w.reader.owned_by(&uid) {
            left += 1;
            if obj.has_finalizer(ORPHAN_FINALIZER) {
                strip_references(ctx, &dep, std::slice::from_ref(&uid)).await?;
            } else if !dep.is_deleting() {
                delete(ctx, w, &dep).await?;
            }
        }
    }
    if left > 0 {
        return Ok(Action::Requeue(AGAIN));
    }
    let finalizer = if obj.has_finalizer(ORPHAN_FINALIZER) {
        ORPHAN_FINALIZER
    } else {
        FOREGROUND_FINALIZER
    };
    match rudder_client::write::remove_finalizer(ctx.api.as_ref(), obj, finalizer).await {
        Ok(_) => Ok(Action::AwaitChange),
        Err(e) if e.is_not_found() => Ok(Action::AwaitChange),
        Err(e) => Err(e.into()),
    }
}
