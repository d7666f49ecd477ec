//! A replicated member's watch history after a restart, rebuilt from its snapshot and log.
//!
//! The engine holds only the latest state, so a restarted member would serve watches only from
//! its checkpoint on, and a watch resuming from an earlier version there would have to relist.
//! The log holds *commands*, not events, but the snapshot is the state at its index: applying
//! the log's entries after it to that state, by the same rules as `apply` (request ids
//! deduplicated over the same window), gives exactly the events the member published before,
//! at the same versions. They are kept only if they end at the engine's version; otherwise the
//! member starts with the short history, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use openraft::{Entry, EntryPayload};

use super::checkpoint::{Indexer, stored_object};
use super::machine::{self, DEDUPE_WINDOW};
use crate::replica::TypeConfig;
use crate::state::{Event, ObjKey, Overlay, State};

/// The base to replay from: the snapshot's body and index, or an empty state when the log
/// still starts at its first entry.
pub(super) struct Base {
    pub index: u64,
    pub state: State,
    pub requests: Vec<(u128, u64)>,
}

impl Base {
    pub fn empty() -> Base {
        Base {
            index: 0,
            state: State::default(),
            requests: Vec::new(),
        }
    }

    /// The state a snapshot holds; None if its body does not decode.
    pub fn from_snapshot(index: u64, data: &[u8], indexer: &Indexer) -> Option<Base> {
        let body = machine::decode_body(data).ok()?;
        let mut state = State::default();
        for (kind, namespace, name, json) in body.objects {
            let key = ObjKey {
                kind: Arc::from(kind.as_str()),
                namespace,
                name,
            };
            let obj = stored_object(&key, bytes::Bytes::from(json), indexer).ok()?;
            state.load(key, Arc::new(obj));
        }
        state.rv = body.rv;
        Some(Base {
            index,
            state,
            requests: body.requests,
        })
    }
}

/// The events of `entries` (in log order, all after `base.index`, the first right after it) up to log
/// `upto`; with the version after which the history is complete.
pub(super) fn history(
    base: Base,
    entries: &[Entry<TypeConfig>],
    upto: u64,
) -> Option<(u64, Vec<Arc<Event>>)> {
    let Base {
        index: mut last,
        mut state,
        requests,
    } = base;
    let oldest = state.rv;
    let mut seen: HashMap<u128, u64> = requests.iter().copied().collect();
    let mut order: VecDeque<(u64, u128)> = {
        let mut o: Vec<(u64, u128)> = requests.iter().map(|(id, at)| (*at, *id)).collect();
        o.sort_unstable();
        o.into()
    };
    let mut events = Vec::new();
    for e in entries {
        let index = e.log_id.index;
        if index > upto {
            break;
        }
        // A hole: the log does not follow on from the base.
        if index != last + 1 {
            return None;
        }
        last = index;
        if let EntryPayload::Normal(batch) = &e.payload {
            for (position, p) in batch.proposals.iter().enumerate() {
                if seen.contains_key(&p.id) {
                    continue;
                }
                if let Ok(ev) = state.evaluate(&Overlay::new(), state.rv + 1, &p.cmd) {
                    state.commit(&ev);
                    events.push(Arc::new(ev));
                }
                let slot = machine::slot(index, position);
                seen.insert(p.id, slot);
                order.push_back((slot, p.id));
            }
        }
        while let Some(&(at, id)) = order.front() {
            if machine::slot_index(at) + DEDUPE_WINDOW > index {
                break;
            }
            order.pop_front();
            seen.remove(&id);
        }
    }
    (last == upto).then_some((oldest, events))
}
