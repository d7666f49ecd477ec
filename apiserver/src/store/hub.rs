//! The watch hub: the history window of recent events and their fan-out to watchers.
//!
//! Guarantees:
//! - Events enter the history and the live feed together, in log order, in one call
//!   ([`Hub::publish`]) made under the store's lock; a subscriber that takes the backlog and the
//!   receiver under the same lock therefore sees no gap and no duplicate between them.
//! - Every event with a version above [`Hub::oldest`] is in the history; a watch from an older
//!   version is [`Expired`].
//! - The history is bounded by event count and by bytes (the objects' JSON plus a fixed overhead
//!   per event), whichever binds first; the newest event always stays.
//! - The live feed is one bounded broadcast ring shared by every watcher: a watcher that falls
//!   behind by more than the ring loses its place (and is cut off by the service), writers never
//!   wait for watchers.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::state::Event;

/// A watch asked for a version older than the history window.
#[derive(Debug, Clone, thiserror::Error)]
#[error("too old resource version: {requested} (the oldest still available is {oldest})")]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

/// History after a version, then the live feed.
pub type Backlog = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// The history window and the live feed.
pub(super) struct Hub {
    history: VecDeque<Arc<Event>>,
    /// Every event with a version above this is in `history`.
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    window: usize,
    /// Bytes the history holds, by [`event_bytes`], and the most it may.
    bytes: usize,
    max_bytes: usize,
}

/// What an event costs the history: its object's JSON (the version it made, which the history
/// alone may keep alive once overwritten) and the bookkeeping around it.
pub(super) fn event_bytes(ev: &Event) -> usize {
    const OVERHEAD: usize = 256;
    ev.object.json.len() + ev.key.name.len() + ev.key.namespace.len() + OVERHEAD
}

impl Hub {
    /// An empty history starting after `compacted`.
    pub(super) fn new(compacted: u64, window: usize, max_bytes: usize, buffer: usize) -> Hub {
        let (events, _) = broadcast::channel(buffer.max(16));
        Hub {
            history: VecDeque::new(),
            compacted,
            events,
            window,
            bytes: 0,
            max_bytes,
        }
    }

    /// [`Hub::new`] sized by the store's configuration.
    pub(super) fn configured(compacted: u64, c: &super::StoreConfig) -> Hub {
        Hub::new(compacted, c.history_window, c.history_bytes, c.watch_buffer)
    }

    /// A hub whose history is `events` (in version order), complete after `oldest`, trimmed to
    /// the configured window: a history rebuilt at start-up.
    pub(super) fn with_history(
        oldest: u64,
        events: impl IntoIterator<Item = Arc<Event>>,
        c: &super::StoreConfig,
    ) -> Hub {
        let mut hub = Hub::configured(oldest, c);
        for ev in events {
            hub.publish(ev);
        }
        hub.trim();
        hub
    }

    /// Appends a committed event to the history and sends it to every watcher.
    pub(super) fn publish(&mut self, ev: Arc<Event>) {
        self.bytes += event_bytes(&ev);
        self.history.push_back(ev.clone());
        // Nobody listening is fine: watchers come and go.
        let _ = self.events.send(ev);
    }

    /// Drops the oldest events beyond the window's count or bytes.
    pub(super) fn trim(&mut self) {
        while self.history.len() > self.window
            || (self.bytes > self.max_bytes && self.history.len() > 1)
        {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.bytes -= event_bytes(&old);
            self.compacted = old.rv;
        }
    }

    /// Bytes held, by [`event_bytes`].
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Versions above this are all in the history.
    pub(super) fn oldest(&self) -> u64 {
        self.compacted
    }

    pub(super) fn len(&self) -> usize {
        self.history.len()
    }

    /// A receiver for every event published from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The events after `from`, in order, or [`Expired`] if some of them are gone.
    pub(super) fn since(
        &self,
        from: u64,
    ) -> Result<impl Iterator<Item = &Arc<Event>> + '_, Expired> {
        if from < self.compacted {
            return Err(Expired {
                requested: from,
                oldest: self.compacted,
            });
        }
        let start = self.history.partition_point(|e| e.rv <= from);
        Ok(self.history.range(start..))
    }

    /// The backlog after `from` and a receiver for everything later.
    pub(super) fn subscribe_from(&self, from: u64) -> Result<Backlog, Expired> {
        let backlog = self.since(from)?.cloned().collect();
        Ok((backlog, self.subscribe()))
    }
}
