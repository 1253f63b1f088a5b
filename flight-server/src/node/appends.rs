//! The ingest half of the node: the write-ahead log (open and replay, appends that are
//! acknowledged once durable, truncation after flushes) and the bound on buffered data.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use skein_storage::{CatalogState, TableMeta};
use skein_wal::{RecoveryMode, SyncMode, Wal, WalConfig};
use tracing::{info, warn};

use super::{Node, blocking};
use crate::config::{Config, WalSync};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::table::TableRuntime;
use crate::types::conform;
use crate::wal_record;

/// Appends whose WAL record may be written but whose rows are not yet in a buffer. Each is
/// registered with a floor: its record's sequence number is above it.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    next_token: std::sync::atomic::AtomicU64,
    floors: parking_lot::Mutex<BTreeMap<u64, u64>>,
}

impl InFlight {
    fn register(&self, floor: u64) -> u64 {
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.floors.lock().insert(token, floor);
        token
    }

    fn finish(&self, token: u64) {
        self.floors.lock().remove(&token);
    }

    /// The lowest floor of any append in flight.
    fn min_floor(&self) -> Option<u64> {
        self.floors.lock().values().min().copied()
    }
}

/// Opens the WAL in `data_dir/wal` and replays every record not yet flushed into `tables`.
pub(super) fn open_wal(
    config: &Config,
    data_dir: &Path,
    snapshot: &CatalogState,
    tables: &HashMap<u64, Arc<TableRuntime>>,
    metrics: &Metrics,
    catalog_empty: bool,
) -> Result<Wal> {
    let node_id = &config.node_id;
    let flushed = |t: &TableMeta| t.flushed_wal.get(node_id).copied().unwrap_or(0);
    let by_id: HashMap<u64, &TableMeta> = snapshot.tables.values().map(|t| (t.id, t)).collect();
    let wal_config = WalConfig {
        segment_bytes: config.wal.wal_segment_bytes.max(1024 * 1024),
        sync: match config.wal.wal_sync {
            WalSync::Fsync => SyncMode::Fsync,
            WalSync::None => SyncMode::None,
        },
        recovery: if config.wal.wal_skip_corrupt {
            RecoveryMode::SkipCorrupt
        } else {
            RecoveryMode::TornTailOnly
        },
        min_last_seq: snapshot.tables.values().map(flushed).max().unwrap_or(0),
        observer: Some(Arc::new(metrics.clone())),
        ..WalConfig::default()
    };
    // Records at or below every table's flushed position need not even be decoded.
    let after = snapshot.tables.values().map(flushed).min().unwrap_or(0);
    let mut skipped = 0u64;
    let (wal, recovery) = Wal::open(&data_dir.join("wal"), wal_config, after, |seq, payload| {
        let replay = || -> Result<bool> {
            let record = wal_record::decode(payload)?;
            let (Some(meta), Some(rt)) =
                (by_id.get(&record.table_id), tables.get(&record.table_id))
            else {
                if catalog_empty {
                    return Err(Error::InvalidArgument(format!(
                        "the WAL holds rows of table id {} but the shared catalog is empty: it \
                         was probably lost; restore it first (--restore-snapshot latest)",
                        record.table_id
                    )));
                }
                return Ok(false); // the table was dropped since
            };
            if seq <= flushed(meta) {
                return Ok(false); // already in a Parquet file
            }
            let fitted = conform(&rt.name, &record.batch, &rt.schema(), &|c| {
                rt.is_not_null(c)
            })?;
            rt.append(&fitted, seq)?;
            Ok(true)
        };
        match replay() {
            Ok(true) => {
                metrics.wal_replayed_records.inc();
                Ok(())
            }
            Ok(false) => {
                skipped += 1;
                Ok(())
            }
            Err(e) => Err(skein_wal::Error::Replay {
                seq,
                reason: e.to_string(),
            }),
        }
    })?;
    info!(
        replayed = metrics.wal_replayed_records.get(),
        skipped_flushed_or_dropped = skipped,
        last_seq = recovery.last_seq,
        torn_bytes = recovery.torn_bytes,
        corrupt_ranges_skipped = recovery.skipped.len(),
        "WAL recovered"
    );
    for (segment, from, to) in &recovery.skipped {
        warn!(segment = %segment.display(), from, to, "corrupt WAL bytes were skipped; rows in them are lost");
    }
    Ok(wal)
}

impl Node {
    /// Appends one batch to a table: fits it to the table's schema, logs it in the WAL, waits
    /// until it is durable, and buffers it. Returns the rows accepted. When it returns, the rows
    /// are durable and visible to queries.
    pub async fn append(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        batch: &RecordBatch,
    ) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        self.check_writable()?;
        let schema = rt.schema();
        let mut fitted = conform(&rt.name, batch, &schema, &|c| rt.is_not_null(c))?;
        let rows = fitted.num_rows() as u64;
        let bytes = crate::types::arrow_bytes(&fitted);
        // Wait for space before taking the gate: a flush needs the gate to free space.
        let reservation = self.reserve(bytes).await?;
        let gate = Arc::clone(&rt.ingest_gate).read_owned().await;
        if !Arc::ptr_eq(&schema, &rt.schema()) {
            // A column was added meanwhile.
            fitted = conform(&rt.name, batch, &rt.schema(), &|c| rt.is_not_null(c))?;
        }
        let payload = wal_record::encode(rt.id, &fitted, self.config.wal.wal_compression)?;
        // The cluster learns that this node holds unflushed rows of the table before they
        // exist, so a query never answers without them unnoticed.
        self.confirm_claim().await?;
        let mark = self.mark_unflushed(rt).await?;
        // Once its record may reach the WAL, an append runs to its end even if the client goes
        // away: its gate and in-flight floor must not be released half way.
        let (node, target) = (Arc::clone(self), Arc::clone(rt));
        let seq = tokio::spawn(async move {
            let _gate = gate;
            let _mark = mark;
            // Held until the rows are in the buffer, where they count by themselves.
            let _reservation = reservation;
            let token = node.in_flight.register(node.wal.last_seq());
            let appended = node.append_logged(&target, fitted, payload).await;
            node.in_flight.finish(token);
            appended
        })
        .await
        .map_err(|e| Error::Internal(format!("an append task failed: {e}")))??;
        // Paused between the check above and here, past the claim's TTL? Then another process
        // may hold this id now, and these rows could never be committed from here.
        self.confirm_claim().await?;
        tracing::trace!(table = %rt.name, rows, seq, "appended");
        self.metrics.ingest_rows.inc_by(rows);
        self.metrics
            .table_requests
            .with_label_values(&[&rt.name, "ingest"])
            .inc();
        self.metrics.ingest_bytes.inc_by(bytes);
        let level = rt.level();
        let limits = self.flush_limits(rt);
        if level.rows >= limits.flush_rows || level.bytes >= limits.flush_bytes {
            self.flush_wakeup.notify_one();
        }
        Ok(rows)
    }

    /// The WAL append and the buffer append of one batch; the caller holds the ingest gate.
    async fn append_logged(
        &self,
        rt: &Arc<TableRuntime>,
        fitted: RecordBatch,
        payload: Vec<u8>,
    ) -> Result<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal.append_with(payload, move |r| {
            let _ = tx.send(r);
        });
        let seq = rx
            .await
            .map_err(|_| Error::Wal(skein_wal::Error::Closed))?
            .map_err(|e| {
                if let skein_wal::Error::Poisoned(reason) = &e {
                    self.stop_writes(format!("the WAL failed to sync: {reason}"));
                }
                Error::Wal(e)
            })?;
        let target = Arc::clone(rt);
        match blocking(move || target.append(&fitted, seq)).await {
            Ok(()) => Ok(seq),
            // Dropped meanwhile: replay skips records of dropped tables.
            Err(e @ Error::UnknownTable { .. }) => Err(e),
            Err(e) => {
                // The record is durable but its rows are not buffered: this node's state and
                // its WAL disagree until a restart replays the record. Flushes stop too, so
                // that no flushed position passes the record before then.
                self.needs_replay
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.stop_writes(format!(
                    "buffering WAL record {seq} of table {:?} failed after it was logged ({e}); \
                     the write may or may not have been applied; restart the node to replay the log",
                    rt.name
                ));
                Err(e)
            }
        }
    }

    fn check_writable(&self) -> Result<()> {
        match self.writes_stopped.lock().as_ref() {
            Some(reason) => Err(Error::WritesStopped(reason.clone())),
            None => Ok(()),
        }
    }

    pub(super) fn stop_writes(&self, reason: String) {
        let mut stopped = self.writes_stopped.lock();
        if stopped.is_none() {
            tracing::error!(reason = %reason, "this node stops accepting writes");
            *stopped = Some(reason);
        }
    }

    /// Why the node stopped accepting writes, if it did.
    pub fn writes_stopped(&self) -> Option<String> {
        self.writes_stopped.lock().clone()
    }

    /// Arrow bytes held in every table's buffer generations.
    pub fn buffered_bytes(&self) -> u64 {
        self.tables
            .read()
            .values()
            .map(|rt| rt.level().total_bytes)
            .sum()
    }

    /// Waits until `bytes` more fit under `--max-buffer-bytes`, up to `--buffer-wait`.
    async fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        let limit = self.config.wal.max_buffer_bytes;
        let deadline = tokio::time::Instant::now() + self.config.wal.buffer_wait;
        let mut waited = false;
        loop {
            let freed = self.space.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                // Checked and taken in one step: writers that wait at once cannot all pass.
                let mut reserved = self.reserved_bytes.lock();
                let used = self.buffered_bytes() + *reserved;
                // A batch larger than the whole bound still goes in alone.
                if used == 0 || used + bytes <= limit {
                    *reserved += bytes;
                    return Ok(Reservation {
                        node: Arc::clone(self),
                        bytes,
                    });
                }
            }
            let used = self.buffered_bytes();
            if !waited {
                waited = true;
                self.metrics.ingest_waits.inc();
            }
            self.flush_wakeup.notify_one();
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.metrics.ingest_rejected.inc();
                return Err(Error::ResourceExhausted(format!(
                    "buffers hold {used} bytes and the bound is {limit} (--max-buffer-bytes); \
                     flushes did not free {bytes} bytes within {} (--buffer-wait). Retry later",
                    humantime::format_duration(self.config.wal.buffer_wait)
                )));
            }
        }
    }

    /// Deletes WAL segments whose records are all in Parquet (or belong to dropped tables).
    pub(super) async fn truncate_wal(&self) -> Result<()> {
        if self.needs_replay.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        // Order matters: a record gets a sequence number above `last_seq` read here, or is in
        // flight (read next), or is in a buffer (read last) or already flushed.
        let mut upto = self.wal.last_seq();
        if let Some(floor) = self.in_flight.min_floor() {
            upto = upto.min(floor);
        }
        for rt in self.tables.read().values() {
            if let Some(min) = rt.level().min_seq {
                upto = upto.min(min - 1);
            }
        }
        let wal = Arc::clone(&self.wal);
        let deleted = blocking(move || Ok(wal.truncate(upto)?)).await?;
        if deleted > 0 {
            tracing::debug!(upto, deleted, "WAL truncated");
        }
        self.metrics
            .wal_segments
            .set(self.wal.segment_count() as i64);
        Ok(())
    }
}

/// Buffer space taken by an append between its admission and its rows reaching the buffer.
#[derive(Debug)]
pub(super) struct Reservation {
    node: Arc<Node>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self.node.reserved_bytes.lock();
        *reserved = reserved.saturating_sub(self.bytes);
        drop(reserved);
        self.node.space.notify_waiters();
    }
}
