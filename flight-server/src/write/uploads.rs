//! Objects uploaded but not yet in the catalog. Before a flush or a rewrite uploads its files,
//! the node writes down their keys in `<data-dir>/uploads/<name>`; once the catalog lists them
//! (or they are deleted) the note goes. A note left by a node killed in between names objects
//! no catalog may list: on its next start the node deletes those the catalog does not list.
//!
//! Only the node that uploaded an object may commit it, so its own notes are all it needs to
//! look at; objects of other nodes (or of other clusters sharing the bucket) are never touched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skein_storage::CatalogState;
use tracing::{info, warn};

use super::Writes;
use crate::base::blocking;
use crate::error::{Error, Result};

/// The notes of uploads not yet committed, one file per flush or rewrite.
#[derive(Debug, Clone)]
pub(crate) struct Uploads {
    dir: PathBuf,
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("upload notes in {}: {e}", path.display()))
}

impl Uploads {
    /// Opens (creating) the notes directory.
    pub(crate) fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !plain {
            return Err(Error::Internal(format!("bad upload note name {name:?}")));
        }
        Ok(self.dir.join(name))
    }

    /// Notes, durably, that `keys` are about to be uploaded under note `name` (a flush's file
    /// stem, a rewrite's object name), replacing an earlier note of that name. On a blocking
    /// thread: it syncs a file and the directory.
    pub(crate) async fn begin(&self, name: &str, keys: &[String]) -> Result<()> {
        let (notes, name, keys) = (self.clone(), name.to_string(), keys.to_vec());
        blocking(move || notes.write(&name, &keys)).await
    }

    fn write(&self, name: &str, keys: &[String]) -> Result<()> {
        let path = self.path(name)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            for key in keys {
                writeln!(f, "{key}")?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_error(&path, e))
    }

    /// Drops note `name`: its objects are in the catalog, or deleted.
    pub(crate) fn end(&self, name: &str) {
        if let Ok(path) = self.path(name)
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(note = %path.display(), error = %e, "dropping an upload note failed");
        }
    }

    /// The notes left: (name, keys).
    fn left(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let path = entry.map_err(|e| io_error(&self.dir, e))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if name.starts_with('.') {
                // A note whose writing was cut short: its upload had not begun.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            out.push((name, text.lines().map(str::to_string).collect()));
        }
        out.sort();
        Ok(out)
    }
}

/// The note of a rewrite's single object `key`: its name without the extension.
pub(crate) fn note_of(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.strip_suffix(".parquet").unwrap_or(name)
}

/// Whether `state` refers to object `key`, as a listed or a retired file.
fn referenced(state: &CatalogState, key: &str) -> bool {
    state.tables.values().any(|t| {
        t.files.iter().any(|f| f.key == key) || t.retired.iter().any(|r| r.file.key == key)
    })
}

impl Writes {
    /// Deletes the objects this node uploaded before it stopped without committing them, and
    /// returns how many. Runs on start, before any flush or rewrite of this process.
    pub(crate) async fn collect_orphans(self: &Arc<Self>) -> Result<usize> {
        let mut deleted = 0;
        let notes = self.uploads.clone();
        for (name, keys) in blocking(move || notes.left()).await? {
            let state = self.base.catalog.snapshot();
            for key in keys.iter().filter(|k| !referenced(&state, k)) {
                self.base.store.delete(key).await?;
                deleted += 1;
            }
            self.uploads.end(&name);
        }
        if deleted > 0 {
            info!(
                objects = deleted,
                "deleted objects uploaded but never committed"
            );
            self.base.metrics.deleted_objects.inc_by(deleted as u64);
        }
        Ok(deleted)
    }
}
