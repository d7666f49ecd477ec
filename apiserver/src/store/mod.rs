//! The store: the state machine behind a log, with group commit, a watch history window and
//! event fan-out.
//!
//! Guarantees:
//! - A write is acknowledged only after the batch holding it is durable (the [`Log`] committed
//!   it). Concurrent writers share one append: the writer thread takes every proposal waiting
//!   when it starts a batch (group commit).
//! - Readers never see a write before it is durable: effects are evaluated against the current
//!   state plus the batch's own pending changes, persisted, and only then published.
//! - `resourceVersion` is the log position of the command that produced a version; it increases
//!   strictly with every successful write.
//! - The history window keeps the most recent events (bounded), and is rebuilt from the log's
//!   retained effects on start ([`history`]). A watch from a version older than
//!   the window fails with "expired"; events are published to watchers in log order under the
//!   same lock that appends them to the history, so a watcher starting from the history and then
//!   following the live feed sees no gap and no duplicate.
//! - If the disk is short of space (below the margin, counting the batch itself), writes are
//!   refused before anything is written, and accepted again once space returns. If an append
//!   fails part-way, its batch is answered as failed with an unknown outcome and the log is cut
//!   back to its last acknowledged entry; only if that fails too, or a checkpoint fails, does
//!   the store stop accepting writes until restart (guessing would risk acknowledging lost
//!   writes).
//!
//! Layout, along the seams the Raft issue needs:
//! - [`log`]: the one seam Raft replaces ("append these durably, say when committed, in order");
//!   today the local [`crate::raft::RaftLog`] (term 1).
//! - [`legacy`]: a log directory of the earlier format, migrated once into the engine.
//! - [`commit`]: the writer thread (group commit) in front of the state machine.
//! - [`checkpoint`]: the engine (sled) brought up to date from the log in the background; replay
//!   and loading at start-up.
//! - [`hub`]: the history window and fan-out to watchers.
//! - [`read`]: list pages and snapshots.
//! - [`stats`]: figures for the Admin service.

pub mod backup;
mod checkpoint;
mod commit;
mod history;
mod hub;
mod legacy;
pub mod log;
mod machine;
mod read;
mod rebuild;
mod replicated;
mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use self::checkpoint::Indexer;
use self::hub::Hub;
pub use self::hub::{Backlog, Expired};
pub use self::log::{AppendError, Entry, Log};
pub use self::read::{ListPage, ListQuery};
use self::stats::Counters;
pub use self::stats::StoreStats;
use crate::raft::{Disk, LogOptions, RaftLog, RealDisk};
use crate::state::{ApplyError, Command, Event, ObjKey, State, StoredObject};
use crate::storage::{Storage, StorageError, free_bytes};

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Events kept for watches to resume from.
    pub history_window: usize,
    /// Bytes of events kept for watches to resume from (whichever of the two binds first).
    pub history_bytes: usize,
    /// Bytes of proposals waiting for the writer; a proposal beyond waits to be queued.
    pub proposal_queue_bytes: usize,
    /// Bytes of committed effects waiting to be checkpointed into the engine; the writer
    /// waits beyond.
    pub checkpoint_queue_bytes: usize,
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
            history_bytes: 64 * 1024 * 1024,
            proposal_queue_bytes: 64 * 1024 * 1024,
            checkpoint_queue_bytes: 64 * 1024 * 1024,
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
    /// The replicated log could not take the write now (no leader, or the outcome is unknown
    /// here); a client may retry.
    #[error("{0}")]
    Unavailable(String),
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Arc<Event>, StoreError>>,
    /// The proposal's share of the queue's bytes, held until it is answered.
    _queued: tokio::sync::OwnedSemaphorePermit,
}

/// What a command costs in memory while queued and in its batch.
fn command_bytes(cmd: &Command) -> usize {
    const OVERHEAD: usize = 256;
    let key = cmd.key();
    let body = match cmd {
        Command::Put {
            object,
            labels,
            fields,
            claims,
            ..
        } => {
            object.len()
                + labels
                    .iter()
                    .chain(fields)
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
                + claims.iter().map(String::len).sum::<usize>()
        }
        Command::Delete { .. } => 0,
    };
    body + key.name.len() + key.namespace.len() + OVERHEAD
}

/// What readers see, replaced by the writer after every commit. Held only for pointer swaps and
/// for copying a backlog out: no reader scans objects under it, so a writer never waits on a
/// large list and a list never waits on a commit.
struct Front {
    /// The state as of the last published commit; immutable.
    snapshot: Arc<State>,
    hub: Hub,
}

struct Shared {
    front: Mutex<Front>,
    /// `Some(reason)` once writes are refused for good (until restart).
    failed: Mutex<Option<String>>,
    counters: Counters,
    /// Highest log index the engine holds durably; the log below it may be deleted.
    checkpointed: Arc<AtomicU64>,
    /// A replicated member's Raft log index the engine holds durably (`checkpointed` counts
    /// versions there, which are not log indexes).
    checkpointed_log: Arc<AtomicU64>,
    /// Set when the writer thread ends (every handle dropped), to stop the stats task.
    closed: AtomicBool,
    /// The version of the last published commit, for readers waiting to catch up with a version
    /// they were given elsewhere (a continue token, a watch resuming on another server).
    published: watch::Sender<u64>,
    /// Permits are bytes of proposals queued or in the writer's batch.
    queue: Arc<tokio::sync::Semaphore>,
    checkpoints: checkpoint::CheckpointQueue,
    config: StoreConfig,
}

impl Shared {
    fn front(&self) -> MutexGuard<'_, Front> {
        // A panic inside the lock would be a bug in this module; the data stays consistent
        // because changes under it are single assignments, so continue with it.
        self.front.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses writes from now on, for `reason`.
    fn fail(&self, reason: String) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    fn failed_reason(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether writes are accepted, and if not, why.
    fn writable(&self) -> Result<(), String> {
        if let Some(r) = self.failed_reason() {
            return Err(r);
        }
        let free = self.counters.disk_free.load(Ordering::Relaxed);
        if free < self.config.min_free_bytes {
            return Err(format!(
                "insufficient storage: {free} bytes free on the data directory's filesystem, {} required; writes are refused until space is freed",
                self.config.min_free_bytes
            ));
        }
        Ok(())
    }
}

/// Semaphore permits for `bytes` (a semaphore counts in `u32`).
fn queue_permits(bytes: usize) -> u32 {
    u32::try_from(bytes.max(1)).unwrap_or(u32::MAX)
}

/// The state shared by the writer (or replicated state machine), readers and background tasks.
fn new_shared<S: Storage>(
    storage: &S,
    state: State,
    hub: Hub,
    config: StoreConfig,
    log_bytes: u64,
) -> Arc<Shared> {
    let compacted = state.rv;
    let counters = Counters::default();
    counters
        .size_on_disk
        .store(storage.size_on_disk(), Ordering::Relaxed);
    counters.disk_free.store(
        storage.dir().and_then(free_bytes).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    counters.log_bytes.store(log_bytes, Ordering::Relaxed);
    Arc::new(Shared {
        front: Mutex::new(Front {
            snapshot: Arc::new(state),
            hub,
        }),
        failed: Mutex::new(None),
        counters,
        closed: AtomicBool::new(false),
        checkpointed: Arc::new(AtomicU64::new(compacted)),
        checkpointed_log: Arc::new(AtomicU64::new(0)),
        published: watch::Sender::new(compacted),
        queue: Arc::new(tokio::sync::Semaphore::new(
            queue_permits(config.proposal_queue_bytes) as usize,
        )),
        checkpoints: checkpoint::CheckpointQueue::new(config.checkpoint_queue_bytes),
        config,
    })
}

/// Starts the checkpointer and the sampling of size and free space.
fn start_background<S: Storage>(shared: &Arc<Shared>, storage: Arc<S>) -> Result<(), StorageError> {
    let (c_shared, c_storage) = (shared.clone(), storage.clone());
    std::thread::Builder::new()
        .name("rudder-store-checkpoint".into())
        .spawn(move || checkpoint::checkpointer(c_shared, c_storage))
        .map_err(|e| StorageError::Io(format!("starting the checkpoint thread: {e}")))?;
    // Size and free space are sampled on a timer, so health and stats stay current while idle
    // and the write path never waits on a filesystem query. The task ends with the store.
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { break };
            if shared.closed.load(Ordering::Relaxed) {
                break;
            }
            shared.counters.refresh(&*storage);
        }
    });
    Ok(())
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Writer,
}

/// Where writes go: the local writer thread, or the replicated log.
#[derive(Clone)]
enum Writer {
    Local(mpsc::Sender<Proposal>),
    Replicated(Arc<replicated::Replicated>),
}

/// The state at a version, and the live feed after it.
pub type Snapshot = (Arc<State>, broadcast::Receiver<Arc<Event>>);

impl Store {
    /// Opens the store over `storage` with the local log in `log_dir`, loading every object, and
    /// starts the writer and checkpoint threads.
    pub fn open<S: Storage>(
        storage: S,
        log_dir: &std::path::Path,
        config: StoreConfig,
        indexer: &Indexer,
    ) -> Result<Store, StorageError> {
        Self::open_on(storage, Arc::new(RealDisk), log_dir, config, indexer)
    }

    /// [`Store::open`] with the log on `disk` (a fake in tests).
    ///
    /// Start-up writes nothing to the log (beyond cutting a torn tail off), so a store on a full
    /// disk opens and serves reads; its writes are refused until space returns.
    pub fn open_on<S: Storage>(
        storage: S,
        disk: Arc<dyn Disk>,
        log_dir: &std::path::Path,
        config: StoreConfig,
        indexer: &Indexer,
    ) -> Result<Store, StorageError> {
        legacy::migrate(&*disk, log_dir, &storage)?;
        let opts = LogOptions {
            min_free_bytes: config.min_free_bytes,
            ..LogOptions::default()
        };
        let log = RaftLog::open(disk, log_dir, opts)?;
        let logged = log
            .read_all()?
            .into_iter()
            .map(log::decode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let span = log.first_index().zip(log.last().map(|(index, _)| index));
        let history = history::rebuild(&logged, indexer)?;
        checkpoint::replay(&storage, logged, span)?;
        Self::open_inner(storage, log, config, indexer, Some(history))
    }

    /// Opens the store over `storage` (already up to date with `log`) and appends to `log`.
    pub fn open_with_log<S: Storage, L: Log>(
        storage: S,
        log: L,
        config: StoreConfig,
        indexer: &Indexer,
    ) -> Result<Store, StorageError> {
        Self::open_inner(storage, log, config, indexer, None)
    }

    /// Opens the store; `history` is the watch window rebuilt from the log (the version after
    /// which it is complete, and its events), used when it ends at the loaded state's version.
    fn open_inner<S: Storage, L: Log>(
        storage: S,
        log: L,
        config: StoreConfig,
        indexer: &Indexer,
        history: Option<(u64, Vec<Arc<Event>>)>,
    ) -> Result<Store, StorageError> {
        let state = checkpoint::load_state(&storage, indexer)?;
        let hub = match history {
            Some((oldest, events)) if events.last().is_some_and(|ev| ev.rv == state.rv) => {
                Hub::with_history(oldest, events, &config)
            }
            _ => Hub::configured(state.rv, &config),
        };
        let shared = new_shared(&storage, state.clone(), hub, config, log.size());
        let storage = Arc::new(storage);
        start_background(&shared, storage)?;
        let (tx, rx) = mpsc::channel(65536);
        let w_shared = shared.clone();
        std::thread::Builder::new()
            .name("rudder-store-writer".into())
            .spawn(move || commit::writer(w_shared, state, log, rx))
            .map_err(|e| StorageError::Io(format!("starting the writer thread: {e}")))?;
        Ok(Store {
            shared,
            writer: Writer::Local(tx),
        })
    }

    /// Proposes a write and waits until it is durable and applied (or refused).
    pub async fn propose(&self, cmd: Command) -> Result<Arc<Event>, StoreError> {
        let tx = match &self.writer {
            Writer::Local(tx) => tx,
            Writer::Replicated(r) => return r.propose(&self.shared, cmd).await,
        };
        let (reply, rx) = oneshot::channel();
        // Waits while the queue holds its bytes: memory, not the number of commands, is what a
        // flood of large writes would exhaust.
        let want = command_bytes(&cmd).min(self.shared.config.proposal_queue_bytes.max(1));
        let queued = self
            .shared
            .queue
            .clone()
            .acquire_many_owned(queue_permits(want))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        tx.send(Proposal {
            cmd,
            reply,
            _queued: queued,
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Before a linearizable read: on a replicated member, waits until it has applied every write
    /// committed before the call (read-index through the leader); a single master is always
    /// current.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        match &self.writer {
            Writer::Local(_) => Ok(()),
            Writer::Replicated(r) => r.read_barrier().await,
        }
    }

    /// On the leader: proposals a follower forwarded join this member's batches; answers where
    /// each went.
    pub async fn forwarded(
        &self,
        batch: crate::replica::codec::Batch,
    ) -> crate::replica::network::Forwarded {
        match &self.writer {
            Writer::Local(_) => crate::replica::network::Forwarded::Failed(
                "this API server is a single master".into(),
            ),
            Writer::Replicated(r) => r.forwarded(batch).await,
        }
    }

    /// A membership change of a replicated cluster, carried out by the leader.
    pub async fn change_members(
        &self,
        change: crate::replica::network::MemberChange,
    ) -> Result<(), StoreError> {
        match &self.writer {
            Writer::Local(_) => Err(StoreError::Unavailable(
                "this API server is a single master, not a member of a replicated cluster".into(),
            )),
            Writer::Replicated(r) => r.change_members(change).await,
        }
    }

    /// The state as of the last commit: immutable, consistent, and free to hold (later commits
    /// publish a new snapshot; this one stays as it is).
    pub fn snapshot(&self) -> Arc<State> {
        self.shared.front().snapshot.clone()
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<StoredObject>> {
        self.snapshot().get(key).cloned()
    }

    pub fn resource_version(&self) -> u64 {
        *self.shared.published.borrow()
    }

    /// Whether writes are accepted, and if not, why.
    pub fn writable(&self) -> Result<(), String> {
        self.shared.writable()
    }

    /// Waits up to `limit` until the store has published version `rv`; on time-out returns the
    /// version it is at. A version above the current one comes from elsewhere (another server,
    /// a token from before a restart that lost the log's tail) and must not be served as if the
    /// events up to it had been seen.
    pub async fn wait_for_version(&self, rv: u64, limit: Duration) -> Result<(), u64> {
        let mut rx = self.shared.published.subscribe();
        match tokio::time::timeout(limit, rx.wait_for(|v| *v >= rv)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.resource_version()),
        }
    }

    pub fn stats(&self) -> StoreStats {
        let (snapshot, oldest, events, history_bytes) = {
            let front = self.shared.front();
            (
                front.snapshot.clone(),
                front.hub.oldest(),
                front.hub.len(),
                front.hub.bytes(),
            )
        };
        let c = &self.shared.counters;
        StoreStats {
            resource_version: snapshot.rv,
            objects: snapshot.len() as u64,
            size_on_disk: c.size_on_disk.load(Ordering::Relaxed),
            disk_free: c.disk_free.load(Ordering::Relaxed),
            history_oldest: oldest,
            history_events: events as u64,
            unwritable_reason: self.writable().err(),
            commits: c.commits.load(Ordering::Relaxed),
            committed_writes: c.committed_writes.load(Ordering::Relaxed),
            history_bytes: history_bytes as u64,
            queued_bytes: (queue_permits(self.shared.config.proposal_queue_bytes) as usize)
                .saturating_sub(self.shared.queue.available_permits())
                as u64,
            checkpoint_queued_bytes: self.shared.checkpoints.bytes() as u64,
        }
    }

    /// Subscribes to events after `from`: returns the backlog from the history (events with a
    /// version above `from`, in order) and a receiver for everything later. No gap, no duplicate.
    pub fn subscribe_from(&self, from: u64) -> Result<Backlog, Expired> {
        // Publishing happens under the same lock, so nothing can slip between the backlog and
        // the receiver.
        self.shared.front().hub.subscribe_from(from)
    }

    /// The current state with a receiver for every later event, atomically: for watches that
    /// start with the current objects.
    pub fn snapshot_and_subscribe(&self) -> Snapshot {
        let front = self.shared.front();
        (front.snapshot.clone(), front.hub.subscribe())
    }

    /// Lists objects of `kind` as of version `at` (or now), in key order after `after`, keeping
    /// those `keep` accepts, at most `limit` (0 = all). Returns the items, the version the list
    /// is consistent at, the last key returned when more remain, and how many more match when
    /// that is cheap to tell (see [`read`]).
    ///
    /// A page at an older version is rebuilt from the current snapshot by undoing the later
    /// events in the history window; a version older than the window is [`Expired`]. The scan
    /// runs on an immutable snapshot, outside every lock.
    pub fn list(
        &self,
        kind: &str,
        namespace: &str,
        at: Option<u64>,
        after: Option<&(String, String)>,
        limit: usize,
        keep: &dyn Fn(&(String, String), &StoredObject) -> bool,
    ) -> Result<ListPage, Expired> {
        let q = ListQuery {
            kind,
            namespace,
            at,
            after,
            limit,
        };
        let (snapshot, changes) = {
            let front = self.shared.front();
            let changes = read::changes_since(&front.snapshot, &front.hub, &q)?;
            (front.snapshot.clone(), changes)
        };
        Ok(read::page(&snapshot, &changes, &q, keep))
    }

    /// Events a watcher may lag by before being cut off.
    /// Free bytes below which writes are refused.
    pub fn min_free_bytes(&self) -> u64 {
        self.shared.config.min_free_bytes
    }

    pub fn watch_buffer(&self) -> usize {
        self.shared.config.watch_buffer
    }
}

#[cfg(test)]
mod tests;
