//! Flight actions beyond prepared statements: cancelling queries, flushing buffers and listing
//! the cluster's members.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, Any, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use bytes::Bytes;
use prost::Message;

use super::DoActionStream;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::ticket::StatementTicket;

/// Name of the action that flushes buffers to Parquet.
pub(crate) const FLUSH: &str = "skein.flush";
/// Name of the action that compacts tables now.
pub(crate) const COMPACT: &str = "skein.compact";
/// Name of the action that lists the cluster's members.
pub(crate) const NODES: &str = "skein.nodes";
/// Name of the standard Flight action that cancels a query.
pub(crate) const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
pub(crate) const SNAPSHOT: &str = "skein.snapshot";
pub(crate) const SNAPSHOTS: &str = "skein.snapshots";
pub(crate) const RESTORE: &str = "skein.restore";
/// Name of the action that clears a departed node's unflushed marks.
pub(crate) const FORGET_NODE: &str = "skein.forget_node";

pub(crate) fn custom_actions() -> Vec<ActionType> {
    vec![
        ActionType {
            r#type: CANCEL_FLIGHT_INFO.into(),
            description: "Cancel the query of a FlightInfo. Request: CancelFlightInfoRequest; \
                          result: CancelFlightInfoResult"
                .into(),
        },
        ActionType {
            r#type: FLUSH.into(),
            description: "Write buffered rows to Parquet now; returns once they are in the \
                          manifest. Body: a table name (UTF-8), or empty for every table"
                .into(),
        },
        ActionType {
            r#type: COMPACT.into(),
            description: "Compact now: drop files past the retention, lay out by day the files \
                          written before the table had its time column, merge small files, \
                          delete replaced objects whose grace period is over. Body: a table \
                          name (UTF-8), or empty for every table; one JSON result per table: \
                          {table, merges, merged_files, expired_files, laid_out_files, \
                          deleted_objects, files}"
                .into(),
        },
        ActionType {
            r#type: NODES.into(),
            description: "The cluster's members, one result per node: a JSON object with \
                          node_id, address (Flight host:port), version and state. Body: empty"
                .into(),
        },
        ActionType {
            r#type: FORGET_NODE.into(),
            description: "Give up the unflushed rows of a node that is out of the cluster and \
                          will not come back (its disk is lost): queries on its tables answer \
                          again, without those rows. Body: JSON {\"node\": id}; result: JSON \
                          {node, tables}. Admin only; refused for a live member"
                .into(),
        },
        ActionType {
            r#type: SNAPSHOT.into(),
            description: "Store a snapshot of the catalog (tables, files, WAL positions) in \
                          the object store now. Body: empty; result: JSON {key, taken_at_ms, \
                          epoch, version}"
                .into(),
        },
        ActionType {
            r#type: SNAPSHOTS.into(),
            description: "List the stored catalog snapshots, oldest first: one JSON object \
                          per result. Body: empty"
                .into(),
        },
        ActionType {
            r#type: RESTORE.into(),
            description: "Restore the catalog from a snapshot. Body: JSON {\"snapshot\": key or \
                          \"latest\", \"dry_run\": true|false}; result: JSON with the tables, \
                          files and rows it brings back and any files missing from the store"
                .into(),
        },
    ]
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    snapshot: String,
    #[serde(default)]
    dry_run: bool,
}

/// The table an action's body names (empty: every table).
fn table_body(body: &[u8], action: &str) -> Result<String> {
    let name = std::str::from_utf8(body).map_err(|_| {
        Error::InvalidArgument(format!(
            "the {action} action's body must be a UTF-8 table name"
        ))
    })?;
    Ok(name.trim().to_string())
}

/// The table `name`, or with an empty name every table, that the caller may use.
fn tables_named(node: &Arc<Node>, name: &str) -> Result<Vec<Arc<crate::table::TableRuntime>>> {
    if name.is_empty() {
        return Ok(node
            .base
            .list_tables()
            .into_iter()
            .filter(|(m, _)| crate::auth::require_table(&m.name).is_ok())
            .map(|(_, rt)| rt)
            .collect());
    }
    crate::auth::require_table(name)?;
    Ok(vec![node.table(name)?])
}

fn json_result<T: serde::Serialize>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("encoding a result: {e}")))
}

/// Cancels the queries of every endpoint of `info`; returns whether any was known.
fn cancel_info(node: &Node, info: &FlightInfo) -> bool {
    let mut any = false;
    for endpoint in &info.endpoint {
        let Some(ticket) = &endpoint.ticket else {
            continue;
        };
        let Ok(any_msg) = Any::decode(ticket.ticket.as_ref()) else {
            continue;
        };
        if any_msg.type_url == skein_proto::FRAGMENT_TYPE_URL {
            // A scatter scan: its fragments run under the query's id on each node; this node
            // stops its own (peers stop theirs when the client drops their streams).
            if let Ok(f) = <skein_proto::Fragment as prost::Message>::decode(any_msg.value.as_ref())
            {
                any |= node.reads.queries.cancel(&f.query_id);
            }
            continue;
        }
        let Ok(Some(stmt)) = any_msg.unpack::<TicketStatementQuery>() else {
            continue;
        };
        if let Ok(t) = StatementTicket::decode(&stmt.statement_handle) {
            any |= node.reads.queries.cancel(&t.query_id);
        }
    }
    any
}

fn decode_info(bytes: &[u8]) -> Result<FlightInfo> {
    FlightInfo::decode(bytes)
        .map_err(|e| Error::InvalidArgument(format!("malformed FlightInfo in cancel request: {e}")))
}

pub(crate) fn cancel_query(
    node: &Node,
    request: ActionCancelQueryRequest,
) -> Result<ActionCancelQueryResult> {
    let info = decode_info(&request.info)?;
    // `CancelResult` values of the Flight SQL protocol (the enum is not exported by arrow-flight).
    const CANCELLED: i32 = 1;
    const NOT_CANCELLABLE: i32 = 3;
    let result = if cancel_info(node, &info) {
        CANCELLED
    } else {
        NOT_CANCELLABLE
    };
    Ok(ActionCancelQueryResult { result })
}

fn single(body: Bytes) -> DoActionStream {
    Box::pin(futures::stream::iter(vec![Ok(arrow_flight::Result {
        body,
    })]))
}

/// The members of the cluster: for now the static membership of this node alone. Its address is
/// the configured listen address, or the address the request arrived on when the configured one
/// names port 0 or no particular interface.
fn nodes(node: &Node, local_addr: Option<SocketAddr>) -> DoActionStream {
    let listen = node.base.config.listen;
    let address = match local_addr {
        Some(local) if listen.port() == 0 || listen.ip().is_unspecified() => local,
        _ => listen,
    };
    let ring = node.base.ring();
    if ring.len() > 1 {
        let results: Vec<_> = ring
            .members()
            .iter()
            .map(|m| {
                let member = serde_json::json!({
                    "node_id": m.node_id,
                    "address": m.address,
                    "version": m.version,
                    "state": "serving",
                });
                Ok(arrow_flight::Result {
                    body: Bytes::from(member.to_string()),
                })
            })
            .collect();
        return Box::pin(futures::stream::iter(results));
    }
    let member = serde_json::json!({
        "node_id": node.base.config.node_id,
        "address": address.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "state": "serving",
    });
    single(Bytes::from(member.to_string()))
}

/// Serves the actions that are not Flight SQL's own. `local_addr` is the address the request
/// arrived on, if the transport knows it.
pub(crate) async fn fallback(
    node: &Arc<Node>,
    local_addr: Option<SocketAddr>,
    action: Action,
) -> Result<DoActionStream> {
    match action.r#type.as_str() {
        CANCEL_FLIGHT_INFO => {
            let request = CancelFlightInfoRequest::decode(action.body.as_ref()).map_err(|e| {
                Error::InvalidArgument(format!("malformed CancelFlightInfoRequest: {e}"))
            })?;
            let info = request.info.ok_or_else(|| {
                Error::InvalidArgument("CancelFlightInfoRequest without a FlightInfo".into())
            })?;
            let status = if cancel_info(node, &info) {
                CancelStatus::Cancelled
            } else {
                CancelStatus::NotCancellable
            };
            let result = CancelFlightInfoResult {
                status: status as i32,
            };
            Ok(single(result.encode_to_vec().into()))
        }
        FLUSH => {
            crate::auth::require(crate::auth::Role::Writer, "flush")?;
            let table = table_body(&action.body, "flush")?;
            for rt in tables_named(node, &table)? {
                node.writes.flush_table(&rt).await?;
            }
            let flushed = if table.is_empty() {
                "*"
            } else {
                table.as_str()
            };
            let body = serde_json::json!({ "flushed": flushed });
            Ok(single(Bytes::from(body.to_string())))
        }
        COMPACT => {
            crate::auth::require(crate::auth::Role::Writer, "compact tables")?;
            let table = table_body(&action.body, "compact")?;
            let mut results = Vec::new();
            for rt in tables_named(node, &table)? {
                let report = node.maintenance.compact_table(&rt).await?;
                results.push(Ok(arrow_flight::Result {
                    body: json_result(&report)?,
                }));
            }
            Ok(Box::pin(futures::stream::iter(results)))
        }
        NODES => Ok(nodes(node, local_addr)),
        FORGET_NODE => {
            crate::auth::require(crate::auth::Role::Admin, "forget a node")?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Request {
                node: String,
            }
            let request: Request = serde_json::from_slice(&action.body).map_err(|e| {
                Error::InvalidArgument(format!(
                    "the forget_node action's body must be JSON {{\"node\": \"<node id>\"}}: {e}"
                ))
            })?;
            let tables = node.cluster.forget_node(&request.node).await?;
            let body = serde_json::json!({ "node": request.node, "tables": tables });
            Ok(single(Bytes::from(body.to_string())))
        }
        SNAPSHOT => {
            crate::auth::require(crate::auth::Role::Admin, "take catalog snapshots")?;
            Ok(single(json_result(&node.ddl.take_snapshot().await?)?))
        }
        SNAPSHOTS => {
            let results = node
                .ddl
                .list_snapshots()
                .await?
                .iter()
                .map(|s| json_result(s).map(|body| arrow_flight::Result { body }))
                .collect::<Vec<_>>();
            Ok(Box::pin(futures::stream::iter(
                results.into_iter().map(|r| r.map_err(tonic::Status::from)),
            )))
        }
        RESTORE => {
            crate::auth::require(crate::auth::Role::Admin, "restore the catalog")?;
            let request: RestoreRequest = serde_json::from_slice(&action.body).map_err(|e| {
                Error::InvalidArgument(format!(
                    "the restore action's body must be JSON {{\"snapshot\": \"latest\" or a key, \
                     \"dry_run\": true|false}}: {e}"
                ))
            })?;
            let plan = node
                .ddl
                .restore_snapshot(&request.snapshot, request.dry_run)
                .await?;
            let mut body = serde_json::to_value(&plan)
                .map_err(|e| Error::Internal(format!("encoding a result: {e}")))?;
            body["dry_run"] = serde_json::Value::Bool(request.dry_run);
            Ok(single(json_result(&body)?))
        }
        other => Err(Error::Unsupported(format!(
            "unknown action {other:?}; ListActions names the actions this node serves"
        ))),
    }
}
