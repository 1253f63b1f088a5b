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
use super::query::{checked, query_schema, run, statement_info};
use crate::engine::arrow_schema_of_types;
use crate::error::{Error, Result};
use crate::node::{Node, blocking};
use crate::params;

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
    node.catch_up().await;
    let is_query = plan.is_query();
    let worker = Arc::clone(node);
    let text = plan.query_text(&sql).to_string();
    let (dataset, parameters) = blocking(move || {
        let conn = worker.engine.pooled()?;
        let dataset = if is_query {
            Some(query_schema(&conn, &plan, &text)?)
        } else {
            None
        };
        // Parameter types as DuckDB infers them; unknown ones are Null.
        let types = worker.engine.parameter_types(&text).unwrap_or_default();
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
    let handle = node.prepared.insert(sql, is_query);
    Ok(ActionCreatePreparedStatementResult {
        prepared_statement_handle: Bytes::from(handle),
        dataset_schema: match dataset {
            Some(s) => schema_bytes(&s)?,
            None => Bytes::new(),
        },
        parameter_schema: schema_bytes(&parameters)?,
    })
}

async fn read_parameters(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>> {
    let batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    )
    .try_collect::<Vec<_>>()
    .await
    .map_err(|e| Error::InvalidArgument(format!("reading bound parameters: {e}")))?;
    Ok(batches)
}

/// DoPut of parameters for a prepared query.
pub(crate) async fn bind(
    node: &Arc<Node>,
    handle: Bytes,
    stream: PeekableFlightDataStream,
) -> Result<DoPutPreparedStatementResult> {
    node.prepared.get(&handle)?;
    let batches = read_parameters(stream).await?;
    params::rows(&batches)?;
    node.prepared.bind(&handle, batches)?;
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
    let p = node.prepared.get(handle)?;
    statement_info(node, &p.sql, p.parameters, descriptor).await
}

/// DoGet with a prepared-statement command as the ticket.
pub(crate) async fn do_get(node: &Arc<Node>, handle: &[u8]) -> Result<FlightDataStream> {
    let p = node.prepared.get(handle)?;
    let mut rows = params::rows(&p.parameters)?;
    if rows.len() > 1 {
        return Err(Error::InvalidArgument(format!(
            "a query takes one row of parameters; {} were bound",
            rows.len()
        )));
    }
    let query_id = uuid::Uuid::new_v4().to_string();
    node.queries.issue(&query_id);
    run(node, query_id, p.sql, rows.pop().unwrap_or_default()).await
}

/// DoPut executing a prepared update; parameters arrive in the same stream.
pub(crate) async fn update(
    node: &Arc<Node>,
    handle: &[u8],
    stream: PeekableFlightDataStream,
) -> Result<i64> {
    let p = node.prepared.get(handle)?;
    let sent = read_parameters(stream).await?;
    let parameters = if sent.iter().any(|b| b.num_rows() > 0) {
        sent
    } else {
        p.parameters
    };
    node.execute_update(&p.sql, parameters).await
}
