//! Reads that span versions: selectors, lists with pagination, watches.
//!
//! Every stored change is kept as a [`Change`] (new and previous version), and each watcher
//! decides what it sees of it as the server's watchers do: an object entering its selection is
//! ADDED, one leaving it is DELETED with the last version that matched (re-stamped with the
//! change's version), changes outside it are not sent. Registration, replay and live fan-out
//! happen under the store's lock, so a watch has no gap and no duplicate.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use rudder_api::meta;
use rudder_api::selector::{FieldSelector, LabelSelector};
use rudder_proto as pb;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::lock;
use super::store::{KindMeta, ObjKey, State, restamp};
use crate::api::{CODE_EXPIRED, REASON_EXPIRED, WatchEvent, WatchStream};
use crate::conn::ClientError;

/// Continue tokens kept at once; older ones are forgotten (and then `Expired`).
const MAX_SNAPSHOTS: usize = 256;

type Sink = mpsc::UnboundedSender<Result<WatchEvent, ClientError>>;

/// One stored change.
pub(super) struct Change {
    pub key: ObjKey,
    pub rv: u64,
    pub deleted: bool,
    /// The new version; for a deletion, the last version re-stamped with the deletion's.
    pub object: pb::Object,
    pub prev: Option<pb::Object>,
}

/// What a list or watch selects.
pub(super) struct Filter {
    kind: String,
    namespace: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn new(k: &KindMeta, ns: &str, labels: &str, fields: &str) -> Result<Self, ClientError> {
        let labels = LabelSelector::parse(labels)
            .map_err(|e| ClientError::BadRequest(format!("labelSelector: {e}")))?;
        let fields = FieldSelector::parse(fields)
            .map_err(|e| ClientError::BadRequest(format!("fieldSelector: {e}")))?;
        if let Some(selectable) = k.selectable {
            let allowed = |f: &str| {
                f == "metadata.name" || f == "metadata.namespace" || selectable.contains(&f)
            };
            fields
                .check_fields(&allowed, &k.kind)
                .map_err(|e| ClientError::BadRequest(format!("fieldSelector: {e}")))?;
        }
        Ok(Filter {
            kind: k.key.clone(),
            namespace: k.list_ns(ns),
            labels,
            fields,
        })
    }

    fn in_scope(&self, key: &ObjKey) -> bool {
        key.0 == self.kind && (self.namespace.is_empty() || key.1 == self.namespace)
    }

    fn matches(&self, obj: &pb::Object) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return true;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&obj.json) else {
            return false;
        };
        self.labels.matches(&meta::labels(&v)) && self.fields.matches(&|f| meta::field_value(&v, f))
    }

    /// What a watcher with this filter sees of a change, if anything.
    fn view(&self, ch: &Change) -> Option<WatchEvent> {
        if !self.in_scope(&ch.key) {
            return None;
        }
        let before = ch.prev.as_ref().is_some_and(|p| self.matches(p));
        if ch.deleted {
            return before.then(|| WatchEvent::Deleted(ch.object.clone()));
        }
        match (self.matches(&ch.object), before) {
            (true, true) => Some(WatchEvent::Modified(ch.object.clone())),
            (true, false) => Some(WatchEvent::Added(ch.object.clone())),
            (false, true) => ch
                .prev
                .as_ref()
                .map(|p| WatchEvent::Deleted(restamp(p, ch.rv))),
            (false, false) => None,
        }
    }
}

/// One open watch.
pub(super) struct Watcher {
    id: u64,
    /// The [`super::FakeClient`] that opened it (0: the fake itself).
    pub owner: u64,
    filter: Filter,
    pub bookmarks: bool,
    /// Every change up to here has been considered.
    pub last_rv: u64,
    tx: Sink,
}

impl Watcher {
    /// Sends an event; false when the receiver is gone.
    pub fn send(&mut self, ev: WatchEvent, rv: u64) -> bool {
        self.last_rv = self.last_rv.max(rv);
        self.tx.send(Ok(ev)).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Offers a change; false when the receiver is gone.
    pub fn offer(&mut self, ch: &Change) -> bool {
        match self.filter.view(ch) {
            Some(ev) => self.send(ev, ch.rv),
            None => {
                self.last_rv = self.last_rv.max(ch.rv);
                !self.is_closed()
            }
        }
    }
}

pub(super) fn watch_error(code: i32, reason: &str, resume: u64) -> WatchEvent {
    WatchEvent::Error(pb::WatchError {
        code,
        reason: reason.to_string(),
        message: format!("watch ended: {reason}"),
        resume_resource_version: resume,
    })
}

/// A page snapshot: the version of the first page and the items still to come.
pub(super) type Snapshots = BTreeMap<u64, (u64, Vec<pb::Object>)>;

impl State {
    /// The oldest version a watch may start from without missing a change.
    pub fn oldest_resumable(&self) -> u64 {
        match self.history.front() {
            Some(ch) => ch.rv.saturating_sub(1),
            None => self.rv,
        }
    }

    /// Records a change and fans it out to the watchers.
    pub fn publish(&mut self, ch: Change) {
        self.watchers.retain_mut(|w| w.offer(&ch));
        self.history.push_back(ch);
        while self.history.len() > self.history_cap {
            self.history.pop_front();
        }
    }

    pub fn get(&self, req: pb::GetRequest) -> Result<pb::Object, ClientError> {
        let k = KindMeta::resolve(&req.kind)?;
        let key = (k.key.clone(), k.object_ns(&req.namespace), req.name);
        self.objects
            .get(&key)
            .cloned()
            .ok_or_else(|| k.not_found(&key.2))
    }

    pub fn list(&mut self, req: pb::ListRequest) -> Result<pb::ListResponse, ClientError> {
        let k = KindMeta::resolve(&req.kind)?;
        let (rv, mut items) = if req.continue_token.is_empty() {
            let f = Filter::new(&k, &req.namespace, &req.label_selector, &req.field_selector)?;
            let items = self
                .objects
                .iter()
                .filter(|(key, o)| f.in_scope(key) && f.matches(o))
                .map(|(_, o)| o.clone());
            (self.rv, items.collect::<Vec<_>>())
        } else {
            let expired = || {
                ClientError::Expired(
                    "The provided continue parameter is too old to display a consistent list result; start a new list without it".into(),
                )
            };
            let seq = req
                .continue_token
                .strip_prefix('c')
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    ClientError::Invalid(
                        "continue: Invalid value: the continue token is not valid".into(),
                    )
                })?;
            let (rv, rest) = self.snapshots.get(&seq).cloned().ok_or_else(expired)?;
            // The server rebuilds a page from its history; once that is gone, so is the page.
            if rv < self.oldest_resumable() {
                self.snapshots.remove(&seq);
                return Err(expired());
            }
            (rv, rest)
        };
        let limit = match req.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut continue_token = String::new();
        let mut remaining = 0;
        if items.len() > limit {
            let rest = items.split_off(limit);
            remaining = rest.len() as u64;
            self.token_seq += 1;
            continue_token = format!("c{}", self.token_seq);
            self.snapshots.insert(self.token_seq, (rv, rest));
            while self.snapshots.len() > MAX_SNAPSHOTS {
                self.snapshots.pop_first();
            }
        }
        Ok(pb::ListResponse {
            items,
            resource_version: rv,
            continue_token,
            remaining_item_count: remaining,
        })
    }
}

/// Opens a watch: replays from the requested version (or the current objects from 0), then
/// registers it for live changes, all under one lock.
pub(super) fn open(
    state: &std::sync::Arc<Mutex<State>>,
    req: pb::WatchRequest,
    owner: u64,
) -> Result<WatchStream, ClientError> {
    let mut st = lock(state);
    st.watch_versions.push(req.resource_version);
    let k = KindMeta::resolve(&req.kind)?;
    let filter = Filter::new(&k, &req.namespace, &req.label_selector, &req.field_selector)?;
    let (tx, rx) = mpsc::unbounded_channel();
    st.next_watcher += 1;
    let id = st.next_watcher;
    let mut w = Watcher {
        id,
        owner,
        filter,
        bookmarks: req.allow_bookmarks,
        last_rv: req.resource_version,
        tx,
    };
    let from = req.resource_version;
    if from == 0 {
        for (key, o) in &st.objects {
            if w.filter.in_scope(key) && w.filter.matches(o) {
                w.send(WatchEvent::Added(o.clone()), o.resource_version);
            }
        }
        w.last_rv = st.rv;
    } else if from < st.oldest_resumable() {
        w.send(watch_error(CODE_EXPIRED, REASON_EXPIRED, 0), 0);
        return Ok(UnboundedReceiverStream::new(rx).boxed());
    } else {
        for ch in st.history.iter().filter(|ch| ch.rv > from) {
            w.offer(ch);
        }
    }
    let every = match (req.allow_bookmarks, req.bookmark_interval_ms) {
        (false, _) => None,
        (true, 0) => st.bookmark_interval,
        (true, ms) => Some(Duration::from_millis(u64::from(ms))),
    };
    st.watchers.push(w);
    drop(st);
    if let Some(every) = every {
        spawn_bookmarks(std::sync::Arc::downgrade(state), id, every);
    }
    Ok(UnboundedReceiverStream::new(rx).boxed())
}

/// Sends a BOOKMARK at the store's version every `every` (tokio time) until the watch ends.
/// Without a runtime (a watch opened outside one) no bookmarks are sent.
fn spawn_bookmarks(state: Weak<Mutex<State>>, id: u64, every: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(state) = state.upgrade() else { return };
            let mut st = lock(&state);
            let rv = st.rv;
            let Some(i) = st.watchers.iter().position(|w| w.id == id) else {
                return;
            };
            if !st.watchers[i].send(WatchEvent::Bookmark(rv), rv) {
                st.watchers.remove(i);
                return;
            }
        }
    });
}
