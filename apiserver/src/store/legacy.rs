//! Reading a log directory written by the earlier local log (`<first index>.log` files), once.
//!
//! That format (records `len: u32 | crc32(payload): u32 | index: u64 | op: u8 | key_len: u32 |
//! key | value`, no file header) is migrated on the first start of this build: its records
//! above the engine's applied index are replayed into the engine and made durable there, then
//! the old files are deleted (and the directory synced). The new log then starts empty and
//! continues at the next version. Migrating, rather than refusing, keeps an upgrade a plain
//! restart; the engine, not the log, is what holds the data afterwards, so nothing of the old
//! format needs to be written again.
//!
//! The old format cannot tell a torn write from damage (its checksum does not cover the length),
//! so its own rule is kept for its last file: a bad record there ends the log (logged as a
//! warning); a bad record in any other file is corruption and the start fails.

use std::path::Path;

use bytes::Bytes;

use super::checkpoint;
use super::log::Entry;
use crate::raft::Disk;
use crate::storage::{Storage, StorageError};

const HEADER: usize = 8;

fn old_first(name: &str) -> Option<u64> {
    name.strip_suffix(".log")?.parse().ok()
}

/// Decodes records from the start of `data`; returns them and how many bytes were valid.
fn decode(data: &[u8]) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= HEADER {
        let word =
            |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let (len, crc) = (word(pos) as usize, word(pos + 4));
        let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if len < 13 || crc32fast::hash(payload) != crc {
            break;
        }
        let mut index = [0; 8];
        index.copy_from_slice(&payload[..8]);
        let key_len =
            u32::from_le_bytes([payload[9], payload[10], payload[11], payload[12]]) as usize;
        let Some(key) = payload.get(13..13 + key_len) else {
            break;
        };
        out.push(Entry {
            index: u64::from_le_bytes(index),
            key: key.to_vec(),
            value: (payload[8] == 1).then(|| Bytes::copy_from_slice(&payload[13 + key_len..])),
            created: false,
        });
        pos += HEADER + len;
    }
    (out, pos)
}

/// Replays and deletes old-format log files in `dir`, if any. Returns how many records were
/// replayed.
pub(super) fn migrate<S: Storage>(
    disk: &dyn Disk,
    dir: &Path,
    storage: &S,
) -> Result<usize, StorageError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StorageError::Io(format!("{what} {}: {e}", p.display()))
    };
    if !disk.exists(dir) {
        return Ok(0);
    }
    let mut files: Vec<(u64, std::path::PathBuf)> = disk
        .list(dir)
        .map_err(|e| io("listing", dir, e))?
        .into_iter()
        .filter_map(|n| old_first(&n).map(|f| (f, dir.join(n))))
        .collect();
    if files.is_empty() {
        return Ok(0);
    }
    files.sort();
    let mut entries = Vec::new();
    let count = files.len();
    for (i, (_, path)) in files.iter().enumerate() {
        let data = disk.read(path).map_err(|e| io("reading", path, e))?;
        let (mut recs, good) = decode(&data);
        if good < data.len() {
            if i + 1 < count {
                return Err(StorageError::Corrupt(format!(
                    "old-format log file {} is damaged at byte {good}; the server cannot migrate it (restore the data directory from a backup)",
                    path.display()
                )));
            }
            tracing::warn!(file = %path.display(), at = good, "old-format log ends in an unreadable record; taken as a torn write");
        }
        entries.append(&mut recs);
    }
    let n = entries.len();
    tracing::info!(records = n, files = count, dir = %dir.display(), "migrating an old-format log into the engine");
    let span = entries
        .first()
        .zip(entries.last())
        .map(|(a, b)| (a.index, b.index));
    checkpoint::replay(storage, entries, span)?;
    for (_, path) in &files {
        disk.remove(path).map_err(|e| io("removing", path, e))?;
    }
    disk.sync_dir(dir).map_err(|e| io("syncing", dir, e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::crash::CrashDisk;
    use crate::storage::MemStorage;

    /// An old-format record, written as the earlier log did.
    fn old_record(index: u64, key: &str, value: Option<&str>) -> Vec<u8> {
        let mut payload = index.to_le_bytes().to_vec();
        payload.push(u8::from(value.is_some()));
        payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
        payload.extend_from_slice(key.as_bytes());
        payload.extend_from_slice(value.unwrap_or("").as_bytes());
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn an_old_log_is_replayed_into_the_engine_and_removed() {
        let disk = CrashDisk::new();
        let dir = Path::new("/data/log");
        crate::raft::disk::create_dir_all(&disk, dir).unwrap();
        let mut a = old_record(1, "k1", Some("v1"));
        a.extend(old_record(2, "k2", Some("v2")));
        disk.put_durable(&dir.join("00000000000000000001.log"), &a);
        let mut b = old_record(3, "k1", None);
        b.extend(&old_record(4, "k3", Some("v3"))[..5]);
        disk.put_durable(&dir.join("00000000000000000003.log"), &b);
        let engine = MemStorage::new();
        assert_eq!(migrate(&disk, dir, &engine).unwrap(), 3);
        assert_eq!(engine.get(b"k1").unwrap(), None);
        assert_eq!(engine.get(b"k2").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(
            engine.get(checkpoint::META_APPLIED).unwrap(),
            Some(3u64.to_be_bytes().to_vec())
        );
        disk.crash(0);
        assert!(
            disk.list(dir).unwrap().is_empty(),
            "the old files are gone for good"
        );
        // Damage in a file that is not the last is refused.
        let mut bad = old_record(1, "k", Some("v"));
        bad[10] ^= 1;
        disk.put_durable(&dir.join("00000000000000000001.log"), &bad);
        disk.put_durable(
            &dir.join("00000000000000000002.log"),
            &old_record(2, "k", None),
        );
        let e = migrate(&disk, dir, &MemStorage::new()).unwrap_err();
        assert!(e.to_string().contains("damaged at byte 0"), "{e}");
    }
}
