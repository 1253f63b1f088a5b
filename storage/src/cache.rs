//! A local cache of objects, for stores that are not on local disk (S3).
//!
//! DuckDB reads Parquet from local files, so a query first gets every file it needs through the
//! cache: a hit is a pinned local copy, a miss streams the object into the cache directory. The
//! cache holds at most `max_bytes` of unpinned files and evicts the least recently used; files a
//! running query holds ([`CachedFile`]) are never evicted under it.
//!
//! An entry is named after the object's identity in the manifest (key, size and commit time),
//! so an object that is replaced under the same key is a different entry: a cached copy of the
//! old content is never served for the new one. The directory is emptied at start.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tracing::warn;

use crate::catalog::FileMeta;
use crate::error::{Error, Result};
use crate::object_store::ObjectStore;

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    bytes: u64,
    pins: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Bytes of every entry.
    total: u64,
    /// Logical clock for recency.
    tick: u64,
}

/// Counters of the cache, for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads served from a cached copy.
    pub hits: AtomicU64,
    /// Reads that downloaded the object.
    pub misses: AtomicU64,
    /// Bytes downloaded.
    pub downloaded_bytes: AtomicU64,
    /// Entries evicted to stay under the bound.
    pub evictions: AtomicU64,
}

/// The cache directory and its bookkeeping.
#[derive(Debug)]
pub struct FileCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// One download per entry at a time: others wait for it.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Counters.
    pub stats: CacheStats,
}

/// A cached file held for reading; the cache does not evict it until this is dropped.
#[derive(Debug)]
pub struct CachedFile {
    cache: Arc<FileCache>,
    name: String,
    path: PathBuf,
}

impl CachedFile {
    /// The local copy.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        let mut state = self.cache.state.lock();
        if let Some(e) = state.entries.get_mut(&self.name) {
            e.pins = e.pins.saturating_sub(1);
        }
        self.cache.evict(&mut state);
    }
}

/// A scratch file removed on drop unless it was renamed away.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A download in progress; its entry in `loading` goes when it ends.
struct LoadingEntry<'a> {
    cache: &'a FileCache,
    name: &'a str,
}

impl Drop for LoadingEntry<'_> {
    fn drop(&mut self) {
        self.cache.loading.lock().remove(self.name);
    }
}

/// The entry name of a file: its key, size and commit time, hashed.
fn entry_name(file: &FileMeta) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    file.key.hash(&mut h);
    file.bytes.hash(&mut h);
    file.created_at_ms.hash(&mut h);
    format!("{:016x}.parquet", h.finish())
}

impl FileCache {
    /// A cache in `dir` (emptied) holding at most `max_bytes` of unpinned files.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Arc<Self>> {
        let dir = dir.into();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Arc::new(Self {
            dir,
            max_bytes,
            state: Mutex::new(State::default()),
            loading: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes cached now.
    pub fn cached_bytes(&self) -> u64 {
        self.state.lock().total
    }

    /// Pins the entry `name` if it is cached.
    fn pin(self: &Arc<Self>, name: &str) -> Option<CachedFile> {
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        let e = state.entries.get_mut(name)?;
        e.pins += 1;
        e.last_used = tick;
        Some(CachedFile {
            cache: Arc::clone(self),
            name: name.to_string(),
            path: e.path.clone(),
        })
    }

    /// A local copy of `file`, downloaded from `store` unless cached.
    pub async fn get(
        self: &Arc<Self>,
        store: &dyn ObjectStore,
        file: &FileMeta,
    ) -> Result<CachedFile> {
        let name = entry_name(file);
        if let Some(hit) = self.pin(&name) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let lock = Arc::clone(self.loading.lock().entry(name.clone()).or_default());
        let _loading = lock.lock().await;
        if let Some(hit) = self.pin(&name) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        // Removes the partial download and the loading entry however this ends (also when the
        // query is cancelled mid-download and this future is dropped).
        let tmp = TempFile(self.dir.join(format!(".{}.tmp", uuid::Uuid::new_v4())));
        let _loading_entry = LoadingEntry {
            cache: self,
            name: &name,
        };
        let n = store.get_to_file(&file.key, &tmp.0).await?;
        if n != file.bytes {
            return Err(Error::ObjectStore {
                op: "download",
                key: file.key.clone(),
                message: format!(
                    "the object has {n} bytes but the manifest says {}: it was replaced",
                    file.bytes
                ),
                transient: false,
            });
        }
        let path = self.dir.join(&name);
        std::fs::rename(&tmp.0, &path).map_err(Error::io(&path))?;
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.stats
            .downloaded_bytes
            .fetch_add(file.bytes, Ordering::Relaxed);
        // Into the map before the loading entry goes, so a later reader finds it.
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        if !state.entries.contains_key(&name) {
            state.total += file.bytes;
        }
        let entry = state.entries.entry(name.clone()).or_insert(Entry {
            path: path.clone(),
            bytes: file.bytes,
            pins: 0,
            last_used: tick,
        });
        entry.pins += 1;
        entry.last_used = tick;
        self.evict(&mut state);
        Ok(CachedFile {
            cache: Arc::clone(self),
            name: name.clone(),
            path,
        })
    }

    /// Removes least recently used unpinned entries while over the bound.
    fn evict(&self, state: &mut State) {
        while state.total > self.max_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(_, e)| e.pins == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone());
            let Some(name) = victim else { break };
            if let Some(e) = state.entries.remove(&name) {
                state.total -= e.bytes;
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                if let Err(err) = std::fs::remove_file(&e.path) {
                    warn!(path = %e.path.display(), error = %err, "removing an evicted cache file failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::LocalStore;

    fn file(key: &str, bytes: u64, created_at_ms: i64) -> FileMeta {
        FileMeta {
            partition: None,
            key: key.into(),
            rows: 1,
            bytes,
            columns: vec![],
            stats: vec![],
            created_at_ms,
            node: None,
            max_seq: None,
        }
    }

    async fn put(store: &LocalStore, dir: &Path, key: &str, body: &[u8]) {
        let src = dir.join("src.tmp");
        std::fs::write(&src, body).expect("write");
        store.put_file(key, &src).await.expect("put");
    }

    #[tokio::test]
    async fn hits_evicts_and_never_serves_a_replaced_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("objects")).expect("store");
        let cache = FileCache::open(dir.path().join("cache"), 10).expect("cache");
        put(&store, dir.path(), "a", b"aaaaaa").await;
        put(&store, dir.path(), "b", b"bbbbbb").await;

        let a = cache.get(&store, &file("a", 6, 1)).await.expect("a");
        assert_eq!(std::fs::read(a.path()).expect("read"), b"aaaaaa");
        drop(a);
        let a = cache.get(&store, &file("a", 6, 1)).await.expect("a again");
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 1);
        // b does not fit beside a, but a is pinned: both stay until a is released.
        let b = cache.get(&store, &file("b", 6, 1)).await.expect("b");
        assert_eq!(cache.cached_bytes(), 12);
        let a_path = a.path().to_path_buf();
        drop(a);
        assert_eq!(cache.cached_bytes(), 6, "a evicted once unpinned");
        assert!(!a_path.exists());
        drop(b);

        // "b" replaced under the same key: the manifest entry differs, so the old copy is not used.
        put(&store, dir.path(), "b", b"BBBBBBB").await;
        let b2 = cache.get(&store, &file("b", 7, 2)).await.expect("new b");
        assert_eq!(std::fs::read(b2.path()).expect("read"), b"BBBBBBB");
        // A manifest entry that does not match the object is refused, not served.
        let err = cache
            .get(&store, &file("a", 5, 9))
            .await
            .expect_err("size mismatch");
        assert!(err.to_string().contains("replaced"), "{err}");
    }
}
