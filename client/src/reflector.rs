//! The reflector: list, then watch, one kind into a [`crate::cache::Store`], forever.
//!
//! It is an explicit state machine ([`State`], advanced by [`Reflector::step`]):
//! - `Empty` → list the first page (`limit` = `page_size`); `Listing` → the next page with the
//!   continue token. When the last page arrives the cache is replaced at once; objects that were
//!   cached but are gone are emitted as [`ReflectorEvent::Deleted`] (they were deleted while we
//!   were not watching), then [`ReflectorEvent::Restarted`] with the whole list.
//! - `Watching { rv, .. }` → watch from `rv`, apply each event to the cache, advance `rv` to each
//!   event's version (BOOKMARKs advance it too, without touching the cache).
//! - An ERROR `Expired` (410), or a list continue token that expired → `Empty`: relist.
//! - An ERROR `TooSlow` → re-watch at once from `resume_resource_version`, no relist.
//! - The stream ending → re-watch from the last version seen; at once if the stream delivered
//!   anything, else after a back-off (a server closing every watch at once must not spin us).
//! - Any other error → `Backoff`, then retry what failed (a list restarts from the first page).
//!   Back-off is exponential with jitter and capped ([`Backoff`]); it resets on progress.
//!
//! Failing over between API servers is [`crate::Client`]'s job, below this layer.
//!
//! Caveats: the cache only ever holds the reflector's own kind and selectors. Dropping a `step`
//! future midway loses its state (the next step relists). Events reach subscribers through
//! [`crate::informer::Hub`]: publishing never waits, and a subscriber that falls behind is
//! resynced from the cache rather than stalling it. Most components do not make reflectors
//! themselves but ask an [`crate::informer::InformerFactory`] for a shared one.

use std::sync::Arc;

use futures::StreamExt;
use rudder_proto as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, REASON_TOO_SLOW, WatchEvent, WatchStream};
use crate::cache::{CachedObject, Reader, Store, object_key};
use crate::clock::{Backoff, SharedClock};
use crate::conn::ClientError;
use crate::informer::{Hub, Informer, SUBSCRIBER_BUFFER, Subscription};

/// What to list and watch.
#[derive(Debug, Clone)]
pub struct ReflectorConfig {
    pub kind: pb::KindRef,
    /// Empty: every namespace.
    pub namespace: String,
    pub label_selector: String,
    pub field_selector: String,
    /// Items per list page (0: unpaginated).
    pub page_size: u32,
    pub backoff: Backoff,
}

impl ReflectorConfig {
    pub fn new(api_version: &str, kind: &str) -> Self {
        ReflectorConfig {
            kind: crate::conn::kind_ref(api_version, kind),
            namespace: String::new(),
            label_selector: String::new(),
            field_selector: String::new(),
            page_size: 500,
            backoff: Backoff::default(),
        }
    }
}

/// A change the reflector applied to the cache, for controllers to map to keys.
#[derive(Debug, Clone)]
pub enum ReflectorEvent {
    Added(Arc<CachedObject>),
    /// Modified: the version cached before and the new one.
    Updated {
        old: Arc<CachedObject>,
        new: Arc<CachedObject>,
    },
    /// Deleted: the object as last known.
    Deleted(Arc<CachedObject>),
    /// A (re)list completed, or a subscriber is being resynced: the cache now holds exactly
    /// these objects.
    Restarted(Vec<Arc<CachedObject>>),
}

impl ReflectorEvent {
    /// The objects this event is about (for an update, the old and the new version, so that a
    /// change of owner or labels reaches both the old and the new owner).
    pub fn objects(&self) -> Vec<&Arc<CachedObject>> {
        match self {
            ReflectorEvent::Added(o) | ReflectorEvent::Deleted(o) => vec![o],
            ReflectorEvent::Updated { old, new } => vec![old, new],
            ReflectorEvent::Restarted(all) => all.iter().collect(),
        }
    }
}

/// Where the reflector is.
pub enum State {
    /// Nothing listed yet, or a relist is due.
    Empty,
    /// Between list pages.
    Listing {
        continue_token: String,
        items: Vec<Arc<CachedObject>>,
    },
    /// Listed; watching from `resource_version` (`stream` is `None` until the watch is open).
    Watching {
        resource_version: u64,
        stream: Option<WatchStream>,
        /// Whether the current stream has delivered anything.
        progressed: bool,
    },
    /// Waiting before retrying `then`.
    Backoff { until: Instant, then: Box<State> },
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Empty => f.write_str("Empty"),
            State::Listing { items, .. } => write!(f, "Listing({} so far)", items.len()),
            State::Watching {
                resource_version,
                stream,
                ..
            } => write!(
                f,
                "Watching(rv {resource_version}, open: {})",
                stream.is_some()
            ),
            State::Backoff { then, .. } => write!(f, "Backoff(then {then:?})"),
        }
    }
}

/// Lists and watches one kind into a cache.
pub struct Reflector {
    api: Arc<dyn Api>,
    cfg: ReflectorConfig,
    clock: SharedClock,
    store: Store,
    state: State,
    backoff: Backoff,
    hub: Arc<Hub>,
}

impl Reflector {
    /// A reflector and a reader of its cache.
    pub fn new(api: Arc<dyn Api>, cfg: ReflectorConfig, clock: SharedClock) -> (Self, Reader) {
        let (store, reader) = Store::new();
        let backoff = cfg.backoff.clone();
        let hub = Hub::new(reader.clone(), SUBSCRIBER_BUFFER);
        let r = Reflector {
            api,
            cfg,
            clock,
            store,
            state: State::Empty,
            backoff,
            hub,
        };
        (r, reader)
    }

    pub fn reader(&self) -> Reader {
        self.store.reader()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// A subscription to every event from now on (see [`crate::informer`] for its guarantees:
    /// it may join at any time and never stalls the reflector).
    pub fn subscribe(&self) -> Subscription {
        self.hub.subscribe()
    }

    /// A handle on this reflector's cache and subscribers that outlives [`Reflector::run`]'s
    /// taking of `self`.
    pub fn informer(&self) -> Informer {
        Informer::new(self.store.reader(), self.hub.clone())
    }

    /// Runs until `cancel`, publishing events to subscribers; their subscriptions end after.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let events = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                events = self.step() => events,
            };
            for ev in &events {
                self.hub.publish(ev);
            }
        }
        self.hub.close();
    }

    /// Performs one transition, returning the events it produced.
    pub async fn step(&mut self) -> Vec<ReflectorEvent> {
        let state = std::mem::replace(&mut self.state, State::Empty);
        let (next, events) = match state {
            State::Empty => self.list_page(String::new(), Vec::new()).await,
            State::Listing {
                continue_token,
                items,
            } => self.list_page(continue_token, items).await,
            State::Watching {
                resource_version,
                stream: None,
                ..
            } => (self.open_watch(resource_version).await, Vec::new()),
            State::Watching {
                resource_version,
                stream: Some(stream),
                progressed,
            } => self.next_event(resource_version, stream, progressed).await,
            State::Backoff { until, then } => {
                tokio::time::sleep_until(until).await;
                (*then, Vec::new())
            }
        };
        tracing::trace!(kind = %self.cfg.kind.kind, state = ?next, "reflector step");
        self.state = next;
        events
    }

    fn back_off(&mut self, then: State, err: &ClientError) -> State {
        let delay = self.backoff.next_delay(self.clock.as_ref());
        tracing::warn!(kind = %self.cfg.kind.kind, error = %err, ?delay, "list/watch failed; backing off");
        State::Backoff {
            until: self.clock.instant() + delay,
            then: Box::new(then),
        }
    }

    fn rewatch(resource_version: u64) -> State {
        State::Watching {
            resource_version,
            stream: None,
            progressed: false,
        }
    }

    async fn list_page(
        &mut self,
        continue_token: String,
        mut items: Vec<Arc<CachedObject>>,
    ) -> (State, Vec<ReflectorEvent>) {
        let req = pb::ListRequest {
            kind: Some(self.cfg.kind.clone()),
            namespace: self.cfg.namespace.clone(),
            label_selector: self.cfg.label_selector.clone(),
            field_selector: self.cfg.field_selector.clone(),
            limit: self.cfg.page_size,
            continue_token: continue_token.clone(),
            allow_stale: false,
        };
        let resp = match self.api.list(req).await {
            Ok(r) => r,
            // The snapshot behind the token is gone: start the list over.
            Err(ClientError::Expired(_)) if !continue_token.is_empty() => {
                return (State::Empty, Vec::new());
            }
            Err(e) => return (self.back_off(State::Empty, &e), Vec::new()),
        };
        let page = resp.items.iter().filter_map(CachedObject::from_wire);
        items.extend(page.map(Arc::new));
        if !resp.continue_token.is_empty() {
            let next = State::Listing {
                continue_token: resp.continue_token,
                items,
            };
            return (next, Vec::new());
        }
        self.backoff.reset();
        let vanished = self.store.replace(items.clone());
        tracing::debug!(kind = %self.cfg.kind.kind, count = items.len(), rv = resp.resource_version, "listed");
        let mut events: Vec<_> = vanished.into_iter().map(ReflectorEvent::Deleted).collect();
        events.push(ReflectorEvent::Restarted(items));
        (Self::rewatch(resp.resource_version), events)
    }

    async fn open_watch(&mut self, resource_version: u64) -> State {
        let req = pb::WatchRequest {
            kind: Some(self.cfg.kind.clone()),
            namespace: self.cfg.namespace.clone(),
            label_selector: self.cfg.label_selector.clone(),
            field_selector: self.cfg.field_selector.clone(),
            resource_version,
            allow_bookmarks: true,
            bookmark_interval_ms: 0,
        };
        match self.api.watch(req).await {
            Ok(stream) => State::Watching {
                resource_version,
                stream: Some(stream),
                progressed: false,
            },
            Err(ClientError::Expired(_)) => State::Empty,
            Err(e) => self.back_off(Self::rewatch(resource_version), &e),
        }
    }

    async fn next_event(
        &mut self,
        mut rv: u64,
        mut stream: WatchStream,
        progressed: bool,
    ) -> (State, Vec<ReflectorEvent>) {
        let ev = match stream.next().await {
            None if progressed => return (Self::rewatch(rv), Vec::new()),
            None => {
                let e = ClientError::Unavailable("watch closed without any event".into());
                return (self.back_off(Self::rewatch(rv), &e), Vec::new());
            }
            Some(Err(ClientError::Expired(_))) => return (State::Empty, Vec::new()),
            Some(Err(e)) => return (self.back_off(Self::rewatch(rv), &e), Vec::new()),
            Some(Ok(ev)) => ev,
        };
        self.backoff.reset();
        let mut events = Vec::new();
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                rv = rv.max(o.resource_version);
                if let Some(obj) = CachedObject::from_wire(&o).map(Arc::new) {
                    events.push(match self.store.apply(obj.clone()) {
                        Some(old) => ReflectorEvent::Updated { old, new: obj },
                        None => ReflectorEvent::Added(obj),
                    });
                }
            }
            WatchEvent::Deleted(o) => {
                rv = rv.max(o.resource_version);
                let prev = self.store.delete(&object_key(&o.namespace, &o.name));
                if let Some(obj) = CachedObject::from_wire(&o).map(Arc::new).or(prev) {
                    events.push(ReflectorEvent::Deleted(obj));
                }
            }
            WatchEvent::Bookmark(v) => rv = rv.max(v),
            ref e @ WatchEvent::Error(_) if e.is_expired() => {
                tracing::info!(kind = %self.cfg.kind.kind, rv, "watch version expired; relisting");
                return (State::Empty, Vec::new());
            }
            // Decided by reason, never by code: see `WatchEvent::is_expired`.
            WatchEvent::Error(e) if e.reason == REASON_TOO_SLOW => {
                tracing::info!(kind = %self.cfg.kind.kind, resume = e.resume_resource_version, "watch cut as too slow; resuming");
                return (Self::rewatch(rv.max(e.resume_resource_version)), Vec::new());
            }
            WatchEvent::Error(e) => {
                let err = ClientError::Other(format!(
                    "watch error {}: {} {}",
                    e.code, e.reason, e.message
                ));
                return (self.back_off(Self::rewatch(rv), &err), Vec::new());
            }
        }
        let next = State::Watching {
            resource_version: rv,
            stream: Some(stream),
            progressed: true,
        };
        (next, events)
    }
}
