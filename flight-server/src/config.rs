//! Node configuration: command-line flags, each also read from a `SKEIN_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// When a table's buffer is written out as a Parquet file.
#[derive(Debug, Clone, Args)]
pub struct FlushConfig {
    /// Flush a table's buffer once it holds this many rows.
    #[arg(long, env = "SKEIN_FLUSH_ROWS", default_value_t = 1_000_000)]
    pub flush_rows: u64,
    /// Flush a table's buffer once it holds this many bytes of Arrow data.
    #[arg(long, env = "SKEIN_FLUSH_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub flush_bytes: u64,
    /// Flush a table's buffer once its oldest row is this old (e.g. `500ms`, `1m`).
    #[arg(long, env = "SKEIN_FLUSH_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
}

/// Everything a node needs to start.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "skein-server",
    version,
    about = "skein: an Arrow Flight SQL node on DuckDB"
)]
pub struct Config {
    /// Address of the Flight SQL (gRPC) endpoint. Port 0 picks a free port.
    #[arg(long, env = "SKEIN_LISTEN", default_value = "127.0.0.1:32010")]
    pub listen: SocketAddr,
    /// Address of the HTTP endpoint serving `/health` and `/metrics`. Port 0 picks a free port.
    #[arg(long, env = "SKEIN_HTTP_LISTEN", default_value = "127.0.0.1:32011")]
    pub http_listen: SocketAddr,
    /// Directory for the node's data: Parquet files, catalog, scratch space.
    #[arg(long, env = "SKEIN_DATA_DIR", default_value = "./skein-data")]
    pub data_dir: PathBuf,
    /// This node's id; it names the node's objects in storage, so keep it stable.
    #[arg(long, env = "SKEIN_NODE_ID", default_value = "node1")]
    pub node_id: String,
    /// Buffer flush thresholds (node defaults).
    #[command(flatten)]
    pub flush: FlushConfig,
    /// DuckDB worker threads (0: one per core).
    #[arg(long, env = "SKEIN_QUERY_THREADS", default_value_t = 0)]
    pub query_threads: usize,
    /// Stop a query that runs longer than this (DEADLINE_EXCEEDED); `0s` means no limit.
    #[arg(long, env = "SKEIN_QUERY_TIMEOUT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
    /// Log line format.
    #[arg(long, env = "SKEIN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// The query time limit, if there is one.
    pub fn query_timeout(&self) -> Option<Duration> {
        (!self.query_timeout.is_zero()).then_some(self.query_timeout)
    }

    /// A configuration for tests: loopback on free ports, data under `data_dir`.
    pub fn test_config(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            node_id: "test-node".to_string(),
            flush: FlushConfig {
                flush_rows: 1_000_000,
                flush_bytes: 256 * 1024 * 1024,
                flush_interval: Duration::from_secs(3600),
            },
            query_threads: 2,
            query_timeout: Duration::from_secs(300),
            log_format: LogFormat::Text,
        }
    }
}
