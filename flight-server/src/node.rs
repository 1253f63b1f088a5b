//! The node: everything a request needs, and the table lifecycle (create, ingest, flush, drop).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use skein_storage::{
    Catalog, CatalogState, ColumnMeta, FileCache, FileMeta, ObjectStore, TableMeta,
};
use skein_wal::Wal;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::prepared_statements::PreparedStatements;
use crate::queries::{Queries, SchemaCache};
use crate::table::TableRuntime;

mod appends;
mod compact;
mod flush;
mod membership;
mod reads;
mod rewrite;
mod shared;
mod uploads;
use appends::{InFlight, open_wal};
pub use membership::{AppendMark, Peers, fragment_values};
pub use reads::{ReadSet, Selected};

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
    /// Local copies of remote objects (none when the store is a local directory).
    pub cache: Option<Arc<FileCache>>,
    /// Recent queries, for `skein_query_log`.
    pub query_log: crate::system::QueryLog,
    /// Slots for queries running at once.
    pub query_slots: Arc<crate::slots::QuerySlots>,
    /// Slots for ingest streams at once.
    pub ingest_slots: Arc<tokio::sync::Semaphore>,
    /// Users and token signing, if authentication is on.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// This process's claim on its node id in a shared catalog.
    claim: Option<shared::NodeClaim>,
    /// Set once another process took this node's id: this one then serves nothing.
    identity_lost: std::sync::atomic::AtomicBool,
    /// One catalog refresh at a time.
    sync: tokio::sync::Mutex<()>,
    /// The catalog (epoch, version) the table runtimes reflect.
    synced: parking_lot::Mutex<(u64, u64)>,
    /// The version of a lost shared catalog this node saved as a snapshot.
    lost_snapshot_saved: parking_lot::Mutex<Option<u64>>,
    /// Live tables by catalog id.
    tables: RwLock<HashMap<u64, Arc<TableRuntime>>>,
    /// Serialises CREATE, DROP and ALTER so that the catalog and DuckDB change in step.
    ddl: tokio::sync::Mutex<()>,
    /// Queries that have a ticket out, for cancellation.
    pub queries: Queries,
    /// Result schemas of recent queries.
    pub schemas: SchemaCache,
    /// Open prepared statements.
    pub prepared: PreparedStatements,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Wakes the flusher when a buffer passes a threshold.
    flush_wakeup: Notify,
    /// The write-ahead log every ingested batch goes through.
    wal: Arc<Wal>,
    /// Appends between their WAL record and their buffer append: the WAL keeps their records.
    in_flight: InFlight,
    /// Signalled when buffer space is freed (a flush finished, a table was dropped).
    space: Notify,
    /// Buffer bytes admitted appends hold before their rows reach a buffer.
    reserved_bytes: parking_lot::Mutex<u64>,
    /// Set when the node stopped accepting writes: why.
    writes_stopped: parking_lot::Mutex<Option<String>>,
    /// Set when a logged record could not be buffered: flushes and WAL truncation stop until a
    /// restart replays the log.
    needs_replay: std::sync::atomic::AtomicBool,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Scratch directory for files being written.
    tmp_dir: PathBuf,
    /// Cluster membership, set once the listener is bound.
    membership: std::sync::OnceLock<Arc<skein_ring::Membership>>,
    /// Connections to peers.
    peers: Peers,
    /// DuckDB's aggregate function names, for the planner.
    aggregates: std::sync::OnceLock<Arc<std::collections::HashSet<String>>>,
    /// Local-store objects queries are reading (not deleted while they are).
    pinned: reads::PinnedKeys,
    /// Serialises compaction passes and DELETE/UPDATE rewrites on this node, per table id.
    rewrites: parking_lot::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Notes of objects uploaded and not yet committed.
    uploads: uploads::Uploads,
    /// The embedded DuckDB; declared last so that it drops after the tables' connections.
    pub engine: Engine,
}

/// Local paths of files in a local store.
fn local_paths(store: &dyn ObjectStore, files: &[FileMeta]) -> Result<Vec<String>> {
    files
        .iter()
        .map(|f| {
            store
                .local_path(&f.key)
                .map(|p| p.display().to_string())
                .ok_or_else(|| Error::Internal(format!("object {} has no local path", f.key)))
        })
        .collect()
}

/// What a table's permanent view reads: its files if they are local (a remote store's files
/// are only read through a query's own view), so a table's view is never missing a file.
fn table_paths(store: &dyn ObjectStore, meta: &TableMeta) -> Result<Vec<String>> {
    let mut local = meta.clone();
    if store.local_path("probe").is_none() {
        local.files.clear();
    }
    local_paths(store, &local.files)
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
        let uploads = uploads::Uploads::open(data_dir.join("uploads"))?;
        for dir in [&tmp_dir, &data_dir.join("duckdb-tmp")] {
            std::fs::create_dir_all(dir).map_err(|e| dir_error(dir, e))?;
        }
        // Leftovers of flushes interrupted by a crash.
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        let auth = match (&config.auth_users, &config.auth_secret) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::InvalidArgument(
                    "--auth-users needs --auth-secret (SKEIN_AUTH_SECRET) to sign tokens".into(),
                ));
            }
            (Some(path), Some(secret)) => Some(Arc::new(crate::auth::Authenticator::load(
                path,
                secret,
                config.token_ttl,
                &config.storage.cluster_name,
            )?)),
        };
        let storage = shared::open_storage(&config, &data_dir).await?;
        let (store, cache, claim) = (storage.store, storage.cache, storage.claim);
        let catalog = Catalog::open(storage.backend).await?;
        if let Some(key) = &config.storage.restore_snapshot {
            shared::restore_at_start(&catalog, store.as_ref(), &config.storage.cluster_name, key)
                .await?;
        }
        shared::refuse_a_lost_catalog(&catalog, store.as_ref(), &config.storage.cluster_name)
            .await?;
        let threads = config.query_threads;
        let engine = {
            let dir = data_dir.clone();
            let memory = config.memory_limit.clone();
            let spill = spill_limit(config.max_spill_bytes, &data_dir);
            info!(bytes = spill, "query spill limit");
            blocking(move || Engine::open(&dir, threads, &memory, spill)).await?
        };
        let snapshot = catalog.snapshot();
        let mut tables = HashMap::new();
        let version = (snapshot.epoch, snapshot.version);
        for meta in snapshot.tables.values() {
            let paths = table_paths(store.as_ref(), meta)?;
            let rt = TableRuntime::open(&engine, meta, version, &paths)?;
            info!(table = %meta.name, files = meta.files.len(), rows = meta.file_rows(), "table opened");
            tables.insert(meta.id, Arc::new(rt));
        }
        let metrics = Metrics::new();
        let catalog_empty = catalog.is_shared() && snapshot.tables.is_empty();
        let wal = open_wal(
            &config,
            &data_dir,
            &snapshot,
            &tables,
            &metrics,
            catalog_empty,
        )?;
        let per_user = match config.max_queries_per_user {
            0 => config.max_queries / 2,
            n => n,
        };
        let query_slots = crate::slots::QuerySlots::new(config.max_queries, per_user);
        let ingest_slots = Arc::new(tokio::sync::Semaphore::new(
            config.max_ingest_streams.max(1),
        ));
        let prepared = PreparedStatements::new(crate::prepared_statements::Limits {
            total: config.max_prepared_statements,
            ttl: config.prepared_statement_ttl,
            parameter_bytes: config.max_message_bytes.saturating_mul(4),
        });
        let node = Arc::new(Self {
            config,
            catalog,
            store,
            cache,
            query_log: Default::default(),
            query_slots,
            ingest_slots,
            auth,
            claim,
            identity_lost: Default::default(),
            sync: tokio::sync::Mutex::new(()),
            synced: parking_lot::Mutex::new(version),
            lost_snapshot_saved: parking_lot::Mutex::new(None),
            tables: RwLock::new(tables),
            ddl: tokio::sync::Mutex::new(()),
            queries: Queries::default(),
            schemas: SchemaCache::default(),
            prepared,
            metrics,
            flush_wakeup: Notify::new(),
            wal: Arc::new(wal),
            in_flight: InFlight::default(),
            space: Notify::new(),
            reserved_bytes: parking_lot::Mutex::new(0),
            writes_stopped: parking_lot::Mutex::new(None),
            needs_replay: std::sync::atomic::AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tmp_dir,
            membership: std::sync::OnceLock::new(),
            peers: Peers::default(),
            aggregates: std::sync::OnceLock::new(),
            pinned: Default::default(),
            rewrites: Default::default(),
            uploads,
            engine,
        });
        if let Err(e) = node.collect_orphans().await {
            warn!(error = %e, "collecting objects of uploads never committed failed");
        }
        Ok(node)
    }

    /// Opens the runtime of a table from catalog snapshot `snapshot`.
    async fn open_runtime(
        self: &Arc<Self>,
        id: u64,
        snapshot: &CatalogState,
    ) -> Result<Arc<TableRuntime>> {
        let meta = snapshot
            .table_by_id(id)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("table id {id} is not in the catalog")))?;
        let version = (snapshot.epoch, snapshot.version);
        let paths = self.paths(&meta)?;
        let node = Arc::clone(self);
        let rt = blocking(move || TableRuntime::open(&node.engine, &meta, version, &paths)).await?;
        let rt = Arc::new(rt);
        self.tables.write().insert(rt.id, Arc::clone(&rt));
        Ok(rt)
    }

    /// What a table's permanent view reads (its files if the store is local).
    fn paths(&self, meta: &TableMeta) -> Result<Vec<String>> {
        table_paths(self.store.as_ref(), meta)
    }

    /// Local paths of files in a local store.
    fn local_paths(&self, files: &[FileMeta]) -> Result<Vec<String>> {
        local_paths(self.store.as_ref(), files)
    }

    /// `rt`'s table in the newest catalog snapshot, retired files included (`None` once it is
    /// dropped).
    fn current_meta(&self, rt: &TableRuntime) -> Option<TableMeta> {
        self.catalog.snapshot().table_by_id(rt.id).cloned()
    }

    /// [`Self::current_meta`], or UnknownTable if it was dropped.
    fn existing_meta(&self, rt: &TableRuntime) -> Result<TableMeta> {
        self.current_meta(rt).ok_or_else(|| Error::UnknownTable {
            table: rt.name.clone(),
        })
    }

    /// Gives a runtime the table's metadata from the newest catalog snapshot.
    fn sync_meta(&self, rt: &TableRuntime) {
        let s = self.catalog.snapshot();
        if let Some(meta) = s.table_by_id(rt.id) {
            rt.set_meta(meta, (s.epoch, s.version));
        }
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
        let created = {
            let _ddl = self.ddl.lock().await;
            self.create_table_locked(name, columns, on_exists).await
        };
        match created {
            // Another node created it since this node last looked: keep theirs.
            Err(Error::TableExists { .. }) if on_exists == OnExists::Keep => {
                self.take_in_changes().await;
                self.table(name)
            }
            other => other,
        }
    }

    /// Before a change: takes in what other nodes changed in a shared catalog, so that a table
    /// another node just created or altered is known here. Failures are logged; the change
    /// then works on what this node knows (and the catalog's compare-and-set still guards it).
    pub async fn take_in_changes(self: &Arc<Self>) {
        if self.catalog.is_shared()
            && let Err(e) = self.refresh_catalog().await
        {
            warn!(error = %e, "taking in catalog changes before a change failed");
        }
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
                    retired: Vec::new(),
                    id: state.next_table_id,
                    name: name.to_string(),
                    columns: columns.clone(),
                    files: Vec::new(),
                    next_file_seq: 1,
                    flushed_wal: Default::default(),
                    created_at_ms: now_ms(),
                    options: Default::default(),
                };
                state.tables.insert(CatalogState::key(name), meta.clone());
                Ok(meta)
            })
            .await?;
        let snapshot = self.catalog.snapshot();
        match self.open_runtime(meta.id, &snapshot).await {
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
        let _gate = rt.ingest_gate.write().await;
        blocking(move || drop_rt.drop_all(&view_name)).await?;
        self.space.notify_waiters();
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
        self.add_runtime_columns(&rt, added, meta).await
    }

    /// Adds columns another node added to a table (already in the catalog).
    async fn apply_added_columns(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        added: Vec<ColumnMeta>,
        meta: TableMeta,
    ) -> Result<()> {
        let _maintenance = rt.maintenance.lock().await;
        self.add_runtime_columns(rt, added, meta).await
    }

    /// Adds `added` (in `meta`) to the buffers and views; the caller holds the maintenance lock.
    async fn add_runtime_columns(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        added: Vec<ColumnMeta>,
        meta: TableMeta,
    ) -> Result<()> {
        let paths = self.paths(&meta)?;
        let rt2 = Arc::clone(rt);
        let _gate = rt.ingest_gate.write().await;
        blocking(move || rt2.add_columns(&added, &meta, &paths)).await?;
        self.sync_meta(rt);
        Ok(())
    }

    /// Sets the gauges that are derived from the node's state; called before rendering metrics.
    pub fn refresh_gauges(&self) {
        let levels: Vec<_> = self.tables.read().values().map(|rt| rt.level()).collect();
        self.metrics
            .buffer_rows
            .set(levels.iter().map(|l| l.total_rows as i64).sum());
        self.metrics
            .buffer_bytes
            .set(levels.iter().map(|l| l.total_bytes as i64).sum());
        self.metrics
            .wal_segments
            .set(self.wal.segment_count() as i64);
        if let Some(cache) = &self.cache {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &cache.stats;
            let m = &self.metrics;
            m.cache_hits.set(s.hits.load(Relaxed) as i64);
            m.cache_misses.set(s.misses.load(Relaxed) as i64);
            m.cache_downloaded_bytes
                .set(s.downloaded_bytes.load(Relaxed) as i64);
            m.cache_evictions.set(s.evictions.load(Relaxed) as i64);
            m.cache_bytes.set(cache.cached_bytes() as i64);
        }
        let snapshot = self.catalog.snapshot();
        self.metrics.table_files.reset();
        self.metrics.table_bytes.reset();
        for t in snapshot.tables.values() {
            self.metrics
                .table_files
                .with_label_values(&[&t.name])
                .set(t.files.len() as i64);
            self.metrics
                .table_bytes
                .with_label_values(&[&t.name])
                .set(t.files.iter().map(|f| f.bytes as i64).sum());
        }
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

/// The most DuckDB may spill to disk: `configured`, or else half of the space free on the data
/// directory's disk at start (the WAL and flushes need the rest).
fn spill_limit(configured: u64, data_dir: &std::path::Path) -> u64 {
    if configured > 0 {
        return configured;
    }
    free_bytes(data_dir).map_or(1 << 30, |free| (free / 2).max(1 << 20))
}

/// Bytes free to unprivileged users on the disk holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid C string and `stat` a valid out pointer for the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
