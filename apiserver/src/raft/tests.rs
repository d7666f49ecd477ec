//! The log against the crash fake: what survives a power cut, what is torn, what is corruption.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::crash::CrashDisk;
use super::disk::Disk;
use super::segment::{RECORD_HEADER, SEGMENT_HEADER};
use super::*;

const DIR: &str = "/data/log";

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: 1 << 20,
        min_free_bytes: 0,
    }
}

fn rec(index: u64, term: u64, payload: &str) -> StoredRecord {
    StoredRecord {
        index,
        term,
        payload: payload.as_bytes().to_vec(),
    }
}

fn batch(from: u64, n: u64) -> Vec<StoredRecord> {
    (from..from + n)
        .map(|i| rec(i, 1, &format!("entry-{i}")))
        .collect()
}

fn open(disk: &CrashDisk, opts: LogOptions) -> Result<RaftLog, LogError> {
    RaftLog::open(Arc::new(disk.clone()), Path::new(DIR), opts)
}

fn indexes(log: &RaftLog) -> Vec<u64> {
    log.read_all().unwrap().iter().map(|r| r.index).collect()
}

#[test]
fn acknowledged_appends_survive_a_power_cut() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    log.append(&batch(1, 3)).unwrap();
    let syncs = disk.syncs();
    log.append(&batch(4, 5)).unwrap();
    assert_eq!(disk.syncs() - syncs, 1, "one fdatasync per batch");
    disk.crash(0);
    drop(log);
    let log = open(&disk, opts()).unwrap();
    assert_eq!(log.read_all().unwrap(), batch(1, 8));
    assert_eq!(log.last(), Some((8, 1)));
}

#[test]
fn a_new_segment_and_the_log_directory_survive_a_power_cut() {
    let disk = CrashDisk::new();
    let small = LogOptions {
        segment_bytes: 64,
        min_free_bytes: 0,
    };
    let mut log = open(&disk, small.clone()).unwrap();
    for i in 1..=5 {
        log.append(&batch(i, 1)).unwrap();
    }
    assert!(log.segment_count() >= 3, "the batches rolled segments");
    disk.crash(0);
    drop(log);
    let log = open(&disk, small).unwrap();
    assert_eq!(indexes(&log), vec![1, 2, 3, 4, 5]);
}

#[test]
fn an_unacknowledged_batch_vanishes_or_survives_in_whole_records() {
    for fail_at in 1..=2 {
        for torn in [0, 5, RECORD_HEADER + 3, 1000] {
            let disk = CrashDisk::new();
            let mut log = open(&disk, opts()).unwrap();
            log.append(&batch(1, 2)).unwrap();
            disk.fail_after(fail_at);
            let e = log.append(&batch(3, 3)).unwrap_err();
            assert!(matches!(e, LogError::Unknown(_)), "{e}");
            assert!(matches!(
                log.append(&batch(3, 1)),
                Err(LogError::Poisoned(_))
            ));
            disk.crash(torn);
            drop(log);
            let log = open(&disk, opts()).unwrap();
            let got = log.read_all().unwrap();
            assert_eq!(got[..2], batch(1, 2), "acknowledged entries stay");
            assert_eq!(
                got[2..],
                batch(3, 3)[..got.len() - 2],
                "whatever came back of the failed batch is whole records of it"
            );
        }
    }
}

#[test]
fn a_failed_append_is_recovered_by_cutting_back_and_appends_resume() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    log.append(&batch(1, 2)).unwrap();
    // The write lands, the sync fails: part of the batch may be in the file.
    disk.fail_once(2);
    assert!(matches!(
        log.append(&batch(3, 2)),
        Err(LogError::Unknown(_))
    ));
    log.recover().unwrap();
    // The failed batch is gone from the file, and its indexes are the next ones again.
    log.append(&[rec(3, 1, "retried")]).unwrap();
    disk.crash(usize::MAX);
    drop(log);
    let log = open(&disk, opts()).unwrap();
    let got = log.read_all().unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], rec(3, 1, "retried"));
}

#[test]
fn a_torn_final_record_is_cut_and_its_index_reused() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    log.append(&batch(1, 3)).unwrap();
    let seg = log.segment_paths()[0].clone();
    drop(log);
    let len = disk.read(&seg).unwrap().len();
    disk.cut(&seg, len - 4);
    let mut log = open(&disk, opts()).unwrap();
    assert_eq!(indexes(&log), vec![1, 2]);
    log.append(&[rec(3, 2, "new")]).unwrap();
    drop(log);
    let log = open(&disk, opts()).unwrap();
    assert_eq!(log.read_all().unwrap()[2], rec(3, 2, "new"));
}

fn corrupt_open(disk: &CrashDisk) -> (PathBuf, u64, String) {
    match open(disk, opts()) {
        Err(LogError::Corrupt { file, offset, what }) => (file, offset, what),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(log) => panic!("opened a damaged log: {:?}", indexes(&log)),
    }
}

#[test]
fn a_flipped_byte_mid_segment_fails_the_open_and_drops_nothing() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    log.append(&batch(1, 5)).unwrap();
    let seg = log.segment_paths()[0].clone();
    drop(log);
    // A payload byte of record 2.
    let second = SEGMENT_HEADER + (RECORD_HEADER + 7) + RECORD_HEADER + 1;
    let byte = disk.read(&seg).unwrap()[second];
    disk.corrupt(&seg, second, &[byte ^ 0x10]);
    let (file, offset, what) = corrupt_open(&disk);
    assert_eq!(file, seg);
    assert_eq!(offset, (SEGMENT_HEADER + RECORD_HEADER + 7) as u64);
    assert!(what.contains("record 2"), "{what}");
    let msg = open(&disk, opts()).err().unwrap().to_string();
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains("at byte"),
        "{msg}"
    );
    // The file was not cut: repairing the byte brings every record back.
    disk.corrupt(&seg, second, &[byte]);
    assert_eq!(indexes(&open(&disk, opts()).unwrap()), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_damaged_length_field_is_corruption_not_a_torn_tail() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    log.append(&batch(1, 3)).unwrap();
    let seg = log.segment_paths()[0].clone();
    drop(log);
    // Record 1's length made huge (as if it ran past the end), then made slightly off.
    for len in [0x7fff_0000u32, 8] {
        let orig = disk.read(&seg).unwrap()[SEGMENT_HEADER..SEGMENT_HEADER + 4].to_vec();
        disk.corrupt(&seg, SEGMENT_HEADER, &len.to_le_bytes());
        let (_, offset, what) = corrupt_open(&disk);
        assert_eq!(offset, SEGMENT_HEADER as u64, "{what}");
        disk.corrupt(&seg, SEGMENT_HEADER, &orig);
    }
    assert_eq!(indexes(&open(&disk, opts()).unwrap()), vec![1, 2, 3]);
}

#[test]
fn damage_in_an_earlier_segment_a_bad_header_or_a_gap_is_corruption() {
    let small = LogOptions {
        segment_bytes: 40,
        min_free_bytes: 0,
    };
    let disk = CrashDisk::new();
    let mut log = open(&disk, small.clone()).unwrap();
    for i in 1..=4 {
        log.append(&batch(i, 1)).unwrap();
    }
    let segs = log.segment_paths();
    drop(log);
    // A cut at the end of a segment that is not the last: would be torn if it were the last.
    let len = disk.read(&segs[0]).unwrap().len();
    let whole = disk.read(&segs[0]).unwrap();
    disk.cut(&segs[0], len - 2);
    let (file, _, what) = corrupt_open(&disk);
    assert_eq!(file, segs[0]);
    assert!(what.contains("not the last"), "{what}");
    disk.put_durable(&segs[0], &whole);
    // A bad magic.
    disk.corrupt(&segs[1], 0, b"X");
    let (file, offset, what) = corrupt_open(&disk);
    assert_eq!((file, offset), (segs[1].clone(), 0));
    assert!(what.contains("magic"), "{what}");
    disk.corrupt(&segs[1], 0, b"R");
    // A missing segment in the middle.
    disk.remove(&segs[1]).unwrap();
    let (file, _, what) = corrupt_open(&disk);
    assert_eq!(file, segs[2]);
    assert!(what.contains("missing"), "{what}");
}

#[test]
fn the_vote_is_old_or_new_after_a_crash_at_every_step() {
    let old = Vote {
        term: 3,
        voted_for: Some(1),
    };
    let new = Vote {
        term: 4,
        voted_for: Some(2),
    };
    for step in 1.. {
        for torn in [0, 7, usize::MAX] {
            let disk = CrashDisk::new();
            let mut log = open(&disk, opts()).unwrap();
            log.save_vote(old).unwrap();
            disk.fail_after(step);
            let saved = log.save_vote(new).is_ok();
            disk.crash(torn);
            drop(log);
            let log = open(&disk, opts()).unwrap();
            let got = log.hard_state().vote;
            if saved {
                assert_eq!(got, new, "a save that returned is durable");
            } else {
                assert!(got == old || got == new, "step {step}: {got:?}");
            }
            if saved && torn == usize::MAX {
                return;
            }
        }
        assert!(step < 20, "a save takes a handful of steps");
    }
}

#[test]
fn the_committed_index_survives_reopen_beside_the_vote() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    let vote = Vote {
        term: 2,
        voted_for: None,
    };
    log.save_vote(vote).unwrap();
    log.save_committed(Some((7, 2))).unwrap();
    disk.crash(0);
    drop(log);
    let hs = open(&disk, opts()).unwrap().hard_state();
    assert_eq!(hs.vote, vote);
    assert_eq!(hs.committed, Some((7, 2)));
    // A damaged vote file is not taken for "never voted".
    disk.corrupt(&Path::new(DIR).join(hardstate::FILE), 13, b"\xff");
    assert!(matches!(open(&disk, opts()), Err(LogError::Corrupt { .. })));
}

#[test]
fn a_batch_that_would_pass_the_free_space_margin_is_refused_and_space_coming_back_is_used() {
    let disk = CrashDisk::new();
    let margin = LogOptions {
        segment_bytes: 1 << 20,
        min_free_bytes: 1000,
    };
    let mut log = open(&disk, margin.clone()).unwrap();
    log.append(&batch(1, 1)).unwrap();
    let size = log.size();
    let big: Vec<_> = (2..12).map(|i| rec(i, 1, &"x".repeat(100))).collect();
    // Above the margin now, but not once the batch is written.
    disk.set_free(Some(1500));
    match log.append(&big) {
        Err(LogError::NoSpace { free, needed }) => {
            assert_eq!(free, 1500);
            assert!(needed > 1000 + 10 * 100, "{needed}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.size(), size, "nothing was written");
    // Space returns: the same batch goes in (no sticky refusal).
    disk.set_free(Some(10_000));
    log.append(&big).unwrap();
    assert_eq!(log.last(), Some((11, 1)));
}

#[test]
fn a_log_on_a_full_disk_opens_and_reads_and_refuses_appends() {
    let disk = CrashDisk::new();
    let mut log = open(&disk, opts()).unwrap();
    log.append(&batch(1, 3)).unwrap();
    drop(log);
    disk.set_free(Some(0));
    let margin = LogOptions {
        min_free_bytes: 1,
        ..opts()
    };
    let mut log = open(&disk, margin).unwrap();
    assert_eq!(log.read(2..=3).unwrap(), batch(2, 2));
    assert!(matches!(
        log.append(&batch(4, 1)),
        Err(LogError::NoSpace { .. })
    ));
}

#[test]
fn truncation_and_purging_survive_a_power_cut() {
    let small = LogOptions {
        segment_bytes: 100,
        min_free_bytes: 0,
    };
    let disk = CrashDisk::new();
    let mut log = open(&disk, small.clone()).unwrap();
    for i in 1..=10 {
        log.append(&batch(i, 1)).unwrap();
    }
    log.truncate_after(6).unwrap();
    log.append(&[rec(7, 2, "after conflict")]).unwrap();
    log.purge_upto(4).unwrap();
    let first = log.first_index().unwrap();
    assert!(first <= 5 && first > 1, "{first}");
    disk.crash(0);
    drop(log);
    let log = open(&disk, small).unwrap();
    assert_eq!(log.first_index(), Some(first));
    assert_eq!(log.last(), Some((7, 2)));
    assert_eq!(log.read(7..=7).unwrap()[0].payload, b"after conflict");
    // Appending below the end is refused: conflicts go through truncate_after.
    let mut log = log;
    assert!(matches!(
        log.append(&[rec(5, 2, "x")]),
        Err(LogError::Invalid(_))
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    TruncateBack(u64),
    Purge(u64),
    Crash(usize),
    FailedAppend(Vec<usize>, u64, usize),
    /// Truncation or purging (`bool`: purge) cut short by a crash at its n-th step.
    FailedCut(bool, u64, u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..40, 1..5).prop_map(Op::Append),
        1 => (0u64..6).prop_map(Op::TruncateBack),
        1 => (0u64..30).prop_map(Op::Purge),
        1 => (0usize..80).prop_map(Op::Crash),
        1 => (prop::collection::vec(0usize..40, 1..4), 1u64..6, 0usize..120)
            .prop_map(|(s, f, t)| Op::FailedAppend(s, f, t)),
        1 => (any::<bool>(), 0u64..30, 1u64..5, 0usize..120)
            .prop_map(|(p, k, f, t)| Op::FailedCut(p, k, f, t)),
    ]
}

fn payload(index: u64, term: u64, size: usize) -> StoredRecord {
    StoredRecord {
        index,
        term,
        payload: (0..size).map(|i| (index as usize * 31 + i) as u8).collect(),
    }
}

/// The log holds a suffix of the model that covers everything above the purge floor.
fn check(log: &RaftLog, model: &[StoredRecord], floor: u64) {
    let got = log.read_all().unwrap();
    let start = got.first().map_or(model.len(), |r| (r.index - 1) as usize);
    assert_eq!(got[..], model[start.min(model.len())..]);
    assert!(
        start as u64 <= floor,
        "entries above the purge floor {floor} are missing"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_appends_truncations_purges_and_crashes_match_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let disk = CrashDisk::new();
        let small = LogOptions { segment_bytes: 150, min_free_bytes: 0 };
        let mut log = open(&disk, small.clone()).unwrap();
        let mut model: Vec<StoredRecord> = Vec::new();
        let mut term = 1;
        let mut floor = 0;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let next = model.len() as u64 + 1;
                    let b: Vec<_> = sizes.iter().enumerate().map(|(i, s)| payload(next + i as u64, term, *s)).collect();
                    log.append(&b).unwrap();
                    model.extend(b);
                }
                Op::TruncateBack(back) => {
                    let to = (model.len() as u64).saturating_sub(back);
                    log.truncate_after(to).unwrap();
                    model.truncate(to as usize);
                    floor = floor.min(to);
                    term += 1;
                }
                Op::Purge(k) => {
                    let k = k.min(model.len() as u64);
                    log.purge_upto(k).unwrap();
                    floor = floor.max(k);
                }
                Op::Crash(torn) => {
                    disk.crash(torn);
                    drop(log);
                    log = open(&disk, small.clone()).unwrap();
                }
                Op::FailedAppend(sizes, fail_at, torn) => {
                    let next = model.len() as u64 + 1;
                    let b: Vec<_> = sizes.iter().enumerate().map(|(i, s)| payload(next + i as u64, term, *s)).collect();
                    disk.fail_after(fail_at);
                    let ok = log.append(&b).is_ok();
                    disk.crash(torn);
                    drop(log);
                    log = open(&disk, small.clone()).unwrap();
                    let got = log.read_all().unwrap();
                    let extra = got.iter().filter(|r| r.index >= next).count();
                    if ok {
                        prop_assert_eq!(extra, b.len(), "an acknowledged batch survives");
                    }
                    // Only whole records of the failed batch, in order, from its start.
                    model.extend(b.into_iter().take(extra));
                }
                Op::FailedCut(purge, k, fail_at, torn) => {
                    let k = k.min(model.len() as u64);
                    disk.fail_after(fail_at);
                    let ok = if purge { log.purge_upto(k).is_ok() } else { log.truncate_after(k).is_ok() };
                    disk.crash(torn);
                    drop(log);
                    // Whatever step the crash hit, the log opens: no gap, no damage.
                    log = open(&disk, small.clone()).unwrap();
                    if purge {
                        floor = floor.max(k);
                    } else {
                        match log.last() {
                            Some((last, _)) => {
                                prop_assert!(last >= k, "truncation removed entries at or below {}", k);
                                if ok {
                                    prop_assert_eq!(last, k.min(model.len() as u64), "a truncation that returned is durable");
                                }
                                // The log now ends somewhere between k and the old end.
                                model.truncate(last as usize);
                            }
                            None => {
                                // Nothing above k was left, and what was at or below it had been purged.
                                prop_assert!(k <= floor);
                                model.truncate(k as usize);
                            }
                        }
                        floor = floor.min(model.len() as u64);
                        term += 1;
                    }
                }
            }
            check(&log, &model, floor);
        }
    }
}

#[test]
fn on_the_real_disk_segments_roll_reopen_and_a_torn_tail_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let small = LogOptions {
        segment_bytes: 100,
        min_free_bytes: 0,
    };
    let mut log = RaftLog::open(Arc::new(RealDisk), &dir, small.clone()).unwrap();
    for i in 1..=6 {
        log.append(&batch(i, 1)).unwrap();
    }
    log.truncate_after(5).unwrap();
    let segs = log.segment_paths();
    assert!(segs.len() >= 2);
    drop(log);
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let mut log = RaftLog::open(Arc::new(RealDisk), &dir, small.clone()).unwrap();
    assert_eq!(indexes(&log), vec![1, 2, 3, 4]);
    log.append(&[rec(5, 1, "again")]).unwrap();
    drop(log);
    let log = RaftLog::open(Arc::new(RealDisk), &dir, small).unwrap();
    assert_eq!(log.read(5..=5).unwrap(), vec![rec(5, 1, "again")]);
}
