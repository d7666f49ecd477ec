//! The replicated state machine: openraft's `RaftStateMachine` over the same [`State`], watch hub
//! and checkpointer that the single master uses.
//!
//! Guarantees:
//! - Deterministic: applying the same committed entries to the same state gives the same state on
//!   every member. A log entry holds a batch of proposals; each command's preconditions are
//!   checked here, in log order, and each successful one takes the next `resourceVersion` (a
//!   counter of successful writes, as etcd's revision: the same on every member, no gaps). A
//!   proposal is named by its *slot*, `log index << 16 | position in the batch`.
//! - A proposal's request id is remembered for [`DEDUPE_WINDOW`] log entries: a retried proposal
//!   (forwarded again after a leader change) changes nothing and answers as the first did. The ids
//!   are checkpointed into the engine with the objects, so a restarted member rebuilds the same
//!   table by re-applying the log from its checkpoint.
//! - Events are published to watchers in log order as they are applied, with the same versions
//!   on every member; the result of each entry is kept in a bounded [`Results`] ring for the
//!   proposer waiting on this member.
//! - Snapshots are cut from the immutable state at the applied position (writes go on meanwhile),
//!   kept on disk, and sent to members that are behind the log; installing one replaces the
//!   state, the engine's contents and the history (watchers from before it relist).

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::checkpoint::{Indexer, object_key, stored_object};
use super::hub::Hub;
use super::log::Entry as Effect;
use super::{Shared, StoreError};
use crate::replica::TypeConfig;
use crate::state::{ApplyError, Event, EventType, Overlay, State};
use crate::storage::StorageError as EngineError;

type Err = StorageError<u64>;

/// The latest snapshot: its metadata and bytes, shared by the machine and its builders.
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta<u64, BasicNode>, Arc<Vec<u8>>)>>>;

/// Log entries a request id is remembered for.
pub const DEDUPE_WINDOW: u64 = 100_000;
/// Results kept for proposers.
const RESULTS: usize = 65_536;

/// Engine key of the applied log id and membership.
pub(super) const META_RAFT: &[u8] = b"m/raft";
/// Engine key prefix of remembered request ids.
pub(super) const REQUEST_PREFIX: &[u8] = b"r/";

pub(super) type ApplyResult = Result<Arc<Event>, ApplyError>;

/// The results of recently applied proposals, by log index, for proposers waiting on this member.
pub(super) struct Results {
    ring: Mutex<VecDeque<(u64, ApplyResult)>>,
    /// The last log index applied here (published after the results of its entries).
    pub(super) applied: tokio::sync::watch::Sender<u64>,
}

/// A proposal's slot: its entry's log index and its position in the entry's batch.
pub(super) fn slot(index: u64, position: usize) -> u64 {
    (index << 16) | position as u64
}

/// The log index a slot belongs to.
pub(super) fn slot_index(slot: u64) -> u64 {
    slot >> 16
}

impl Results {
    pub(super) fn new(applied: u64) -> Results {
        Results {
            ring: Mutex::default(),
            applied: tokio::sync::watch::Sender::new(applied),
        }
    }

    fn push(&self, batch: Vec<(u64, ApplyResult)>) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.extend(batch);
        while ring.len() > RESULTS {
            ring.pop_front();
        }
    }

    /// The result of the proposal in `slot`, once applied; `None` if it is no longer (or never
    /// was) kept here.
    pub(super) fn get(&self, slot: u64) -> Option<ApplyResult> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let at = ring.partition_point(|(i, _)| *i < slot);
        ring.get(at)
            .filter(|(i, _)| *i == slot)
            .map(|(_, r)| r.clone())
    }
}

/// What the engine keeps beside the objects for the state machine.
#[derive(Serialize, Deserialize)]
struct MachineMeta {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

/// A snapshot's body.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotBody {
    version: u32,
    /// The version of the last successful write it holds.
    pub(super) rv: u64,
    /// kind, namespace, name, JSON.
    pub(super) objects: Vec<(String, String, String, Vec<u8>)>,
    /// Remembered request ids and the slot each was first applied at.
    pub(super) requests: Vec<(u128, u64)>,
}

/// Decodes a snapshot's body, refusing another format version.
pub(super) fn decode_body(data: &[u8]) -> Result<SnapshotBody, String> {
    let body: SnapshotBody =
        postcard::from_bytes(data).map_err(|e| format!("the snapshot does not decode: {e}"))?;
    if body.version != SNAPSHOT_VERSION {
        return Err(format!(
            "snapshot format version {}; this build reads {SNAPSHOT_VERSION}",
            body.version
        ));
    }
    Ok(body)
}

const SNAPSHOT_VERSION: u32 = 2;
const SNAPSHOT_FILE: &str = "snapshot";

pub(crate) struct Machine {
    shared: Arc<Shared>,
    state: State,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    results: Arc<Results>,
    requests: HashMap<u128, u64>,
    request_order: VecDeque<(u64, u128)>,
    indexer: Arc<Indexer>,
    dir: PathBuf,
    current: CurrentSnapshot,
}

fn sm_error(what: impl ToString) -> Err {
    StorageIOError::write_state_machine(AnyError::error(what.to_string())).into()
}

impl Machine {
    /// The machine over the state loaded from the engine; `meta` and `requests` as the engine
    /// holds them. `dir` keeps the latest snapshot.
    pub(super) fn new(
        shared: Arc<Shared>,
        state: State,
        engine_meta: Option<Vec<u8>>,
        requests: Vec<(u128, u64)>,
        results: Arc<Results>,
        indexer: Arc<Indexer>,
        dir: PathBuf,
    ) -> Result<Machine, EngineError> {
        let meta: MachineMeta = match engine_meta {
            Some(b) => postcard::from_bytes(&b)
                .map_err(|e| EngineError::Corrupt(format!("the applied raft position: {e}")))?,
            None => MachineMeta {
                applied: None,
                membership: StoredMembership::default(),
            },
        };
        let mut request_order: Vec<(u64, u128)> = requests.iter().map(|(r, i)| (*i, *r)).collect();
        request_order.sort_unstable();
        let current = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(b) => decode_snapshot_file(&b).map(|(m, d)| (m, Arc::new(d))),
            Err(_) => None,
        };
        Ok(Machine {
            shared,
            state,
            applied: meta.applied,
            membership: meta.membership,
            results,
            requests: requests.into_iter().collect(),
            request_order: request_order.into(),
            indexer,
            dir,
            current: Arc::new(Mutex::new(current)),
        })
    }

    /// The last log index applied to the state (and, after the start, to the engine).
    pub(super) fn applied_index(&self) -> u64 {
        self.applied.map_or(0, |l| l.index)
    }

    /// The snapshot on disk: its last log index and body.
    pub(super) fn current_snapshot(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .map(|(m, d)| (m.last_log_id.map_or(0, |l| l.index), d.clone()))
    }

    /// After a crash the snapshot on disk may be ahead of the engine: it is synced when cut or
    /// received, the engine's copy of the same state a little later, and the log need not hold
    /// the entries between the two (a follower that received the snapshot never had them). So
    /// the engine is brought to the snapshot first, as when one is installed.
    pub(super) async fn catch_up_with_snapshot(&mut self) -> Result<(), Err> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((meta, data)) = current
            && meta.last_log_id > self.applied
        {
            tracing::warn!(
                snapshot = ?meta.last_log_id,
                engine = ?self.applied,
                "the engine is behind the snapshot on disk (a crash in between); loading the snapshot"
            );
            self.install_snapshot(&meta, Box::new(Cursor::new(data.to_vec())))
                .await?;
        }
        Ok(())
    }

    fn meta_effect(&self, index: u64) -> Effect {
        let meta = MachineMeta {
            applied: self.applied,
            membership: self.membership.clone(),
        };
        Effect {
            index,
            key: META_RAFT.to_vec(),
            value: Some(Bytes::from(
                postcard::to_allocvec(&meta).unwrap_or_default(),
            )),
            created: false,
        }
    }

    fn request_key(id: u128) -> Vec<u8> {
        let mut k = REQUEST_PREFIX.to_vec();
        k.extend_from_slice(&id.to_be_bytes());
        k
    }

    /// Forgets ids older than the window at log `index`; their engine keys go in `effects`.
    fn expire_requests(&mut self, index: u64, effects: &mut Vec<Effect>) {
        while let Some(&(at, id)) = self.request_order.front() {
            if slot_index(at) + DEDUPE_WINDOW > index {
                break;
            }
            self.request_order.pop_front();
            self.requests.remove(&id);
            effects.push(Effect {
                index: self.state.rv,
                key: Self::request_key(id),
                value: None,
                created: false,
            });
        }
    }

    /// Applies one command at the next version: its event and engine effect on success.
    fn evaluate(
        &mut self,
        cmd: &crate::state::Command,
        events: &mut Vec<Arc<Event>>,
        effects: &mut Vec<Effect>,
    ) -> ApplyResult {
        let ev = self
            .state
            .evaluate(&Overlay::new(), self.state.rv + 1, cmd)?;
        self.state.commit(&ev);
        effects.push(Effect {
            index: ev.rv,
            key: object_key(&ev.key),
            value: (ev.kind != EventType::Deleted).then(|| ev.object.json.clone()),
            created: ev.kind == EventType::Added,
        });
        let ev = Arc::new(ev);
        events.push(ev.clone());
        Ok(ev)
    }

    /// Publishes a batch's events to readers and watchers, its results to proposers, and its
    /// effects to the checkpointer.
    fn publish(
        &mut self,
        events: Vec<Arc<Event>>,
        results: Vec<(u64, ApplyResult)>,
        mut effects: Vec<Effect>,
        index: u64,
    ) {
        let snapshot = Arc::new(self.state.clone());
        let previous = {
            let mut front = self.shared.front();
            for ev in events {
                front.hub.publish(ev);
            }
            front.hub.trim();
            std::mem::replace(&mut front.snapshot, snapshot)
        };
        drop(previous);
        // Results before the version: a proposer woken by the version finds its result.
        self.results.push(results);
        self.shared.published.send_replace(self.state.rv);
        self.results.applied.send_replace(index);
        effects.push(self.meta_effect(self.state.rv));
        self.shared.checkpoints.push(effects);
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), Err> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let mut results = Vec::new();
        let mut effects = Vec::new();
        let mut last = 0;
        for e in entries {
            let index = e.log_id.index;
            self.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                }
                EntryPayload::Normal(batch) => {
                    for (position, p) in batch.proposals.into_iter().enumerate() {
                        let slot = slot(index, position);
                        let result = match self.requests.get(&p.id) {
                            // A retry of an applied proposal: nothing changes; it answers as the
                            // first did, where that is still known here.
                            Some(&first) => self.results.get(first),
                            None => Some(self.evaluate(&p.cmd, &mut events, &mut effects)),
                        };
                        if let std::collections::hash_map::Entry::Vacant(v) =
                            self.requests.entry(p.id)
                        {
                            v.insert(slot);
                            self.request_order.push_back((slot, p.id));
                            effects.push(Effect {
                                index: self.state.rv,
                                key: Self::request_key(p.id),
                                value: Some(Bytes::copy_from_slice(&slot.to_be_bytes())),
                                created: true,
                            });
                        }
                        if let Some(result) = result {
                            results.push((slot, result));
                        }
                    }
                }
            }
            self.expire_requests(index, &mut effects);
            last = index;
            replies.push(());
        }
        if !replies.is_empty() {
            self.shared.counters.committed(results.len() as u64);
            self.publish(events, results, effects, last);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder {
            state: Arc::new(self.state.clone()),
            applied: self.applied,
            membership: self.membership.clone(),
            requests: self.requests.iter().map(|(r, i)| (*r, *i)).collect(),
            dir: self.dir.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let data = snapshot.into_inner();
        let body = decode_body(&data).map_err(sm_error)?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let rv = body.rv;
        let mut state = State::default();
        let mut effects = Vec::new();
        // The engine ends up holding exactly the snapshot: what the state has now goes first.
        for (k, _) in self.state.iter() {
            effects.push(Effect {
                index: rv,
                key: object_key(&k),
                value: None,
                created: false,
            });
        }
        for id in self.requests.keys() {
            effects.push(Effect {
                index: rv,
                key: Self::request_key(*id),
                value: None,
                created: false,
            });
        }
        for (kind, namespace, name, json) in body.objects {
            let key = crate::state::ObjKey {
                kind: Arc::from(kind.as_str()),
                namespace,
                name,
            };
            let json = Bytes::from(json);
            let obj = stored_object(&key, json.clone(), &*self.indexer)
                .map_err(|e| sm_error(format!("the snapshot holds an unreadable object: {e}")))?;
            effects.push(Effect {
                index: rv,
                key: object_key(&key),
                value: Some(json),
                created: true,
            });
            state.load(key, Arc::new(obj));
        }
        state.rv = rv;
        self.requests.clear();
        self.request_order.clear();
        let mut order = body.requests.clone();
        order.sort_unstable_by_key(|(_, i)| *i);
        for (id, at) in order {
            self.requests.insert(id, at);
            self.request_order.push_back((at, id));
            effects.push(Effect {
                index: rv,
                key: Self::request_key(id),
                value: Some(Bytes::copy_from_slice(&at.to_be_bytes())),
                created: true,
            });
        }
        self.state = state;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        {
            let mut front = self.shared.front();
            // Watchers from before the snapshot cannot be continued: they relist.
            front.hub = Hub::configured(rv, &self.shared.config);
            front.snapshot = Arc::new(self.state.clone());
        }
        self.shared.published.send_replace(rv);
        self.results.applied.send_replace(index);
        effects.push(self.meta_effect(rv));
        self.shared.checkpoints.push(effects);
        save_snapshot_file(&self.dir, meta, &data).map_err(sm_error)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), Arc::new(data)));
        // The log is purged past the snapshot next; the engine must hold it first.
        while self.shared.checkpointed_log.load(Ordering::Acquire) < index {
            if self.shared.failed_reason().is_some() {
                return Err(sm_error("the engine failed while installing a snapshot"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(index, objects = self.state.len(), "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Err> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(meta, data)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(data.to_vec())),
            }))
    }
}

/// Cuts a snapshot from an immutable state; writes go on meanwhile.
pub(crate) struct Builder {
    state: Arc<State>,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    requests: Vec<(u128, u64)>,
    dir: PathBuf,
    current: CurrentSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Err> {
        let state = self.state.clone();
        let requests = std::mem::take(&mut self.requests);
        let data = tokio::task::spawn_blocking(move || {
            let body = SnapshotBody {
                version: SNAPSHOT_VERSION,
                rv: state.rv,
                objects: super::backup::objects(&state),
                requests,
            };
            postcard::to_allocvec(&body)
        })
        .await
        .map_err(|e| sm_error(format!("building the snapshot: {e}")))?
        .map_err(|e| sm_error(format!("encoding the snapshot: {e}")))?;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.applied.map_or(0, |l| l.leader_id.term),
                self.applied.map_or(0, |l| l.index)
            ),
        };
        let (dir, m, d) = (self.dir.clone(), meta.clone(), data.clone());
        tokio::task::spawn_blocking(move || save_snapshot_file(&dir, &m, &d))
            .await
            .map_err(|e| sm_error(e.to_string()))?
            .map_err(sm_error)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), Arc::new(data.clone())));
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// The snapshot file: `crc32(rest): u32 LE | postcard(meta, body bytes)`, replaced atomically.
fn save_snapshot_file(
    dir: &std::path::Path,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
) -> Result<(), String> {
    let body = postcard::to_allocvec(&(meta, data)).map_err(|e| e.to_string())?;
    let crc = crc32fast::hash(&body).to_le_bytes();
    super::backup::write_synced(dir, SNAPSHOT_FILE, &[&crc, &body])
        .map_err(|e| format!("writing {}: {e}", dir.join(SNAPSHOT_FILE).display()))
}

fn decode_snapshot_file(b: &[u8]) -> Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)> {
    let (crc, body) = b.split_at_checked(4)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        tracing::warn!("the saved snapshot is damaged; a new one is built when needed");
        return None;
    }
    postcard::from_bytes(body).ok()
}

/// The applied log index recorded in the engine's state-machine meta value.
pub(super) fn applied_index_of(b: &[u8]) -> Option<u64> {
    postcard::from_bytes::<MachineMeta>(b)
        .ok()?
        .applied
        .map(|l| l.index)
}

/// Reads the request ids the engine holds.
pub(super) fn engine_requests(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(u128, u64)> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix(REQUEST_PREFIX)?;
            let id = u128::from_be_bytes(id.try_into().ok()?);
            let at = u64::from_be_bytes(v.as_slice().try_into().ok()?);
            Some((id, at))
        })
        .collect()
}

/// Maps a missing result to the error a proposer gets.
pub(super) fn unknown_outcome(index: u64) -> StoreError {
    StoreError::Unavailable(format!(
        "the write was committed at index {index}, but its result is no longer known on this API server (it installed a snapshot meanwhile); read the object to see its state"
    ))
}
