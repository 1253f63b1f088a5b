//! Queries: `GetFlightInfo` answers with the result schema and a ticket that carries the whole
//! statement; `DoGet` runs it in DuckDB on a blocking thread and streams batches as DuckDB
//! produces them. Statements that change data run at `GetFlightInfo` (the client's "execute")
//! and their ticket returns the affected-row count.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use duckdb::params_from_iter;
use duckdb::types::Value;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::FlightDataStream;
use crate::base::blocking;
use crate::engine::{explain_schema, result_schema};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::params;
use crate::read::system::Distribution;
use crate::sql::{Plan, checked_plan};
use crate::ticket::StatementTicket;
use skein_sql::plan::Shape;

/// Batches DuckDB hands over are small (one vector, 2048 rows); they are merged up to this
/// many rows before they go on the wire.
const TARGET_BATCH_ROWS: usize = 64 * 1024;

/// Schema of the result of a statement that changed data.
pub(crate) fn update_count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::Int64,
        false,
    )]))
}

fn info_for(
    ticket: &StatementTicket,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let handle = TicketStatementQuery {
        statement_handle: ticket.encode(),
    };
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(handle.as_any().encode_to_vec()));
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor)
        .with_ordered(true))
}

/// Texts at most this long are read by DuckDB's parser on the calling task (that takes
/// microseconds); longer ones on a blocking thread.
const INLINE_CHECK_BYTES: usize = 16 * 1024;

/// [`checked_plan`] for the caller of the request being served: every statement, ticket and
/// handle passes here before DuckDB runs any of it.
pub(crate) async fn checked(node: &Arc<Node>, sql: &str) -> Result<Plan> {
    node.writes.check_identity()?;
    let caller = crate::auth::current();
    if sql.len() <= INLINE_CHECK_BYTES {
        let engine = &node.base.engine;
        return checked_plan(engine.parser(), sql, engine.catalog_name(), caller.as_ref());
    }
    let (node, sql) = (Arc::clone(node), sql.to_string());
    blocking(move || {
        let engine = &node.base.engine;
        checked_plan(
            engine.parser(),
            &sql,
            engine.catalog_name(),
            caller.as_ref(),
        )
    })
    .await
}

/// The result schema of a checked query plan, found without running anything that changes
/// data: the query wrapped in `LIMIT 0`, or for `EXPLAIN` the plain `EXPLAIN`.
pub(crate) fn query_schema(conn: &duckdb::Connection, plan: &Plan, sql: &str) -> Result<SchemaRef> {
    match plan {
        Plan::Explain { probe, .. } => explain_schema(conn, probe),
        _ => result_schema(conn, sql),
    }
}

/// `GetFlightInfo` for SQL with bound parameters.
pub(crate) async fn statement_info(
    node: &Arc<Node>,
    sql: &str,
    parameters: Vec<RecordBatch>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let plan = checked(node, sql).await?;
    node.ddl.catch_up().await;
    let query_id = uuid::Uuid::new_v4().to_string();
    if !plan.is_query() {
        let count = node.execute_update(sql, parameters).await?;
        let ticket = StatementTicket {
            query_id,
            sql: String::new(),
            parameters: Default::default(),
            update_count: Some(count),
        };
        return info_for(&ticket, &update_count_schema(), descriptor);
    }
    let sql = plan.query_text(sql).to_string();
    let sql = sql.as_str();
    let unparsed = !matches!(plan, Plan::Query);
    // A result schema depends only on the catalog: dashboards repeat their queries, and finding
    // the schema costs DuckDB a whole statement.
    let cache_key = (!unparsed && parameters.is_empty())
        .then(|| (node.base.catalog.snapshot().version, sql.to_string()));
    let cached = cache_key.as_ref().and_then(|k| node.reads.schemas.get(k));
    let schema = match cached {
        Some(schema) => schema,
        None => {
            let (engine_node, text, plan) = (Arc::clone(node), sql.to_string(), plan);
            let schema = blocking(move || {
                let conn = engine_node.base.engine.pooled()?;
                query_schema(&conn, &plan, &text)
            })
            .await?;
            if let Some(k) = cache_key {
                node.reads.schemas.put(k, Arc::clone(&schema));
            }
            schema
        }
    };
    let parameters = params::to_ipc(&parameters)?;
    if !unparsed
        && node.base.config.scatter_endpoints
        && let Shape::Scatter { table } =
            crate::cluster::exec::shape_of(&node.cluster, sql, !parameters.is_empty())?
    {
        return scatter_info(node, &table, sql, &parameters, &schema, descriptor);
    }
    let ticket = StatementTicket {
        query_id: query_id.clone(),
        sql: sql.to_string(),
        parameters,
        update_count: None,
    };
    node.reads.queries.issue(&query_id);
    info_for(&ticket, &schema, descriptor)
}

/// A scatter scan: one endpoint per member, each with its fragment; clients fetch them in
/// parallel, straight from the nodes (this node's own endpoint has no location).
fn scatter_info(
    node: &Arc<Node>,
    table: &str,
    sql: &str,
    parameters: &bytes::Bytes,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let me = node.base.config.node_id.clone();
    let scheme = if node.base.config.tls_cert.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    let mut info = FlightInfo::new()
        .try_with_schema(schema)?
        .with_descriptor(descriptor)
        .with_ordered(false);
    for (member, fragment) in
        crate::cluster::exec::scatter_fragments(&node.cluster, table, sql, parameters)?
    {
        let mut endpoint = FlightEndpoint::new().with_ticket(Ticket::new(
            crate::cluster::exec::fragment_ticket(&fragment),
        ));
        if member.node_id != me {
            endpoint = endpoint.with_location(format!("{scheme}://{}", member.address));
        }
        info = info.with_endpoint(endpoint);
    }
    node.base
        .metrics
        .query_shapes
        .with_label_values(&["scatter"])
        .inc();
    Ok(info)
}

/// `DoGet` of a fragment ticket: this node's part of a distributed query, planned by another
/// node (or by this one, for a scatter scan's own endpoint).
pub(crate) async fn do_get_fragment(node: &Arc<Node>, bytes: &[u8]) -> Result<FlightDataStream> {
    let fragment = skein_proto::Fragment::decode(bytes)
        .map_err(|e| Error::InvalidArgument(format!("malformed fragment ticket: {e}")))?;
    if let Some(auth) = &node.auth
        && !auth.verify_tag(&fragment.signed_bytes(), &fragment.signature)
    {
        return Err(Error::Forbidden(
            "the fragment ticket is not signed by this cluster".into(),
        ));
    }
    // The same checks as a statement from this caller (sandbox, the caller's tables).
    if !checked(node, &fragment.sql).await?.is_query() {
        return Err(Error::Forbidden(
            "a fragment ticket may hold only a query; nothing ran".into(),
        ));
    }
    if fragment.node_id != node.base.config.node_id {
        tracing::debug!(query_id = %fragment.query_id, node = %fragment.node_id, "a fragment for another node; passing it on");
        let (schema, batches) =
            crate::cluster::exec::redeem_for_peer(&node.cluster, &fragment).await?;
        let batches = batches.map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
        return Ok(encode(schema, batches.boxed()));
    }
    tracing::debug!(query_id = %fragment.query_id, coordinator = %fragment.coordinator, "running a fragment");
    let values = crate::cluster::fragment_values(&fragment)?;
    let reads = node.reads.fragment_reads(&fragment).await?;
    // A scatter scan's own endpoint on the node that planned it stands for the whole query.
    let own_scatter = fragment.coordinator == node.base.config.node_id
        && fragment.node_id == node.base.config.node_id;
    let distribution = Distribution {
        shape: if own_scatter { "scatter" } else { "fragment" },
        fragments: if own_scatter { fragment.fragments } else { 1 },
        ..Distribution::default()
    };
    let query = Execution {
        query_id: fragment.query_id.clone(),
        sql: fragment.sql.clone(),
        logged_sql: fragment.sql.clone(),
        values,
        reads,
        expected: None,
        distribution,
        started: (crate::base::now_ms(), std::time::Instant::now()),
    };
    execute(node, query).await
}

/// `DoGet` of a statement ticket.
pub(crate) async fn do_get(node: &Arc<Node>, handle: &[u8]) -> Result<FlightDataStream> {
    let ticket = StatementTicket::decode(handle)?;
    if let Some(count) = ticket.update_count {
        let batch = RecordBatch::try_new(
            update_count_schema(),
            vec![Arc::new(Int64Array::from(vec![count]))],
        )?;
        return Ok(encode(
            update_count_schema(),
            futures::stream::iter(vec![Ok(batch)]).boxed(),
        ));
    }
    let batches = params::from_ipc(&ticket.parameters)?;
    let mut rows = params::rows(&batches)?;
    if rows.len() > 1 {
        return Err(Error::InvalidArgument(format!(
            "a query takes one row of parameters; {} were bound",
            rows.len()
        )));
    }
    let values = rows.pop().unwrap_or_default();
    run(node, ticket.query_id, ticket.sql, values).await
}

/// A statement ready to run on this node.
struct Execution {
    query_id: String,
    /// What DuckDB runs.
    sql: String,
    /// What the query log shows (the user's statement).
    logged_sql: String,
    values: Vec<Value>,
    reads: crate::read::ReadSet,
    /// Names and types to give the result, if `sql` is not the user's statement.
    expected: Option<SchemaRef>,
    distribution: Distribution,
    /// When the query started (before its fragments ran), for the log.
    started: (i64, std::time::Instant),
}

/// Starts `sql` on a blocking thread; returns once DuckDB has produced the result schema (or an
/// error), then streams the batches.
pub(crate) async fn run(
    node: &Arc<Node>,
    query_id: String,
    sql: String,
    values: Vec<Value>,
) -> Result<FlightDataStream> {
    let started = (crate::base::now_ms(), std::time::Instant::now());
    // A ticket or handle is the client's to alter: what it holds is checked again, for this
    // caller, exactly as a statement sent now would be.
    let plan = checked(node, &sql).await?;
    if !plan.is_query() {
        return Err(Error::Forbidden(
            "a statement ticket may hold only a query (statements that change data run at \
             GetFlightInfo); nothing ran"
                .into(),
        ));
    }
    let sql = plan.query_text(&sql).to_string();
    // A cancel while the peers' fragments run stops the wait, and dropping their streams stops
    // the fragments on the peers.
    let stop = node.reads.queries.stop_token(&query_id);
    let prepared = tokio::select! {
        prepared = crate::cluster::exec::prepare(&node.cluster, &sql, &query_id, !values.is_empty()) => prepared?,
        () = stop.cancelled() => return Err(Error::Cancelled(query_id)),
    };
    let query = match prepared {
        Some(p) => Execution {
            query_id,
            sql: p.sql,
            logged_sql: sql,
            values,
            reads: p.reads,
            expected: p.expected,
            distribution: p.distribution,
            started,
        },
        None => Execution {
            reads: node.reads.prepare_reads(&sql).await?,
            query_id,
            sql: sql.clone(),
            logged_sql: sql,
            values,
            expected: None,
            distribution: Distribution {
                shape: "local",
                ..Distribution::default()
            },
            started,
        },
    };
    execute(node, query).await
}

/// Runs a prepared execution on a blocking thread; returns once DuckDB has produced the result
/// schema (or an error), then streams the batches.
async fn execute(node: &Arc<Node>, query: Execution) -> Result<FlightDataStream> {
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
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<RecordBatch, FlightError>>(4);
    // A node's own fragments count only against the total: their coordinator's caller was
    // counted where the query came in.
    let holder = (distribution.shape != "fragment")
        .then(crate::auth::slot_holder)
        .flatten();
    let slot = node.reads.slots.acquire(holder)?;
    // Set when the query fails after its schema went out (its reader stalled, say): the
    // stream ends in this error after what was sent, never as if complete, and setting it
    // never waits for a reader.
    let failed: Arc<parking_lot::Mutex<Option<Status>>> = Arc::default();
    let failed_at_end = Arc::clone(&failed);
    let stall = node.base.config.stall_timeout;
    let runtime = tokio::runtime::Handle::current();
    // The connection the query runs on, while it runs: a reader that goes away before the end
    // interrupts it there and then (a fragment busy with an aggregate sends nothing for long).
    let running: Arc<parking_lot::Mutex<Option<Arc<duckdb::InterruptHandle>>>> = Arc::default();
    let mut abandoned = StopWhenAbandoned {
        running: Arc::clone(&running),
        finished: false,
    };
    let worker = Arc::clone(node);
    node.base.metrics.queries.inc();
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
                .reads
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
                        Some(e) => crate::cluster::exec::conform_to(&batch?, e)?,
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
            let stopped = worker.reads.queries.finish(&query_id, &interrupt, timeout);
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
        worker
            .reads
            .query_log
            .record(crate::read::system::LoggedQuery {
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
                None => *failed.lock() = Some(Status::from(e)),
            }
        }
    });
    let schema = schema_rx.await.map_err(|_| {
        Error::Internal("query worker stopped before it produced a schema".into())
    })??;
    // A stopped query's stream ends with its error, not as if it were complete.
    let end = futures::stream::once(async move { failed_at_end.lock().take() })
        .filter_map(|s| async move { s.map(|s| Err(FlightError::Tonic(Box::new(s)))) });
    let finished = futures::stream::poll_fn(move |_| {
        // The whole guard moves in (not just its field), so that it drops with the stream.
        let guard = &mut abandoned;
        guard.finished = true;
        std::task::Poll::Ready(None)
    });
    Ok(encode(
        schema,
        ReceiverStream::new(rx).chain(end).chain(finished).boxed(),
    ))
}

/// Interrupts a query whose result stream is dropped before its end.
struct StopWhenAbandoned {
    running: Arc<parking_lot::Mutex<Option<Arc<duckdb::InterruptHandle>>>>,
    finished: bool,
}

impl Drop for StopWhenAbandoned {
    fn drop(&mut self) {
        if !self.finished
            && let Some(interrupt) = self.running.lock().as_ref()
        {
            interrupt.interrupt();
        }
    }
}

/// Encodes batches as Flight data; the schema goes first even when there are no rows.
pub(crate) fn encode(
    schema: SchemaRef,
    batches: futures::stream::BoxStream<'static, std::result::Result<RecordBatch, FlightError>>,
) -> FlightDataStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        });
    Box::pin(stream)
}
