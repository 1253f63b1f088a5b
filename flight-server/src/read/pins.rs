//! Files a query reads, kept until it ends: local copies of remote objects (the file cache),
//! or pins on the local store's objects so that a deferred deletion waits for the readers.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use skein_storage::{CachedFile, FileMeta};

use super::Reads;
use crate::error::Result;

/// How many objects one query downloads at once.
const PARALLEL_DOWNLOADS: usize = 8;

/// Keys of local-store objects being read, with how many readers each.
pub(crate) type PinnedKeys = Arc<parking_lot::Mutex<HashMap<String, usize>>>;

/// Files a query reads, kept until it ends: cache entries (a remote store), or pins on the
/// local store's objects.
#[derive(Debug)]
pub(crate) enum Held {
    /// Local copies of remote objects.
    Cached(#[allow(dead_code)] Vec<CachedFile>),
    /// Objects of the local store.
    Pinned(#[allow(dead_code)] FilePins),
}

/// Pins on local-store objects, released when dropped.
#[derive(Debug)]
pub(crate) struct FilePins {
    keys: Vec<String>,
    pinned: PinnedKeys,
}

impl Drop for FilePins {
    fn drop(&mut self) {
        let mut pinned = self.pinned.lock();
        for k in &self.keys {
            if let Some(n) = pinned.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pinned.remove(k);
                }
            }
        }
    }
}

impl Reads {
    /// Local paths of `files`, fetching them into the cache if the store is remote.
    pub(crate) async fn local_copies(&self, files: &[FileMeta]) -> Result<(Vec<String>, Held)> {
        let Some(cache) = &self.base.cache else {
            let paths = self.base.local_paths(files)?;
            return Ok((paths, Held::Pinned(self.pin_files(files))));
        };
        let store = Arc::clone(&self.base.store);
        let cached: Vec<CachedFile> = futures::stream::iter(files.iter().cloned())
            .map(|f| {
                let (cache, store) = (Arc::clone(cache), Arc::clone(&store));
                async move { cache.get(store.as_ref(), &f).await }
            })
            .buffered(PARALLEL_DOWNLOADS)
            .try_collect()
            .await?;
        let paths = cached
            .iter()
            .map(|c| c.path().display().to_string())
            .collect();
        Ok((paths, Held::Cached(cached)))
    }

    /// Marks `files` of the local store as being read until the guard drops: their objects
    /// are not deleted meanwhile.
    fn pin_files(&self, files: &[FileMeta]) -> FilePins {
        let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
        let mut pinned = self.pinned.lock();
        for k in &keys {
            *pinned.entry(k.clone()).or_default() += 1;
        }
        FilePins {
            keys,
            pinned: Arc::clone(&self.pinned),
        }
    }

    /// Whether a query on this node is reading the object `key` of the local store.
    pub(crate) fn is_pinned(&self, key: &str) -> bool {
        self.pinned.lock().contains_key(key)
    }
}
