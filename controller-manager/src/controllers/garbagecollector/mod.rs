//! The garbage collector, as Kubernetes' `garbagecollector` with background propagation:
//! deletes objects whose owners are all gone, and strips references to gone owners from objects
//! that keep a live one.
//!
//! It watches every kind in [`kinds::WATCHED`] through the shared informers. Which keys it
//! looks at:
//! - an object added or updated with owner references: itself (so a dependent created after
//!   its owner went is collected too);
//! - an object deleted: every cached object that references its uid
//!   ([`rudder_client::cache::INDEX_OWNER_UID`]), in any watched kind;
//! - a relist of a kind: every object of that kind with owner references, and every object
//!   that references an owner of that kind (a relist may hide deletions).
//!
//! The verdict ([`collect::reconcile`]): an owner reference is solid when the owner's cache
//! holds that name with that uid; otherwise the owner is read live (the cache may lag), and it
//! is dangling when the server has no such object or one with another uid. Owners of kinds the
//! collector does not watch, and references without a uid, count as solid: it never deletes out
//! of ignorance. Namespaced owners are looked for in the dependent's namespace, cluster-scoped
//! ones without one; a cluster-scoped dependent naming a namespaced owner is never collected
//! (Warning `OwnerRefInvalidNamespace`, as is a reference to an owner that exists in another
//! namespace). With no solid owner the dependent, read live, is deleted in the background with
//! its uid as precondition; with a solid one, the dangling references are removed by a merge
//! patch guarded by its resourceVersion.
//!
//! Orphan and Foreground deletes ([`propagate`]): an owner being deleted with Kubernetes'
//! `orphan` finalizer is released by its dependents, then loses the finalizer; one with
//! `foregroundDeletion` has its dependents deleted first, then loses it. Such an owner is looked
//! at when it changes and when one of its dependents changes or goes; until it loses the
//! finalizer it counts as a live owner for its dependents. `blockOwnerDeletion` is not told
//! apart: Foreground waits for every dependent.

pub mod collect;
pub mod kinds;
pub mod propagate;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rudder_client::Api;
use rudder_client::controller::{Controller, Mapper};
use rudder_client::events::EventRecorder;
use rudder_client::reflector::ReflectorEvent;
use tokio_util::sync::CancellationToken;

use crate::error::policy;
use crate::runner::{Descriptor, Env};
use collect::AbsentOwners;
pub use collect::reconcile;
use kinds::{INDEX_OWNER_KIND, Kinds};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "garbagecollector",
    run: |env, cancel| Box::pin(run(env, cancel)),
};

/// What reconcile reads and writes through.
pub struct Ctx {
    api: Arc<dyn Api>,
    kinds: Arc<Kinds>,
    events: EventRecorder,
    absent: AbsentOwners,
}

impl Ctx {
    /// A context over given caches, for driving [`reconcile`] directly (tests).
    pub fn new(api: Arc<dyn Api>, kinds: Arc<Kinds>, events: EventRecorder) -> Ctx {
        Ctx {
            api,
            kinds,
            events,
            absent: AbsentOwners::default(),
        }
    }
}

async fn run(env: Env, cancel: CancellationToken) {
    let (kinds, informers) = Kinds::from_informers(&env.informers);
    let kinds = Arc::new(kinds);
    let (events, events_task) = env.recorder("garbage-collector");
    let ctx = Arc::new(Ctx::new(Arc::clone(&env.api), Arc::clone(&kinds), events));
    let mut controller = Controller::new(ctx)
        .named("garbagecollector")
        .workers(env.workers);
    for (i, inf) in informers.iter().enumerate() {
        controller = controller.watches(inf.subscribe(), mapper(Arc::clone(&kinds), i));
    }
    controller.run(reconcile, policy, cancel).await;
    events_task.abort();
}

/// The keys an event on the `me`-th watched kind concerns (see the module doc).
pub fn mapper(kinds: Arc<Kinds>, me: usize) -> Mapper {
    Box::new(move |ev| {
        let has_owners = |o: &rudder_client::cache::CachedObject| {
            o.value
                .pointer("/metadata/ownerReferences")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|r| !r.is_empty())
        };
        let Some(own) = kinds.all().get(me) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        match ev {
            ReflectorEvent::Added(o) | ReflectorEvent::Updated { new: o, .. } => {
                if has_owners(o) || propagate::propagating(o) {
                    keys.push(own.key(o));
                }
                keys.extend(propagating_owners(&kinds, o));
            }
            ReflectorEvent::Deleted(o) => {
                keys.extend(propagating_owners(&kinds, o));
                let uid = o.uid();
                if !uid.is_empty() {
                    for w in kinds.all() {
                        keys.extend(w.reader.owned_by(uid).iter().map(|d| w.key(d)));
                    }
                }
            }
            ReflectorEvent::Restarted(all) => {
                keys.extend(
                    all.iter()
                        .filter(|o| has_owners(o) || propagate::propagating(o))
                        .map(|o| own.key(o)),
                );
                let id = own.id();
                for w in kinds.all() {
                    let dependents = w.reader.by_index(INDEX_OWNER_KIND, &id);
                    keys.extend(dependents.iter().map(|d| w.key(d)));
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    })
}

/// Keys of `obj`'s owners that are being deleted with a propagation finalizer: a change of a
/// dependent (released, deleted) may let them finish.
fn propagating_owners(kinds: &Kinds, obj: &rudder_client::cache::CachedObject) -> Vec<String> {
    obj.owner_references()
        .into_iter()
        .filter_map(|r| {
            let w = kinds.find(&r.api_version, &r.kind)?;
            let ns = if w.namespaced {
                obj.namespace.as_str()
            } else {
                ""
            };
            let owner = w.reader.get(ns, &r.name)?;
            (owner.uid() == r.uid && propagate::propagating(&owner)).then(|| w.key(&owner))
        })
        .collect()
}
