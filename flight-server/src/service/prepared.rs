//! Prepared statements: create (with result and parameter schemas), bind parameters over
//! DoPut, execute as a query or an update, close.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{ActionCreatePreparedStatementResult, DoPutPreparedStatementResult};
use arrow_flight::{FlightDescriptor, FlightInfo, IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use futures::TryStreamExt;

use super::FlightDataStream;
use super::query::{query_schema, run, statement_info};
use crate::base::blocking;
use crate::engine::arrow_schema_of_types;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::params;
use crate::statements::{checked, execute_update};

/// The user calling, who owns the prepared statements they create.
fn caller() -> Option<String> {
    crate::auth::current().map(|id| id.user)
}

fn schema_bytes(schema: &Schema) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

/// `CreatePreparedStatement`.
pub(crate) async fn create(
    node: &Arc<Node>,
    sql: String,
) -> Result<ActionCreatePreparedStatementResult> {
    let plan = checked(node, &sql).await?;
    node.ddl.catch_up().await;
    let is_query = plan.is_query();
    let worker = Arc::clone(node);
    let text = plan.query_text(&sql).to_string();
    let (dataset, parameters) = blocking(move || {
        let conn = worker.base.engine.pooled()?;
        let dataset = if is_query {
            Some(query_schema(&conn, &plan, &text)?)
        } else {
            None
        };
        // Parameter types as DuckDB infers them; unknown ones are Null.
        let types = worker
            .base
            .engine
            .parameter_types(&text)
            .unwrap_or_default();
        let known: Vec<(String, String)> = types
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.clone().map(|t| (format!("${}", i + 1), t)))
            .collect();
        let arrow_known = arrow_schema_of_types(&conn, &known).ok();
        let fields: Vec<Field> = types
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let name = format!("${}", i + 1);
                let dt = arrow_known
                    .as_ref()
                    .and_then(|s| s.field_with_name(&name).ok().map(|f| f.data_type().clone()))
                    .unwrap_or(DataType::Null);
                Field::new(name, dt, true)
            })
            .collect();
        Ok((dataset, Schema::new(fields)))
    })
    .await?;
    let handle = node.prepared.insert(caller().as_deref(), sql)?;
    Ok(ActionCreatePreparedStatementResult {
        prepared_statement_handle: Bytes::from(handle),
        dataset_schema: match dataset {
            Some(s) => schema_bytes(&s)?,
            None => Bytes::new(),
        },
        parameter_schema: schema_bytes(&parameters)?,
    })
}

/// The parameter batches of a bind: every message passes [`crate::ipc_guard`], and all of them
/// together hold at most `--max-message-bytes` (parameters are kept until the statement runs).
async fn read_parameters(
    node: &Arc<Node>,
    stream: PeekableFlightDataStream,
) -> Result<Vec<RecordBatch>> {
    let limit = node.base.config.max_message_bytes;
    let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        crate::ipc_guard::guarded(stream, limit)
            .map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    );
    let mut kept = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = batches
        .try_next()
        .await
        .map_err(|e| Error::InvalidArgument(format!("reading bound parameters: {e}")))?
    {
        bytes = bytes.saturating_add(batch.get_array_memory_size());
        if bytes > limit {
            return Err(Error::InvalidArgument(format!(
                "bound parameters exceed --max-message-bytes ({limit} bytes) in all: bind fewer \
                 rows at a time"
            )));
        }
        kept.push(batch);
    }
    Ok(kept)
}

/// DoPut of parameters for a prepared query.
pub(crate) async fn bind(
    node: &Arc<Node>,
    handle: Bytes,
    stream: PeekableFlightDataStream,
) -> Result<DoPutPreparedStatementResult> {
    node.prepared.get(&handle, caller().as_deref())?;
    let batches = read_parameters(node, stream).await?;
    params::rows(&batches)?;
    node.prepared.bind(&handle, caller().as_deref(), batches)?;
    Ok(DoPutPreparedStatementResult {
        prepared_statement_handle: Some(handle),
    })
}

/// GetFlightInfo of a prepared statement: a query with its bound parameters, or a statement
/// that changes data, which runs now.
pub(crate) async fn flight_info(
    node: &Arc<Node>,
    handle: &[u8],
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let p = node.prepared.get(handle, caller().as_deref())?;
    statement_info(node, &p.sql, p.parameters, descriptor).await
}

/// DoGet with a prepared-statement command as the ticket.
pub(crate) async fn do_get(node: &Arc<Node>, handle: &[u8]) -> Result<FlightDataStream> {
    let p = node.prepared.get(handle, caller().as_deref())?;
    let mut rows = params::rows(&p.parameters)?;
    if rows.len() > 1 {
        return Err(Error::InvalidArgument(format!(
            "a query takes one row of parameters; {} were bound",
            rows.len()
        )));
    }
    let query_id = uuid::Uuid::new_v4().to_string();
    node.reads.queries.issue(&query_id);
    run(node, query_id, p.sql, rows.pop().unwrap_or_default()).await
}

/// DoPut executing a prepared update; parameters arrive in the same stream.
pub(crate) async fn update(
    node: &Arc<Node>,
    handle: &[u8],
    stream: PeekableFlightDataStream,
) -> Result<i64> {
    let p = node.prepared.get(handle, caller().as_deref())?;
    let sent = read_parameters(node, stream).await?;
    let parameters = if sent.iter().any(|b| b.num_rows() > 0) {
        sent
    } else {
        p.parameters
    };
    execute_update(node, &p.sql, parameters).await
}
