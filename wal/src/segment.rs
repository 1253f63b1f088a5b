//! Segment files: a header (`SKEINWAL`, format version, first sequence number) and frames.
//!
//! Scanning a segment finds its longest valid prefix and says how it ends: cleanly, with a torn
//! tail (a cut-short or zeroed last record, after which nothing valid follows), or with
//! corruption (a bad frame followed by valid ones).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io};
use crate::frame::{self, Decoded, HEADER_BYTES};

/// Magic bytes at the start of every segment.
pub const MAGIC: &[u8; 8] = b"SKEINWAL";
/// Format version written by this code.
pub const VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 20;

/// The header bytes of a segment whose first record is `first_seq`.
pub fn header(first_seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// File name of the segment starting at `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// The segments in `dir`, by first sequence number.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// How a segment's valid prefix ends.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a valid record.
    Clean,
    /// The last record is cut short or garbage, and nothing valid follows.
    Torn {
        /// Where the valid prefix ends.
        offset: usize,
    },
    /// A bad frame with a valid record somewhere after it.
    Corrupt {
        /// Where the bad frame starts.
        offset: usize,
        /// Where the next valid record starts.
        resume: usize,
    },
}

/// One record found by a scan.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Sequence number.
    pub seq: u64,
    /// Offset of the frame in the segment.
    pub offset: usize,
    /// Offset and length of the payload.
    pub payload: std::ops::Range<usize>,
}

/// Checks the header of segment `path` (contents `buf`).
pub fn check_header(path: &Path, buf: &[u8]) -> Result<u64> {
    if buf.len() < SEGMENT_HEADER_BYTES || &buf[..8] != MAGIC {
        return Err(Error::BadSegmentHeader {
            segment: path.to_path_buf(),
            version: 0,
        });
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != VERSION {
        return Err(Error::BadSegmentHeader {
            segment: path.to_path_buf(),
            version,
        });
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&buf[12..20]);
    Ok(u64::from_le_bytes(first))
}

/// A valid frame at or after `from` whose sequence number is above `after`.
fn next_valid(buf: &[u8], from: usize, after: u64) -> Option<usize> {
    (from..buf.len().saturating_sub(HEADER_BYTES - 1))
        .find(|&at| matches!(frame::decode(&buf[at..]), Decoded::Record { seq, .. } if seq > after))
}

/// Scans the frames of a segment body starting at `start`, stopping at the first bad frame.
/// `last_seq` is the sequence number before this segment's first record.
pub fn scan(buf: &[u8], start: usize, mut last_seq: u64) -> (Vec<Found>, End) {
    let mut found = Vec::new();
    let mut at = start;
    while at < buf.len() {
        match frame::decode(&buf[at..]) {
            Decoded::Record { seq, payload, len } if seq > last_seq => {
                let from = at + HEADER_BYTES;
                found.push(Found {
                    seq,
                    offset: at,
                    payload: from..from + payload.len(),
                });
                last_seq = seq;
                at += len;
            }
            _ => {
                let end = match next_valid(buf, at + 1, last_seq) {
                    Some(resume) => End::Corrupt { offset: at, resume },
                    None => End::Torn { offset: at },
                };
                return (found, end);
            }
        }
    }
    (found, End::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut buf = header(records.first().map_or(1, |r| r.0)).to_vec();
        for (seq, p) in records {
            frame::encode(*seq, p, &mut buf);
        }
        buf
    }

    #[test]
    fn every_truncation_recovers_the_longest_valid_prefix() {
        let records: Vec<(u64, Vec<u8>)> = (1..=20u64)
            .map(|s| (s, vec![s as u8; (s * 7) as usize]))
            .collect();
        let refs: Vec<(u64, &[u8])> = records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        let full = body(&refs);
        // Frame boundaries: a prefix holds the records whose frames end within it.
        let mut ends = Vec::new();
        let mut at = SEGMENT_HEADER_BYTES;
        for (_, p) in &records {
            at += HEADER_BYTES + p.len();
            ends.push(at);
        }
        for cut in SEGMENT_HEADER_BYTES..=full.len() {
            let (found, end) = scan(&full[..cut], SEGMENT_HEADER_BYTES, 0);
            let expect = ends.iter().filter(|e| **e <= cut).count();
            assert_eq!(found.len(), expect, "cut at {cut}");
            let valid_end = if expect == 0 {
                SEGMENT_HEADER_BYTES
            } else {
                ends[expect - 1]
            };
            if cut == valid_end {
                assert_eq!(end, End::Clean, "cut at {cut}");
            } else {
                assert_eq!(end, End::Torn { offset: valid_end }, "cut at {cut}");
            }
        }
    }

    #[test]
    fn zeroed_tail_is_torn_and_mid_log_damage_is_corrupt() {
        let full = body(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        let mut zeroed = full.clone();
        zeroed.extend_from_slice(&[0u8; 64]);
        let (found, end) = scan(&zeroed, SEGMENT_HEADER_BYTES, 0);
        assert_eq!(found.len(), 3);
        assert_eq!(end, End::Torn { offset: full.len() });

        let mut damaged = full.clone();
        let second = SEGMENT_HEADER_BYTES + HEADER_BYTES + 3;
        damaged[second + HEADER_BYTES] ^= 0xff; // a payload byte of record 2
        let (found, end) = scan(&damaged, SEGMENT_HEADER_BYTES, 0);
        assert_eq!(found.len(), 1);
        let third = second + HEADER_BYTES + 3;
        assert_eq!(
            end,
            End::Corrupt {
                offset: second,
                resume: third
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn damaged_segments_yield_only_records_that_were_written(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..20),
            flips in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..4),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let records: Vec<(u64, &[u8])> = payloads.iter().enumerate().map(|(i, p)| (i as u64 + 1, p.as_slice())).collect();
            let mut buf = body(&records);
            for f in &flips {
                let at = SEGMENT_HEADER_BYTES * 8 + f.index((buf.len() - SEGMENT_HEADER_BYTES) * 8);
                buf[at / 8] ^= 1 << (at % 8);
            }
            buf.extend_from_slice(&tail);
            let mut start = SEGMENT_HEADER_BYTES;
            let mut last = 0;
            loop {
                let (found, end) = scan(&buf, start, last);
                for f in &found {
                    // Every record found is one that was written, at its sequence number.
                    let written = records.iter().find(|(seq, _)| *seq == f.seq);
                    proptest::prop_assert!(written.is_some_and(|(_, p)| *p == &buf[f.payload.clone()]));
                    proptest::prop_assert!(f.seq > last);
                    last = f.seq;
                }
                match end {
                    End::Corrupt { resume, .. } => start = resume,
                    End::Clean | End::Torn { .. } => break,
                }
            }
            if flips.is_empty() {
                proptest::prop_assert_eq!(last, records.len() as u64);
            }
        }
    }

    #[test]
    fn headers_are_checked() {
        let p = Path::new("x.wal");
        assert_eq!(check_header(p, &header(42)).expect("valid"), 42);
        assert!(check_header(p, b"SKEINWAX\x01\0\0\0").is_err());
        let mut other = header(1);
        other[8] = 9;
        assert!(matches!(
            check_header(p, &other),
            Err(Error::BadSegmentHeader { version: 9, .. })
        ));
    }
}
