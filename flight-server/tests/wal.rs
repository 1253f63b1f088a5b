//! The node and its write-ahead log, in process: replay after a stop without flush, the flushed
//! position, damaged logs, and the buffer bound. Nodes here run without the server (and so
//! without the background flusher), so every flush happens when a test asks for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use skein_server::Config;
use skein_server::node::{Node, OnExists};
use skein_storage::ColumnMeta;
use tonic::Code;

fn config(dir: &Path) -> Config {
    Config::test_config(dir)
}

async fn open(config: Config) -> Arc<Node> {
    Node::open(config).await.expect("open node")
}

fn batch(from: i64, to: i64) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int64Array::from_iter_values(from..to)) as ArrayRef,
    )])
    .expect("batch")
}

async fn create(node: &Arc<Node>) {
    let columns = vec![ColumnMeta {
        name: "id".into(),
        sql_type: "BIGINT".into(),
        nullable: true,
    }];
    node.create_table("t", columns, OnExists::Fail)
        .await
        .expect("create");
}

async fn append(node: &Arc<Node>, from: i64, to: i64) -> skein_server::error::Result<u64> {
    let rt = node.table("t").expect("table");
    node.append(&rt, &batch(from, to)).await
}

/// (rows, distinct ids, sum of ids) of table t: an independent check of exactly-once.
fn summary(node: &Node) -> (i64, i64, i64) {
    let conn = node.base.engine.connect().expect("connect");
    conn.query_row(
        "SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0)::BIGINT FROM t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("query")
}

fn expected(ranges: &[(i64, i64)]) -> (i64, i64, i64) {
    let n: i64 = ranges.iter().map(|(a, b)| b - a).sum();
    let sum: i64 = ranges.iter().map(|(a, b)| (*a..*b).sum::<i64>()).sum();
    (n, n, sum)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_come_back_from_the_wal_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(config(dir.path())).await;
    create(&node).await;
    append(&node, 0, 1000).await.expect("append");
    node.flush_all().await.expect("flush");
    append(&node, 1000, 1500).await.expect("append");
    append(&node, 1500, 1600).await.expect("append");
    // Stop without flushing: 600 rows live only in the WAL.
    drop(node);
    let node = open(config(dir.path())).await;
    assert_eq!(summary(&node), expected(&[(0, 1600)]));
    assert_eq!(node.base.metrics.wal_replayed_records.get(), 2);
    // Again, after a flush of the replayed rows: nothing is replayed twice.
    node.flush_all().await.expect("flush");
    drop(node);
    let node = open(config(dir.path())).await;
    assert_eq!(summary(&node), expected(&[(0, 1600)]));
    assert_eq!(node.base.metrics.wal_replayed_records.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_not_resurrected_by_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(config(dir.path())).await;
    create(&node).await;
    append(&node, 0, 100).await.expect("append");
    node.drop_table("t", false).await.expect("drop");
    create(&node).await;
    append(&node, 500, 510).await.expect("append");
    drop(node);
    let node = open(config(dir.path())).await;
    assert_eq!(summary(&node), expected(&[(500, 510)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_truncated_once_rows_are_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.wal.wal_segment_bytes = 1024 * 1024;
    let node = open(cfg.clone()).await;
    create(&node).await;
    // ~8 MB of records: several segments.
    for i in 0..100 {
        append(&node, i * 10_000, (i + 1) * 10_000)
            .await
            .expect("append");
    }
    let before = segments(dir.path()).len();
    assert!(before > 3, "{before} segments");
    node.flush_all().await.expect("flush");
    let after = segments(dir.path()).len();
    assert!(after < before, "{after} segments left of {before}");
    drop(node);
    let node = open(cfg).await;
    assert_eq!(summary(&node), expected(&[(0, 1_000_000)]));
    assert_eq!(node.base.metrics.wal_replayed_records.get(), 0);
}

/// Writes three records and stops without flushing; returns the segment holding them.
async fn three_unflushed_records(dir: &Path) -> std::path::PathBuf {
    let node = open(config(dir)).await;
    create(&node).await;
    for (a, b) in [(0, 10), (10, 20), (20, 30)] {
        append(&node, a, b).await.expect("append");
    }
    drop(node);
    segments(dir)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a segment")
}

/// Byte offsets of the three records' frames in `segment` (found by their frame lengths).
fn frame_offsets(segment: &Path) -> Vec<usize> {
    let bytes = std::fs::read(segment).expect("read");
    let mut offsets = Vec::new();
    let mut at = skein_wal::segment::SEGMENT_HEADER_BYTES;
    while at < bytes.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += skein_wal::frame::HEADER_BYTES + len;
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = three_unflushed_records(dir.path()).await;
    let offsets = frame_offsets(&segment);
    assert_eq!(offsets.len(), 3);
    // The last record loses its last bytes, as in a crash mid-write.
    let len = std::fs::metadata(&segment).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open");
    file.set_len(len - 7).expect("truncate");
    drop(file);
    let node = open(config(dir.path())).await;
    assert_eq!(summary(&node), expected(&[(0, 20)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_mid_log_refuses_to_start_unless_told_to_skip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = three_unflushed_records(dir.path()).await;
    let offsets = frame_offsets(&segment);
    // Flip a payload byte of the second record.
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[offsets[1] + skein_wal::frame::HEADER_BYTES + 5] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");

    let err = Node::open(config(dir.path()))
        .await
        .expect_err("a corrupt WAL must stop the node");
    let message = err.to_string();
    assert!(
        message.contains(&segment.display().to_string())
            && message.contains(&format!("byte {}", offsets[1])),
        "the error names segment and offset: {message}"
    );
    assert!(message.contains("--wal-skip-corrupt"), "{message}");

    let mut skip = config(dir.path());
    skip.wal.wal_skip_corrupt = true;
    let node = open(skip).await;
    assert_eq!(summary(&node), expected(&[(0, 10), (20, 30)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_past_the_buffer_bound_wait_for_a_flush_then_give_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    let one = batch(0, 10_000).get_array_memory_size() as u64;
    cfg.wal.max_buffer_bytes = one * 2;
    cfg.wal.buffer_wait = Duration::from_secs(2);
    let node = open(cfg).await;
    create(&node).await;
    append(&node, 0, 10_000).await.expect("first");
    append(&node, 10_000, 20_000).await.expect("second");
    // Full: with no flush, the third writer waits and is then refused.
    let err = append(&node, 20_000, 30_000)
        .await
        .expect_err("past the bound");
    assert_eq!(tonic::Status::from(err).code(), Code::ResourceExhausted);
    assert_eq!(node.base.metrics.ingest_rejected.get(), 1);
    assert!(node.buffered_bytes() <= one * 2);
    // A waiting writer goes in once a flush frees space.
    let waiting = {
        let node = Arc::clone(&node);
        tokio::spawn(async move { append(&node, 30_000, 40_000).await })
    };
    while node.base.metrics.ingest_waits.get() < 2 {
        tokio::task::yield_now().await;
    }
    node.flush_all().await.expect("flush");
    waiting
        .await
        .expect("task")
        .expect("accepted after the flush");
    assert_eq!(summary(&node), expected(&[(0, 20_000), (30_000, 40_000)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_flushes_and_a_new_column_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(config(dir.path())).await;
    create(&node).await;
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            let node = Arc::clone(&node);
            tokio::spawn(async move {
                for i in 0..50i64 {
                    let from = (w * 50 + i) * 100;
                    append(&node, from, from + 100).await.expect("append");
                }
            })
        })
        .collect();
    let maintenance = {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            for round in 0..5 {
                node.flush_all().await.expect("flush");
                if round == 2 {
                    let mut columns = node
                        .base
                        .catalog
                        .snapshot()
                        .table("t")
                        .expect("meta")
                        .columns
                        .clone();
                    columns.push(ColumnMeta {
                        name: "extra".into(),
                        sql_type: "VARCHAR".into(),
                        nullable: true,
                    });
                    node.add_columns("t", columns).await.expect("add column");
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    maintenance.await.expect("maintenance");
    assert_eq!(node.writes_stopped(), None);
    assert_eq!(summary(&node), expected(&[(0, 20_000)]));
    drop(node);
    let node = open(config(dir.path())).await;
    assert_eq!(summary(&node), expected(&[(0, 20_000)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_abandoned_by_its_caller_still_completes_and_the_wal_still_truncates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.wal.wal_segment_bytes = 1024 * 1024;
    let node = open(cfg).await;
    create(&node).await;
    // The caller gives up while the append waits for the WAL (a client that disconnects).
    let abandoned = tokio::time::timeout(Duration::from_nanos(1), append(&node, 0, 100_000)).await;
    for i in 1..20i64 {
        append(&node, i * 100_000, (i + 1) * 100_000)
            .await
            .expect("append");
    }
    // Whether or not the caller saw it, the abandoned append runs to its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while summary(&node) != expected(&[(0, 2_000_000)]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned append never completed (caller saw {abandoned:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.flush_all().await.expect("flush");
    // Everything is in Parquet, so only the live segment (and at most one more) may remain.
    let left = segments(dir.path()).len();
    assert!(
        left <= 2,
        "{left} WAL segments left after flushing everything"
    );
    drop(node);
    let node = open(config(dir.path())).await;
    assert_eq!(summary(&node), expected(&[(0, 2_000_000)]));
}
