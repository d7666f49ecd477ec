//! The store on the replicated log: opening a member, and proposing writes from any member.
//!
//! A write on the leader is proposed to openraft directly; on a follower it is forwarded to the
//! leader over the Raft port. Either way the proposer then waits until *its own* member has
//! applied the entry and answers with that member's result, so a client that reads from the
//! member it wrote through sees its write. A proposal carries a request id chosen here: when a
//! leader change leaves the outcome unknown the proposal is sent again with the same id, and the
//! state machine applies it once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{Indexer, state_from};
use super::hub::Hub;
use super::machine::{self, META_RAFT, Machine, Results};
use super::rebuild::{self, Base};
use super::{Shared, Store, StoreConfig, StoreError, Writer, new_shared, start_background};
use crate::raft::{Disk, LogOptions};
use crate::replica::codec::{Batch, MAX_BATCH, Proposal};
use crate::replica::logstore::LogStore;
use crate::replica::network::{
    Forwarded, MemberChange, Network, change_members_here, read_index_here,
};
use crate::replica::{RaftHandle, ReplicaConfig, rejoin};
use crate::state::{Command, Event};
use crate::storage::{Storage, StorageError};

/// How long a write waits for a leader, and for its entry to be applied here.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

pub(super) struct Replicated {
    pub(super) raft: RaftHandle,
    results: Arc<Results>,
    network: Network,
    id: u64,
    /// Proposals waiting for the batcher.
    queue: mpsc::Sender<Waiting>,
}

/// A proposal and who waits for it.
type Waiting = (Proposal, Reply);

/// A proposer on this member waits for the result; a follower that forwarded the proposal
/// waits for its slot, and reads the result from its own state machine.
enum Reply {
    Result(oneshot::Sender<Result<Arc<Event>, StoreError>>),
    Slot(oneshot::Sender<Result<u64, StoreError>>),
}

/// Batches proposed at once from one member; more wait for one of them to finish.
const IN_FLIGHT: usize = 4;
/// Bytes of commands in one batch, at most (beside [`MAX_BATCH`] proposals).
const BATCH_BYTES: usize = 4 * 1024 * 1024;

impl Store {
    /// Opens a member of a replicated cluster over `storage` (the state machine's engine), with
    /// the Raft log and snapshots under `dir`; bootstraps the cluster from `replica.members` if
    /// this member has never been part of one. Peers are reached through `network`.
    pub async fn open_replicated<S: Storage>(
        storage: S,
        disk: Arc<dyn Disk>,
        dir: &Path,
        config: StoreConfig,
        indexer: Arc<Indexer>,
        replica: &ReplicaConfig,
        network: Network,
    ) -> Result<(Store, RaftHandle), StorageError> {
        let pairs = storage.scan_all()?;
        let engine_meta = pairs
            .iter()
            .find(|(k, _)| k.as_slice() == META_RAFT)
            .map(|(_, v)| v.clone());
        let requests = machine::engine_requests(&pairs);
        let state = state_from(pairs, &*indexer)?;
        let hub = Hub::configured(state.rv, &config);
        let log_dir = dir.join("log");
        let opts = LogOptions {
            min_free_bytes: config.min_free_bytes,
            ..LogOptions::default()
        };
        let shared = new_shared(&storage, state.clone(), hub, config, 0);
        let applied_log = engine_meta
            .as_deref()
            .and_then(machine::applied_index_of)
            .unwrap_or(0);
        shared
            .checkpointed_log
            .store(applied_log, std::sync::atomic::Ordering::Release);
        let log = LogStore::open(disk, &log_dir, opts, shared.checkpointed_log.clone())
            .map_err(StorageError::from)?;
        let fresh = log.is_empty() && engine_meta.is_none();
        // A restored backup: objects in the engine that no log entry produced.
        let restored = fresh && !state.is_empty();
        start_background(&shared, Arc::new(storage))?;
        let results = Arc::new(Results::new(applied_log));
        let mut machine = Machine::new(
            shared.clone(),
            state,
            engine_meta,
            requests,
            results.clone(),
            indexer.clone(),
            dir.to_path_buf(),
        )?;
        machine
            .catch_up_with_snapshot()
            .await
            .map_err(raft_storage)?;
        restore_history(&machine, &log, &shared, &*indexer);
        // An empty member of a cluster that exists already leaves it before its Raft starts.
        let rejoin = fresh && !replica.join && !restored && replica.members.len() > 1;
        let rejoin = if rejoin {
            rejoin::find_leader(&network, replica).await
        } else {
            None
        };
        if let Some(leader) = &rejoin {
            rejoin::leave(&network, replica, leader).await;
        }
        let raft_config = replica.openraft().map_err(StorageError::Io)?;
        let raft = openraft::Raft::new(
            replica.id,
            Arc::new(raft_config),
            network.clone(),
            log,
            machine,
        )
        .await
        .map_err(|e| StorageError::Io(format!("starting raft: {e}")))?;
        if rejoin.is_some() {
            tokio::spawn(rejoin::return_as_voter(network.clone(), replica.clone()));
        } else if fresh && !replica.join {
            match raft.initialize(replica.nodes()).await {
                Ok(()) => tracing::info!(members = ?replica.members, "bootstrapped a new cluster"),
                // Another member's proposal of the same membership reached this one first.
                Err(e) => tracing::info!(error = %e, "not bootstrapping: already initialised"),
            }
            if restored {
                base_snapshot(&raft, &shared, replica.id).await?;
            }
        }
        let (queue, rx) = mpsc::channel(65_536);
        let replicated = Arc::new(Replicated {
            raft: raft.clone(),
            results,
            network,
            id: replica.id,
            queue,
        });
        tokio::spawn(batcher(Arc::downgrade(&replicated), rx));
        let store = Store {
            shared,
            writer: Writer::Replicated(replicated),
        };
        Ok((store, raft))
    }

    /// The Raft handle, for a replicated store.
    pub fn raft(&self) -> Option<&RaftHandle> {
        match &self.writer {
            Writer::Replicated(r) => Some(&r.raft),
            Writer::Local(_) => None,
        }
    }

    /// Whether this member of a replicated cluster is not the leader it knows of (its writes
    /// are forwarded); false for a single master.
    pub fn forwards_writes(&self) -> bool {
        match &self.writer {
            Writer::Replicated(r) => r.raft.metrics().borrow().current_leader != Some(r.id),
            Writer::Local(_) => false,
        }
    }
}

impl Replicated {
    /// Queues a write for the next batch and waits for its result.
    pub(super) async fn propose(
        &self,
        shared: &Shared,
        cmd: Command,
    ) -> Result<Arc<Event>, StoreError> {
        if let Err(reason) = shared.writable() {
            return Err(StoreError::InsufficientStorage(reason));
        }
        let (reply, rx) = oneshot::channel();
        let p = Proposal {
            id: rand::random(),
            cmd,
        };
        self.queue
            .send((p, Reply::Result(reply)))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// On the leader: forwarded proposals join this member's batches (so the cluster's writes
    /// share few log entries); answers each one's slot.
    pub(super) async fn forwarded(&self, batch: Batch) -> Forwarded {
        if self.raft.current_leader().await != Some(self.id) {
            return Forwarded::NotLeader;
        }
        let mut waits = Vec::with_capacity(batch.proposals.len());
        for p in batch.proposals {
            let (tx, rx) = oneshot::channel();
            if self.queue.send((p, Reply::Slot(tx))).await.is_err() {
                return Forwarded::Failed("the API server is shutting down".into());
            }
            waits.push(rx);
        }
        let mut slots = Vec::with_capacity(waits.len());
        for rx in waits {
            match rx.await {
                Ok(Ok(slot)) => slots.push(slot),
                Ok(Err(e)) => return Forwarded::Failed(e.to_string()),
                Err(_) => return Forwarded::Failed("the API server is shutting down".into()),
            }
        }
        Forwarded::Slots(slots)
    }

    /// Proposes `batch` through the leader (retrying through leader changes with the same
    /// request ids) and answers each proposal's slot.
    async fn submit(&self, batch: &Batch, deadline: Instant) -> Result<Vec<u64>, StoreError> {
        match self.on_leader(&LeaderOp::Write(batch), deadline).await {
            Ok(Placed::Slots(s)) => Ok(s),
            Ok(Placed::Index(i)) => Ok(slots_at(i, batch.proposals.len())),
            Err(e) => Err(StoreError::Unavailable(format!(
                "the write was not confirmed, and may yet be applied: {e}"
            ))),
        }
    }

    /// Proposes one batch and answers each of its proposers from this member's own state
    /// machine, once it has applied the entry.
    async fn run_batch(&self, waiting: Vec<Waiting>) {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let (proposals, replies): (Vec<_>, Vec<_>) = waiting.into_iter().unzip();
        let batch = Batch::new(proposals);
        let slots = self.submit(&batch, deadline).await;
        // Local proposers wait until this member applied their entries; forwarders only need
        // the slots.
        let last = slots
            .as_ref()
            .ok()
            .and_then(|s| s.iter().map(|s| s >> 16).max())
            .unwrap_or(0);
        let applied = match &slots {
            Ok(_) if replies.iter().any(|r| matches!(r, Reply::Result(_))) => {
                self.applied(last, deadline).await
            }
            _ => true,
        };
        for (position, reply) in replies.into_iter().enumerate() {
            let slot = slots.as_ref().map(|s| s[position]).map_err(Clone::clone);
            match reply {
                Reply::Slot(tx) => {
                    let _ = tx.send(slot);
                }
                Reply::Result(tx) => {
                    let r = match slot {
                        Ok(slot) if !applied => Err(StoreError::Unavailable(format!(
                            "the write was committed at index {}, but this API server had not applied it within {WRITE_DEADLINE:?}",
                            slot >> 16
                        ))),
                        Ok(slot) => match self.results.get(slot) {
                            Some(r) => r.map_err(StoreError::Rejected),
                            None => Err(machine::unknown_outcome(slot >> 16)),
                        },
                        Err(e) => Err(e),
                    };
                    let _ = tx.send(r);
                }
            }
        }
    }

    /// Waits until this member has applied log `index`; false at the deadline.
    async fn applied(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.results.applied.subscribe();
        let waited =
            tokio::time::timeout_at(deadline.into(), rx.wait_for(|applied| *applied >= index))
                .await;
        matches!(waited, Ok(Ok(_)))
    }
}

/// Takes every proposal waiting when it starts a batch (group commit before Raft: openraft 0.9
/// makes one fsync per log entry), with up to [`IN_FLIGHT`] batches under way.
async fn batcher(member: std::sync::Weak<Replicated>, mut rx: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut bytes = super::command_bytes(&first.0.cmd);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(w) => {
                    bytes += super::command_bytes(&w.0.cmd);
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let Some(member) = member.upgrade() else {
            break;
        };
        tokio::spawn(async move {
            member.run_batch(batch).await;
            drop(permit);
        });
    }
}

impl Replicated {
    /// The Raft address of member `id`, from the current membership.
    fn addr_of(&self, id: u64) -> Option<String> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Read-index: learns from the leader (which confirms its leadership with a quorum) the
    /// commit index as of now, and waits until this member has applied it. A read served after
    /// this sees every write acknowledged before the call began.
    pub(super) async fn read_barrier(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let index = self.index_on_leader(&LeaderOp::ReadIndex, deadline).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "a consistent read needs the leader: {e}; ask for a possibly stale read to be served from this API server"
            ))
        })?;
        if self.applied(index, deadline).await {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "this API server had not applied index {index} within {WRITE_DEADLINE:?}; a consistent read cannot be served here now"
            )))
        }
    }
}

/// What a member asks of the leader.
enum LeaderOp<'a> {
    Write(&'a Batch),
    ReadIndex,
    Change(MemberChange),
}

/// Where the leader placed what it was asked: a log index, or a slot per proposal.
enum Placed {
    Index(u64),
    Slots(Vec<u64>),
}

/// The slots of a batch of `n` proposals in the entry at `index`.
fn slots_at(index: u64, n: usize) -> Vec<u64> {
    (0..n).map(|p| machine::slot(index, p)).collect()
}

impl Replicated {
    /// Runs `op` on the leader (here, or over the Raft port), retrying through leader changes
    /// until `deadline`; answers where the leader placed it.
    async fn on_leader(&self, op: &LeaderOp<'_>, deadline: Instant) -> Result<Placed, String> {
        let mut last_error = String::from("no leader is known");
        loop {
            if Instant::now() >= deadline {
                return Err(format!("no leader answered in time ({last_error})"));
            }
            if let Some(ms) = self.isolated_leader() {
                return Err(format!(
                    "this master leads but has heard from no quorum for {ms} ms (cut off from the other masters?); nothing was proposed: try another master"
                ));
            }
            // A leader cut off from its quorum never commits and is not told so: the deadline
            // bounds the wait, as does noticing that the quorum stopped answering.
            let answer = tokio::select! {
                a = self.ask_leader(op) => a,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    Err(format!("not done within {WRITE_DEADLINE:?}, or longer"))
                }
                ms = self.until_isolated() => return Err(format!(
                    "this master lost its quorum ({ms} ms without an answer) while waiting; the outcome is unknown"
                )),
            };
            match answer {
                Ok(Forwarded::Applied(i)) => return Ok(Placed::Index(i)),
                Ok(Forwarded::Slots(s)) => match op {
                    LeaderOp::Write(b) if s.len() == b.proposals.len() => {
                        return Ok(Placed::Slots(s));
                    }
                    _ => last_error = format!("the leader placed {} proposals", s.len()),
                },
                Ok(Forwarded::NotLeader) => last_error = "the leader changed".into(),
                // A refused change is final: retrying would refuse it again.
                Ok(Forwarded::Failed(e)) if matches!(op, LeaderOp::Change(_)) => return Err(e),
                Ok(Forwarded::Failed(e)) | Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// If this member leads but no quorum has answered it for two election timeouts, how long:
    /// it is probably cut off, and what it proposes now would wait for the partition to heal
    /// (openraft 0.9 leaders do not step down by themselves).
    fn isolated_leader(&self) -> Option<u64> {
        let limit = 2 * self.raft.config().election_timeout_max;
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        // A lone voter is its own quorum.
        m.membership_config.membership().voter_ids().nth(1)?;
        match m.millis_since_quorum_ack {
            Some(ms) if m.current_leader == Some(self.id) && ms > limit => Some(ms),
            _ => None,
        }
    }

    /// Resolves once this member is an isolated leader ([`Replicated::isolated_leader`]).
    async fn until_isolated(&self) -> u64 {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(ms) = self.isolated_leader() {
                return ms;
            }
        }
    }

    /// Asks the leader (this member, or over the Raft port) to carry out `op`, once.
    async fn ask_leader(&self, op: &LeaderOp<'_>) -> Result<Forwarded, String> {
        match self.raft.current_leader().await {
            Some(l) if l == self.id => Ok(match op {
                LeaderOp::Write(b) => match self.raft.client_write((*b).clone()).await {
                    Ok(r) => Forwarded::Applied(r.log_id.index),
                    Err(e) => Forwarded::Failed(e.to_string()),
                },
                LeaderOp::ReadIndex => read_index_here(&self.raft).await,
                LeaderOp::Change(c) => change_members_here(&self.raft, c).await,
            }),
            Some(l) => match self.addr_of(l) {
                Some(addr) => match op {
                    LeaderOp::Write(b) => self.network.forward(&addr, b).await,
                    LeaderOp::ReadIndex => self.network.read_index(&addr).await,
                    LeaderOp::Change(c) => self.network.change_members(&addr, c).await,
                },
                None => Err(format!("the leader {l} has no address")),
            },
            None => Err("no leader is known".into()),
        }
    }

    /// The log index the leader placed a read-index or membership change at.
    async fn index_on_leader(&self, op: &LeaderOp<'_>, deadline: Instant) -> Result<u64, String> {
        match self.on_leader(op, deadline).await? {
            Placed::Index(i) => Ok(i),
            Placed::Slots(_) => Err("the leader answered slots".into()),
        }
    }

    /// Carries out a membership change through the leader; waits until this member applied it.
    pub(super) async fn change_members(&self, change: MemberChange) -> Result<(), StoreError> {
        // Adding waits for the new member to catch up, which may take a snapshot's transfer.
        let deadline = Instant::now() + Duration::from_secs(120);
        // A member removing itself never hears of the commit: the leader stops replicating to
        // it. The leader's answer is then all there is to wait for.
        let removes_self = matches!(change, MemberChange::Remove { id } if id == self.id);
        let index = self
            .index_on_leader(&LeaderOp::Change(change), deadline)
            .await
            .map_err(StoreError::Unavailable)?;
        if removes_self || self.applied(index, deadline).await {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "the change was committed at index {index}, but this API server had not applied it yet"
            )))
        }
    }
}

/// Gives a restarted member back the watch history it had ([`super::rebuild`]).
fn restore_history(machine: &Machine, log: &LogStore, shared: &Shared, indexer: &Indexer) {
    let upto = machine.applied_index();
    let base = match machine.current_snapshot() {
        Some((index, data)) => match Base::from_snapshot(index, &data, indexer) {
            Some(b) => b,
            None => return,
        },
        None if log.purged().is_none() => Base::empty(),
        None => return,
    };
    let entries = log.entries_after(base.index);
    let now = shared.front().snapshot.rv;
    match rebuild::history(base, &entries, upto) {
        Some((oldest, events)) if events.last().map_or(oldest, |e| e.rv) == now => {
            let n = events.len();
            shared.front().hub = Hub::with_history(oldest, events, &shared.config);
            tracing::info!(
                events = n,
                from = oldest,
                "rebuilt the watch history from the snapshot and the log"
            );
        }
        Some((_, events)) => tracing::warn!(
            rebuilt = events.last().map(|e| e.rv),
            engine = now,
            "the history rebuilt from the log does not end at the engine's version; watches start at the engine's"
        ),
        None => tracing::info!(
            "the log does not follow on from the snapshot; watches start at the engine's version"
        ),
    }
}

fn raft_storage(e: openraft::StorageError<u64>) -> StorageError {
    StorageError::Io(format!("the raft log: {e}"))
}

/// After a restore the objects exist only in this member's engine, not in the log a joining
/// member would replay: cut a snapshot at once and purge the log up to it, so that every member
/// added later starts from the snapshot.
async fn base_snapshot(raft: &RaftHandle, shared: &Shared, id: u64) -> Result<(), StorageError> {
    let fail = |what: String| StorageError::Io(format!("after the restore, {what}"));
    let wait = || raft.wait(Some(Duration::from_secs(30)));
    wait()
        .metrics(|m| m.current_leader == Some(id), "leading the new cluster")
        .await
        .map_err(|e| fail(format!("this master did not become leader: {e}")))?;
    raft.trigger()
        .snapshot()
        .await
        .map_err(|e| fail(format!("cutting a snapshot: {e}")))?;
    let m = wait()
        .metrics(|m| m.snapshot.is_some(), "a snapshot of the restored state")
        .await
        .map_err(|e| fail(format!("no snapshot was cut: {e}")))?;
    let upto = m.snapshot.map_or(0, |l| l.index);
    let until = Instant::now() + Duration::from_secs(30);
    while shared
        .checkpointed_log
        .load(std::sync::atomic::Ordering::Acquire)
        < upto
    {
        if Instant::now() > until {
            return Err(fail(
                "the engine did not checkpoint the snapshot's position".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    raft.trigger()
        .purge_log(upto)
        .await
        .map_err(|e| fail(format!("purging the log: {e}")))?;
    tracing::info!(
        upto,
        "the restored state is in a snapshot; members added later start from it"
    );
    Ok(())
}
