//! Prometheus metrics of the node, served as text on `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Bytes written to the WAL (framed records).
    pub wal_bytes: IntCounter,
    /// Records written to the WAL.
    pub wal_records: IntCounter,
    /// WAL syncs (one per group of records).
    pub wal_syncs: IntCounter,
    /// Time each WAL sync took, in seconds.
    pub wal_sync_seconds: Histogram,
    /// Records per WAL group (sharing one write and one sync).
    pub wal_group_records: Histogram,
    /// WAL records put back into buffers at start.
    pub wal_replayed_records: IntCounter,
    /// WAL segment files on disk.
    pub wal_segments: IntGauge,
    /// Writers that had to wait for buffer space.
    pub ingest_waits: IntCounter,
    /// Writers refused with RESOURCE_EXHAUSTED after waiting for buffer space.
    pub ingest_rejected: IntCounter,
    /// Parquet files queries read.
    pub files_read: IntCounter,
    /// Parquet files queries skipped by their statistics.
    pub files_pruned: IntCounter,
    /// Failed attempts to take in the shared catalog's changes.
    pub catalog_refresh_failures: IntCounter,
    /// Catalog snapshots stored.
    pub snapshots: IntCounter,
    /// Cache reads served locally, downloads, bytes downloaded, evictions, bytes held.
    pub cache_hits: IntGauge,
    pub cache_misses: IntGauge,
    pub cache_downloaded_bytes: IntGauge,
    pub cache_evictions: IntGauge,
    pub cache_bytes: IntGauge,
    /// Requests by table: batches ingested (`ingest`) and queries that read it (`query`).
    pub table_requests: IntCounterVec,
    /// Queries by plan shape across the cluster.
    pub query_shapes: IntCounterVec,
    /// Fragments this node ran on peers (as coordinator), by peer.
    pub fragments: IntCounterVec,
    /// Rows peers sent this node, by peer.
    pub peer_rows: IntCounterVec,
    /// Arrow bytes peers sent this node, by peer.
    pub peer_bytes: IntCounterVec,
    /// Files of each table in the manifest.
    pub table_files: IntGaugeVec,
    /// Parquet bytes of each table's files.
    pub table_bytes: IntGaugeVec,
    /// File rewrites by table and kind (`merge`, `relayout`, `delete`, `update`, `expire`).
    pub rewrites: IntCounterVec,
    /// Files a rewrite took out of the manifest, by kind.
    pub rewritten_files: IntCounterVec,
    /// How long rewrites took, by kind.
    pub rewrite_seconds: HistogramVec,
    /// Objects deleted: retired files' after their grace period, and uploads never committed.
    pub deleted_objects: IntCounter,
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
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(g.clone()));
            g
        };
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
            wal_bytes: counter("wal_bytes_total", "Bytes written to the WAL"),
            wal_records: counter("wal_records_total", "Records written to the WAL"),
            wal_syncs: counter("wal_syncs_total", "WAL syncs"),
            wal_sync_seconds: histogram(
                "wal_sync_duration_seconds",
                "Time each WAL sync took",
                prometheus::exponential_buckets(0.000_05, 2.0, 16)
                    .unwrap_or_else(|_| unreachable_metric()),
            ),
            wal_group_records: histogram(
                "wal_group_records",
                "Records per WAL group sharing one sync",
                prometheus::exponential_buckets(1.0, 2.0, 12)
                    .unwrap_or_else(|_| unreachable_metric()),
            ),
            wal_replayed_records: counter(
                "wal_replayed_records_total",
                "WAL records put back into buffers at start",
            ),
            wal_segments: gauge("wal_segments", "WAL segment files on disk"),
            ingest_waits: counter("ingest_waits_total", "Writers that waited for buffer space"),
            ingest_rejected: counter(
                "ingest_rejected_total",
                "Writers refused after waiting for buffer space",
            ),
            files_read: counter("query_files_read_total", "Parquet files read by queries"),
            files_pruned: counter(
                "query_files_pruned_total",
                "Parquet files queries skipped by their statistics",
            ),
            catalog_refresh_failures: counter(
                "catalog_refresh_failures_total",
                "Failed attempts to take in the shared catalog's changes",
            ),
            snapshots: counter("catalog_snapshots_total", "Catalog snapshots stored"),
            cache_hits: gauge(
                "cache_hits_total",
                "Object reads served from the local cache",
            ),
            cache_misses: gauge("cache_misses_total", "Objects downloaded into the cache"),
            cache_downloaded_bytes: gauge(
                "cache_downloaded_bytes_total",
                "Bytes downloaded into the cache",
            ),
            cache_evictions: gauge("cache_evictions_total", "Cache entries evicted"),
            cache_bytes: gauge("cache_bytes", "Bytes held in the local cache"),
            table_requests: counter_vec(
                "table_requests_total",
                "Per table: batches ingested (kind ingest) and queries reading it (kind query)",
                &["table", "kind"],
            ),
            query_shapes: counter_vec(
                "query_shapes_total",
                "Queries by how they ran across the cluster",
                &["shape"],
            ),
            fragments: counter_vec(
                "peer_fragments_total",
                "Query fragments run on peers by this node as coordinator",
                &["peer"],
            ),
            peer_rows: counter_vec("peer_rows_total", "Rows peers sent this node", &["peer"]),
            peer_bytes: counter_vec(
                "peer_bytes_total",
                "Arrow bytes peers sent this node",
                &["peer"],
            ),
            table_files: gauge_vec("table_files", "Files in a table's manifest", &["table"]),
            table_bytes: gauge_vec(
                "table_bytes",
                "Parquet bytes of a table's files",
                &["table"],
            ),
            rewrites: counter_vec(
                "rewrites_total",
                "File rewrites: merges, layouts by day, DELETE and UPDATE rewrites, retention drops",
                &["table", "kind"],
            ),
            rewritten_files: counter_vec(
                "rewritten_files_total",
                "Files taken out of the manifest by rewrites",
                &["kind"],
            ),
            rewrite_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new("rewrite_duration_seconds", "Time each rewrite took")
                        .buckets(
                            prometheus::exponential_buckets(0.005, 2.0, 14)
                                .unwrap_or_else(|_| unreachable_metric()),
                        ),
                    &["kind"],
                )
                .unwrap_or_else(|_| unreachable_metric());
                let _ = registry.register(Box::new(h.clone()));
                h
            },
            deleted_objects: counter(
                "deleted_objects_total",
                "Objects deleted: retired files after their grace period, uploads never committed",
            ),
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

impl skein_wal::Observer for Metrics {
    fn group_written(&self, records: usize, bytes: usize, sync: Option<std::time::Duration>) {
        self.wal_records.inc_by(records as u64);
        self.wal_bytes.inc_by(bytes as u64);
        self.wal_group_records.observe(records as f64);
        if let Some(d) = sync {
            self.wal_syncs.inc();
            self.wal_sync_seconds.observe(d.as_secs_f64());
        }
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
