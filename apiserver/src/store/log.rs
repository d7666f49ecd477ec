//! The log seam: "append these effects durably, in order, and say when they are committed".
//!
//! The writer ([`super::commit`]) hands every group commit to a [`Log`] and publishes the batch
//! only once `append` returned `Ok`. Today the log is the local [`RaftLog`] (one master, term 1);
//! the Raft issue replaces it with a replicated log behind the same trait, and nothing else in the
//! store needs to know which one it is talking to.
//!
//! Contract for an implementation:
//! - `append` returns `Ok` only once every entry would survive power loss (and, replicated, is
//!   committed by a quorum); entries are delivered to the engine in the order appended.
//! - [`AppendError::Refused`]: nothing was written (too little space); a later batch may succeed.
//! - [`AppendError::Unknown`]: the batch may be partly on disk. The writer then calls
//!   [`Log::recover`]; once that succeeds the batch is known absent and writes go on, otherwise
//!   the store stops taking writes.
//! - `compact(upto)` may drop entries at or below `upto`: the engine holds them durably.
//!
//! An effect's payload in the log: `op: u8 (0 delete, 1 put of an existing object, 2 put of a
//! new one) | key_len: u32 LE | key | value`; the record's index is the effect's version.

use bytes::Bytes;

use crate::raft::{LogError, RaftLog, Record, StoredRecord};
use crate::storage::StorageError;

/// One effect: the object at `key` became `value` (or was deleted) at log position `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub key: Vec<u8>,
    pub value: Option<Bytes>,
    /// The object did not exist before this effect (a watch's `ADDED`); only meaningful for puts.
    pub created: bool,
}

/// The single master's term: constant until Raft elects leaders.
pub const SINGLE_MASTER_TERM: u64 = 1;

impl Record for Entry {
    fn index(&self) -> u64 {
        self.index
    }
    fn term(&self) -> u64 {
        SINGLE_MASTER_TERM
    }
    fn write_payload(&self, out: &mut Vec<u8>) {
        out.push(match (&self.value, self.created) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        });
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.key);
        if let Some(v) = &self.value {
            out.extend_from_slice(v);
        }
    }
}

/// Decodes an effect from a log record.
pub fn decode_entry(r: StoredRecord) -> Result<Entry, StorageError> {
    let bad = |what: &str| {
        StorageError::Corrupt(format!(
            "log entry {}: {what} (the record's checksum matched: written by an incompatible build?)",
            r.index
        ))
    };
    let p = &r.payload;
    let (&op, rest) = p.split_first().ok_or_else(|| bad("empty payload"))?;
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("no key length"))?;
    let key_len = u32::from_le_bytes(len_bytes) as usize;
    let key = rest
        .get(4..4 + key_len)
        .ok_or_else(|| bad("key runs past the payload"))?;
    let value = match op {
        1 | 2 => Some(Bytes::copy_from_slice(&rest[4 + key_len..])),
        0 => None,
        other => return Err(bad(&format!("unknown operation {other}"))),
    };
    Ok(Entry {
        index: r.index,
        key: key.to_vec(),
        value,
        created: op == 2,
    })
}

/// Why an append did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The batch may be partly on disk.
    #[error("{0}")]
    Unknown(String),
}

/// The durable record in front of the key-value engine.
pub trait Log: Send + 'static {
    /// Appends `entries` (indexes increasing) durably; returns once they are committed.
    fn append(&mut self, entries: &[Entry]) -> Result<(), AppendError>;
    /// After [`AppendError::Unknown`]: makes the failed batch definitely absent, so that appends
    /// may resume; an error leaves the log refusing appends.
    fn recover(&mut self) -> Result<(), StorageError>;
    /// Entries at or below `upto` are in the engine and may be discarded.
    fn compact(&mut self, upto: u64);
    /// Bytes the log occupies, for stats.
    fn size(&self) -> u64;
}

impl From<LogError> for StorageError {
    fn from(e: LogError) -> StorageError {
        match e {
            LogError::Corrupt { .. } => StorageError::Corrupt(e.to_string()),
            other => StorageError::Io(other.to_string()),
        }
    }
}

impl Log for RaftLog {
    fn append(&mut self, entries: &[Entry]) -> Result<(), AppendError> {
        RaftLog::append(self, entries).map_err(|e| match e {
            LogError::NoSpace { .. } | LogError::Io(_) | LogError::Invalid(_) => {
                AppendError::Refused(e.to_string())
            }
            LogError::Unknown(_) | LogError::Poisoned(_) | LogError::Corrupt { .. } => {
                AppendError::Unknown(e.to_string())
            }
        })
    }

    fn recover(&mut self) -> Result<(), StorageError> {
        RaftLog::recover(self).map_err(StorageError::from)
    }

    fn compact(&mut self, upto: u64) {
        if let Err(e) = self.purge_upto(upto) {
            tracing::warn!(error = %e, "could not delete a compacted log segment");
        }
    }

    fn size(&self) -> u64 {
        RaftLog::size(self)
    }
}
