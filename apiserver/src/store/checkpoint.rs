//! Checkpoints: the logged effects applied to the key-value engine (sled) in large durable
//! batches, off the request path; replay of the log into the engine and loading of the state at
//! start-up.
//!
//! Guarantees: the engine's applied index (`m/applied`) is written in the same atomic batch as
//! the effects up to it and made durable with them, so after any crash the engine holds a prefix
//! of the log, and replaying the records above its applied index brings it up to date.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::state::{ObjIndex, ObjKey, State, StoredObject};
use crate::storage::{Op, Storage, StorageError};
use crate::wal::Entry;

pub(super) const META_APPLIED: &[u8] = b"m/applied";
const OBJECT_PREFIX: &[u8] = b"o/";

/// How often the engine is brought up to date with the log, at the latest.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// Effects that trigger a checkpoint before the interval is up.
const CHECKPOINT_ENTRIES: usize = 20_000;

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

/// Reads every object from the engine into a state; the version continues from the applied index.
pub(super) fn load_state<S: Storage>(
    storage: &S,
    indexer: &Indexer,
) -> Result<State, StorageError> {
    let mut state = State::default();
    let mut applied = 0;
    for (k, v) in storage.scan_all()? {
        if k == META_APPLIED {
            applied = decode_index(&v)?;
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
pub(super) fn checkpointer<S: Storage>(
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
                shared.fail(reason);
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
pub(super) fn replay<S: Storage>(storage: &S, logged: Vec<Entry>) -> Result<(), StorageError> {
    let applied = match storage.get(META_APPLIED)? {
        Some(v) => decode_index(&v)?,
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
