//! Aligned tables for people (comfy-table), rendered in chunks of rows so a large result streams:
//! the first chunk fixes the column widths and later chunks that fit them continue the same
//! table; a chunk with wider values closes it and starts a wider one, header repeated.

use std::io::Write;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use comfy_table::{
    Cell, CellAlignment, ColumnConstraint, ContentArrangement, Table, Width, presets,
};

/// Rows rendered together; the first such chunk sets the column widths.
const CHUNK_ROWS: usize = 1000;
/// Cell padding comfy-table adds (one space each side).
const PADDING: u16 = 2;

/// Writes batches as one aligned table, then a `(N rows)` line.
pub(crate) struct TableSink<'a> {
    out: &'a mut (dyn Write + Send),
    header: Option<Vec<String>>,
    right_align: Vec<bool>,
    /// Column widths (with padding), fixed by the first chunk.
    widths: Option<Vec<u16>>,
    pending: Vec<Vec<String>>,
    /// The table's bottom border, printed at the end.
    bottom: Option<String>,
    rows: u64,
}

impl<'a> TableSink<'a> {
    pub(crate) fn new(out: &'a mut (dyn Write + Send)) -> Self {
        Self {
            out,
            header: None,
            right_align: Vec::new(),
            widths: None,
            pending: Vec::new(),
            bottom: None,
            rows: 0,
        }
    }

    fn set_schema(&mut self, schema: &SchemaRef) {
        if self.header.is_none() {
            self.header = Some(schema.fields().iter().map(|f| f.name().clone()).collect());
            self.right_align = schema
                .fields()
                .iter()
                .map(|f| f.data_type().is_numeric())
                .collect();
        }
    }

    fn base_table(&self) -> Table {
        let mut table = Table::new();
        table
            .load_style(presets::UTF8_FULL_CONDENSED.with_rounded_corners())
            .set_content_arrangement(ContentArrangement::Disabled);
        table
    }

    fn align(&self, table: &mut Table) {
        for (i, right) in self.right_align.iter().enumerate() {
            if let Some(column) = table.column_mut(i)
                && *right
            {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
    }

    /// A table of `rows`, with the header if `header`, and fixed column widths if given.
    fn render(&self, rows: &[Vec<String>], header: bool, widths: Option<&[u16]>) -> Table {
        let mut table = self.base_table();
        if header {
            table.set_header(self.header.iter().flatten().map(Cell::new));
        }
        for row in rows {
            table.add_row(row.clone());
        }
        if let Some(widths) = widths {
            table.set_constraints(
                widths
                    .iter()
                    .map(|w| ColumnConstraint::Absolute(Width::Fixed(*w))),
            );
        }
        self.align(&mut table);
        table
    }

    /// Renders the pending rows. They continue the current table when they fit its column
    /// widths; otherwise the table is closed and a wider one (with the header again) begins.
    fn flush_chunk(&mut self) -> anyhow::Result<()> {
        let rows = std::mem::take(&mut self.pending);
        let needed: Vec<u16> = self
            .render(&rows, true, None)
            .column_max_content_widths()
            .into_iter()
            .map(|w| w + PADDING)
            .collect();
        match &self.widths {
            Some(widths) if needed.iter().zip(widths).all(|(n, w)| n <= w) => {
                if rows.is_empty() {
                    return Ok(());
                }
                let lines: Vec<String> = self.render(&rows, false, Some(widths)).lines().collect();
                // Without the top and bottom borders, the rows continue the table above.
                let body = lines.len().saturating_sub(1);
                for line in lines.iter().take(body).skip(1) {
                    writeln!(self.out, "{line}")?;
                }
            }
            previous => {
                let widths: Vec<u16> = match previous {
                    Some(old) => needed.iter().zip(old).map(|(n, o)| *n.max(o)).collect(),
                    None => needed,
                };
                if let Some(bottom) = self.bottom.take() {
                    writeln!(self.out, "{bottom}")?;
                }
                let mut lines: Vec<String> =
                    self.render(&rows, true, Some(&widths)).lines().collect();
                self.bottom = lines.pop();
                for line in lines {
                    writeln!(self.out, "{line}")?;
                }
                self.widths = Some(widths);
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

impl crate::output::Sink for TableSink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.set_schema(&batch.schema());
        let options = FormatOptions::default().with_null("NULL");
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref() as &dyn Array, &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            self.pending.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
            if self.pending.len() >= CHUNK_ROWS {
                self.flush_chunk()?;
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>, schema: Option<&SchemaRef>) -> anyhow::Result<()> {
        if self.header.is_none() {
            let Some(schema) = schema else {
                return Ok(());
            };
            self.set_schema(schema);
        }
        self.flush_chunk()?;
        if let Some(bottom) = self.bottom.take() {
            writeln!(self.out, "{bottom}")?;
        }
        let noun = if self.rows == 1 { "row" } else { "rows" };
        writeln!(self.out, "({} {noun})", self.rows)?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;
    use crate::output::Sink;

    fn render(batches: &[RecordBatch]) -> String {
        let mut out: Vec<u8> = Vec::new();
        {
            let mut sink = Box::new(TableSink::new(&mut out));
            for b in batches {
                sink.write(b).unwrap();
            }
            sink.finish(None).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn chunks_join_into_one_aligned_table() {
        let n = CHUNK_ROWS as i64 * 2 + 5;
        let ids = Int64Array::from_iter_values((0..n).map(|i| i % 500));
        let mut names: Vec<String> = (0..n).map(|i| format!("n{i:04}")).collect();
        // Wider than the first chunks' column: its chunk starts a wider table.
        names[n as usize - 1] = "abcdefghij".to_string();
        let names = StringArray::from_iter_values(names);
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as _),
            ("name", Arc::new(names) as _),
        ])
        .unwrap();
        let text = render(&[batch]);
        let lines: Vec<&str> = text.lines().collect();
        // Table 1: top, header, separator, 2000 rows, bottom; table 2 the same with 5 rows;
        // then the footer.
        let first = CHUNK_ROWS * 2 + 4;
        assert_eq!(
            lines.len(),
            first + 5 + 4 + 1,
            "{}",
            &text[text.len() - 300..]
        );
        let width = lines[0].chars().count();
        assert!(lines[..first].iter().all(|l| l.chars().count() == width));
        let wider = lines[first].chars().count();
        assert!(wider > width);
        assert!(
            lines[first..lines.len() - 1]
                .iter()
                .all(|l| l.chars().count() == wider)
        );
        assert!(lines[1].contains("id") && lines[1].contains("name"));
        assert!(lines[first + 1].contains("id") && lines[first + 1].contains("name"));
        assert!(lines[3].contains(" 0 ") && lines[3].contains("n0000"));
        assert!(lines[first - 2].contains("n1999"));
        assert!(lines[lines.len() - 3].contains("abcdefghij"));
        assert_eq!(lines[lines.len() - 1], format!("({n} rows)"));
    }

    #[test]
    fn nulls_and_empty_results() {
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(vec![None::<&str>])) as _,
        )])
        .unwrap();
        let text = render(std::slice::from_ref(&batch));
        assert!(
            text.contains("NULL") && text.ends_with("(1 row)\n"),
            "{text}"
        );
        let empty = RecordBatch::new_empty(batch.schema());
        let text = render(&[empty]);
        assert!(
            text.contains(" s ") && text.ends_with("(0 rows)\n"),
            "{text}"
        );
    }
}
