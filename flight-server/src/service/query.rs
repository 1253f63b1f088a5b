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
use crate::engine::{ensure_select, result_schema};
use crate::error::{Error, Result};
use crate::node::{Node, blocking};
use crate::params;
use crate::sql::{Plan, plan};
use crate::ticket::StatementTicket;

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

/// `GetFlightInfo` for SQL with bound parameters.
pub(crate) async fn statement_info(
    node: &Arc<Node>,
    sql: &str,
    parameters: Vec<RecordBatch>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let plan = plan(sql, node.engine.catalog_name())?;
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
    let unparsed = matches!(plan, Plan::Unparsed);
    // A result schema depends only on the catalog: dashboards repeat their queries, and finding
    // the schema costs DuckDB a whole statement.
    let cache_key = (!unparsed && parameters.is_empty())
        .then(|| (node.catalog.snapshot().version, sql.to_string()));
    let cached = cache_key.as_ref().and_then(|k| node.schemas.get(k));
    let schema = match cached {
        Some(schema) => schema,
        None => {
            let (engine_node, text) = (Arc::clone(node), sql.to_string());
            let schema = blocking(move || {
                let conn = engine_node.engine.pooled()?;
                if unparsed {
                    ensure_select(&conn, &text)?;
                }
                result_schema(&conn, &text)
            })
            .await?;
            if let Some(k) = cache_key {
                node.schemas.put(k, Arc::clone(&schema));
            }
            schema
        }
    };
    let ticket = StatementTicket {
        query_id: query_id.clone(),
        sql: sql.to_string(),
        parameters: params::to_ipc(&parameters)?,
        update_count: None,
    };
    node.queries.issue(&query_id);
    info_for(&ticket, &schema, descriptor)
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

/// Starts `sql` on a blocking thread; returns once DuckDB has produced the result schema (or an
/// error), then streams the batches.
pub(crate) async fn run(
    node: &Arc<Node>,
    query_id: String,
    sql: String,
    values: Vec<Value>,
) -> Result<FlightDataStream> {
    let (schema_tx, schema_rx) = tokio::sync::oneshot::channel::<Result<SchemaRef>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<RecordBatch, FlightError>>(4);
    let slot = Arc::clone(&node.query_slots)
        .try_acquire_owned()
        .map_err(|_| {
            Error::ResourceExhausted(format!(
                "{} queries are running, the most this node runs at once (--max-queries); \
                 try again shortly",
                node.config.max_queries
            ))
        })?;
    let worker = Arc::clone(node);
    node.metrics.queries.inc();
    let started_ms = crate::system::now_ms();
    let started = std::time::Instant::now();
    let user = crate::auth::current().map(|id| id.user);
    let reads = node.prepare_reads(&sql).await?;
    tokio::task::spawn_blocking(move || {
        let mut schema_tx = Some(schema_tx);
        let timer = worker.metrics.query_seconds.start_timer();
        let mut sent_rows = 0u64;
        let outcome = (|| -> Result<()> {
            let mut conn = worker.engine.pooled()?;
            let interrupt = conn.interrupt_handle();
            let timeout = worker.config.query_timeout();
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
                let schema = stream.get_schema();
                let mut coalescer =
                    arrow::compute::BatchCoalescer::new(Arc::clone(&schema), TARGET_BATCH_ROWS);
                if let Some(s) = schema_tx.take() {
                    let _ = s.send(Ok(schema));
                }
                for batch in stream {
                    let batch = batch?;
                    coalescer.push_batch(batch)?;
                    while let Some(out) = coalescer.next_completed_batch() {
                        sent_rows += out.num_rows() as u64;
                        if tx.blocking_send(Ok(out)).is_err() {
                            return Ok(()); // the client went away
                        }
                    }
                }
                coalescer.finish_buffered_batch()?;
                while let Some(out) = coalescer.next_completed_batch() {
                    sent_rows += out.num_rows() as u64;
                    if tx.blocking_send(Ok(out)).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })();
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
        worker.query_log.record(crate::system::LoggedQuery {
            started_ms,
            user,
            sql: sql.clone(),
            duration: started.elapsed(),
            rows: sent_rows,
            status: match &outcome {
                Ok(()) => "ok".to_string(),
                Err(e) => format!(
                    "error: {}",
                    e.to_string().chars().take(200).collect::<String>()
                ),
            },
        });
        if let Err(e) = outcome {
            // Before the schema: the DoGet call itself fails; after it: the stream ends in error.
            match schema_tx.take() {
                Some(s) => {
                    let _ = s.send(Err(e));
                }
                None => {
                    let status = Status::from(e);
                    let _ = tx.blocking_send(Err(FlightError::Tonic(Box::new(status))));
                }
            }
        }
    });
    let schema = schema_rx.await.map_err(|_| {
        Error::Internal("query worker stopped before it produced a schema".into())
    })??;
    Ok(encode(schema, ReceiverStream::new(rx).boxed()))
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
