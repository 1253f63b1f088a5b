//! In-process tests of the Flight service for what Python clients cannot send: empty and
//! malformed DoPut streams, and a schema change in the middle of a stream.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use skein_server::{Config, Server};
use tonic::Code;
use tonic::transport::Channel;

struct Fixture {
    _dir: tempfile::TempDir,
    channel: Channel,
    node: Arc<skein_server::node::Node>,
    served: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::test_config(dir.path());
        configure(&mut config);
        let server = Server::bind(config).await.expect("bind");
        let addr = server.flight_addr().expect("addr");
        let node = server.node();
        let served = tokio::spawn(async move {
            server.serve().await.expect("serve");
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Self {
            _dir: dir,
            channel,
            node,
            served,
        }
    }

    async fn stop(self) {
        self.node.base.shutdown.cancel();
        self.served.await.expect("server task");
    }

    async fn count(&self, sql: &str) -> i64 {
        let mut client = FlightSqlServiceClient::new(self.channel.clone());
        let info = client
            .execute(sql.to_string(), None)
            .await
            .expect("execute");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let batches: Vec<RecordBatch> = client
            .do_get(ticket)
            .await
            .expect("do_get")
            .try_collect()
            .await
            .expect("batches");
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count is BIGINT")
            .value(0)
    }
}

fn batch_of(ids: Vec<i64>) -> RecordBatch {
    RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids)) as ArrayRef)])
        .expect("batch")
}

async fn encode(batch: RecordBatch, descriptor: Option<FlightDescriptor>) -> Vec<FlightData> {
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(descriptor)
        .build(futures::stream::iter(vec![Ok(batch)]))
        .try_collect()
        .await
        .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_descriptorless_puts_are_refused() {
    let f = Fixture::start().await;
    let mut client = FlightServiceClient::new(f.channel.clone());
    let err = client
        .do_put(futures::stream::iter(Vec::<FlightData>::new()))
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("empty"), "{err}");

    let no_descriptor = encode(batch_of(vec![1]), None).await;
    let err = client
        .do_put(futures::stream::iter(no_descriptor))
        .await
        .expect_err("no descriptor");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("descriptor"), "{err}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_mid_stream_keeps_earlier_rows() {
    let f = Fixture::start().await;
    let mut client = FlightServiceClient::new(f.channel.clone());
    let mut messages = encode(
        batch_of(vec![1, 2, 3]),
        Some(FlightDescriptor::new_path(vec!["t".into()])),
    )
    .await;
    let other =
        RecordBatch::try_from_iter([("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)])
            .expect("batch");
    messages.extend(encode(other, None).await);
    let outcome = match client.do_put(futures::stream::iter(messages)).await {
        Ok(response) => response
            .into_inner()
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ()),
        Err(status) => Err(status),
    };
    let err = outcome.expect_err("schema change");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("mid-stream"), "{err}");
    assert!(err.message().contains("3 rows"), "{err}");
    // The rows before the change were accepted and stay.
    assert_eq!(f.count("SELECT count(*) FROM t").await, 3);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_with_schema_and_no_batches_creates_an_empty_table() {
    let f = Fixture::start().await;
    let mut client = FlightServiceClient::new(f.channel.clone());
    let empty = RecordBatch::new_empty(batch_of(vec![]).schema());
    let messages = FlightDataEncoderBuilder::new()
        .with_schema(empty.schema())
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["e".into()])))
        .build(futures::stream::empty())
        .try_collect::<Vec<_>>()
        .await
        .expect("encode");
    let results: Vec<_> = client
        .do_put(futures::stream::iter(messages))
        .await
        .expect("put")
        .into_inner()
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(f.count("SELECT count(*) FROM e").await, 0);
    f.stop().await;
}

/// Runs for minutes unless cancelled.
const SLOW: &str = "SELECT count(*) FROM range(1000000000000) a WHERE a.range % 7 = 3";

/// Fetches the first endpoint of `info`; returns the gRPC code the fetch ended with.
async fn fetch_code(channel: Channel, info: arrow_flight::FlightInfo) -> Code {
    let mut client = FlightSqlServiceClient::new(channel);
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let outcome = match client.do_get(ticket).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Code::Ok,
        Err(arrow_flight::error::FlightError::Tonic(status)) => status.code(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_stops_a_running_query() {
    let f = Fixture::start().await;
    let mut sql = FlightSqlServiceClient::new(f.channel.clone());
    let info = sql
        .execute(SLOW.to_string(), None)
        .await
        .expect("flight info");
    let fetch = tokio::spawn(fetch_code(f.channel.clone(), info.clone()));
    // Wait until the query runs.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while f.node.base.metrics.queries.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query never started"
        );
        tokio::task::yield_now().await;
    }
    let mut client = arrow_flight::FlightClient::new(f.channel.clone());
    let result = client
        .cancel_flight_info(arrow_flight::CancelFlightInfoRequest::new(info))
        .await
        .expect("cancel");
    assert_eq!(result.status(), arrow_flight::CancelStatus::Cancelled);
    let code = tokio::time::timeout(std::time::Duration::from_secs(30), fetch)
        .await
        .expect("the query stopped within the deadline")
        .expect("fetch task");
    assert_eq!(code, Code::Cancelled);
    // The node still answers.
    assert_eq!(f.count("SELECT count(*) FROM range(10)").await, 10);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_timeout_is_stopped() {
    let f = Fixture::start_with(|c| c.query_timeout = std::time::Duration::from_secs(1)).await;
    let mut sql = FlightSqlServiceClient::new(f.channel.clone());
    let info = sql
        .execute(SLOW.to_string(), None)
        .await
        .expect("flight info");
    let code = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        fetch_code(f.channel.clone(), info),
    )
    .await
    .expect("the query stopped within the deadline");
    assert_eq!(code, Code::DeadlineExceeded);
    // Short queries still run.
    assert_eq!(f.count("SELECT count(*) FROM range(10)").await, 10);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_cancelled_before_its_fetch_does_not_run() {
    let f = Fixture::start().await;
    let mut sql = FlightSqlServiceClient::new(f.channel.clone());
    let info = sql
        .execute(SLOW.to_string(), None)
        .await
        .expect("flight info");
    let mut client = arrow_flight::FlightClient::new(f.channel.clone());
    let result = client
        .cancel_flight_info(arrow_flight::CancelFlightInfoRequest::new(info.clone()))
        .await
        .expect("cancel");
    assert_eq!(result.status(), arrow_flight::CancelStatus::Cancelled);
    let code = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        fetch_code(f.channel.clone(), info),
    )
    .await
    .expect("refused at once");
    assert_eq!(code, Code::Cancelled);
    f.stop().await;
}
