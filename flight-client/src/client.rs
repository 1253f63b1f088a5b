//! [`Client`]: one connection to a node and the calls skein's tools make over it, each a plain
//! Flight SQL (or Flight) RPC.

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementIngest};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Empty,
    FlightEndpoint, FlightInfo, Ticket,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use crate::connect::{Auth, ConnectOptions, MAX_MESSAGE_BYTES, channel};
use crate::error::{Error, Result};
use crate::ingest::IngestMode;

/// Name of skein's action that flushes buffers to Parquet.
pub const FLUSH_ACTION: &str = "skein.flush";
/// Name of skein's action that lists the cluster's members.
pub const NODES_ACTION: &str = "skein.nodes";
/// Name of Flight's standard action that cancels a query.
pub const CANCEL_FLIGHT_INFO_ACTION: &str = "CancelFlightInfo";
/// The location Flight uses for "this same connection".
const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// A connection to one node. Cheap to clone: clones share the underlying HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    sql: FlightSqlServiceClient<Channel>,
    options: ConnectOptions,
}

/// A table as the catalog lists it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Catalog name, if the server names one.
    pub catalog: Option<String>,
    /// Schema (namespace) name, if the server names one.
    pub db_schema: Option<String>,
    /// Table name.
    pub name: String,
    /// `TABLE`, `VIEW`, …
    pub table_type: String,
    /// The table's Arrow schema, when asked for.
    pub schema: Option<SchemaRef>,
}

/// One member of the cluster, as the `skein.nodes` action describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Its Flight SQL address, `host:port`.
    pub address: String,
    /// Its `skein-server` version.
    pub version: String,
    /// `serving`, …
    pub state: String,
}

impl Client {
    /// Connects to the node named by `options` and authenticates (a Flight handshake for user
    /// and password; a bearer token is sent with each call).
    pub async fn connect(options: ConnectOptions) -> Result<Self> {
        let channel = channel(&options).await?;
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut sql = FlightSqlServiceClient::new_from_inner(inner);
        match &options.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                sql.handshake(user, password)
                    .await
                    .map_err(|e| Error::from_flight("authentication failed", e))?;
            }
            Auth::Bearer(token) => sql.set_token(token.clone()),
        }
        Ok(Self { sql, options })
    }

    /// A clone of this client that sends the metadata `key: value` with every call (e.g. a
    /// request id), sharing the connection.
    pub fn with_header(&self, key: &str, value: &str) -> Self {
        let mut client = self.clone();
        client.sql.set_header(key, value);
        client
    }

    /// The options this client was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// Asks the node to plan `sql` (Flight SQL `CommandStatementQuery`); the answer says where
    /// to fetch the results. DDL and DML are accepted too and answer a one-row count.
    pub async fn plan(&mut self, sql: &str) -> Result<FlightInfo> {
        self.sql
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| Error::from_flight("query failed", e))
    }

    /// Fetches the results of a planned query, endpoint after endpoint, as one stream.
    pub fn fetch(&self, info: &FlightInfo) -> QueryStream {
        let schema = info
            .clone()
            .try_decode_schema()
            .ok()
            .map(std::sync::Arc::new);
        let client = self.clone();
        let batches = futures::stream::iter(info.endpoint.clone())
            .then(move |endpoint| {
                let client = client.clone();
                async move { client.fetch_endpoint(endpoint).await }
            })
            .try_flatten()
            .boxed();
        QueryStream { schema, batches }
    }

    /// Plans and fetches `sql`.
    pub async fn query(&mut self, sql: &str) -> Result<QueryStream> {
        let info = self.plan(sql).await?;
        Ok(self.fetch(&info))
    }

    /// Runs `sql` and collects every batch (for small results).
    pub async fn query_all(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.query(sql).await?.try_collect().await
    }

    /// Fetches the rows of one ticket from this node (how nodes read each other's fragments).
    pub async fn fetch_ticket(
        &self,
        ticket: bytes::Bytes,
    ) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
        let mut client = self.clone();
        let stream = client
            .sql
            .do_get(Ticket { ticket })
            .await
            .map_err(|e| Error::from_flight("fetching results failed", e))?;
        Ok(stream
            .map_err(|e| Error::from_flight("fetching results failed", e))
            .boxed())
    }

    /// [`Client::fetch_ticket`] with the result's schema, known once the node's first message
    /// arrived (also for a result without rows); nothing is read past the first batch.
    pub async fn fetch_ticket_with_schema(
        &self,
        ticket: bytes::Bytes,
    ) -> Result<(
        SchemaRef,
        futures::stream::BoxStream<'static, Result<RecordBatch>>,
    )> {
        let fail = |e| Error::from_flight("fetching results failed", e);
        let mut client = self.clone();
        let mut stream = client.sql.do_get(Ticket { ticket }).await.map_err(fail)?;
        let first = stream.next().await.transpose().map_err(fail)?;
        let schema = stream.schema().cloned().ok_or_else(|| Error::Protocol {
            operation: "fetching results failed".into(),
            message: "the node's answer carried no schema".into(),
        })?;
        let rest = futures::stream::iter(first.map(Ok))
            .chain(stream.map_err(fail))
            .boxed();
        Ok((schema, rest))
    }

    async fn fetch_endpoint(
        &self,
        endpoint: FlightEndpoint,
    ) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
        let ticket = endpoint.ticket.clone().ok_or_else(|| Error::Protocol {
            operation: "fetching results failed".into(),
            message: "the server sent an endpoint without a ticket".into(),
        })?;
        let elsewhere = endpoint
            .location
            .iter()
            .map(|l| l.uri.as_str())
            .find(|uri| !uri.is_empty() && *uri != REUSE_CONNECTION);
        let mut client = match elsewhere {
            Some(uri) => Client::connect(self.options.with_uri(uri)).await?,
            None => self.clone(),
        };
        let stream = client
            .sql
            .do_get(Ticket {
                ticket: ticket.ticket,
            })
            .await
            .map_err(|e| Error::from_flight("fetching results failed", e))?;
        Ok(stream
            .map_err(|e| Error::from_flight("fetching results failed", e))
            .boxed())
    }

    /// Asks the node to cancel the query of `info` (Flight's `CancelFlightInfo`).
    pub async fn cancel(&mut self, info: &FlightInfo) -> Result<CancelStatus> {
        let request = CancelFlightInfoRequest::new(info.clone());
        let results = self
            .action(CANCEL_FLIGHT_INFO_ACTION, request.encode_to_vec().into())
            .await?;
        let status = results
            .first()
            .and_then(|body| CancelFlightInfoResult::decode(body.as_ref()).ok())
            .map_or(CancelStatus::Unspecified, |r| r.status());
        Ok(status)
    }

    /// The tables the node serves, with their schemas if `include_schema`.
    pub async fn tables(&mut self, include_schema: bool) -> Result<Vec<TableInfo>> {
        self.get_tables(None, None, include_schema).await
    }

    async fn get_tables(
        &mut self,
        db_schema: Option<&str>,
        pattern: Option<&str>,
        include_schema: bool,
    ) -> Result<Vec<TableInfo>> {
        let operation = "listing tables failed";
        let request = CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: db_schema.map(str::to_string),
            table_name_filter_pattern: pattern.map(str::to_string),
            table_types: Vec::new(),
            include_schema,
        };
        let info = self
            .sql
            .get_tables(request)
            .await
            .map_err(|e| Error::from_flight(operation, e))?;
        let batches: Vec<RecordBatch> = self.fetch(&info).try_collect().await?;
        let mut tables = Vec::new();
        for batch in &batches {
            tables.extend(
                tables_of(batch, include_schema).map_err(|message| Error::Protocol {
                    operation: operation.into(),
                    message,
                })?,
            );
        }
        Ok(tables)
    }

    /// The schema of table `name` (`table` or `schema.table`).
    pub async fn table_schema(&mut self, name: &str) -> Result<SchemaRef> {
        let (db_schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name),
        };
        // Catalog patterns are LIKE patterns (`_` matches any character): filter exactly here.
        let found = self
            .get_tables(db_schema, Some(table), true)
            .await?
            .into_iter()
            .filter(|t| t.name == table)
            .find_map(|t| t.schema);
        found.ok_or_else(|| Error::Server {
            operation: format!("describing {name} failed"),
            code: tonic::Code::NotFound,
            message: format!("no table named {name}; `skein tables` lists them"),
        })
    }

    /// The actions the node serves (Flight `ListActions`).
    pub async fn list_actions(&mut self) -> Result<Vec<ActionType>> {
        let operation = "listing actions failed";
        let mut request = tonic::Request::new(Empty {});
        self.authorize(&mut request)?;
        let stream = self
            .sql
            .inner_mut()
            .list_actions(request)
            .await
            .map_err(|s| Error::server(operation, &s))?
            .into_inner();
        stream
            .map_err(|s| Error::server(operation, &s))
            .try_collect()
            .await
    }

    /// Runs action `name` with `body` and returns the bodies of its results.
    pub async fn action(&mut self, name: &str, body: Bytes) -> Result<Vec<Bytes>> {
        let operation = format!("action {name} failed");
        let stream = self
            .sql
            .do_action(Action {
                r#type: name.to_string(),
                body,
            })
            .await
            .map_err(|e| Error::from_flight(operation.clone(), e))?;
        stream
            .map_ok(|r| r.body)
            .map_err(|s| Error::server(operation.clone(), &s))
            .try_collect()
            .await
    }

    /// Writes buffered rows of `table` (or of every table) to Parquet; returns once they are in
    /// the manifest.
    pub async fn flush(&mut self, table: Option<&str>) -> Result<()> {
        let body = Bytes::from(table.unwrap_or_default().to_string());
        self.action(FLUSH_ACTION, body).await.map(drop)
    }

    /// The members of the cluster.
    pub async fn nodes(&mut self) -> Result<Vec<NodeInfo>> {
        let results = self.action(NODES_ACTION, Bytes::new()).await?;
        results
            .iter()
            .map(|body| {
                serde_json::from_slice(body).map_err(|e| Error::Protocol {
                    operation: "listing nodes failed".into(),
                    message: format!("unexpected answer of {NODES_ACTION}: {e}"),
                })
            })
            .collect()
    }

    /// Sends `batches` to `table` in one `DoPut` (Flight SQL `CommandStatementIngest`) and
    /// returns the number of rows the node acknowledged. All batches must share one schema.
    pub async fn ingest_put<S>(&mut self, table: &str, mode: IngestMode, batches: S) -> Result<u64>
    where
        S: Stream<Item = arrow_flight::error::Result<RecordBatch>> + Send + 'static,
    {
        let (db_schema, name) = match table.split_once('.') {
            Some((s, t)) => (Some(s.to_string()), t.to_string()),
            None => (None, table.to_string()),
        };
        let command = CommandStatementIngest {
            table_definition_options: Some(mode.table_definition_options()),
            table: name,
            schema: db_schema,
            catalog: None,
            temporary: false,
            transaction_id: None,
            options: Default::default(),
        };
        let rows = self
            .sql
            .execute_ingest(command, batches)
            .await
            .map_err(|e| Error::from_flight(format!("ingest into {table} failed"), e))?;
        Ok(u64::try_from(rows).unwrap_or_default())
    }

    /// Adds the bearer token, if any, to a request made with the low-level client.
    fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<()> {
        if let Some(token) = self.sql.token() {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                Error::InvalidArgument("the token is not a valid header value".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(())
    }
}

/// Decodes a `CommandGetTables` result batch.
fn tables_of(
    batch: &RecordBatch,
    include_schema: bool,
) -> std::result::Result<Vec<TableInfo>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::compute::cast;
    use arrow::datatypes::DataType;

    let column = |name: &str| -> std::result::Result<arrow::array::StringArray, String> {
        let array = batch
            .column_by_name(name)
            .ok_or_else(|| format!("GetTables result has no column {name}"))?;
        let array = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
        Ok(array.as_string::<i32>().clone())
    };
    let catalogs = column("catalog_name")?;
    let schemas = column("db_schema_name")?;
    let names = column("table_name")?;
    let types = column("table_type")?;
    let schema_bytes = if include_schema {
        let array = batch
            .column_by_name("table_schema")
            .ok_or("GetTables result has no table_schema column")?;
        Some(array.as_binary::<i32>().clone())
    } else {
        None
    };
    let text =
        |a: &arrow::array::StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    (0..batch.num_rows())
        .map(|i| {
            let schema = match &schema_bytes {
                Some(bytes) if !bytes.is_null(i) => Some(std::sync::Arc::new(
                    try_schema_from_ipc_buffer(bytes.value(i))
                        .map_err(|e| format!("bad table schema: {e}"))?,
                )),
                _ => None,
            };
            Ok(TableInfo {
                catalog: text(&catalogs, i),
                db_schema: text(&schemas, i),
                name: text(&names, i).unwrap_or_default(),
                table_type: text(&types, i).unwrap_or_default(),
                schema,
            })
        })
        .collect()
}

/// The results of a query: record batches as the node sends them, never collected unless asked.
pub struct QueryStream {
    schema: Option<SchemaRef>,
    batches: futures::stream::BoxStream<'static, Result<RecordBatch>>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl QueryStream {
    /// The result schema the node announced when planning (batches carry their own).
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.batches.poll_next_unpin(cx)
    }
}
