//! CSV and JSON lines: the schema is inferred from the first records (read into a small prefix
//! buffer, which is then read again in front of the rest of the input, so standard input works
//! too), overrides replace inferred types, and arrow's readers parse straight into them.

use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::datatypes::Schema;

use super::{Counting, Opened, ReadOptions, apply_overrides, open_read};
use crate::error::{Error, Result};

/// Reads whole lines until `lines` have been read or the input ends.
fn read_prefix(reader: &mut impl BufRead, lines: usize, path: &Path) -> Result<Vec<u8>> {
    let mut prefix = Vec::new();
    for _ in 0..lines {
        let n = reader
            .read_until(b'\n', &mut prefix)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
    }
    Ok(prefix)
}

/// An input file (or standard input), buffered, counting the bytes read.
type Input = BufReader<Counting<Box<dyn Read + Send>>>;

/// The input as a buffered reader with its first `lines` lines read into memory.
fn split_prefix(path: &Path, lines: usize, consumed: Arc<AtomicU64>) -> Result<(Vec<u8>, Input)> {
    let raw = open_read(path)?;
    let mut reader = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: raw,
            counter: consumed,
        },
    );
    let prefix = read_prefix(&mut reader, lines, path)?;
    Ok((prefix, reader))
}

fn infer_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        message: format!("cannot infer the {what} schema: {e}"),
    }
}

pub(super) fn open_csv(
    path: &Path,
    options: &ReadOptions,
    consumed: Arc<AtomicU64>,
) -> Result<Opened> {
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let delimiter = options.delimiter.unwrap_or(if tsv { b'\t' } else { b',' });
    let header_lines = usize::from(options.has_header);
    let (prefix, rest) = split_prefix(path, options.infer_rows + header_lines, consumed)?;
    let format = arrow::csv::reader::Format::default()
        .with_header(options.has_header)
        .with_delimiter(delimiter);
    let (inferred, _) = format
        .infer_schema(Cursor::new(&prefix), Some(options.infer_rows))
        .map_err(|e| infer_error(path, "CSV", e))?;
    if inferred.fields().is_empty() {
        return Err(Error::Decode {
            path: path.to_path_buf(),
            message: "the file is empty (no header line)".into(),
        });
    }
    let schema = apply_overrides(path, &inferred, &options.overrides)?;
    let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
        .with_format(format)
        .with_batch_size(options.batch_rows.max(1))
        .build_buffered(Cursor::new(prefix).chain(rest))
        .map_err(|e| infer_error(path, "CSV", e))?;
    Ok(Opened {
        schema,
        batches: Box::new(reader),
    })
}

pub(super) fn open_json(
    path: &Path,
    options: &ReadOptions,
    consumed: Arc<AtomicU64>,
) -> Result<Opened> {
    let (prefix, rest) = split_prefix(path, options.infer_rows, consumed)?;
    let (inferred, _) =
        arrow::json::reader::infer_json_schema(Cursor::new(&prefix), Some(options.infer_rows))
            .map_err(|e| infer_error(path, "JSON", e))?;
    if inferred.fields().is_empty() && !prefix.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Decode {
            path: path.to_path_buf(),
            message: "no fields found in the first JSON records".into(),
        });
    }
    let inferred = in_file_order(inferred, &prefix);
    let schema = apply_overrides(path, &inferred, &options.overrides)?;
    let reader = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(options.batch_rows.max(1))
        .build(Cursor::new(prefix).chain(rest))
        .map_err(|e| infer_error(path, "JSON", e))?;
    Ok(Opened {
        schema,
        batches: Box::new(reader),
    })
}

/// Reorders inferred JSON fields (which arrow sorts by name) into the order in which their keys
/// first appear in `prefix`, as the file has them.
fn in_file_order(schema: Schema, prefix: &[u8]) -> Schema {
    let mut order: Vec<String> = Vec::new();
    for line in prefix.split(|b| *b == b'\n') {
        let mut de = serde_json::Deserializer::from_slice(line);
        if let Ok(keys) = serde::Deserializer::deserialize_map(&mut de, KeysVisitor) {
            for key in keys {
                if !order.contains(&key) {
                    order.push(key);
                }
            }
        }
    }
    let position = |name: &str| order.iter().position(|k| k == name).unwrap_or(usize::MAX);
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.sort_by_key(|f| position(f.name()));
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Collects the keys of a JSON object in order, skipping the values.
struct KeysVisitor;

impl<'de> serde::de::Visitor<'de> for KeysVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            keys.push(key);
        }
        Ok(keys)
    }
}
