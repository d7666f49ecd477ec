//! The read path: list pages consistent at one version, and the snapshot a watch from zero
//! starts with.
//!
//! Guarantees: every page of one list is at the first page's version. A later page is rebuilt
//! from the current state by undoing, for the keys after the page's start, the events since
//! that version (from the history window); a version older than the window is [`Expired`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::hub::{Expired, Hub};
use crate::state::{ObjKey, State, StoredObject};

/// One page of a list.
pub struct ListPage {
    pub items: Vec<((String, String), Arc<StoredObject>)>,
    pub resource_version: u64,
    pub continue_after: Option<(String, String)>,
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

/// The current objects of `kind` in `namespace` (or all), with their keys.
pub(super) fn objects(
    state: &State,
    kind: &str,
    namespace: &str,
) -> Vec<(ObjKey, Arc<StoredObject>)> {
    state
        .range(kind, namespace, None)
        .map(|((ns, name), o)| {
            (
                ObjKey {
                    kind: Arc::from(kind),
                    namespace: ns.clone(),
                    name: name.clone(),
                },
                o.clone(),
            )
        })
        .collect()
}

/// One page of `q`, keeping the objects `keep` accepts.
pub(super) fn list(
    state: &State,
    hub: &Hub,
    q: &ListQuery<'_>,
    keep: &dyn Fn(&(String, String), &StoredObject) -> bool,
) -> Result<ListPage, Expired> {
    let (kind, namespace, after, limit) = (q.kind, q.namespace, q.after, q.limit);
    let rv = q.at.unwrap_or(state.rv);
    // The value each key had at `rv`, for keys changed since.
    let mut undo: BTreeMap<(String, String), Option<Arc<StoredObject>>> = BTreeMap::new();
    if rv < state.rv {
        for ev in hub.since(rv)? {
            if ev.key.kind.as_ref() != kind
                || (!namespace.is_empty() && ev.key.namespace != namespace)
            {
                continue;
            }
            let k = (ev.key.namespace.clone(), ev.key.name.clone());
            if after.is_some_and(|a| &k <= a) {
                continue;
            }
            undo.entry(k).or_insert_with(|| ev.prev.clone());
        }
    }
    let current = state
        .range(kind, namespace, after)
        .filter(|(k, _)| !undo.contains_key(*k));
    let past = undo.iter().filter_map(|(k, v)| v.as_ref().map(|o| (k, o)));
    let merged = MergeByKey {
        a: current.peekable(),
        b: past.peekable(),
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut remaining = 0u64;
    for (k, o) in merged {
        if !keep(k, o) {
            continue;
        }
        if limit == 0 || items.len() < limit {
            items.push((k.clone(), o.clone()));
            last = Some(k.clone());
        } else {
            remaining += 1;
        }
    }
    Ok(ListPage {
        items,
        resource_version: rv,
        continue_after: if remaining > 0 { last } else { None },
        remaining,
    })
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
