//! A table at run time: its in-memory buffer and the DuckDB view users query.
//!
//! The buffer is a DuckDB table in the internal schema. Flushing swaps in a fresh buffer
//! *generation* first, so appends go on while the old generation is written to Parquet; the
//! view unions the table's files with every live generation, and is replaced, together with
//! dropping the flushed generation, in one DuckDB transaction once the file is in the manifest.
//! A row is therefore always visible exactly once. Every method blocks.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::Connection;
use parking_lot::{Mutex, RwLock};
use skein_storage::{ColumnMeta, TableMeta};

use crate::engine::{BUFFER_SCHEMA, Engine, ident, literal, result_schema};
use crate::error::{Error, Result};

/// A table's live state on this node.
pub struct TableRuntime {
    /// The catalog id.
    pub id: u64,
    /// The name as created.
    pub name: String,
    /// The Arrow schema appended batches are fitted to (what DuckDB returns for the table).
    schema: RwLock<SchemaRef>,
    /// Lower-cased names of NOT NULL columns.
    not_null: RwLock<HashSet<String>>,
    /// Held by a flush or a schema change from start to end, so that they never interleave.
    pub maintenance: tokio::sync::Mutex<()>,
    /// The buffer; appends, generation swaps and view changes hold it.
    buffer: Mutex<Buffer>,
}

impl std::fmt::Debug for TableRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRuntime")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// The buffer of one table.
struct Buffer {
    /// The connection used for this table's appends and view changes.
    conn: Connection,
    /// Generation appends go to.
    active: u64,
    /// Older generations still being flushed (visible until their file is committed).
    flushing: Vec<u64>,
    /// Rows in the active generation.
    rows: u64,
    /// Arrow bytes appended to the active generation.
    bytes: u64,
    /// When the active generation got its first row.
    oldest: Option<Instant>,
    /// Set once the table is dropped; appends then fail.
    dropped: bool,
}

/// How full a buffer is.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferLevel {
    /// Rows not yet flushed (all generations).
    pub rows: u64,
    /// Arrow bytes in the active generation.
    pub bytes: u64,
    /// Age of the oldest unflushed row in the active generation.
    pub age: Option<std::time::Duration>,
    /// Whether an earlier flush left a generation behind.
    pub pending: bool,
}

fn buffer_table(id: u64, generation: u64) -> String {
    format!("{BUFFER_SCHEMA}.{}", ident(&format!("t{id}_g{generation}")))
}

fn column_list(columns: &[ColumnMeta]) -> String {
    columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL of the view over a table's files (at `paths`, one per file) and buffer generations.
fn view_sql(meta: &TableMeta, paths: &[String], generations: &[u64]) -> String {
    let mut parts = Vec::new();
    // Files written before a column was added lack it: group files by the columns they hold.
    let mut groups: Vec<(Vec<String>, Vec<&str>)> = Vec::new();
    for (file, path) in meta.files.iter().zip(paths) {
        let cols: Vec<String> = file.columns.iter().map(|c| c.to_lowercase()).collect();
        match groups.iter_mut().find(|(c, _)| *c == cols) {
            Some((_, ps)) => ps.push(path),
            None => groups.push((cols, vec![path])),
        }
    }
    for (cols, group_paths) in groups {
        let select = meta
            .columns
            .iter()
            .map(|c| {
                let source = if cols.contains(&c.name.to_lowercase()) {
                    ident(&c.name)
                } else {
                    "NULL".to_string()
                };
                format!("CAST({source} AS {}) AS {}", c.sql_type, ident(&c.name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let list = group_paths
            .iter()
            .map(|p| literal(p))
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("SELECT {select} FROM read_parquet([{list}])"));
    }
    let cols = column_list(&meta.columns);
    for g in generations {
        parts.push(format!("SELECT {cols} FROM {}", buffer_table(meta.id, *g)));
    }
    format!(
        "CREATE OR REPLACE VIEW main.{} AS {}",
        ident(&meta.name),
        parts.join(" UNION ALL ")
    )
}

/// Runs `statements` in one transaction on `conn`; rolls back if any fails.
fn transaction(conn: &Connection, statements: &[String]) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    for s in statements {
        if let Err(e) = conn.execute_batch(s) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

impl TableRuntime {
    /// Creates the buffer and the view of a table described by `meta` whose files are at
    /// `paths`.
    pub fn open(engine: &Engine, meta: &TableMeta, paths: &[String]) -> Result<Self> {
        let conn = engine.connect()?;
        let defs = meta
            .columns
            .iter()
            .map(|c| format!("{} {}", ident(&c.name), c.sql_type))
            .collect::<Vec<_>>()
            .join(", ");
        let generation = 1;
        transaction(
            &conn,
            &[
                format!(
                    "CREATE OR REPLACE TABLE {} ({defs})",
                    buffer_table(meta.id, generation)
                ),
                view_sql(meta, paths, &[generation]),
            ],
        )?;
        let schema = result_schema(
            &conn,
            &format!("SELECT * FROM {}", buffer_table(meta.id, generation)),
        )?;
        Ok(Self {
            id: meta.id,
            name: meta.name.clone(),
            schema: RwLock::new(schema),
            not_null: RwLock::new(not_null_set(&meta.columns)),
            maintenance: tokio::sync::Mutex::new(()),
            buffer: Mutex::new(Buffer {
                conn,
                active: generation,
                flushing: Vec::new(),
                rows: 0,
                bytes: 0,
                oldest: None,
                dropped: false,
            }),
        })
    }

    /// The Arrow schema batches are fitted to.
    pub fn schema(&self) -> SchemaRef {
        self.schema.read().clone()
    }

    /// Whether `column` is declared NOT NULL.
    pub fn is_not_null(&self, column: &str) -> bool {
        self.not_null.read().contains(&column.to_lowercase())
    }

    /// Appends a batch already fitted to [`Self::schema`].
    pub fn append(&self, batch: &RecordBatch) -> Result<()> {
        let mut buf = self.buffer.lock();
        if buf.dropped {
            return Err(Error::UnknownTable {
                table: self.name.clone(),
            });
        }
        let table = format!("t{}_g{}", self.id, buf.active);
        {
            let mut appender = buf.conn.appender_to_db(&table, BUFFER_SCHEMA)?;
            appender.append_record_batch(batch.clone())?;
            appender.flush()?;
        }
        buf.rows += batch.num_rows() as u64;
        buf.bytes += batch.get_array_memory_size() as u64;
        buf.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// How full the buffer is.
    pub fn level(&self) -> BufferLevel {
        let buf = self.buffer.lock();
        BufferLevel {
            rows: buf.rows,
            bytes: buf.bytes,
            age: buf.oldest.map(|t| t.elapsed()),
            pending: !buf.flushing.is_empty(),
        }
    }

    /// Starts a flush: returns the generation to write out (an earlier unfinished one first),
    /// or `None` if there is nothing to flush. New appends go to a fresh generation.
    pub fn begin_flush(&self, meta: &TableMeta, paths: &[String]) -> Result<Option<u64>> {
        let mut buf = self.buffer.lock();
        if let Some(g) = buf.flushing.first() {
            return Ok(Some(*g));
        }
        if buf.rows == 0 || buf.dropped {
            return Ok(None);
        }
        let old = buf.active;
        let new = old + 1;
        let generations = [old, new];
        transaction(
            &buf.conn,
            &[
                format!(
                    "CREATE TABLE {} AS SELECT * FROM {} LIMIT 0",
                    buffer_table(self.id, new),
                    buffer_table(self.id, old)
                ),
                view_sql(meta, paths, &generations),
            ],
        )?;
        buf.flushing.push(old);
        buf.active = new;
        buf.rows = 0;
        buf.bytes = 0;
        buf.oldest = None;
        Ok(Some(old))
    }

    /// Writes generation `generation` to a Parquet file at `path` (zstd, with statistics).
    pub fn write_parquet(&self, generation: u64, path: &Path) -> Result<u64> {
        let conn = self.buffer.lock().conn.try_clone()?;
        let rows = conn.execute(
            &format!(
                "COPY (SELECT * FROM {}) TO {} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)",
                buffer_table(self.id, generation),
                literal(&path.display().to_string())
            ),
            [],
        )?;
        Ok(rows as u64)
    }

    /// Completes a flush after the file is in the manifest: the view switches to `meta`'s files
    /// and the flushed generation is dropped, in one transaction.
    pub fn finish_flush(&self, generation: u64, meta: &TableMeta, paths: &[String]) -> Result<()> {
        let mut buf = self.buffer.lock();
        let mut remaining: Vec<u64> = buf
            .flushing
            .iter()
            .copied()
            .filter(|g| *g != generation)
            .collect();
        remaining.push(buf.active);
        transaction(
            &buf.conn,
            &[
                view_sql(meta, paths, &remaining),
                format!("DROP TABLE IF EXISTS {}", buffer_table(self.id, generation)),
            ],
        )?;
        buf.flushing.retain(|g| *g != generation);
        Ok(())
    }

    /// Adds columns (already in `meta`) to every generation and to the view.
    pub fn add_columns(
        &self,
        added: &[ColumnMeta],
        meta: &TableMeta,
        paths: &[String],
    ) -> Result<()> {
        let buf = self.buffer.lock();
        let mut generations = buf.flushing.clone();
        generations.push(buf.active);
        let mut statements = Vec::new();
        for g in &generations {
            for c in added {
                statements.push(format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    buffer_table(self.id, *g),
                    ident(&c.name),
                    c.sql_type
                ));
            }
        }
        statements.push(view_sql(meta, paths, &generations));
        transaction(&buf.conn, &statements)?;
        let schema = result_schema(
            &buf.conn,
            &format!("SELECT * FROM {}", buffer_table(self.id, buf.active)),
        )?;
        *self.schema.write() = schema;
        *self.not_null.write() = not_null_set(&meta.columns);
        Ok(())
    }

    /// Removes the view and every buffer generation; later appends fail.
    pub fn drop_all(&self, name_in_view: &str) -> Result<()> {
        let mut buf = self.buffer.lock();
        let mut statements = vec![format!("DROP VIEW IF EXISTS main.{}", ident(name_in_view))];
        for g in buf.flushing.iter().chain(std::iter::once(&buf.active)) {
            statements.push(format!(
                "DROP TABLE IF EXISTS {}",
                buffer_table(self.id, *g)
            ));
        }
        transaction(&buf.conn, &statements)?;
        buf.dropped = true;
        Ok(())
    }
}

fn not_null_set(columns: &[ColumnMeta]) -> HashSet<String> {
    columns
        .iter()
        .filter(|c| !c.nullable)
        .map(|c| c.name.to_lowercase())
        .collect()
}
