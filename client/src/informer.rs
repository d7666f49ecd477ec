//! Shared informers: one list+watch per kind (and selection) per process, any number of
//! subscribers.
//!
//! An [`InformerFactory`] hands out an [`Informer`] per distinct [`ReflectorConfig`] selection
//! (kind, namespace, label and field selector); asking twice returns the same informer, so two
//! controllers watching pods share one watch and one cache, as client-go's
//! `SharedInformerFactory`. Informers asked for after [`InformerFactory::start`] start at once.
//!
//! Subscribers ([`Subscription`]) may join at any time, also long after the cache synced (a
//! controller that regains leadership subscribes again). Guarantees:
//! - a subscriber that joins after the first list first receives
//!   [`ReflectorEvent::Restarted`] with the cache's whole content, then every later change;
//! - updates carry the old and the new object;
//! - publishing never waits for a subscriber: each has a bounded buffer
//!   ([`SUBSCRIBER_BUFFER`] events), and one that falls that far behind loses its buffered
//!   events and is handed one `Restarted` with the current content instead (a resync), so a slow
//!   subscriber can neither stall the cache nor grow memory without bound. Level-triggered
//!   consumers lose nothing by this: they reconcile every key in the resync.
//!
//! Events may repeat around a resync (an object both in the resync and in a later event);
//! consumers must be idempotent, which level-triggered reconciles are.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::cache::{IndexExists, IndexFn, Reader};
use crate::clock::SharedClock;
use crate::reflector::{Reflector, ReflectorConfig, ReflectorEvent};

/// Events a subscriber may have unread before it is resynced instead.
pub const SUBSCRIBER_BUFFER: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few pushes and pops; a panic inside one leaves the
    // queues consistent, so carry on with them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct SubState {
    queue: VecDeque<ReflectorEvent>,
    /// Events were dropped (or the subscriber joined late): hand out a resync next.
    resync: bool,
    closed: bool,
    dropped: bool,
}

struct SubShared {
    state: Mutex<SubState>,
    notify: Notify,
}

/// Fans a reflector's events out to subscribers without ever blocking the reflector.
pub struct Hub {
    subs: Mutex<Vec<Arc<SubShared>>>,
    reader: Reader,
    buffer: usize,
}

impl Hub {
    pub(crate) fn new(reader: Reader, buffer: usize) -> Arc<Hub> {
        Arc::new(Hub {
            subs: Mutex::new(Vec::new()),
            reader,
            buffer: buffer.max(1),
        })
    }

    /// A new subscriber. If the cache has synced, it starts with a resync of the content.
    pub fn subscribe(&self) -> Subscription {
        let shared = Arc::new(SubShared {
            state: Mutex::new(SubState {
                resync: self.reader.has_synced(),
                ..Default::default()
            }),
            notify: Notify::new(),
        });
        lock(&self.subs).push(shared.clone());
        Subscription {
            shared,
            reader: self.reader.clone(),
        }
    }

    /// Delivers an event to every live subscriber.
    pub(crate) fn publish(&self, ev: &ReflectorEvent) {
        let mut subs = lock(&self.subs);
        subs.retain(|s| {
            let mut st = lock(&s.state);
            if st.dropped {
                return false;
            }
            if !st.resync {
                if st.queue.len() >= self.buffer {
                    tracing::warn!(
                        buffer = self.buffer,
                        "informer subscriber fell behind; it will be resynced from the cache"
                    );
                    st.queue.clear();
                    st.resync = true;
                } else {
                    st.queue.push_back(ev.clone());
                }
            }
            drop(st);
            s.notify.notify_one();
            true
        });
    }

    /// Ends every subscription once its buffered events are read.
    pub(crate) fn close(&self) {
        for s in lock(&self.subs).drain(..) {
            lock(&s.state).closed = true;
            s.notify.notify_one();
        }
    }

    /// Live subscribers.
    pub fn subscriber_count(&self) -> usize {
        let mut subs = lock(&self.subs);
        subs.retain(|s| !lock(&s.state).dropped);
        subs.len()
    }
}

/// One subscriber's stream of events. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<SubShared>,
    reader: Reader,
}

impl Subscription {
    /// The next event; `None` once the informer has stopped and everything was read.
    pub async fn recv(&mut self) -> Option<ReflectorEvent> {
        loop {
            {
                let mut st = lock(&self.shared.state);
                if st.resync {
                    st.resync = false;
                    // Taken under the subscriber's lock: events published from now on queue
                    // behind it, so nothing is lost between the snapshot and the feed.
                    return Some(ReflectorEvent::Restarted(self.reader.list()));
                }
                if let Some(ev) = st.queue.pop_front() {
                    return Some(ev);
                }
                if st.closed {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a publish between the check
            // above and this await is not missed.
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<ReflectorEvent> {
        let mut st = lock(&self.shared.state);
        if st.resync {
            st.resync = false;
            return Some(ReflectorEvent::Restarted(self.reader.list()));
        }
        st.queue.pop_front()
    }

    /// The cache this subscription's events come from.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.shared.state).dropped = true;
    }
}

/// A shared informer: its cache and its subscribers.
#[derive(Clone)]
pub struct Informer {
    reader: Reader,
    hub: Arc<Hub>,
}

impl Informer {
    pub(crate) fn new(reader: Reader, hub: Arc<Hub>) -> Self {
        Informer { reader, hub }
    }

    pub fn reader(&self) -> Reader {
        self.reader.clone()
    }

    pub fn subscribe(&self) -> Subscription {
        self.hub.subscribe()
    }

    /// Adds an index to the shared cache (see [`Reader::add_index`]). Several controllers
    /// sharing an informer may each ask for the same index: the first wins, and asking again
    /// under the same name is fine.
    pub fn ensure_index(&self, name: &str, f: IndexFn) {
        let _: Result<(), IndexExists> = self.reader.add_index(name, f);
    }

    pub fn subscriber_count(&self) -> usize {
        self.hub.subscriber_count()
    }
}

/// What makes two informer requests the same informer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Selection {
    api_version: String,
    kind: String,
    namespace: String,
    labels: String,
    fields: String,
}

impl Selection {
    fn of(cfg: &ReflectorConfig) -> Self {
        Selection {
            api_version: cfg.kind.api_version.clone(),
            kind: cfg.kind.kind.clone(),
            namespace: cfg.namespace.clone(),
            labels: cfg.label_selector.clone(),
            fields: cfg.field_selector.clone(),
        }
    }
}

struct FactoryState {
    informers: HashMap<Selection, Informer>,
    /// Reflectors made before `start`.
    pending: Vec<Reflector>,
    running: Option<CancellationToken>,
}

/// Hands out shared informers; one per process (per API client) is the intent.
pub struct InformerFactory {
    api: Arc<dyn Api>,
    clock: SharedClock,
    state: Mutex<FactoryState>,
}

impl InformerFactory {
    pub fn new(api: Arc<dyn Api>, clock: SharedClock) -> Arc<Self> {
        Arc::new(InformerFactory {
            api,
            clock,
            state: Mutex::new(FactoryState {
                informers: HashMap::new(),
                pending: Vec::new(),
                running: None,
            }),
        })
    }

    /// The informer for `apiVersion`/`kind` across all namespaces, without selectors.
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Informer {
        self.informer(ReflectorConfig::new(api_version, kind))
    }

    /// The informer for this selection, made (and started, if the factory runs) on first ask.
    /// Later asks with the same selection get the same informer, whatever their page size or
    /// back-off settings.
    pub fn informer(&self, cfg: ReflectorConfig) -> Informer {
        let sel = Selection::of(&cfg);
        let mut st = lock(&self.state);
        if let Some(i) = st.informers.get(&sel) {
            return i.clone();
        }
        let (reflector, _) = Reflector::new(self.api.clone(), cfg, self.clock.clone());
        let informer = reflector.informer();
        st.informers.insert(sel, informer.clone());
        match &st.running {
            Some(cancel) => {
                tokio::spawn(reflector.run(cancel.clone()));
            }
            None => st.pending.push(reflector),
        }
        informer
    }

    /// Starts every informer made so far, and every later one as it is made, until `cancel`.
    pub fn start(&self, cancel: &CancellationToken) {
        let mut st = lock(&self.state);
        if st.running.is_some() {
            return;
        }
        for r in st.pending.drain(..) {
            tokio::spawn(r.run(cancel.clone()));
        }
        st.running = Some(cancel.clone());
    }

    /// Waits until every informer made so far has synced; false if `cancel` fired first.
    pub async fn wait_for_cache_sync(&self, cancel: &CancellationToken) -> bool {
        let readers: Vec<Reader> = lock(&self.state)
            .informers
            .values()
            .map(Informer::reader)
            .collect();
        wait_for_cache_sync(&readers, cancel).await
    }
}

/// Waits until every reader's cache has synced (client-go's `WaitForCacheSync`); false if
/// `cancel` fired first or a cache's writer went away before syncing.
pub async fn wait_for_cache_sync(readers: &[Reader], cancel: &CancellationToken) -> bool {
    for r in readers {
        let synced = tokio::select! {
            _ = cancel.cancelled() => return false,
            s = r.wait_until_synced() => s,
        };
        if !synced {
            return false;
        }
    }
    true
}
