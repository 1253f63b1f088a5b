//! DDL and catalog sync: tables created, altered and dropped on this node, and what other
//! nodes did to the shared catalog taken in here, so that every table runtime (buffers and
//! DuckDB views) follows the catalog.
//!
//! It owns the lock that serialises DDL (so the catalog and DuckDB change in step), the catalog
//! version the runtimes reflect, and the catalog snapshots (backup and restore, [`snapshots`]).
//! Its promise: a table the catalog lists has a runtime on every node within one refresh, and a
//! refresh that fails for one table leaves the others applied and is tried again.

use std::sync::Arc;

use skein_storage::{CatalogState, ColumnMeta, TableMeta};
use tracing::{info, warn};

use crate::base::{Base, blocking, now_ms};
use crate::error::{Error, Result};
use crate::table::TableRuntime;
use crate::write::Writes;

pub(crate) mod snapshots;
pub(crate) mod storage;
mod sync;

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

/// One change of `ALTER TABLE table SET (…)` (or `CREATE TABLE … WITH (…)`); `None` goes back
/// to the default.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OptionChange {
    FlushRows(Option<u64>),
    FlushBytes(Option<u64>),
    FlushInterval(Option<u64>),
    TimeColumn(Option<String>),
    Retention(Option<u64>),
}

/// DDL and catalog sync.
#[derive(Debug)]
pub(crate) struct Ddl {
    base: Arc<Base>,
    writes: Arc<Writes>,
    /// Serialises CREATE, DROP and ALTER so that the catalog and DuckDB change in step.
    lock: tokio::sync::Mutex<()>,
    /// One catalog refresh at a time.
    sync: tokio::sync::Mutex<()>,
    /// The catalog (epoch, version) the table runtimes reflect.
    synced: parking_lot::Mutex<(u64, u64)>,
    /// The version of a lost shared catalog this node saved as a snapshot.
    lost_snapshot_saved: parking_lot::Mutex<Option<u64>>,
}

impl Ddl {
    /// DDL over `base`, whose runtimes reflect catalog version `synced`.
    pub(crate) fn new(base: Arc<Base>, writes: Arc<Writes>, synced: (u64, u64)) -> Self {
        Self {
            base,
            writes,
            lock: tokio::sync::Mutex::new(()),
            sync: tokio::sync::Mutex::new(()),
            synced: parking_lot::Mutex::new(synced),
            lost_snapshot_saved: parking_lot::Mutex::new(None),
        }
    }

    /// Whether this node saved its copy of a shared catalog that lost its data (and has not
    /// seen it restored since).
    pub(crate) fn catalog_lost(&self) -> bool {
        self.lost_snapshot_saved.lock().is_some()
    }

    /// Creates a table with the given columns.
    pub(crate) async fn create_table(
        self: &Arc<Self>,
        name: &str,
        columns: Vec<ColumnMeta>,
        on_exists: OnExists,
    ) -> Result<Arc<TableRuntime>> {
        let created = {
            let _ddl = self.lock.lock().await;
            self.create_table_locked(name, columns, on_exists).await
        };
        match created {
            // Another node created it since this node last looked: keep theirs.
            Err(Error::TableExists { .. }) if on_exists == OnExists::Keep => {
                self.take_in_changes().await;
                self.base.table(name)
            }
            other => other,
        }
    }

    /// Before a change: takes in what other nodes changed in a shared catalog, so that a table
    /// another node just created or altered is known here. Failures are logged; the change
    /// then works on what this node knows (and the catalog's compare-and-set still guards it).
    pub(crate) async fn take_in_changes(self: &Arc<Self>) {
        if self.base.catalog.is_shared()
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
        if self.base.catalog.snapshot().table(name).is_some() {
            match on_exists {
                OnExists::Fail => {
                    return Err(Error::TableExists {
                        table: name.to_string(),
                    });
                }
                OnExists::Keep => return self.base.table(name),
                OnExists::Replace => {
                    self.drop_table_locked(name, true).await?;
                }
            }
        }
        let meta = self
            .base
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
        let snapshot = self.base.catalog.snapshot();
        match self.base.open_runtime(meta.id, &snapshot).await {
            Ok(rt) => {
                info!(table = %name, id = meta.id, "table created");
                Ok(rt)
            }
            Err(e) => {
                // Undo the catalog entry so that the name is free again.
                let _ = self
                    .base
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
    pub(crate) async fn drop_table(self: &Arc<Self>, name: &str, if_exists: bool) -> Result<bool> {
        let _ddl = self.lock.lock().await;
        self.drop_table_locked(name, if_exists).await
    }

    async fn drop_table_locked(self: &Arc<Self>, name: &str, if_exists: bool) -> Result<bool> {
        let rt = match self.base.table(name) {
            Ok(rt) => rt,
            Err(Error::UnknownTable { .. }) if if_exists => return Ok(false),
            Err(e) => return Err(e),
        };
        let _maintenance = rt.maintenance.lock().await;
        let removed = self
            .base
            .catalog
            .update(|s: &mut CatalogState| -> Result<Option<TableMeta>> {
                Ok(s.tables.remove(&CatalogState::key(name)))
            })
            .await?;
        self.base.tables.write().remove(&rt.id);
        let view_name = removed
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| rt.name.clone());
        let drop_rt = Arc::clone(&rt);
        let _gate = rt.ingest_gate.write().await;
        blocking(move || drop_rt.drop_all(&view_name)).await?;
        self.writes.space_freed();
        if let Some(meta) = removed {
            self.base
                .delete_later(meta.files.into_iter().map(|f| f.key).collect());
        }
        info!(table = %name, "table dropped");
        Ok(true)
    }

    /// Replaces a table's columns with `columns`, which must be the old ones plus new nullable
    /// ones at the end.
    pub(crate) async fn add_columns(
        self: &Arc<Self>,
        name: &str,
        columns: Vec<ColumnMeta>,
    ) -> Result<()> {
        let _ddl = self.lock.lock().await;
        let rt = self.base.table(name)?;
        let _maintenance = rt.maintenance.lock().await;
        let old = self
            .base
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
            .base
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
        let paths = self.base.paths(&meta)?;
        let rt2 = Arc::clone(rt);
        let _gate = rt.ingest_gate.write().await;
        blocking(move || rt2.add_columns(&added, &meta, &paths)).await?;
        self.base.sync_meta(rt);
        Ok(())
    }

    /// Sets a table's options (`None` values go back to the node default).
    pub(crate) async fn set_table_options(
        self: &Arc<Self>,
        name: &str,
        changes: Vec<OptionChange>,
    ) -> Result<()> {
        use OptionChange as C;
        let _ddl = self.lock.lock().await;
        let rt = self.base.table(name)?;
        let id = rt.id;
        self.base
            .catalog
            .update(|s: &mut CatalogState| -> Result<()> {
                let t = s.table_by_id_mut(id).ok_or_else(|| Error::UnknownTable {
                    table: name.to_string(),
                })?;
                for change in &changes {
                    match change.clone() {
                        C::FlushRows(v) => t.options.flush_rows = v,
                        C::FlushBytes(v) => t.options.flush_bytes = v,
                        C::FlushInterval(v) => t.options.flush_interval_ms = v,
                        C::Retention(v) => t.options.retention_ms = v,
                        C::TimeColumn(None) => t.options.time_column = None,
                        C::TimeColumn(Some(c)) => {
                            let column = t.column(&c).ok_or_else(|| {
                                Error::InvalidArgument(format!(
                                    "table {name:?} has no column {c:?} to be its time_column"
                                ))
                            })?;
                            if !skein_compaction::is_time_type(&column.sql_type) {
                                return Err(Error::InvalidArgument(format!(
                                    "column {c:?} of table {name:?} is {}; a time_column must be \
                                     DATE or TIMESTAMP",
                                    column.sql_type
                                )));
                            }
                            t.options.time_column = Some(column.name.clone());
                        }
                    }
                }
                if t.options.retention_ms.is_some() && t.options.time_column.is_none() {
                    return Err(Error::InvalidArgument(format!(
                        "table {name:?}: retention needs a time_column to measure age by; set \
                         both, e.g. SET (time_column = 'ts', retention = '30days')"
                    )));
                }
                Ok(())
            })
            .await?;
        self.base.sync_meta(&rt);
        self.writes.wake_flusher();
        Ok(())
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
