//! The local log: the durable record of every write, ahead of the key-value engine.
//!
//! Each group commit appends one record per effect (`index`, storage key, new value or deletion)
//! to the current segment file with one `write` and one `fdatasync`; only then is the batch
//! acknowledged. The engine (sled) is brought up to date in the background from the same
//! effects ("checkpoints"), and segments wholly below the last checkpoint are deleted. At
//! start-up, records above the engine's applied index are replayed into it.
//!
//! Why: a durable sled commit costs ~200 µs of CPU and wakes all of sled's I/O threads, whatever
//! its size, while an append to this log costs a copy and one syscall pair per batch. The log is
//! also the shape Raft's log will take.
//!
//! Format: segment files `<first index, 20 digits>.log`, each a sequence of records
//! `len: u32 LE | crc32(payload): u32 LE | payload`, payload
//! `index: u64 LE | op: u8 (1 put, 0 delete) | key_len: u32 LE | key | value`. A record cut short
//! by a crash (only possible at the end of the last segment, and never acknowledged, since
//! acknowledgement follows the sync) is truncated away on open; damage anywhere else is reported
//! as corruption.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::storage::StorageError;

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const HEADER: usize = 8;

/// One effect: the object at `key` became `value` (or was deleted) at log position `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub key: Vec<u8>,
    pub value: Option<Bytes>,
}

struct Segment {
    first: u64,
    last: u64,
    path: PathBuf,
    len: u64,
}

/// The open log, owned by the store's writer thread.
pub struct Wal {
    dir: PathBuf,
    segments: Vec<Segment>,
    current: Option<File>,
    buf: Vec<u8>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing directory", dir, e))
}

impl Wal {
    /// Opens the log in `dir`, returning it and every record in it, in order.
    pub fn open(dir: &Path) -> Result<(Wal, Vec<Entry>), StorageError> {
        fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let mut firsts: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| io("reading", dir, e))? {
            let e = e.map_err(|e| io("reading", dir, e))?;
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                firsts.push((first, e.path()));
            }
        }
        firsts.sort();
        let mut entries = Vec::new();
        let mut segments = Vec::new();
        let count = firsts.len();
        for (i, (first, path)) in firsts.into_iter().enumerate() {
            let data = fs::read(&path).map_err(|e| io("reading", &path, e))?;
            let (mut recs, good) = decode(&data);
            if good < data.len() {
                if i + 1 < count {
                    return Err(StorageError::Corrupt(format!(
                        "log segment {} is damaged at byte {good}",
                        path.display()
                    )));
                }
                // A torn final record: never acknowledged, so cut it off.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("opening", &path, e))?;
                f.set_len(good as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io("truncating", &path, e))?;
                tracing::warn!(segment = %path.display(), at = good, "cut a torn record off the log");
            }
            let last = recs.last().map_or(first.saturating_sub(1), |e| e.index);
            entries.append(&mut recs);
            segments.push(Segment {
                first,
                last,
                path,
                len: good as u64,
            });
        }
        let current = match segments.last() {
            Some(s) if s.len < SEGMENT_BYTES => Some(
                OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(|e| io("opening", &s.path, e))?,
            ),
            _ => None,
        };
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                segments,
                current,
                buf: Vec::new(),
            },
            entries,
        ))
    }

    /// Appends `entries` (in index order) and makes them durable before returning.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if self.current.is_none() || self.segments.last().is_some_and(|s| s.len >= SEGMENT_BYTES) {
            self.roll(first.index)?;
        }
        self.buf.clear();
        for e in entries {
            encode(e, &mut self.buf);
        }
        let (Some(file), Some(seg)) = (self.current.as_mut(), self.segments.last_mut()) else {
            return Err(StorageError::Io("the log has no open segment".into()));
        };
        file.write_all(&self.buf)
            .and_then(|()| file.sync_data())
            .map_err(|e| io("appending to", &seg.path, e))?;
        seg.len += self.buf.len() as u64;
        seg.last = entries[entries.len() - 1].index;
        Ok(())
    }

    fn roll(&mut self, first: u64) -> Result<(), StorageError> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("creating", &path, e))?;
        // The new file's directory entry must survive a crash too.
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            last: first.saturating_sub(1),
            path,
            len: 0,
        });
        self.current = Some(file);
        Ok(())
    }

    /// Deletes closed segments whose every record is at or below `upto` (already in the engine).
    pub fn compact(&mut self, upto: u64) {
        let keep_from = self.segments.len().saturating_sub(1);
        let mut removed = 0;
        for s in self.segments.iter().take(keep_from) {
            if s.last > upto {
                break;
            }
            if let Err(e) = fs::remove_file(&s.path) {
                tracing::warn!(segment = %s.path.display(), error = %e, "could not delete a compacted log segment");
                break;
            }
            removed += 1;
        }
        self.segments.drain(..removed);
    }

    /// Bytes the log occupies.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Index of the first record still kept, if any.
    pub fn first_index(&self) -> Option<u64> {
        self.segments.first().map(|s| s.first)
    }
}

fn encode(e: &Entry, out: &mut Vec<u8>) {
    let value_len = e.value.as_ref().map_or(0, Bytes::len);
    let payload_len = 8 + 1 + 4 + e.key.len() + value_len;
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&e.index.to_le_bytes());
    out.push(u8::from(e.value.is_some()));
    out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.key);
    if let Some(v) = &e.value {
        out.extend_from_slice(v);
    }
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes records from the start of `data`; returns them and how many bytes were valid.
fn decode(data: &[u8]) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= HEADER {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if len < 13 || crc32fast::hash(payload) != crc {
            break;
        }
        let index = u64::from_le_bytes(payload[0..8].try_into().unwrap_or([0; 8]));
        let put = payload[8] == 1;
        let key_len = u32::from_le_bytes(payload[9..13].try_into().unwrap_or([0; 4])) as usize;
        let Some(key) = payload.get(13..13 + key_len) else {
            break;
        };
        let value = put.then(|| Bytes::copy_from_slice(&payload[13 + key_len..]));
        out.push(Entry {
            index,
            key: key.to_vec(),
            value,
        });
        pos += HEADER + len;
    }
    (out, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, key: &str, value: &str) -> Entry {
        Entry {
            index,
            key: key.as_bytes().to_vec(),
            value: Some(Bytes::from(value.to_string())),
        }
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, none) = Wal::open(dir.path()).unwrap();
        assert!(none.is_empty());
        wal.append(&[put(1, "a", "1"), put(2, "b", "2")]).unwrap();
        wal.append(&[Entry {
            index: 3,
            key: b"a".to_vec(),
            value: None,
        }])
        .unwrap();
        drop(wal);
        let (mut wal, got) = Wal::open(dir.path()).unwrap();
        assert_eq!(
            got,
            vec![
                put(1, "a", "1"),
                put(2, "b", "2"),
                Entry {
                    index: 3,
                    key: b"a".to_vec(),
                    value: None
                }
            ]
        );
        // Appending after a reopen continues the same log.
        wal.append(&[put(4, "c", "4")]).unwrap();
        drop(wal);
        assert_eq!(Wal::open(dir.path()).unwrap().1.len(), 4);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_elsewhere_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[put(1, "a", "1"), put(2, "b", "22")]).unwrap();
        let path = wal.segments[0].path.clone();
        drop(wal);
        // A crash in the middle of the second record's write.
        let data = fs::read(&path).unwrap();
        fs::write(&path, &data[..data.len() - 3]).unwrap();
        let (mut wal, got) = Wal::open(dir.path()).unwrap();
        assert_eq!(got, vec![put(1, "a", "1")]);
        wal.append(&[put(2, "b", "x")]).unwrap();
        drop(wal);
        assert_eq!(
            Wal::open(dir.path()).unwrap().1,
            vec![put(1, "a", "1"), put(2, "b", "x")]
        );
        // A flipped byte in a closed segment is not silently dropped.
        let mut data = fs::read(&path).unwrap();
        data[HEADER + 2] ^= 0xff;
        fs::write(&path, &data).unwrap();
        fs::write(dir.path().join(segment_name(3)), b"").unwrap();
        assert!(matches!(
            Wal::open(dir.path()),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn compaction_deletes_only_closed_segments_below_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[put(1, "a", "1")]).unwrap();
        wal.roll(2).unwrap();
        wal.append(&[put(2, "b", "2")]).unwrap();
        wal.roll(3).unwrap();
        wal.append(&[put(3, "c", "3")]).unwrap();
        wal.compact(1);
        assert_eq!(wal.first_index(), Some(2));
        wal.compact(3);
        // The current segment stays, even when fully checkpointed.
        assert_eq!(wal.first_index(), Some(3));
        drop(wal);
        assert_eq!(Wal::open(dir.path()).unwrap().1, vec![put(3, "c", "3")]);
    }
}
