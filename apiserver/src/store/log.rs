//! The log seam: "append these effects durably, in order, and say when they are committed".
//!
//! The writer ([`super::commit`]) hands every group commit to a [`Log`] and publishes the batch
//! only once `append` returned `Ok`. Today the log is local ([`crate::wal::Wal`]); the Raft issue
//! replaces it with a replicated log behind the same trait, and nothing else in the store needs
//! to know which one it is talking to.
//!
//! Contract for an implementation:
//! - `append` returns `Ok` only once every entry would survive power loss (and, replicated, is
//!   committed by a quorum); entries are delivered to the engine in the order appended.
//! - After an `Err`, the outcome of that batch is unknown; the store stops taking writes.
//! - `compact(upto)` may drop entries at or below `upto`: the engine holds them durably.

use crate::storage::StorageError;
use crate::wal::{Entry, Wal};

/// The durable record in front of the key-value engine.
pub trait Log: Send + 'static {
    /// Appends `entries` (indexes increasing) durably; returns once they are committed.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Entries at or below `upto` are in the engine and may be discarded.
    fn compact(&mut self, upto: u64);
    /// Bytes the log occupies, for stats.
    fn size(&self) -> u64;
}

impl Log for Wal {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        Wal::append(self, entries)
    }

    fn compact(&mut self, upto: u64) {
        Wal::compact(self, upto)
    }

    fn size(&self) -> u64 {
        Wal::size(self)
    }
}
