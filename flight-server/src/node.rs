//! The node: the subsystems it is made of, composed. Each owns its state and opens with a
//! `//!` saying what it promises:
//!
//! - [`crate::base`]: what they all read (configuration, catalog, store, DuckDB, metrics, the
//!   live tables, the membership);
//! - [`crate::write`]: the write path (WAL, appends, flushes, uploads, the node-id claim);
//! - [`crate::read`]: the read path (read views, pins and cache, running a query, query
//!   registry and slots, system tables);
//! - [`crate::cluster`]: membership, peers and distributed queries;
//! - [`crate::maintenance`]: compaction, rewrites (DELETE, UPDATE), deferred deletion;
//! - [`crate::ddl`]: DDL and catalog sync (other nodes' changes, snapshots).
//!
//! The Flight services decode a request, call a subsystem through [`Node`] and encode the
//! answer. Opening a node opens the storage, replays the WAL and starts nothing; the server
//! starts the background tasks (flusher, catalog watch, compactor, query watchdog).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use parking_lot::RwLock;
use skein_storage::{Catalog, ColumnMeta};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::{Base, blocking};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::ddl::Ddl;
pub use crate::ddl::OnExists;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::prepared_statements::PreparedStatements;
use crate::read::Reads;
use crate::table::TableRuntime;
use crate::write::Writes;
use crate::write::wal::open_wal;

/// One node, composed of its subsystems.
#[derive(Debug)]
pub struct Node {
    /// What every subsystem reads: configuration, catalog, store, DuckDB, metrics, tables.
    pub base: Arc<Base>,
    /// The write path: WAL, appends, flushes, uploads, the claim on the node id.
    pub(crate) writes: Arc<Writes>,
    /// The read path: read views, pins, the query registry and slots, system tables.
    pub(crate) reads: Arc<Reads>,
    /// DDL and catalog sync.
    pub(crate) ddl: Arc<Ddl>,
    /// Membership, peers and distributed queries.
    pub(crate) cluster: Arc<Cluster>,
    /// Compaction and rewrites.
    pub(crate) maintenance: Arc<Maintenance>,
    /// Users and token signing, if authentication is on.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// Open prepared statements.
    pub(crate) prepared: PreparedStatements,
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
        let storage = crate::ddl::storage::open_storage(&config, &data_dir).await?;
        let (store, cache, claim) = (storage.store, storage.cache, storage.claim);
        let catalog = Catalog::open(storage.backend).await?;
        if let Some(key) = &config.storage.restore_snapshot {
            crate::ddl::snapshots::restore_at_start(
                &catalog,
                store.as_ref(),
                &config.storage.cluster_name,
                key,
            )
            .await?;
        }
        crate::ddl::snapshots::refuse_a_lost_catalog(
            &catalog,
            store.as_ref(),
            &config.storage.cluster_name,
        )
        .await?;
        let threads = config.query_threads;
        let engine = {
            let dir = data_dir.clone();
            let memory = config.memory_limit.clone();
            let spill = spill_limit(config.max_spill_bytes, &data_dir);
            info!(bytes = spill, "query spill limit");
            let views = crate::read::system::permanent_statements();
            blocking(move || Engine::open(&dir, threads, &memory, spill, &views)).await?
        };
        let snapshot = catalog.snapshot();
        let mut tables = HashMap::new();
        let version = (snapshot.epoch, snapshot.version);
        for meta in snapshot.tables.values() {
            let paths = crate::base::table_paths(store.as_ref(), meta)?;
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
        let prepared = PreparedStatements::new(crate::prepared_statements::Limits {
            total: config.max_prepared_statements,
            ttl: config.prepared_statement_ttl,
            parameter_bytes: config.max_message_bytes.saturating_mul(4),
        });
        let base = Arc::new(Base {
            config,
            catalog,
            store,
            cache,
            metrics,
            shutdown: CancellationToken::new(),
            tables: RwLock::new(tables),
            membership: std::sync::OnceLock::new(),
            engine,
        });
        let writes = Arc::new(Writes::new(Arc::clone(&base), wal, claim, &data_dir)?);
        if let Err(e) = writes.collect_orphans().await {
            warn!(error = %e, "collecting objects of uploads never committed failed");
        }
        let ddl = Arc::new(Ddl::new(Arc::clone(&base), Arc::clone(&writes), version));
        let reads = Arc::new(Reads::new(Arc::clone(&base), Arc::clone(&ddl)));
        let cluster = Arc::new(Cluster::new(
            Arc::clone(&base),
            Arc::clone(&writes),
            Arc::clone(&reads),
            Arc::clone(&ddl),
            auth.clone(),
        ));
        let maintenance = Arc::new(Maintenance::new(
            Arc::clone(&base),
            Arc::clone(&writes),
            Arc::clone(&reads),
            Arc::clone(&cluster),
            Arc::clone(&ddl),
        ));
        Ok(Arc::new(Self {
            base,
            writes,
            reads,
            ddl,
            cluster,
            maintenance,
            auth,
            prepared,
        }))
    }

    /// The live table called `name` (ignoring case).
    pub fn table(&self, name: &str) -> Result<Arc<TableRuntime>> {
        self.base.table(name)
    }

    /// Creates a table with the given columns.
    pub async fn create_table(
        &self,
        name: &str,
        columns: Vec<ColumnMeta>,
        on_exists: OnExists,
    ) -> Result<Arc<TableRuntime>> {
        self.ddl.create_table(name, columns, on_exists).await
    }

    /// Drops a table; its files are deleted after a grace period. Returns whether it existed.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<bool> {
        self.ddl.drop_table(name, if_exists).await
    }

    /// Replaces a table's columns with `columns`: the old ones plus new nullable ones.
    pub async fn add_columns(&self, name: &str, columns: Vec<ColumnMeta>) -> Result<()> {
        self.ddl.add_columns(name, columns).await
    }

    /// Appends one batch to a table. When it returns, the rows are durable and visible to
    /// queries.
    pub async fn append(&self, rt: &Arc<TableRuntime>, batch: &RecordBatch) -> Result<u64> {
        self.writes.append(rt, batch).await
    }

    /// Flushes every table and returns once the rows are in Parquet.
    pub async fn flush_all(&self) -> Result<()> {
        self.writes.flush_all().await
    }

    /// Arrow bytes held in every table's buffer generations.
    pub fn buffered_bytes(&self) -> u64 {
        self.base.buffered_bytes()
    }

    /// Why the node stopped accepting writes, if it did.
    pub fn writes_stopped(&self) -> Option<String> {
        self.writes.writes_stopped()
    }

    /// Sets the gauges that are derived from the node's state; called before rendering metrics.
    pub(crate) fn refresh_gauges(&self) {
        let levels: Vec<_> = self
            .base
            .tables
            .read()
            .values()
            .map(|rt| rt.level())
            .collect();
        self.base
            .metrics
            .buffer_rows
            .set(levels.iter().map(|l| l.total_rows as i64).sum());
        self.base
            .metrics
            .buffer_bytes
            .set(levels.iter().map(|l| l.total_bytes as i64).sum());
        self.base
            .metrics
            .wal_segments
            .set(self.writes.wal_segments() as i64);
        if let Some(cache) = &self.base.cache {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &cache.stats;
            let m = &self.base.metrics;
            m.cache_hits.set(s.hits.load(Relaxed) as i64);
            m.cache_misses.set(s.misses.load(Relaxed) as i64);
            m.cache_downloaded_bytes
                .set(s.downloaded_bytes.load(Relaxed) as i64);
            m.cache_evictions.set(s.evictions.load(Relaxed) as i64);
            m.cache_bytes.set(cache.cached_bytes() as i64);
        }
        let snapshot = self.base.catalog.snapshot();
        self.base.metrics.table_files.reset();
        self.base.metrics.table_bytes.reset();
        for t in snapshot.tables.values() {
            self.base
                .metrics
                .table_files
                .with_label_values(&[&t.name])
                .set(t.files.len() as i64);
            self.base
                .metrics
                .table_bytes
                .with_label_values(&[&t.name])
                .set(t.files.iter().map(|f| f.bytes as i64).sum());
        }
    }
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
