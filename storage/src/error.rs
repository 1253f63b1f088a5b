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
