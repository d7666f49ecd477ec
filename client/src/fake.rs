//! [`FakeApi`]: an in-memory API server for tests, held to the real server's semantics by the
//! conformance suite in `rudder-testkit` (the same cases run against both).
//!
//! Guarantees, as the server's contract states them:
//! - one global, monotonic resourceVersion; every stored change takes the next one and is
//!   appended to a bounded history;
//! - kinds are looked up in the built-in registry: namespaced kinds default to `default`,
//!   cluster-scoped ones drop the namespace, and a body whose namespace differs from the
//!   request's is `Invalid`;
//! - create sets `uid`, `creationTimestamp` and `generation: 1`, ignores client-set server
//!   fields, resets the status (pods start `Pending`, namespaces `Active`), fills `generateName`
//!   with a five-character suffix, and refuses a `metadata.resourceVersion` (`Invalid`);
//! - `metadata.resourceVersion` in an update or in a merge patch is a precondition (stale →
//!   `Conflict`), as is a `uid` that differs; delete preconditions likewise;
//! - a write that changes nothing is not stored: the stored object comes back with its version,
//!   and no watch event is sent;
//! - `generation` grows only when something other than metadata and status changes;
//! - for kinds with a status subresource, `update` and `patch` keep the stored status and
//!   `update_status` / a status `patch` change only the status;
//! - an object with finalizers is not removed by delete: it gets `deletionTimestamp` and stays;
//!   adding a finalizer then is `Forbidden`; removing the last one deletes it (DELETED event);
//! - a pod on a node is deleted gracefully (`deletionTimestamp` = now + grace,
//!   `deletionGracePeriodSeconds`); an unscheduled or finished pod, or grace 0, goes at once;
//! - `evict` decides as the server (`rudder_api::eviction`): the pod's one budget is charged
//!   (`disruptionsAllowed - 1`, the pod in `disruptedPods`) and the pod deleted, or the
//!   eviction refused with `TooManyRequests`; under the fake's one lock there is no race;
//! - `bind` sets `spec.nodeName` and a `PodScheduled` condition, `Conflict` when the pod is
//!   bound, being deleted or has another uid;
//! - a watch from version N replays every matching change after N, then follows live changes,
//!   with no gap or duplicate; from 0 it first sends an ADDED per matching object; from a
//!   version older than the history it sends one ERROR `Expired` and ends; an object entering a
//!   selection is ADDED, one leaving it is DELETED carrying its last matching version; with
//!   `allow_bookmarks` and a `bookmark_interval_ms` it sends BOOKMARKs on that tokio timer;
//! - label and field selectors as the server parses them, fields limited to the kind's
//!   selectable ones; paginated lists are served from a snapshot taken by the first page, so
//!   every page is consistent at its version; tokens may be reused until that version leaves
//!   the history, then they are `Expired`.
//!
//! Namespaces: by default any namespace exists, so tests need not create them. With
//! [`FakeBuilder::require_namespaces`] the fake bootstraps `default`, `kube-system` and
//! `kube-public`, `kube-node-lease` as the server does and refuses creates into a missing namespace (`NotFound`).
//! In either mode, as the server: a namespace gets `spec.finalizers: ["kubernetes"]` at create
//! and keeps it through updates (only `finalize` changes it); deleting one marks it
//! `Terminating` and touches nothing in it; a terminating namespace refuses new content
//! (`Forbidden`) and goes once it has no finalizers of either kind and no content. Nobody
//! deletes the content unless a namespace controller runs against the fake.
//!
//! Test controls: [`FakeApi::fail_next`] / [`FakeApi::delay_next`] / [`FakeApi::hang`] inject
//! faults for every caller; [`FakeApi::client`] gives a per-caller handle whose faults affect
//! only that caller while all callers share one store (cut off one leader candidate, keep the
//! other healthy). [`FakeApi::drop_watches`] ends every watch stream,
//! [`FakeApi::cut_watches_too_slow`] ends them with a `TooSlow` ERROR, [`FakeApi::compact`]
//! empties the history, [`FakeApi::send_bookmarks`] sends BOOKMARKs, and [`FakeApi::calls`]
//! counts calls per operation.
//!
//! Caveats: no defaulting or validation (a body is stored as given, less server-owned fields);
//! kinds the registry does not know are accepted, namespaced exactly when a namespace is given,
//! with no status subresource; only JSON merge patches are supported (a JSON patch is
//! `Invalid`); deletion propagation through owner references is not modelled; every operation
//! completes at once unless a delay or hang is injected.

mod delete;
mod evict;
mod faults;
mod store;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rudder_proto as pb;
use serde_json::{Map, Value};

pub use faults::FakeClient;

use crate::api::{Api, ApiFuture, CODE_TOO_SLOW, REASON_TOO_SLOW, WatchEvent, WatchStream};
use crate::clock::{RealClock, SharedClock};
use crate::conn::ClientError;
use faults::Faults;
use store::State;

/// An operation of [`Api`], for fault injection and call counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    List,
    Watch,
    Create,
    Update,
    UpdateStatus,
    Patch,
    Delete,
    Bind,
    Finalize,
    Evict,
    /// `api_resources`.
    Discovery,
}

impl Op {
    /// Every operation, for faults that cut a caller off entirely.
    pub const ALL: [Op; 12] = [
        Op::Get,
        Op::List,
        Op::Watch,
        Op::Create,
        Op::Update,
        Op::UpdateStatus,
        Op::Patch,
        Op::Delete,
        Op::Bind,
        Op::Finalize,
        Op::Evict,
        Op::Discovery,
    ];
}

/// The in-memory API server. Share it as `Arc<FakeApi>` (it implements [`Api`]).
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// Faults that hit every caller, and the count of every call.
    faults: Faults,
    next_caller: std::sync::atomic::AtomicU64,
}

/// Options for a [`FakeApi`].
pub struct FakeBuilder {
    history: usize,
    require_namespaces: bool,
    clock: SharedClock,
    bookmark_interval: Option<Duration>,
}

impl FakeBuilder {
    /// Keep only the last `events` changes, so older watches expire sooner (default 1000).
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// Behave as the server on namespaces: bootstrap the system ones and refuse creates into
    /// missing namespaces.
    pub fn require_namespaces(mut self) -> Self {
        self.require_namespaces = true;
        self
    }

    /// The clock stamping `creationTimestamp`, `deletionTimestamp` and conditions.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// BOOKMARK interval for watches that allow bookmarks without asking for an interval (the
    /// server's default is 10 s; the fake sends none unless asked, so paused-time tests do not
    /// see bookmarks they did not expect).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = Some(d);
        self
    }

    pub fn build(self) -> Arc<FakeApi> {
        Arc::new(self.build_unshared())
    }

    fn build_unshared(self) -> FakeApi {
        let mut st = State::new(self.history, self.clock, self.require_namespaces);
        st.bookmark_interval = self.bookmark_interval;
        if self.require_namespaces {
            st.bootstrap_namespaces();
        }
        FakeApi {
            state: Arc::new(Mutex::new(st)),
            faults: Faults::default(),
            next_caller: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::builder().build_unshared()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the fake from the others.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeApi {
    pub fn new() -> Arc<Self> {
        Self::builder().build()
    }

    pub fn builder() -> FakeBuilder {
        FakeBuilder {
            history: 1000,
            require_namespaces: false,
            clock: RealClock::shared(),
            bookmark_interval: None,
        }
    }

    /// A fake keeping only the last `cap` changes, so older watches expire sooner.
    pub fn with_history(cap: usize) -> Arc<Self> {
        Self::builder().history(cap).build()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A handle for one caller (a component, a leader candidate): it shares this store, and
    /// faults injected through it affect only calls made through it.
    pub fn client(self: &Arc<Self>, name: &str) -> Arc<FakeClient> {
        let id = self
            .next_caller
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(FakeClient::new(self.clone(), id, name))
    }

    /// The next call of `op`, by any caller, fails with `err` (errors queue up in order).
    pub fn fail_next(&self, op: Op, err: ClientError) {
        self.faults.fail_next(op, err);
    }

    /// The next `n` calls of `op` fail with `err`.
    pub fn fail_times(&self, op: Op, err: ClientError, n: usize) {
        self.faults.fail_times(op, err, n);
    }

    /// The next call of `op` waits `d` (tokio time) before it reaches the store.
    pub fn delay_next(&self, op: Op, d: Duration) {
        self.faults.delay_next(op, d);
    }

    /// Calls of `op`, by any caller, wait without reaching the store until
    /// [`FakeApi::release`].
    pub fn hang(&self, op: Op) {
        self.faults.hang(op);
    }

    /// Ends a [`FakeApi::hang`]: waiting calls proceed.
    pub fn release(&self, op: Op) {
        self.faults.release(op);
    }

    /// Forgets every injected fault not yet consumed and releases hung calls (the fake's own;
    /// each [`FakeClient`] clears its own).
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// How many times `op` was called, by any caller (failed calls included).
    pub fn calls(&self, op: Op) -> usize {
        self.faults.calls(op)
    }

    /// The versions every watch so far asked to start from, in order.
    pub fn watch_versions(&self) -> Vec<u64> {
        self.lock().watch_versions.clone()
    }

    /// The current store version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Open watch streams whose receiver is still alive.
    pub fn watcher_count(&self) -> usize {
        let mut st = self.lock();
        st.watchers.retain(|w| !w.is_closed());
        st.watchers.len()
    }

    /// Ends every watch stream without an ERROR event (a dropped connection).
    pub fn drop_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Ends every watch with a `TooSlow` ERROR carrying the version it had reached.
    pub fn cut_watches_too_slow(&self) {
        for mut w in std::mem::take(&mut self.lock().watchers) {
            let rv = w.last_rv;
            w.send(watch::watch_error(CODE_TOO_SLOW, REASON_TOO_SLOW, rv), rv);
        }
    }

    /// Drops the whole change history: watches from any past version now get `Expired`.
    pub fn compact(&self) {
        self.lock().history.clear();
    }

    /// Sends a BOOKMARK at the current version to every watch that asked for them.
    pub fn send_bookmarks(&self) {
        let mut st = self.lock();
        let rv = st.rv;
        st.watchers
            .retain_mut(|w| !w.bookmarks || w.send(WatchEvent::Bookmark(rv), rv));
    }

    /// The stored JSON of an object, for assertions (namespace as a request would give it).
    pub fn get_json(&self, kind: &pb::KindRef, ns: &str, name: &str) -> Option<Value> {
        let k = store::KindMeta::resolve(&Some(kind.clone())).ok()?;
        let key = (k.key.clone(), k.object_ns(ns), name.to_string());
        let st = self.lock();
        serde_json::from_slice(&st.objects.get(&key)?.json).ok()
    }

    /// Every stored object of a kind, for assertions.
    pub fn list_json(&self, kind: &pb::KindRef) -> Vec<Value> {
        let Ok(k) = store::KindMeta::resolve(&Some(kind.clone())) else {
            return Vec::new();
        };
        let st = self.lock();
        st.objects
            .iter()
            .filter(|(key, _)| key.0 == k.key)
            .filter_map(|(_, o)| serde_json::from_slice(&o.json).ok())
            .collect()
    }

    /// Runs `op` for a caller: counts it, applies the fake's faults and then the caller's, and
    /// runs `run` against the store. Without a delay or hang it runs before returning, as a
    /// server call that has already been answered.
    fn call<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        caller: Option<&'a Faults>,
        run: impl FnOnce() -> Result<T, ClientError> + Send + 'a,
    ) -> ApiFuture<'a, T> {
        let mut plan = self.faults.plan(op, true);
        if let Some(c) = caller {
            plan.merge(c.plan(op, plan.error.is_none()));
        }
        if plan.is_immediate() {
            let r = match plan.error {
                Some(e) => Err(e),
                None => run(),
            };
            return Box::pin(std::future::ready(r));
        }
        Box::pin(async move {
            if let Some(d) = plan.delay {
                tokio::time::sleep(d).await;
            }
            if plan.hung {
                self.faults.wait_released(op).await;
                if let Some(c) = caller {
                    c.wait_released(op).await;
                }
            }
            match plan.error {
                Some(e) => Err(e),
                None => run(),
            }
        })
    }

    pub(crate) fn dispatch_get<'a>(
        &'a self,
        req: pb::GetRequest,
        caller: Option<&'a Faults>,
    ) -> ApiFuture<'a, pb::Object> {
        self.call(Op::Get, caller, move || self.lock().get(req))
    }

    pub(crate) fn dispatch_list<'a>(
        &'a self,
        req: pb::ListRequest,
        caller: Option<&'a Faults>,
    ) -> ApiFuture<'a, pb::ListResponse> {
        self.call(Op::List, caller, move || self.lock().list(req))
    }

    pub(crate) fn dispatch_watch<'a>(
        &'a self,
        req: pb::WatchRequest,
        caller: Option<&'a Faults>,
        owner: u64,
    ) -> ApiFuture<'a, WatchStream> {
        self.call(Op::Watch, caller, move || {
            watch::open(&self.state, req, owner)
        })
    }

    pub(crate) fn dispatch_write<'a>(
        &'a self,
        op: Op,
        req: Write,
        caller: Option<&'a Faults>,
    ) -> ApiFuture<'a, pb::Object> {
        self.call(op, caller, move || {
            let mut st = self.lock();
            match req {
                Write::Create(r) => st.create(r),
                Write::Update(r) => st.update(r, false),
                Write::UpdateStatus(r) => st.update(r, true),
                Write::Patch(r) => st.patch(r),
                Write::Bind(r) => st.bind(r),
                Write::Finalize(r) => st.finalize(r),
            }
        })
    }

    /// Discovery from the built-in registry, as the server answers it.
    pub(crate) fn dispatch_discovery<'a>(
        &'a self,
        caller: Option<&'a Faults>,
    ) -> ApiFuture<'a, pb::DiscoveryResponse> {
        self.call(
            Op::Discovery,
            caller,
            || Ok(crate::api::builtin_discovery()),
        )
    }

    pub(crate) fn dispatch_delete<'a>(
        &'a self,
        req: pb::DeleteRequest,
        caller: Option<&'a Faults>,
    ) -> ApiFuture<'a, pb::DeleteResponse> {
        self.call(Op::Delete, caller, move || self.lock().delete(req))
    }

    pub(crate) fn dispatch_evict<'a>(
        &'a self,
        req: pb::EvictRequest,
        caller: Option<&'a Faults>,
    ) -> ApiFuture<'a, pb::DeleteResponse> {
        self.call(Op::Evict, caller, move || self.lock().evict(req))
    }
}

/// A write request, for dispatch.
pub(crate) enum Write {
    Create(pb::CreateRequest),
    Update(pb::UpdateRequest),
    UpdateStatus(pb::UpdateRequest),
    Patch(pb::PatchRequest),
    Bind(pb::BindRequest),
    Finalize(pb::UpdateRequest),
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Watches opened through the fake itself belong to no handle.
const NO_OWNER: u64 = 0;

impl Api for FakeApi {
    fn get(&self, req: pb::GetRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_get(req, None)
    }

    fn list(&self, req: pb::ListRequest) -> ApiFuture<'_, pb::ListResponse> {
        self.dispatch_list(req, None)
    }

    fn watch(&self, req: pb::WatchRequest) -> ApiFuture<'_, WatchStream> {
        self.dispatch_watch(req, None, NO_OWNER)
    }

    fn create(&self, req: pb::CreateRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_write(Op::Create, Write::Create(req), None)
    }

    fn update(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_write(Op::Update, Write::Update(req), None)
    }

    fn update_status(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_write(Op::UpdateStatus, Write::UpdateStatus(req), None)
    }

    fn patch(&self, req: pb::PatchRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_write(Op::Patch, Write::Patch(req), None)
    }

    fn delete(&self, req: pb::DeleteRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        self.dispatch_delete(req, None)
    }

    fn bind(&self, req: pb::BindRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_write(Op::Bind, Write::Bind(req), None)
    }

    fn finalize(&self, req: pb::UpdateRequest) -> ApiFuture<'_, pb::Object> {
        self.dispatch_write(Op::Finalize, Write::Finalize(req), None)
    }

    fn evict(&self, req: pb::EvictRequest) -> ApiFuture<'_, pb::DeleteResponse> {
        self.dispatch_evict(req, None)
    }

    fn api_resources(&self) -> ApiFuture<'_, pb::DiscoveryResponse> {
        self.dispatch_discovery(None)
    }
}
