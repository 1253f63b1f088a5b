//! The Flight SQL service: each RPC family lives in its own module under `service/`, and the
//! trait implementation here only routes to them.

mod actions;
mod catalog;
mod ingest;
mod prepared;
pub(crate) mod query;

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, Ticket,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;

pub(crate) type DoGetStream = <SkeinService as FlightService>::DoGetStream;
pub(crate) type DoPutStream = <SkeinService as FlightService>::DoPutStream;
pub(crate) type DoActionStream = <SkeinService as FlightService>::DoActionStream;

/// The Flight SQL service of one node.
#[derive(Debug, Clone)]
pub(crate) struct SkeinService {
    node: Arc<Node>,
    statics: Arc<catalog::Statics>,
}

impl SkeinService {
    /// A service answering for `node`.
    pub(crate) fn new(node: Arc<Node>) -> Self {
        let statics = Arc::new(catalog::Statics::new());
        Self { node, statics }
    }
}

/// Counts the RPC in the metrics and turns the node's error into a status.
fn answer<T>(node: &Node, method: &str, result: crate::error::Result<T>) -> Result<T, Status> {
    let result = result.map_err(Status::from);
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    node.base.metrics.request(method, code);
    result
}

#[tonic::async_trait]
impl FlightSqlService for SkeinService {
    type FlightService = SkeinService;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // The auth layer checked the Basic credentials; answer with a bearer token. With
        // authentication off, the handshake succeeds with no token.
        let token = crate::auth::handshake_token(self.node.auth.as_deref());
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().unwrap_or_default().into(),
        };
        let output = futures::stream::iter(vec![Ok(response)]);
        let mut response = Response::new(Box::pin(output) as _);
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r =
            query::statement_info(&self.node, &query.query, Vec::new(), request.into_inner()).await;
        answer(&self.node, "GetFlightInfo.Statement", r).map(Response::new)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = prepared::flight_info(
            &self.node,
            &cmd.prepared_statement_handle,
            request.into_inner(),
        )
        .await;
        answer(&self.node, "GetFlightInfo.PreparedStatement", r).map(Response::new)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, query.into_builder().schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.Catalogs", r).map(Response::new)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(
            &query,
            query.clone().into_builder().schema(),
            request.into_inner(),
        );
        answer(&self.node, "GetFlightInfo.Schemas", r).map(Response::new)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(
            &query,
            query.clone().into_builder().schema(),
            request.into_inner(),
        );
        answer(&self.node, "GetFlightInfo.Tables", r).map(Response::new)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, query.into_builder().schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.TableTypes", r).map(Response::new)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, self.statics.sql_info.schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.SqlInfo", r).map(Response::new)
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, catalog::primary_keys_schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.PrimaryKeys", r).map(Response::new)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, catalog::foreign_keys_schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.ExportedKeys", r).map(Response::new)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, catalog::foreign_keys_schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.ImportedKeys", r).map(Response::new)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, catalog::foreign_keys_schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.CrossReference", r).map(Response::new)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = catalog::info(&query, self.statics.xdbc.schema(), request.into_inner());
        answer(&self.node, "GetFlightInfo.XdbcTypeInfo", r).map(Response::new)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = query::do_get(&self.node, &ticket.statement_handle).await;
        answer(&self.node, "DoGet.Statement", r).map(Response::new)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = prepared::do_get(&self.node, &query.prepared_statement_handle).await;
        answer(&self.node, "DoGet.PreparedStatement", r).map(Response::new)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::catalogs(&self.node, query);
        answer(&self.node, "DoGet.Catalogs", r).map(Response::new)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::schemas(&self.node, query);
        answer(&self.node, "DoGet.Schemas", r).map(Response::new)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::tables(&self.node, query);
        answer(&self.node, "DoGet.Tables", r).map(Response::new)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::table_types(query);
        answer(&self.node, "DoGet.TableTypes", r).map(Response::new)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::sql_info(&self.statics, query);
        answer(&self.node, "DoGet.SqlInfo", r).map(Response::new)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::empty(catalog::primary_keys_schema());
        answer(&self.node, "DoGet.PrimaryKeys", r).map(Response::new)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::empty(catalog::foreign_keys_schema());
        answer(&self.node, "DoGet.ExportedKeys", r).map(Response::new)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::empty(catalog::foreign_keys_schema());
        answer(&self.node, "DoGet.ImportedKeys", r).map(Response::new)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::empty(catalog::foreign_keys_schema());
        answer(&self.node, "DoGet.CrossReference", r).map(Response::new)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = catalog::xdbc_type_info(&self.statics, query);
        answer(&self.node, "DoGet.XdbcTypeInfo", r).map(Response::new)
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        if message.type_url == skein_proto::FRAGMENT_TYPE_URL {
            let r = query::do_get_fragment(&self.node, &message.value).await;
            return answer(&self.node, "DoGet.Fragment", r).map(Response::new);
        }
        let r = Err(crate::error::Error::InvalidArgument(format!(
            "unknown ticket type {:?}: tickets come from this node's FlightInfo",
            message.type_url
        )));
        answer(&self.node, "DoGet.Unknown", r)
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let r = crate::statements::execute_update(&self.node, &ticket.query, Vec::new()).await;
        answer(&self.node, "DoPut.StatementUpdate", r)
    }

    async fn do_put_statement_ingest(
        &self,
        ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let r = ingest::statement_ingest(&self.node, ticket, request.into_inner()).await;
        answer(&self.node, "DoPut.StatementIngest", r)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let r = prepared::bind(
            &self.node,
            query.prepared_statement_handle,
            request.into_inner(),
        )
        .await;
        answer(&self.node, "DoPut.PreparedStatementQuery", r)
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let r = prepared::update(
            &self.node,
            &query.prepared_statement_handle,
            request.into_inner(),
        )
        .await;
        answer(&self.node, "DoPut.PreparedStatementUpdate", r)
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<DoPutStream>, Status> {
        let r = ingest::descriptor_put(&self.node, request.into_inner(), message).await;
        answer(&self.node, "DoPut.Path", r).map(Response::new)
    }

    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<DoPutStream>, Status> {
        let message = match error {
            DoPutError::MissingCommand => {
                "the DoPut stream is empty: send a flight descriptor and an Arrow schema, then record batches"
            }
            DoPutError::MissingFlightDescriptor => {
                "the first DoPut message has no flight descriptor: it must name the table or carry a Flight SQL command"
            }
        };
        answer(
            &self.node,
            "DoPut",
            Err(crate::error::Error::InvalidArgument(message.into())),
        )
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let r = prepared::create(&self.node, query.query).await;
        answer(&self.node, "DoAction.CreatePreparedStatement", r)
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = crate::auth::current().map(|id| id.user);
        let r = self
            .node
            .prepared
            .close(&query.prepared_statement_handle, caller.as_deref())
            .map(|_| ());
        answer(&self.node, "DoAction.ClosePreparedStatement", r)
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let r = actions::cancel_query(&self.node, query);
        answer(&self.node, "DoAction.CancelQuery", r)
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<DoActionStream>, Status> {
        let local_addr = request.local_addr();
        let r = actions::fallback(&self.node, local_addr, request.into_inner()).await;
        answer(&self.node, "DoAction", r).map(Response::new)
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(actions::custom_actions().into_iter().map(Ok).collect())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Stream type of `DoGet` responses built by the modules.
pub(crate) type FlightDataStream =
    Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;
