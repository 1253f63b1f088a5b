//! What every subsystem of a node reads and none owns alone: the configuration, the catalog,
//! the object store and its local cache, the embedded DuckDB, the metrics, the live tables
//! (one [`TableRuntime`] per catalog table) and the node's membership of its cluster.
//!
//! The subsystems ([`crate::write`], the read path, the cluster, maintenance, DDL and catalog
//! sync) each hold an `Arc<Base>` beside the state they own; [`crate::node::Node`] composes
//! them. What is here changes only through the catalog (tables come and go with it) or once
//! (the membership, set when the listener is bound).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;
use skein_ring::{Membership, Ring};
use skein_storage::{Catalog, CatalogState, FileCache, FileMeta, ObjectStore, TableMeta};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::table::TableRuntime;

/// How long replaced or dropped objects stay readable, so that running queries never miss one.
const DELETE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// The shared services of one node.
#[derive(Debug)]
pub struct Base {
    /// The configuration it started with.
    pub config: Config,
    /// Tables and their files.
    pub catalog: Catalog,
    /// Where Parquet files go.
    pub store: Arc<dyn ObjectStore>,
    /// Local copies of remote objects (none when the store is a local directory).
    pub cache: Option<Arc<FileCache>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Live tables by catalog id.
    pub(crate) tables: RwLock<HashMap<u64, Arc<TableRuntime>>>,
    /// Cluster membership, set once the listener is bound.
    pub(crate) membership: std::sync::OnceLock<Arc<Membership>>,
    /// The embedded DuckDB; declared last so that it drops after the tables' connections.
    pub engine: Engine,
}

/// Local paths of files in a local store.
pub(crate) fn local_paths(store: &dyn ObjectStore, files: &[FileMeta]) -> Result<Vec<String>> {
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
pub(crate) fn table_paths(store: &dyn ObjectStore, meta: &TableMeta) -> Result<Vec<String>> {
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

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Base {
    /// Opens the runtime of a table from catalog snapshot `snapshot` and lists it as live.
    pub(crate) async fn open_runtime(
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
        let base = Arc::clone(self);
        let rt = blocking(move || TableRuntime::open(&base.engine, &meta, version, &paths)).await?;
        let rt = Arc::new(rt);
        self.tables.write().insert(rt.id, Arc::clone(&rt));
        Ok(rt)
    }

    /// What a table's permanent view reads (its files if the store is local).
    pub(crate) fn paths(&self, meta: &TableMeta) -> Result<Vec<String>> {
        table_paths(self.store.as_ref(), meta)
    }

    /// Local paths of files in a local store.
    pub(crate) fn local_paths(&self, files: &[FileMeta]) -> Result<Vec<String>> {
        local_paths(self.store.as_ref(), files)
    }

    /// `rt`'s table in the newest catalog snapshot, retired files included (`None` once it is
    /// dropped).
    pub(crate) fn current_meta(&self, rt: &TableRuntime) -> Option<TableMeta> {
        self.catalog.snapshot().table_by_id(rt.id).cloned()
    }

    /// [`Self::current_meta`], or UnknownTable if it was dropped.
    pub(crate) fn existing_meta(&self, rt: &TableRuntime) -> Result<TableMeta> {
        self.current_meta(rt).ok_or_else(|| Error::UnknownTable {
            table: rt.name.clone(),
        })
    }

    /// Gives a runtime the table's metadata from the newest catalog snapshot.
    pub(crate) fn sync_meta(&self, rt: &TableRuntime) {
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

    /// The live table with catalog id `id`.
    pub(crate) fn table_by_id(&self, id: u64) -> Option<Arc<TableRuntime>> {
        self.tables.read().get(&id).cloned()
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

    /// Arrow bytes held in every table's buffer generations.
    pub(crate) fn buffered_bytes(&self) -> u64 {
        self.tables
            .read()
            .values()
            .map(|rt| rt.level().total_bytes)
            .sum()
    }

    /// The node's membership (a static one of one until the node joined its cluster).
    pub(crate) fn membership(&self) -> Option<&Arc<Membership>> {
        self.membership.get()
    }

    /// The current ring: every live member, this node included.
    pub(crate) fn ring(&self) -> Arc<Ring> {
        match self.membership.get() {
            Some(m) => m.ring(),
            None => Arc::new(Ring::new(Vec::new())),
        }
    }

    /// Tables with rows on this node that are not in Parquet yet: appends under way, or
    /// records past the table's flushed position.
    pub(crate) fn unflushed_tables(&self) -> BTreeSet<u64> {
        let me = &self.config.node_id;
        self.tables
            .read()
            .values()
            .filter(|rt| {
                let last = rt.last_seq.load(Ordering::SeqCst);
                let flushed = rt.meta().flushed_wal.get(me).copied().unwrap_or(0);
                rt.appending.load(Ordering::SeqCst) > 0 || last > flushed
            })
            .map(|rt| rt.id)
            .collect()
    }

    /// Marks `rt` as holding unflushed rows on this node, in the cluster, before an append
    /// writes its WAL record; the returned guard ends the append's share of the mark.
    pub(crate) async fn mark_unflushed(&self, rt: &Arc<TableRuntime>) -> Result<AppendMark> {
        rt.appending.fetch_add(1, Ordering::SeqCst);
        let mark = AppendMark(Arc::clone(rt));
        if let Some(m) = self.membership.get()
            && !m.is_static()
        {
            m.mark_unflushed(rt.id)
                .await
                .map_err(|e| Error::PeerUnavailable {
                    node: self.config.node_id.clone(),
                    reason: format!(
                        "cannot record in Redis that it holds unflushed rows of table {:?} \
                         ({e}); nothing was written, try again",
                        rt.name
                    ),
                })?;
        }
        Ok(mark)
    }

    /// Deletes objects once no running query can still be reading them (after
    /// [`DELETE_GRACE`]), unless the node stops first.
    pub(crate) fn delete_later(&self, keys: Vec<String>) {
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
                    tracing::warn!(object_key = %key, error = %e, "deleting a dropped object failed");
                }
            }
        });
    }
}

/// An append's share of its table's unflushed mark; dropped when the rows are buffered (or the
/// append failed).
#[derive(Debug)]
pub(crate) struct AppendMark(Arc<TableRuntime>);

impl Drop for AppendMark {
    fn drop(&mut self) {
        self.0.appending.fetch_sub(1, Ordering::SeqCst);
    }
}
