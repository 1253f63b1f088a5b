//! Catalog snapshots in the object store: the way back after the catalog store (Redis) lost
//! its data.
//!
//! A snapshot is the whole [`CatalogState`] as JSON under
//! `catalog-snapshots/<cluster>/<taken at, ms>-e<epoch>-v<version>.json`. The newest state is
//! the one with the highest (epoch, version), whichever node took it and when. A restore first checks a snapshot against the objects that exist ([`plan`]), and
//! only then makes it the catalog (`Catalog::restore`).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::catalog::CatalogState;
use crate::error::{Error, Result};
use crate::object_store::ObjectStore;

fn prefix(cluster: &str) -> String {
    format!("catalog-snapshots/{cluster}/")
}

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Its object key.
    pub key: String,
    /// When it was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: i64,
    /// The catalog epoch it holds.
    pub epoch: u64,
    /// The catalog version it holds.
    pub version: u64,
}

fn parse_key(key: &str) -> Option<SnapshotInfo> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    let (rest, version) = name.split_once("-v")?;
    let (at, epoch) = rest.split_once("-e")?;
    Some(SnapshotInfo {
        key: key.to_string(),
        taken_at_ms: at.parse().ok()?,
        epoch: epoch.parse().ok()?,
        version: version.parse().ok()?,
    })
}

/// Stores `state` as a snapshot of `cluster`; returns its description.
pub async fn save(
    store: &dyn ObjectStore,
    cluster: &str,
    state: &CatalogState,
) -> Result<SnapshotInfo> {
    let taken_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let key = format!(
        "{}{taken_at_ms:015}-e{}-v{}.json",
        prefix(cluster),
        state.epoch,
        state.version
    );
    let bytes = serde_json::to_vec(state).map_err(|e| Error::Snapshot {
        key: key.clone(),
        message: e.to_string(),
    })?;
    store.put_bytes(&key, &bytes).await?;
    Ok(SnapshotInfo {
        key,
        taken_at_ms,
        epoch: state.epoch,
        version: state.version,
    })
}

/// The snapshots of `cluster`, oldest first.
pub async fn list(store: &dyn ObjectStore, cluster: &str) -> Result<Vec<SnapshotInfo>> {
    let mut snapshots: Vec<SnapshotInfo> = store
        .list(&prefix(cluster))
        .await?
        .iter()
        .filter_map(|k| parse_key(k))
        .collect();
    snapshots.sort_by_key(|s| (s.taken_at_ms, s.version));
    Ok(snapshots)
}

/// Reads a snapshot: `key` is a snapshot's key, or `latest` (the newest catalog state: highest
/// epoch, then version).
pub async fn load(
    store: &dyn ObjectStore,
    cluster: &str,
    key: &str,
) -> Result<(SnapshotInfo, CatalogState)> {
    let info = if key == "latest" {
        list(store, cluster)
            .await?
            .into_iter()
            .max_by_key(|s| (s.epoch, s.version, s.taken_at_ms))
            .ok_or_else(|| Error::Snapshot {
                key: prefix(cluster),
                message: format!(
                    "cluster {cluster:?} has no snapshots in {}",
                    store.describe()
                ),
            })?
    } else {
        parse_key(key)
            .filter(|s| s.key.starts_with(&prefix(cluster)))
            .ok_or_else(|| Error::Snapshot {
                key: key.to_string(),
                message: format!(
                    "not a snapshot of cluster {cluster:?} (expected {}<ms>-e<epoch>-v<version>.json)",
                    prefix(cluster)
                ),
            })?
    };
    let bytes = match store.get_bytes(&info.key).await {
        Err(Error::NotFound { .. }) => {
            return Err(Error::Snapshot {
                key: info.key.clone(),
                message: "no such snapshot".into(),
            });
        }
        other => other?,
    };
    let state = serde_json::from_slice(&bytes).map_err(|e| Error::Snapshot {
        key: info.key.clone(),
        message: format!("cannot decode: {e}"),
    })?;
    Ok((info, state))
}

/// What a restore of a snapshot would bring back.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// The snapshot.
    pub snapshot: SnapshotInfo,
    /// Tables in it.
    pub tables: usize,
    /// Files in it.
    pub files: usize,
    /// Rows in its files.
    pub rows: u64,
    /// Files it lists whose objects are missing from the store (a restore refuses these).
    pub missing_objects: Vec<String>,
}

/// Checks `state` against the objects in `store`.
pub async fn plan(
    store: &dyn ObjectStore,
    snapshot: SnapshotInfo,
    state: &CatalogState,
) -> Result<RestorePlan> {
    let present: BTreeSet<String> = store.list("tables/").await?.into_iter().collect();
    let files: Vec<_> = state.tables.values().flat_map(|t| t.files.iter()).collect();
    Ok(RestorePlan {
        snapshot,
        tables: state.tables.len(),
        files: files.len(),
        rows: files.iter().map(|f| f.rows).sum(),
        missing_objects: files
            .iter()
            .filter(|f| !present.contains(&f.key))
            .map(|f| f.key.clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::LocalStore;

    #[tokio::test]
    async fn save_list_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("store");
        let mut state = CatalogState {
            version: 3,
            ..Default::default()
        };
        let first = save(&store, "c1", &state).await.expect("save");
        state.version = 4;
        let second = save(&store, "c1", &state).await.expect("save");
        save(&store, "other", &state).await.expect("other cluster");
        let listed = list(&store, "c1").await.expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&first) && listed.contains(&second));
        let (info, loaded) = load(&store, "c1", "latest").await.expect("latest");
        assert_eq!(loaded.version, 4);
        assert_eq!(info.version, 4);
        let err = load(&store, "c1", "catalog-snapshots/other/1-e0-v1.json")
            .await
            .expect_err("foreign key");
        assert!(
            err.to_string().contains("not a snapshot of cluster"),
            "{err}"
        );
        let plan = plan(&store, info, &loaded).await.expect("plan");
        assert_eq!((plan.tables, plan.files), (0, 0));
    }
}
