//! The read path: list pages consistent at one version, served from immutable snapshots.
//!
//! Guarantees:
//! - Every page of one list is at the first page's version. A later page is rebuilt from the
//!   current snapshot by undoing, for the keys after the page's start, the events since that
//!   version (from the history window); a version older than the window is [`Expired`].
//! - A page scans the snapshot outside every lock, from its start key, and stops once it has
//!   `limit` matches and knows whether one more exists: its cost is the page (plus the objects
//!   the selector skips, plus the changes since its version), not the kind.
//! - `remaining` is exact when the rest of the kind is small enough to count on the way
//!   (at most [`COUNT_AHEAD`] more objects); otherwise it is 0, "not known", as Kubernetes
//!   leaves `remainingItemCount` unset when counting is not cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::hub::{Expired, Hub};
use crate::state::{Event, State, StoredObject};

/// Objects past a full page that are examined to count what remains before giving up.
pub const COUNT_AHEAD: usize = 1000;

/// One page of a list.
pub struct ListPage {
    pub items: Vec<((String, String), Arc<StoredObject>)>,
    pub resource_version: u64,
    pub continue_after: Option<(String, String)>,
    /// Matching objects after this page, when cheap to count; else 0.
    pub remaining: u64,
}

/// What to list: kind, namespace ("" for all), version (`None`: now), start, page size.
pub struct ListQuery<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub at: Option<u64>,
    pub after: Option<&'a (String, String)>,
    /// At most this many items (0: all).
    pub limit: usize,
}

impl ListQuery<'_> {
    /// The version the list is at, given the snapshot it is served from.
    fn version(&self, snapshot: &State) -> u64 {
        self.at.unwrap_or(snapshot.rv)
    }

    /// Whether a change to `ev`'s object concerns this page.
    fn concerns(&self, ev: &Event) -> bool {
        ev.key.kind.as_ref() == self.kind
            && (self.namespace.is_empty() || ev.key.namespace == self.namespace)
            && self
                .after
                .is_none_or(|(ns, name)| (&ev.key.namespace, &ev.key.name) > (ns, name))
    }
}

/// The events after the query's version that touched objects the page may hold, in log order;
/// empty for a list at the snapshot's version. Copies `Arc`s only: meant to run under the lock
/// that keeps the snapshot and the history in step.
pub(super) fn changes_since(
    snapshot: &State,
    hub: &Hub,
    q: &ListQuery<'_>,
) -> Result<Vec<Arc<Event>>, Expired> {
    let rv = q.version(snapshot);
    if rv >= snapshot.rv {
        return Ok(Vec::new());
    }
    Ok(hub.since(rv)?.filter(|e| q.concerns(e)).cloned().collect())
}

/// One page of `q` from `snapshot`, with `changes` (from [`changes_since`]) undone, keeping the
/// objects `keep` accepts.
pub(super) fn page(
    snapshot: &State,
    changes: &[Arc<Event>],
    q: &ListQuery<'_>,
    keep: &dyn Fn(&(String, String), &StoredObject) -> bool,
) -> ListPage {
    let rv = q.version(snapshot);
    // The value each changed key had at `rv`: the version before its first later change.
    let mut undo: BTreeMap<(String, String), Option<Arc<StoredObject>>> = BTreeMap::new();
    for ev in changes {
        let k = (ev.key.namespace.clone(), ev.key.name.clone());
        undo.entry(k).or_insert_with(|| ev.prev.clone());
    }
    let current = snapshot
        .range(q.kind, q.namespace, q.after)
        .filter(|(k, _)| !undo.contains_key(*k));
    let past = undo.iter().filter_map(|(k, v)| v.as_ref().map(|o| (k, o)));
    let mut merged = MergeByKey {
        a: current.peekable(),
        b: past.peekable(),
    };
    let mut items = Vec::new();
    for (k, o) in merged.by_ref() {
        if keep(k, o) {
            items.push((k.clone(), o.clone()));
            if q.limit != 0 && items.len() == q.limit {
                break;
            }
        }
    }
    // Count what matches beyond the page, within a bound.
    let mut remaining = 0u64;
    let mut exact = true;
    if q.limit != 0 && items.len() == q.limit {
        for (examined, (k, o)) in merged.enumerate() {
            if examined == COUNT_AHEAD.max(q.limit) {
                exact = false;
                break;
            }
            if keep(k, o) {
                remaining += 1;
            }
        }
    }
    let more = remaining > 0 || !exact;
    ListPage {
        continue_after: if more {
            items.last().map(|(k, _)| k.clone())
        } else {
            None
        },
        items,
        resource_version: rv,
        remaining: if exact { remaining } else { 0 },
    }
}

/// Merges two key-ordered iterators with disjoint keys.
struct MergeByKey<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A, B> Iterator for MergeByKey<A, B>
where
    A: Iterator<Item = (&'a (String, String), &'a Arc<StoredObject>)>,
    B: Iterator<Item = (&'a (String, String), &'a Arc<StoredObject>)>,
{
    type Item = (&'a (String, String), &'a Arc<StoredObject>);
    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => {
                if x.0 <= y.0 {
                    self.a.next()
                } else {
                    self.b.next()
                }
            }
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}
