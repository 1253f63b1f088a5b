//! Statement parameters: Arrow batches bound row by row as DuckDB values.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, DecimalType, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use duckdb::types::{TimeUnit as DuckUnit, Value};

use crate::error::{Error, Result};

/// Serialises parameter batches as one Arrow IPC stream.
pub(crate) fn to_ipc(batches: &[RecordBatch]) -> Result<Bytes> {
    let Some(first) = batches.first() else {
        return Ok(Bytes::new());
    };
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, &first.schema())?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(Bytes::from(out))
}

/// Reads parameter batches back.
pub(crate) fn from_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader = StreamReader::try_new(bytes, None)
        .map_err(|e| Error::InvalidArgument(format!("malformed parameters in ticket: {e}")))?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// The rows of the parameter batches, each as DuckDB values in column order.
pub(crate) fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>> {
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        value(c.as_ref(), row).map_err(|e| {
                            Error::InvalidArgument(format!(
                                "parameter {} ({:?}): {e}",
                                i + 1,
                                b.schema().field(i).name()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
        }
    }
    Ok(out)
}

fn value(a: &dyn Array, i: usize) -> std::result::Result<Value, String> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Boolean(a.as_boolean().value(i)),
        DataType::Int8 => Value::TinyInt(a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::SmallInt(a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::Int(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::BigInt(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::UTinyInt(a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::USmallInt(a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::UInt(a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::UBigInt(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => Value::Float(a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => Value::Double(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::Text(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::Text(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::Text(a.as_string_view().value(i).to_string()),
        DataType::Binary => Value::Blob(a.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Value::Blob(a.as_binary::<i64>().value(i).to_vec()),
        DataType::Date32 => Value::Date32(a.as_primitive::<Date32Type>().value(i)),
        DataType::Time64(TimeUnit::Microsecond) => Value::Time64(
            DuckUnit::Microsecond,
            a.as_primitive::<Time64MicrosecondType>().value(i),
        ),
        DataType::Time64(TimeUnit::Nanosecond) => Value::Time64(
            DuckUnit::Nanosecond,
            a.as_primitive::<Time64NanosecondType>().value(i),
        ),
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => Value::Timestamp(
                DuckUnit::Second,
                a.as_primitive::<TimestampSecondType>().value(i),
            ),
            TimeUnit::Millisecond => Value::Timestamp(
                DuckUnit::Millisecond,
                a.as_primitive::<TimestampMillisecondType>().value(i),
            ),
            TimeUnit::Microsecond => Value::Timestamp(
                DuckUnit::Microsecond,
                a.as_primitive::<TimestampMicrosecondType>().value(i),
            ),
            TimeUnit::Nanosecond => Value::Timestamp(
                DuckUnit::Nanosecond,
                a.as_primitive::<TimestampNanosecondType>().value(i),
            ),
        },
        DataType::Decimal128(_, scale) => {
            // Bound as text so that DuckDB parses it exactly at the parameter's type.
            let raw = a.as_primitive::<Decimal128Type>().value(i);
            Value::Text(Decimal128Type::format_decimal(raw, 38, *scale))
        }
        other => return Err(format!("Arrow type {other} cannot be bound as a parameter")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn ipc_round_trip_and_rows() {
        let batch = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            ("b", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
        ])
        .expect("batch");
        let back = from_ipc(&to_ipc(std::slice::from_ref(&batch)).expect("ipc")).expect("read");
        assert_eq!(back, vec![batch]);
        let rows = rows(&back).expect("rows");
        assert_eq!(rows[0], vec![Value::BigInt(1), Value::Text("x".into())]);
        assert_eq!(rows[1], vec![Value::Null, Value::Text("y".into())]);
        assert!(from_ipc(b"garbage").is_err());
    }
}
