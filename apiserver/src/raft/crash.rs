//! A file system in memory that remembers what is durable, for proving the log's fsyncs.
//!
//! Every file keeps its current bytes and the bytes as of its last `sync_data`; every directory
//! entry is live or also durable (its directory was synced since it was made, renamed or
//! removed). [`CrashDisk::crash`] is a power cut: each file goes back to its synced bytes (or keeps
//! a chosen number of its unsynced appended bytes: a torn write), and the names go back to the
//! durable ones, so a file whose directory was never synced disappears, and so does everything
//! under a directory whose own entry was not durable.
//!
//! Faults for tests: a limit on free space (an append past it writes what fits and fails with
//! `ENOSPC`, as a real disk does), and a crash point: from the n-th mutating operation on, every
//! operation fails as if the process had died there.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{Disk, DiskFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Default)]
struct Fs {
    live: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    free: Option<u64>,
    /// Mutating operations so far, and the one from which all fail.
    ops: u64,
    fail_from: Option<u64>,
    /// One operation that fails, the others going on (a transient error).
    fail_one: Option<u64>,
    /// File data syncs so far.
    syncs: u64,
    /// Bumped by every crash: handles opened before it are dead.
    generation: u64,
}

/// The crash-simulating fake; clones share one file system.
#[derive(Clone)]
pub struct CrashDisk {
    fs: Arc<Mutex<Fs>>,
}

impl Default for CrashDisk {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", p.display()),
    )
}

fn parent(p: &Path) -> PathBuf {
    p.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

impl Fs {
    /// Counts a mutating operation; fails it if the simulated process is past its crash point.
    fn op(&mut self) -> io::Result<()> {
        self.ops += 1;
        if self.fail_one == Some(self.ops) {
            return Err(io::Error::other("simulated transient I/O error"));
        }
        match self.fail_from {
            Some(n) if self.ops >= n => Err(io::Error::other("simulated crash point reached")),
            _ => Ok(()),
        }
    }

    fn file(&self, p: &Path) -> io::Result<u64> {
        match self.live.get(p) {
            Some(Node::File(ino)) => Ok(*ino),
            Some(Node::Dir) => Err(io::Error::other(format!("{}: is a directory", p.display()))),
            None => Err(not_found(p)),
        }
    }

    fn parent_is_dir(&self, p: &Path) -> io::Result<()> {
        match self.live.get(&parent(p)) {
            Some(Node::Dir) => Ok(()),
            _ => Err(not_found(&parent(p))),
        }
    }
}

impl CrashDisk {
    /// An empty file system with a durable root `/`.
    pub fn new() -> CrashDisk {
        let mut fs = Fs::default();
        fs.live.insert(PathBuf::from("/"), Node::Dir);
        fs.durable.insert(PathBuf::from("/"), Node::Dir);
        CrashDisk {
            fs: Arc::new(Mutex::new(fs)),
        }
    }

    fn fs(&self) -> MutexGuard<'_, Fs> {
        self.fs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A power cut, then a restart: unsynced data and unsynced names are lost, except that each
    /// file keeps up to `torn` bytes appended after its last sync (0: none).
    pub fn crash(&self, torn: usize) {
        let mut fs = self.fs();
        for ino in fs.inodes.values_mut() {
            let keep = if ino.data.starts_with(&ino.synced) {
                ino.synced.len() + torn.min(ino.data.len() - ino.synced.len())
            } else {
                ino.synced.len()
            };
            let base = if ino.data.starts_with(&ino.synced) {
                &ino.data
            } else {
                &ino.synced
            };
            ino.data = base[..keep.min(base.len())].to_vec();
            ino.synced = ino.data.clone();
        }
        let durable = fs.durable.clone();
        // A name survives only if every directory above it does.
        let live: BTreeMap<PathBuf, Node> = durable
            .iter()
            .filter(|(p, _)| {
                p.ancestors()
                    .skip(1)
                    .all(|a| durable.get(a) == Some(&Node::Dir))
            })
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        fs.live = live.clone();
        fs.durable = live;
        fs.fail_from = None;
        fs.fail_one = None;
        fs.generation += 1;
    }

    /// From the `n`-th mutating operation after now (1: the next), every operation fails.
    pub fn fail_after(&self, n: u64) {
        let mut fs = self.fs();
        fs.fail_from = Some(fs.ops + n);
    }

    /// The `n`-th mutating operation after now fails; the others succeed.
    pub fn fail_once(&self, n: u64) {
        let mut fs = self.fs();
        fs.fail_one = Some(fs.ops + n);
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.fs().ops
    }

    /// File data syncs so far.
    pub fn syncs(&self) -> u64 {
        self.fs().syncs
    }

    /// Limits free space to `bytes` (None: unlimited).
    pub fn set_free(&self, bytes: Option<u64>) {
        self.fs().free = bytes;
    }

    /// Overwrites bytes of a file in place, durably: damage on the medium.
    pub fn corrupt(&self, path: &Path, at: usize, bytes: &[u8]) {
        let mut fs = self.fs();
        let ino = fs.file(path).expect("no such file");
        let f = fs.inodes.get_mut(&ino).expect("inode");
        f.data[at..at + bytes.len()].copy_from_slice(bytes);
        f.synced = f.data.clone();
    }

    /// Cuts a file durably: a shorter file after a crash.
    pub fn cut(&self, path: &Path, len: usize) {
        let mut fs = self.fs();
        let ino = fs.file(path).expect("no such file");
        let f = fs.inodes.get_mut(&ino).expect("inode");
        f.data.truncate(len);
        f.synced = f.data.clone();
    }

    /// Creates a file with `data`, name and bytes durable.
    pub fn put_durable(&self, path: &Path, data: &[u8]) {
        let mut fs = self.fs();
        let ino = fs.next_ino;
        fs.next_ino += 1;
        fs.inodes.insert(
            ino,
            Inode {
                data: data.to_vec(),
                synced: data.to_vec(),
            },
        );
        fs.live.insert(path.to_path_buf(), Node::File(ino));
        fs.durable.insert(path.to_path_buf(), Node::File(ino));
    }
}

struct CrashFile {
    fs: Arc<Mutex<Fs>>,
    ino: u64,
    generation: u64,
}

impl CrashFile {
    fn with<T>(&self, f: impl FnOnce(&mut Fs, u64) -> io::Result<T>) -> io::Result<T> {
        let mut fs = self.fs.lock().unwrap_or_else(|p| p.into_inner());
        if fs.generation != self.generation {
            return Err(io::Error::other("file handle from before a crash"));
        }
        fs.op()?;
        f(&mut fs, self.ino)
    }
}

impl DiskFile for CrashFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(|fs, ino| {
            let fits = fs.free.map_or(buf.len(), |f| buf.len().min(f as usize));
            if let Some(f) = fs.free.as_mut() {
                *f -= fits as u64;
            }
            let file = fs
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("gone"))?;
            file.data.extend_from_slice(&buf[..fits]);
            if fits < buf.len() {
                return Err(io::Error::from_raw_os_error(28));
            }
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with(|fs, ino| {
            fs.syncs += 1;
            let file = fs
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("gone"))?;
            // Appends are the common case: copy only what was added since the last sync.
            if file.data.starts_with(&file.synced) {
                let from = file.synced.len();
                let added = file.data[from..].to_vec();
                file.synced.extend_from_slice(&added);
            } else {
                file.synced = file.data.clone();
            }
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|fs, ino| {
            let file = fs
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| io::Error::other("gone"))?;
            let old = file.data.len() as u64;
            file.data.truncate(len as usize);
            if let Some(f) = fs.free.as_mut() {
                *f += old.saturating_sub(len);
            }
            Ok(())
        })
    }
}

impl Disk for CrashDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        fs.op()?;
        fs.parent_is_dir(dir)?;
        if fs.live.contains_key(dir) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        fs.live.insert(dir.to_path_buf(), Node::Dir);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.fs().live.contains_key(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut fs = self.fs();
        fs.op()?;
        fs.parent_is_dir(path)?;
        if fs.live.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let ino = fs.next_ino;
        fs.next_ino += 1;
        fs.inodes.insert(ino, Inode::default());
        fs.live.insert(path.to_path_buf(), Node::File(ino));
        Ok(Box::new(CrashFile {
            fs: self.fs.clone(),
            ino,
            generation: fs.generation,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let fs = self.fs();
        let ino = fs.file(path)?;
        Ok(Box::new(CrashFile {
            fs: self.fs.clone(),
            ino,
            generation: fs.generation,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let fs = self.fs();
        let ino = fs.file(path)?;
        Ok(fs
            .inodes
            .get(&ino)
            .map(|i| i.data.clone())
            .unwrap_or_default())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs();
        if fs.live.get(dir) != Some(&Node::Dir) {
            return Err(not_found(dir));
        }
        Ok(fs
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        fs.op()?;
        let node = fs.live.remove(from).ok_or_else(|| not_found(from))?;
        fs.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        fs.op()?;
        let ino = fs.file(path)?;
        fs.live.remove(path);
        let len = fs.inodes.get(&ino).map_or(0, |i| i.data.len() as u64);
        if let Some(f) = fs.free.as_mut() {
            *f += len;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.fs();
        fs.op()?;
        if fs.live.get(dir) != Some(&Node::Dir) {
            return Err(not_found(dir));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let gone: Vec<PathBuf> = fs
            .durable
            .keys()
            .filter(|p| in_dir(p) && !fs.live.contains_key(*p))
            .cloned()
            .collect();
        for p in gone {
            fs.durable.remove(&p);
        }
        let now: Vec<(PathBuf, Node)> = fs
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        fs.durable.extend(now);
        Ok(())
    }

    fn free_bytes(&self, _dir: &Path) -> io::Result<u64> {
        Ok(self.fs().free.unwrap_or(u64::MAX / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_only_synced_data_and_synced_names() {
        let d = CrashDisk::new();
        let dir = Path::new("/d");
        d.create_dir(dir).unwrap();
        d.sync_dir(Path::new("/")).unwrap();
        let mut a = d.create_new(&dir.join("a")).unwrap();
        a.append(b"synced").unwrap();
        a.sync_data().unwrap();
        a.append(b"+lost").unwrap();
        d.sync_dir(dir).unwrap();
        let mut b = d.create_new(&dir.join("b")).unwrap();
        b.append(b"data synced, name not").unwrap();
        b.sync_data().unwrap();
        d.crash(0);
        assert_eq!(d.read(&dir.join("a")).unwrap(), b"synced");
        assert!(!d.exists(&dir.join("b")), "an unsynced name vanishes");
        // Handles from before the crash are dead.
        assert!(a.append(b"x").is_err());
        // A torn write keeps a prefix of the unsynced bytes.
        let mut a = d.open_append(&dir.join("a")).unwrap();
        a.append(b"12345").unwrap();
        d.crash(2);
        assert_eq!(d.read(&dir.join("a")).unwrap(), b"synced12");
        // A directory whose own entry was not synced takes its files with it.
        d.create_dir(Path::new("/e")).unwrap();
        let mut f = d.create_new(Path::new("/e/f")).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(Path::new("/e")).unwrap();
        d.crash(0);
        assert!(!d.exists(Path::new("/e/f")));
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_fails_with_enospc() {
        let d = CrashDisk::new();
        let mut f = d.create_new(Path::new("/f")).unwrap();
        d.set_free(Some(3));
        let e = f.append(b"12345").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(d.read(Path::new("/f")).unwrap(), b"123");
        f.truncate(1).unwrap();
        assert_eq!(d.free_bytes(Path::new("/")).unwrap(), 2);
        d.fail_after(1);
        assert!(f.sync_data().is_err());
    }
}
