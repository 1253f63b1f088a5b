//! Running a query on this node: on a blocking thread, in a query slot, with its read set
//! installed on the connection, its batches merged to wire-sized ones and handed to the
//! reader as DuckDB produces them, and its end recorded in the query log.
//!
//! Promises: the schema comes back before any row (or the error instead of both); a reader
//! that goes away interrupts the query there and then; a reader that takes nothing for
//! `--stall-timeout` has the query stopped and its slot given back; a stream that ends early
//! ends in an error, never as if the result were complete.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::params_from_iter;
use duckdb::types::Value;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{ReadSet, Reads};
use crate::error::{Error, Result};
use crate::read::system::Distribution;

/// Batches DuckDB hands over are small (one vector, 2048 rows); they are merged up to this
/// many rows before they go on the wire.
const TARGET_BATCH_ROWS: usize = 64 * 1024;

/// A query's batches, as they are produced; an error ends it.
pub(crate) type Batches = futures::stream::BoxStream<'static, Result<RecordBatch>>;

/// A statement ready to run on this node.
pub(crate) struct Execution {
    pub(crate) query_id: String,
    /// What DuckDB runs.
    pub(crate) sql: String,
    /// What the query log shows (the user's statement).
    pub(crate) logged_sql: String,
    pub(crate) values: Vec<Value>,
    pub(crate) reads: ReadSet,
    /// Names and types to give the result, if `sql` is not the user's statement.
    pub(crate) expected: Option<SchemaRef>,
    pub(crate) distribution: Distribution,
    /// When the query started (before its fragments ran), for the log.
    pub(crate) started: (i64, std::time::Instant),
}

impl Reads {
    /// Runs `query` on a blocking thread; returns once DuckDB has produced the result schema
    /// (or an error), with the stream of its batches. Dropping the stream before its end
    /// interrupts the query; a query stopped after its schema went out ends its stream in an
    /// error, never as if complete.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        query: Execution,
    ) -> Result<(SchemaRef, Batches)> {
        let Execution {
            query_id,
            sql,
            logged_sql,
            values,
            reads,
            expected,
            distribution,
            started: (started_ms, started),
        } = query;
        let (schema_tx, schema_rx) = tokio::sync::oneshot::channel::<Result<SchemaRef>>();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
        // A node's own fragments count only against the total: their coordinator's caller was
        // counted where the query came in.
        let holder = (distribution.shape != "fragment")
            .then(crate::auth::slot_holder)
            .flatten();
        let slot = self.slots.acquire(holder)?;
        // Set when the query fails after its schema went out (its reader stalled, say): the
        // stream ends in this error after what was sent, never as if complete, and setting it
        // never waits for a reader.
        let failed: Arc<parking_lot::Mutex<Option<Error>>> = Arc::default();
        let failed_at_end = Arc::clone(&failed);
        let stall = self.base.config.stall_timeout;
        let runtime = tokio::runtime::Handle::current();
        // The connection the query runs on, while it runs: a reader that goes away before the end
        // interrupts it there and then (a fragment busy with an aggregate sends nothing for long).
        let running: Arc<parking_lot::Mutex<Option<Arc<duckdb::InterruptHandle>>>> = Arc::default();
        let mut abandoned = StopWhenAbandoned {
            running: Arc::clone(&running),
            finished: false,
        };
        let worker = Arc::clone(self);
        self.base.metrics.queries.inc();
        let user = crate::auth::current().map(|id| id.user);
        let request_id = crate::auth::request_id();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let mut schema_tx = Some(schema_tx);
            let timer = worker.base.metrics.query_seconds.start_timer();
            let mut sent_rows = 0u64;
            let mut sent_bytes = 0u64;
            // Hands a batch to the reader; false once it went away, an error once it took
            // nothing for --stall-timeout.
            let tx_batches = tx.clone();
            let send = |out: RecordBatch| -> Result<bool> {
                match runtime.block_on(tx_batches.send_timeout(Ok(out), stall)) {
                    Ok(()) => Ok(true),
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => Ok(false),
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                        let message = format!(
                            "the client read nothing for {} (--stall-timeout): the query was \
                             stopped and its slot given back; the rows before this error are \
                             not the whole result",
                            humantime::format_duration(stall)
                        );
                        Err(Error::DeadlineExceeded(message))
                    }
                }
            };
            let outcome = (|| -> Result<()> {
                let mut conn = worker.base.engine.pooled()?;
                let interrupt = conn.interrupt_handle();
                *running.lock() = Some(Arc::clone(&interrupt));
                let timeout = worker.base.config.query_timeout();
                worker
                    .queries
                    .start(&query_id, Arc::clone(&interrupt), timeout)?;
                let result = (|| -> Result<()> {
                    reads.install(&conn)?;
                    let mut stmt = conn.prepare(&sql)?;
                    if stmt.parameter_count() != values.len() {
                        return Err(Error::InvalidArgument(format!(
                            "the statement takes {} parameter(s) but {} were bound",
                            stmt.parameter_count(),
                            values.len()
                        )));
                    }
                    let stream = stmt.stream_arrow(params_from_iter(values.iter()))?;
                    let schema = expected.clone().unwrap_or_else(|| stream.get_schema());
                    let mut coalescer =
                        arrow::compute::BatchCoalescer::new(Arc::clone(&schema), TARGET_BATCH_ROWS);
                    if let Some(s) = schema_tx.take() {
                        let _ = s.send(Ok(schema));
                    }
                    for batch in stream {
                        let batch = match &expected {
                            Some(e) => crate::types::conform_to(&batch?, e)?,
                            None => batch?,
                        };
                        coalescer.push_batch(batch)?;
                        while let Some(out) = coalescer.next_completed_batch() {
                            sent_rows += out.num_rows() as u64;
                            sent_bytes += out.get_array_memory_size() as u64;
                            if !send(out)? {
                                return Ok(()); // the client went away
                            }
                        }
                    }
                    coalescer.finish_buffered_batch()?;
                    while let Some(out) = coalescer.next_completed_batch() {
                        sent_rows += out.num_rows() as u64;
                        sent_bytes += out.get_array_memory_size() as u64;
                        if !send(out)? {
                            return Ok(());
                        }
                    }
                    Ok(())
                })();
                running.lock().take();
                let stopped = worker.queries.finish(&query_id, &interrupt, timeout);
                // The temporary views go before the connection serves anyone else.
                if !reads.is_empty() && reads.remove(&conn).is_err() {
                    conn.discard();
                }
                drop(reads);
                drop(slot);
                // An interrupted query fails with DuckDB's INTERRUPT error; say why it was stopped.
                result.map_err(|e| stopped.unwrap_or(e))
            })();
            timer.observe_duration();
            worker.query_log.record(crate::read::system::LoggedQuery {
                started_ms,
                user,
                sql: logged_sql,
                duration: started.elapsed(),
                rows: sent_rows,
                bytes: sent_bytes,
                status: match &outcome {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!(
                        "error: {}",
                        e.to_string().chars().take(200).collect::<String>()
                    ),
                },
                query_id: query_id.clone(),
                request_id,
                distribution,
            });
            if let Err(e) = outcome {
                // Before the schema: the DoGet call itself fails; after it: the stream ends in error.
                match schema_tx.take() {
                    Some(s) => {
                        let _ = s.send(Err(e));
                    }
                    None => *failed.lock() = Some(e),
                }
            }
        });
        let schema = schema_rx.await.map_err(|_| {
            Error::Internal("query worker stopped before it produced a schema".into())
        })??;
        // A stopped query's stream ends with its error, not as if it were complete.
        let end = futures::stream::once(async move { failed_at_end.lock().take() })
            .filter_map(|e| async move { e.map(Err) });
        let finished = futures::stream::poll_fn(move |_| {
            // The whole guard moves in (not just its field), so that it drops with the stream.
            let guard = &mut abandoned;
            guard.finished = true;
            std::task::Poll::Ready(None)
        });
        Ok((
            schema,
            ReceiverStream::new(rx).chain(end).chain(finished).boxed(),
        ))
    }
}

/// Interrupts a query whose result stream is dropped before its end.
struct StopWhenAbandoned {
    running: Arc<parking_lot::Mutex<Option<Arc<duckdb::InterruptHandle>>>>,
    finished: bool,
}

/// How often an abandoned query is interrupted again until its worker lets go of it.
const INTERRUPT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

impl Drop for StopWhenAbandoned {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let interrupt = |running: &parking_lot::Mutex<Option<Arc<duckdb::InterruptHandle>>>| {
            if let Some(i) = running.lock().as_ref() {
                i.interrupt();
            }
        };
        interrupt(&self.running);
        // DuckDB forgets an interrupt that comes before a statement begins (a query still
        // installing its views, or not yet on its connection), so one is not enough: interrupt
        // again until the worker, which holds the other reference, is done with the query.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let running = Arc::clone(&self.running);
        runtime.spawn(async move {
            while Arc::strong_count(&running) > 1 {
                interrupt(&running);
                tokio::time::sleep(INTERRUPT_EVERY).await;
            }
        });
    }
}
