//! The vote and the committed index: a small file replaced atomically.
//!
//! File `state`: `magic "RUDDRVOT" | version: u32 (1) | term: u64 | voted: u8 | voted_for: u64 |
//! has_committed: u8 | committed index: u64 | committed term: u64 | crc32(all before): u32`, LE.
//!
//! Saving writes `state.tmp`, syncs it, renames it over `state` and syncs the directory; only
//! then does the save return. After a crash at any step the file holds the old state or the new
//! one, whole: a leftover `state.tmp` is an unfinished save and is deleted on load; a `state`
//! that fails its checks is damage and is reported as corruption (a member must not forget
//! whom it voted for).

use std::path::{Path, PathBuf};

use super::LogError;
use super::disk::Disk;

/// A vote: in `term`, for `voted_for` (a member id), if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vote {
    pub term: u64,
    pub voted_for: Option<u64>,
}

/// What a member must remember across restarts besides its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub vote: Vote,
    /// (index, term) of the highest entry known committed.
    pub committed: Option<(u64, u64)>,
}

const MAGIC: &[u8; 8] = b"RUDDRVOT";
const VERSION: u32 = 1;
const LEN: usize = 8 + 4 + 8 + 1 + 8 + 1 + 8 + 8 + 4;
pub const FILE: &str = "state";
const TMP: &str = "state.tmp";

fn encode(s: &HardState) -> Vec<u8> {
    let mut b = Vec::with_capacity(LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&s.vote.term.to_le_bytes());
    b.push(u8::from(s.vote.voted_for.is_some()));
    b.extend_from_slice(&s.vote.voted_for.unwrap_or(0).to_le_bytes());
    b.push(u8::from(s.committed.is_some()));
    let (ci, ct) = s.committed.unwrap_or((0, 0));
    b.extend_from_slice(&ci.to_le_bytes());
    b.extend_from_slice(&ct.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Result<HardState, String> {
    if b.len() != LEN {
        return Err(format!("{} bytes, expected {LEN}", b.len()));
    }
    if &b[..8] != MAGIC {
        return Err("not a vote file of this format (bad magic)".into());
    }
    let crc = u32::from_le_bytes([b[LEN - 4], b[LEN - 3], b[LEN - 2], b[LEN - 1]]);
    if crc32fast::hash(&b[..LEN - 4]) != crc {
        return Err("checksum does not match".into());
    }
    let u64_at = |at: usize| {
        let mut a = [0; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != VERSION {
        return Err(format!(
            "format version {version}; this build reads version {VERSION}"
        ));
    }
    Ok(HardState {
        vote: Vote {
            term: u64_at(12),
            voted_for: (b[20] == 1).then(|| u64_at(21)),
        },
        committed: (b[29] == 1).then(|| (u64_at(30), u64_at(38))),
    })
}

/// Loads the state kept in `dir` (the default if none was ever saved), deleting an unfinished save.
pub fn load(disk: &dyn Disk, dir: &Path) -> Result<HardState, LogError> {
    let tmp = dir.join(TMP);
    if disk.exists(&tmp) {
        disk.remove(&tmp)
            .map_err(|e| LogError::Io(format!("removing {}: {e}", tmp.display())))?;
    }
    let path = dir.join(FILE);
    match disk.read(&path) {
        Ok(b) => decode(&b).map_err(|what| LogError::Corrupt {
            file: path,
            offset: 0,
            what,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HardState::default()),
        Err(e) => Err(LogError::Io(format!("reading {}: {e}", path.display()))),
    }
}

/// Replaces the state kept in `dir` with `s`, durably, before returning.
pub fn save(disk: &dyn Disk, dir: &Path, s: &HardState) -> Result<(), LogError> {
    let tmp: PathBuf = dir.join(TMP);
    let io = |what: &str, e: std::io::Error| LogError::Io(format!("{what} {}: {e}", tmp.display()));
    if disk.exists(&tmp) {
        disk.remove(&tmp).map_err(|e| io("removing", e))?;
    }
    let mut f = disk.create_new(&tmp).map_err(|e| io("creating", e))?;
    f.append(&encode(s)).map_err(|e| io("writing", e))?;
    f.sync_data().map_err(|e| io("syncing", e))?;
    drop(f);
    disk.rename(&tmp, &dir.join(FILE))
        .map_err(|e| io("renaming", e))?;
    disk.sync_dir(dir)
        .map_err(|e| LogError::Io(format!("syncing directory {}: {e}", dir.display())))
}
