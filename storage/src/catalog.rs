//! The catalog: tables, their columns and options, and the manifest of their files.
//!
//! The whole catalog is one versioned document ([`CatalogState`]). Writers read a snapshot,
//! change a copy and commit it with compare-and-set on the version ([`CatalogBackend::commit`]),
//! so two writers never lose each other's changes. [`Catalog`] is what a node holds: the latest
//! snapshot in memory and a serialised `update` that retries on conflict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::object_store::sync_dir;
use crate::stats::ColumnStats;

/// One column of a table, in DuckDB's type syntax (`INTEGER`, `DECIMAL(18,3)`, `VARCHAR[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMeta {
    /// Column name as created (lookups ignore case).
    pub name: String,
    /// DuckDB type of the column.
    pub sql_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Object key in the object store.
    pub key: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the object in bytes.
    pub bytes: u64,
    /// Names of the table's columns the file holds (older files lack columns added later).
    pub columns: Vec<String>,
    /// Statistics per column, from the file's footer.
    #[serde(default)]
    pub stats: Vec<ColumnStats>,
    /// When the file was committed, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The day (`YYYY-MM-DD`) of the table's time column all its rows fall on, if the table
    /// has a time column and the rows have a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The node whose buffer the file was flushed from (none for files merged from several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The highest WAL sequence number of that node's rows in the file: with `node`, it tells
    /// a node which of its files a coordinator holding an older catalog does not know yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq: Option<u64>,
}

/// A table's own settings; each unset one takes the node's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    /// Flush the buffer at this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_rows: Option<u64>,
    /// Flush the buffer at this many bytes of Arrow data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_bytes: Option<u64>,
    /// Flush the buffer when its oldest row is this old, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    /// The table's time column (DATE or TIMESTAMP): files are laid out by its day, and
    /// retention measures age by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_column: Option<String>,
    /// Drop files whose every row's time column is older than this, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

/// A file taken out of the manifest (merged, rewritten or expired) whose object is deleted
/// once no query can still be reading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredFile {
    /// The file as it was listed: a fragment planned on an older catalog may still name it.
    pub file: FileMeta,
    /// When its object may be deleted, milliseconds since the Unix epoch.
    pub delete_after_ms: i64,
}

/// A table: its identity, columns, and files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
    /// Stable id; object keys and internal names use it, so a dropped and re-created table
    /// never sees the old one's files.
    pub id: u64,
    /// Name as created.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<ColumnMeta>,
    /// Files in commit order.
    #[serde(default)]
    pub files: Vec<FileMeta>,
    /// Sequence number for the next file's key.
    #[serde(default)]
    pub next_file_seq: u64,
    /// Per node id: the WAL position up to which this table's records are in `files`. Advanced
    /// in the same commit as the file that holds them; replay skips records at or below it.
    #[serde(default)]
    pub flushed_wal: std::collections::BTreeMap<String, u64>,
    /// When the table was created, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Settings of its own (`ALTER TABLE … SET (…)`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub options: TableOptions,
    /// Files out of the manifest whose objects are not deleted yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredFile>,
}

fn is_default(o: &TableOptions) -> bool {
    *o == TableOptions::default()
}

impl TableMeta {
    /// Total rows in the table's files.
    pub fn file_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Looks a column up by name, ignoring case.
    pub fn column(&self, name: &str) -> Option<&ColumnMeta> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// The whole catalog at one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    /// Incremented by every commit.
    pub version: u64,
    /// Changed by every restore from a snapshot: versions only compare within one epoch.
    #[serde(default)]
    pub epoch: u64,
    /// Id for the next table created.
    pub next_table_id: u64,
    /// Tables by lower-cased name.
    pub tables: BTreeMap<String, TableMeta>,
    /// A random id of the commit that made this version (empty in catalogs older than commit
    /// ids). Versions can come back (a store restored from an older copy, then committed to
    /// again); the id at a version tells whether it is still the version this node saw.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
}

/// What a store holds at its head: enough to see that another node committed, and whether the
/// store's history still passes through the version a node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The stored version.
    pub version: u64,
    /// The stored epoch.
    pub epoch: u64,
    /// The id of the commit that made `version` (empty if unknown).
    pub commit: String,
}

impl CatalogState {
    /// This state's head.
    pub fn head(&self) -> Head {
        Head {
            version: self.version,
            epoch: self.epoch,
            commit: self.commit.clone(),
        }
    }
}

/// A new random commit id.
pub fn new_commit_id() -> String {
    format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0)
}

impl CatalogState {
    /// The key tables are stored under: names compare without regard to case.
    pub fn key(name: &str) -> String {
        name.to_lowercase()
    }

    /// Looks a table up by name, ignoring case.
    pub fn table(&self, name: &str) -> Option<&TableMeta> {
        self.tables.get(&Self::key(name))
    }

    /// Mutable lookup by name, ignoring case.
    pub fn table_mut(&mut self, name: &str) -> Option<&mut TableMeta> {
        self.tables.get_mut(&Self::key(name))
    }

    /// Looks a table up by id.
    pub fn table_by_id(&self, id: u64) -> Option<&TableMeta> {
        self.tables.values().find(|t| t.id == id)
    }

    /// Mutable lookup by id.
    pub fn table_by_id_mut(&mut self, id: u64) -> Option<&mut TableMeta> {
        self.tables.values_mut().find(|t| t.id == id)
    }
}

/// Where the catalog is persisted.
#[async_trait]
pub trait CatalogBackend: Send + Sync + std::fmt::Debug {
    /// Reads the latest committed catalog (an empty one if none was ever committed).
    async fn load(&self) -> Result<CatalogState>;

    /// The stored head, cheaply (to see whether another node changed anything).
    async fn version(&self) -> Result<Head> {
        Ok(self.load().await?.head())
    }

    /// The id of the commit that made `version` in the store's history, if the store still
    /// remembers it (a shared store keeps the recent ones; `None`: not known).
    async fn commit_at(&self, _version: u64) -> Result<Option<String>> {
        Ok(None)
    }

    /// Stores `next` if the stored version, epoch and commit id are still `base`'s;
    /// `next.version` must be `base.version + 1`. Fails with [`Error::Conflict`] otherwise.
    async fn commit(&self, base: &CatalogState, next: &CatalogState) -> Result<()>;

    /// Stores `state` whatever is stored now (a restore).
    async fn replace(&self, state: &CatalogState) -> Result<()>;

    /// Whether other processes change this catalog too (so nodes must look for their changes).
    fn is_shared(&self) -> bool {
        false
    }
}

/// The catalog as one JSON file, replaced atomically (write, fsync, rename, fsync directory).
#[derive(Debug)]
pub struct LocalCatalog {
    path: PathBuf,
    /// Serialises commits within the process; the file has a single writer.
    lock: tokio::sync::Mutex<()>,
}

impl LocalCatalog {
    /// A catalog stored at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn read(path: &Path) -> Result<CatalogState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CorruptCatalog {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CatalogState::default()),
            Err(e) => Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    fn write(path: &Path, state: &CatalogState) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::CorruptCatalog {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
            f.write_all(&bytes).map_err(Error::io(&tmp))?;
            f.sync_all().map_err(Error::io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(Error::io(path))?;
        sync_dir(dir)
    }
}

#[async_trait]
impl CatalogBackend for LocalCatalog {
    async fn load(&self) -> Result<CatalogState> {
        let path = self.path.clone();
        run_blocking(move || Self::read(&path)).await
    }

    async fn commit(&self, base: &CatalogState, next: &CatalogState) -> Result<()> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        let next = next.clone();
        let (expected, epoch, commit) = (base.version, base.epoch, base.commit.clone());
        run_blocking(move || {
            let stored = Self::read(&path)?;
            if stored.version != expected || stored.epoch != epoch || stored.commit != commit {
                return Err(Error::Conflict {
                    expected,
                    found: stored.version,
                });
            }
            Self::write(&path, &next)
        })
        .await
    }

    async fn replace(&self, state: &CatalogState) -> Result<()> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        let state = state.clone();
        run_blocking(move || Self::write(&path, &state)).await
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::from("<blocking task>"),
            source: std::io::Error::other(e),
        })?
}

/// A node's handle on the catalog: the latest snapshot, and serialised updates.
#[derive(Debug)]
pub struct Catalog {
    backend: Arc<dyn CatalogBackend>,
    /// The latest state this node committed or loaded.
    current: parking_lot::RwLock<Arc<CatalogState>>,
    /// Serialises this node's updates so that they do not conflict with each other.
    writer: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// Loads the catalog from `backend`.
    pub async fn open(backend: Arc<dyn CatalogBackend>) -> Result<Self> {
        let state = backend.load().await?;
        Ok(Self {
            backend,
            current: parking_lot::RwLock::new(Arc::new(state)),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<CatalogState> {
        Arc::clone(&self.current.read())
    }

    /// Applies `change` to a copy of the catalog and commits it. If another writer committed in
    /// between, reloads and applies `change` again. `change` returning an error commits nothing.
    /// A failed commit may still have landed; the snapshot is reloaded either way, so changes
    /// should be idempotent (add a file only if its key is not listed yet).
    pub async fn update<T, E>(
        &self,
        mut change: impl FnMut(&mut CatalogState) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<Error>,
    {
        let _guard = self.writer.lock().await;
        let mut base = self.snapshot();
        let mut conflicts = 0u64;
        loop {
            let mut next = (*base).clone();
            let out = change(&mut next)?;
            next.version = base.version + 1;
            next.epoch = base.epoch;
            next.commit = new_commit_id();
            match self.backend.commit(&base, &next).await {
                Ok(()) => {
                    self.advance(Arc::new(next));
                    return Ok(out);
                }
                Err(Error::Conflict { .. }) => {
                    if conflicts >= MAX_CONFLICTS {
                        return Err(Error::Conflict {
                            expected: base.version,
                            found: self.backend.version().await?.version,
                        }
                        .into());
                    }
                    conflicts += 1;
                    // Back off a little, more with each conflict, so that busy writers spread out.
                    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % 20;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        (conflicts * 5).min(100) + jitter,
                    ))
                    .await;
                    let stored = self.backend.load().await?;
                    self.check_not_lost(&base, &stored.head()).await?;
                    base = Arc::new(stored);
                    self.advance(Arc::clone(&base));
                }
                Err(e) => {
                    // The commit may have landed (a rename done, its directory sync failed):
                    // take whatever the backend now holds, so the next change starts from it.
                    if let Ok(state) = self.backend.load().await
                        && self.check_not_lost(&base, &state.head()).await.is_ok()
                    {
                        self.advance(Arc::new(state));
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// Whether other processes change this catalog too.
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Takes in what other nodes committed. Returns whether the snapshot changed. Fails with
    /// [`Error::CatalogLost`] (keeping the snapshot) if the store went back to an older
    /// version of the same epoch, as when Redis lost its data.
    pub async fn refresh(&self) -> Result<bool> {
        let head = self.backend.version().await?;
        let current = self.snapshot();
        if head == current.head() {
            return Ok(false);
        }
        self.check_not_lost(&current, &head).await?;
        let stored = self.backend.load().await?;
        self.check_not_lost(&current, &stored.head()).await?;
        Ok(self.advance(Arc::new(stored)))
    }

    /// Fails with [`Error::CatalogLost`] if the store at `head` no longer holds what `seen`
    /// holds: nothing at all (version 0), an older epoch, an older version of the same epoch,
    /// or a history that does not pass through `seen`'s commit (the version came back with
    /// other commits: a store restored from an older copy, then committed to).
    async fn check_not_lost(&self, seen: &CatalogState, head: &Head) -> Result<()> {
        let lost = |found: u64| {
            Err(Error::CatalogLost {
                seen: seen.version,
                found,
            })
        };
        let older = (head.version == 0 && seen.version > 0)
            || head.epoch < seen.epoch
            || (head.epoch == seen.epoch && head.version < seen.version);
        if older {
            return lost(head.version);
        }
        if head.epoch != seen.epoch || seen.commit.is_empty() {
            return Ok(());
        }
        let at_seen = if head.version == seen.version {
            Some(head.commit.clone())
        } else {
            self.backend.commit_at(seen.version).await?
        };
        match at_seen {
            Some(id) if !id.is_empty() && id != seen.commit => lost(head.version),
            _ => Ok(()),
        }
    }

    /// Makes `state` the snapshot if it is newer (a later epoch, or a later version of the
    /// same epoch); the snapshot never moves back. Returns whether it moved.
    fn advance(&self, state: Arc<CatalogState>) -> bool {
        let mut slot = self.current.write();
        if (state.epoch, state.version) > (slot.epoch, slot.version) {
            *slot = state;
            return true;
        }
        false
    }

    /// Makes `state` the catalog, whatever the store holds now: a restore. It gets a new epoch
    /// and a version above any seen, so every node takes it in.
    pub async fn restore(&self, state: &CatalogState) -> Result<CatalogState> {
        let _guard = self.writer.lock().await;
        let stored = self
            .backend
            .version()
            .await
            .map(|h| h.version)
            .unwrap_or_default();
        let mut next = state.clone();
        next.version = stored.max(self.snapshot().version).max(state.version) + 1;
        next.epoch = new_epoch(self.snapshot().epoch.max(state.epoch));
        next.commit = new_commit_id();
        self.backend.replace(&next).await?;
        *self.current.write() = Arc::new(next.clone());
        Ok(next)
    }
}

/// An epoch different from `old`: the time in milliseconds, or one more than `old`.
fn new_epoch(old: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.max(old + 1)
}

/// Conflicts one update retries before it gives up.
const MAX_CONFLICTS: u64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: u64, name: &str) -> TableMeta {
        TableMeta {
            retired: Vec::new(),
            id,
            name: name.to_string(),
            columns: vec![ColumnMeta {
                name: "a".into(),
                sql_type: "INTEGER".into(),
                nullable: true,
            }],
            files: vec![],
            next_file_seq: 0,
            flushed_wal: Default::default(),
            created_at_ms: 0,
            options: Default::default(),
        }
    }

    #[tokio::test]
    async fn commits_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.json");
        let catalog = Catalog::open(Arc::new(LocalCatalog::new(&path)))
            .await
            .expect("open");
        catalog
            .update(|s| -> Result<()> {
                s.tables.insert("t".into(), table(1, "T"));
                Ok(())
            })
            .await
            .expect("update");
        let reopened = Catalog::open(Arc::new(LocalCatalog::new(&path)))
            .await
            .expect("reopen");
        let snap = reopened.snapshot();
        assert_eq!(snap.version, 1);
        assert_eq!(snap.table("t").map(|t| t.name.as_str()), Some("T"));
    }

    #[tokio::test]
    async fn stale_commit_is_a_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = LocalCatalog::new(dir.path().join("catalog.json"));
        let base = CatalogState::default();
        let next = CatalogState {
            version: 1,
            ..Default::default()
        };
        backend.commit(&base, &next).await.expect("first commit");
        let err = backend.commit(&base, &next).await.expect_err("stale");
        assert!(matches!(
            err,
            Error::Conflict {
                expected: 0,
                found: 1
            }
        ));
    }

    #[tokio::test]
    async fn update_retries_after_another_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.json");
        let a = Catalog::open(Arc::new(LocalCatalog::new(&path)))
            .await
            .expect("a");
        let b = Catalog::open(Arc::new(LocalCatalog::new(&path)))
            .await
            .expect("b");
        a.update(|s| -> Result<()> {
            s.tables.insert("x".into(), table(1, "x"));
            Ok(())
        })
        .await
        .expect("a commits");
        // b's snapshot is stale; its update must reload and keep a's table.
        b.update(|s| -> Result<()> {
            s.tables.insert("y".into(), table(2, "y"));
            Ok(())
        })
        .await
        .expect("b commits");
        let snap = b.snapshot();
        assert_eq!(snap.version, 2);
        assert!(snap.table("x").is_some() && snap.table("y").is_some());
    }

    #[tokio::test]
    async fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.json");
        std::fs::write(&path, b"{not json").expect("write");
        let err = LocalCatalog::new(&path).load().await.expect_err("corrupt");
        assert!(matches!(err, Error::CorruptCatalog { .. }), "{err}");
    }

    /// Lands every commit, then reports the first one as failed (a rename done, its directory
    /// sync failed).
    #[derive(Debug)]
    struct LandsThenFails {
        inner: LocalCatalog,
        failed_once: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl CatalogBackend for LandsThenFails {
        async fn load(&self) -> Result<CatalogState> {
            self.inner.load().await
        }

        async fn replace(&self, state: &CatalogState) -> Result<()> {
            self.inner.replace(state).await
        }

        async fn commit(&self, base: &CatalogState, next: &CatalogState) -> Result<()> {
            self.inner.commit(base, next).await?;
            if !self
                .failed_once
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(Error::Io {
                    path: "catalog-dir".into(),
                    source: std::io::Error::other("directory sync failed"),
                });
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_commit_reported_failed_that_landed_is_seen_by_the_next_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(LandsThenFails {
            inner: LocalCatalog::new(dir.path().join("catalog.json")),
            failed_once: std::sync::atomic::AtomicBool::new(false),
        });
        let catalog = Catalog::open(backend).await.expect("open");
        let add = |s: &mut CatalogState| -> Result<()> {
            s.tables.insert(CatalogState::key("t"), table(1, "t"));
            Ok(())
        };
        assert!(catalog.update(add).await.is_err(), "reported as failed");
        // The snapshot shows what the backend holds, so the next change builds on it rather
        // than failing with a conflict or overwriting it.
        assert!(catalog.snapshot().table("t").is_some());
        catalog
            .update(|s: &mut CatalogState| -> Result<()> {
                s.tables.insert(CatalogState::key("u"), table(2, "u"));
                Ok(())
            })
            .await
            .expect("next change");
        let reloaded = catalog.backend.load().await.expect("load");
        assert!(reloaded.table("t").is_some() && reloaded.table("u").is_some());
    }
}
