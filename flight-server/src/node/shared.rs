//! Shared storage: opening the object store and catalog a node is configured with, taking in
//! other nodes' catalog changes, and catalog snapshots (backup and restore).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use skein_storage::backup::{self, RestorePlan, SnapshotInfo};
use skein_storage::{
    CatalogBackend, FileCache, LocalCatalog, LocalStore, ObjectStore, RedisCatalog, S3Config,
    S3Store,
};
use tracing::{info, warn};

use super::{Node, blocking};
use crate::config::Config;
use crate::error::{Error, Result};

/// What storage a node runs on.
pub(super) struct Storage {
    pub store: Arc<dyn ObjectStore>,
    pub backend: Arc<dyn CatalogBackend>,
    pub cache: Option<Arc<FileCache>>,
    pub claim: Option<NodeClaim>,
}

/// How long a node's claim on its id lasts without renewal.
const CLAIM_TTL: Duration = Duration::from_secs(10);

/// This process's claim on its node id in a shared catalog. Taking it fences the catalog's
/// commits with its token (see `skein_storage::redis_catalog`); it is renewed every second.
#[derive(Debug)]
pub(super) struct NodeClaim {
    redis: Arc<RedisCatalog>,
    node_id: String,
    token: String,
    /// When the last renewal that succeeded was sent.
    renewed: parking_lot::Mutex<std::time::Instant>,
}

/// What renewing a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Renewal {
    Held,
    /// Another process took the node id since this one took it.
    Lost,
}

impl NodeClaim {
    /// Takes the claim, waiting out one TTL for the claim of a process that stopped.
    async fn take(redis: Arc<RedisCatalog>, node_id: &str, cluster: &str) -> Result<Self> {
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + CLAIM_TTL + Duration::from_secs(1);
        loop {
            let sent = std::time::Instant::now();
            if redis.take_node(node_id, &token, CLAIM_TTL).await? {
                return Ok(Self {
                    redis,
                    node_id: node_id.to_string(),
                    token,
                    renewed: parking_lot::Mutex::new(sent),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::InvalidArgument(format!(
                    "node id {node_id:?} is in use by another running node of cluster \
                     {cluster:?}: give every node its own --node-id"
                )));
            }
            info!(
                node_id,
                "waiting for the previous claim on this node id to expire"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Gives the claim up (at a clean stop).
    pub(super) async fn release(&self) -> Result<()> {
        Ok(self.redis.release_node(&self.node_id, &self.token).await?)
    }

    /// Renews the claim.
    pub(super) async fn renew(&self) -> Result<Renewal> {
        let sent = std::time::Instant::now();
        if self
            .redis
            .renew_node(&self.node_id, &self.token, CLAIM_TTL)
            .await?
        {
            *self.renewed.lock() = sent;
            Ok(Renewal::Held)
        } else {
            Ok(Renewal::Lost)
        }
    }

    /// Whether the claim is known to be held now: renewed less than half a TTL ago (a process
    /// that was paused, or cut off from Redis, must ask again).
    pub(super) fn fresh(&self) -> bool {
        self.renewed.lock().elapsed() < CLAIM_TTL / 2
    }
}

/// Opens the configured object store and catalog, failing fast with a message that names what
/// is wrong when either cannot be reached.
pub(super) async fn open_storage(config: &Config, data_dir: &Path) -> Result<Storage> {
    let s = &config.storage;
    let (store, cache): (Arc<dyn ObjectStore>, _) = match (&s.s3_endpoint, &s.s3_bucket) {
        (None, None) => (Arc::new(LocalStore::open(data_dir.join("objects"))?), None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::InvalidArgument(
                "--s3-endpoint and --s3-bucket go together: give both or neither".into(),
            ));
        }
        (Some(endpoint), Some(bucket)) => {
            let key = |name: &str| {
                std::env::var(name).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "--s3-endpoint needs credentials: set {name} (and AWS_ACCESS_KEY_ID / \
                         AWS_SECRET_ACCESS_KEY)"
                    ))
                })
            };
            let mut cfg = S3Config::new(
                endpoint,
                bucket,
                &s.s3_region,
                &key("AWS_ACCESS_KEY_ID")?,
                &key("AWS_SECRET_ACCESS_KEY")?,
            );
            cfg.request_timeout = s.storage_timeout;
            let store = S3Store::new(cfg)?;
            store.check().await?;
            let cache = FileCache::open(data_dir.join("cache"), s.cache_bytes)?;
            (Arc::new(store), Some(cache))
        }
    };
    let mut claim = None;
    let backend: Arc<dyn CatalogBackend> = match &s.redis_url {
        None => Arc::new(LocalCatalog::new(data_dir.join("catalog.json"))),
        Some(url) => {
            if cache.is_none() {
                return Err(Error::InvalidArgument(
                    "--redis-url shares the catalog with other nodes, which cannot read this \
                     node's local files: give --s3-endpoint and --s3-bucket too"
                        .into(),
                ));
            }
            let redis =
                Arc::new(RedisCatalog::connect(url, &s.cluster_name, s.storage_timeout).await?);
            claim =
                Some(NodeClaim::take(Arc::clone(&redis), &config.node_id, &s.cluster_name).await?);
            redis
        }
    };
    Ok(Storage {
        store,
        backend,
        cache,
        claim,
    })
}

impl Node {
    /// Takes in what other nodes changed in the shared catalog: new tables get a runtime,
    /// dropped ones lose theirs, added columns and new files show up. If the catalog store lost
    /// its data, keeps serving what this node knows and saves it as a snapshot, once, so that
    /// a restore of the latest snapshot brings it back.
    pub async fn refresh_catalog(self: &Arc<Self>) -> Result<()> {
        let _sync = self.sync.lock().await;
        self.refresh_locked().await
    }

    /// Before a statement is planned: takes in other nodes' changes if the catalog is shared, so
    /// a table another node just created is known. A failure is logged; the node then plans
    /// with what it knows.
    pub async fn catch_up(self: &Arc<Self>) {
        if self.catalog.is_shared()
            && let Err(e) = self.refresh_catalog_if_idle().await
        {
            tracing::debug!(error = %e, "catalog refresh before planning failed");
        }
    }

    /// Like [`Node::refresh_catalog`], but returns at once if a refresh is under way (a query
    /// then runs on the snapshot it has rather than waiting behind a slow change).
    pub async fn refresh_catalog_if_idle(self: &Arc<Self>) -> Result<()> {
        let Ok(_sync) = self.sync.try_lock() else {
            return Ok(());
        };
        self.refresh_locked().await
    }

    async fn refresh_locked(self: &Arc<Self>) -> Result<()> {
        if let Err(e) = self.catalog.refresh().await {
            self.metrics.catalog_refresh_failures.inc();
            if let skein_storage::Error::CatalogLost { seen, .. } = e {
                let first_time = {
                    let mut saved = self.lost_snapshot_saved.lock();
                    let first = *saved != Some(seen);
                    *saved = Some(seen);
                    first
                };
                if first_time {
                    let state = self.catalog.snapshot();
                    match backup::save(
                        self.store.as_ref(),
                        &self.config.storage.cluster_name,
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
    pub(super) async fn apply_catalog(self: &Arc<Self>) -> Result<()> {
        // Under the DDL lock, so that a local CREATE or DROP is either wholly in the snapshot
        // read here or not begun.
        let _ddl = self.ddl.lock().await;
        let snapshot = self.catalog.snapshot();
        let version = (snapshot.epoch, snapshot.version);
        if *self.synced.lock() >= version {
            return Ok(());
        }
        let gone: Vec<_> = {
            let tables = self.tables.read();
            tables
                .values()
                .filter(|rt| snapshot.table_by_id(rt.id).is_none())
                .cloned()
                .collect()
        };
        for rt in gone {
            let _maintenance = rt.maintenance.lock().await;
            self.tables.write().remove(&rt.id);
            let _gate = rt.ingest_gate.write().await;
            let drop_rt = Arc::clone(&rt);
            let name = rt.name.clone();
            blocking(move || drop_rt.drop_all(&name)).await?;
            self.space.notify_waiters();
            info!(table = %rt.name, "table dropped by another node");
        }
        // One table's failure does not hold up the others; the catalog counts as applied only
        // once every table is, so the next refresh tries the failed ones again.
        let mut failed = None;
        for meta in snapshot.tables.values() {
            let existing = self.tables.read().get(&meta.id).cloned();
            let applied = match existing {
                None => self.open_runtime(meta.id, &snapshot).await.map(|_| {
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

    /// Stores a snapshot of the catalog in the object store.
    pub async fn take_snapshot(&self) -> Result<SnapshotInfo> {
        let state = self.catalog.snapshot();
        let info = backup::save(
            self.store.as_ref(),
            &self.config.storage.cluster_name,
            &state,
        )
        .await?;
        self.metrics.snapshots.inc();
        info!(snapshot = %info.key, version = info.version, "catalog snapshot taken");
        Ok(info)
    }

    /// The stored snapshots, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(backup::list(self.store.as_ref(), &self.config.storage.cluster_name).await?)
    }

    /// Restores the catalog from snapshot `key` (or `latest`). A dry run only reports what it
    /// would bring back; a restore refuses a snapshot whose files are missing from the store.
    pub async fn restore_snapshot(
        self: &Arc<Self>,
        key: &str,
        dry_run: bool,
    ) -> Result<RestorePlan> {
        let cluster = &self.config.storage.cluster_name;
        let (plan, state) = planned_restore(self.store.as_ref(), cluster, key).await?;
        if dry_run {
            return Ok(plan);
        }
        refuse_missing(&plan, self.store.as_ref())?;
        let _sync = self.sync.lock().await;
        let restored = self.catalog.restore(&state).await?;
        *self.lost_snapshot_saved.lock() = None;
        info!(snapshot = %plan.snapshot.key, version = restored.version, epoch = restored.epoch, tables = plan.tables, files = plan.files, "catalog restored");
        self.apply_catalog().await?;
        Ok(plan)
    }

    /// Gives up this process's claim on its node id, after the last flush of a clean stop.
    pub async fn release_claim(&self) {
        if let Some(claim) = &self.claim
            && let Err(e) = claim.release().await
        {
            warn!(error = %e, "giving up the claim on this node id failed; it expires by itself");
        }
    }

    /// Another process took this node's id: this one stops writing for good (its commits are
    /// fenced off already) and says so on `/ready`.
    pub(crate) fn claim_lost(&self) {
        self.identity_lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_writes(format!(
            "another process took node id {:?} while this one's claim had lapsed (paused, or cut \
             off from Redis, for longer than {}s); this process may no longer change the catalog: \
             stop it, and give every node its own --node-id",
            self.config.node_id,
            CLAIM_TTL.as_secs()
        ));
    }

    /// Refuses every statement once another process took this node's id: its view of its own
    /// rows (buffers, flushed positions, ring position) is no longer the cluster's, so its
    /// answers could be wrong.
    pub(crate) fn check_identity(&self) -> Result<()> {
        if self.identity_lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::WritesStopped(
                self.writes_stopped().unwrap_or_default(),
            ));
        }
        Ok(())
    }

    /// Before an append is acknowledged: confirms that this process still holds its node id,
    /// asking Redis if the last renewal is not fresh (the process was paused or cut off). A
    /// write acknowledged by a process whose id another one took could never be committed.
    pub(crate) async fn confirm_claim(&self) -> Result<()> {
        let Some(claim) = self.claim.as_ref().filter(|c| !c.fresh()) else {
            return Ok(());
        };
        match claim.renew().await {
            Ok(Renewal::Held) => Ok(()),
            Ok(Renewal::Lost) => {
                self.claim_lost();
                Err(Error::WritesStopped(
                    self.writes_stopped().unwrap_or_default(),
                ))
            }
            Err(e) => Err(Error::PeerUnavailable {
                node: self.config.node_id.clone(),
                reason: format!(
                    "cannot confirm with Redis that this process still holds its node id ({e}); \
                     try again"
                ),
            }),
        }
    }

    /// Watches the shared catalog (every second) and takes periodic snapshots, until shutdown.
    pub async fn run_catalog_watch(self: Arc<Self>) {
        let interval = self.config.storage.snapshot_interval;
        let mut last_snapshot = tokio::time::Instant::now();
        let mut last_version = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.catalog.is_shared()
                && let Err(e) = self.refresh_catalog().await
            {
                warn!(error = %e, "taking in catalog changes failed; will retry");
            }
            if let Some(claim) = &self.claim {
                match claim.renew().await {
                    Ok(Renewal::Held) => {}
                    Ok(Renewal::Lost) => self.claim_lost(),
                    Err(e) => warn!(error = %e, "renewing this node's claim on its id failed"),
                }
            }
            let version = self.catalog.snapshot().version;
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

/// Refuses to start on an empty shared catalog when the bucket holds snapshots of this cluster
/// with tables in them: Redis lost the catalog, and a node that went on would start new tables
/// over the old ones' ids.
pub(super) async fn refuse_a_lost_catalog(
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
pub(super) async fn restore_at_start(
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
