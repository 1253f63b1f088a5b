//! Errors of the storage crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing objects and metadata.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The catalog file exists but cannot be decoded.
    #[error("catalog at {path} is corrupt: {message}")]
    CorruptCatalog {
        /// Where the catalog lives.
        path: String,
        /// What the decoder said.
        message: String,
    },
    /// Another writer committed first; reload and try again.
    #[error("catalog changed concurrently (expected version {expected}, found {found})")]
    Conflict {
        /// The version this writer read.
        expected: u64,
        /// The version now stored.
        found: u64,
    },
    /// An object key that is empty, absolute or climbs out of the store's root.
    #[error("invalid object key {key:?}")]
    InvalidKey {
        /// The key as given.
        key: String,
    },
    /// An object that does not exist.
    #[error("object {key} does not exist")]
    NotFound {
        /// Its key.
        key: String,
    },
    /// A request to the object store failed.
    #[error("object store: cannot {op} {key}: {message}")]
    ObjectStore {
        /// What was attempted (`upload`, `download`, `list`, …).
        op: &'static str,
        /// The object (or prefix) involved.
        key: String,
        /// What the service or the network said.
        message: String,
        /// Whether the failure may pass (network, 5xx): retrying later can succeed.
        transient: bool,
    },
    /// The catalog service (Redis) failed or could not be reached.
    #[error("catalog in Redis at {url}: {message}")]
    Redis {
        /// The server, without credentials.
        url: String,
        /// What failed.
        message: String,
    },
    /// The catalog's store holds an older catalog than this node has seen, or none at all:
    /// it was lost (e.g. Redis restarted without its data). Changes stop until a restore.
    #[error(
        "the catalog was lost: the store holds version {found} but this node has seen version \
         {seen}; restore it from a snapshot (action skein.restore) before changing tables"
    )]
    CatalogLost {
        /// The version this node last saw.
        seen: u64,
        /// The version the store holds now.
        found: u64,
    },
    /// Another process took this process's node id (this one was paused or cut off past its
    /// claim's TTL): its commits are refused, so that two processes never both advance one
    /// node's flushed WAL position.
    #[error(
        "another process took this node's id (Redis key {holder} names another holder): this \
         process may no longer change the catalog; stop it"
    )]
    Fenced {
        /// The holder key.
        holder: String,
    },
    /// A catalog snapshot that cannot be found or decoded.
    #[error("catalog snapshot {key}: {message}")]
    Snapshot {
        /// The snapshot's object key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A Parquet footer could not be read.
    #[error("cannot read Parquet metadata of {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
