//! The catalog's JSON is a persisted format: `catalog.json` on a single node, the values of the
//! Redis hash in a cluster, and every snapshot in the bucket. A catalog with every field set
//! is compared with the copy checked in under `tests/snapshots/`, and that copy must still read
//! back to the same catalog, so a change to the format is a deliberate one (rewrite the copy
//! with `SKEIN_UPDATE_SNAPSHOTS=1 cargo test --release --workspace --test formats`) and never
//! makes stored catalogs unreadable unnoticed. An older catalog, written before the optional
//! fields existed, must read too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use skein_storage::{
    CatalogState, ColumnMeta, ColumnStats, FileMeta, RetiredFile, StatValue, TableMeta,
    TableOptions,
};

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name)
}

/// Compares `text` with the checked-in snapshot `name`, or rewrites it when asked to.
fn assert_snapshot(name: &str, text: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("SKEIN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).expect("write snapshot");
    }
    let stored = std::fs::read_to_string(&path).expect("read snapshot");
    assert!(
        stored == text,
        "{name} changed: the persisted format is not what is checked in.\n\
         --- checked in\n{stored}\n--- now\n{text}"
    );
}

fn file(key: &str, rows: u64) -> FileMeta {
    FileMeta {
        key: key.into(),
        rows,
        bytes: 4096,
        columns: vec!["id".into(), "name".into(), "ts".into(), "price".into()],
        stats: vec![
            ColumnStats {
                column: "id".into(),
                null_count: Some(0),
                min: Some(StatValue::Int(-3)),
                max: Some(StatValue::Int(1 << 40)),
            },
            ColumnStats {
                column: "name".into(),
                null_count: Some(2),
                min: Some(StatValue::Str("a\"b".into())),
                max: Some(StatValue::Str("zé".into())),
            },
            ColumnStats {
                column: "price".into(),
                null_count: None,
                min: Some(StatValue::Float(0.5)),
                max: Some(StatValue::Float(1e300)),
            },
            ColumnStats {
                column: "ok".into(),
                null_count: Some(1),
                min: Some(StatValue::Bool(false)),
                max: None,
            },
        ],
        created_at_ms: 1_764_700_000_000,
        partition: Some("2025-12-02".into()),
        node: Some("n1".into()),
        max_seq: Some(77),
    }
}

fn every_field() -> CatalogState {
    let mut merged = file(
        "tables/7/2025-12-02/merged-00000000000000000003-0a1b2c3d.parquet",
        10,
    );
    merged.node = None;
    merged.max_seq = None;
    merged.partition = None;
    let table = TableMeta {
        id: 7,
        name: "Events".into(),
        columns: vec![
            ColumnMeta {
                name: "id".into(),
                sql_type: "BIGINT".into(),
                nullable: false,
            },
            ColumnMeta {
                name: "name".into(),
                sql_type: "VARCHAR".into(),
                nullable: true,
            },
            ColumnMeta {
                name: "ts".into(),
                sql_type: "TIMESTAMP".into(),
                nullable: true,
            },
            ColumnMeta {
                name: "price".into(),
                sql_type: "DECIMAL(18,3)".into(),
                nullable: true,
            },
        ],
        files: vec![
            file(
                "tables/7/2025-12-02/n1-00000000000000000001-89abcdef.parquet",
                3,
            ),
            merged,
        ],
        next_file_seq: 4,
        flushed_wal: BTreeMap::from([("n1".into(), 77), ("n2".into(), 5)]),
        created_at_ms: 1_764_600_000_000,
        options: TableOptions {
            flush_rows: Some(1000),
            flush_bytes: Some(1 << 20),
            flush_interval_ms: Some(5000),
            time_column: Some("ts".into()),
            retention_ms: Some(86_400_000),
        },
        retired: vec![RetiredFile {
            file: file("tables/7/n2-00000000000000000002-01234567.parquet", 1),
            delete_after_ms: 1_764_700_060_000,
        }],
    };
    CatalogState {
        version: 42,
        epoch: 3,
        next_table_id: 8,
        tables: BTreeMap::from([("events".into(), table)]),
        commit: "5f0c6e8a2b7d4e19".into(),
    }
}

#[test]
fn the_catalog_json_is_what_is_checked_in_and_reads_back() {
    let state = every_field();
    let text = serde_json::to_string_pretty(&state).expect("encode") + "\n";
    assert_snapshot("catalog.json", &text);
    let stored = std::fs::read_to_string(snapshot_path("catalog.json")).expect("read");
    let read: CatalogState = serde_json::from_str(&stored).expect("the checked-in catalog reads");
    assert_eq!(read, state);
}

#[test]
fn a_catalog_from_before_the_optional_fields_reads_with_their_defaults() {
    // No epoch, commit id, statistics, partition, node, options or retired files.
    let old = r#"{
      "version": 5,
      "next_table_id": 2,
      "tables": {
        "t": {
          "id": 1,
          "name": "t",
          "columns": [{"name": "id", "sql_type": "BIGINT", "nullable": true}],
          "files": [{"key": "tables/1/a.parquet", "rows": 3, "bytes": 10,
                     "columns": ["id"], "created_at_ms": 1}],
          "created_at_ms": 1
        }
      }
    }"#;
    let state: CatalogState = serde_json::from_str(old).expect("an older catalog reads");
    assert_eq!(
        (state.version, state.epoch, state.commit.as_str()),
        (5, 0, "")
    );
    let t = &state.tables["t"];
    assert_eq!(t.next_file_seq, 0);
    assert!(t.flushed_wal.is_empty() && t.retired.is_empty());
    assert_eq!(t.options, TableOptions::default());
    let f = &t.files[0];
    assert!(f.stats.is_empty() && f.partition.is_none() && f.node.is_none());
    assert_eq!(f.max_seq, None);
}
