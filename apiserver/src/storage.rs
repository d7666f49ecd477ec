//! The storage trait under the state machine, with the sled engine and an in-memory fake.
//!
//! The state machine needs little of an engine: read everything at start-up, apply a batch of
//! puts and deletes atomically, and make it durable. Keeping the trait this small keeps the engine
//! swappable (sled 0.34 is stable but unmaintained) and lets a damaged store be wiped and rebuilt
//! from a snapshot later.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A storage failure. Any error from `apply`/`flush` leaves the store refusing writes: the
/// caller cannot know whether the batch reached the disk.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Keys and values, in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A key-value engine with atomic batches and an explicit durability point.
pub trait Storage: Send + Sync + 'static {
    /// Every key and value, in key order.
    fn scan_all(&self) -> Result<KvPairs, StorageError>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Applies the batch atomically (all or nothing), not yet necessarily durable.
    fn apply(&self, batch: Vec<Op>) -> Result<(), StorageError>;
    /// Makes every applied batch durable (fsync); one flush covers all batches before it.
    /// Blocking: called from the store's dedicated writer thread, never from an async task.
    fn flush(&self) -> Result<(), StorageError>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> u64;
    /// The directory holding the data, for free-space checks (None for in-memory stores).
    fn dir(&self) -> Option<&Path>;
}

/// sled behind [`Storage`].
///
/// sled 0.34's own flush makes its log durable with `sync_file_range`, which neither flushes the
/// drive's write cache nor the file's metadata, and it writes large pages ("blobs") to separate
/// files without syncing them at all. So [`Storage::flush`] here follows sled's flush with an
/// `fdatasync` of the log file and an fsync of every blob file written since the last flush (and
/// of the blob directory, for the new entries): only then is a batch durable as etcd's WAL is.
pub struct SledStorage {
    db: sled::Db,
    dir: PathBuf,
    sync: Arc<Mutex<Syncer>>,
}

/// The files `flush` must sync beyond what sled syncs.
struct Syncer {
    log: std::fs::File,
    blobs: PathBuf,
    /// Blob files already synced; pruned as sled collects them.
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl Syncer {
    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let mut present = HashSet::new();
        let mut new_blob = false;
        match std::fs::read_dir(&self.blobs) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    let name = e.file_name();
                    if !self.synced_blobs.contains(&name) {
                        std::fs::File::open(e.path())?.sync_all()?;
                        new_blob = true;
                    }
                    present.insert(name);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if new_blob {
            std::fs::File::open(&self.blobs)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

impl SledStorage {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        // The data directory's own entry must survive a power cut: its parents are synced.
        crate::raft::disk::create_dir_all(&crate::raft::RealDisk, dir)
            .map_err(|e| StorageError::Io(format!("{}: {e}", dir.display())))?;
        let config = sled::Config::new()
            .path(dir.join("store"))
            // Durability comes from our explicit flush before acknowledging; sled's own periodic
            // flush would only add fsyncs.
            .flush_every_ms(None)
            .cache_capacity(64 * 1024 * 1024);
        // A store this process just closed keeps its file lock until sled's background threads
        // let go of it; wait a little for that, not for another process holding it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports the lock only in its message (kind Other).
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(StorageError::Io(format!("opening {}: {e}", dir.display())));
                }
            }
        };
        let store = dir.join("store");
        let log = std::fs::File::open(store.join("db")).map_err(|e| {
            StorageError::Io(format!("opening {}: {e}", store.join("db").display()))
        })?;
        let mut syncer = Syncer {
            log,
            blobs: store.join("blobs"),
            synced_blobs: HashSet::new(),
        };
        // Whatever is on disk at start-up is made durable once, so later flushes only look at
        // new blobs.
        syncer
            .sync()
            .map_err(|e| StorageError::Io(format!("syncing {}: {e}", store.display())))?;
        Ok(SledStorage {
            db,
            dir: dir.to_path_buf(),
            sync: Arc::new(Mutex::new(syncer)),
        })
    }
}

impl Storage for SledStorage {
    fn scan_all(&self) -> Result<KvPairs, StorageError> {
        self.db
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| StorageError::Corrupt(e.to_string()))
            })
            .collect()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get(key)
            .map(|o| o.map(|v| v.to_vec()))
            .map_err(|e| StorageError::Io(e.to_string()))
    }

    fn apply(&self, batch: Vec<Op>) -> Result<(), StorageError> {
        let mut b = sled::Batch::default();
        for op in batch {
            match op {
                Op::Put(k, v) => b.insert(k, v),
                Op::Delete(k) => b.remove(k),
            }
        }
        self.db
            .apply_batch(b)
            .map_err(|e| StorageError::Io(e.to_string()))
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush()
            .map_err(|e| StorageError::Io(e.to_string()))?;
        // Only the writer thread flushes, so this lock is never contended.
        self.sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync()
            .map_err(|e| StorageError::Io(format!("fdatasync: {e}")))
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// An in-memory [`Storage`] for tests; `fail_flushes` makes it fail as a full or broken disk would.
#[derive(Default)]
pub struct MemStorage {
    map: Mutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
    fail_flush: std::sync::atomic::AtomicBool,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later flush fail, as a full or broken disk would.
    pub fn fail_flushes(&self) {
        self.fail_flush
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding this lock is a test bug; keep going with the data as it is.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for MemStorage {
    fn scan_all(&self) -> Result<KvPairs, StorageError> {
        Ok(self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map().get(key).cloned())
    }

    fn apply(&self, batch: Vec<Op>) -> Result<(), StorageError> {
        apply_ops(&mut self.map(), batch);
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        if self.fail_flush.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StorageError::Io(
                "No space left on device (os error 28)".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn size_on_disk(&self) -> u64 {
        self.map()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn dir(&self) -> Option<&Path> {
        None
    }
}

/// Applies `ops` in order to an in-memory map (the fakes' engine).
pub(crate) fn apply_ops(
    map: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    ops: impl IntoIterator<Item = Op>,
) {
    for op in ops {
        match op {
            Op::Put(k, v) => {
                map.insert(k, v);
            }
            Op::Delete(k) => {
                map.remove(&k);
            }
        }
    }
}

/// Free bytes on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_values_go_to_synced_blob_files_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 900 * 1024];
        {
            let s = SledStorage::open(dir.path()).unwrap();
            s.apply(vec![Op::Put(b"big".to_vec(), big.clone())])
                .unwrap();
            s.flush().unwrap();
            let synced = s.sync.lock().unwrap().synced_blobs.len();
            let on_disk = std::fs::read_dir(dir.path().join("store/blobs"))
                .unwrap()
                .count();
            assert_eq!(synced, on_disk, "every blob file was synced");
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.get(b"big").unwrap(), Some(big));
    }

    use super::*;

    fn conformance<S: Storage>(s: S) {
        s.apply(vec![
            Op::Put(b"a".to_vec(), b"1".to_vec()),
            Op::Put(b"b".to_vec(), b"2".to_vec()),
        ])
        .unwrap();
        s.apply(vec![
            Op::Delete(b"a".to_vec()),
            Op::Put(b"c".to_vec(), b"3".to_vec()),
        ])
        .unwrap();
        s.flush().unwrap();
        let all = s.scan_all().unwrap();
        assert_eq!(
            all,
            vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        assert_eq!(s.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get(b"a").unwrap(), None);
    }

    #[test]
    fn sled_and_memory_behave_alike() {
        let dir = tempfile::tempdir().unwrap();
        conformance(SledStorage::open(dir.path()).unwrap());
        conformance(MemStorage::new());
    }

    #[test]
    fn sled_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            s.apply(vec![Op::Put(b"k".to_vec(), b"v".to_vec())])
                .unwrap();
            s.flush().unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    }
}
