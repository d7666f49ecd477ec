//! The reconcile-loop runner: events → keys → work queue → N workers → `reconcile(key)`.
//!
//! Level-triggered: sources (reflector event channels) only say *which* key to look at; the
//! reconcile function reads the current state from caches and the API, never the event. A burst
//! of events for one key coalesces into one reconcile, and a key is never reconciled by two
//! workers at once ([`WorkQueue`] guarantees both).
//!
//! After a reconcile:
//! - `Ok(Action::Requeue(d))`: back-off forgotten, key queued again after `d`;
//! - `Ok(Action::AwaitChange)`: back-off forgotten, nothing queued until an event maps to the key;
//! - `Err(e)`: the error policy decides; the default, [`default_error_policy`], requeues with the
//!   queue's per-key exponential back-off (`Action::RequeueRateLimited`).
//!
//! A reconcile that panics is caught and treated like an error, so its key is not stuck "in
//! flight" forever. Owned objects map to their controller owner's key with [`owner_mapper`]
//! (through `metadata.ownerReferences` with `controller: true`, and only when the owner in the
//! cache has the referenced uid).
//!
//! Workers start only once every cache the controller watches or declares with
//! [`Controller::reads`] has synced (client-go's `WaitForCacheSync`); events arriving before
//! are mapped and queued, so nothing is lost. Each reconcile runs in a `reconcile` tracing span
//! naming the controller and the object.
//!
//! Shutdown: when the token is cancelled, workers stop taking keys, in-flight reconciles run to
//! completion (they are not cancelled), then [`Controller::run`] returns. Keys still queued are
//! dropped; the next leader or process relists and requeues everything anyway.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::{CachedObject, Reader, api_group};
use crate::informer::{Subscription, wait_for_cache_sync};
use crate::reflector::ReflectorEvent;
use crate::workqueue::{Key, WorkQueue};

/// What to do with a key after reconciling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long (periodic resync of this key).
    Requeue(Duration),
    /// Nothing until something changes.
    AwaitChange,
    /// Reconcile again after the key's rate-limited back-off.
    RequeueRateLimited,
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    pub fn await_change() -> Self {
        Action::AwaitChange
    }

    pub fn requeue_rate_limited() -> Self {
        Action::RequeueRateLimited
    }
}

/// The default error policy: log, then requeue with the key's exponential back-off.
pub fn default_error_policy<E: Display>(err: &E, key: &str) -> Action {
    tracing::warn!(%key, error = %err, "reconcile failed; requeueing with back-off");
    Action::RequeueRateLimited
}

/// Maps a reflector event to the keys to reconcile.
pub type Mapper = Box<dyn Fn(&ReflectorEvent) -> Vec<Key> + Send + Sync>;

/// Maps an event to its objects' own keys (for the controller's primary kind).
pub fn self_mapper() -> Mapper {
    Box::new(|ev| ev.objects().iter().map(|o| o.key()).collect())
}

/// Maps an event on owned objects to their controller owner's key, for owners of the given
/// apiVersion group and kind (the version is ignored, as owner references may name another one),
/// looking the owner up in `owners` so that only an owner whose uid matches the reference counts
/// (client-go's `resolveControllerRef`).
pub fn owner_mapper(owners: Reader, owner_api_version: &str, owner_kind: &str) -> Mapper {
    let (api_version, kind) = (owner_api_version.to_string(), owner_kind.to_string());
    Box::new(move |ev| {
        let mut keys: Vec<Key> = ev
            .objects()
            .into_iter()
            .filter_map(|o| controller_owner_key(o, &owners, &api_version, &kind))
            .collect();
        keys.dedup();
        keys
    })
}

/// The key of `obj`'s controller owner if it is of the given group and kind and is the object
/// of that name in `owners` with the referenced uid. Owners are in the same namespace as what
/// they own (or cluster-scoped when it is).
///
/// An owner missing from the cache yields `None`: either it is gone (its dependents are the
/// garbage collector's), or not yet seen, in which case its own ADDED event will reconcile it.
/// An owner recreated under the same name has a new uid and does not own its predecessor's
/// objects.
pub fn controller_owner_key(
    obj: &CachedObject,
    owners: &Reader,
    owner_api_version: &str,
    owner_kind: &str,
) -> Option<Key> {
    let r = obj.controller_ref()?;
    if r.kind != owner_kind
        || api_group(&r.api_version) != api_group(owner_api_version)
        || r.name.is_empty()
    {
        return None;
    }
    let owner = owners.get(&obj.namespace, &r.name)?;
    (owner.uid() == r.uid && !r.uid.is_empty()).then(|| owner.key())
}

/// A controller: its context, work queue, workers and event sources.
pub struct Controller<C> {
    name: String,
    ctx: Arc<C>,
    queue: WorkQueue,
    workers: usize,
    sources: Vec<(Subscription, Mapper)>,
    /// Caches reconcile reads: workers start only once all have synced.
    caches: Vec<Reader>,
}

impl<C: Send + Sync + 'static> Controller<C> {
    /// A controller with one worker and a default work queue.
    pub fn new(ctx: Arc<C>) -> Self {
        Controller {
            name: "controller".into(),
            ctx,
            queue: WorkQueue::default(),
            workers: 1,
            sources: Vec::new(),
            caches: Vec::new(),
        }
    }

    /// The name logs and reconcile spans carry (`replicaset`, `endpoints`, ...).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn with_queue(mut self, queue: WorkQueue) -> Self {
        self.queue = queue;
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Adds an event source, mapping each event to keys. Its cache is waited for before any
    /// reconcile (see [`Controller::reads`]).
    pub fn watches(mut self, events: Subscription, mapper: Mapper) -> Self {
        self.caches.push(events.reader().clone());
        self.sources.push((events, mapper));
        self
    }

    /// Declares a cache that reconcile reads without watching it; workers wait for it too.
    pub fn reads(mut self, cache: Reader) -> Self {
        self.caches.push(cache);
        self
    }

    /// The work queue, to add keys from elsewhere (e.g. a periodic resync).
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Runs until `cancel`, then waits for in-flight reconciles.
    pub async fn run<R, Fut, E, P>(self, reconcile: R, error_policy: P, cancel: CancellationToken)
    where
        R: Fn(Key, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
        P: Fn(&E, &str) -> Action + Send + Sync + 'static,
    {
        let mut feeders = JoinSet::new();
        for (mut sub, mapper) in self.sources {
            let (queue, cancel) = (self.queue.clone(), cancel.clone());
            feeders.spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = cancel.cancelled() => return,
                        ev = sub.recv() => ev,
                    };
                    let Some(ev) = ev else { return };
                    for key in mapper(&ev) {
                        queue.add(key);
                    }
                }
            });
        }
        // Keys queue up meanwhile, but no reconcile runs on a partial cache: a ReplicaSet
        // reconciled before the pod cache synced would see no pods and create duplicates.
        if !wait_for_cache_sync(&self.caches, &cancel).await {
            self.queue.shutdown();
            feeders.abort_all();
            return;
        }
        tracing::debug!(controller = %self.name, caches = self.caches.len(), "caches synced; starting workers");
        let reconcile = Arc::new(reconcile);
        let error_policy = Arc::new(error_policy);
        let mut workers = JoinSet::new();
        for _ in 0..self.workers {
            let (queue, cancel, ctx) = (self.queue.clone(), cancel.clone(), self.ctx.clone());
            let name = self.name.clone();
            let (reconcile, error_policy) = (reconcile.clone(), error_policy.clone());
            workers.spawn(async move {
                loop {
                    let key = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        key = queue.get() => key,
                    };
                    let Some(key) = key else { return };
                    let span = tracing::info_span!("reconcile", controller = %name, object = %key);
                    let run = AssertUnwindSafe(reconcile(key.clone(), ctx.clone()))
                        .catch_unwind()
                        .instrument(span);
                    let action = match run.await {
                        Ok(Ok(action)) => {
                            queue.forget(&key);
                            action
                        }
                        Ok(Err(e)) => error_policy(&e, &key),
                        Err(_) => {
                            tracing::error!(%key, "reconcile panicked; requeueing with back-off");
                            Action::RequeueRateLimited
                        }
                    };
                    match action {
                        Action::Requeue(after) => queue.add_after(key.clone(), after),
                        Action::RequeueRateLimited => queue.add_rate_limited(key.clone()),
                        Action::AwaitChange => {}
                    }
                    queue.done(&key);
                }
            });
        }
        cancel.cancelled().await;
        self.queue.shutdown();
        while workers.join_next().await.is_some() {}
        feeders.abort_all();
    }
}
