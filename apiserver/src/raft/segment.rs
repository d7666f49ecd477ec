//! The segment file format: a header, then records; and the scan that tells a torn tail from
//! corruption.
//!
//! Segment `<first index, 20 digits>.seg`:
//! `magic "RUDDRLOG" | version: u32 LE (1) | first index: u64 LE | crc32(previous 20 bytes): u32 LE`.
//! A segment is written under a `.tmp` name, synced, and only then renamed into place (and the
//! directory synced), so a segment under its final name always has a whole header: a bad header
//! is corruption, never a torn write.
//!
//! Record: `len: u32 | index: u64 | term: u64 | hcrc: u32 | crc: u32 | payload (len bytes)`, all
//! LE, where `hcrc` = crc32 of `len|index|term` and `crc` = crc32 of `len|index|term|payload`. The
//! main checksum covers the length, so a damaged length is caught; the header checksum lets a
//! damaged length be told from a record cut short (a trusted length pointing past the end of the
//! file means the file is short; an untrusted one proves nothing).
//!
//! Scanning, at each record with the next expected index (see [`scan`]): the tail from a record
//! on is **torn** (the remains of the last, never-acknowledged write) only when it cannot hold
//! anything written later: fewer bytes than a header; a header whose checksum fails and nothing
//! but zeros from there on; a valid header whose record runs past the end of the file; a whole
//! record whose checksum fails with nothing but zeros after it. Anything else (a bad checksum
//! with data after it, an index out of sequence, a term going down) is **corruption**. Only the
//! last segment may have a torn tail; the caller treats one anywhere else as corruption.

/// Segment header bytes.
pub const SEGMENT_HEADER: usize = 24;
/// Record header bytes.
pub const RECORD_HEADER: usize = 28;
pub const MAGIC: &[u8; 8] = b"RUDDRLOG";
pub const VERSION: u32 = 1;
/// Suffix of a segment's file name.
pub const SUFFIX: &str = ".seg";

pub fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The first index a segment's file name says it starts at.
pub fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

pub fn encode_header(first: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0; SEGMENT_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks a segment's header against the first index its name gives; `Err(what is wrong)`.
pub fn check_header(data: &[u8], first: u64) -> Result<(), String> {
    if data.len() < SEGMENT_HEADER {
        return Err(format!(
            "the segment header is cut short ({} of {SEGMENT_HEADER} bytes)",
            data.len()
        ));
    }
    if &data[..8] != MAGIC {
        return Err(format!(
            "not a log segment of this format (magic {:?}, expected {:?})",
            String::from_utf8_lossy(&data[..8]),
            String::from_utf8_lossy(MAGIC)
        ));
    }
    if crc32fast::hash(&data[..20]) != u32_at(data, 20) {
        return Err("the segment header's checksum does not match".into());
    }
    let version = u32_at(data, 8);
    if version != VERSION {
        return Err(format!(
            "segment format version {version}; this build reads version {VERSION}"
        ));
    }
    let named = u64_at(data, 12);
    if named != first {
        return Err(format!(
            "the header says the segment starts at index {named}, its name says {first}"
        ));
    }
    Ok(())
}

/// Appends one record to `out`; `payload` writes the payload bytes.
pub fn encode_record(out: &mut Vec<u8>, index: u64, term: u64, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    payload(out);
    let len = (out.len() - start - RECORD_HEADER) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 12].copy_from_slice(&index.to_le_bytes());
    out[start + 12..start + 20].copy_from_slice(&term.to_le_bytes());
    let hcrc = crc32fast::hash(&out[start..start + 20]);
    out[start + 20..start + 24].copy_from_slice(&hcrc.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 20]);
    h.update(&out[start + RECORD_HEADER..]);
    let crc = h.finalize();
    out[start + 24..start + 28].copy_from_slice(&crc.to_le_bytes());
}

/// Where a record lies in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    pub index: u64,
    pub term: u64,
    /// Offset of the record's header in the file.
    pub offset: u64,
    pub len: u32,
}

impl RecordPos {
    pub fn payload(&self) -> std::ops::Range<usize> {
        let start = self.offset as usize + RECORD_HEADER;
        start..start + self.len as usize
    }
}

/// How a segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    Clean,
    /// The bytes from `at` on are the remains of an unfinished write.
    Torn {
        at: u64,
        what: String,
    },
    /// The bytes at `at` are damaged.
    Corrupt {
        at: u64,
        what: String,
    },
}

/// What a scan found.
pub struct Scanned {
    pub records: Vec<RecordPos>,
    /// Bytes up to the end of the last good record.
    pub good_len: u64,
    pub tail: Tail,
}

fn zeros(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Scans the records of a segment (header already checked) that starts at index `first`, whose
/// records' terms must not be below `min_term`.
pub fn scan(data: &[u8], first: u64, min_term: u64) -> Scanned {
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER;
    let mut next = first;
    let mut term_floor = min_term;
    let tail = loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        let at = pos as u64;
        if rest.len() < RECORD_HEADER {
            break Tail::Torn {
                at,
                what: format!("a record header cut short ({} bytes)", rest.len()),
            };
        }
        let len = u32_at(rest, 0);
        if crc32fast::hash(&rest[..20]) != u32_at(rest, 20) {
            break if zeros(rest) {
                Tail::Torn {
                    at,
                    what: "zeros where the next record would start".into(),
                }
            } else {
                Tail::Corrupt {
                    at,
                    what:
                        "a record header's checksum does not match (length, index or term damaged)"
                            .into(),
                }
            };
        }
        let index = u64_at(rest, 4);
        let term = u64_at(rest, 12);
        if index != next {
            break Tail::Corrupt {
                at,
                what: format!("a record has index {index} where {next} was expected"),
            };
        }
        if term < term_floor {
            break Tail::Corrupt {
                at,
                what: format!(
                    "record {index} has term {term}, below the previous term {term_floor}"
                ),
            };
        }
        let end = RECORD_HEADER + len as usize;
        if rest.len() < end {
            break Tail::Torn {
                at,
                what: format!("record {index} cut short ({} of {end} bytes)", rest.len()),
            };
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[..20]);
        h.update(&rest[RECORD_HEADER..end]);
        if h.finalize() != u32_at(rest, 24) {
            break if zeros(&rest[end..]) {
                Tail::Torn {
                    at,
                    what: format!("the final record ({index}) does not match its checksum"),
                }
            } else {
                Tail::Corrupt {
                    at,
                    what: format!("record {index} does not match its checksum"),
                }
            };
        }
        records.push(RecordPos {
            index,
            term,
            offset: at,
            len,
        });
        next += 1;
        term_floor = term;
        pos += end;
    };
    let good_len = records.last().map_or(SEGMENT_HEADER as u64, |r| {
        r.offset + (RECORD_HEADER as u64) + u64::from(r.len)
    });
    Scanned {
        records,
        good_len,
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> Vec<u8> {
        let mut out = encode_header(1).to_vec();
        for i in 1..=n {
            encode_record(&mut out, i, 1, |o| o.extend_from_slice(b"payload"));
        }
        out
    }

    #[test]
    fn records_scan_back_in_order() {
        let data = segment(3);
        let s = scan(&data, 1, 0);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.records.len(), 3);
        assert_eq!(&data[s.records[2].payload()], b"payload");
        assert_eq!(s.good_len, data.len() as u64);
    }

    #[test]
    fn only_damage_that_reaches_the_end_is_torn() {
        let data = segment(3);
        let rec = RECORD_HEADER + 7;
        // Cut anywhere inside the last record: torn, two records kept.
        for cut in data.len() - rec + 1..data.len() {
            let s = scan(&data[..cut], 1, 0);
            assert!(matches!(s.tail, Tail::Torn { .. }), "cut at {cut}");
            assert_eq!(s.records.len(), 2);
        }
        // A flipped payload byte in the final record: torn (indistinguishable from a torn write).
        let mut d = data.clone();
        let n = d.len();
        d[n - 1] ^= 1;
        assert!(matches!(scan(&d, 1, 0).tail, Tail::Torn { .. }));
        // The same in the first record, with records after it: corruption.
        let mut d = data.clone();
        d[SEGMENT_HEADER + RECORD_HEADER] ^= 1;
        assert!(
            matches!(scan(&d, 1, 0).tail, Tail::Corrupt { at, .. } if at == SEGMENT_HEADER as u64)
        );
        // A length field damaged so that the record seems to run past the end: the header
        // checksum proves it damaged, so corruption, not a torn tail.
        let mut d = data.clone();
        d[SEGMENT_HEADER + 2] = 0x7f;
        assert!(matches!(scan(&d, 1, 0).tail, Tail::Corrupt { .. }));
        // Zeros after the last record (an extended but unwritten file): torn.
        let mut d = data.clone();
        d.extend_from_slice(&[0; 100]);
        let s = scan(&d, 1, 0);
        assert!(matches!(s.tail, Tail::Torn { .. }));
        assert_eq!(s.records.len(), 3);
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header(&encode_header(5), 5).is_ok());
        assert!(
            check_header(&encode_header(5), 6)
                .unwrap_err()
                .contains("its name says 6")
        );
        let mut h = encode_header(5);
        h[0] = b'X';
        assert!(check_header(&h, 5).unwrap_err().contains("magic"));
        let mut h = encode_header(5);
        h[8] = 2;
        assert!(check_header(&h, 5).unwrap_err().contains("checksum"));
        assert!(check_header(&h[..10], 5).unwrap_err().contains("cut short"));
        assert_eq!(parse_name(&segment_name(42)), Some(42));
        assert_eq!(parse_name("42.seg"), None);
    }
}
