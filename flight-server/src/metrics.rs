//! Prometheus metrics of the node, served as text on `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The node's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Flight RPCs answered, by method and gRPC status code.
    pub requests: IntCounterVec,
    /// Rows accepted by ingest (all paths).
    pub ingest_rows: IntCounter,
    /// Arrow bytes accepted by ingest.
    pub ingest_bytes: IntCounter,
    /// Queries started.
    pub queries: IntCounter,
    /// Query durations from start to last batch, in seconds.
    pub query_seconds: Histogram,
    /// Flushes completed.
    pub flushes: IntCounter,
    /// Flushes that failed (and will be retried).
    pub flush_failures: IntCounter,
    /// Rows written to Parquet by flushes.
    pub flushed_rows: IntCounter,
    /// Rows held in buffers.
    pub buffer_rows: IntGauge,
    /// Arrow bytes held in buffers.
    pub buffer_bytes: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("skein".into()), None).unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Flight RPCs answered, by method and status",
            ),
            &["method", "code"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let query_seconds = Histogram::with_opts(HistogramOpts::new(
            "query_duration_seconds",
            "Query durations from start to last batch",
        ))
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(query_seconds.clone()));
        Self {
            requests,
            ingest_rows: counter("ingest_rows_total", "Rows accepted by ingest"),
            ingest_bytes: counter("ingest_bytes_total", "Arrow bytes accepted by ingest"),
            queries: counter("queries_total", "Queries started"),
            query_seconds,
            flushes: counter("flushes_total", "Buffer flushes completed"),
            flush_failures: counter("flush_failures_total", "Buffer flushes that failed"),
            flushed_rows: counter("flushed_rows_total", "Rows written to Parquet by flushes"),
            buffer_rows: gauge("buffer_rows", "Rows held in buffers"),
            buffer_bytes: gauge("buffer_bytes", "Arrow bytes held in buffers"),
            registry,
        }
    }

    /// Counts one answered RPC.
    pub fn request(&self, method: &str, code: tonic::Code) {
        self.requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric names and help texts above are constants; construction cannot fail.
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition")
}
