//! Result output: each format writes batches as they arrive, so a large result is never held
//! whole. Tables for people (see `table.rs`), CSV, JSON (one array), NDJSON (one object per
//! line), Arrow IPC stream format and Parquet for programs.

use std::io::Write;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use clap::ValueEnum;

use crate::table::TableSink;

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Arrow IPC stream format.
    Arrow,
    /// Parquet.
    Parquet,
}

impl Format {
    /// Whether the output is binary (not for a terminal).
    pub(crate) fn is_binary(self) -> bool {
        matches!(self, Self::Arrow | Self::Parquet)
    }
}

/// Where a statement's results go, batch by batch.
pub(crate) trait Sink {
    /// Writes one batch.
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()>;
    /// Ends the output; `schema` describes an empty result (no batch written).
    fn finish(self: Box<Self>, schema: Option<&SchemaRef>) -> anyhow::Result<()>;
}

/// A sink writing `format` to `out`.
pub(crate) fn sink<'a>(format: Format, out: &'a mut (dyn Write + Send)) -> Box<dyn Sink + 'a> {
    match format {
        Format::Table => Box::new(TableSink::new(out)),
        Format::Csv => Box::new(Lazy::new(out, |w, _| {
            Ok(Box::new(CsvOut(
                arrow::csv::WriterBuilder::new().with_header(true).build(w),
            )))
        })),
        Format::Json => Box::new(Lazy::new(out, |w, _| {
            Ok(Box::new(JsonOut(arrow::json::ArrayWriter::new(w))))
        })),
        Format::Ndjson => Box::new(Lazy::new(out, |w, _| {
            Ok(Box::new(NdjsonOut(arrow::json::LineDelimitedWriter::new(
                w,
            ))))
        })),
        Format::Arrow => Box::new(Lazy::new(out, |w, s| {
            Ok(Box::new(IpcOut(arrow::ipc::writer::StreamWriter::try_new(
                w, &s,
            )?)))
        })),
        Format::Parquet => Box::new(Lazy::new(out, |w, s| {
            Ok(Box::new(ParquetOut(parquet::arrow::ArrowWriter::try_new(
                w, s, None,
            )?)))
        })),
    }
}

/// A writer of one format, made once the schema is known.
trait Writer {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

type MakeWriter<'a> =
    fn(&'a mut (dyn Write + Send), SchemaRef) -> anyhow::Result<Box<dyn Writer + 'a>>;

/// Creates its writer with the first batch's schema (or the announced one, if none came).
struct Lazy<'a> {
    out: Option<&'a mut (dyn Write + Send)>,
    make: MakeWriter<'a>,
    writer: Option<Box<dyn Writer + 'a>>,
}

impl<'a> Lazy<'a> {
    fn new(out: &'a mut (dyn Write + Send), make: MakeWriter<'a>) -> Self {
        Self {
            out: Some(out),
            make,
            writer: None,
        }
    }

    fn writer(&mut self, schema: SchemaRef) -> anyhow::Result<&mut Box<dyn Writer + 'a>> {
        if self.writer.is_none() {
            let out = self
                .out
                .take()
                .ok_or_else(|| anyhow::anyhow!("output already finished"))?;
            self.writer = Some((self.make)(out, schema)?);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("output writer missing"))
    }
}

impl Sink for Lazy<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.writer(batch.schema())?.write(batch)
    }

    fn finish(mut self: Box<Self>, schema: Option<&SchemaRef>) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let Some(schema) = schema else {
                return Ok(());
            };
            let empty = RecordBatch::new_empty(SchemaRef::clone(schema));
            self.writer(SchemaRef::clone(schema))?.write(&empty)?;
        }
        match self.writer.take() {
            Some(w) => w.finish(),
            None => Ok(()),
        }
    }
}

struct CsvOut<'a>(arrow::csv::Writer<&'a mut (dyn Write + Send)>);

impl Writer for CsvOut<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        Ok(self.0.write(batch)?)
    }
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let out = self.0.into_inner();
        Ok(out.flush()?)
    }
}

struct JsonOut<'a>(arrow::json::ArrayWriter<&'a mut (dyn Write + Send)>);

impl Writer for JsonOut<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        Ok(self.0.write(batch)?)
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.0.finish()?;
        let out = self.0.into_inner();
        out.write_all(b"\n")?;
        Ok(out.flush()?)
    }
}

struct NdjsonOut<'a>(arrow::json::LineDelimitedWriter<&'a mut (dyn Write + Send)>);

impl Writer for NdjsonOut<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        Ok(self.0.write(batch)?)
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.0.finish()?;
        Ok(self.0.into_inner().flush()?)
    }
}

struct IpcOut<'a>(arrow::ipc::writer::StreamWriter<&'a mut (dyn Write + Send)>);

impl Writer for IpcOut<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        Ok(self.0.write(batch)?)
    }
    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.0.finish()?;
        Ok(self.0.into_inner()?.flush()?)
    }
}

struct ParquetOut<'a>(parquet::arrow::ArrowWriter<&'a mut (dyn Write + Send)>);

impl Writer for ParquetOut<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        Ok(self.0.write(batch)?)
    }
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let out = self.0.into_inner()?;
        Ok(out.flush()?)
    }
}

/// Whether an error (or one of its causes) is a write to a closed pipe (`skein … | head`).
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        // Some writers (arrow's CSV) keep only the I/O error's text.
        if e.to_string().contains("Broken pipe (os error 32)") {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        if let Some(arrow::error::ArrowError::IoError(_, io)) =
            e.downcast_ref::<arrow::error::ArrowError>()
        {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        if let Some(parquet::errors::ParquetError::External(inner)) =
            e.downcast_ref::<parquet::errors::ParquetError>()
        {
            return inner
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        }
        false
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("a"), None])) as _,
            ),
        ])
        .unwrap()
    }

    fn render(format: Format, batches: &[RecordBatch], schema: Option<&SchemaRef>) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        {
            let mut s = sink(format, &mut out);
            for b in batches {
                s.write(b).unwrap();
            }
            s.finish(schema).unwrap();
        }
        out
    }

    #[test]
    fn text_formats() {
        let b = batch();
        let csv = String::from_utf8(render(Format::Csv, &[b.clone(), b.clone()], None)).unwrap();
        assert_eq!(csv, "id,name\n1,a\n2,\n1,a\n2,\n");
        let json = String::from_utf8(render(Format::Json, std::slice::from_ref(&b), None)).unwrap();
        assert_eq!(json, "[{\"id\":1,\"name\":\"a\"},{\"id\":2}]\n");
        let nd = String::from_utf8(render(Format::Ndjson, std::slice::from_ref(&b), None)).unwrap();
        assert_eq!(nd, "{\"id\":1,\"name\":\"a\"}\n{\"id\":2}\n");
    }

    #[test]
    fn empty_results_keep_their_schema() {
        let schema = batch().schema();
        let csv = String::from_utf8(render(Format::Csv, &[], Some(&schema))).unwrap();
        assert_eq!(csv, "id,name\n");
        let json = String::from_utf8(render(Format::Json, &[], Some(&schema))).unwrap();
        assert_eq!(json.trim(), "[]");
        let ipc = render(Format::Arrow, &[], Some(&schema));
        let reader = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).unwrap();
        assert_eq!(reader.schema(), schema);
    }

    #[test]
    fn binary_formats_round_trip() {
        let b = batch();
        let ipc = render(Format::Arrow, &[b.clone(), b.clone()], None);
        let got: Vec<RecordBatch> = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, vec![b.clone(), b.clone()]);
        let pq = render(Format::Parquet, std::slice::from_ref(&b), None);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            bytes::Bytes::from(pq),
            10,
        )
        .unwrap();
        let got: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![b]);
    }
}
