//! Object storage: where flushed Parquet files live.
//!
//! Keys are relative, `/`-separated paths such as `tables/7/node1-00000000000000000001.parquet`.
//! [`LocalStore`] keeps them under a directory; an S3 store implements the same trait.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use crate::error::{Error, Result};

/// A place to keep immutable objects by key.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores the local file `src` under `key`, replacing any object of that name. The file is
    /// consumed (it may be moved). Returns the object's size in bytes. Durable when it returns.
    async fn put_file(&self, key: &str, src: &Path) -> Result<u64>;

    /// Stores `bytes` under `key`, replacing any object of that name. Durable when it returns.
    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Reads a whole (small) object.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>>;

    /// Streams the object into the local file `dest` (created or truncated); returns its size.
    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<u64>;

    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists the keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// A local path from which the object can be read directly, if the store has one.
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// Where the objects are, for messages.
    fn describe(&self) -> String;
}

/// Objects as files under a root directory (the embedded default).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (and creates) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
        Ok(Self { root })
    }

    /// The directory the objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        let clean = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !clean {
            return Err(Error::InvalidKey {
                key: key.to_string(),
            });
        }
        Ok(self.root.join(rel))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_file(&self, key: &str, src: &Path) -> Result<u64> {
        let dest = self.path_of(key)?;
        let src = src.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let dir = dest.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
            let file = std::fs::File::open(&src).map_err(Error::io(&src))?;
            file.sync_all().map_err(Error::io(&src))?;
            let len = file.metadata().map_err(Error::io(&src))?.len();
            std::fs::rename(&src, &dest).map_err(Error::io(&dest))?;
            sync_dir(dir)?;
            Ok(len)
        })
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::from(key),
            source: std::io::Error::other(e),
        })?
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.path_of(key)?;
        let bytes = bytes.to_vec();
        let tmp = dest.with_extension(format!("{}.tmp", uuid::Uuid::new_v4()));
        tokio::task::spawn_blocking(move || -> Result<()> {
            let dir = dest.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
                f.write_all(&bytes).map_err(Error::io(&tmp))?;
                f.sync_all().map_err(Error::io(&tmp))?;
            }
            std::fs::rename(&tmp, &dest).map_err(Error::io(&dest))?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::from(key),
            source: std::io::Error::other(e),
        })?
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| not_found_or_io(key, path, e))
    }

    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<u64> {
        let path = self.path_of(key)?;
        tokio::fs::copy(&path, dest)
            .await
            .map_err(|e| not_found_or_io(key, path, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let mut keys = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Io {
                        path: dir,
                        source: e,
                    });
                }
            };
            while let Some(entry) = entries.next_entry().await.map_err(Error::io(&dir))? {
                let path = entry.path();
                let kind = entry.file_type().await.map_err(Error::io(&path))?;
                if kind.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(&prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}

fn not_found_or_io(key: &str, path: PathBuf, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound {
            key: key.to_string(),
        }
    } else {
        Error::Io { path, source: e }
    }
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_list_delete_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("objects")).expect("open");
        let src = dir.path().join("f.tmp");
        std::fs::write(&src, b"hello").expect("write");
        let n = store
            .put_file("tables/1/a.parquet", &src)
            .await
            .expect("put");
        assert_eq!(n, 5);
        assert!(!src.exists(), "source is consumed");
        let path = store.local_path("tables/1/a.parquet").expect("local path");
        assert_eq!(std::fs::read(path).expect("read"), b"hello");
        assert_eq!(
            store.list("tables/").await.expect("list"),
            vec!["tables/1/a.parquet".to_string()]
        );
        store.delete("tables/1/a.parquet").await.expect("delete");
        store
            .delete("tables/1/a.parquet")
            .await
            .expect("delete twice");
        assert!(store.list("").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open");
        for key in ["", "../x", "/etc/passwd", "a/../../b"] {
            assert!(
                matches!(store.path_of(key), Err(Error::InvalidKey { .. })),
                "{key}"
            );
        }
    }
}
