//! List and watch: label and field selectors, pagination consistent at one version, and watch
//! streams with no gap and no duplicate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use rudder_api::registry::KindInfo;
use rudder_api::selector::{FieldSelector, LabelSelector};
use rudder_proto as pb;
use tokio::sync::{broadcast, mpsc};

use super::{Api, Identity, kind_key};
use crate::error::ApiError;
use crate::state::{Event, EventType, ObjKey, State, StoredObject};

/// A parsed filter: kind, namespace, selectors.
#[derive(Clone)]
pub(crate) struct Filter {
    kind: Arc<str>,
    namespace: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(
        info: &KindInfo,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(label_selector)
            .map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?;
        let fields = FieldSelector::parse(field_selector)
            .map_err(|e| ApiError::BadRequest(format!("fieldSelector: {e}")))?;
        let allowed = |f: &str| {
            f == "metadata.name" || f == "metadata.namespace" || info.selectable_fields.contains(&f)
        };
        fields
            .check_fields(&allowed, info.kind)
            .map_err(|e| ApiError::BadRequest(format!("fieldSelector: {e}")))?;
        Ok(Filter {
            kind: kind_key(info),
            namespace: if info.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            labels,
            fields,
        })
    }

    fn matches(&self, ns: &str, name: &str, obj: &StoredObject) -> bool {
        (self.labels.is_empty()
            || self
                .labels
                .matches_fn(&|k| obj.label(k).map(str::to_string)))
            && (self.fields.is_empty()
                || self.fields.matches(&|f| match f {
                    "metadata.name" => name.to_string(),
                    "metadata.namespace" => ns.to_string(),
                    other => obj.field(other).to_string(),
                }))
    }

    fn in_scope(&self, key: &ObjKey) -> bool {
        key.kind == self.kind && (self.namespace.is_empty() || key.namespace == self.namespace)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn encode_continue(rv: u64, (ns, name): &(String, String)) -> String {
    let raw = serde_json::to_vec(&ContinueToken {
        rv,
        ns: ns.clone(),
        name: name.clone(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    let bad =
        || ApiError::BadRequest("continue: Invalid value: the continue token is not valid".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    serde_json::from_slice(&raw).map_err(|_| bad())
}

impl Api {
    pub async fn list(
        &self,
        id: &Identity,
        req: pb::ListRequest,
    ) -> Result<pb::ListResponse, ApiError> {
        let info = self.kind(&req.kind)?;
        self.authorize_with(
            id,
            &crate::auth::authz::Attributes {
                verb: "list",
                group: info.group,
                resource: info.plural,
                namespace: if info.namespaced { &req.namespace } else { "" },
                field_selector: &req.field_selector,
                ..Default::default()
            },
        )?;
        let filter = Filter::new(
            &info,
            &req.namespace,
            &req.label_selector,
            &req.field_selector,
        )?;
        let (at, after) = if req.continue_token.is_empty() {
            if !req.allow_stale {
                self.store.read_barrier().await.map_err(|e| match e {
                    crate::store::StoreError::Unavailable(r) => ApiError::Unavailable(r),
                    other => ApiError::Internal(other.to_string()),
                })?;
            }
            (None, None)
        } else {
            let t = decode_continue(&req.continue_token)?;
            // A token from a version this store has not reached (issued by another server, or
            // before a restart) would list a state that never was at that version: wait for it.
            if let Err(current) = self
                .store
                .wait_for_version(t.rv, self.config.resource_version_wait)
                .await
            {
                return Err(ApiError::TooLargeResourceVersion {
                    requested: t.rv,
                    current,
                });
            }
            (Some(t.rv), Some((t.ns, t.name)))
        };
        let page = self
            .store
            .list(&filter.kind, &filter.namespace, at, after.as_ref(), req.limit as usize, &|(ns, name), o| {
                filter.matches(ns, name, o)
            })
            .map_err(|e| {
                ApiError::Expired(format!(
                    "The provided continue parameter is too old to display a consistent list result ({e}); start a new list without it"
                ))
            })?;
        let items = page
            .items
            .iter()
            .map(|((ns, name), o)| {
                let key = ObjKey {
                    kind: filter.kind.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                };
                self.to_pb(&info, &key, o)
            })
            .collect();
        Ok(pb::ListResponse {
            items,
            resource_version: page.resource_version,
            continue_token: page
                .continue_after
                .map(|k| encode_continue(page.resource_version, &k))
                .unwrap_or_default(),
            remaining_item_count: page.remaining,
        })
    }

    /// Starts a watch. Events flow into the returned receiver from a task that ends when the
    /// receiver is dropped, when the watch is cut off (an ERROR event says why), or when the
    /// server stops ([`Api::close_watches`]).
    pub async fn watch(
        &self,
        id: &Identity,
        req: pb::WatchRequest,
    ) -> Result<mpsc::Receiver<pb::WatchEvent>, ApiError> {
        let info = self.kind(&req.kind)?;
        self.authorize_with(
            id,
            &crate::auth::authz::Attributes {
                verb: "watch",
                group: info.group,
                resource: info.plural,
                namespace: if info.namespaced { &req.namespace } else { "" },
                field_selector: &req.field_selector,
                ..Default::default()
            },
        )?;
        let filter = Filter::new(
            &info,
            &req.namespace,
            &req.label_selector,
            &req.field_selector,
        )?;
        let interval = if req.bookmark_interval_ms > 0 {
            Duration::from_millis(u64::from(req.bookmark_interval_ms))
        } else {
            self.config.bookmark_interval
        };
        let (tx, rx) = mpsc::channel(256);
        let w = Watcher {
            api: self.clone(),
            info,
            filter,
            tx,
            last_rv: 0,
            bookmarks: req.allow_bookmarks,
            interval,
            _count: WatchCount::new(&self.watchers),
        };
        // Subscribe before returning, so an expired version is reported in the stream at once
        // and events written right after this call are not missed.
        let start = if req.resource_version == 0 {
            let (snapshot, rx) = self.store.snapshot_and_subscribe();
            Start::Snapshot(snapshot, rx)
        } else if req.resource_version > self.store.resource_version() {
            // Events up to that version have not happened here yet; waiting for them in the
            // watch task reports a refusal in the stream, as an expired version is.
            Start::Ahead(req.resource_version)
        } else {
            self.subscribe_from(req.resource_version)
        };
        let closing = self.closing.clone();
        tokio::spawn(async move {
            // Dropping the watcher drops its sender, which ends the client's stream.
            tokio::select! {
                () = w.run(start) => {}
                () = closing.cancelled() => {}
            }
        });
        Ok(rx)
    }
}

impl Api {
    fn subscribe_from(&self, from: u64) -> Start {
        match self.store.subscribe_from(from) {
            Ok((backlog, rx)) => Start::From(from, backlog, rx),
            Err(e) => Start::Expired(e.to_string()),
        }
    }
}

enum Start {
    /// The objects at a version (iterated in the watch task, outside every lock), then the feed.
    Snapshot(Arc<State>, broadcast::Receiver<Arc<Event>>),
    From(u64, Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>),
    Expired(String),
    /// From a version the store has not reached yet.
    Ahead(u64),
}

/// One watch: filters the shared event feed and forwards matching events.
struct Watcher {
    api: Api,
    info: Arc<KindInfo>,
    filter: Filter,
    tx: mpsc::Sender<pb::WatchEvent>,
    /// Every event up to here has been considered (sent if it matched).
    last_rv: u64,
    bookmarks: bool,
    interval: Duration,
    _count: WatchCount,
}

/// Counts open watches for the Admin service; decrements when the watcher ends.
struct WatchCount(Arc<AtomicU64>);

impl WatchCount {
    fn new(c: &Arc<AtomicU64>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        WatchCount(c.clone())
    }
}

impl Drop for WatchCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn error_event(code: i32, reason: &str, message: String, resume: u64) -> pb::WatchEvent {
    pb::WatchEvent {
        r#type: pb::EventType::Error as i32,
        object: None,
        resource_version: resume,
        error: Some(pb::WatchError {
            code,
            reason: reason.into(),
            message,
            resume_resource_version: resume,
        }),
    }
}

impl Watcher {
    async fn run(mut self, mut start: Start) {
        if let Start::Ahead(from) = start {
            let wait = self.api.config.resource_version_wait;
            let caught_up = tokio::select! {
                r = self.api.store.wait_for_version(from, wait) => r,
                _ = self.tx.closed() => return,
            };
            start = match caught_up {
                Ok(()) => self.api.subscribe_from(from),
                Err(current) => {
                    let msg = ApiError::TooLargeResourceVersion {
                        requested: from,
                        current,
                    }
                    .to_string();
                    let ev = error_event(
                        pb::watch_error::CODE_TOO_LARGE_RESOURCE_VERSION,
                        pb::watch_error::REASON_TOO_LARGE_RESOURCE_VERSION,
                        msg,
                        0,
                    );
                    let _ = self.tx.send(ev).await;
                    return;
                }
            };
        }
        let mut rx = match start {
            Start::Ahead(_) => return,
            Start::Expired(msg) => {
                let _ = self
                    .tx
                    .send(error_event(
                        pb::watch_error::CODE_EXPIRED,
                        pb::watch_error::REASON_EXPIRED,
                        msg,
                        0,
                    ))
                    .await;
                return;
            }
            Start::Snapshot(snapshot, rx) => {
                let (kind, namespace) = (self.filter.kind.clone(), self.filter.namespace.clone());
                for ((ns, name), obj) in snapshot.range(&kind, &namespace, None) {
                    if !self.filter.matches(ns, name, obj) {
                        continue;
                    }
                    let key = ObjKey {
                        kind: kind.clone(),
                        namespace: ns.clone(),
                        name: name.clone(),
                    };
                    if !self.send(EventType::Added, &key, obj).await {
                        return;
                    }
                }
                self.last_rv = snapshot.rv;
                rx
            }
            Start::From(from, backlog, rx) => {
                self.last_rv = from;
                for ev in backlog {
                    if !self.consider(&ev).await {
                        return;
                    }
                }
                rx
            }
        };
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if !self.consider(&ev).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let msg = format!(
                            "the watcher fell {n} events behind the store's buffer of {} and was cut off; watch again from resourceVersion {}",
                            self.api.store.watch_buffer(), self.last_rv
                        );
                        let _ = self.tx.send(error_event(pb::watch_error::CODE_TOO_SLOW, pb::watch_error::REASON_TOO_SLOW, msg, self.last_rv)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    // Everything up to the store's version is considered if nothing is queued.
                    let current = self.api.store.resource_version();
                    if rx.is_empty() {
                        self.last_rv = self.last_rv.max(current);
                    }
                    let ev = pb::WatchEvent {
                        r#type: pb::EventType::Bookmark as i32,
                        object: None,
                        resource_version: self.last_rv,
                        error: None,
                    };
                    if self.tx.send(ev).await.is_err() {
                        return;
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Sends the event if it concerns this watch; false when the receiver is gone.
    async fn consider(&mut self, ev: &Event) -> bool {
        if ev.rv <= self.last_rv {
            return true;
        }
        self.last_rv = ev.rv;
        if !self.filter.in_scope(&ev.key) {
            return true;
        }
        let (ns, name) = (&ev.key.namespace, &ev.key.name);
        let now = self.filter.matches(ns, name, &ev.object);
        let before = ev
            .prev
            .as_ref()
            .is_some_and(|p| self.filter.matches(ns, name, p));
        // An object entering or leaving the selection is ADDED or DELETED for this watcher; one
        // leaving it is sent as it last matched, at this change's version.
        match ev.kind {
            EventType::Deleted if before => {
                self.send(EventType::Deleted, &ev.key, &ev.object).await
            }
            EventType::Deleted => true,
            _ if now && before => self.send(EventType::Modified, &ev.key, &ev.object).await,
            _ if now => self.send(EventType::Added, &ev.key, &ev.object).await,
            _ if before => match ev.prev_at_this_version() {
                Some(last) => self.send(EventType::Deleted, &ev.key, last).await,
                None => true,
            },
            _ => true,
        }
    }

    async fn send(&self, kind: EventType, key: &ObjKey, obj: &StoredObject) -> bool {
        let t = match kind {
            EventType::Added => pb::EventType::Added,
            EventType::Modified => pb::EventType::Modified,
            EventType::Deleted => pb::EventType::Deleted,
        };
        let ev = pb::WatchEvent {
            r#type: t as i32,
            object: Some(self.api.to_pb(&self.info, key, obj)),
            resource_version: obj.rv,
            error: None,
        };
        self.tx.send(ev).await.is_ok()
    }
}
