//! The durable log that Raft sits on, and the single master's log today.
//!
//! Layout:
//! - [`disk`]: the file-system seam ([`Disk`]) and the real file system behind it.
//! - [`crash`]: a file system in memory that drops unsynced writes and names on a simulated power
//!   cut, for proving every fsync the log relies on.
//! - [`segment`]: the segment and record format, and the scan that tells a torn tail from
//!   corruption.
//! - [`log`]: [`RaftLog`]: segmented, group-committed appends of opaque payloads with index and
//!   term; truncation after a conflict, purging after a snapshot; the vote and committed index.
//! - [`hardstate`]: the vote / committed-index file, replaced atomically.
//!
//! Errors keep apart what a caller must treat differently: nothing was written and a later
//! attempt may succeed ([`LogError::NoSpace`], [`LogError::Io`], [`LogError::Invalid`]); the
//! outcome is unknown ([`LogError::Unknown`], after which appends are refused until
//! [`RaftLog::recover`] succeeds or the log is reopened); the data on disk is damaged
//! ([`LogError::Corrupt`], which names the file, the offset and what was wrong).

pub mod crash;
pub mod disk;
pub mod hardstate;
pub mod log;
pub mod segment;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use self::disk::{Disk, DiskFile, RealDisk};
pub use self::hardstate::{HardState, Vote};
pub use self::log::{LogOptions, RaftLog, Record, StoredRecord};

/// Why a log operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// Damage on disk; the member must not start on it (it can be rebuilt from a snapshot).
    #[error(
        "the log is corrupt: {file} at byte {offset}: {what}; the server refuses to start on a damaged log (restore the data directory from a backup, or rebuild the member from a snapshot)",
        file = file.display()
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    /// Refused before anything was written: too little free space for the batch and the margin.
    #[error(
        "insufficient storage: {free} bytes free on the log's filesystem, {needed} required for this write and the reserve; writes are refused until space is freed"
    )]
    NoSpace { free: u64, needed: u64 },
    /// The append failed part-way: some of the batch may be on disk and may come back on restart.
    #[error(
        "the outcome of the log append is unknown ({0}): part of it may be on disk; appends are refused until the log is recovered or reopened"
    )]
    Unknown(String),
    /// An earlier failure left the outcome unknown; nothing was attempted.
    #[error("the log refuses appends after an earlier failure: {0}")]
    Poisoned(String),
    /// An I/O error before anything of the operation was written.
    #[error("log I/O error: {0}")]
    Io(String),
    /// The caller's request breaks the log's rules (a bug in the caller); nothing was written.
    #[error("invalid log operation: {0}")]
    Invalid(String),
}
