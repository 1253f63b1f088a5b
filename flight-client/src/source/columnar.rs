//! Parquet and Arrow IPC: the schema is in the file. Parquet is read row group by row group
//! (`ParquetRecordBatchReader`); IPC batch by batch, in the file format (random access) or the
//! stream format (sequential). Standard input is spooled to a temporary file when the format
//! needs random access.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::ipc::reader::{FileReader, StreamReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Counting, Opened, ReadOptions, is_stdin, open_read};
use crate::error::{Error, Result};

/// Magic bytes at the start of an Arrow IPC file (the stream format has none).
const ARROW_FILE_MAGIC: &[u8] = b"ARROW1";

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn decode_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Decode {
        path: path.to_path_buf(),
        message,
    }
}

/// Copies standard input into an anonymous temporary file, for formats that need to seek.
fn spool(mut input: impl std::io::Read, path: &Path) -> Result<File> {
    let mut file = tempfile::tempfile().map_err(io_error(path))?;
    std::io::copy(&mut input, &mut file).map_err(io_error(path))?;
    file.rewind().map_err(io_error(path))?;
    Ok(file)
}

/// Opens a file that must be seekable: standard input is spooled first.
fn open_seekable(path: &Path) -> Result<File> {
    if is_stdin(path) {
        spool(std::io::stdin().lock(), path)
    } else {
        File::open(path).map_err(io_error(path))
    }
}

/// Advances `consumed` as a proportion of `total_bytes` as `done` of `total` units are read.
struct Proportional {
    consumed: Arc<AtomicU64>,
    total_bytes: u64,
    total: u64,
    reported: u64,
}

impl Proportional {
    fn advance_to(&mut self, done: u64) {
        let at = if self.total == 0 {
            self.total_bytes
        } else {
            (u128::from(self.total_bytes) * u128::from(done.min(self.total))
                / u128::from(self.total)) as u64
        };
        if at > self.reported {
            self.consumed
                .fetch_add(at - self.reported, Ordering::Relaxed);
            self.reported = at;
        }
    }
}

pub(super) fn open_parquet(
    path: &Path,
    options: &ReadOptions,
    consumed: Arc<AtomicU64>,
) -> Result<Opened> {
    let file = open_seekable(path)?;
    let total_bytes = file.metadata().map_err(io_error(path))?.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| decode_error(path)(format!("not a readable Parquet file: {e}")))?;
    let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let reader = builder
        .with_batch_size(options.batch_rows.max(1))
        .build()
        .map_err(|e| decode_error(path)(e.to_string()))?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    let mut progress = Proportional {
        consumed,
        total_bytes,
        total: total_rows,
        reported: 0,
    };
    let mut rows = 0u64;
    let batches = reader.inspect(move |batch| {
        if let Ok(b) = batch {
            rows += b.num_rows() as u64;
            progress.advance_to(rows);
        }
    });
    Ok(Opened {
        schema,
        batches: Box::new(batches),
    })
}

pub(super) fn open_ipc(path: &Path, consumed: Arc<AtomicU64>) -> Result<Opened> {
    let before = consumed.load(Ordering::Relaxed);
    let mut reader = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: open_read(path)?,
            counter: Arc::clone(&consumed),
        },
    );
    let head = reader.fill_buf().map_err(io_error(path))?;
    if !head.starts_with(ARROW_FILE_MAGIC) {
        let reader = StreamReader::try_new(reader, None)
            .map_err(|e| decode_error(path)(format!("not an Arrow IPC stream or file: {e}")))?;
        let schema = reader.schema();
        return Ok(Opened {
            schema,
            batches: Box::new(reader),
        });
    }
    // The file format keeps its footer at the end, so it needs random access: reopen the file
    // (or spool standard input, starting with the bytes already buffered).
    let file = if is_stdin(path) {
        spool(reader, path)?
    } else {
        drop(reader);
        File::open(path).map_err(io_error(path))?
    };
    // Progress is counted in batches from here: forget the bytes counted while peeking.
    let peeked = consumed.load(Ordering::Relaxed).saturating_sub(before);
    consumed.fetch_sub(peeked, Ordering::Relaxed);
    let total_bytes = file.metadata().map_err(io_error(path))?.len();
    let reader = FileReader::try_new_buffered(file, None)
        .map_err(|e| decode_error(path)(format!("not a readable Arrow IPC file: {e}")))?;
    let schema = reader.schema();
    let mut progress = Proportional {
        consumed,
        total_bytes,
        total: reader.num_batches() as u64,
        reported: 0,
    };
    let mut done = 0u64;
    let batches = reader.inspect(move |_| {
        done += 1;
        progress.advance_to(done);
    });
    Ok(Opened {
        schema,
        batches: Box::new(batches),
    })
}
