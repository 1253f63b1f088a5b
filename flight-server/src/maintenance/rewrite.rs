//! DELETE and UPDATE: copy-on-write of the files that hold matching rows. Every node's
//! buffered rows of the table are flushed first (so the WAL never brings back a row the
//! statement changed); each file whose statistics can match is counted, rewritten if any row
//! matches, and all of them are swapped in one catalog commit. Rows ingested meanwhile land in
//! new files or buffers and are not touched.

use std::sync::Arc;
use std::time::Instant;

use duckdb::types::Value;
use skein_storage::FileMeta;

use super::Maintenance;
use super::compact::Landing;
use crate::error::{Error, Result};
use crate::sql::Rewrite;
use crate::table::TableRuntime;

/// How often a rewrite that lost a race with another one starts again.
const ATTEMPTS: usize = 3;

impl Maintenance {
    /// Runs a DELETE or UPDATE once per parameter row (once without); returns the rows it
    /// changed.
    pub(crate) async fn rewrite_rows(
        self: &Arc<Self>,
        plan: &Rewrite,
        rows: Vec<Vec<Value>>,
    ) -> Result<i64> {
        let rt = self.base.table(&plan.table)?;
        let meta = rt.meta();
        for (c, _) in &plan.assignments {
            if meta.column(c).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "table {:?} has no column {c:?} to UPDATE",
                    meta.name
                )));
            }
        }
        self.flush_everywhere(&rt).await?;
        let runs = if rows.is_empty() {
            vec![Vec::new()]
        } else {
            rows
        };
        let mut total = 0;
        for values in runs {
            total += self.rewrite_once(&rt, plan, values).await?;
        }
        Ok(total)
    }

    async fn rewrite_once(
        self: &Arc<Self>,
        rt: &Arc<TableRuntime>,
        plan: &Rewrite,
        values: Vec<Value>,
    ) -> Result<i64> {
        let kind = if plan.update { "update" } else { "delete" };
        let lock = self.rewrite_lock(rt.id);
        let _rewriting = lock.lock().await;
        let started = Instant::now();
        // Other tables the condition reads (a subquery), installed under this table's view.
        let mut selected = self.reads.select_reads(&plan.pruning_sql()).await?;
        selected.views.retain(|v| v.meta.id != rt.id);
        let reads = Arc::new(
            self.reads
                .build_reads(selected, &std::collections::HashMap::new())
                .await?,
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let meta = self.base.existing_meta(rt)?;
            let columns: Vec<(String, String)> = meta
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.sql_type.clone()))
                .collect();
            let candidates = crate::cluster::exec::kept_files(&plan.pruning_sql(), &meta);
            let mut inputs = Vec::new();
            let mut outputs: Vec<FileMeta> = Vec::new();
            let mut changed = 0i64;
            let outcome: Result<()> = async {
                for f in meta.files.iter().filter(|f| candidates.contains(&f.key)) {
                    let (count, vals) = (plan.count_sql(), values.clone());
                    let hits: i64 = self
                        .over_files(
                            &meta,
                            std::slice::from_ref(f),
                            Some(Arc::clone(&reads)),
                            move |conn| {
                                let mut stmt = conn.prepare(&count)?;
                                Ok(stmt.query_row(duckdb::params_from_iter(vals.iter()), |r| {
                                    r.get(0)
                                })?)
                            },
                        )
                        .await?;
                    if hits == 0 {
                        continue;
                    }
                    let written = self
                        .write_rewrite(
                            &meta,
                            std::slice::from_ref(f),
                            plan.result_sql(&columns),
                            values.clone(),
                            Some(Arc::clone(&reads)),
                        )
                        .await?;
                    inputs.push(f.key.clone());
                    outputs.extend(written.files);
                    changed += hits;
                }
                Ok(())
            }
            .await;
            if let Err(e) = outcome {
                self.discard(&outputs).await;
                return Err(e);
            }
            if inputs.is_empty() {
                return Ok(0);
            }
            match self.land(rt, &inputs, outputs, kind).await? {
                Landing::Landed => {
                    self.base
                        .metrics
                        .rewrite_seconds
                        .with_label_values(&[kind])
                        .observe(started.elapsed().as_secs_f64());
                    tracing::info!(table = %plan.table, kind, files = inputs.len(), rows = changed, elapsed_ms = started.elapsed().as_millis() as u64, "rewrote files");
                    return Ok(changed);
                }
                Landing::Raced(reason) if attempt < ATTEMPTS => {
                    tracing::info!(table = %plan.table, %reason, attempt, "rewrite raced another change; starting again");
                }
                Landing::Raced(reason) => {
                    return Err(Error::Aborted(format!(
                        "{reason} (after {ATTEMPTS} attempts)"
                    )));
                }
            }
        }
    }

    /// Asks every node holding buffered rows of `rt` (this one included) to flush them, and
    /// returns once they are in the manifest. A node that holds some and is not reachable
    /// fails the statement: its rows could not be changed.
    async fn flush_everywhere(self: &Arc<Self>, rt: &Arc<TableRuntime>) -> Result<()> {
        self.writes.flush_table(rt).await?;
        let Some(m) = self.base.membership().cloned() else {
            return Ok(());
        };
        if m.is_static() {
            return Ok(());
        }
        let ring = self.base.ring();
        let me = self.base.config.node_id.clone();
        for member in ring.members().iter().filter(|p| p.node_id != me) {
            let mut client = self.cluster.peer_client(&member.address).await?;
            client
                .flush(Some(&rt.name))
                .await
                .map_err(|e| Error::PeerUnavailable {
                    node: member.node_id.clone(),
                    reason: format!(
                        "it could not flush its buffered rows of table {:?} before the rewrite: {e}",
                        rt.name
                    ),
                })?;
        }
        for (node, tables) in m.unflushed() {
            if node != me && ring.member(&node).is_none() && tables.contains(&rt.id) {
                let fresh = m.unflushed_of(&node).await?;
                if fresh.contains(&rt.id) {
                    return Err(Error::PeerUnavailable {
                        node,
                        reason: format!(
                            "it is out of the cluster and holds rows of table {:?} that are not \
                             flushed; DELETE and UPDATE wait until it is back",
                            rt.name
                        ),
                    });
                }
            }
        }
        self.ddl.catch_up().await;
        Ok(())
    }
}
