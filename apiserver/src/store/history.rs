//! Rebuilding the watch history window from the log at start-up, so that a watch from a version
//! before a restart resumes instead of relisting.
//!
//! The log holds, per version, the key and the new JSON (or a deletion) and whether the object
//! was new. An event also needs the version before it (`prev`: a `DELETED` event carries the last
//! version, and a selector watch needs the old labels of a `MODIFIED` one). Walking the retained
//! entries forward, `prev` is known for a creation (none) and for any change to a key changed
//! earlier in the log; the first change to an object older than the log has an unknown `prev`,
//! so the rebuilt window starts after the last such entry. Every event kept is therefore exact,
//! and a watch from before the window's start is `Expired` as before.

use std::collections::HashMap;
use std::sync::Arc;

use super::checkpoint::{Indexer, parse_object_key, stored_object};
use super::log::Entry;
use crate::state::{Command, Event, EventType, Expect, Overlay, State, StoredObject};
use crate::storage::StorageError;

/// The events rebuilt from `entries` (the log, in order), and the version after which the
/// history is complete.
pub(super) fn rebuild(
    entries: &[Entry],
    indexer: &Indexer,
) -> Result<(u64, Vec<Arc<Event>>), StorageError> {
    let mut oldest = entries.first().map_or(0, |e| e.index.saturating_sub(1));
    let mut events: Vec<Arc<Event>> = Vec::new();
    let mut known: HashMap<&[u8], Option<Arc<StoredObject>>> = HashMap::new();
    for e in entries {
        let prev = if e.created {
            Some(None)
        } else {
            known.get(e.key.as_slice()).cloned()
        };
        let Some(key) = parse_object_key(&e.key) else {
            continue;
        };
        let after = match &e.value {
            Some(v) => Some(Arc::new(stored_object(&key, v.clone(), indexer)?)),
            None => None,
        };
        known.insert(&e.key, after.clone());
        let ev = match (prev, after) {
            (Some(None), Some(obj)) => Event::new(e.index, EventType::Added, key, obj, None),
            (Some(Some(p)), Some(obj)) => {
                Event::new(e.index, EventType::Modified, key, obj, Some(p))
            }
            // A deletion: the state machine's own rule makes the event (the last version
            // re-stamped), from a state holding just the previous version.
            (Some(Some(p)), None) => {
                let mut state = State::default();
                let expect = Expect::Version(p.rv);
                state.load(key.clone(), p);
                state
                    .evaluate(&Overlay::new(), e.index, &Command::Delete { key, expect })
                    .map_err(|err| StorageError::Corrupt(format!("log entry {}: {err}", e.index)))?
            }
            // The version before is older than the log (or a deletion of nothing).
            _ => {
                oldest = e.index;
                events.clear();
                continue;
            }
        };
        events.push(Arc::new(ev));
    }
    Ok((oldest, events))
}
