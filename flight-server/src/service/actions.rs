//! Flight actions beyond prepared statements: cancelling queries and flushing buffers.

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
/// Name of the standard Flight action that cancels a query.
pub(crate) const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

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
    ]
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
        let Ok(Some(stmt)) = any_msg.unpack::<TicketStatementQuery>() else {
            continue;
        };
        if let Ok(t) = StatementTicket::decode(&stmt.statement_handle) {
            any |= node.queries.cancel(&t.query_id);
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

pub(crate) async fn fallback(node: &Arc<Node>, action: Action) -> Result<DoActionStream> {
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
            let table = std::str::from_utf8(&action.body)
                .map_err(|_| {
                    Error::InvalidArgument(
                        "the flush action's body must be a UTF-8 table name".into(),
                    )
                })?
                .trim()
                .to_string();
            let only = (!table.is_empty()).then_some(table.as_str());
            node.flush_all(only).await?;
            let body = serde_json::json!({ "flushed": only.map_or_else(|| "*".to_string(), str::to_string) });
            Ok(single(Bytes::from(body.to_string())))
        }
        other => Err(Error::Unsupported(format!(
            "unknown action {other:?}; ListActions names the actions this node serves"
        ))),
    }
}
