//! How a table's data is laid out in Parquet objects: the writer flushes and rewrites share
//! (one file, or one per UTC day of the table's time column), and the names of the objects
//! (`tables/<id>/[<day>/]<stem>[-<n>].parquet`).

use std::path::{Path, PathBuf};

use duckdb::Connection;
use skein_storage::stats::read_file_stats;
use skein_storage::{ColumnMeta, ColumnStats};

use crate::engine::{ident, literal};
use crate::error::{Error, Result};

/// Whether object `key` is one of the files flushed under name stem `stem`: a generation's
/// files are `<dir>/<stem>.parquet`, or `<dir>/<day>/<stem>-<n>.parquet` when the table is
/// laid out by day.
pub(crate) fn flushed_from(key: &str, stem: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.strip_prefix(stem)
        .is_some_and(|rest| rest == ".parquet" || rest.starts_with('-'))
}

/// One Parquet file a flush or a rewrite wrote.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Where it is.
    pub path: PathBuf,
    /// The day of the table's time column all its rows fall on (`None` for rows without a
    /// time, or a table without a time column).
    pub day: Option<String>,
    /// Its rows.
    pub rows: u64,
    /// Its statistics per column, from its footer.
    pub stats: Vec<ColumnStats>,
}

/// The column a day-partitioned write adds to route rows; not written to the files.
const DAY_COLUMN: &str = "__skein_flush_day";
/// How DuckDB names the partition of NULL values.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Writes the rows of query `select` (with parameters `values`) as Parquet (zstd, with
/// statistics) under directory `dir`, which must not exist yet: one file, or with
/// `time_column` one file per UTC day of it and one for rows without a time (days in order,
/// the timeless last), each with its statistics. No file if there are no rows.
pub(crate) fn write_parquet_files(
    conn: &Connection,
    select: &str,
    values: &[duckdb::types::Value],
    time_column: Option<&ColumnMeta>,
    dir: &Path,
) -> Result<Vec<WrittenFile>> {
    let io = |d: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", d.display()));
    let params = duckdb::params_from_iter(values.iter());
    let Some(column) = time_column else {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join("data.parquet");
        let copy = format!(
            "COPY ({select}) TO {} ({PARQUET_OPTIONS})",
            literal(&path.display().to_string())
        );
        if conn.prepare(&copy)?.execute(params)? == 0 {
            let _ = std::fs::remove_file(&path);
            return Ok(Vec::new());
        }
        return with_stats(vec![(path, None)]);
    };
    let copy = format!(
        "COPY (SELECT *, strftime({}, '%Y-%m-%d') AS {DAY_COLUMN} FROM ({select})) \
         TO {} ({PARQUET_OPTIONS}, PARTITION_BY ({DAY_COLUMN}))",
        day_sql(column),
        literal(&dir.display().to_string())
    );
    if conn.prepare(&copy)?.execute(params)? == 0 {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    let read = |d: &Path| std::fs::read_dir(d).map_err(|e| io(d, e));
    for part in read(dir)? {
        let part = part.map_err(|e| io(dir, e))?.path();
        let name = part
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(value) = name.strip_prefix(&format!("{DAY_COLUMN}=")) else {
            return Err(Error::Internal(format!(
                "unexpected Parquet output {part:?}"
            )));
        };
        let day = (value != NULL_PARTITION).then(|| value.to_string());
        let mut files: Vec<PathBuf> = read(&part)?
            .map(|f| f.map(|f| f.path()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io(&part, e))?;
        files.sort();
        written.extend(files.into_iter().map(|path| (path, day.clone())));
    }
    written.sort_by(|(pa, a), (pb, b)| (a.is_none(), a, pa).cmp(&(b.is_none(), b, pb)));
    with_stats(written)
}

fn with_stats(files: Vec<(PathBuf, Option<String>)>) -> Result<Vec<WrittenFile>> {
    files
        .into_iter()
        .map(|(path, day)| {
            let (rows, stats) = read_file_stats(&path)?;
            Ok(WrittenFile {
                path,
                day,
                rows,
                stats,
            })
        })
        .collect()
}

/// How skein writes Parquet: zstd, row groups of DuckDB's default size, with statistics.
const PARQUET_OPTIONS: &str = "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880";

/// The UTC day (a DATE) of time column `column`. Without the ICU extension DuckDB casts a
/// TIMESTAMP WITH TIME ZONE to TIMESTAMP as UTC but not straight to DATE.
fn day_sql(column: &ColumnMeta) -> String {
    let name = ident(&column.name);
    match column.sql_type.to_ascii_uppercase().as_str() {
        "DATE" => name,
        "TIMESTAMP WITH TIME ZONE" | "TIMESTAMPTZ" => {
            format!("CAST(CAST({name} AS TIMESTAMP) AS DATE)")
        }
        _ => format!("CAST({name} AS DATE)"),
    }
}

/// The object keys of files written under name stem `stem` for days `days` (one per file): a
/// single file without a day is `tables/<id>/<stem>.parquet`; otherwise file `i` is
/// `tables/<id>/[<day>/]<stem>-<i>.parquet` (see [`flushed_from`]).
pub(crate) fn file_keys(table_id: u64, stem: &str, days: &[Option<String>]) -> Vec<String> {
    let single = matches!(days, [None]);
    days.iter()
        .enumerate()
        .map(|(i, day)| {
            let name = if single {
                format!("{stem}.parquet")
            } else {
                format!("{stem}-{i}.parquet")
            };
            match day {
                Some(day) => format!("tables/{table_id}/{day}/{name}"),
                None => format!("tables/{table_id}/{name}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_day_and_stay_recognisable_by_their_stem() {
        let stem = "n1-00000000000000000007-abcd1234";
        assert_eq!(
            file_keys(3, stem, &[None]),
            ["tables/3/n1-00000000000000000007-abcd1234.parquet"]
        );
        let keys = file_keys(3, stem, &[Some("2025-11-20".into()), None]);
        assert_eq!(
            keys,
            [
                "tables/3/2025-11-20/n1-00000000000000000007-abcd1234-0.parquet",
                "tables/3/n1-00000000000000000007-abcd1234-1.parquet",
            ]
        );
        assert!(keys.iter().all(|k| flushed_from(k, stem)));
        // Another flush's stem, even one that shares a prefix, is not taken for this one.
        assert!(!flushed_from(&keys[0], "n1-00000000000000000007-abcd123"));
        assert!(!flushed_from("tables/3/n1-rewrite-ff.parquet", stem));
    }
}
