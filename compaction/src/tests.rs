use skein_storage::{ColumnMeta, ColumnStats, FileMeta, StatValue, TableMeta};

use super::*;

const MB: u64 = 1 << 20;

fn file(key: &str, bytes: u64, created_at_ms: i64, partition: Option<&str>) -> FileMeta {
    FileMeta {
        partition: partition.map(str::to_string),
        key: key.to_string(),
        rows: bytes / 10,
        bytes,
        columns: vec!["ts".into()],
        stats: vec![],
        created_at_ms,
        node: Some("n1".into()),
        max_seq: Some(1),
    }
}

fn table(files: Vec<FileMeta>) -> TableMeta {
    TableMeta {
        retired: Vec::new(),
        id: 1,
        name: "t".into(),
        columns: vec![ColumnMeta {
            name: "ts".into(),
            sql_type: "TIMESTAMP".into(),
            nullable: true,
        }],
        files,
        next_file_seq: 0,
        flushed_wal: Default::default(),
        created_at_ms: 0,
        options: Default::default(),
    }
}

const POLICY: Policy = Policy {
    target_bytes: 10 * MB,
    min_files: 3,
    cool_down_ms: 1_000,
};

fn keys(merges: &[Merge]) -> Vec<Vec<String>> {
    merges.iter().map(Merge::keys).collect()
}

#[test]
fn small_settled_files_are_packed_up_to_the_target_in_order() {
    let files = (0..8)
        .map(|i| file(&format!("f{i}"), 3 * MB, 0, None))
        .collect();
    let merges = plan_merges(&table(files), &POLICY, 10_000);
    // 3 MB files: three fit in 10 MB; the last two are fewer than min_files.
    assert_eq!(
        keys(&merges),
        vec![vec!["f0", "f1", "f2"], vec!["f3", "f4", "f5"]]
    );
    assert!(merges.iter().all(|m| m.bytes() <= POLICY.target_bytes));
}

#[test]
fn fresh_large_and_too_few_files_are_left_alone() {
    let files = vec![
        file("big", 8 * MB, 0, None),
        file("a", MB, 0, None),
        file("b", MB, 0, None),
        file("fresh", MB, 9_500, None),
    ];
    assert!(plan_merges(&table(files.clone()), &POLICY, 10_000).is_empty());
    let two = Policy {
        min_files: 2,
        ..POLICY
    };
    assert_eq!(
        keys(&plan_merges(&table(files), &two, 10_000)),
        vec![vec!["a", "b"]]
    );
}

#[test]
fn partitions_are_merged_apart() {
    let files = vec![
        file("d1a", MB, 0, Some("2026-11-01")),
        file("d2a", MB, 0, Some("2026-11-02")),
        file("d1b", MB, 0, Some("2026-11-01")),
        file("d2b", MB, 0, Some("2026-11-02")),
        file("d1c", MB, 0, Some("2026-11-01")),
        file("d2c", MB, 0, Some("2026-11-02")),
    ];
    let merges = plan_merges(&table(files), &POLICY, 10_000);
    assert_eq!(
        keys(&merges),
        vec![vec!["d1a", "d1b", "d1c"], vec!["d2a", "d2b", "d2c"]]
    );
    assert_eq!(merges[0].partition.as_deref(), Some("2026-11-01"));
}

#[test]
fn a_swap_replaces_in_place_and_retires_the_inputs() {
    let mut t = table(vec![
        file("a", MB, 0, None),
        file("b", MB, 0, None),
        file("c", MB, 0, None),
        file("d", MB, 0, None),
    ]);
    let inputs = vec!["b".to_string(), "c".to_string()];
    let out = file("bc", 2 * MB, 5, None);
    assert_eq!(
        swap(&mut t, &inputs, vec![out.clone()], 99),
        Ok(Swapped::Now)
    );
    let listed: Vec<&str> = t.files.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(listed, ["a", "bc", "d"]);
    assert_eq!(t.retired.len(), 2);
    assert!(t.retired.iter().all(|r| r.delete_after_ms == 99));
    assert_eq!(retired_file(&t, "b").map(|f| f.bytes), Some(MB));

    // The same swap again (a retried commit that had landed) changes nothing.
    let before = t.clone();
    assert_eq!(swap(&mut t, &inputs, vec![out], 99), Ok(Swapped::Already));
    assert_eq!(t, before);

    // A swap whose input another change took fails and leaves the table as it was.
    assert_eq!(
        swap(&mut t, &["d".into(), "b".into()], vec![], 100),
        Err(SwapError::Changed { key: "b".into() })
    );
    assert_eq!(t, before);

    // Deletion: only what is due, then forgotten.
    assert!(due_for_deletion(&t, 98).is_empty());
    let due = due_for_deletion(&t, 99);
    assert_eq!(due, ["b", "c"]);
    forget_deleted(&mut t, &due[..1]);
    assert_eq!(t.retired.len(), 1);
}

#[test]
fn a_delete_that_empties_a_file_swaps_it_for_nothing() {
    let mut t = table(vec![file("a", MB, 0, None), file("b", MB, 0, None)]);
    assert_eq!(swap(&mut t, &["a".into()], vec![], 1), Ok(Swapped::Now));
    assert_eq!(t.files.len(), 1);
    assert_eq!(t.files[0].key, "b");
}

fn with_time(mut f: FileMeta, min: i64, max: i64, nulls: u64) -> FileMeta {
    f.stats = vec![ColumnStats {
        column: "ts".into(),
        null_count: Some(nulls),
        min: Some(StatValue::Int(min)),
        max: Some(StatValue::Int(max)),
    }];
    f
}

#[test]
fn retention_drops_files_entirely_past_it() {
    let day_us = 86_400_000_000i64;
    let now_ms = 100 * 86_400_000i64;
    let mut t = table(vec![
        with_time(file("old", MB, 0, None), 80 * day_us, 89 * day_us, 0),
        with_time(file("straddles", MB, 0, None), 89 * day_us, 91 * day_us, 0),
        with_time(
            file("old-with-null", MB, 0, None),
            80 * day_us,
            85 * day_us,
            1,
        ),
        with_time(file("new", MB, 0, None), 95 * day_us, 99 * day_us, 0),
        file("no-stats", MB, 0, None),
    ]);
    assert!(expired_files(&t, now_ms).is_empty(), "no retention set");
    t.options.time_column = Some("TS".into());
    t.options.retention_ms = Some(10 * 86_400_000);
    let expired: Vec<String> = expired_files(&t, now_ms)
        .into_iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(expired, ["old"]);
}

#[test]
fn time_statistics_are_read_by_their_type() {
    assert_eq!(
        stat_micros("DATE", &StatValue::Int(1)),
        Some(86_400_000_000)
    );
    assert_eq!(stat_micros("TIMESTAMP_MS", &StatValue::Int(5)), Some(5_000));
    assert_eq!(
        stat_micros("timestamp with time zone", &StatValue::Int(7)),
        Some(7)
    );
    assert_eq!(stat_micros("TIMESTAMP_NS", &StatValue::Int(-1)), Some(-1));
    assert_eq!(stat_micros("BIGINT", &StatValue::Int(7)), None);
    assert!(is_time_type("TIMESTAMP") && !is_time_type("VARCHAR"));
}

#[test]
fn files_without_a_day_are_laid_out_once_the_table_has_a_time_column() {
    let day_us = 86_400_000_000i64;
    let timeless = {
        let mut f = file("timeless", MB, 0, None);
        f.stats = vec![ColumnStats {
            column: "ts".into(),
            null_count: Some(f.rows),
            min: None,
            max: None,
        }];
        f
    };
    let mut t = table(vec![
        with_time(file("mixed", MB, 0, None), 3 * day_us, 5 * day_us, 0),
        with_time(
            file("laid", MB, 0, Some("1970-01-04")),
            3 * day_us,
            3 * day_us,
            0,
        ),
        timeless,
        file("no-stats", MB, 0, None),
        with_time(file("fresh", MB, 9_500, None), 3 * day_us, 5 * day_us, 0),
    ]);
    assert!(
        unlaid_files(&t, &POLICY, 10_000).is_empty(),
        "no time column"
    );
    t.options.time_column = Some("TS".into());
    let keys: Vec<String> = unlaid_files(&t, &POLICY, 10_000)
        .into_iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(keys, ["mixed", "no-stats"]);
}
