//! Tests of the log against a real directory.

use std::path::Path;
use std::sync::Arc;

use crate::Error;
use crate::log::{RecoveryMode, SyncMode, Wal, WalConfig};
use crate::segment;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        ..WalConfig::default()
    }
}

type Replayed = Vec<(u64, Vec<u8>)>;

fn reopen(dir: &Path, config: WalConfig, after: u64) -> crate::Result<(Wal, Replayed)> {
    let mut seen = Vec::new();
    let (wal, _) = Wal::open(dir, config, after, |seq, p| {
        seen.push((seq, p.to_vec()));
        Ok(())
    })?;
    Ok((wal, seen))
}

#[test]
fn appends_replay_in_order_once_and_after_a_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, seen) = reopen(dir.path(), config(), 0).expect("open");
    assert!(seen.is_empty());
    for i in 0..100u64 {
        assert_eq!(
            wal.append(format!("record {i} {}", "x".repeat(100)).into_bytes())
                .expect("append"),
            i + 1
        );
    }
    assert!(wal.segment_count() > 2, "segments roll at 4 KiB");
    drop(wal);
    let (wal, seen) = reopen(dir.path(), config(), 0).expect("reopen");
    assert_eq!(seen.len(), 100);
    for (i, (seq, p)) in seen.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(p, format!("record {i} {}", "x".repeat(100)).as_bytes());
    }
    // New records continue the numbering.
    assert_eq!(wal.append(b"more".to_vec()).expect("append"), 101);
    drop(wal);
    let (_, seen) = reopen(dir.path(), config(), 60).expect("reopen after 60");
    assert_eq!(seen.first().map(|s| s.0), Some(61));
    assert_eq!(seen.len(), 41);
}

#[test]
fn truncate_removes_only_flushed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), config(), 0).expect("open");
    for i in 0..200u64 {
        wal.append(vec![i as u8; 100]).expect("append");
    }
    let before = wal.segment_count();
    wal.truncate(120).expect("truncate");
    assert!(wal.segment_count() < before);
    drop(wal);
    let (_, seen) = reopen(dir.path(), config(), 120).expect("reopen");
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        (121..=200).collect::<Vec<_>>()
    );
    // Nothing at or below the truncation point is lost that was not flushed: records 121.. remain,
    // and some before it may remain too (whole segments only).
    let (_, all) = reopen(dir.path(), config(), 0).expect("reopen all");
    assert!(all.first().map(|s| s.0).unwrap_or(0) <= 121);
}

#[test]
fn concurrent_writers_share_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(
        dir.path(),
        WalConfig {
            segment_bytes: 1 << 20,
            ..WalConfig::default()
        },
        0,
    )
    .expect("open");
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| wal.append(format!("{t}:{i}").into_bytes()).expect("append"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("join"))
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    drop(wal);
    let (_, seen) = reopen(dir.path(), config(), 0).expect("reopen");
    assert_eq!(seen.len(), 400);
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segment::list(dir)
        .expect("list")
        .into_iter()
        .rfind(|(_, p)| std::fs::metadata(p).map(|m| m.len() > 20).unwrap_or(false))
        .expect("segment")
        .1
}

#[test]
fn torn_tail_is_truncated_and_mid_log_corruption_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(
        dir.path(),
        WalConfig {
            segment_bytes: 1 << 20,
            ..config()
        },
        0,
    )
    .expect("open");
    for i in 0..10u64 {
        wal.append(vec![i as u8; 50]).expect("append");
    }
    drop(wal);
    let seg = last_segment(dir.path());
    // Cut the last record short.
    let len = std::fs::metadata(&seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 10)
        .expect("cut");
    let (wal, seen) = reopen(dir.path(), config(), 0).expect("torn tail is fine");
    assert_eq!(seen.len(), 9);
    drop(wal);

    // Damage a record in the middle: refuse, naming the segment and offset.
    let mut bytes = std::fs::read(&seg).expect("read");
    let offset = 20 + 3 * (16 + 50) + 16 + 5;
    bytes[offset] ^= 0x55;
    std::fs::write(&seg, &bytes).expect("write");
    let err = reopen(dir.path(), config(), 0).expect_err("corrupt");
    match &err {
        Error::CorruptRecord { segment, offset } => {
            assert_eq!(segment, &seg);
            assert_eq!(*offset, (20 + 3 * (16 + 50)) as u64);
        }
        other => panic!("unexpected {other}"),
    }
    // Skipping is explicit, and drops exactly the damaged record.
    let skip = WalConfig {
        recovery: RecoveryMode::SkipCorrupt,
        ..config()
    };
    let mut seen = Vec::new();
    let (_, recovery) = Wal::open(dir.path(), skip, 0, |s, _| {
        seen.push(s);
        Ok(())
    })
    .expect("skip");
    assert_eq!(seen, vec![1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(recovery.skipped.len(), 1);
}

#[test]
fn unsynced_mode_still_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = WalConfig {
        sync: SyncMode::None,
        ..config()
    };
    let (wal, _) = reopen(dir.path(), cfg.clone(), 0).expect("open");
    wal.append(b"x".to_vec()).expect("append");
    drop(wal);
    let (_, seen) = reopen(dir.path(), cfg, 0).expect("reopen");
    assert_eq!(seen, vec![(1, b"x".to_vec())]);
}

#[test]
fn numbering_never_repeats_after_truncation_or_a_lost_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), config(), 0).expect("open");
    for i in 0..50u64 {
        wal.append(vec![i as u8; 100]).expect("append");
    }
    assert_eq!(wal.last_seq(), 50);
    wal.truncate(50).expect("truncate");
    drop(wal);
    // Reopening leaves only empty segments, whose headers still carry the numbering.
    let (wal, seen) = reopen(dir.path(), config(), 50).expect("reopen");
    assert!(seen.is_empty());
    assert_eq!(wal.append(b"next".to_vec()).expect("append"), 51);
    drop(wal);
    // With the directory gone, the floor given by the caller holds.
    let empty = tempfile::tempdir().expect("tempdir");
    let floor = WalConfig {
        min_last_seq: 51,
        ..config()
    };
    let (wal, _) = reopen(empty.path(), floor, 51).expect("open empty");
    assert_eq!(wal.last_seq(), 51);
    assert_eq!(wal.append(b"after".to_vec()).expect("append"), 52);
}

#[derive(Debug, Default)]
struct Counting {
    records: std::sync::atomic::AtomicUsize,
    groups: std::sync::atomic::AtomicUsize,
    synced: std::sync::atomic::AtomicUsize,
}

impl crate::Observer for Counting {
    fn group_written(&self, records: usize, _bytes: usize, sync: Option<std::time::Duration>) {
        use std::sync::atomic::Ordering::SeqCst;
        self.records.fetch_add(records, SeqCst);
        self.groups.fetch_add(1, SeqCst);
        if sync.is_some() {
            self.synced.fetch_add(1, SeqCst);
        }
    }
}

#[test]
fn the_observer_sees_every_record_and_sync() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().expect("tempdir");
    let counting = Arc::new(Counting::default());
    let observed = WalConfig {
        observer: Some(counting.clone()),
        ..config()
    };
    let (wal, _) = reopen(dir.path(), observed, 0).expect("open");
    for i in 0..20u64 {
        wal.append(vec![i as u8; 10]).expect("append");
    }
    assert_eq!(counting.records.load(SeqCst), 20);
    // Appends one after another are never grouped.
    assert_eq!(counting.groups.load(SeqCst), 20);
    assert_eq!(counting.synced.load(SeqCst), 20);
}

#[test]
fn reopening_on_an_empty_last_segment_never_truncates_the_live_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), config(), 0).expect("open");
    for i in 0..5u64 {
        wal.append(vec![i as u8; 10]).expect("append");
    }
    drop(wal);
    // A restart that writes nothing leaves an empty last segment (first record 6) behind.
    let (wal, _) = reopen(dir.path(), config(), 0).expect("reopen without writes");
    drop(wal);
    // The next start recreates that same segment and writes into it.
    let (wal, _) = reopen(dir.path(), config(), 0).expect("reopen");
    for i in 5..8u64 {
        assert_eq!(wal.append(vec![i as u8; 10]).expect("append"), i + 1);
    }
    // Records 1..=5 are flushed: their segment goes, the live one must stay.
    wal.truncate(5).expect("truncate");
    drop(wal);
    let (_, seen) = reopen(dir.path(), config(), 5).expect("reopen after truncation");
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![6, 7, 8]);
}

#[test]
fn a_last_segment_without_its_header_is_a_torn_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = reopen(dir.path(), config(), 0).expect("open");
    for i in 0..3u64 {
        wal.append(vec![i as u8; 10]).expect("append");
    }
    drop(wal);
    // A roll that crashed after creating the file and before writing its whole header.
    std::fs::write(dir.path().join(segment::file_name(4)), b"SKEIN").expect("write");
    let (wal, seen) = reopen(dir.path(), config(), 0).expect("a torn roll is not corruption");
    assert_eq!(seen.len(), 3);
    assert_eq!(wal.append(b"next".to_vec()).expect("append"), 4);
}
