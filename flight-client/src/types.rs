//! Data type names as users write them: arrow's own syntax (`Int64`, `Decimal128(10, 2)`,
//! `Timestamp(Microsecond, Some("UTC"))`) and SQL-style aliases (`bigint`, `float64`, `string`,
//! `timestamp`, `decimal(10,2)`).

use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// Parses a data type: a friendly alias (case-insensitive) or arrow's `DataType` syntax.
///
/// Aliases: `int8`/`tinyint`, `int16`/`smallint`, `int32`/`int`/`integer`, `int64`/`bigint`/
/// `long`, `uint8`…`uint64`, `float32`/`float`/`real`, `float64`/`double`, `string`/`utf8`/
/// `text`/`varchar`, `large_string`, `bool`/`boolean`, `binary`/`bytes`/`blob`, `date`/`date32`,
/// `timestamp` (microseconds, no time zone), `timestamptz` (microseconds, UTC),
/// `timestamp_s`/`_ms`/`_us`/`_ns`, and `decimal(p, s)`.
pub fn parse_data_type(spec: &str) -> Result<DataType> {
    let trimmed = spec.trim();
    let lower = trimmed.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "int8" | "tinyint" => Some(DataType::Int8),
        "int16" | "smallint" => Some(DataType::Int16),
        "int32" | "int" | "integer" => Some(DataType::Int32),
        "int64" | "bigint" | "long" => Some(DataType::Int64),
        "uint8" => Some(DataType::UInt8),
        "uint16" => Some(DataType::UInt16),
        "uint32" => Some(DataType::UInt32),
        "uint64" => Some(DataType::UInt64),
        "float32" | "float" | "real" => Some(DataType::Float32),
        "float64" | "double" => Some(DataType::Float64),
        "string" | "utf8" | "text" | "varchar" => Some(DataType::Utf8),
        "large_string" | "large_utf8" => Some(DataType::LargeUtf8),
        "bool" | "boolean" => Some(DataType::Boolean),
        "binary" | "bytes" | "blob" => Some(DataType::Binary),
        "date" | "date32" => Some(DataType::Date32),
        "timestamp" | "timestamp_us" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        "timestamp_s" => Some(DataType::Timestamp(TimeUnit::Second, None)),
        "timestamp_ms" => Some(DataType::Timestamp(TimeUnit::Millisecond, None)),
        "timestamp_ns" => Some(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        "timestamptz" => Some(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(Arc::from("UTC")),
        )),
        _ => None,
    };
    if let Some(t) = alias {
        return Ok(t);
    }
    if let Some(args) = lower
        .strip_prefix("decimal")
        .or_else(|| lower.strip_prefix("numeric"))
        .and_then(|rest| rest.trim().strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return parse_decimal(trimmed, args);
    }
    DataType::from_str(trimmed).map_err(|e| Error::InvalidType {
        spec: spec.to_string(),
        reason: format!(
            "{e}; use an alias such as int64, float64, string, bool, date, timestamp, \
             decimal(10,2), or arrow's syntax such as Int64 or Timestamp(Millisecond, None)"
        ),
    })
}

fn parse_decimal(spec: &str, args: &str) -> Result<DataType> {
    let invalid = |reason: &str| Error::InvalidType {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let mut parts = args.split(',').map(str::trim);
    let precision: u8 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| invalid("decimal(p, s) needs a precision"))?;
    let scale: i8 = match parts.next() {
        Some(s) => s
            .parse()
            .map_err(|_| invalid("the scale of decimal(p, s) must be an integer"))?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err(invalid("decimal takes at most two arguments"));
    }
    if precision == 0 || precision > 38 {
        return Err(invalid("decimal precision must be between 1 and 38"));
    }
    if i16::from(scale) > i16::from(precision) {
        return Err(invalid("decimal scale must not exceed its precision"));
    }
    Ok(DataType::Decimal128(precision, scale))
}

/// Parses `name=type` (a column override).
pub fn parse_column_override(spec: &str) -> Result<(String, DataType)> {
    let (name, ty) = spec.split_once('=').ok_or_else(|| {
        Error::InvalidArgument(format!(
            "column override {spec:?} must look like name=type, e.g. id=int64"
        ))
    })?;
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "column override {spec:?} has no column name"
        )));
    }
    Ok((name.to_string(), parse_data_type(ty)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_arrow_syntax() {
        assert_eq!(parse_data_type("BIGINT").unwrap(), DataType::Int64);
        assert_eq!(parse_data_type("float64").unwrap(), DataType::Float64);
        assert_eq!(parse_data_type("string").unwrap(), DataType::Utf8);
        assert_eq!(
            parse_data_type("timestamp").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(parse_data_type("Int16").unwrap(), DataType::Int16);
        assert_eq!(
            parse_data_type("Timestamp(Millisecond, Some(\"UTC\"))").unwrap(),
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(
            parse_data_type("decimal(10, 2)").unwrap(),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(
            parse_data_type("Decimal128(12, 3)").unwrap(),
            DataType::Decimal128(12, 3)
        );
    }

    #[test]
    fn bad_types_say_what_is_accepted() {
        let e = parse_data_type("integr").unwrap_err().to_string();
        assert!(e.contains("integr") && e.contains("int64"), "{e}");
        assert!(parse_data_type("decimal(40,2)").is_err());
        assert!(parse_data_type("decimal(4,5)").is_err());
    }

    #[test]
    fn column_overrides() {
        assert_eq!(
            parse_column_override("id=int64").unwrap(),
            ("id".to_string(), DataType::Int64)
        );
        assert!(parse_column_override("id").is_err());
        assert!(parse_column_override("=int64").is_err());
    }
}
