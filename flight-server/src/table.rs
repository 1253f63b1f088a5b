//! A table at run time: its in-memory buffer and the DuckDB views users query.
//!
//! The buffer is a DuckDB table in the internal schema. Flushing swaps in a fresh buffer
//! *generation* first, so appends go on while the old generation is written to Parquet.
//!
//! Views: `main.<name>` is `SELECT * FROM "__skein_t<id>"`, and DuckDB resolves that inner name
//! on the connection that runs the query, temporary objects first. A query gets a temporary
//! `"__skein_t<id>"` over exactly the files it needs (after pruning, from the local cache) and
//! the buffer generations of one consistent [`ReadView`]; the permanent `main."__skein_t<id>"`
//! (the table's local files, if the store is local, and its generations) serves everything
//! else, such as finding a result's schema. A flushed generation's table is dropped only when
//! no read view holds it any more, and a read view never holds both a generation and the file
//! it was flushed to: a row is always visible exactly once. Every method blocks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::Connection;
use parking_lot::{Mutex, RwLock};
use skein_storage::{ColumnMeta, TableMeta};

use crate::engine::{BUFFER_SCHEMA, Engine, ident, literal, result_schema};
use crate::error::{Error, Result};
use crate::layout::{WrittenFile, flushed_from, write_parquet_files};

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
    /// Held shared by an append from its WAL record to its buffer append, and exclusively by the
    /// generation swap of a flush: so a generation holds every record of the table up to its
    /// highest sequence number, and the flushed WAL position is exact.
    pub ingest_gate: Arc<tokio::sync::RwLock<()>>,
    /// The buffer's bookkeeping; generation swaps and view changes hold it.
    buffer: Mutex<Buffer>,
    /// Idle connections for appends, so that concurrent writers append in parallel.
    append_connections: Mutex<Vec<Connection>>,
    /// The highest WAL sequence number appended (0: none).
    pub last_seq: std::sync::atomic::AtomicU64,
    /// Appends between their membership mark and their buffer append.
    pub appending: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TableRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRuntime")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// One buffer generation: a DuckDB table of rows not yet in Parquet.
#[derive(Debug, Clone)]
struct Generation {
    id: u64,
    /// Rows appended.
    rows: u64,
    /// Arrow bytes appended.
    bytes: u64,
    /// When the first row came.
    oldest: Option<Instant>,
    /// Lowest and highest WAL sequence numbers of the records appended.
    seqs: Option<(u64, u64)>,
    /// The name stem (and file sequence number) chosen for its Parquet files, before the
    /// upload: a retry reuses it, and read views take either the generation or the listed
    /// files (see [`flushed_from`]).
    file: Option<(String, u64)>,
    /// Held by every read view that includes the generation.
    readers: Arc<()>,
}

impl Generation {
    fn new(id: u64) -> Self {
        Self {
            id,
            rows: 0,
            bytes: 0,
            oldest: None,
            seqs: None,
            file: None,
            readers: Arc::new(()),
        }
    }
}

/// The buffer of one table.
struct Buffer {
    /// The connection used for this table's appends and view changes.
    conn: Connection,
    /// The generation appends go to.
    active: Generation,
    /// Older generations still being flushed (visible until their file is committed).
    flushing: Vec<Generation>,
    /// Flushed generations that read views still hold; dropped once none does.
    retired: Vec<Generation>,
    /// The table's newest metadata (files, columns) and the catalog (epoch, version) it is from.
    meta: TableMeta,
    meta_version: (u64, u64),
    /// Set once the table is dropped; appends then fail.
    dropped: bool,
}

impl Buffer {
    fn generations(&self) -> impl Iterator<Item = &Generation> {
        self.flushing.iter().chain(std::iter::once(&self.active))
    }

    fn generation_ids(&self) -> Vec<u64> {
        self.generations().map(|g| g.id).collect()
    }
}

/// How full a buffer is.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferLevel {
    /// Rows in the active generation.
    pub rows: u64,
    /// Arrow bytes in the active generation.
    pub bytes: u64,
    /// Age of the oldest row in the active generation.
    pub age: Option<std::time::Duration>,
    /// Whether an earlier flush left a generation behind.
    pub pending: bool,
    /// Rows in every generation (what is not yet in Parquet).
    pub total_rows: u64,
    /// Arrow bytes in every generation.
    pub total_bytes: u64,
    /// The lowest WAL sequence number any generation holds: the WAL must keep it.
    pub min_seq: Option<u64>,
}

/// What one query reads of a table: its files and live generations at one moment. Holding it
/// keeps those generations' tables alive.
#[derive(Debug)]
pub struct ReadView {
    /// The table's metadata, with the files to read.
    pub meta: TableMeta,
    /// Buffer generations to read.
    pub generations: Vec<u64>,
    /// The highest WAL sequence number in each of `generations` (none if empty).
    pub generation_seqs: Vec<Option<u64>>,
    _readers: Vec<Arc<()>>,
}

/// A generation handed to a flush.
#[derive(Debug, Clone)]
pub struct FlushGeneration {
    /// Its id.
    pub id: u64,
    /// The highest WAL sequence number in it: with the file committed, every record of the
    /// table up to here is in Parquet.
    pub max_seq: Option<u64>,
    /// The name stem and file sequence number an earlier attempt chose.
    pub file: Option<(String, u64)>,
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

/// `name TYPE, …` of `columns`, for a table with the same columns.
pub(crate) fn column_defs(columns: &[ColumnMeta]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}", ident(&c.name), c.sql_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of the view `main.<name>` reads: a query's temporary view, or the permanent one.
pub(crate) fn inner_view(id: u64) -> String {
    ident(&format!("__skein_t{id}"))
}

/// The view users name.
fn user_view_sql(meta: &TableMeta) -> String {
    format!(
        "CREATE OR REPLACE VIEW main.{} AS SELECT * FROM {}",
        ident(&meta.name),
        inner_view(meta.id)
    )
}

/// The permanent inner view.
fn view_sql(meta: &TableMeta, paths: &[String], generations: &[u64]) -> String {
    format!(
        "CREATE OR REPLACE VIEW main.{} AS {}",
        inner_view(meta.id),
        view_body(meta, paths, generations, true)
    )
}

/// A query's temporary inner view over `meta`'s files (at `paths`), `generations`, and
/// `extra` relations with the table's columns (rows shipped from other nodes).
pub(crate) fn temp_view_sql(
    meta: &TableMeta,
    paths: &[String],
    generations: &[u64],
    extra: &[String],
) -> String {
    let mut body = view_body(meta, paths, generations, extra.is_empty());
    if !extra.is_empty() {
        let cols = column_list(&meta.columns);
        let parts: Vec<String> = extra
            .iter()
            .map(|r| format!("SELECT {cols} FROM {r}"))
            .collect();
        if !body.is_empty() {
            body.push_str(" UNION ALL ");
        }
        body.push_str(&parts.join(" UNION ALL "));
    }
    format!(
        "CREATE OR REPLACE TEMP VIEW {} AS {body}",
        inner_view(meta.id)
    )
}

/// The union of a table's files (at `paths`, one per file) and buffer generations; with
/// `placeholder`, an empty relation with the right columns when there is neither.
fn view_body(meta: &TableMeta, paths: &[String], generations: &[u64], placeholder: bool) -> String {
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
    if parts.is_empty() && placeholder {
        // A dropped table's view: no rows, the right columns.
        let select = meta
            .columns
            .iter()
            .map(|c| format!("CAST(NULL AS {}) AS {}", c.sql_type, ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("SELECT {select} WHERE false"));
    }
    parts.join(" UNION ALL ")
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
    /// Creates the buffer and the views of a table described by `meta` (of catalog `version`)
    /// whose files are at `paths` (none if they are not local).
    pub fn open(
        engine: &Engine,
        meta: &TableMeta,
        version: (u64, u64),
        paths: &[String],
    ) -> Result<Self> {
        let conn = engine.connect()?;
        let defs = column_defs(&meta.columns);
        let generation = 1;
        transaction(
            &conn,
            &[
                format!(
                    "CREATE OR REPLACE TABLE {} ({defs})",
                    buffer_table(meta.id, generation)
                ),
                view_sql(meta, paths, &[generation]),
                user_view_sql(meta),
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
            ingest_gate: Arc::new(tokio::sync::RwLock::new(())),
            buffer: Mutex::new(Buffer {
                conn,
                active: Generation::new(generation),
                flushing: Vec::new(),
                retired: Vec::new(),
                meta: without_retired(meta),
                meta_version: version,
                dropped: false,
            }),
            append_connections: Mutex::new(Vec::new()),
            last_seq: std::sync::atomic::AtomicU64::new(0),
            appending: std::sync::atomic::AtomicU64::new(0),
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

    /// Appends a batch already fitted to [`Self::schema`], logged in the WAL as `seq`. The
    /// caller holds [`Self::ingest_gate`] shared (or is alone, as replay is), so the active
    /// generation stays the same while appends run in parallel on their own connections.
    pub fn append(&self, batch: &RecordBatch, seq: u64) -> Result<()> {
        let (generation, conn) = {
            let buf = self.buffer.lock();
            if buf.dropped {
                return Err(Error::UnknownTable {
                    table: self.name.clone(),
                });
            }
            let idle = self.append_connections.lock().pop();
            let conn = match idle {
                Some(c) => c,
                None => buf.conn.try_clone()?,
            };
            (buf.active.id, conn)
        };
        let table = format!("t{}_g{generation}", self.id);
        let appended = (|| -> Result<()> {
            let mut appender = conn.appender_to_db(&table, BUFFER_SCHEMA)?;
            appender.append_record_batch(batch.clone())?;
            appender.flush()?;
            Ok(())
        })();
        self.append_connections.lock().push(conn);
        appended?;
        let mut buf = self.buffer.lock();
        if buf.active.id != generation {
            return Err(Error::Internal(format!(
                "table {:?}: generation {generation} was swapped during an append",
                self.name
            )));
        }
        self.last_seq
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        let g = &mut buf.active;
        g.rows += batch.num_rows() as u64;
        g.bytes += crate::types::arrow_bytes(batch);
        g.oldest.get_or_insert_with(Instant::now);
        g.seqs = Some(match g.seqs {
            Some((lo, hi)) => (lo.min(seq), hi.max(seq)),
            None => (seq, seq),
        });
        Ok(())
    }

    /// How full the buffer is.
    pub fn level(&self) -> BufferLevel {
        let buf = self.buffer.lock();
        BufferLevel {
            rows: buf.active.rows,
            bytes: buf.active.bytes,
            age: buf.active.oldest.map(|t| t.elapsed()),
            pending: !buf.flushing.is_empty(),
            total_rows: buf.generations().map(|g| g.rows).sum(),
            total_bytes: buf.generations().map(|g| g.bytes).sum(),
            min_seq: buf.generations().filter_map(|g| g.seqs.map(|s| s.0)).min(),
        }
    }

    /// Starts a flush: returns the generation to write out (an earlier unfinished one first),
    /// or `None` if there is nothing to flush. New appends go to a fresh generation. The caller
    /// holds [`Self::ingest_gate`] exclusively.
    pub fn begin_flush(
        &self,
        meta: &TableMeta,
        paths: &[String],
    ) -> Result<Option<FlushGeneration>> {
        let mut buf = self.buffer.lock();
        if let Some(g) = buf.flushing.first() {
            return Ok(Some(FlushGeneration {
                id: g.id,
                max_seq: g.seqs.map(|s| s.1),
                file: g.file.clone(),
            }));
        }
        if buf.active.rows == 0 || buf.dropped {
            return Ok(None);
        }
        let old = buf.active.id;
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
        let flushed = std::mem::replace(&mut buf.active, Generation::new(new));
        let max_seq = flushed.seqs.map(|s| s.1);
        buf.flushing.push(flushed);
        Ok(Some(FlushGeneration {
            id: old,
            max_seq,
            file: None,
        }))
    }

    /// Records the name stem (and file sequence number) of generation `generation`'s files,
    /// before they are uploaded and committed: a retry reuses it, and from now on read views
    /// take either the generation or its files (once the manifest lists them), never both.
    pub fn set_flush_file(&self, generation: u64, stem: &str, seq: u64) {
        let mut buf = self.buffer.lock();
        if let Some(g) = buf.flushing.iter_mut().find(|g| g.id == generation) {
            g.file = Some((stem.to_string(), seq));
        }
    }

    /// Takes `meta` (from catalog `version`, as (epoch, version)) as the table's metadata if it
    /// is newer than what the runtime has.
    pub fn set_meta(&self, meta: &TableMeta, version: (u64, u64)) {
        let mut buf = self.buffer.lock();
        if version > buf.meta_version {
            buf.meta = without_retired(meta);
            buf.meta_version = version;
        }
    }

    /// The table's newest metadata (without its retired files: the catalog has those).
    pub fn meta(&self) -> TableMeta {
        self.buffer.lock().meta.clone()
    }

    /// What a query reads now: every file of the newest metadata and every live generation,
    /// except that a generation whose file is already listed is left out.
    pub fn read_view(&self) -> Result<ReadView> {
        let buf = self.buffer.lock();
        if buf.dropped {
            return Err(Error::UnknownTable {
                table: self.name.clone(),
            });
        }
        let listed = |stem: &str| buf.meta.files.iter().any(|f| flushed_from(&f.key, stem));
        let mut generations = Vec::new();
        let mut generation_seqs = Vec::new();
        let mut readers = Vec::new();
        for g in buf.generations() {
            if g.file.as_ref().is_some_and(|(stem, _)| listed(stem)) {
                continue;
            }
            generations.push(g.id);
            generation_seqs.push(g.seqs.map(|(_, hi)| hi));
            readers.push(Arc::clone(&g.readers));
        }
        Ok(ReadView {
            meta: buf.meta.clone(),
            generations,
            generation_seqs,
            _readers: readers,
        })
    }

    /// Whether flushed generations wait for their readers.
    pub fn has_retired(&self) -> bool {
        !self.buffer.lock().retired.is_empty()
    }

    /// Drops the tables of flushed generations that no read view holds any more.
    pub fn reap(&self) -> Result<()> {
        let mut buf = self.buffer.lock();
        let free: Vec<u64> = buf
            .retired
            .iter()
            .filter(|g| Arc::strong_count(&g.readers) == 1)
            .map(|g| g.id)
            .collect();
        for id in &free {
            buf.conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS {}",
                buffer_table(self.id, *id)
            ))?;
        }
        buf.retired.retain(|g| !free.contains(&g.id));
        Ok(())
    }

    /// Writes generation `generation` as Parquet under directory `dir` (see
    /// [`write_parquet_files`]).
    pub fn write_parquet(
        &self,
        generation: u64,
        dir: &Path,
        time_column: Option<&ColumnMeta>,
    ) -> Result<Vec<WrittenFile>> {
        let conn = self.buffer.lock().conn.try_clone()?;
        let select = format!("SELECT * FROM {}", buffer_table(self.id, generation));
        write_parquet_files(&conn, &select, &[], time_column, dir)
    }

    /// Points the table's view at `meta`'s files (at `paths`) after they were rewritten,
    /// keeping its buffer generations.
    pub fn rebuild_view(&self, meta: &TableMeta, paths: &[String]) -> Result<()> {
        let buf = self.buffer.lock();
        let generations = buf.generation_ids();
        transaction(&buf.conn, &[view_sql(meta, paths, &generations)])
    }

    /// Completes a flush after the file is in the manifest: the view switches to `meta`'s files
    /// and the flushed generation is dropped, in one transaction.
    pub fn finish_flush(&self, generation: u64, meta: &TableMeta, paths: &[String]) -> Result<()> {
        let mut buf = self.buffer.lock();
        let remaining: Vec<u64> = buf
            .generation_ids()
            .into_iter()
            .filter(|g| *g != generation)
            .collect();
        transaction(&buf.conn, &[view_sql(meta, paths, &remaining)])?;
        if let Some(i) = buf.flushing.iter().position(|g| g.id == generation) {
            let done = buf.flushing.remove(i);
            buf.retired.push(done);
        }
        drop(buf);
        self.reap()
    }

    /// Adds columns (already in `meta`) to every generation and to the view.
    pub fn add_columns(
        &self,
        added: &[ColumnMeta],
        meta: &TableMeta,
        paths: &[String],
    ) -> Result<()> {
        let mut buf = self.buffer.lock();
        let generations = buf.generation_ids();
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
        for g in &buf.retired {
            for c in added {
                statements.push(format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    buffer_table(self.id, g.id),
                    ident(&c.name),
                    c.sql_type
                ));
            }
        }
        statements.push(view_sql(meta, paths, &generations));
        statements.push(user_view_sql(meta));
        transaction(&buf.conn, &statements)?;
        buf.meta.columns = meta.columns.clone();
        let schema = result_schema(
            &buf.conn,
            &format!("SELECT * FROM {}", buffer_table(self.id, buf.active.id)),
        )?;
        *self.schema.write() = schema;
        *self.not_null.write() = not_null_set(&meta.columns);
        Ok(())
    }

    /// Removes the views and every buffer generation; later appends fail.
    pub fn drop_all(&self, name_in_view: &str) -> Result<()> {
        let mut buf = self.buffer.lock();
        let mut statements = vec![
            format!("DROP VIEW IF EXISTS main.{}", ident(name_in_view)),
            format!("DROP VIEW IF EXISTS main.{}", inner_view(self.id)),
        ];
        let ids: Vec<u64> = buf
            .generation_ids()
            .into_iter()
            .chain(buf.retired.iter().map(|g| g.id))
            .collect();
        for g in ids {
            statements.push(format!("DROP TABLE IF EXISTS {}", buffer_table(self.id, g)));
        }
        transaction(&buf.conn, &statements)?;
        self.append_connections.lock().clear();
        buf.dropped = true;
        buf.flushing.clear();
        buf.retired.clear();
        buf.active = Generation::new(buf.active.id);
        Ok(())
    }
}

/// `meta` without its retired files: the runtime serves reads of the listed files, and every
/// query clones its metadata, so the list (long after a large merge) stays in the catalog.
fn without_retired(meta: &TableMeta) -> TableMeta {
    let TableMeta {
        id,
        name,
        columns,
        files,
        next_file_seq,
        flushed_wal,
        created_at_ms,
        options,
        retired: _,
    } = meta;
    TableMeta {
        id: *id,
        name: name.clone(),
        columns: columns.clone(),
        files: files.clone(),
        next_file_seq: *next_file_seq,
        flushed_wal: flushed_wal.clone(),
        created_at_ms: *created_at_ms,
        options: options.clone(),
        retired: Vec::new(),
    }
}

fn not_null_set(columns: &[ColumnMeta]) -> HashSet<String> {
    columns
        .iter()
        .filter(|c| !c.nullable)
        .map(|c| c.name.to_lowercase())
        .collect()
}
