//! Taking in other nodes' changes to the shared catalog: new tables get a runtime, dropped
//! ones lose theirs, added columns and new files show up; a catalog store that lost its data is
//! noticed, and this node's copy saved as a snapshot once.

use std::sync::Arc;
use std::time::Duration;

use skein_storage::backup;
use tracing::{info, warn};

use super::Ddl;
use crate::base::blocking;
use crate::error::Result;

impl Ddl {
    /// Takes in what other nodes changed in the shared catalog: new tables get a runtime,
    /// dropped ones lose theirs, added columns and new files show up. If the catalog store lost
    /// its data, keeps serving what this node knows and saves it as a snapshot, once, so that
    /// a restore of the latest snapshot brings it back.
    pub(crate) async fn refresh_catalog(self: &Arc<Self>) -> Result<()> {
        let _sync = self.sync.lock().await;
        self.refresh_locked().await
    }

    /// Before a statement is planned: takes in other nodes' changes if the catalog is shared, so
    /// a table another node just created is known. A failure is logged; the node then plans
    /// with what it knows.
    pub(crate) async fn catch_up(self: &Arc<Self>) {
        if self.base.catalog.is_shared()
            && let Err(e) = self.refresh_catalog_if_idle().await
        {
            tracing::debug!(error = %e, "catalog refresh before planning failed");
        }
    }

    /// Like [`Node::refresh_catalog`], but returns at once if a refresh is under way (a query
    /// then runs on the snapshot it has rather than waiting behind a slow change).
    pub(crate) async fn refresh_catalog_if_idle(self: &Arc<Self>) -> Result<()> {
        let Ok(_sync) = self.sync.try_lock() else {
            return Ok(());
        };
        self.refresh_locked().await
    }

    async fn refresh_locked(self: &Arc<Self>) -> Result<()> {
        if let Err(e) = self.base.catalog.refresh().await {
            self.base.metrics.catalog_refresh_failures.inc();
            if let skein_storage::Error::CatalogLost { seen, .. } = e {
                let first_time = {
                    let mut saved = self.lost_snapshot_saved.lock();
                    let first = *saved != Some(seen);
                    *saved = Some(seen);
                    first
                };
                if first_time {
                    let state = self.base.catalog.snapshot();
                    match backup::save(
                        self.base.store.as_ref(),
                        &self.base.config.storage.cluster_name,
                        &state,
                    )
                    .await
                    {
                        Ok(info) => {
                            warn!(snapshot = %info.key, version = seen, "the shared catalog was lost; saved this node's copy as a snapshot: restore it with the action skein.restore")
                        }
                        Err(e) => {
                            warn!(error = %e, "the shared catalog was lost and saving this node's copy failed")
                        }
                    }
                }
            }
            return Err(e.into());
        }
        // The store holds this node's history again (another node restored a snapshot).
        *self.lost_snapshot_saved.lock() = None;
        self.apply_catalog().await
    }

    /// Brings the table runtimes in line with the catalog snapshot.
    pub(crate) async fn apply_catalog(self: &Arc<Self>) -> Result<()> {
        // Under the DDL lock, so that a local CREATE or DROP is either wholly in the snapshot
        // read here or not begun.
        let _ddl = self.lock.lock().await;
        let snapshot = self.base.catalog.snapshot();
        let version = (snapshot.epoch, snapshot.version);
        if *self.synced.lock() >= version {
            return Ok(());
        }
        let gone: Vec<_> = {
            let tables = self.base.tables.read();
            tables
                .values()
                .filter(|rt| snapshot.table_by_id(rt.id).is_none())
                .cloned()
                .collect()
        };
        for rt in gone {
            let _maintenance = rt.maintenance.lock().await;
            self.base.tables.write().remove(&rt.id);
            let _gate = rt.ingest_gate.write().await;
            let drop_rt = Arc::clone(&rt);
            let name = rt.name.clone();
            blocking(move || drop_rt.drop_all(&name)).await?;
            self.writes.space_freed();
            info!(table = %rt.name, "table dropped by another node");
        }
        // One table's failure does not hold up the others; the catalog counts as applied only
        // once every table is, so the next refresh tries the failed ones again.
        let mut failed = None;
        for meta in snapshot.tables.values() {
            let existing = self.base.tables.read().get(&meta.id).cloned();
            let applied = match existing {
                None => self.base.open_runtime(meta.id, &snapshot).await.map(|_| {
                    info!(table = %meta.name, files = meta.files.len(), "table created by another node");
                }),
                Some(rt) => {
                    let known = rt.meta();
                    let added = if meta.columns.len() > known.columns.len() {
                        let added = meta.columns[known.columns.len()..].to_vec();
                        self.apply_added_columns(&rt, added, meta.clone()).await
                    } else {
                        Ok(())
                    };
                    rt.set_meta(meta, version);
                    added
                }
            };
            if let Err(e) = applied {
                warn!(table = %meta.name, error = %e, "taking in another node's change failed; will retry");
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        *self.synced.lock() = version;
        Ok(())
    }

    /// Watches the shared catalog (every second) and takes periodic snapshots, until shutdown.
    pub(crate) async fn run_catalog_watch(self: Arc<Self>) {
        let interval = self.base.config.storage.snapshot_interval;
        let mut last_snapshot = tokio::time::Instant::now();
        let mut last_version = None;
        loop {
            tokio::select! {
                _ = self.base.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.base.catalog.is_shared()
                && let Err(e) = self.refresh_catalog().await
            {
                warn!(error = %e, "taking in catalog changes failed; will retry");
            }
            self.writes.renew_claim().await;
            let version = self.base.catalog.snapshot().version;
            let due = !interval.is_zero()
                && version > 0
                && last_snapshot.elapsed() >= interval
                && last_version != Some(version);
            if due {
                last_snapshot = tokio::time::Instant::now();
                match self.take_snapshot().await {
                    Ok(_) => last_version = Some(version),
                    Err(e) => warn!(error = %e, "catalog snapshot failed; will retry"),
                }
            }
        }
    }
}
