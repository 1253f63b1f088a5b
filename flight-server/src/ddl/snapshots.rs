//! Catalog snapshots in the object store: taken periodically and on demand, listed, and
//! restored (at start with `--restore-snapshot`, or by the action `skein.restore`); a node
//! refuses to start on an empty shared catalog whose bucket holds snapshots with tables.

use std::sync::Arc;

use skein_storage::ObjectStore;
use skein_storage::backup::{self, RestorePlan, SnapshotInfo};
use tracing::{info, warn};

use super::Ddl;
use crate::error::{Error, Result};

impl Ddl {
    /// Stores a snapshot of the catalog in the object store.
    pub(crate) async fn take_snapshot(&self) -> Result<SnapshotInfo> {
        let state = self.base.catalog.snapshot();
        let info = backup::save(
            self.base.store.as_ref(),
            &self.base.config.storage.cluster_name,
            &state,
        )
        .await?;
        self.base.metrics.snapshots.inc();
        info!(snapshot = %info.key, version = info.version, "catalog snapshot taken");
        Ok(info)
    }

    /// The stored snapshots, oldest first.
    pub(crate) async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(backup::list(
            self.base.store.as_ref(),
            &self.base.config.storage.cluster_name,
        )
        .await?)
    }

    /// Restores the catalog from snapshot `key` (or `latest`). A dry run only reports what it
    /// would bring back; a restore refuses a snapshot whose files are missing from the store.
    pub(crate) async fn restore_snapshot(
        self: &Arc<Self>,
        key: &str,
        dry_run: bool,
    ) -> Result<RestorePlan> {
        let cluster = &self.base.config.storage.cluster_name;
        let (plan, state) = planned_restore(self.base.store.as_ref(), cluster, key).await?;
        if dry_run {
            return Ok(plan);
        }
        refuse_missing(&plan, self.base.store.as_ref())?;
        let _sync = self.sync.lock().await;
        let restored = self.base.catalog.restore(&state).await?;
        *self.lost_snapshot_saved.lock() = None;
        info!(snapshot = %plan.snapshot.key, version = restored.version, epoch = restored.epoch, tables = plan.tables, files = plan.files, "catalog restored");
        self.apply_catalog().await?;
        Ok(plan)
    }
}

/// Refuses to start on an empty shared catalog when the bucket holds snapshots of this cluster
/// with tables in them: Redis lost the catalog, and a node that went on would start new tables
/// over the old ones' ids.
pub(crate) async fn refuse_a_lost_catalog(
    catalog: &skein_storage::Catalog,
    store: &dyn ObjectStore,
    cluster: &str,
) -> Result<()> {
    if !catalog.is_shared() || catalog.snapshot().version > 0 {
        return Ok(());
    }
    let snapshots = backup::list(store, cluster).await?;
    if let Some(newest) = snapshots
        .iter()
        .filter(|s| s.version > 0)
        .max_by_key(|s| (s.epoch, s.version))
    {
        return Err(Error::InvalidArgument(format!(
            "the shared catalog of cluster {cluster:?} is empty but {} holds its snapshots \
             (newest: {}): the catalog was probably lost; start with --restore-snapshot latest, \
             or choose another --cluster-name for a new cluster",
            store.describe(),
            newest.key
        )));
    }
    Ok(())
}

/// Restores snapshot `key` into `catalog` before the node opens its tables
/// (`--restore-snapshot`), so that WAL replay finds the tables again.
pub(crate) async fn restore_at_start(
    catalog: &skein_storage::Catalog,
    store: &dyn ObjectStore,
    cluster: &str,
    key: &str,
) -> Result<()> {
    let current = catalog.snapshot();
    if current.version > 0 {
        // The flag may linger in an environment: never replace a catalog that is in use.
        warn!(
            version = current.version,
            "--restore-snapshot ignored: the catalog is not empty"
        );
        return Ok(());
    }
    let (plan, state) = planned_restore(store, cluster, key).await?;
    refuse_missing(&plan, store)?;
    let restored = catalog.restore(&state).await?;
    info!(snapshot = %plan.snapshot.key, version = restored.version, tables = plan.tables, files = plan.files, "catalog restored at start");
    Ok(())
}

/// Snapshot `key` of `cluster` and what restoring it would bring back.
async fn planned_restore(
    store: &dyn ObjectStore,
    cluster: &str,
    key: &str,
) -> Result<(RestorePlan, skein_storage::CatalogState)> {
    let (info, state) = backup::load(store, cluster, key).await?;
    let plan = backup::plan(store, info, &state).await?;
    Ok((plan, state))
}

/// A snapshot whose files are not all in the store is not restored.
fn refuse_missing(plan: &RestorePlan, store: &dyn ObjectStore) -> Result<()> {
    match plan.missing_objects.first() {
        Some(first) => Err(Error::InvalidArgument(format!(
            "snapshot {} lists {} file(s) missing from {}, e.g. {first}; not restored",
            plan.snapshot.key,
            plan.missing_objects.len(),
            store.describe(),
        ))),
        None => Ok(()),
    }
}
