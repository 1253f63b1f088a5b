//! Arrow types as DuckDB column types, and fitting ingested batches to a table's schema.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, LargeListArray, ListArray, RecordBatch, StructArray, make_array,
    new_null_array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};

use crate::engine::ident;
use crate::error::{Error, Result};

/// The DuckDB column type that stores values of an Arrow type.
pub(crate) fn duckdb_type(field: &Field) -> Result<String> {
    let unsupported = || {
        Error::InvalidArgument(format!(
            "column {:?} has Arrow type {}, which skein cannot store",
            field.name(),
            field.data_type()
        ))
    };
    let child = |f: &Field| duckdb_type(f);
    Ok(match field.data_type() {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
            if *p <= 38 && *s >= 0 =>
        {
            format!("DECIMAL({p},{s})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Timestamp(TimeUnit::Second, None) => "TIMESTAMP_S".into(),
        DataType::Timestamp(TimeUnit::Millisecond, None) => "TIMESTAMP_MS".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP_NS".into(),
        DataType::Interval(_) => "INTERVAL".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("{}[]", child(f)?)
        }
        DataType::FixedSizeList(f, n) => format!("{}[{n}]", child(f)?),
        DataType::Struct(fields) if !fields.is_empty() => {
            let inner = fields
                .iter()
                .map(|f| Ok(format!("{} {}", ident(f.name()), child(f)?)))
                .collect::<Result<Vec<_>>>()?;
            format!("STRUCT({})", inner.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!("MAP({}, {})", child(&kv[0])?, child(&kv[1])?)
            }
            _ => return Err(unsupported()),
        },
        DataType::Dictionary(_, value) => {
            duckdb_type(&Field::new(field.name(), (**value).clone(), true))?
        }
        _ => return Err(unsupported()),
    })
}

/// Families of types whose values convert into each other without changing meaning.
#[derive(PartialEq, Eq, Debug)]
enum Family {
    Bool,
    Number,
    Text,
    Bytes,
    Date,
    Time,
    Timestamp,
    Interval,
    Nested,
    Other,
}

fn family(t: &DataType) -> Family {
    use DataType::*;
    match t {
        Boolean => Family::Bool,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            Family::Number
        }
        Utf8 | LargeUtf8 | Utf8View => Family::Text,
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => Family::Bytes,
        Date32 | Date64 => Family::Date,
        Time32(_) | Time64(_) => Family::Time,
        Timestamp(..) => Family::Timestamp,
        Interval(_) | Duration(_) => Family::Interval,
        List(_) | LargeList(_) | ListView(_) | FixedSizeList(..) | Struct(_) | Map(..) => {
            Family::Nested
        }
        Dictionary(_, v) => family(v),
        _ => Family::Other,
    }
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

/// Whether a column of type `from` may be stored in a column of type `to`.
fn storable(from: &DataType, to: &DataType) -> bool {
    if from == to || *from == DataType::Null {
        return true;
    }
    let (ff, tf) = (family(from), family(to));
    // Floats do not go into integer or decimal columns: that would silently round.
    let rounds = is_float(from) && !is_float(to);
    ff == tf && ff != Family::Other && !rounds && can_cast_types(from, to)
}

/// The bytes of Arrow data a batch holds, each column's slice counted once. A batch decoded
/// from Arrow IPC has every column point into one message buffer, so the capacity of the
/// buffers (`get_array_memory_size`) would count the whole message once per column.
pub(crate) fn arrow_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}

/// Fits `batch` to a table whose columns are `target` (matched by name, ignoring case):
/// casts where the value converts without loss of meaning, fills absent nullable columns with
/// NULL, and rejects anything else with an error naming the column.
pub(crate) fn conform(
    table: &str,
    batch: &RecordBatch,
    target: &SchemaRef,
    not_null: &dyn Fn(&str) -> bool,
) -> Result<RecordBatch> {
    let mismatch = |reason: String| Error::SchemaMismatch {
        table: table.to_string(),
        reason,
    };
    let source = batch.schema();
    for f in source.fields() {
        let known = target
            .fields()
            .iter()
            .any(|t| t.name().eq_ignore_ascii_case(f.name()));
        if !known {
            return Err(mismatch(format!(
                "column {:?} does not exist in the table (add it first with ALTER TABLE … ADD COLUMN)",
                f.name()
            )));
        }
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for t in target.fields() {
        let found = source
            .fields()
            .iter()
            .position(|f| f.name() == t.name())
            .or_else(|| {
                source
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(t.name()))
            });
        let column = match found {
            None if not_null(t.name()) => {
                return Err(mismatch(format!(
                    "column {:?} is NOT NULL but the batch does not have it",
                    t.name()
                )));
            }
            None => new_null_array(t.data_type(), batch.num_rows()),
            Some(i) => {
                let array = batch.column(i);
                if !storable(array.data_type(), t.data_type()) {
                    return Err(mismatch(format!(
                        "column {:?} has type {} but the batch has {}",
                        t.name(),
                        t.data_type(),
                        array.data_type()
                    )));
                }
                let array = if array.data_type() == t.data_type() {
                    Arc::clone(array)
                } else {
                    cast_with_options(array, t.data_type(), &options)
                        .map_err(|e| mismatch(format!("column {:?}: {e}", t.name())))?
                };
                if array.null_count() > 0 && not_null(t.name()) {
                    return Err(mismatch(format!(
                        "column {:?} is NOT NULL but the batch has {} NULLs in it",
                        t.name(),
                        array.null_count()
                    )));
                }
                array
            }
        };
        columns.push(push_down_nulls(column)?);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(target),
        columns,
        &options,
    )?)
}

/// DuckDB expects the children of a NULL struct to be NULL too, and writes wrong Parquet when
/// they are not; Arrow leaves them free. Makes every struct's nulls its children's nulls, at any
/// depth (inside lists too).
fn push_down_nulls(array: ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut children = Vec::with_capacity(s.num_columns());
            for child in s.columns() {
                let child = match s.nulls() {
                    Some(parent) if parent.null_count() > 0 => {
                        let nulls = NullBuffer::union(Some(parent), child.nulls());
                        make_array(child.to_data().into_builder().nulls(nulls).build()?)
                    }
                    _ => Arc::clone(child),
                };
                children.push(push_down_nulls(child)?);
            }
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                s.nulls().cloned(),
            )?))
        }
        DataType::List(field) => {
            let l = array.as_list::<i32>();
            let values = push_down_nulls(Arc::clone(l.values()))?;
            Ok(Arc::new(ListArray::try_new(
                Arc::clone(field),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?))
        }
        DataType::LargeList(field) => {
            let l = array.as_list::<i64>();
            let values = push_down_nulls(Arc::clone(l.values()))?;
            Ok(Arc::new(LargeListArray::try_new(
                Arc::clone(field),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?))
        }
        _ => Ok(array),
    }
}

/// `batch` with `schema`'s field names and types (positionally).
pub(crate) fn conform_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::Internal(format!(
            "a result has {} columns where {} were expected",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Schema;

    #[test]
    fn a_batch_decoded_from_ipc_counts_its_columns_once() {
        let columns: Vec<(String, ArrayRef)> = (0..20)
            .map(|k| {
                let values = (0..4000).map(|i| format!("value {k}-{i:08}"));
                (
                    format!("c{k}"),
                    Arc::new(StringArray::from_iter_values(values)) as ArrayRef,
                )
            })
            .collect();
        let built = RecordBatch::try_from_iter(columns).expect("batch");
        let mut ipc = Vec::new();
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &built.schema()).expect("writer");
        writer.write(&built).expect("write");
        writer.finish().expect("finish");
        drop(writer);
        let decoded = arrow::ipc::reader::StreamReader::try_new(ipc.as_slice(), None)
            .expect("reader")
            .next()
            .expect("a batch")
            .expect("decoded");
        // Every decoded column points into the one message: its capacity is the message's.
        assert!(decoded.get_array_memory_size() > 10 * ipc.len());
        // Counted by slice, the decoded batch is the size of the data, as the built one is.
        let (data, message) = (arrow_bytes(&decoded), ipc.len() as u64);
        assert!(
            data <= message && data * 2 >= message,
            "{data} of {message}"
        );
        assert_eq!(arrow_bytes(&built), data);
    }

    fn target() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn widens_reorders_and_fills() {
        let batch = RecordBatch::try_from_iter([(
            "ID",
            Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
        )])
        .expect("batch");
        let out = conform("t", &batch, &target(), &|_| false).expect("fits");
        assert_eq!(out.schema(), target());
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(ids.values(), &[1, 2]);
        assert_eq!(out.column(1).null_count(), 2);
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let text = RecordBatch::try_from_iter([(
            "id",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        )])
        .expect("batch");
        let err = conform("t", &text, &target(), &|_| false).expect_err("text into int");
        assert!(err.to_string().contains("\"id\""), "{err}");

        let float = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
        )])
        .expect("batch");
        assert!(conform("t", &float, &target(), &|_| false).is_err());

        let extra = RecordBatch::try_from_iter([(
            "other",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )])
        .expect("batch");
        let err = conform("t", &extra, &target(), &|_| false).expect_err("unknown column");
        assert!(err.to_string().contains("\"other\""), "{err}");

        let missing = RecordBatch::try_from_iter([(
            "name",
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        )])
        .expect("batch");
        let err = conform("t", &missing, &target(), &|c| c == "id").expect_err("not null");
        assert!(err.to_string().contains("NOT NULL"), "{err}");
    }

    #[test]
    fn struct_nulls_reach_their_children() {
        let st = StructArray::try_new(
            vec![Field::new("b", DataType::Utf8, true)].into(),
            vec![Arc::new(StringArray::from(vec!["x", "", "z"])) as ArrayRef],
            Some(NullBuffer::from(vec![true, false, true])),
        )
        .expect("struct");
        let out = push_down_nulls(Arc::new(st)).expect("push down");
        let child = out.as_struct().column(0);
        assert_eq!(child.null_count(), 1);
        assert!(child.is_null(1) && child.is_valid(2));
    }

    #[test]
    fn duckdb_types_of_nested_fields() {
        let list = Field::new_list("l", Field::new("item", DataType::Int32, true), true);
        assert_eq!(duckdb_type(&list).expect("list"), "INTEGER[]");
        let st = Field::new_struct("s", vec![Field::new("a b", DataType::Utf8, true)], true);
        assert_eq!(duckdb_type(&st).expect("struct"), "STRUCT(\"a b\" VARCHAR)");
        assert!(duckdb_type(&Field::new("n", DataType::Null, true)).is_err());
    }
}
