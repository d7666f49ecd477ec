//! The file-system seam under the log: the few operations the log performs on disk, so that a
//! fake ([`super::crash::CrashDisk`]) can show what a power cut would leave behind.
//!
//! Contract (what the log relies on, and what [`RealDisk`] gives on Linux):
//! - data written to a file is durable only after [`DiskFile::sync_data`];
//! - a new, removed or renamed directory entry is durable only after [`Disk::sync_dir`] of the
//!   directory holding it (a file that was synced but whose entry was not may vanish);
//! - [`Disk::rename`] replaces the target atomically: after a crash the name refers to the old file
//!   or to the new one, never to a mix;
//! - a failed [`DiskFile::append`] may have written any prefix of its buffer.

use std::io;
use std::path::{Path, PathBuf};

/// An open file the log appends to.
pub trait DiskFile: Send {
    /// Appends all of `buf` at the end of the file; on error, a prefix of it may be written.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data (and its size) durable: `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; durable after `sync_data`.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// What the log does to a file system.
pub trait Disk: Send + Sync + 'static {
    /// Creates one directory (its parent must exist); `AlreadyExists` if it does.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Creates a new, empty file to append to; `AlreadyExists` if the name is taken.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing file to append to.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Names of the entries in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames `from` to `to`, replacing `to` atomically (same directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` durable: `fsync` of the directory.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes free for an unprivileged writer on the file system holding `dir`.
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` and any missing parent, syncing each parent's entry of a directory it made, and
/// syncs `dir`'s parent in any case (a directory made by an earlier run that crashed before
/// syncing it is made durable now). On an existing directory it writes nothing, so it works on a
/// full disk.
pub fn create_dir_all(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    fn make(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
        if disk.exists(dir) {
            return Ok(());
        }
        let parent = parent_of(dir);
        make(disk, &parent)?;
        match disk.create_dir(dir) {
            Ok(()) => disk.sync_dir(&parent),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }
    make(disk, dir)?;
    disk.sync_dir(&parent_of(dir))
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

struct RealFile(std::fs::File);

impl DiskFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.0, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // The file is in append mode: later writes go to the new end.
        self.0.set_len(len)
    }
}

impl Disk for RealDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

#[cfg(test)]
mod tests {
    use super::super::crash::CrashDisk;
    use super::*;

    /// What both disks must do alike, short of crashing.
    fn conformance(disk: &dyn Disk, root: &Path) {
        let dir = root.join("a/b");
        create_dir_all(disk, &dir).unwrap();
        assert!(disk.exists(&dir));
        create_dir_all(disk, &dir).unwrap();
        let f = dir.join("f");
        let mut h = disk.create_new(&f).unwrap();
        assert_eq!(
            disk.create_new(&f).err().map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists)
        );
        h.append(b"hello ").unwrap();
        h.append(b"world").unwrap();
        h.sync_data().unwrap();
        assert_eq!(disk.read(&f).unwrap(), b"hello world");
        h.truncate(5).unwrap();
        h.append(b"!").unwrap();
        assert_eq!(disk.read(&f).unwrap(), b"hello!");
        drop(h);
        let mut h = disk.open_append(&f).unwrap();
        h.append(b"?").unwrap();
        assert_eq!(disk.read(&f).unwrap(), b"hello!?");
        let g = dir.join("g");
        disk.create_new(&g).unwrap().append(b"old").unwrap();
        disk.rename(&f, &g).unwrap();
        assert_eq!(disk.read(&g).unwrap(), b"hello!?");
        assert!(!disk.exists(&f));
        assert_eq!(disk.list(&dir).unwrap(), vec!["g".to_string()]);
        disk.sync_dir(&dir).unwrap();
        disk.remove(&g).unwrap();
        assert!(disk.list(&dir).unwrap().is_empty());
        assert_eq!(
            disk.read(&g).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert_eq!(
            disk.open_append(&g).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        assert!(disk.free_bytes(&dir).unwrap() > 0);
    }

    #[test]
    fn the_real_disk_and_the_crash_fake_behave_alike() {
        let tmp = tempfile::tempdir().unwrap();
        conformance(&RealDisk, tmp.path());
        conformance(&CrashDisk::new(), Path::new("/data"));
    }
}
