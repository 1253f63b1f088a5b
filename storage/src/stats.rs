//! Column statistics of a Parquet file, read from its footer.
//!
//! Values are kept in their Parquet physical form (integers, floats, UTF-8 strings, booleans);
//! the table's column type says how to read them. Nested columns are not summarised.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A statistic's value in Parquet physical form.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatValue {
    /// Booleans.
    Bool(bool),
    /// INT32 and INT64 columns (dates, times, timestamps, decimals of up to 18 digits too).
    Int(i64),
    /// FLOAT and DOUBLE columns.
    Float(f64),
    /// UTF-8 byte arrays.
    Str(String),
}

/// Statistics of one top-level column over the whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Column name.
    pub column: String,
    /// NULLs in the column, if every row group recorded it.
    pub null_count: Option<u64>,
    /// Smallest value, if every row group recorded one.
    pub min: Option<StatValue>,
    /// Largest value, if every row group recorded one.
    pub max: Option<StatValue>,
}

fn bounds(stats: &Statistics) -> (Option<StatValue>, Option<StatValue>) {
    fn str_of(b: Option<&parquet::data_type::ByteArray>) -> Option<StatValue> {
        b.and_then(|b| std::str::from_utf8(b.data()).ok())
            .map(|s| StatValue::Str(s.to_string()))
    }
    match stats {
        Statistics::Boolean(s) => (
            s.min_opt().copied().map(StatValue::Bool),
            s.max_opt().copied().map(StatValue::Bool),
        ),
        Statistics::Int32(s) => (
            s.min_opt().map(|v| StatValue::Int(i64::from(*v))),
            s.max_opt().map(|v| StatValue::Int(i64::from(*v))),
        ),
        Statistics::Int64(s) => (
            s.min_opt().map(|v| StatValue::Int(*v)),
            s.max_opt().map(|v| StatValue::Int(*v)),
        ),
        Statistics::Float(s) => (
            s.min_opt().map(|v| StatValue::Float(f64::from(*v))),
            s.max_opt().map(|v| StatValue::Float(f64::from(*v))),
        ),
        Statistics::Double(s) => (
            s.min_opt().map(|v| StatValue::Float(*v)),
            s.max_opt().map(|v| StatValue::Float(*v)),
        ),
        Statistics::ByteArray(s) => (str_of(s.min_opt()), str_of(s.max_opt())),
        Statistics::Int96(_) | Statistics::FixedLenByteArray(_) => (None, None),
    }
}

fn merge(
    acc: Option<Option<StatValue>>,
    v: Option<StatValue>,
    keep: std::cmp::Ordering,
) -> Option<Option<StatValue>> {
    match (acc, v) {
        (None, v) => Some(v),
        (Some(Some(a)), Some(b)) => Some(Some(if b.partial_cmp(&a) == Some(keep) {
            b
        } else {
            a
        })),
        _ => Some(None),
    }
}

/// Reads the row count and the per-column statistics of the Parquet file at `path`.
pub fn read_file_stats(path: &Path) -> Result<(u64, Vec<ColumnStats>)> {
    let err = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(err)?;
    let meta = reader.metadata();
    let rows = u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
    let schema = meta.file_metadata().schema_descr();
    let mut out = Vec::new();
    for (i, col) in schema.columns().iter().enumerate() {
        let parts = col.path().parts();
        if parts.len() != 1 {
            continue;
        }
        let (mut min, mut max, mut nulls) = (None, None, Some(0u64));
        for rg in meta.row_groups() {
            let stats = rg.column(i).statistics();
            let (lo, hi) = stats.map(bounds).unwrap_or((None, None));
            min = merge(min, lo, std::cmp::Ordering::Less);
            max = merge(max, hi, std::cmp::Ordering::Greater);
            nulls = match (nulls, stats.and_then(|s| s.null_count_opt())) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        out.push(ColumnStats {
            column: parts[0].clone(),
            null_count: nulls,
            min: min.flatten(),
            max: max.flatten(),
        });
    }
    Ok((rows, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    #[test]
    fn min_max_and_nulls_span_row_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.parquet");
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, Some(-3), Some(9)]));
        let s: ArrayRef = Arc::new(StringArray::from(vec![
            Some("m"),
            Some("b"),
            None,
            Some("x"),
        ]));
        let batch = RecordBatch::try_from_iter([("a", a), ("s", s)]).expect("batch");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let file = std::fs::File::create(&path).expect("create");
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");

        let (rows, stats) = read_file_stats(&path).expect("stats");
        assert_eq!(rows, 4);
        assert_eq!(stats[0].column, "a");
        assert_eq!(stats[0].min, Some(StatValue::Int(-3)));
        assert_eq!(stats[0].max, Some(StatValue::Int(9)));
        assert_eq!(stats[0].null_count, Some(1));
        assert_eq!(stats[1].min, Some(StatValue::Str("b".into())));
        assert_eq!(stats[1].max, Some(StatValue::Str("x".into())));
        assert_eq!(stats[1].null_count, Some(1));
    }
}
