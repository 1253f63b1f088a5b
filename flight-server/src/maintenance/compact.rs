//! File maintenance: merging a table's small files, laying out by day the files written before
//! the table had its time column, dropping files past its retention, and deleting the objects
//! of replaced files once their grace period is over. What to merge and
//! how the manifest changes is `skein-compaction`'s; writing the new file is DuckDB's, here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::types::Value;
use skein_compaction::{Policy, SwapError, Swapped};
use skein_storage::{CatalogState, FileMeta, TableMeta};
use tracing::{info, warn};

use super::Maintenance;
use crate::base::{blocking, now_ms};
use crate::engine::ident;
use crate::error::{Error, Result};
use crate::faults::kill_point;
use crate::layout::{WrittenFile, file_keys, write_parquet_files};
use crate::read::ReadSet;
use crate::table::{TableRuntime, temp_view_sql};
use crate::write::uploads::note_of;

/// What one compaction pass of a table did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct CompactionReport {
    /// The table.
    pub table: String,
    /// Merges done, and the files they replaced.
    pub merges: usize,
    pub merged_files: usize,
    /// Files retention dropped.
    pub expired_files: usize,
    /// Files written before the table had its time column, replaced by one file per day.
    pub laid_out_files: usize,
    /// Objects of retired files deleted.
    pub deleted_objects: usize,
    /// Files in the manifest afterwards.
    pub files: usize,
}

/// How a swap of rewritten files ended, short of an error.
pub(super) enum Landing {
    /// The outputs replaced the inputs.
    Landed,
    /// Another change took an input meanwhile; the outputs are deleted. Why, for messages.
    Raced(String),
}

/// The files a rewrite wrote and uploaded, not yet in the manifest.
pub(super) struct Written {
    /// One, or one per day of the table's time column (none if no row was left).
    pub files: Vec<FileMeta>,
    /// Rows the statement wrote.
    pub rows: u64,
}

impl Maintenance {
    /// The lock that serialises rewrites of one table on this node.
    pub(super) fn rewrite_lock(&self, table_id: u64) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.rewrites.lock().entry(table_id).or_default())
    }

    /// Whether the ring gives this node the compaction of `table_id` (always, alone).
    pub(crate) fn compacts(&self, table_id: u64) -> bool {
        let ring = self.base.ring();
        match ring.owner(&format!("compaction:{table_id}")) {
            Some(owner) => owner.node_id == self.base.config.node_id,
            None => true,
        }
    }

    /// The compaction policy of the node's configuration.
    fn policy(&self) -> Policy {
        let c = &self.base.config.compaction;
        Policy {
            target_bytes: c.compaction_target_bytes,
            min_files: c.compaction_min_files,
            cool_down_ms: c.compaction_cool_down.as_millis() as i64,
        }
    }

    /// One compaction pass over `rt`: drops files past the retention, lays out by day the files
    /// written before the table had its time column, merges small files and deletes the
    /// objects of files retired long enough ago. Queries and ingest go on.
    pub(crate) async fn compact_table(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
    ) -> Result<CompactionReport> {
        let lock = self.rewrite_lock(rt.id);
        let _rewriting = lock.lock().await;
        let mut report = CompactionReport {
            table: rt.name.clone(),
            ..CompactionReport::default()
        };
        let Some(meta) = self.base.current_meta(rt) else {
            return Ok(report);
        };
        // Retention first, so that no expired row is merged into a file that lives on.
        {
            let expired = skein_compaction::expired_files(&meta, now_ms());
            if !expired.is_empty() {
                let keys: Vec<String> = expired.iter().map(|f| f.key.clone()).collect();
                self.swap_files(rt, &keys, Vec::new(), "expire").await?;
                report.expired_files = keys.len();
                info!(table = %meta.name, files = keys.len(), "dropped files past the table's retention");
            }
        }
        // Files from before the table had its time column, laid out by day.
        for file in skein_compaction::unlaid_files(&meta, &self.policy(), now_ms()) {
            let sql = format!("SELECT * FROM main.{}", ident(&meta.name));
            if self
                .replace_files(rt, &meta, std::slice::from_ref(&file), sql, "relayout")
                .await?
            {
                report.laid_out_files += 1;
            }
        }
        let Some(meta) = self.base.current_meta(rt) else {
            return Ok(report);
        };
        let order = meta
            .options
            .time_column
            .as_ref()
            .filter(|c| meta.column(c).is_some())
            .map(|c| format!(" ORDER BY {}", ident(c)))
            .unwrap_or_default();
        for merge in skein_compaction::plan_merges(&meta, &self.policy(), now_ms()) {
            let sql = format!("SELECT * FROM main.{}{order}", ident(&meta.name));
            if self
                .replace_files(rt, &meta, &merge.inputs, sql, "merge")
                .await?
            {
                report.merges += 1;
                report.merged_files += merge.inputs.len();
            }
        }
        report.deleted_objects = self.delete_retired(rt).await?;
        report.files = self.base.current_meta(rt).map_or(0, |t| t.files.len());
        Ok(report)
    }

    /// Replaces `inputs` by `outputs` in one catalog commit; the inputs' objects stay for the
    /// grace period. Fails with ABORTED if another change replaced an input meanwhile.
    async fn swap_files(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        inputs: &[String],
        outputs: Vec<FileMeta>,
        kind: &str,
    ) -> Result<Swapped> {
        let id = rt.id;
        let delete_after =
            now_ms() + self.base.config.compaction.compaction_grace.as_millis() as i64;
        let swapped = self
            .base
            .catalog
            .update(|s: &mut CatalogState| -> Result<Swapped> {
                let t = s.table_by_id_mut(id).ok_or_else(|| Error::UnknownTable {
                    table: rt.name.clone(),
                })?;
                skein_compaction::swap(t, inputs, outputs.clone(), delete_after).map_err(
                    |e: SwapError| {
                        Error::Aborted(format!(
                            "table {:?} changed while it was rewritten ({e}); try again",
                            rt.name
                        ))
                    },
                )
            })
            .await?;
        kill_point(&format!("{kind}:swapped"));
        self.base.sync_meta(rt);
        {
            // After any flush under way, so that its view change does not undo this one.
            let _maintenance = rt.maintenance.lock().await;
            let meta = rt.meta();
            let paths = self.base.paths(&meta)?;
            let view_rt = Arc::clone(rt);
            blocking(move || view_rt.rebuild_view(&meta, &paths)).await?;
        }
        self.base
            .metrics
            .rewrites
            .with_label_values(&[&rt.name, kind])
            .inc();
        self.base
            .metrics
            .rewritten_files
            .with_label_values(&[kind])
            .inc_by(inputs.len() as u64);
        Ok(swapped)
    }

    /// Deletes the objects of `rt`'s retired files whose grace period is over (and that no
    /// query on this node reads), then forgets them.
    async fn delete_retired(self: &Arc<Self>, rt: &Arc<TableRuntime>) -> Result<usize> {
        let Some(meta) = self.base.current_meta(rt) else {
            return Ok(0);
        };
        let due: Vec<String> = skein_compaction::due_for_deletion(&meta, now_ms())
            .into_iter()
            .filter(|k| !self.reads.is_pinned(k))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        for key in &due {
            self.base.store.delete(key).await?;
            kill_point("delete:object");
        }
        let id = rt.id;
        self.base
            .catalog
            .update(|s: &mut CatalogState| -> Result<()> {
                if let Some(t) = s.table_by_id_mut(id) {
                    skein_compaction::forget_deleted(t, &due);
                }
                Ok(())
            })
            .await?;
        self.base.sync_meta(rt);
        self.base.metrics.deleted_objects.inc_by(due.len() as u64);
        Ok(due.len())
    }

    /// Replaces `inputs` by the rows of `sql` over them (a merge or a relayout, `kind`), which
    /// must be exactly their rows: true if that landed, false if another change took an input
    /// meanwhile.
    async fn replace_files(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        meta: &TableMeta,
        inputs: &[FileMeta],
        sql: String,
        kind: &str,
    ) -> Result<bool> {
        let started = Instant::now();
        let expected: u64 = inputs.iter().map(|f| f.rows).sum();
        let written = self
            .write_rewrite(meta, inputs, sql, Vec::new(), None)
            .await?;
        if written.rows != expected {
            self.discard(&written.files).await;
            return Err(Error::Internal(format!(
                "rewriting {} files of table {:?} ({kind}) wrote {} rows instead of {expected}; \
                 nothing was replaced",
                inputs.len(),
                meta.name,
                written.rows
            )));
        }
        let keys: Vec<String> = inputs.iter().map(|f| f.key.clone()).collect();
        let outputs = written.files.len();
        match self.land(rt, &keys, written.files, kind).await? {
            Landing::Landed => {
                self.base
                    .metrics
                    .rewrite_seconds
                    .with_label_values(&[kind])
                    .observe(started.elapsed().as_secs_f64());
                info!(table = %meta.name, kind, files = inputs.len(), outputs, rows = expected, elapsed_ms = started.elapsed().as_millis() as u64, "rewrote files");
                Ok(true)
            }
            Landing::Raced(reason) => {
                info!(table = %meta.name, kind, %reason, "rewrite skipped");
                Ok(false)
            }
        }
    }

    /// Swaps `outputs` in for `inputs` (kind `kind`) and drops their upload notes; if another
    /// change took an input meanwhile, deletes the outputs instead.
    pub(super) async fn land(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        inputs: &[String],
        outputs: Vec<FileMeta>,
        kind: &str,
    ) -> Result<Landing> {
        match self.swap_files(rt, inputs, outputs.clone(), kind).await {
            Ok(_) => {
                for o in &outputs {
                    self.writes.uploads().end(note_of(&o.key));
                }
                Ok(Landing::Landed)
            }
            Err(Error::Aborted(reason)) => {
                self.discard(&outputs).await;
                Ok(Landing::Raced(reason))
            }
            // The commit may have landed: the outputs stay until the next start decides.
            Err(e) => Err(e),
        }
    }

    /// Deletes rewrite outputs that no catalog lists (a swap refused, or never tried). An
    /// output whose swap failed otherwise may be listed after all: its note stays, and the
    /// node's next start decides.
    pub(super) async fn discard(&self, outputs: &[FileMeta]) {
        for o in outputs {
            match self.base.store.delete(&o.key).await {
                Ok(()) => self.writes.uploads().end(note_of(&o.key)),
                Err(e) => {
                    warn!(object_key = %o.key, error = %e, "deleting an unused rewrite output failed")
                }
            }
        }
    }

    /// Writes the result of `sql` (a query over `main.<table>`, which shows exactly `inputs`
    /// here, with parameters `values`) to new Parquet objects of the table: one, or with a time
    /// column one per day, as a flush lays them out. `reads` are other tables the statement
    /// reads. No files when the result has no rows (nothing is uploaded then).
    pub(super) async fn write_rewrite(
        self: &Arc<Self>,
        meta: &TableMeta,
        inputs: &[FileMeta],
        sql: String,
        values: Vec<Value>,
        reads: Option<Arc<ReadSet>>,
    ) -> Result<Written> {
        let dir = self.writes.scratch_path();
        let out = dir.clone();
        let time_column =
            (meta.options.time_column.as_deref()).and_then(|c| meta.column(c).cloned());
        let written = self
            .over_files(meta, inputs, reads, move |conn| {
                write_parquet_files(conn, &sql, &values, time_column.as_ref(), &out)
            })
            .await;
        let uploaded = match written {
            Ok(written) => self.upload_rewrite(meta, inputs, written).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&dir);
        uploaded
    }

    /// Uploads the files a rewrite wrote, each noted first (see [`super::uploads`]).
    async fn upload_rewrite(
        &self,
        meta: &TableMeta,
        inputs: &[FileMeta],
        written: Vec<WrittenFile>,
    ) -> Result<Written> {
        let stem = format!(
            "{}-rewrite-{}",
            self.base.config.node_id,
            uuid::Uuid::new_v4().simple()
        );
        let days: Vec<Option<String>> = written.iter().map(|w| w.day.clone()).collect();
        let keys = file_keys(meta.id, &stem, &days);
        // The rows of one node's files keep its origin, so the rule that tells a node which of
        // its files a coordinator does not know yet still holds; a merge of several nodes'
        // files has none (it only merges files older than the cool-down).
        let node = inputs
            .first()
            .and_then(|f| f.node.clone())
            .filter(|n| inputs.iter().all(|f| f.node.as_ref() == Some(n)));
        let max_seq = node
            .as_ref()
            .and_then(|_| inputs.iter().filter_map(|f| f.max_seq).max());
        let mut out = Written {
            files: Vec::with_capacity(written.len()),
            rows: 0,
        };
        for (w, key) in written.into_iter().zip(keys) {
            self.writes
                .uploads()
                .begin(note_of(&key), std::slice::from_ref(&key))
                .await?;
            let uploaded = self.base.store.put_file(&key, &w.path).await;
            let bytes = match uploaded {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.discard(&out.files).await;
                    return Err(e.into());
                }
            };
            kill_point("rewrite:uploaded");
            out.rows += w.rows;
            out.files.push(FileMeta {
                partition: w.day,
                key,
                rows: w.rows,
                bytes,
                columns: meta.columns.iter().map(|c| c.name.clone()).collect(),
                stats: w.stats,
                created_at_ms: now_ms(),
                node: node.clone(),
                max_seq,
            });
        }
        Ok(out)
    }

    /// Runs `work` on a connection where `main.<table>` shows exactly `inputs` (and `reads`,
    /// other tables a statement reads, are installed).
    pub(super) async fn over_files<T: Send + 'static>(
        self: &Arc<Self>,
        meta: &TableMeta,
        inputs: &[FileMeta],
        reads: Option<Arc<ReadSet>>,
        work: impl FnOnce(&duckdb::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (paths, held) = self.reads.local_copies(inputs).await?;
        let mut view_meta = meta.clone();
        view_meta.files = inputs.to_vec();
        let view = temp_view_sql(&view_meta, &paths, &[], &[]);
        let node = Arc::clone(self);
        blocking(move || {
            let _held = held;
            let conn = node.base.engine.pooled()?;
            if let Some(r) = &reads {
                r.install(&conn)?;
            }
            // The statement's other tables first: this table's view replaces theirs of it.
            let result = conn
                .execute_batch(&view)
                .map_err(Error::from)
                .and_then(|_| work(&conn));
            if let Some(r) = &reads {
                let _ = r.remove(&conn);
            }
            let _ = conn.execute_batch(&format!(
                "DROP VIEW IF EXISTS temp.main.{}",
                crate::table::inner_view(view_meta.id)
            ));
            result
        })
        .await
    }

    /// Compacts every table the ring gives this node, on the configured interval, until
    /// shutdown.
    pub(crate) async fn run_compactor(self: Arc<Self>) {
        let interval = self.base.config.compaction.compaction_interval;
        if interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = self.base.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval.max(Duration::from_millis(100))) => {}
            }
            for (meta, rt) in self.base.list_tables() {
                if !self.compacts(meta.id) {
                    continue;
                }
                if let Err(e) = self.compact_table(&rt).await {
                    warn!(table = %meta.name, error = %e, "compaction failed; will retry");
                }
            }
        }
    }
}
