//! The watch hub: the history window of recent events and their fan-out to watchers.
//!
//! Guarantees:
//! - Events enter the history and the live feed together, in log order, in one call
//!   ([`Hub::publish`]) made under the store's lock; a subscriber that takes the backlog and the
//!   receiver under the same lock therefore sees no gap and no duplicate between them.
//! - Every event with a version above [`Hub::oldest`] is in the history; a watch from an older
//!   version is [`Expired`].
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
}

impl Hub {
    /// An empty history starting after `compacted`.
    pub(super) fn new(compacted: u64, window: usize, buffer: usize) -> Hub {
        let (events, _) = broadcast::channel(buffer.max(16));
        Hub {
            history: VecDeque::new(),
            compacted,
            events,
            window,
        }
    }

    /// Appends a committed event to the history and sends it to every watcher.
    pub(super) fn publish(&mut self, ev: Arc<Event>) {
        self.history.push_back(ev.clone());
        // Nobody listening is fine: watchers come and go.
        let _ = self.events.send(ev);
    }

    /// Drops the oldest events beyond the window.
    pub(super) fn trim(&mut self) {
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
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
