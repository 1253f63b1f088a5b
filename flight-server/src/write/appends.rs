//! Appends: a batch fitted to its table, logged in the WAL, acknowledged once durable and
//! buffered; the in-flight floors that keep WAL truncation behind appends under way; and the
//! reservations that bound buffered bytes (`--max-buffer-bytes`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;

use super::{Writes, wal_record};
use crate::base::blocking;
use crate::error::{Error, Result};
use crate::table::TableRuntime;
use crate::types::conform;

/// Appends whose WAL record may be written but whose rows are not yet in a buffer. Each is
/// registered with a floor: its record's sequence number is above it.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    next_token: std::sync::atomic::AtomicU64,
    floors: parking_lot::Mutex<BTreeMap<u64, u64>>,
}

impl InFlight {
    pub(super) fn register(&self, floor: u64) -> u64 {
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.floors.lock().insert(token, floor);
        token
    }

    pub(super) fn finish(&self, token: u64) {
        self.floors.lock().remove(&token);
    }

    /// The lowest floor of any append in flight.
    pub(super) fn min_floor(&self) -> Option<u64> {
        self.floors.lock().values().min().copied()
    }
}

impl Writes {
    /// Appends one batch to a table: fits it to the table's schema, logs it in the WAL, waits
    /// until it is durable, and buffers it. Returns the rows accepted. When it returns, the rows
    /// are durable and visible to queries.
    pub(crate) async fn append(
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
        let payload = wal_record::encode(rt.id, &fitted, self.base.config.wal.wal_compression)?;
        // The cluster learns that this node holds unflushed rows of the table before they
        // exist, so a query never answers without them unnoticed.
        self.confirm_claim().await?;
        let mark = self.base.mark_unflushed(rt).await?;
        // Once its record may reach the WAL, an append runs to its end even if the client goes
        // away: its gate and in-flight floor must not be released half way.
        let (writes, target) = (Arc::clone(self), Arc::clone(rt));
        let seq = tokio::spawn(async move {
            let _gate = gate;
            let _mark = mark;
            // Held until the rows are in the buffer, where they count by themselves.
            let _reservation = reservation;
            let token = writes.in_flight.register(writes.wal.last_seq());
            let appended = writes.append_logged(&target, fitted, payload).await;
            writes.in_flight.finish(token);
            appended
        })
        .await
        .map_err(|e| Error::Internal(format!("an append task failed: {e}")))??;
        // Paused between the check above and here, past the claim's TTL? Then another process
        // may hold this id now, and these rows could never be committed from here.
        self.confirm_claim().await?;
        tracing::trace!(table = %rt.name, rows, seq, "appended");
        self.base.metrics.ingest_rows.inc_by(rows);
        self.base
            .metrics
            .table_requests
            .with_label_values(&[&rt.name, "ingest"])
            .inc();
        self.base.metrics.ingest_bytes.inc_by(bytes);
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

    /// Waits until `bytes` more fit under `--max-buffer-bytes`, up to `--buffer-wait`.
    async fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        let limit = self.base.config.wal.max_buffer_bytes;
        let deadline = tokio::time::Instant::now() + self.base.config.wal.buffer_wait;
        let mut waited = false;
        loop {
            let freed = self.space.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                // Checked and taken in one step: writers that wait at once cannot all pass.
                let mut reserved = self.reserved_bytes.lock();
                let used = self.base.buffered_bytes() + *reserved;
                // A batch larger than the whole bound still goes in alone.
                if used == 0 || used + bytes <= limit {
                    *reserved += bytes;
                    return Ok(Reservation {
                        writes: Arc::clone(self),
                        bytes,
                    });
                }
            }
            let used = self.base.buffered_bytes();
            if !waited {
                waited = true;
                self.base.metrics.ingest_waits.inc();
            }
            self.flush_wakeup.notify_one();
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.base.metrics.ingest_rejected.inc();
                return Err(Error::ResourceExhausted(format!(
                    "buffers hold {used} bytes and the bound is {limit} (--max-buffer-bytes); \
                     flushes did not free {bytes} bytes within {} (--buffer-wait). Retry later",
                    humantime::format_duration(self.base.config.wal.buffer_wait)
                )));
            }
        }
    }
}

/// Buffer space taken by an append between its admission and its rows reaching the buffer.
#[derive(Debug)]
pub(super) struct Reservation {
    writes: Arc<Writes>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self.writes.reserved_bytes.lock();
        *reserved = reserved.saturating_sub(self.bytes);
        drop(reserved);
        self.writes.space.notify_waiters();
    }
}
