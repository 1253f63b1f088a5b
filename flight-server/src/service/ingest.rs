//! Bulk loads over DoPut: Flight SQL `CommandStatementIngest` (what ADBC's `adbc_ingest` sends)
//! and a plain Flight descriptor whose path names the table (pyarrow's `do_put`). Batches are
//! appended one by one as they arrive, so a stream never has to fit in memory.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    Any, CommandStatementIngest, DoPutUpdateResult, TableExistsOption, TableNotExistOption,
};
use arrow_flight::{PutResult, flight_descriptor::DescriptorType};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use skein_storage::ColumnMeta;

use crate::error::{Error, Result};
use crate::node::{Node, OnExists};
use crate::service::DoPutStream;
use crate::table::TableRuntime;
use crate::types::duckdb_type;

/// Batches of one stream appended at once.
const PIPELINE: usize = 2;

/// What to do with the target table.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Create the table if it does not exist (else fail).
    create: bool,
    /// If it exists: fail, append, or replace.
    exists: OnExists,
    /// Append when it exists (with `exists == Keep`).
    append: bool,
}

fn columns_of(schema: &SchemaRef) -> Result<Vec<ColumnMeta>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(ColumnMeta {
                name: f.name().clone(),
                sql_type: duckdb_type(f)?,
                nullable: f.is_nullable(),
            })
        })
        .collect()
}

async fn target(
    node: &Arc<Node>,
    table: &str,
    schema: &SchemaRef,
    mode: Mode,
) -> Result<Arc<TableRuntime>> {
    crate::auth::require(crate::auth::Role::Writer, "ingest")?;
    crate::auth::require_table(table)?;
    node.ddl.take_in_changes().await;
    match node.table(table) {
        Ok(rt) => match mode.exists {
            OnExists::Fail => Err(Error::TableExists {
                table: table.to_string(),
            }),
            OnExists::Keep if mode.append => Ok(rt),
            OnExists::Keep => Err(Error::TableExists {
                table: table.to_string(),
            }),
            OnExists::Replace => {
                node.create_table(table, columns_of(schema)?, OnExists::Replace)
                    .await
            }
        },
        Err(Error::UnknownTable { .. }) if mode.create => {
            // Another writer may create it between the lookup and here; then append to it.
            node.create_table(table, columns_of(schema)?, OnExists::Keep)
                .await
        }
        Err(e) => Err(e),
    }
}

fn same_fields(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// Appends every batch of `stream` to `table`; returns the rows accepted.
async fn load(
    node: &Arc<Node>,
    table: &str,
    mode: Mode,
    stream: PeekableFlightDataStream,
) -> Result<i64> {
    let stream = crate::ipc_guard::guarded(stream, node.base.config.max_message_bytes);
    let mut decoder = FlightDataDecoder::new(stream.map_err(|s| FlightError::Tonic(Box::new(s))));
    let mut accepted: u64 = 0;
    let mut state: Option<(SchemaRef, Arc<TableRuntime>)> = None;
    let with_progress = |e: Error, accepted: u64| {
        if accepted == 0 {
            return e;
        }
        let note = format!("{accepted} rows of this stream were accepted before the error");
        match e {
            Error::SchemaMismatch { table, reason } => Error::SchemaMismatch {
                table,
                reason: format!("{reason} ({note})"),
            },
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{m} ({note})")),
            other => other,
        }
    };
    // Up to `PIPELINE` batches of one stream are appended at once (each on its own DuckDB
    // connection), so a single stream uses more than one core; the stream is acknowledged only
    // once every append has finished.
    let mut pending = FuturesUnordered::new();
    let mut failed: Option<Error> = None;
    loop {
        // Keep the pipeline full, then take the next message.
        while pending.len() >= PIPELINE {
            match pending.next().await {
                Some(Ok(rows)) => accepted += rows,
                Some(Err(e)) => {
                    failed.get_or_insert(e);
                }
                None => break,
            }
        }
        if failed.is_some() {
            break;
        }
        let Some(item) = decoder.next().await else {
            break;
        };
        let decoded = match item {
            Ok(d) => d,
            Err(e) => {
                // The transport's own refusals (and the IPC guard's) keep their message.
                let message = match &e {
                    FlightError::Tonic(status) => status.message().to_string(),
                    other => other.to_string(),
                };
                failed = Some(stream_error(&message, node.base.config.max_message_bytes));
                break;
            }
        };
        match decoded.payload {
            DecodedPayload::None => {}
            DecodedPayload::Schema(schema) => match &state {
                None => {
                    let rt = target(node, table, &schema, mode).await?;
                    state = Some((schema, rt));
                }
                Some((first, _)) if same_fields(first, &schema) => {}
                Some(_) => {
                    failed = Some(Error::SchemaMismatch {
                        table: table.to_string(),
                        reason: "the stream's schema changed mid-stream".into(),
                    });
                    break;
                }
            },
            DecodedPayload::RecordBatch(batch) => {
                let Some((schema, rt)) = &state else {
                    failed = Some(Error::InvalidArgument(
                        "record batch before the schema".into(),
                    ));
                    break;
                };
                if !same_fields(schema, &batch.schema()) {
                    failed = Some(Error::SchemaMismatch {
                        table: table.to_string(),
                        reason: "a batch's schema differs from the stream's schema".into(),
                    });
                    break;
                }
                let (node, rt) = (Arc::clone(node), Arc::clone(rt));
                pending.push(async move { node.append(&rt, &batch).await });
            }
        }
    }
    // Every append started finishes before the stream is answered.
    while let Some(r) = pending.next().await {
        match r {
            Ok(rows) => accepted += rows,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(with_progress(e, accepted));
    }
    if state.is_none() {
        return Err(Error::InvalidArgument(format!(
            "the DoPut stream for table {table:?} is empty: send an Arrow schema, then record batches"
        )));
    }
    Ok(accepted as i64)
}

/// What went wrong reading a DoPut stream: a message over the size bound is
/// RESOURCE_EXHAUSTED, anything else a bad request.
fn stream_error(message: &str, limit: usize) -> Error {
    if message.contains("message length too large") {
        Error::ResourceExhausted(format!(
            "a DoPut message is larger than the {} MiB this node takes (--max-message-bytes): send smaller record \
             batches ({message})",
            limit / (1024 * 1024)
        ))
    } else {
        Error::InvalidArgument(format!("reading the DoPut stream: {message}"))
    }
}

/// A slot for one ingest stream, or RESOURCE_EXHAUSTED.
fn ingest_slot(node: &Node) -> Result<tokio::sync::OwnedSemaphorePermit> {
    Arc::clone(&node.writes.ingest_slots)
        .try_acquire_owned()
        .map_err(|_| {
            Error::ResourceExhausted(format!(
                "{} ingest streams are open, the most this node takes at once \
                 (--max-ingest-streams); try again shortly",
                node.base.config.max_ingest_streams
            ))
        })
}

/// Flight SQL bulk ingest.
pub(crate) async fn statement_ingest(
    node: &Arc<Node>,
    cmd: CommandStatementIngest,
    stream: PeekableFlightDataStream,
) -> Result<i64> {
    let _slot = ingest_slot(node)?;
    if cmd.table.is_empty() {
        return Err(Error::InvalidArgument(
            "bulk ingest needs a table name".into(),
        ));
    }
    if cmd.temporary {
        return Err(Error::Unsupported(
            "temporary tables are not supported".into(),
        ));
    }
    if cmd.transaction_id.is_some() {
        return Err(Error::Unsupported(
            "transactions are not supported; every ingest commits on its own".into(),
        ));
    }
    if let Some(s) = cmd
        .schema
        .as_deref()
        .filter(|s| !s.eq_ignore_ascii_case("main"))
    {
        return Err(Error::InvalidArgument(format!(
            "schema {s:?} does not exist; tables live in \"main\""
        )));
    }
    let catalog = node.base.engine.catalog_name();
    if let Some(c) = cmd
        .catalog
        .as_deref()
        .filter(|c| !c.eq_ignore_ascii_case(catalog))
    {
        return Err(Error::InvalidArgument(format!(
            "catalog {c:?} does not exist; this node's catalog is {catalog:?}"
        )));
    }
    let options = cmd.table_definition_options.unwrap_or_default();
    let create = options.if_not_exist() == TableNotExistOption::Create;
    let (exists, append) = match options.if_exists() {
        TableExistsOption::Append => (OnExists::Keep, true),
        TableExistsOption::Replace => (OnExists::Replace, false),
        TableExistsOption::Fail | TableExistsOption::Unspecified => (OnExists::Fail, false),
    };
    load(
        node,
        &cmd.table,
        Mode {
            create,
            exists,
            append,
        },
        stream,
    )
    .await
}

/// A plain Flight DoPut whose descriptor path names the table: created if missing, else
/// appended to.
pub(crate) async fn descriptor_put(
    node: &Arc<Node>,
    mut stream: PeekableFlightDataStream,
    message: Any,
) -> Result<DoPutStream> {
    let _slot = ingest_slot(node)?;
    let descriptor = match stream.peek().await {
        Some(Ok(first)) => first.flight_descriptor.clone(),
        Some(Err(status)) => {
            return Err(stream_error(
                status.message(),
                node.base.config.max_message_bytes,
            ));
        }
        None => None,
    }
    .ok_or_else(|| Error::InvalidArgument("DoPut needs a flight descriptor".into()))?;
    if descriptor.r#type() != DescriptorType::Path {
        return Err(Error::InvalidArgument(format!(
            "unknown DoPut command {:?}: use a Flight SQL command or a path descriptor naming the table",
            message.type_url
        )));
    }
    let table = match descriptor.path.as_slice() {
        [table] => table.clone(),
        [schema, table] if schema.eq_ignore_ascii_case("main") => table.clone(),
        other => {
            return Err(Error::InvalidArgument(format!(
                "descriptor path {other:?} does not name a table: use [\"table\"] or [\"main\", \"table\"]"
            )));
        }
    };
    let mode = Mode {
        create: true,
        exists: OnExists::Keep,
        append: true,
    };
    let rows = load(node, &table, mode, stream).await?;
    let result = PutResult {
        app_metadata: DoPutUpdateResult { record_count: rows }
            .encode_to_vec()
            .into(),
    };
    Ok(Box::pin(futures::stream::iter(vec![Ok(result)])))
}
