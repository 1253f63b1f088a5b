//! System tables, queryable by SQL like any table: `skein_tables` (every table with its rows,
//! files and bytes), `skein_files` (every Parquet file with its size and rows), `skein_nodes`
//! (the cluster's members) and `skein_query_log` (the node's recent queries: when, who, the
//! text, how long, rows, outcome).
//!
//! A query that names one gets it as a temporary table on its own connection, filled from the
//! node's state at that moment.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

use skein_sql::quote::literal;

/// The system tables and their columns.
const TABLES: &[(&str, &str)] = &[
    (
        "skein_tables",
        "table_name VARCHAR, rows BIGINT, files BIGINT, bytes BIGINT, buffered_rows BIGINT, \
         columns BIGINT, created_at TIMESTAMP, flush_rows BIGINT, flush_bytes BIGINT, \
         flush_interval_ms BIGINT, time_column VARCHAR, retention_ms BIGINT, retired_files BIGINT",
    ),
    (
        "skein_files",
        "table_name VARCHAR, object_key VARCHAR, rows BIGINT, bytes BIGINT, created_at TIMESTAMP, \
         partition VARCHAR",
    ),
    (
        "skein_nodes",
        "node_id VARCHAR, address VARCHAR, version VARCHAR, state VARCHAR, started_ms BIGINT, \
         is_self BOOLEAN, unflushed_tables BIGINT",
    ),
    (
        "skein_query_log",
        "started_at TIMESTAMP, user_name VARCHAR, query VARCHAR, duration_ms DOUBLE, \
         rows BIGINT, status VARCHAR, bytes BIGINT, query_id VARCHAR, shape VARCHAR, fragments INTEGER, \
         shipped_rows BIGINT, shipped_bytes BIGINT, peers VARCHAR, request_id VARCHAR",
    ),
];

/// The names of the system tables.
pub(crate) const NAMES: &[&str] = &[
    "skein_tables",
    "skein_files",
    "skein_nodes",
    "skein_query_log",
];

fn columns_of(name: &str) -> &'static str {
    TABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, c)| c)
}

/// Empty permanent versions, so that a query's result schema can be found without filling them
/// (a query's own temporary ones shadow them).
pub(crate) fn permanent_statements() -> Vec<String> {
    TABLES
        .iter()
        .map(|(n, c)| format!("CREATE OR REPLACE TABLE main.{n} ({c})"))
        .collect()
}

/// Queries kept in the log.
const LOG_ENTRIES: usize = 1000;

/// One finished query.
#[derive(Debug, Clone)]
pub(crate) struct LoggedQuery {
    /// When it started, milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// The caller, if authentication is on.
    pub user: Option<String>,
    /// Its text.
    pub sql: String,
    /// From start to last batch.
    pub duration: Duration,
    /// Rows sent.
    pub rows: u64,
    /// Arrow bytes sent.
    pub bytes: u64,
    /// `ok`, or the gRPC code it failed with.
    pub status: String,
    /// Its id.
    pub query_id: String,
    /// The id of the request that ran it (the client's `x-request-id`, or one the node made up).
    pub request_id: String,
    /// How it ran across the cluster.
    pub distribution: Distribution,
}

/// How a query ran across the cluster: its plan shape and what its fragments shipped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Distribution {
    /// `local`, `scatter`, `partial` or `gather`.
    pub shape: &'static str,
    /// Fragments run, on this node and its peers.
    pub fragments: u32,
    /// Per node id: files it read, rows and Arrow bytes it sent this node, whether its part
    /// was retried elsewhere.
    pub peers: std::collections::BTreeMap<String, PeerShare>,
}

/// One node's share of a distributed query.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct PeerShare {
    /// Files assigned to it.
    pub files: usize,
    /// Rows it sent the coordinator.
    pub rows: u64,
    /// Arrow bytes it sent the coordinator.
    pub bytes: u64,
    /// Whether its files were read on another node after it failed.
    pub retried: bool,
}

impl Distribution {
    /// Rows the coordinator received from other nodes.
    pub(crate) fn shipped_rows(&self) -> u64 {
        self.peers.values().map(|p| p.rows).sum()
    }

    /// Arrow bytes the coordinator received from other nodes.
    pub(crate) fn shipped_bytes(&self) -> u64 {
        self.peers.values().map(|p| p.bytes).sum()
    }
}

/// The recent queries of this node.
#[derive(Debug, Default)]
pub(crate) struct QueryLog {
    entries: Mutex<VecDeque<LoggedQuery>>,
}

impl QueryLog {
    /// Records a finished query, dropping the oldest past the bound.
    pub(crate) fn record(&self, q: LoggedQuery) {
        let mut entries = self.entries.lock();
        if entries.len() == LOG_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(q);
    }

    fn snapshot(&self) -> Vec<LoggedQuery> {
        self.entries.lock().iter().cloned().collect()
    }
}

fn text(v: &str) -> String {
    literal(v)
}

fn opt_text(v: Option<&str>) -> String {
    v.map_or_else(|| "NULL".to_string(), literal)
}

/// `CREATE TEMP TABLE name (columns) ; INSERT … VALUES …` for `rows` (already SQL literals).
fn table_sql(name: &str, columns: &str, rows: Vec<String>) -> Vec<String> {
    let mut out = vec![format!("CREATE OR REPLACE TEMP TABLE {name} ({columns})")];
    for chunk in rows.chunks(500) {
        out.push(format!(
            "INSERT INTO temp.{name} VALUES {}",
            chunk.join(", ")
        ));
    }
    out
}

/// One table's figures for `skein_tables`.
#[derive(Debug)]
pub(crate) struct TableRow {
    /// Name.
    pub name: String,
    /// Rows in Parquet files.
    pub file_rows: u64,
    /// Parquet files.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Rows buffered on this node.
    pub buffered_rows: u64,
    /// Columns.
    pub columns: u64,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Its flush thresholds in effect (its options, else the node's defaults).
    pub flush: crate::config::FlushConfig,
    /// Its time column and retention, if set.
    pub time_column: Option<String>,
    pub retention_ms: Option<u64>,
    /// Files out of the manifest whose objects wait for their grace period.
    pub retired_files: u64,
}

/// One file for `skein_files`.
#[derive(Debug)]
pub(crate) struct FileRow {
    /// Its table.
    pub table: String,
    /// Object key.
    pub key: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Commit time, ms since the epoch.
    pub created_ms: i64,
    /// The day of the table's time column all its rows fall on, if they share one.
    pub partition: Option<String>,
}

/// One member for `skein_nodes`.
#[derive(Debug)]
pub(crate) struct NodeRow {
    /// Node id.
    pub node_id: String,
    /// Flight address.
    pub address: String,
    /// Version.
    pub version: String,
    /// State: `up` (in the ring) or `gone` (out of it, with unflushed rows).
    pub state: String,
    /// Process start, ms since the epoch (0 if unknown).
    pub started_ms: i64,
    /// Whether it is the node answering.
    pub is_self: bool,
    /// Tables it holds unflushed rows of.
    pub unflushed_tables: u64,
}

/// The statements that create the system tables `wanted` on a connection.
pub(crate) fn statements(
    wanted: &[&str],
    tables: impl FnOnce() -> Vec<TableRow>,
    files: impl FnOnce() -> Vec<FileRow>,
    nodes: impl FnOnce() -> Vec<NodeRow>,
    log: &QueryLog,
) -> Vec<String> {
    let mut out = Vec::new();
    if wanted.contains(&"skein_tables") {
        let rows = tables()
            .into_iter()
            .map(|t| {
                format!(
                    "({}, {}, {}, {}, {}, {}, make_timestamp({} * 1000), {}, {}, {}, {}, {}, {})",
                    text(&t.name),
                    t.file_rows + t.buffered_rows,
                    t.files,
                    t.bytes,
                    t.buffered_rows,
                    t.columns,
                    t.created_ms,
                    t.flush.flush_rows,
                    t.flush.flush_bytes,
                    t.flush.flush_interval.as_millis(),
                    opt_text(t.time_column.as_deref()),
                    t.retention_ms
                        .map_or_else(|| "NULL".to_string(), |r| r.to_string()),
                    t.retired_files
                )
            })
            .collect();
        out.extend(table_sql("skein_tables", columns_of("skein_tables"), rows));
    }
    if wanted.contains(&"skein_files") {
        let rows = files()
            .into_iter()
            .map(|f| {
                format!(
                    "({}, {}, {}, {}, make_timestamp({} * 1000), {})",
                    text(&f.table),
                    text(&f.key),
                    f.rows,
                    f.bytes,
                    f.created_ms,
                    opt_text(f.partition.as_deref())
                )
            })
            .collect();
        out.extend(table_sql("skein_files", columns_of("skein_files"), rows));
    }
    if wanted.contains(&"skein_nodes") {
        let rows = nodes()
            .into_iter()
            .map(|n| {
                format!(
                    "({}, {}, {}, {}, {}, {}, {})",
                    text(&n.node_id),
                    text(&n.address),
                    text(&n.version),
                    text(&n.state),
                    n.started_ms,
                    n.is_self,
                    n.unflushed_tables
                )
            })
            .collect();
        out.extend(table_sql("skein_nodes", columns_of("skein_nodes"), rows));
    }
    if wanted.contains(&"skein_query_log") {
        let rows = log
            .snapshot()
            .into_iter()
            .map(|q| {
                let d = &q.distribution;
                let peers = serde_json::to_string(&d.peers).unwrap_or_default();
                format!(
                    "(make_timestamp({} * 1000), {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    q.started_ms,
                    opt_text(q.user.as_deref()),
                    text(&q.sql),
                    q.duration.as_secs_f64() * 1000.0,
                    q.rows,
                    text(&q.status),
                    q.bytes,
                    text(&q.query_id),
                    text(if d.shape.is_empty() { "local" } else { d.shape }),
                    d.fragments,
                    d.shipped_rows(),
                    d.shipped_bytes(),
                    text(&peers),
                    text(&q.request_id)
                )
            })
            .collect();
        out.extend(table_sql(
            "skein_query_log",
            columns_of("skein_query_log"),
            rows,
        ));
    }
    out
}

/// Removes the system tables `wanted` from a connection.
pub(crate) fn drop_statements(wanted: &[&str]) -> Vec<String> {
    wanted
        .iter()
        .map(|n| format!("DROP TABLE IF EXISTS temp.{n}"))
        .collect()
}
