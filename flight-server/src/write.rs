//! The write path: everything between a batch arriving and its rows sitting in a Parquet file
//! named by the catalog.
//!
//! It owns the write-ahead log ([`wal`]: open and replay, truncation once records are in
//! Parquet), appends ([`appends`]: fit to the table, log, wait for durability, buffer; the
//! in-flight floors that keep truncation behind them; the reservations that bound buffered
//! bytes), flushes ([`flush`]: a buffer generation to Parquet, uploaded and committed with the
//! node's WAL position in one catalog step; the flusher that decides when), the notes of
//! uploads not yet committed ([`uploads`]) and this process's
//! claim on its node id ([`claim`]), which fences every commit it makes.
//!
//! Its promises: an append returns only once its record is durable and its rows are visible;
//! an acknowledged row is never lost by a crash (replay) and never counted twice (a flush
//! commits its files and its WAL position together, and only the process holding the node id
//! may commit for it); once the node stops accepting writes, it says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use skein_wal::Wal;
use tokio::sync::Notify;

use crate::base::Base;
use crate::error::{Error, Result};

pub(crate) mod appends;
pub(crate) mod claim;
pub(crate) mod flush;
pub(crate) mod uploads;
pub(crate) mod wal;
pub(crate) mod wal_record;

use appends::InFlight;
use claim::NodeClaim;
use uploads::Uploads;

/// The write path's state.
#[derive(Debug)]
pub(crate) struct Writes {
    base: Arc<Base>,
    /// This process's claim on its node id in a shared catalog.
    claim: Option<NodeClaim>,
    /// Set once another process took this node's id: this one then serves nothing.
    identity_lost: AtomicBool,
    /// Set when the node stopped accepting writes: why.
    writes_stopped: parking_lot::Mutex<Option<String>>,
    /// The write-ahead log every ingested batch goes through.
    wal: Arc<Wal>,
    /// Appends between their WAL record and their buffer append: the WAL keeps their records.
    in_flight: InFlight,
    /// Signalled when buffer space is freed (a flush finished, a table was dropped).
    space: Notify,
    /// Buffer bytes admitted appends hold before their rows reach a buffer.
    reserved_bytes: parking_lot::Mutex<u64>,
    /// Set when a logged record could not be buffered: flushes and WAL truncation stop until a
    /// restart replays the log.
    needs_replay: AtomicBool,
    /// Wakes the flusher when a buffer passes a threshold.
    flush_wakeup: Notify,
    /// Notes of objects uploaded and not yet committed.
    uploads: Uploads,
    /// Scratch directory for files being written.
    tmp_dir: PathBuf,
    /// Slots for ingest streams at once.
    pub(crate) ingest_slots: Arc<tokio::sync::Semaphore>,
}

impl Writes {
    /// The write path over `base`, with the WAL already opened and replayed into the buffers.
    pub(crate) fn new(
        base: Arc<Base>,
        wal: Wal,
        claim: Option<NodeClaim>,
        data_dir: &std::path::Path,
    ) -> Result<Self> {
        let uploads = Uploads::open(data_dir.join("uploads"))?;
        let ingest_slots = Arc::new(tokio::sync::Semaphore::new(
            base.config.max_ingest_streams.max(1),
        ));
        Ok(Self {
            claim,
            identity_lost: AtomicBool::new(false),
            writes_stopped: parking_lot::Mutex::new(None),
            wal: Arc::new(wal),
            in_flight: InFlight::default(),
            space: Notify::new(),
            reserved_bytes: parking_lot::Mutex::new(0),
            needs_replay: AtomicBool::new(false),
            flush_wakeup: Notify::new(),
            uploads,
            tmp_dir: data_dir.join("tmp"),
            ingest_slots,
            base,
        })
    }

    /// A fresh scratch path under the node's temporary directory.
    pub(crate) fn scratch_path(&self) -> PathBuf {
        self.tmp_dir.join(uuid::Uuid::new_v4().to_string())
    }

    /// The notes of uploads not yet committed (flushes here; rewrites in maintenance).
    pub(crate) fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    /// Tells writers waiting for buffer space that some was freed (a table dropped, a
    /// generation flushed).
    pub(crate) fn space_freed(&self) {
        self.space.notify_waiters();
    }

    /// Asks the flusher to look at the buffers now (a threshold changed or was passed).
    pub(crate) fn wake_flusher(&self) {
        self.flush_wakeup.notify_one();
    }

    /// Why the node stopped accepting writes, if it did.
    pub(crate) fn writes_stopped(&self) -> Option<String> {
        self.writes_stopped.lock().clone()
    }

    fn check_writable(&self) -> Result<()> {
        match self.writes_stopped.lock().as_ref() {
            Some(reason) => Err(Error::WritesStopped(reason.clone())),
            None => Ok(()),
        }
    }

    /// Stops accepting writes for good (until a restart), saying why.
    pub(crate) fn stop_writes(&self, reason: String) {
        let mut stopped = self.writes_stopped.lock();
        if stopped.is_none() {
            tracing::error!(reason = %reason, "this node stops accepting writes");
            *stopped = Some(reason);
        }
    }

    fn needs_replay(&self) -> bool {
        self.needs_replay.load(Ordering::SeqCst)
    }

    /// WAL segments on disk, for the gauge.
    pub(crate) fn wal_segments(&self) -> usize {
        self.wal.segment_count()
    }
}
