//! The node: everything a request needs, and the table lifecycle (create, ingest, flush, drop).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use parking_lot::RwLock;
use skein_storage::{
    Catalog, CatalogState, ColumnMeta, FileMeta, LocalCatalog, LocalStore, ObjectStore, TableMeta,
    stats::read_file_stats,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::prepared::PreparedStatements;
use crate::queries::Queries;
use crate::table::TableRuntime;
use crate::types::conform;

/// How long replaced or dropped objects stay readable, so that running queries never miss one.
const DELETE_GRACE: Duration = Duration::from_secs(120);

/// What to do when a table to be created exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExists {
    /// Fail with "already exists".
    Fail,
    /// Keep the existing table.
    Keep,
    /// Drop it and create the new one.
    Replace,
}

/// One node's shared state.
#[derive(Debug)]
pub struct Node {
    /// The configuration it started with.
    pub config: Config,
    /// Tables and their files.
    pub catalog: Catalog,
    /// Where Parquet files go.
    pub store: Arc<dyn ObjectStore>,
    /// Live tables by catalog id.
    tables: RwLock<HashMap<u64, Arc<TableRuntime>>>,
    /// Serialises CREATE, DROP and ALTER so that the catalog and DuckDB change in step.
    ddl: tokio::sync::Mutex<()>,
    /// Queries that have a ticket out, for cancellation.
    pub queries: Queries,
    /// Open prepared statements.
    pub prepared: PreparedStatements,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Wakes the flusher when a buffer passes a threshold.
    flush_wakeup: Notify,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Scratch directory for files being written.
    tmp_dir: PathBuf,
    /// The embedded DuckDB; declared last so that it drops after the tables' connections.
    pub engine: Engine,
}

/// Runs blocking work (DuckDB, file I/O) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Node {
    /// Opens the node's storage and rebuilds every table's view.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let dir_error = |dir: &std::path::Path, e: std::io::Error| {
            Error::Internal(format!("cannot use data directory {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| dir_error(&config.data_dir, e))?;
        // Absolute, so that DuckDB's allowed-directories check and stored paths agree.
        let data_dir =
            std::fs::canonicalize(&config.data_dir).map_err(|e| dir_error(&config.data_dir, e))?;
        let tmp_dir = data_dir.join("tmp");
        for dir in [&tmp_dir, &data_dir.join("duckdb-tmp")] {
            std::fs::create_dir_all(dir).map_err(|e| dir_error(dir, e))?;
        }
        // Leftovers of flushes interrupted by a crash.
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(data_dir.join("objects"))?);
        let catalog =
            Catalog::open(Arc::new(LocalCatalog::new(data_dir.join("catalog.json")))).await?;
        let threads = config.query_threads;
        let engine = {
            let dir = data_dir.clone();
            blocking(move || Engine::open(&dir, threads)).await?
        };
        let node = Arc::new(Self {
            config,
            catalog,
            store,
            tables: RwLock::new(HashMap::new()),
            ddl: tokio::sync::Mutex::new(()),
            queries: Queries::default(),
            prepared: PreparedStatements::default(),
            metrics: Metrics::new(),
            flush_wakeup: Notify::new(),
            shutdown: CancellationToken::new(),
            tmp_dir,
            engine,
        });
        let snapshot = node.catalog.snapshot();
        for meta in snapshot.tables.values() {
            node.open_runtime(meta.clone()).await?;
            info!(table = %meta.name, files = meta.files.len(), rows = meta.file_rows(), "table opened");
        }
        Ok(node)
    }

    async fn open_runtime(self: &Arc<Self>, meta: TableMeta) -> Result<Arc<TableRuntime>> {
        let paths = self.paths(&meta)?;
        let node = Arc::clone(self);
        let rt = blocking(move || TableRuntime::open(&node.engine, &meta, &paths)).await?;
        let rt = Arc::new(rt);
        self.tables.write().insert(rt.id, Arc::clone(&rt));
        Ok(rt)
    }

    /// Local paths of a table's files, for DuckDB to read.
    fn paths(&self, meta: &TableMeta) -> Result<Vec<String>> {
        meta.files
            .iter()
            .map(|f| {
                self.store
                    .local_path(&f.key)
                    .map(|p| p.display().to_string())
                    .ok_or_else(|| Error::Internal(format!("object {} has no local path", f.key)))
            })
            .collect()
    }

    /// The live table called `name` (ignoring case).
    pub fn table(&self, name: &str) -> Result<Arc<TableRuntime>> {
        let snapshot = self.catalog.snapshot();
        let meta = snapshot.table(name).ok_or_else(|| Error::UnknownTable {
            table: name.to_string(),
        })?;
        self.tables
            .read()
            .get(&meta.id)
            .cloned()
            .ok_or_else(|| Error::UnknownTable {
                table: name.to_string(),
            })
    }

    /// Every live table with its metadata, sorted by name.
    pub fn list_tables(&self) -> Vec<(TableMeta, Arc<TableRuntime>)> {
        let snapshot = self.catalog.snapshot();
        let tables = self.tables.read();
        snapshot
            .tables
            .values()
            .filter_map(|m| tables.get(&m.id).map(|rt| (m.clone(), Arc::clone(rt))))
            .collect()
    }

    /// Creates a table with the given columns.
    pub async fn create_table(
        self: &Arc<Self>,
        name: &str,
        columns: Vec<ColumnMeta>,
        on_exists: OnExists,
    ) -> Result<Arc<TableRuntime>> {
        let _ddl = self.ddl.lock().await;
        self.create_table_locked(name, columns, on_exists).await
    }

    async fn create_table_locked(
        self: &Arc<Self>,
        name: &str,
        columns: Vec<ColumnMeta>,
        on_exists: OnExists,
    ) -> Result<Arc<TableRuntime>> {
        validate_table(name, &columns)?;
        if self.catalog.snapshot().table(name).is_some() {
            match on_exists {
                OnExists::Fail => {
                    return Err(Error::TableExists {
                        table: name.to_string(),
                    });
                }
                OnExists::Keep => return self.table(name),
                OnExists::Replace => {
                    self.drop_table_locked(name, true).await?;
                }
            }
        }
        let meta = self
            .catalog
            .update(|state: &mut CatalogState| -> Result<TableMeta> {
                if state.table(name).is_some() {
                    return Err(Error::TableExists {
                        table: name.to_string(),
                    });
                }
                state.next_table_id += 1;
                let meta = TableMeta {
                    id: state.next_table_id,
                    name: name.to_string(),
                    columns: columns.clone(),
                    files: Vec::new(),
                    next_file_seq: 1,
                    created_at_ms: now_ms(),
                };
                state.tables.insert(CatalogState::key(name), meta.clone());
                Ok(meta)
            })
            .await?;
        match self.open_runtime(meta.clone()).await {
            Ok(rt) => {
                info!(table = %name, id = meta.id, "table created");
                Ok(rt)
            }
            Err(e) => {
                // Undo the catalog entry so that the name is free again.
                let _ = self
                    .catalog
                    .update(|s: &mut CatalogState| -> Result<()> {
                        s.tables.remove(&CatalogState::key(name));
                        Ok(())
                    })
                    .await;
                Err(e)
            }
        }
    }

    /// Drops a table; its files are deleted after a grace period. Returns whether it existed.
    pub async fn drop_table(self: &Arc<Self>, name: &str, if_exists: bool) -> Result<bool> {
        let _ddl = self.ddl.lock().await;
        self.drop_table_locked(name, if_exists).await
    }

    async fn drop_table_locked(self: &Arc<Self>, name: &str, if_exists: bool) -> Result<bool> {
        let rt = match self.table(name) {
            Ok(rt) => rt,
            Err(Error::UnknownTable { .. }) if if_exists => return Ok(false),
            Err(e) => return Err(e),
        };
        let _maintenance = rt.maintenance.lock().await;
        let removed = self
            .catalog
            .update(|s: &mut CatalogState| -> Result<Option<TableMeta>> {
                Ok(s.tables.remove(&CatalogState::key(name)))
            })
            .await?;
        self.tables.write().remove(&rt.id);
        let view_name = removed
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| rt.name.clone());
        let drop_rt = Arc::clone(&rt);
        blocking(move || drop_rt.drop_all(&view_name)).await?;
        if let Some(meta) = removed {
            self.delete_later(meta.files.into_iter().map(|f| f.key).collect());
        }
        info!(table = %name, "table dropped");
        Ok(true)
    }

    /// Deletes objects once no running query can still be reading them.
    fn delete_later(self: &Arc<Self>, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(DELETE_GRACE) => {}
                _ = shutdown.cancelled() => return,
            }
            for key in keys {
                if let Err(e) = store.delete(&key).await {
                    warn!(object_key = %key, error = %e, "deleting a dropped object failed");
                }
            }
        });
    }

    /// Replaces a table's columns with `columns`, which must be the old ones plus new nullable
    /// ones at the end.
    pub async fn add_columns(self: &Arc<Self>, name: &str, columns: Vec<ColumnMeta>) -> Result<()> {
        let _ddl = self.ddl.lock().await;
        let rt = self.table(name)?;
        let _maintenance = rt.maintenance.lock().await;
        let old = self
            .catalog
            .snapshot()
            .table(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTable {
                table: name.to_string(),
            })?;
        let keeps_old = columns.len() >= old.columns.len()
            && old.columns.iter().zip(&columns).all(|(a, b)| a == b);
        if !keeps_old {
            return Err(Error::Unsupported(
                "only ALTER TABLE … ADD COLUMN is supported".into(),
            ));
        }
        let added: Vec<ColumnMeta> = columns[old.columns.len()..].to_vec();
        if let Some(c) = added.iter().find(|c| !c.nullable) {
            return Err(Error::InvalidArgument(format!(
                "new column {:?} must allow NULL: rows already in table {name:?} have no value for it",
                c.name
            )));
        }
        if added.is_empty() {
            return Ok(());
        }
        let meta = self
            .catalog
            .update(|s: &mut CatalogState| -> Result<TableMeta> {
                let t = s.table_mut(name).ok_or_else(|| Error::UnknownTable {
                    table: name.to_string(),
                })?;
                t.columns = columns.clone();
                Ok(t.clone())
            })
            .await?;
        let paths = self.paths(&meta)?;
        let rt2 = Arc::clone(&rt);
        blocking(move || rt2.add_columns(&added, &meta, &paths)).await
    }

    /// Appends one batch to a table: fits it to the table's schema and buffers it. Returns the
    /// rows accepted. When it returns, the rows are visible to queries.
    pub async fn append(&self, rt: &Arc<TableRuntime>, batch: &RecordBatch) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let fitted = conform(&rt.name, batch, &rt.schema(), &|c| rt.is_not_null(c))?;
        // The write-ahead log goes here: `fitted` is logged and synced before it is buffered,
        // so that the acknowledgement below follows durability.
        let rows = fitted.num_rows() as u64;
        let bytes = fitted.get_array_memory_size() as u64;
        let target = Arc::clone(rt);
        blocking(move || target.append(&fitted)).await?;
        self.metrics.ingest_rows.inc_by(rows);
        self.metrics.ingest_bytes.inc_by(bytes);
        self.metrics.buffer_rows.add(rows as i64);
        self.metrics.buffer_bytes.add(bytes as i64);
        let level = rt.level();
        if level.rows >= self.config.flush.flush_rows
            || level.bytes >= self.config.flush.flush_bytes
        {
            self.flush_wakeup.notify_one();
        }
        Ok(rows)
    }

    /// Writes a table's buffered rows to Parquet and commits the file to the manifest.
    pub async fn flush_table(self: &Arc<Self>, rt: &Arc<TableRuntime>) -> Result<()> {
        let _maintenance = rt.maintenance.lock().await;
        // An unfinished generation from a failed flush first, then the current one.
        let rounds = if rt.level().pending { 2 } else { 1 };
        for _ in 0..rounds {
            if !self.flush_one(rt).await? {
                break;
            }
        }
        Ok(())
    }

    async fn flush_one(self: &Arc<Self>, rt: &Arc<TableRuntime>) -> Result<bool> {
        let Some(meta) = self.catalog.snapshot().table_by_id(rt.id).cloned() else {
            return Ok(false);
        };
        let paths = self.paths(&meta)?;
        let (begin_rt, begin_meta) = (Arc::clone(rt), meta.clone());
        let Some(generation) = blocking(move || begin_rt.begin_flush(&begin_meta, &paths)).await?
        else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        let tmp = self
            .tmp_dir
            .join(format!("{}.parquet", uuid::Uuid::new_v4()));
        let (write_rt, write_tmp) = (Arc::clone(rt), tmp.clone());
        let written = blocking(move || {
            let rows = write_rt.write_parquet(generation, &write_tmp)?;
            let (_, stats) = read_file_stats(&write_tmp)?;
            Ok((rows, stats))
        })
        .await;
        let (rows, stats) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let seq = meta.next_file_seq;
        let key = format!("tables/{}/{}-{seq:020}.parquet", rt.id, self.config.node_id);
        let bytes = self.store.put_file(&key, &tmp).await?;
        let columns: Vec<String> = meta.columns.iter().map(|c| c.name.clone()).collect();
        let file = FileMeta {
            key: key.clone(),
            rows,
            bytes,
            columns,
            stats,
            created_at_ms: now_ms(),
        };
        let id = rt.id;
        let committed = self
            .catalog
            .update(|s: &mut CatalogState| -> Result<Option<TableMeta>> {
                let Some(t) = s.table_by_id_mut(id) else {
                    return Ok(None);
                };
                t.files.push(file.clone());
                t.next_file_seq = seq + 1;
                Ok(Some(t.clone()))
            })
            .await?;
        let Some(meta) = committed else {
            // Dropped while flushing: nothing refers to the new object.
            self.store.delete(&key).await?;
            return Ok(false);
        };
        let paths = self.paths(&meta)?;
        let finish_rt = Arc::clone(rt);
        blocking(move || finish_rt.finish_flush(generation, &meta, &paths)).await?;
        self.metrics.flushes.inc();
        self.metrics.flushed_rows.inc_by(rows);
        self.metrics.buffer_rows.sub(rows as i64);
        info!(table = %rt.name, rows, bytes, object_key = %key, elapsed_ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(true)
    }

    /// Flushes every table (or the one named) and returns once the rows are in Parquet.
    pub async fn flush_all(self: &Arc<Self>, only: Option<&str>) -> Result<()> {
        let targets = match only {
            Some(name) => vec![self.table(name)?],
            None => self.list_tables().into_iter().map(|(_, rt)| rt).collect(),
        };
        for rt in targets {
            self.flush_table(&rt).await?;
        }
        self.metrics.buffer_bytes.set(
            self.list_tables()
                .iter()
                .map(|(_, rt)| rt.level().bytes as i64)
                .sum(),
        );
        Ok(())
    }

    /// Enforces query cancellation and time limits, until shutdown.
    pub async fn run_query_watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => self.queries.enforce(),
            }
        }
    }

    /// Flushes buffers that pass a threshold, until shutdown.
    pub async fn run_flusher(self: Arc<Self>) {
        let flush = self.config.flush.clone();
        let tick = flush.flush_interval.min(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.flush_wakeup.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            for (_, rt) in self.list_tables() {
                let level = rt.level();
                let due = level.pending
                    || level.rows >= flush.flush_rows
                    || level.bytes >= flush.flush_bytes
                    || level.age.is_some_and(|a| a >= flush.flush_interval);
                if due && let Err(e) = self.flush_table(&rt).await {
                    self.metrics.flush_failures.inc();
                    warn!(table = %rt.name, error = %e, "flush failed; will retry");
                }
            }
        }
    }
}

fn validate_table(name: &str, columns: &[ColumnMeta]) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument("table name is empty".into()));
    }
    if columns.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "table {name:?} needs at least one column"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if c.name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "table {name:?} has a column without a name"
            )));
        }
        if !seen.insert(c.name.to_lowercase()) {
            return Err(Error::InvalidArgument(format!(
                "table {name:?} has column {:?} twice (names ignore case)",
                c.name
            )));
        }
    }
    Ok(())
}
