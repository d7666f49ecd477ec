//! Figures about the store for the Admin service and health: sizes, free space, group-commit
//! counters. Sampled off the write path, so reading them never waits on the writer or the disk.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::{Storage, free_bytes};

/// Figures for the Admin service.
#[derive(Debug, Clone, Default)]
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
    /// Bytes held by the watch history.
    pub history_bytes: u64,
    /// Bytes of proposals queued or in the writer's batch.
    pub queued_bytes: u64,
    /// Bytes of committed effects waiting for a checkpoint.
    pub checkpoint_queued_bytes: u64,
}

/// Counters shared by the writer, the sampler and readers.
#[derive(Default)]
pub(super) struct Counters {
    pub size_on_disk: AtomicU64,
    pub disk_free: AtomicU64,
    /// Bytes in the log.
    pub log_bytes: AtomicU64,
    /// Group commits (one flush each) and the writes they carried.
    pub commits: AtomicU64,
    pub committed_writes: AtomicU64,
}

impl Counters {
    /// Samples the engine's size and the filesystem's free space.
    pub(super) fn refresh<S: Storage>(&self, storage: &S) {
        self.size_on_disk.store(
            storage.size_on_disk() + self.log_bytes.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(free) = storage.dir().and_then(free_bytes) {
            self.disk_free.store(free, Ordering::Relaxed);
        }
    }

    /// One group commit of `writes` effects, made durable.
    pub(super) fn committed(&self, writes: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_writes.fetch_add(writes, Ordering::Relaxed);
    }
}
