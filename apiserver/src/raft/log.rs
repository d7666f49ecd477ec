//! [`RaftLog`]: the segmented log of opaque payloads, each with a Raft index and term.
//!
//! Guarantees:
//! - **Group commit.** [`RaftLog::append`] writes the whole batch with one write and one
//!   `fdatasync` and returns `Ok` only after both; a new segment is written under a temporary
//!   name, synced, renamed into place and its directory synced before any record goes into it.
//! - **Open.** Every segment's header and every record's checksums, indexes (contiguous, also
//!   across segments) and terms (never decreasing) are checked. Only a torn final write at the very
//!   end of the last segment is cut off (logged as a warning); any other damage fails the open
//!   with [`LogError::Corrupt`], naming the file, the byte offset and what is wrong, and nothing
//!   after the damage is dropped. Opening writes nothing but that cut and the deletion of
//!   unfinished temporary files, so a log on a full disk opens and can be read.
//! - **Failures.** A batch refused for space ([`LogError::NoSpace`]: free space below the margin
//!   *plus the batch's own size*) wrote nothing, and the next append tries again: space that was
//!   only low never sticks. A failed write or sync returns [`LogError::Unknown`] (part of the
//!   batch may be on disk and come back on restart) and the log refuses appends until
//!   [`RaftLog::recover`] cuts the active segment back to its last acknowledged record and syncs it
//!   (the batch is then known absent), or until the log is reopened.
//! - **Truncation** ([`RaftLog::truncate_after`], a Raft conflict) removes later segments newest
//!   first, then cuts the segment holding the new last entry, syncing each step, so that a crash
//!   part-way leaves either the old log or a prefix of it, never a gap.
//! - **Purging** ([`RaftLog::purge_upto`], after a snapshot) removes whole segments, oldest first,
//!   and never the last one, so entries at or below the index may remain (read
//!   [`RaftLog::first_index`]).
//! - The vote and the committed index live beside the segments in a file replaced atomically
//!   ([`super::hardstate`]).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::LogError;
use super::disk::{self, Disk, DiskFile};
use super::hardstate::{self, HardState, Vote};
use super::segment::{self, RecordPos, SEGMENT_HEADER, Tail};

/// An entry to append: its position and a way to write its payload.
pub trait Record {
    fn index(&self) -> u64;
    fn term(&self) -> u64;
    fn write_payload(&self, out: &mut Vec<u8>);
}

/// An entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

impl Record for StoredRecord {
    fn index(&self) -> u64 {
        self.index
    }
    fn term(&self) -> u64 {
        self.term
    }
    fn write_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payload);
    }
}

/// Tunables of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// An append is refused unless this much space stays free after it.
    pub min_free_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 * 1024 * 1024,
            min_free_bytes: 64 * 1024 * 1024,
        }
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    records: Vec<RecordPos>,
    /// Bytes of the file up to the end of its last acknowledged record.
    len: u64,
}

impl Segment {
    /// The index after this segment's last record.
    fn end(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

/// The open log; one owner appends (the store's writer, or Raft's log task).
pub struct RaftLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    opts: LogOptions,
    segments: Vec<Segment>,
    /// The last segment, open for appending (opened on first use, so opening writes nothing).
    active: Option<Box<dyn DiskFile>>,
    /// The index the next append must start at; `None` when the log never held anything.
    next: Option<u64>,
    last_term: u64,
    /// Why appends are refused, after a failure whose outcome is unknown.
    poisoned: Option<String>,
    hard: HardState,
    buf: Vec<u8>,
    placed: Vec<RecordPos>,
}

const TMP_SUFFIX: &str = ".tmp";

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl RaftLog {
    /// Opens (creating if needed) the log in `dir`, checking everything in it.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, opts: LogOptions) -> Result<RaftLog, LogError> {
        disk::create_dir_all(&*disk, dir).map_err(|e| LogError::Io(io_err("creating", dir, e)))?;
        let names = disk
            .list(dir)
            .map_err(|e| LogError::Io(io_err("listing", dir, e)))?;
        let mut firsts = Vec::new();
        let mut removed_tmp = false;
        for name in names {
            let path = dir.join(&name);
            if name.ends_with(TMP_SUFFIX) {
                // An unfinished new segment or vote file, never renamed into place.
                disk.remove(&path)
                    .map_err(|e| LogError::Io(io_err("removing", &path, e)))?;
                removed_tmp = true;
            } else if let Some(first) = segment::parse_name(&name) {
                firsts.push((first, path));
            }
        }
        if removed_tmp {
            disk.sync_dir(dir)
                .map_err(|e| LogError::Io(io_err("syncing", dir, e)))?;
        }
        firsts.sort();
        let count = firsts.len();
        let mut segments: Vec<Segment> = Vec::with_capacity(count);
        let mut last_term = 0;
        for (i, (first, path)) in firsts.into_iter().enumerate() {
            let corrupt = |offset: u64, what: String| LogError::Corrupt {
                file: path.clone(),
                offset,
                what,
            };
            if let Some(prev) = segments.last()
                && prev.end() != first
            {
                return Err(corrupt(
                    0,
                    format!(
                        "the segment starts at index {first} but the previous one ends before index {} (entries missing or overlapping)",
                        prev.end()
                    ),
                ));
            }
            let data = disk
                .read(&path)
                .map_err(|e| LogError::Io(io_err("reading", &path, e)))?;
            segment::check_header(&data, first).map_err(|what| corrupt(0, what))?;
            let scanned = segment::scan(&data, first, last_term);
            match scanned.tail {
                Tail::Clean => {}
                Tail::Torn { at, what } if i + 1 == count => {
                    let mut f = disk
                        .open_append(&path)
                        .map_err(|e| LogError::Io(io_err("opening", &path, e)))?;
                    f.truncate(scanned.good_len)
                        .and_then(|()| f.sync_data())
                        .map_err(|e| LogError::Io(io_err("truncating", &path, e)))?;
                    tracing::warn!(segment = %path.display(), at, %what, "cut a torn final write off the log (never acknowledged)");
                }
                Tail::Torn { at, what } => {
                    return Err(corrupt(
                        at,
                        format!("{what}, in a segment that is not the last"),
                    ));
                }
                Tail::Corrupt { at, what } => return Err(corrupt(at, what)),
            }
            if let Some(r) = scanned.records.last() {
                last_term = r.term;
            }
            segments.push(Segment {
                first,
                path,
                records: scanned.records,
                len: scanned.good_len,
            });
        }
        let hard = hardstate::load(&*disk, dir)?;
        Ok(RaftLog {
            next: segments.last().map(Segment::end),
            disk,
            dir: dir.to_path_buf(),
            opts,
            segments,
            active: None,
            last_term,
            poisoned: None,
            hard,
            buf: Vec::new(),
            placed: Vec::new(),
        })
    }

    /// Appends `batch` (indexes contiguous, following the last entry; terms never decreasing)
    /// with one write and one sync; returns once it is durable.
    pub fn append<R: Record>(&mut self, batch: &[R]) -> Result<(), LogError> {
        if let Some(r) = &self.poisoned {
            return Err(LogError::Poisoned(r.clone()));
        }
        let Some(head) = batch.first() else {
            return Ok(());
        };
        let start = self.next.unwrap_or(head.index());
        let mut term = self.last_term;
        self.buf.clear();
        self.placed.clear();
        for (i, r) in batch.iter().enumerate() {
            let want = start + i as u64;
            if r.index() != want {
                return Err(LogError::Invalid(format!(
                    "appending index {} where {want} comes next",
                    r.index()
                )));
            }
            if r.term() < term {
                return Err(LogError::Invalid(format!(
                    "entry {want} has term {}, below the last term {term}",
                    r.term()
                )));
            }
            term = r.term();
            let offset = self.buf.len() as u64;
            segment::encode_record(&mut self.buf, want, term, |out| r.write_payload(out));
            self.placed.push(RecordPos {
                index: want,
                term,
                offset,
                len: (self.buf.len() as u64 - offset - segment::RECORD_HEADER as u64) as u32,
            });
        }
        let roll = self
            .segments
            .last()
            .is_none_or(|s| s.len >= self.opts.segment_bytes && !s.records.is_empty());
        let needed = (self.buf.len() as u64)
            .saturating_add(if roll { SEGMENT_HEADER as u64 } else { 0 })
            .saturating_add(self.opts.min_free_bytes);
        let free = self
            .disk
            .free_bytes(&self.dir)
            .map_err(|e| LogError::Io(io_err("reading free space of", &self.dir, e)))?;
        if free < needed {
            return Err(LogError::NoSpace { free, needed });
        }
        if roll {
            self.roll(start)?;
        }
        let seg = self
            .segments
            .last_mut()
            .ok_or_else(|| LogError::Io("the log has no segment to append to".into()))?;
        if self.active.is_none() {
            self.active = Some(
                self.disk
                    .open_append(&seg.path)
                    .map_err(|e| LogError::Io(io_err("opening", &seg.path, e)))?,
            );
        }
        let Some(file) = self.active.as_mut() else {
            return Err(LogError::Io("the log has no open segment".into()));
        };
        if let Err(e) = file.append(&self.buf).and_then(|()| file.sync_data()) {
            let reason = io_err("appending to", &seg.path, e);
            self.poisoned = Some(reason.clone());
            return Err(LogError::Unknown(reason));
        }
        let base = seg.len;
        seg.records.extend(self.placed.iter().map(|p| RecordPos {
            offset: p.offset + base,
            ..*p
        }));
        seg.len += self.buf.len() as u64;
        self.next = Some(start + batch.len() as u64);
        self.last_term = term;
        Ok(())
    }

    /// Starts the segment whose first record will be `first`. Nothing of a batch is written yet,
    /// so a failure leaves the log as it was (at most an empty segment that opens fine).
    fn roll(&mut self, first: u64) -> Result<(), LogError> {
        let name = segment::segment_name(first);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let fail =
            |what: &str, p: &Path, e| LogError::Io(io_err(what, p, e) + "; nothing was appended");
        if self.disk.exists(&tmp) {
            self.disk
                .remove(&tmp)
                .map_err(|e| fail("removing", &tmp, e))?;
        }
        let mut f = self
            .disk
            .create_new(&tmp)
            .map_err(|e| fail("creating", &tmp, e))?;
        f.append(&segment::encode_header(first))
            .and_then(|()| f.sync_data())
            .map_err(|e| fail("writing the header of", &tmp, e))?;
        self.disk
            .rename(&tmp, &path)
            .map_err(|e| fail("renaming", &tmp, e))?;
        // The new name must survive a crash before records acknowledged in it can.
        self.disk
            .sync_dir(&self.dir)
            .map_err(|e| fail("syncing", &self.dir, e))?;
        self.segments.push(Segment {
            first,
            path,
            records: Vec::new(),
            len: SEGMENT_HEADER as u64,
        });
        self.active = Some(f);
        Ok(())
    }

    /// After [`LogError::Unknown`]: makes the disk hold exactly what was acknowledged (the active
    /// segment cut back to its last acknowledged record, synced, and the directory synced), so
    /// the failed batch is known absent and appends may resume. On error the log stays refusing.
    pub fn recover(&mut self) -> Result<(), LogError> {
        if self.poisoned.is_none() {
            return Ok(());
        }
        self.disk
            .sync_dir(&self.dir)
            .map_err(|e| LogError::Io(io_err("syncing", &self.dir, e)))?;
        if let Some(seg) = self.segments.last() {
            let mut f = match self.active.take() {
                Some(f) => f,
                None => self
                    .disk
                    .open_append(&seg.path)
                    .map_err(|e| LogError::Io(io_err("opening", &seg.path, e)))?,
            };
            f.truncate(seg.len)
                .and_then(|()| f.sync_data())
                .map_err(|e| LogError::Io(io_err("cutting back", &seg.path, e)))?;
            self.active = Some(f);
        }
        tracing::info!(log = %self.dir.display(), "the log was cut back to its last acknowledged entry; appends resume");
        self.poisoned = None;
        Ok(())
    }

    /// Removes every entry above `index` (a Raft conflict), durably.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), LogError> {
        self.recover()?;
        if self.next.is_none_or(|n| index + 1 >= n) {
            return Ok(());
        }
        let poison = |log: &mut RaftLog, what: String| {
            log.poisoned = Some(what.clone());
            LogError::Unknown(what)
        };
        let mut removed = false;
        while let Some(seg) = self.segments.last() {
            if seg.first <= index {
                break;
            }
            let path = seg.path.clone();
            self.active = None;
            if let Err(e) = self.disk.remove(&path) {
                return Err(poison(self, io_err("removing", &path, e)));
            }
            self.segments.pop();
            removed = true;
        }
        if removed && let Err(e) = self.disk.sync_dir(&self.dir) {
            let what = io_err("syncing", &self.dir, e);
            return Err(poison(self, what));
        }
        if let Some(seg) = self.segments.last() {
            let keep = (index + 1 - seg.first) as usize;
            if keep < seg.records.len() {
                let cut = seg.records[keep].offset;
                let path = seg.path.clone();
                let f = match self.active.take() {
                    Some(f) => Ok(f),
                    None => self.disk.open_append(&path),
                };
                let res = f.and_then(|mut f| {
                    f.truncate(cut)?;
                    f.sync_data()?;
                    Ok(f)
                });
                match res {
                    Ok(f) => self.active = Some(f),
                    Err(e) => return Err(poison(self, io_err("truncating", &path, e))),
                }
                if let Some(seg) = self.segments.last_mut() {
                    seg.records.truncate(keep);
                    seg.len = cut;
                }
            }
        }
        self.next = Some(index + 1);
        self.last_term = self
            .segments
            .iter()
            .rev()
            .find_map(|s| s.records.last())
            .map_or(0, |r| r.term);
        Ok(())
    }

    /// Removes whole segments whose entries are all at or below `index` (a snapshot holds them),
    /// oldest first, never the last segment. A failure leaves a log that is still whole.
    pub fn purge_upto(&mut self, index: u64) -> Result<(), LogError> {
        let mut removed = false;
        let mut result = Ok(());
        while self.segments.len() > 1 && self.segments[0].end() <= index.saturating_add(1) {
            let path = self.segments[0].path.clone();
            if let Err(e) = self.disk.remove(&path) {
                result = Err(LogError::Io(io_err("removing", &path, e)));
                break;
            }
            self.segments.remove(0);
            removed = true;
        }
        if removed {
            self.disk
                .sync_dir(&self.dir)
                .map_err(|e| LogError::Io(io_err("syncing", &self.dir, e)))?;
        }
        result
    }

    /// Removes every segment (a snapshot replaced all the log holds), durably; the next append
    /// may start at any index.
    pub fn clear(&mut self) -> Result<(), LogError> {
        self.recover()?;
        self.active = None;
        let mut removed = false;
        while let Some(seg) = self.segments.pop() {
            if let Err(e) = self.disk.remove(&seg.path) {
                let what = io_err("removing", &seg.path, e);
                self.poisoned = Some(what.clone());
                return Err(LogError::Unknown(what));
            }
            removed = true;
        }
        if removed {
            self.disk
                .sync_dir(&self.dir)
                .map_err(|e| LogError::Io(io_err("syncing", &self.dir, e)))?;
        }
        self.next = None;
        self.last_term = 0;
        Ok(())
    }

    /// The entries in `range` that the log holds, in order.
    pub fn read(&self, range: RangeInclusive<u64>) -> Result<Vec<StoredRecord>, LogError> {
        let mut out = Vec::new();
        for seg in &self.segments {
            if seg.end() <= *range.start() || seg.first > *range.end() {
                continue;
            }
            let data = self
                .disk
                .read(&seg.path)
                .map_err(|e| LogError::Io(io_err("reading", &seg.path, e)))?;
            for r in seg.records.iter().filter(|r| range.contains(&r.index)) {
                let payload = data.get(r.payload()).ok_or_else(|| LogError::Corrupt {
                    file: seg.path.clone(),
                    offset: r.offset,
                    what: "the file is shorter than when it was opened".into(),
                })?;
                out.push(StoredRecord {
                    index: r.index,
                    term: r.term,
                    payload: payload.to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// Every entry the log holds.
    pub fn read_all(&self) -> Result<Vec<StoredRecord>, LogError> {
        self.read(0..=u64::MAX)
    }

    /// Index of the first entry held, if any.
    pub fn first_index(&self) -> Option<u64> {
        let seg = self.segments.iter().find(|s| !s.records.is_empty())?;
        Some(seg.first)
    }

    /// Index and term of the last entry held, if any.
    pub fn last(&self) -> Option<(u64, u64)> {
        let r = self.segments.iter().rev().find_map(|s| s.records.last())?;
        Some((r.index, r.term))
    }

    /// Bytes the segments occupy.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// Saves the vote durably before returning.
    pub fn save_vote(&mut self, vote: Vote) -> Result<(), LogError> {
        let next = HardState { vote, ..self.hard };
        hardstate::save(&*self.disk, &self.dir, &next)?;
        self.hard = next;
        Ok(())
    }

    /// Saves the committed (index, term) durably before returning.
    pub fn save_committed(&mut self, committed: Option<(u64, u64)>) -> Result<(), LogError> {
        let next = HardState {
            committed,
            ..self.hard
        };
        hardstate::save(&*self.disk, &self.dir, &next)?;
        self.hard = next;
        Ok(())
    }
}
