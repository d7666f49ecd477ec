//! openraft's log storage over [`RaftLog`]: entries, the vote, the committed and the purged
//! position, all durable before openraft is told so.
//!
//! - Every entry not yet purged is also held in memory, so replication and apply read without
//!   touching the disk, and an entry is readable as soon as `append` returns (openraft's rule).
//! - One I/O thread owns the [`RaftLog`] and performs every write in the order openraft asked for
//!   it (openraft requires log and vote I/O to be serialised). Appends queued together become one
//!   write and one fsync (group commit); each append's callback runs only after its fsync. The
//!   async `append` never blocks a runtime worker on the disk (openraft's FAQ: a blocking append
//!   stalls the whole Raft core).
//! - The vote, the committed and the last purged position live in a small file (`meta`) replaced
//!   atomically (temporary file, fsync, rename, directory fsync). A vote is durable before
//!   `save_vote` returns. The committed position is saved lazily (with the next meta write, or
//!   within a second): a committed position that is older than the truth is only less knowledge,
//!   and a leader re-establishes it.
//! - Purging is held back to what the key-value engine holds durably (the state machine is
//!   checkpointed into sled in the background): after a restart openraft re-applies the log from
//!   the engine's applied position, which must therefore still be in the log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use openraft::{RaftLogId, StorageIOError};
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use crate::raft::{Disk, LogError, LogOptions, RaftLog, StoredRecord};

// openraft's own error type; its size is openraft's choice.
#[allow(clippy::result_large_err)]
type Err = StorageError<u64>;

const META: &str = "meta";
const META_TMP: &str = "meta.tmp";
const META_MAGIC: &[u8; 8] = b"RUDDRMET";

/// What openraft must find again after a restart, besides the entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

fn load_meta(disk: &dyn Disk, dir: &Path) -> Result<Meta, String> {
    let tmp = dir.join(META_TMP);
    if disk.exists(&tmp) {
        disk.remove(&tmp)
            .map_err(|e| format!("removing {}: {e}", tmp.display()))?;
    }
    let path = dir.join(META);
    let b = match disk.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let damaged = |what: &str| {
        format!(
            "{} is damaged ({what}); the member refuses to start without knowing its vote: restore the data directory, or wipe it and rejoin the cluster",
            path.display()
        )
    };
    if b.len() < 12 || &b[..8] != META_MAGIC {
        return Err(damaged("bad header"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err(damaged("checksum does not match"));
    }
    postcard::from_bytes(&body[8..]).map_err(|e| damaged(&e.to_string()))
}

fn save_meta(disk: &dyn Disk, dir: &Path, m: &Meta) -> Result<(), String> {
    let mut b = META_MAGIC.to_vec();
    b.extend(postcard::to_allocvec(m).map_err(|e| e.to_string())?);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp: PathBuf = dir.join(META_TMP);
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    if disk.exists(&tmp) {
        disk.remove(&tmp).map_err(|e| io("removing", e))?;
    }
    let mut f = disk.create_new(&tmp).map_err(|e| io("creating", e))?;
    f.append(&b).map_err(|e| io("writing", e))?;
    f.sync_data().map_err(|e| io("syncing", e))?;
    drop(f);
    disk.rename(&tmp, &dir.join(META))
        .map_err(|e| io("renaming", e))?;
    disk.sync_dir(dir)
        .map_err(|e| format!("syncing directory {}: {e}", dir.display()))
}

struct Mem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    meta: Meta,
}

enum Io {
    Append(Vec<Entry<TypeConfig>>, LogFlushed<TypeConfig>),
    /// Keep entries up to and including the index.
    Truncate(
        Option<u64>,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    ),
    /// Purge up to the index (the meta, already updated, is saved first).
    Purge(u64, bool, Meta),
    SaveMeta(Meta, tokio::sync::oneshot::Sender<Result<(), String>>),
    CommittedChanged(Meta),
}

/// The log storage handed to openraft; clones share everything (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<Mem>>,
    io: mpsc::Sender<Io>,
    /// The highest index the key-value engine holds durably: purging stops there.
    checkpointed: Arc<AtomicU64>,
}

fn io_error(what: impl ToString) -> Err {
    StorageIOError::write_logs(AnyError::error(what.to_string())).into()
}

impl LogStore {
    /// Opens the log in `dir` (creating it), loading every entry after the purged position.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        opts: LogOptions,
        checkpointed: Arc<AtomicU64>,
    ) -> Result<LogStore, LogError> {
        let log = RaftLog::open(disk.clone(), dir, opts)?;
        let meta = load_meta(&*disk, dir).map_err(LogError::Io)?;
        let floor = meta.purged.map_or(0, |p| p.index + 1);
        let mut entries = BTreeMap::new();
        for r in log.read(floor..=u64::MAX)? {
            let e: Entry<TypeConfig> =
                postcard::from_bytes(&r.payload).map_err(|e| LogError::Corrupt {
                    file: dir.to_path_buf(),
                    offset: 0,
                    what: format!(
                        "entry {} does not decode ({e}): written by an incompatible build?",
                        r.index
                    ),
                })?;
            if e.log_id.index != r.index {
                return Err(LogError::Corrupt {
                    file: dir.to_path_buf(),
                    offset: 0,
                    what: format!("record {} holds entry {}", r.index, e.log_id.index),
                });
            }
            entries.insert(r.index, e);
        }
        let (tx, rx) = mpsc::channel();
        let io_dir = dir.to_path_buf();
        let committed = meta.committed;
        std::thread::Builder::new()
            .name("rudder-raft-log".into())
            .spawn(move || io_thread(log, disk, io_dir, rx, committed))
            .map_err(|e| LogError::Io(format!("starting the log thread: {e}")))?;
        Ok(LogStore {
            mem: Arc::new(Mutex::new(Mem { entries, meta })),
            io: tx,
            checkpointed,
        })
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[allow(clippy::result_large_err)]
    fn send(&self, io: Io) -> Result<(), Err> {
        self.io
            .send(io)
            .map_err(|_| io_error("the log thread has stopped after a storage failure"))
    }

    /// Entries held (not yet purged).
    pub fn len(&self) -> usize {
        self.mem().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies of the entries held after `index`, in order.
    pub fn entries_after(&self, index: u64) -> Vec<Entry<TypeConfig>> {
        self.mem()
            .entries
            .range(index + 1..)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The last purged index, if the log was ever purged.
    pub fn purged(&self) -> Option<u64> {
        self.mem().meta.purged.map(|l| l.index)
    }
}

fn io_thread(
    mut log: RaftLog,
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    rx: mpsc::Receiver<Io>,
    mut saved_committed: Option<LogId<u64>>,
) {
    let mut latest: Option<Meta> = None;
    let mut failed: Option<String> = None;
    let mut next: Option<Io> = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // The committed position, saved lazily.
                    if let Some(m) = latest.take()
                        && m.committed != saved_committed
                        && failed.is_none()
                    {
                        match save_meta(&*disk, &dir, &m) {
                            Ok(()) => saved_committed = m.committed,
                            Err(e) => tracing::warn!(error = %e, "saving the committed position"),
                        }
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        match op {
            Io::Append(entries, cb) => {
                // Group commit: every append already queued joins this write.
                let mut batch = vec![(entries, cb)];
                loop {
                    match rx.try_recv() {
                        Ok(Io::Append(e, cb)) => batch.push((e, cb)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = match &failed {
                    Some(r) => Err(r.clone()),
                    None => {
                        let records: Result<Vec<StoredRecord>, String> = batch
                            .iter()
                            .flat_map(|(e, _)| e.iter())
                            .map(|e| {
                                Ok(StoredRecord {
                                    index: e.log_id.index,
                                    term: e.log_id.leader_id.term,
                                    payload: postcard::to_allocvec(e)
                                        .map_err(|err| err.to_string())?,
                                })
                            })
                            .collect();
                        records.and_then(|r| log.append(&r).map_err(|e| e.to_string()))
                    }
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, "raft log append failed; this member stops");
                    failed = Some(e.clone());
                }
                for (_, cb) in batch {
                    cb.log_io_completed(
                        result
                            .clone()
                            .map_err(|e| std::io::Error::other(e.to_string())),
                    );
                }
            }
            Io::Truncate(keep, reply) => {
                let r = match keep {
                    Some(i) => log.truncate_after(i),
                    None => log.clear(),
                }
                .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Io::Purge(upto, everything, meta) => {
                let r = save_meta(&*disk, &dir, &meta).and_then(|()| {
                    saved_committed = meta.committed;
                    if everything {
                        log.clear()
                    } else {
                        log.purge_upto(upto)
                    }
                    .map_err(|e| e.to_string())
                });
                if let Err(e) = r {
                    tracing::warn!(error = %e, "purging the raft log");
                }
            }
            Io::SaveMeta(meta, reply) => {
                let r = save_meta(&*disk, &dir, &meta);
                if r.is_ok() {
                    saved_committed = meta.committed;
                }
                let _ = reply.send(r);
            }
            Io::CommittedChanged(meta) => latest = Some(meta),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Err> {
        Ok(self
            .mem()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, Err> {
        // A bounded batch keeps one replication message to a few megabytes.
        const MAX_BYTES: usize = 4 * 1024 * 1024;
        let mem = self.mem();
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, e) in mem.entries.range(start..end) {
            bytes += entry_bytes(e);
            out.push(e.clone());
            if bytes >= MAX_BYTES {
                break;
            }
        }
        Ok(out)
    }
}

fn entry_bytes(e: &Entry<TypeConfig>) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(b) => b
            .proposals
            .iter()
            .map(|p| match &p.cmd {
                crate::state::Command::Put { object, .. } => object.len() + 128,
                crate::state::Command::Delete { .. } => 128,
            })
            .sum(),
        _ => 64,
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Err> {
        let mem = self.mem();
        let purged = mem.meta.purged;
        let last = mem
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Err> {
        let meta = {
            let mut mem = self.mem();
            mem.meta.vote = Some(*vote);
            mem.meta.clone()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Io::SaveMeta(meta, tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_vote(AnyError::error(e)).into()),
            Err(_) => Err(io_error("the log thread stopped")),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Err> {
        Ok(self.mem().meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), Err> {
        let meta = {
            let mut mem = self.mem();
            mem.meta.committed = committed;
            mem.meta.clone()
        };
        self.send(Io::CommittedChanged(meta))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, Err> {
        Ok(self.mem().meta.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        {
            let mut mem = self.mem();
            for e in &entries {
                mem.entries.insert(e.log_id.index, e.clone());
            }
        }
        self.send(Io::Append(entries, callback))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        {
            let mut mem = self.mem();
            let _ = mem.entries.split_off(&log_id.index);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Io::Truncate(log_id.index.checked_sub(1), tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error(e)),
            Err(_) => Err(io_error("the log thread stopped")),
        }
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        let durable = self.checkpointed.load(Ordering::Acquire);
        let (upto, everything, meta) = {
            let mut mem = self.mem();
            // Held back to what the engine holds, unless the purge passes the whole log (a
            // snapshot beyond it was installed, and installing waits for the engine to hold it).
            let last = mem.entries.keys().next_back().copied();
            let everything = last.is_none_or(|l| log_id.index > l);
            let target = if everything || log_id.index <= durable {
                Some(log_id)
            } else {
                mem.entries
                    .range(..=durable)
                    .next_back()
                    .map(|(_, e)| e.log_id)
            };
            let Some(target) = target else {
                return Ok(());
            };
            if mem.meta.purged.is_some_and(|p| p.index >= target.index) {
                return Ok(());
            }
            let rest = mem.entries.split_off(&(target.index + 1));
            mem.entries = rest;
            mem.meta.purged = Some(target);
            (target.index, everything, mem.meta.clone())
        };
        self.send(Io::Purge(upto, everything, meta))
    }
}
