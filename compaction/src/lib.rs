//! The life of a table's files after they are flushed: which small files to merge, which files
//! to lay out by day, which files retention drops, the manifest swap that replaces files by
//! their rewrite, and when a replaced file's object may be deleted.
//!
//! This crate decides and edits the manifest; it does not read or write Parquet. The node runs
//! DuckDB to write a merged or rewritten file (it owns the engine and its sandbox), then calls
//! [`swap`] inside one catalog compare-and-set. Promises:
//!
//! - A swap is all-or-nothing and checks that every input is still listed, so two rewrites of
//!   the same file (a compaction and a DELETE, or two nodes) cannot both land; a swap that
//!   already landed (a commit reported failed that went through) is recognised, not repeated.
//! - A replaced file stays described in the table's `retired` list until its object is deleted,
//!   no sooner than the grace period after the swap, so a query planned on an older catalog
//!   still finds it.
//! - Merges only take files older than the cool-down, and keep partitions apart.

use std::collections::BTreeMap;

use skein_storage::{FileMeta, RetiredFile, StatValue, TableMeta};

/// What compaction aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Size a merged file should come near (bytes of Parquet).
    pub target_bytes: u64,
    /// Fewest files worth merging into one.
    pub min_files: usize,
    /// Files younger than this (milliseconds) are left alone: they may still be joined by
    /// their neighbours, and a coordinator planning on a slightly older catalog may not know
    /// them yet.
    pub cool_down_ms: i64,
}

/// Files of one partition to merge into one.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The partition (day) they share, if the table has one.
    pub partition: Option<String>,
    /// The files, in manifest order.
    pub inputs: Vec<FileMeta>,
}

impl Merge {
    /// The inputs' object keys.
    pub fn keys(&self) -> Vec<String> {
        self.inputs.iter().map(|f| f.key.clone()).collect()
    }

    /// Bytes of the inputs together.
    pub fn bytes(&self) -> u64 {
        self.inputs.iter().map(|f| f.bytes).sum()
    }
}

/// The merges `policy` asks for in `table` at `now_ms`: per partition, the small files past the
/// cool-down, packed in manifest order into groups of at most the target size, each group of
/// at least `min_files` files.
pub fn plan_merges(table: &TableMeta, policy: &Policy, now_ms: i64) -> Vec<Merge> {
    // A file at most half the target is small: two of them still fit in one.
    let small = |f: &FileMeta| f.bytes <= policy.target_bytes / 2;
    let settled = |f: &FileMeta| now_ms - f.created_at_ms >= policy.cool_down_ms;
    let mut by_partition: BTreeMap<Option<String>, Vec<&FileMeta>> = BTreeMap::new();
    for f in &table.files {
        if small(f) && settled(f) {
            by_partition.entry(f.partition.clone()).or_default().push(f);
        }
    }
    let mut merges = Vec::new();
    for (partition, files) in by_partition {
        let mut group: Vec<FileMeta> = Vec::new();
        let mut bytes = 0u64;
        let mut close = |group: &mut Vec<FileMeta>| {
            if group.len() >= policy.min_files.max(2) {
                merges.push(Merge {
                    partition: partition.clone(),
                    inputs: std::mem::take(group),
                });
            } else {
                group.clear();
            }
        };
        for f in files {
            if !group.is_empty() && bytes + f.bytes > policy.target_bytes {
                close(&mut group);
                bytes = 0;
            }
            bytes += f.bytes;
            group.push(f.clone());
        }
        close(&mut group);
    }
    merges
}

/// Why a swap did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapError {
    /// An input is no longer listed: another rewrite, a retention drop or a restore replaced
    /// it since the caller read the manifest.
    Changed {
        /// The missing input.
        key: String,
    },
}

impl std::fmt::Display for SwapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwapError::Changed { key } => write!(
                f,
                "file {key} was replaced by another change to the table meanwhile"
            ),
        }
    }
}

impl std::error::Error for SwapError {}

/// Whether a swap changed the manifest or had landed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// The inputs were replaced now.
    Now,
    /// The outputs were listed and the inputs gone: an earlier attempt landed.
    Already,
}

/// Replaces the files `inputs` (object keys) of `table` by `outputs`, in place of the first
/// input, and retires the inputs: their objects may go at `delete_after_ms`. Fails if an
/// input is missing, unless the same swap landed already.
pub fn swap(
    table: &mut TableMeta,
    inputs: &[String],
    outputs: Vec<FileMeta>,
    delete_after_ms: i64,
) -> Result<Swapped, SwapError> {
    let listed = |key: &str| table.files.iter().any(|f| f.key == key);
    if let Some(missing) = inputs.iter().find(|k| !listed(k)) {
        let landed = !inputs.iter().any(|k| listed(k))
            && outputs.iter().all(|o| listed(&o.key))
            && inputs
                .iter()
                .all(|k| table.retired.iter().any(|r| &r.file.key == k));
        return if landed {
            Ok(Swapped::Already)
        } else {
            Err(SwapError::Changed {
                key: missing.clone(),
            })
        };
    }
    let at = table
        .files
        .iter()
        .position(|f| inputs.contains(&f.key))
        .unwrap_or(table.files.len());
    let mut kept = Vec::with_capacity(table.files.len() + outputs.len());
    let mut retired = Vec::new();
    for (i, f) in std::mem::take(&mut table.files).into_iter().enumerate() {
        if i == at {
            kept.extend(outputs.iter().cloned());
        }
        if inputs.contains(&f.key) {
            retired.push(RetiredFile {
                file: f,
                delete_after_ms,
            });
        } else {
            kept.push(f);
        }
    }
    table.files = kept;
    table.retired.extend(retired);
    Ok(Swapped::Now)
}

/// Keys of retired files whose objects may be deleted at `now_ms`.
pub fn due_for_deletion(table: &TableMeta, now_ms: i64) -> Vec<String> {
    table
        .retired
        .iter()
        .filter(|r| r.delete_after_ms <= now_ms)
        .map(|r| r.file.key.clone())
        .collect()
}

/// Forgets retired files whose objects are deleted.
pub fn forget_deleted(table: &mut TableMeta, deleted: &[String]) {
    table.retired.retain(|r| !deleted.contains(&r.file.key));
}

/// A retired file of `table` by key (a fragment planned before the swap may name it).
pub fn retired_file<'a>(table: &'a TableMeta, key: &str) -> Option<&'a FileMeta> {
    table
        .retired
        .iter()
        .find(|r| r.file.key == key)
        .map(|r| &r.file)
}

/// Microseconds since the Unix epoch of a time column's Parquet statistic, for the DuckDB
/// types a time column may have (`None` for any other type).
pub fn stat_micros(sql_type: &str, value: &StatValue) -> Option<i64> {
    let StatValue::Int(v) = value else {
        return None;
    };
    let t = sql_type.to_ascii_uppercase();
    let scale: i64 = match t.as_str() {
        "DATE" => return v.checked_mul(86_400_000_000),
        "TIMESTAMP_S" => 1_000_000,
        "TIMESTAMP_MS" => 1_000,
        "TIMESTAMP" | "TIMESTAMP WITH TIME ZONE" | "TIMESTAMPTZ" => 1,
        "TIMESTAMP_NS" => return Some(v.div_euclid(1_000)),
        _ => return None,
    };
    v.checked_mul(scale)
}

/// Whether DuckDB type `sql_type` can be a table's time column.
pub fn is_time_type(sql_type: &str) -> bool {
    stat_micros(sql_type, &StatValue::Int(0)).is_some()
}

/// The files of `table` to lay out by day: with a time column, those without a day whose
/// rows have times (written before the column was the table's time column, or before this
/// layout), past the cool-down. A file of rows without a time stays as it is.
pub fn unlaid_files(table: &TableMeta, policy: &Policy, now_ms: i64) -> Vec<FileMeta> {
    let Some(column) = table.options.time_column.as_deref() else {
        return Vec::new();
    };
    table
        .files
        .iter()
        .filter(|f| f.partition.is_none() && now_ms - f.created_at_ms >= policy.cool_down_ms)
        .filter(|f| {
            // No statistics: nothing says the file lacks times, so it is laid out too.
            f.stats
                .iter()
                .find(|s| s.column.eq_ignore_ascii_case(column))
                .is_none_or(|s| s.max.is_some() || s.null_count.is_none_or(|n| n < f.rows))
        })
        .cloned()
        .collect()
}

/// The files of `table` that retention drops at `now_ms`: every row's time is older than the
/// retention (the file's largest time is before `now - retention`, and the column holds no
/// NULL). Nothing without a time column and a retention.
pub fn expired_files(table: &TableMeta, now_ms: i64) -> Vec<FileMeta> {
    let (Some(column), Some(retention)) = (&table.options.time_column, table.options.retention_ms)
    else {
        return Vec::new();
    };
    let Some(meta) = table.column(column) else {
        return Vec::new();
    };
    let cutoff = (now_ms - retention as i64).saturating_mul(1_000);
    table
        .files
        .iter()
        .filter(|f| {
            f.stats
                .iter()
                .find(|s| s.column.eq_ignore_ascii_case(column))
                .is_some_and(|s| {
                    s.null_count == Some(0)
                        && s.max
                            .as_ref()
                            .and_then(|m| stat_micros(&meta.sql_type, m))
                            .is_some_and(|max| max < cutoff)
                })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
