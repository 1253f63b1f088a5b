//! Queries: `GetFlightInfo` answers with the result schema and a ticket that carries the whole
//! statement; `DoGet` checks it again for its caller, has the cluster plan it (or the read path
//! read it here), and encodes what the read path's execution streams. Statements that change
//! data run at `GetFlightInfo` (the client's "execute") and their ticket returns the
//! affected-row count.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use duckdb::types::Value;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Status;

use super::FlightDataStream;
use crate::base::blocking;
use crate::engine::{explain_schema, result_schema};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::params;
use crate::read::system::Distribution;
use crate::sql::Plan;
use crate::statements::{checked, execute_update};
use crate::ticket::StatementTicket;
use skein_sql::plan::Shape;

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
        let count = execute_update(node, sql, parameters).await?;
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
    let query = crate::read::execute::Execution {
        query_id: fragment.query_id.clone(),
        sql: fragment.sql.clone(),
        logged_sql: fragment.sql.clone(),
        values,
        reads,
        expected: None,
        distribution,
        started: (crate::base::now_ms(), std::time::Instant::now()),
    };
    let (schema, batches) = node.reads.execute(query).await?;
    Ok(encode_results(schema, batches))
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
        Some(p) => crate::read::execute::Execution {
            query_id,
            sql: p.sql,
            logged_sql: sql,
            values,
            reads: p.reads,
            expected: p.expected,
            distribution: p.distribution,
            started,
        },
        None => crate::read::execute::Execution {
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
    let (schema, batches) = node.reads.execute(query).await?;
    Ok(encode_results(schema, batches))
}

/// Encodes a query's result; an error in its stream ends the Flight stream with its status.
fn encode_results(schema: SchemaRef, batches: crate::read::execute::Batches) -> FlightDataStream {
    let batches = batches.map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
    encode(schema, batches.boxed())
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
