//! skein-wal: the segmented write-ahead log that makes an acknowledged write durable.
//!
//! A node appends every ingested batch (its Arrow IPC bytes and the table) here before it
//! buffers the rows and acknowledges the client. Records get consecutive sequence numbers and
//! are framed with their length and a CRC32C over sequence number and payload
//! ([`frame`]); segment files carry a magic header and format version and roll at a size
//! ([`segment`]). A dedicated writer thread gathers concurrent appends into one write and one
//! `fdatasync` (group commit) and acknowledges each record only after the sync that covers it
//! ([`log`]).
//!
//! Promises:
//! - With [`SyncMode::Fsync`], a record is on disk when its append returns `Ok`.
//! - Opening the log replays every record after a given sequence number exactly once, in order,
//!   and sequence numbers never repeat (not even after every segment was truncated).
//! - A torn tail (a last record cut short or zeroed) is truncated with a warning; a bad record
//!   with valid records after it stops the open with [`Error::CorruptRecord`] naming segment and
//!   offset, unless [`RecoveryMode::SkipCorrupt`] is chosen, which logs what it skips.
//! - A failed sync is never retried and acknowledged: the log refuses every later write
//!   ([`Error::Poisoned`]).
//! - [`Wal::truncate`] removes only whole segments whose records are all at or below the given
//!   sequence number (those already flushed to Parquet and committed).

pub mod error;
pub mod frame;
pub mod log;
pub mod segment;

pub use error::{Error, Result};
pub use log::{Observer, Recovery, RecoveryMode, SyncMode, Wal, WalConfig};

#[cfg(test)]
mod tests;
