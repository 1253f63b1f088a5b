//! Errors of the write-ahead log.

use std::path::PathBuf;

/// Everything the log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record in the middle of the log fails its checksum: the log cannot be trusted past it.
    #[error(
        "WAL segment {segment} is corrupt at byte {offset}; valid records follow it, so this is not \
         a torn write. Start with --wal-skip-corrupt to skip the damaged bytes (they are logged)"
    )]
    CorruptRecord {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad frame.
        offset: u64,
    },
    /// A segment file does not start with the WAL header.
    #[error("{segment} is not a skein WAL segment (bad magic or unsupported version {version})")]
    BadSegmentHeader {
        /// The segment file.
        segment: PathBuf,
        /// The version found, if the magic matched.
        version: u32,
    },
    /// An fsync failed earlier; the log accepts nothing more until the node restarts.
    #[error(
        "the WAL stopped accepting writes after a failed write or sync ({0}); a write that got \
         this error may or may not have been applied"
    )]
    Poisoned(String),
    /// The log was closed.
    #[error("the WAL is closed")]
    Closed,
    /// The replay callback refused a record.
    #[error("replaying WAL record {seq} failed: {reason}")]
    Replay {
        /// The record's sequence number.
        seq: u64,
        /// What went wrong.
        reason: String,
    },
    /// A record larger than the log accepts.
    #[error("record of {0} bytes exceeds the WAL's record limit")]
    TooLarge(usize),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
