//! Checkpoints: the logged effects applied to the key-value engine (sled) in large durable
//! batches, off the request path; replay of the log into the engine and loading of the state at
//! start-up.
//!
//! Guarantees: memory is bounded by bytes: effects committed but not yet durable in the engine
//! (queued, or in the checkpointer's batch) count against `checkpoint_queue_bytes`, and the
//! writer waits when the engine falls that far behind (which in turn holds back proposals). The
//! checkpointer writes a batch at least every 200 ms, or once it holds half the queue's bytes
//! (at most [`CHECKPOINT_BYTES`]) or [`CHECKPOINT_ENTRIES`] effects.
//!
//! The engine's applied index (`m/applied`) is written in the same atomic batch as
//! the effects up to it and made durable with them, so after any crash the engine holds a prefix
//! of the log, and replaying the records above its applied index brings it up to date.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Shared;
use super::log::Entry;
use crate::state::{ObjIndex, ObjKey, State, StoredObject};
use crate::storage::{Op, Storage, StorageError};

pub(super) const META_APPLIED: &[u8] = b"m/applied";
const OBJECT_PREFIX: &[u8] = b"o/";

/// How often the engine is brought up to date with the log, at the latest.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// Effects that trigger a checkpoint before the interval is up.
const CHECKPOINT_ENTRIES: usize = 20_000;
/// Bytes of effects that trigger a checkpoint before the interval is up.
pub const CHECKPOINT_BYTES: usize = 16 * 1024 * 1024;

/// What an effect costs in memory until it is checkpointed.
fn entry_bytes(e: &Entry) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, |v| v.len()) + 48
}

/// The hand-over from the writer to the checkpointer, bounded by bytes. A batch's bytes count
/// from [`CheckpointQueue::push`] until the checkpointer [`CheckpointQueue::release`]s them,
/// once they are durable in the engine.
pub(super) struct CheckpointQueue {
    inner: Mutex<QueueInner>,
    changed: Condvar,
    max_bytes: usize,
}

#[derive(Default)]
struct QueueInner {
    batches: VecDeque<(Vec<Entry>, usize)>,
    /// Bytes queued or taken but not yet released.
    bytes: usize,
    /// The writer is gone: no more batches will come.
    closed: bool,
    /// The checkpointer is gone (it failed): batches are dropped, never waited on.
    abandoned: bool,
}

impl CheckpointQueue {
    pub(super) fn new(max_bytes: usize) -> CheckpointQueue {
        CheckpointQueue {
            inner: Mutex::default(),
            changed: Condvar::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a batch, waiting while the queue holds `max_bytes` (a batch larger than that
    /// waits until nothing is outstanding, then goes alone).
    pub(super) fn push(&self, batch: Vec<Entry>) {
        let bytes = batch.iter().map(entry_bytes).sum();
        let mut q = self.lock();
        while !q.abandoned && q.bytes > 0 && q.bytes + bytes > self.max_bytes {
            q = self.changed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.abandoned {
            return;
        }
        q.bytes += bytes;
        q.batches.push_back((batch, bytes));
        self.changed.notify_all();
    }

    /// The next batch and its bytes (still counted until released), waiting up to `timeout`;
    /// `Err(())` once the writer is gone and all is taken.
    fn pop(&self, timeout: Duration) -> Result<Option<(Vec<Entry>, usize)>, ()> {
        let mut q = self.lock();
        if q.batches.is_empty() && !q.closed {
            q = self
                .changed
                .wait_timeout(q, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match q.batches.pop_front() {
            Some(taken) => Ok(Some(taken)),
            None if q.closed => Err(()),
            None => Ok(None),
        }
    }

    /// `bytes` taken earlier are durable in the engine: the writer may queue that much more.
    fn release(&self, bytes: usize) {
        let mut q = self.lock();
        q.bytes = q.bytes.saturating_sub(bytes);
        self.changed.notify_all();
    }

    /// The writer ends: the checkpointer drains what is queued, then stops.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The checkpointer stopped: never make the writer wait for it again.
    fn abandon(&self) {
        let mut q = self.lock();
        q.abandoned = true;
        q.batches.clear();
        q.bytes = 0;
        self.changed.notify_all();
    }

    /// Bytes committed but not yet durable in the engine.
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Storage key of an object: `o/<group>/<kind>\0<namespace>\0<name>`.
pub(super) fn object_key(k: &ObjKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + k.kind.len() + k.namespace.len() + k.name.len());
    v.extend_from_slice(OBJECT_PREFIX);
    v.extend_from_slice(k.kind.as_bytes());
    v.push(0);
    v.extend_from_slice(k.namespace.as_bytes());
    v.push(0);
    v.extend_from_slice(k.name.as_bytes());
    v
}

pub(super) fn parse_object_key(raw: &[u8]) -> Option<ObjKey> {
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

/// An object as the state holds it, from its stored JSON (version included).
pub(super) fn stored_object(
    key: &ObjKey,
    json: bytes::Bytes,
    indexer: &Indexer,
) -> Result<StoredObject, StorageError> {
    let value: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| StorageError::Corrupt(format!("object {key:?}: {e}")))?;
    let ObjIndex {
        labels,
        fields,
        claims,
    } = indexer(key, &value);
    Ok(StoredObject {
        rv: rudder_api::meta::resource_version(&value),
        deleting: rudder_api::meta::is_deleting(&value),
        json,
        labels,
        fields,
        claims,
    })
}

/// Reads every object from the engine into a state; the version continues from the applied index.
pub(super) fn load_state<S: Storage>(
    storage: &S,
    indexer: &Indexer,
) -> Result<State, StorageError> {
    state_from(storage.scan_all()?, indexer)
}

/// [`load_state`] from the engine's keys and values, already read.
pub(super) fn state_from(
    pairs: crate::storage::KvPairs,
    indexer: &Indexer,
) -> Result<State, StorageError> {
    let mut state = State::default();
    let mut applied = 0;
    for (k, v) in pairs {
        if k == META_APPLIED {
            applied = decode_index(&v)?;
            continue;
        }
        let Some(key) = parse_object_key(&k) else {
            continue;
        };
        let obj = stored_object(&key, v.into(), indexer)?;
        state.load(key, Arc::new(obj));
    }
    state.rv = state.rv.max(applied);
    Ok(state)
}

fn decode_index(v: &[u8]) -> Result<u64, StorageError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| StorageError::Corrupt("applied index".into()))?;
    Ok(u64::from_be_bytes(b))
}

/// Applies logged effects to the engine in large batches, durably, and records how far it got so
/// the writer can delete the log below it. Runs until the writer ends, then checkpoints the rest.
pub(super) fn checkpointer<S: Storage>(shared: Arc<Shared>, storage: Arc<S>) {
    let queue = &shared.checkpoints;
    // Checkpoint before the queue fills, so the writer rarely waits out the interval.
    let batch_bytes = CHECKPOINT_BYTES.min(queue.max_bytes / 2).max(1);
    let mut pending: Vec<Entry> = Vec::new();
    let mut pending_bytes = 0;
    let mut last = std::time::Instant::now();
    loop {
        let done = match queue.pop(CHECKPOINT_INTERVAL) {
            Ok(Some((mut batch, bytes))) => {
                pending_bytes += bytes;
                pending.append(&mut batch);
                false
            }
            Ok(None) => false,
            Err(()) => true,
        };
        let due = pending.len() >= CHECKPOINT_ENTRIES
            || pending_bytes >= batch_bytes
            || last.elapsed() >= CHECKPOINT_INTERVAL;
        if !pending.is_empty() && (due || done) {
            // A replicated member's batches end with the applied log position; once durable,
            // the log below it may be purged.
            let log_applied = pending
                .iter()
                .rev()
                .find(|e| e.key == super::machine::META_RAFT)
                .and_then(|e| e.value.as_deref())
                .and_then(super::machine::applied_index_of);
            if let Err(e) = checkpoint(&*storage, &mut pending) {
                let reason = format!(
                    "the store stopped accepting writes after a storage failure ({e}); free space or repair the disk, then restart the API server (the log keeps every acknowledged write)"
                );
                tracing::error!(%reason, "checkpoint failed");
                shared.fail(reason);
                queue.abandon();
                return;
            }
            shared
                .checkpointed
                .store(pending.last().map_or(0, |e| e.index), Ordering::Release);
            if let Some(i) = log_applied {
                shared.checkpointed_log.store(i, Ordering::Release);
            }
            pending.clear();
            queue.release(pending_bytes);
            pending_bytes = 0;
            last = std::time::Instant::now();
        }
        if done {
            return;
        }
    }
}

/// Writes `entries` (in log order) and the applied index to the engine and makes them durable.
pub(super) fn checkpoint<S: Storage>(
    storage: &S,
    entries: &mut [Entry],
) -> Result<(), StorageError> {
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
/// `span` is the first and last index the log holds: it must reach back to the engine's applied
/// index and no less far forward, or acknowledged writes would be missing (or versions reused).
pub(super) fn replay<S: Storage>(
    storage: &S,
    logged: Vec<Entry>,
    span: Option<(u64, u64)>,
) -> Result<(), StorageError> {
    let applied = match storage.get(META_APPLIED)? {
        Some(v) => decode_index(&v)?,
        None => 0,
    };
    if let Some((first, last)) = span {
        if first > applied + 1 {
            return Err(StorageError::Corrupt(format!(
                "the log starts at index {first} but the engine holds only up to {applied}: entries {} to {} are missing",
                applied + 1,
                first - 1
            )));
        }
        if last < applied {
            return Err(StorageError::Corrupt(format!(
                "the log ends at index {last} but the engine holds up to {applied}: the log lost acknowledged entries"
            )));
        }
    }
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
