//! The store: the state machine behind a log, with group commit, a watch history window and
//! event fan-out.
//!
//! Guarantees:
//! - A write is acknowledged only after the batch holding it is durable (`Storage::flush`).
//!   Concurrent writers share one flush: the writer thread takes every proposal waiting when it
//!   starts a batch (group commit).
//! - Readers never see a write before it is durable: effects are evaluated against the current
//!   state plus the batch's own pending changes, persisted, and only then published.
//! - `resourceVersion` is the log position of the command that produced a version; it increases
//!   strictly with every successful write.
//! - The history window keeps the most recent events (bounded). A watch from a version older than
//!   the window fails with "expired"; events are published to watchers in log order under the
//!   same lock that appends them to the history, so a watcher starting from the history and then
//!   following the live feed sees no gap and no duplicate.
//! - If the disk is short of space, writes are refused before anything is written. If a flush
//!   fails, the store stops accepting writes until restart: the outcome of that batch is unknown,
//!   and guessing would risk acknowledging lost writes.
//!
//! With one master the log is local ([`crate::wal`]): each group commit appends the batch's
//! effects to the log and `fdatasync`s it before anyone is answered; a checkpoint thread applies
//! the same effects to the key-value engine (sled) in large batches, durably, and the log below
//! the last checkpoint is deleted. On open, records above the engine's applied index are replayed
//! into it. Raft will put its replicated log in front of the same [`State`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::state::{
    ApplyError, Command, Event, EventType, ObjIndex, ObjKey, Overlay, State, StoredObject,
};
use crate::storage::{Op, Storage, StorageError, free_bytes};
use crate::wal::{Entry, Wal};

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Events kept for watches to resume from.
    pub history_window: usize,
    /// Events a watcher may be behind the writer before it is cut off.
    pub watch_buffer: usize,
    /// Writes are refused while the data directory's filesystem has less free space.
    pub min_free_bytes: u64,
    /// Most commands in one group commit.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_window: 100_000,
            watch_buffer: 8192,
            min_free_bytes: 64 * 1024 * 1024,
            max_batch: 4096,
        }
    }
}

/// Why a proposed write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// Nothing was written: the store is out of space or was stopped by an earlier failure.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("the store is shutting down")]
    ShuttingDown,
}

/// A watch asked for a version older than the history window.
#[derive(Debug, Clone, thiserror::Error)]
#[error("too old resource version: {requested} (the oldest still available is {oldest})")]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Arc<Event>, StoreError>>,
}

pub(crate) struct Inner {
    pub state: State,
    history: VecDeque<Arc<Event>>,
    /// Every event with a version above this is in `history`.
    compacted: u64,
}

struct Shared {
    inner: RwLock<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    /// `Some(reason)` once writes are refused for good (until restart).
    failed: Mutex<Option<String>>,
    size_on_disk: AtomicU64,
    disk_free: AtomicU64,
    /// Highest log index the engine holds durably; the log below it may be deleted.
    checkpointed: AtomicU64,
    /// Bytes in the log.
    log_bytes: AtomicU64,
    /// Group commits (one flush each) and the writes they carried.
    commits: AtomicU64,
    committed_writes: AtomicU64,
    /// Set when the writer thread ends (every handle dropped), to stop the stats task.
    closed: std::sync::atomic::AtomicBool,
    config: StoreConfig,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Proposal>,
}

/// Figures for the Admin service.
#[derive(Debug, Clone)]
pub struct StoreStats {
    pub resource_version: u64,
    pub objects: u64,
    pub size_on_disk: u64,
    pub disk_free: u64,
    pub history_oldest: u64,
    pub history_events: u64,
    pub unwritable_reason: Option<String>,
    pub commits: u64,
    pub committed_writes: u64,
}

const META_APPLIED: &[u8] = b"m/applied";
const OBJECT_PREFIX: &[u8] = b"o/";

/// Storage key of an object: `o/<group>/<kind>\0<namespace>\0<name>`.
fn object_key(k: &ObjKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + k.kind.len() + k.namespace.len() + k.name.len());
    v.extend_from_slice(OBJECT_PREFIX);
    v.extend_from_slice(k.kind.as_bytes());
    v.push(0);
    v.extend_from_slice(k.namespace.as_bytes());
    v.push(0);
    v.extend_from_slice(k.name.as_bytes());
    v
}

fn parse_object_key(raw: &[u8]) -> Option<ObjKey> {
    let rest = raw.strip_prefix(OBJECT_PREFIX)?;
    let mut parts = rest.splitn(3, |&b| b == 0);
    let kind = std::str::from_utf8(parts.next()?).ok()?;
    let ns = std::str::from_utf8(parts.next()?).ok()?;
    let name = std::str::from_utf8(parts.next()?).ok()?;
    Some(ObjKey {
        kind: Arc::from(kind),
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

/// Computes an object's labels and selectable fields from its JSON; supplied by the service
/// layer, which knows each kind's selectable fields.
pub type Indexer = dyn Fn(&ObjKey, &serde_json::Value) -> ObjIndex + Send + Sync;

impl Store {
    /// Opens the store over `storage`, loading every object, and starts the writer thread.
    pub fn open<S: Storage>(
        storage: S,
        log_dir: &std::path::Path,
        config: StoreConfig,
        indexer: &Indexer,
    ) -> Result<Store, StorageError> {
        let (wal, logged) = Wal::open(log_dir)?;
        replay(&storage, logged)?;
        let mut state = State::default();
        let mut applied = 0;
        for (k, v) in storage.scan_all()? {
            if k == META_APPLIED {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("applied index".into()))?;
                applied = u64::from_be_bytes(b);
                continue;
            }
            let Some(key) = parse_object_key(&k) else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_slice(&v)
                .map_err(|e| StorageError::Corrupt(format!("object {key:?}: {e}")))?;
            let rv = rudder_api::meta::resource_version(&value);
            let ObjIndex {
                labels,
                fields,
                claims,
            } = indexer(&key, &value);
            let deleting = rudder_api::meta::is_deleting(&value);
            state.load(
                key,
                Arc::new(StoredObject {
                    rv,
                    json: v.into(),
                    labels,
                    fields,
                    deleting,
                    claims,
                }),
            );
        }
        state.rv = state.rv.max(applied);
        let compacted = state.rv;
        let (events, _) = broadcast::channel(config.watch_buffer.max(16));
        let shared = Arc::new(Shared {
            inner: RwLock::new(Inner {
                state,
                history: VecDeque::new(),
                compacted,
            }),
            events,
            failed: Mutex::new(None),
            size_on_disk: AtomicU64::new(storage.size_on_disk()),
            disk_free: AtomicU64::new(storage.dir().and_then(free_bytes).unwrap_or(u64::MAX)),
            closed: std::sync::atomic::AtomicBool::new(false),
            commits: AtomicU64::new(0),
            committed_writes: AtomicU64::new(0),
            checkpointed: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            config,
        });
        shared.checkpointed.store(compacted, Ordering::Relaxed);
        shared.log_bytes.store(wal.size(), Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(65536);
        let storage = Arc::new(storage);
        let (ck_tx, ck_rx) = std::sync::mpsc::channel();
        let (c_shared, c_storage) = (shared.clone(), storage.clone());
        std::thread::Builder::new()
            .name("rudder-store-checkpoint".into())
            .spawn(move || checkpointer(c_shared, c_storage, ck_rx))
            .map_err(|e| StorageError::Io(format!("starting the checkpoint thread: {e}")))?;
        let w_shared = shared.clone();
        std::thread::Builder::new()
            .name("rudder-store-writer".into())
            .spawn(move || writer(w_shared, wal, ck_tx, rx))
            .map_err(|e| StorageError::Io(format!("starting the writer thread: {e}")))?;
        // Size and free space are sampled on a timer, so health and stats stay current while idle
        // and the write path never waits on a filesystem query. The task ends with the store.
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                if shared.closed.load(Ordering::Relaxed) {
                    break;
                }
                refresh_stats(&shared, &*storage);
            }
        });
        Ok(Store { shared, tx })
    }

    /// Proposes a write and waits until it is durable and applied (or refused).
    pub async fn propose(&self, cmd: Command) -> Result<Arc<Event>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// A consistent read view of the current state.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic inside the lock would be a bug in this module; the data stays consistent
        // because commits are single assignments, so continue with it.
        self.shared.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<StoredObject>> {
        self.read().state.get(key).cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.read().state.rv
    }

    /// Whether writes are accepted, and if not, why.
    pub fn writable(&self) -> Result<(), String> {
        if let Some(r) = self.failed_reason() {
            return Err(r);
        }
        let free = self.shared.disk_free.load(Ordering::Relaxed);
        if free < self.shared.config.min_free_bytes {
            return Err(format!(
                "insufficient storage: {free} bytes free on the data directory's filesystem, {} required; writes are refused until space is freed",
                self.shared.config.min_free_bytes
            ));
        }
        Ok(())
    }

    fn failed_reason(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> StoreStats {
        let inner = self.read();
        StoreStats {
            resource_version: inner.state.rv,
            objects: inner.state.len() as u64,
            size_on_disk: self.shared.size_on_disk.load(Ordering::Relaxed),
            disk_free: self.shared.disk_free.load(Ordering::Relaxed),
            history_oldest: inner.compacted,
            history_events: inner.history.len() as u64,
            unwritable_reason: self.writable().err(),
            commits: self.shared.commits.load(Ordering::Relaxed),
            committed_writes: self.shared.committed_writes.load(Ordering::Relaxed),
        }
    }

    /// Subscribes to events after `from`: returns the backlog from the history (events with a
    /// version above `from`, in order) and a receiver for everything later. No gap, no duplicate.
    pub fn subscribe_from(&self, from: u64) -> Result<Backlog, Expired> {
        let inner = self.read();
        if from < inner.compacted {
            return Err(Expired {
                requested: from,
                oldest: inner.compacted,
            });
        }
        // Publishing happens under the write lock, so nothing can slip between the backlog and
        // the receiver while we hold the read lock.
        let rx = self.shared.events.subscribe();
        let start = inner.history.partition_point(|e| e.rv <= from);
        let backlog = inner.history.iter().skip(start).cloned().collect();
        Ok((backlog, rx))
    }

    /// The current objects of `kind` (in `namespace`, or all) with a receiver for every later
    /// event, atomically: for watches that start with the current state.
    pub fn snapshot_and_subscribe(&self, kind: &str, namespace: &str) -> Snapshot {
        let inner = self.read();
        let rx = self.shared.events.subscribe();
        let items = inner
            .state
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
            .collect();
        (items, inner.state.rv, rx)
    }

    /// Lists objects of `kind` as of version `at` (or now), in key order after `after`, keeping
    /// those `keep` accepts, at most `limit` (0 = all). Returns the items, the version the list
    /// is consistent at, the last key returned when more remain, and how many more match.
    ///
    /// A page at an older version is rebuilt from the current state by undoing the later
    /// events in the history window; a version older than the window is [`Expired`].
    pub fn list(
        &self,
        kind: &str,
        namespace: &str,
        at: Option<u64>,
        after: Option<&(String, String)>,
        limit: usize,
        keep: &dyn Fn(&(String, String), &StoredObject) -> bool,
    ) -> Result<ListPage, Expired> {
        let inner = self.read();
        let rv = at.unwrap_or(inner.state.rv);
        // The value each key had at `rv`, for keys changed since.
        let mut undo: BTreeMap<(String, String), Option<Arc<StoredObject>>> = BTreeMap::new();
        if rv < inner.state.rv {
            if rv < inner.compacted {
                return Err(Expired {
                    requested: rv,
                    oldest: inner.compacted,
                });
            }
            let start = inner.history.partition_point(|e| e.rv <= rv);
            for ev in inner.history.iter().skip(start) {
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
        let current = inner
            .state
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

    /// Events a watcher may lag by before being cut off.
    pub fn watch_buffer(&self) -> usize {
        self.shared.config.watch_buffer
    }
}

/// History after a version, then the live feed.
pub type Backlog = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// The current objects of a kind, the version they are at, and the live feed after it.
pub type Snapshot = (
    Vec<(ObjKey, Arc<StoredObject>)>,
    u64,
    broadcast::Receiver<Arc<Event>>,
);

/// One page of a list.
pub struct ListPage {
    pub items: Vec<((String, String), Arc<StoredObject>)>,
    pub resource_version: u64,
    pub continue_after: Option<(String, String)>,
    pub remaining: u64,
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

/// The single writer: batches proposals, evaluates them in log order, persists the batch with one
/// flush, then publishes and replies.
///
/// It runs on its own OS thread and blocks on I/O: a flush never occupies an async worker, and
/// no hand-off to a blocking pool sits between the fsync and the replies.
fn writer(
    shared: Arc<Shared>,
    mut wal: Wal,
    checkpoints: std::sync::mpsc::Sender<Vec<Entry>>,
    mut rx: mpsc::Receiver<Proposal>,
) {
    let mut compacted_upto = 0;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < shared.config.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let refuse = {
            let failed = shared
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            failed.or_else(|| {
                let free = shared.disk_free.load(Ordering::Relaxed);
                (free < shared.config.min_free_bytes).then(|| {
                    format!(
                        "insufficient storage: {free} bytes free on the data directory's filesystem, {} required; writes are refused until space is freed",
                        shared.config.min_free_bytes
                    )
                })
            })
        };
        if let Some(reason) = refuse {
            for p in batch {
                let _ = p
                    .reply
                    .send(Err(StoreError::InsufficientStorage(reason.clone())));
            }
            continue;
        }

        // Evaluate in log order against the state plus this batch's pending effects.
        let mut results: Vec<Result<Arc<Event>, StoreError>> = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        {
            let inner = shared.inner.read().unwrap_or_else(|p| p.into_inner());
            let mut index = inner.state.rv;
            let mut overlay = Overlay::new();
            for p in &batch {
                match inner.state.evaluate(&overlay, index + 1, &p.cmd) {
                    Ok(ev) => {
                        index += 1;
                        entries.push(Entry {
                            index: ev.rv,
                            key: object_key(&ev.key),
                            value: (ev.kind != EventType::Deleted).then(|| ev.object.json.clone()),
                        });
                        overlay.record(&ev);
                        results.push(Ok(Arc::new(ev)));
                    }
                    Err(e) => results.push(Err(e.into())),
                }
            }
        }

        if !entries.is_empty() {
            let writes = entries.len() as u64;
            let persisted = wal.append(&entries);
            if persisted.is_ok() {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.committed_writes.fetch_add(writes, Ordering::Relaxed);
            }
            if let Err(e) = persisted {
                let reason = format!(
                    "the store stopped accepting writes after a storage failure ({e}); free space or repair the disk, then restart the API server"
                );
                tracing::error!(%reason, "storage failure");
                *shared.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                for p in batch {
                    let _ = p
                        .reply
                        .send(Err(StoreError::InsufficientStorage(reason.clone())));
                }
                continue;
            }
            let mut inner = shared.inner.write().unwrap_or_else(|p| p.into_inner());
            for ev in results.iter().flatten() {
                inner.state.commit(ev);
                inner.history.push_back(ev.clone());
                // Nobody listening is fine: watchers come and go.
                let _ = shared.events.send(ev.clone());
            }
            while inner.history.len() > shared.config.history_window {
                if let Some(old) = inner.history.pop_front() {
                    inner.compacted = old.rv;
                }
            }
            drop(inner);
            // The engine catches up in the background; a closed channel means the checkpointer
            // failed, which it has already recorded as a storage failure.
            let _ = checkpoints.send(entries);
            shared.log_bytes.store(wal.size(), Ordering::Relaxed);
        }
        let checkpointed = shared.checkpointed.load(Ordering::Acquire);
        if checkpointed > compacted_upto {
            wal.compact(checkpointed);
            compacted_upto = checkpointed;
        }
        for (p, r) in batch.into_iter().zip(results) {
            let _ = p.reply.send(r);
        }
    }
    shared.closed.store(true, Ordering::Relaxed);
}

/// How often the engine is brought up to date with the log, at the latest.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// Effects that trigger a checkpoint before the interval is up.
const CHECKPOINT_ENTRIES: usize = 20_000;

/// Applies logged effects to the engine in large batches, durably, and records how far it got so
/// the writer can delete the log below it. Runs until the writer ends, then checkpoints the rest.
fn checkpointer<S: Storage>(
    shared: Arc<Shared>,
    storage: Arc<S>,
    rx: std::sync::mpsc::Receiver<Vec<Entry>>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending: Vec<Entry> = Vec::new();
    let mut last = std::time::Instant::now();
    loop {
        let done = match rx.recv_timeout(CHECKPOINT_INTERVAL) {
            Ok(mut batch) => {
                pending.append(&mut batch);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = pending.len() >= CHECKPOINT_ENTRIES || last.elapsed() >= CHECKPOINT_INTERVAL;
        if !pending.is_empty() && (due || done) {
            if let Err(e) = checkpoint(&*storage, &mut pending) {
                let reason = format!(
                    "the store stopped accepting writes after a storage failure ({e}); free space or repair the disk, then restart the API server (the log keeps every acknowledged write)"
                );
                tracing::error!(%reason, "checkpoint failed");
                *shared.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                return;
            }
            shared
                .checkpointed
                .store(pending.last().map_or(0, |e| e.index), Ordering::Release);
            pending.clear();
            last = std::time::Instant::now();
        }
        if done {
            return;
        }
    }
}

/// Writes `entries` (in log order) and the applied index to the engine and makes them durable.
fn checkpoint<S: Storage>(storage: &S, entries: &mut [Entry]) -> Result<(), StorageError> {
    let Some(last) = entries.last().map(|e| e.index) else {
        return Ok(());
    };
    let mut ops = Vec::with_capacity(entries.len() + 1);
    for e in entries.iter_mut() {
        let key = std::mem::take(&mut e.key);
        ops.push(match e.value.take() {
            Some(v) => Op::Put(key, v.to_vec()),
            None => Op::Delete(key),
        });
    }
    ops.push(Op::Put(META_APPLIED.to_vec(), last.to_be_bytes().to_vec()));
    storage.apply(ops)?;
    storage.flush()
}

/// Brings the engine up to date with records logged after its last checkpoint (start-up).
fn replay<S: Storage>(storage: &S, logged: Vec<Entry>) -> Result<(), StorageError> {
    let applied = match storage.get(META_APPLIED)? {
        Some(v) => u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt("applied index".into()))?,
        ),
        None => 0,
    };
    let mut missing: Vec<Entry> = logged.into_iter().filter(|e| e.index > applied).collect();
    if !missing.is_empty() {
        tracing::info!(
            records = missing.len(),
            from = applied + 1,
            "replaying the log into the store"
        );
        checkpoint(storage, &mut missing)?;
    }
    Ok(())
}

fn refresh_stats<S: Storage>(shared: &Shared, storage: &S) {
    shared.size_on_disk.store(
        storage.size_on_disk() + shared.log_bytes.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    if let Some(free) = storage.dir().and_then(free_bytes) {
        shared.disk_free.store(free, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::SledStorage;

    fn no_index(_: &ObjKey, v: &serde_json::Value) -> ObjIndex {
        ObjIndex {
            labels: rudder_api::meta::labels(v).into_iter().collect(),
            ..Default::default()
        }
    }

    fn entry(index: u64, name: &str, value: Option<&str>) -> Entry {
        let key = object_key(&ObjKey {
            kind: Arc::from("/ConfigMap"),
            namespace: "default".into(),
            name: name.into(),
        });
        Entry {
            index,
            key,
            value: value.map(|v| Bytes::from(v.to_string())),
        }
    }

    #[tokio::test]
    async fn a_failed_checkpoint_stops_writes_but_keeps_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::MemStorage::new();
        storage.fail_flushes();
        let store = Store::open(
            storage,
            &dir.path().join("log"),
            StoreConfig::default(),
            &no_index,
        )
        .unwrap();
        let put = |name: &str| Command::Put {
            key: ObjKey {
                kind: Arc::from("/Namespace"),
                namespace: String::new(),
                name: name.into(),
            },
            expect: crate::state::Expect::Absent,
            object: Bytes::from_static(br#"{"metadata":{"name":"x"}}"#),
            labels: vec![],
            fields: vec![],
            deleting: false,
            claims: vec![],
        };
        // Durable in the log, so acknowledged; the checkpoint into the engine then fails.
        store.propose(put("a")).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.writable().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the failed checkpoint was not noticed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(
            store.propose(put("b")).await,
            Err(StoreError::InsufficientStorage(_))
        ));
        assert_eq!(
            Wal::open(&dir.path().join("log")).unwrap().1.len(),
            1,
            "the log still holds the write"
        );
    }

    #[tokio::test]
    async fn records_only_in_the_log_are_replayed_into_the_engine_on_open() {
        let dir = tempfile::tempdir().unwrap();
        // The engine saw index 1 only; the log holds 1..=3 (the process died before the
        // checkpoint of 2 and 3).
        {
            let storage = SledStorage::open(dir.path()).unwrap();
            let mut first = vec![entry(
                1,
                "a",
                Some(r#"{"metadata":{"resourceVersion":"1","name":"a"}}"#),
            )];
            checkpoint(&storage, &mut first).unwrap();
            let (mut wal, _) = Wal::open(&dir.path().join("log")).unwrap();
            wal.append(&[
                entry(
                    1,
                    "a",
                    Some(r#"{"metadata":{"resourceVersion":"1","name":"a"}}"#),
                ),
                entry(
                    2,
                    "b",
                    Some(r#"{"metadata":{"resourceVersion":"2","name":"b"}}"#),
                ),
                entry(3, "a", None),
            ])
            .unwrap();
        }
        let storage = SledStorage::open(dir.path()).unwrap();
        let store = Store::open(
            storage,
            &dir.path().join("log"),
            StoreConfig::default(),
            &no_index,
        )
        .unwrap();
        let key = |n: &str| ObjKey {
            kind: Arc::from("/ConfigMap"),
            namespace: "default".into(),
            name: n.into(),
        };
        assert!(
            store.get(&key("a")).is_none(),
            "the logged delete was replayed"
        );
        assert_eq!(store.get(&key("b")).map(|o| o.rv), Some(2));
        assert_eq!(store.resource_version(), 3);
    }
}
