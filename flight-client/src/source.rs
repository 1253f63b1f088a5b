//! Input files for ingest, read as a stream of record batches and never whole: Parquet through
//! `ParquetRecordBatchReader`, CSV and JSON lines through arrow's readers (schema inferred from
//! the first records, with per-column type overrides), Arrow IPC in the file or the stream
//! format. `-` is standard input (Parquet and IPC file format are spooled to a temporary file,
//! since they need random access).

mod columnar;
mod text;

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// The file formats `skein ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma (or otherwise) separated values.
    Csv,
    /// JSON lines: one object per line.
    Json,
    /// Arrow IPC, file or stream format (told apart by the file's magic bytes).
    Arrow,
}

impl FileFormat {
    /// The format a file name's extension suggests.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" | "tsv" => Some(Self::Csv),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            "arrow" | "arrows" | "ipc" | "feather" => Some(Self::Arrow),
            _ => None,
        }
    }
}

impl FromStr for FileFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Self::Parquet),
            "csv" | "tsv" => Ok(Self::Csv),
            "json" | "jsonl" | "ndjson" => Ok(Self::Json),
            "arrow" | "ipc" | "feather" => Ok(Self::Arrow),
            _ => Err(Error::InvalidArgument(format!(
                "unknown input format {s:?}: use parquet, csv, json or arrow"
            ))),
        }
    }
}

/// How input files are read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The format; `None` guesses it from each file's extension.
    pub format: Option<FileFormat>,
    /// Most rows in one batch.
    pub batch_rows: usize,
    /// Records read to infer a CSV or JSON schema.
    pub infer_rows: usize,
    /// CSV field delimiter; `None` means `,` (or a tab for `.tsv` files).
    pub delimiter: Option<u8>,
    /// Whether CSV files start with a header line.
    pub has_header: bool,
    /// Column types to use instead of the inferred (CSV, JSON) or stored (Parquet, IPC) ones.
    pub overrides: Vec<(String, DataType)>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            format: None,
            batch_rows: 65_536,
            infer_rows: 1000,
            delimiter: None,
            has_header: true,
            overrides: Vec::new(),
        }
    }
}

/// Whether `path` means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// One input file, yielding batches of at most `batch_rows` rows with the final schema.
pub struct FileSource {
    path: PathBuf,
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>,
    /// Casts to apply (Parquet and IPC overrides).
    cast_to: Option<SchemaRef>,
    batch_rows: usize,
    queued: VecDeque<RecordBatch>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Opens `path` (`-` for standard input), adding the input bytes it consumes to `consumed`
    /// as it goes.
    pub fn open(path: &Path, options: &ReadOptions, consumed: Arc<AtomicU64>) -> Result<Self> {
        let format = match options.format {
            Some(f) => f,
            None if is_stdin(path) => {
                return Err(Error::InvalidArgument(
                    "reading standard input needs --format (parquet, csv, json or arrow)".into(),
                ));
            }
            None => FileFormat::from_path(path).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "cannot tell the format of {} from its extension; give --format \
                     (parquet, csv, json or arrow)",
                    path.display()
                ))
            })?,
        };
        let opened = match format {
            FileFormat::Csv => text::open_csv(path, options, consumed)?,
            FileFormat::Json => text::open_json(path, options, consumed)?,
            FileFormat::Parquet => columnar::open_parquet(path, options, consumed)?,
            FileFormat::Arrow => columnar::open_ipc(path, consumed)?,
        };
        let (schema, cast_to) = match format {
            // CSV and JSON parse straight into the overridden types.
            FileFormat::Csv | FileFormat::Json => (opened.schema, None),
            FileFormat::Parquet | FileFormat::Arrow if options.overrides.is_empty() => {
                (opened.schema, None)
            }
            FileFormat::Parquet | FileFormat::Arrow => {
                let target = apply_overrides(path, &opened.schema, &options.overrides)?;
                (Arc::clone(&target), Some(target))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            batches: opened.batches,
            cast_to,
            batch_rows: options.batch_rows.max(1),
            queued: VecDeque::new(),
        })
    }

    /// The schema of the batches this source yields.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn decode_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Decode {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn cast(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(target) = &self.cast_to else {
            return Ok(batch);
        };
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    cast_with_options(column, field.data_type(), &options).map_err(|e| {
                        self.decode_error(format!(
                            "column {} cannot be converted to {}: {e}",
                            field.name(),
                            field.data_type()
                        ))
                    })
                }
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new(Arc::clone(target), columns).map_err(|e| self.decode_error(e))
    }
}

impl Iterator for FileSource {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(batch) = self.queued.pop_front() {
            return Some(Ok(batch));
        }
        let batch = match self.batches.next()? {
            Ok(b) => b,
            Err(e) => return Some(Err(self.decode_error(e))),
        };
        let batch = match self.cast(batch) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let rows = batch.num_rows();
        if rows <= self.batch_rows {
            return Some(Ok(batch));
        }
        let mut offset = 0;
        while offset < rows {
            let len = self.batch_rows.min(rows - offset);
            self.queued.push_back(batch.slice(offset, len));
            offset += len;
        }
        self.queued.pop_front().map(Ok)
    }
}

/// What a format module hands back: the file's schema and its batches.
struct Opened {
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>,
}

/// `schema` with the overridden columns' types replaced; an override naming no column is an
/// error that lists the columns there are.
fn apply_overrides(
    path: &Path,
    schema: &Schema,
    overrides: &[(String, DataType)],
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, data_type) in overrides {
        let field = fields
            .iter_mut()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::InvalidArgument(format!(
                    "--column {name}: {} has no column {name:?} (its columns: {})",
                    path.display(),
                    names.join(", ")
                ))
            })?;
        *field = Field::new(name, data_type.clone(), true);
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens `path` (or standard input) for sequential reading.
fn open_read(path: &Path) -> Result<Box<dyn Read + Send>> {
    if is_stdin(path) {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(file))
}

/// Reads `paths` one after another on a blocking thread and sends their batches, at most
/// `capacity` ahead of the receiver. A file with no rows sends one empty batch, so its schema
/// still reaches the table. The first error is sent and ends the reading. Must be called from
/// within a Tokio runtime (the reading runs on its blocking pool).
pub fn spawn_reader(
    paths: Vec<PathBuf>,
    options: ReadOptions,
    capacity: usize,
    consumed: Arc<AtomicU64>,
) -> mpsc::Receiver<Result<RecordBatch>> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::task::spawn_blocking(move || {
        for path in paths {
            let mut source = match FileSource::open(&path, &options, Arc::clone(&consumed)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut any = false;
            for batch in source.by_ref() {
                let failed = batch.is_err();
                any = true;
                if tx.blocking_send(batch).is_err() || failed {
                    return; // the ingest stopped, or this was the error that ends it
                }
            }
            if !any {
                let empty = RecordBatch::new_empty(source.schema());
                if tx.blocking_send(Ok(empty)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The size of an input file, when it has one (not standard input).
pub fn input_size(path: &Path) -> Option<u64> {
    if is_stdin(path) {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| m.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
