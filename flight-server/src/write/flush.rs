//! Flushing: a table's buffer generation written to Parquet, uploaded and committed to the
//! manifest with the node's WAL position in one step; the background flusher that decides when;
//! and the per-table thresholds (`ALTER TABLE … SET (…)`, else the node's defaults).

use std::sync::Arc;
use std::time::Duration;

use skein_storage::{CatalogState, FileMeta, TableMeta};
use tracing::{info, warn};

use super::Writes;
use crate::base::{blocking, now_ms};
use crate::config::FlushConfig;
use crate::error::{Error, Result};
use crate::faults::kill_point;
use crate::layout::{file_keys, flushed_from};
use crate::table::{FlushGeneration, TableRuntime};

impl Writes {
    /// Writes a table's buffered rows to Parquet and commits the file to the manifest.
    pub(crate) async fn flush_table(self: &Arc<Self>, rt: &Arc<TableRuntime>) -> Result<()> {
        let _maintenance = rt.maintenance.lock().await;
        // An unfinished generation from a failed flush first, then the current one.
        let rounds = if rt.level().pending { 2 } else { 1 };
        let mut flushed = false;
        for _ in 0..rounds {
            if !self.flush_one(rt).await? {
                break;
            }
            flushed = true;
        }
        // The cluster learns at once that the rows are in Parquet, not at the next heartbeat: a
        // node that dies right after a flush must not look as if it held them still.
        if flushed
            && !self.base.unflushed_tables().contains(&rt.id)
            && let Some(m) = self.base.membership()
            && !m.is_static()
            && let Err(e) = m.publish_unflushed().await
        {
            warn!(table = %rt.name, error = %e, "publishing unflushed marks after a flush failed");
        }
        Ok(())
    }

    async fn flush_one(self: &Arc<Self>, rt: &Arc<TableRuntime>) -> Result<bool> {
        if self.needs_replay() {
            return Err(Error::WritesStopped(
                "flushes are stopped until a restart replays the WAL".into(),
            ));
        }
        let Some(meta) = self.base.current_meta(rt) else {
            return Ok(false);
        };
        let paths = self.base.paths(&meta)?;
        let (begin_rt, begin_meta) = (Arc::clone(rt), meta.clone());
        let begun = {
            // No append is between its WAL record and its buffer while the generation swaps.
            let _gate = rt.ingest_gate.write().await;
            blocking(move || begin_rt.begin_flush(&begin_meta, &paths)).await?
        };
        let Some(FlushGeneration {
            id: generation,
            max_seq,
            file,
        }) = begun
        else {
            return Ok(false);
        };
        // The names are chosen once per generation, before the upload, so a retry overwrites
        // its own objects and commits them once. The random part keeps names unique even if a
        // table's file numbers start again (a catalog restored from an older snapshot).
        let (stem, seq) = file.unwrap_or_else(|| {
            let seq = meta.next_file_seq;
            let unique = &uuid::Uuid::new_v4().simple().to_string()[..8];
            (
                format!("{}-{seq:020}-{unique}", self.base.config.node_id),
                seq,
            )
        });
        rt.set_flush_file(generation, &stem, seq);
        let listed = self
            .base
            .current_meta(rt)
            .filter(|t| t.files.iter().any(|f| flushed_from(&f.key, &stem)));
        if let Some(meta) = listed {
            // An earlier attempt committed the files and failed to switch the view.
            self.finish_generation(rt, generation, meta, &stem).await?;
            return Ok(true);
        }
        let started = std::time::Instant::now();
        let tmp = self.scratch_path();
        let written = self
            .write_flush_files(rt, generation, &meta, &tmp, &stem, max_seq)
            .await;
        let _ = std::fs::remove_dir_all(&tmp);
        let files = written?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        let id = rt.id;
        let node_id = self.base.config.node_id.clone();
        let committed = self
            .base
            .catalog
            .update(|s: &mut CatalogState| -> Result<Option<TableMeta>> {
                let Some(t) = s.table_by_id_mut(id) else {
                    return Ok(None);
                };
                // Idempotent: a commit reported failed may have landed.
                if !t.files.iter().any(|f| flushed_from(&f.key, &stem)) {
                    t.files.extend(files.iter().cloned());
                }
                t.next_file_seq = t.next_file_seq.max(seq + 1);
                // The file and the WAL position it covers, in one commit.
                if let Some(max_seq) = max_seq {
                    let position = t.flushed_wal.entry(node_id.clone()).or_default();
                    *position = (*position).max(max_seq);
                }
                Ok(Some(t.clone()))
            })
            .await
            .inspect_err(|e| {
                if matches!(e, Error::Storage(skein_storage::Error::Fenced { .. })) {
                    self.claim_lost();
                }
            })?;
        let Some(meta) = committed else {
            // Dropped while flushing: nothing refers to the new objects.
            for f in &files {
                self.base.store.delete(&f.key).await?;
            }
            self.uploads.end(&stem);
            return Ok(false);
        };
        kill_point("flush:committed");
        self.finish_generation(rt, generation, meta, &stem).await?;
        self.base.metrics.flushes.inc();
        self.base.metrics.flushed_rows.inc_by(rows);
        if let Err(e) = self.truncate_wal().await {
            warn!(error = %e, "WAL truncation failed; will retry after the next flush");
        }
        info!(table = %rt.name, rows, bytes, files = files.len(), object_key = %files.first().map_or("", |f| f.key.as_str()), elapsed_ms = started.elapsed().as_millis() as u64, "flushed");
        Ok(true)
    }

    /// Ends generation `generation` of `rt` once `meta` lists its files under `stem`: the
    /// upload note goes, the view switches from the buffer to the files, and writers waiting for
    /// buffer space learn of it.
    async fn finish_generation(
        &self,
        rt: &Arc<TableRuntime>,
        generation: u64,
        meta: TableMeta,
        stem: &str,
    ) -> Result<()> {
        self.uploads.end(stem);
        let paths = self.base.paths(&meta)?;
        self.base.sync_meta(rt);
        let finish_rt = Arc::clone(rt);
        blocking(move || finish_rt.finish_flush(generation, &meta, &paths)).await?;
        self.space.notify_waiters();
        Ok(())
    }

    /// Writes generation `generation` to Parquet under `tmp` (one file, or one per day of the
    /// table's time column), uploads the files under names from `stem` and returns their
    /// entries for the manifest.
    async fn write_flush_files(
        &self,
        rt: &Arc<TableRuntime>,
        generation: u64,
        meta: &TableMeta,
        tmp: &std::path::Path,
        stem: &str,
        max_seq: Option<u64>,
    ) -> Result<Vec<FileMeta>> {
        let time_column =
            (meta.options.time_column.as_deref()).and_then(|c| meta.column(c).cloned());
        let (write_rt, dir) = (Arc::clone(rt), tmp.to_path_buf());
        let written =
            blocking(move || write_rt.write_parquet(generation, &dir, time_column.as_ref()))
                .await?;
        let days: Vec<Option<String>> = written.iter().map(|w| w.day.clone()).collect();
        let keys = file_keys(rt.id, stem, &days);
        // Written down before the upload: a node killed before the commit deletes them on its
        // next start.
        self.uploads.begin(stem, &keys).await?;
        let columns: Vec<String> = meta.columns.iter().map(|c| c.name.clone()).collect();
        let mut files = Vec::with_capacity(written.len());
        for (w, key) in written.into_iter().zip(keys) {
            let bytes = self.base.store.put_file(&key, &w.path).await?;
            kill_point("flush:uploaded");
            files.push(FileMeta {
                partition: w.day,
                key,
                rows: w.rows,
                bytes,
                columns: columns.clone(),
                stats: w.stats,
                created_at_ms: now_ms(),
                node: Some(self.base.config.node_id.clone()),
                max_seq,
            });
        }
        Ok(files)
    }

    /// Flushes every table and returns once the rows are in Parquet.
    pub(crate) async fn flush_all(self: &Arc<Self>) -> Result<()> {
        for (_, rt) in self.base.list_tables() {
            self.flush_table(&rt).await?;
        }
        Ok(())
    }

    /// A table's flush thresholds: its own options, else the node's defaults.
    pub(crate) fn flush_limits(&self, rt: &TableRuntime) -> FlushConfig {
        flush_limits(&self.base.config.flush, rt)
    }

    /// Flushes buffers that pass a threshold, until shutdown.
    pub(crate) async fn run_flusher(self: Arc<Self>) {
        let tick = self
            .base
            .config
            .flush
            .flush_interval
            .min(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.base.shutdown.cancelled() => return,
                _ = self.flush_wakeup.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            // Near the buffer bound, every buffer is due, so that writers get space soon.
            let pressed = self.base.buffered_bytes() >= self.base.config.wal.max_buffer_bytes / 2;
            for (_, rt) in self.base.list_tables() {
                if rt.has_retired() {
                    let reap_rt = Arc::clone(&rt);
                    if let Err(e) = blocking(move || reap_rt.reap()).await {
                        warn!(table = %rt.name, error = %e, "dropping flushed buffer generations failed");
                    }
                }
                let level = rt.level();
                let flush = self.flush_limits(&rt);
                let due = (pressed && level.rows > 0)
                    || level.pending
                    || level.rows >= flush.flush_rows
                    || level.bytes >= flush.flush_bytes
                    || level.age.is_some_and(|a| a >= flush.flush_interval);
                if due && let Err(e) = self.flush_table(&rt).await {
                    self.base.metrics.flush_failures.inc();
                    warn!(table = %rt.name, error = %e, "flush failed; will retry");
                }
            }
        }
    }
}

/// A table's flush thresholds: its own options, else `defaults` (the node's).
pub(crate) fn flush_limits(defaults: &FlushConfig, rt: &TableRuntime) -> FlushConfig {
    let o = rt.meta().options;
    FlushConfig {
        flush_rows: o.flush_rows.unwrap_or(defaults.flush_rows),
        flush_bytes: o.flush_bytes.unwrap_or(defaults.flush_bytes),
        flush_interval: o
            .flush_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.flush_interval),
    }
}
