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

/// Background file maintenance: merging small files, laying files out by day, retention,
/// deleting replaced objects.
#[derive(Debug, Clone, Args)]
pub struct CompactionConfig {
    /// How often a node compacts the tables the ring gives it (`0s`: only on request, through
    /// the `skein.compact` action).
    #[arg(long, env = "SKEIN_COMPACTION_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub compaction_interval: Duration,
    /// Size merged files come near, in bytes of Parquet; files of at most half of it count as
    /// small.
    #[arg(long, env = "SKEIN_COMPACTION_TARGET_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub compaction_target_bytes: u64,
    /// Fewest small files worth merging into one.
    #[arg(long, env = "SKEIN_COMPACTION_MIN_FILES", default_value_t = 4)]
    pub compaction_min_files: usize,
    /// Files younger than this are left alone.
    #[arg(long, env = "SKEIN_COMPACTION_COOL_DOWN", default_value = "60s", value_parser = humantime::parse_duration)]
    pub compaction_cool_down: Duration,
    /// How long a merged, rewritten or expired file's object stays after it left the manifest,
    /// so queries planned before still read it; keep it longer than the longest query.
    #[arg(long, env = "SKEIN_COMPACTION_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub compaction_grace: Duration,
}

/// When a WAL append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalSync {
    /// After `fdatasync` (durable; the default).
    Fsync,
    /// After the write reaches the OS. UNSAFE: a power loss or kernel crash loses acknowledged
    /// rows. For benchmarks and scratch data.
    None,
}

/// The write-ahead log and the bound on buffered data.
#[derive(Debug, Clone, Args)]
pub struct WalSettings {
    /// When a write is acknowledged: `fsync` (durable) or `none` (unsafe; benchmarks only).
    #[arg(long, env = "SKEIN_WAL_SYNC", value_enum, default_value = "fsync")]
    pub wal_sync: WalSync,
    /// Compression of WAL records.
    #[arg(
        long,
        env = "SKEIN_WAL_COMPRESSION",
        value_enum,
        default_value = "none"
    )]
    pub wal_compression: WalCompression,
    /// Roll to a new WAL segment file at this size.
    #[arg(long, env = "SKEIN_WAL_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub wal_segment_bytes: u64,
    /// Start even if the WAL has corrupt records in the middle, skipping them (each skip is
    /// logged). Without it such a node refuses to start and names the segment and offset.
    #[arg(long, env = "SKEIN_WAL_SKIP_CORRUPT")]
    pub wal_skip_corrupt: bool,
    /// Most Arrow bytes held in buffers (all tables, flushing or not). Writers past it wait for
    /// flushes, then fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SKEIN_MAX_BUFFER_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_buffer_bytes: u64,
    /// How long a writer waits for buffer space before RESOURCE_EXHAUSTED.
    #[arg(long, env = "SKEIN_BUFFER_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub buffer_wait: Duration,
}

/// Shared storage: the S3 bucket for Parquet files and the Redis catalog. Without them a node
/// keeps both under its data directory.
#[derive(Debug, Clone, Args)]
pub struct StorageConfig {
    /// S3-compatible endpoint URL (e.g. `http://127.0.0.1:8333`); credentials come from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. Without it, files stay in the data
    /// directory.
    #[arg(long, env = "SKEIN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bucket for the Parquet files and catalog snapshots (created if missing).
    #[arg(long, env = "SKEIN_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Region name sent to the S3 service.
    #[arg(long, env = "SKEIN_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Redis URL of the shared catalog (e.g. `redis://127.0.0.1:6379/0`). Without it, the
    /// catalog is a file in the data directory.
    #[arg(long, env = "SKEIN_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Name of the cluster: the prefix of its keys in Redis and of its snapshots in the bucket.
    #[arg(long, env = "SKEIN_CLUSTER_NAME", default_value = "skein")]
    pub cluster_name: String,
    /// Deadline for one request to Redis or S3 (and for reaching them at start).
    #[arg(long, env = "SKEIN_STORAGE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub storage_timeout: Duration,
    /// Size bound of the local cache of S3 objects (bytes).
    #[arg(long, env = "SKEIN_CACHE_BYTES", default_value_t = 8 * 1024 * 1024 * 1024)]
    pub cache_bytes: u64,
    /// At start, if the catalog is empty, restore it from this snapshot (`latest`, or a key
    /// listed by the action `skein.snapshots`) before opening tables: after the catalog store
    /// lost its data. Ignored (with a warning) when the catalog is in use.
    #[arg(long, env = "SKEIN_RESTORE_SNAPSHOT")]
    pub restore_snapshot: Option<String>,
    /// Take a catalog snapshot into the object store this often (`0s`: only on request).
    #[arg(long, env = "SKEIN_SNAPSHOT_INTERVAL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Duration,
}

impl StorageConfig {
    /// Local directory and local catalog file.
    pub fn local() -> Self {
        Self {
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".into(),
            redis_url: None,
            cluster_name: "skein".into(),
            storage_timeout: Duration::from_secs(10),
            cache_bytes: 8 * 1024 * 1024 * 1024,
            restore_snapshot: None,
            snapshot_interval: Duration::from_secs(900),
        }
    }
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
    /// The address other nodes and clients reach this node's Flight endpoint at (`host:port`);
    /// defaults to the listen address (which must then not be a wildcard like 0.0.0.0).
    #[arg(long, env = "SKEIN_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// How long a node's membership lasts without a heartbeat (refreshed every third of it): a
    /// node that dies drops out of every ring within this time.
    #[arg(long, env = "SKEIN_HEARTBEAT_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_ttl: Duration,
    /// Deadline for one node's part of a distributed query; past it, its files are read on
    /// another node (its buffered rows cannot be, and the query then fails UNAVAILABLE).
    #[arg(long, env = "SKEIN_PEER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub peer_timeout: Duration,
    /// Answer a scan of one table with one endpoint per node (clients fetch the parts in
    /// parallel, straight from the nodes). `false`: one endpoint on this node, for clients that
    /// cannot follow endpoint locations (a fragment redeemed on the wrong node is passed on to
    /// the right one either way, so the answer is right; this only saves that hop).
    #[arg(long, env = "SKEIN_SCATTER_ENDPOINTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub scatter_endpoints: bool,
    /// Buffer flush thresholds (node defaults).
    #[command(flatten)]
    pub flush: FlushConfig,
    /// Write-ahead log and buffer bound.
    #[command(flatten)]
    pub wal: WalSettings,
    /// Compaction, retention and deferred deletion.
    #[command(flatten)]
    pub compaction: CompactionConfig,
    /// Object store and catalog.
    #[command(flatten)]
    pub storage: StorageConfig,
    /// DuckDB worker threads (0: one per core).
    #[arg(long, env = "SKEIN_QUERY_THREADS", default_value_t = 0)]
    pub query_threads: usize,
    /// Stop a query that runs longer than this (DEADLINE_EXCEEDED); `0s` means no limit.
    #[arg(long, env = "SKEIN_QUERY_TIMEOUT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
    /// Queries running at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SKEIN_MAX_QUERIES", default_value_t = 64)]
    pub max_queries: usize,
    /// Largest gRPC message a client may send or receive, and the most an Arrow IPC record
    /// batch may decompress to (checked before it is decoded).
    #[arg(long, env = "SKEIN_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Queries one user (or, with authentication off, one client connection) runs at once;
    /// `0`: half of --max-queries.
    #[arg(long, env = "SKEIN_MAX_QUERIES_PER_USER", default_value_t = 0)]
    pub max_queries_per_user: usize,
    /// A query whose reader takes nothing for this long is stopped and its stream ends in
    /// error (DEADLINE_EXCEEDED): a stalled client gives its query slot back.
    #[arg(long, env = "SKEIN_STALL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// Prepared statements open at once on this node; one user may hold half of them.
    #[arg(long, env = "SKEIN_MAX_PREPARED_STATEMENTS", default_value_t = 1024)]
    pub max_prepared_statements: usize,
    /// A prepared statement unused for this long is closed.
    #[arg(long, env = "SKEIN_PREPARED_STATEMENT_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub prepared_statement_ttl: Duration,
    /// Ingest streams (DoPut) at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SKEIN_MAX_INGEST_STREAMS", default_value_t = 64)]
    pub max_ingest_streams: usize,
    /// DuckDB's memory limit for queries (e.g. `4GB`); past it, queries spill or fail with an
    /// out-of-memory error instead of growing the process. Empty: DuckDB's default (80% of RAM).
    #[arg(long, env = "SKEIN_MEMORY_LIMIT", default_value = "")]
    pub memory_limit: String,
    /// The most disk DuckDB may spill query state to (bytes); `0`: half of the space free on
    /// the data directory's disk at start, so a query cannot fill the disk the WAL is on.
    #[arg(long, env = "SKEIN_MAX_SPILL_BYTES", default_value_t = 0)]
    pub max_spill_bytes: u64,
    /// Users (TOML: `[[users]] name, password, role` with role reader, writer or admin). With
    /// it, every call needs credentials: Basic in the handshake for a bearer token.
    #[arg(long, env = "SKEIN_AUTH_USERS")]
    pub auth_users: Option<PathBuf>,
    /// Key that signs bearer tokens; give every node of a cluster the same one.
    #[arg(long, env = "SKEIN_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// How long a bearer token is valid.
    #[arg(long, env = "SKEIN_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// TLS certificate chain (PEM) for the Flight endpoint; with --tls-key, clients must use TLS.
    #[arg(long, env = "SKEIN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching --tls-cert.
    #[arg(long, env = "SKEIN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to (mutual TLS).
    #[arg(long, env = "SKEIN_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// CA certificates (PEM) that other nodes' certificates chain to, for calls between nodes
    /// over TLS; defaults to this node's own --tls-cert (nodes sharing a certificate or its CA
    /// chain). Nodes present their --tls-cert to each other, so mutual TLS holds between them.
    #[arg(long, env = "SKEIN_TLS_PEER_CA", requires = "tls_cert")]
    pub tls_peer_ca: Option<PathBuf>,
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
            advertise_addr: None,
            heartbeat_ttl: Duration::from_secs(10),
            peer_timeout: Duration::from_secs(30),
            scatter_endpoints: true,
            flush: FlushConfig {
                flush_rows: 1_000_000,
                flush_bytes: 256 * 1024 * 1024,
                flush_interval: Duration::from_secs(3600),
            },
            wal: WalSettings {
                wal_sync: WalSync::Fsync,
                wal_compression: WalCompression::None,
                wal_segment_bytes: 64 * 1024 * 1024,
                wal_skip_corrupt: false,
                max_buffer_bytes: 1024 * 1024 * 1024,
                buffer_wait: Duration::from_secs(30),
            },
            compaction: CompactionConfig {
                compaction_interval: Duration::ZERO,
                compaction_target_bytes: 128 * 1024 * 1024,
                compaction_min_files: 4,
                compaction_cool_down: Duration::from_secs(60),
                compaction_grace: Duration::from_secs(600),
            },
            storage: StorageConfig::local(),
            query_threads: 2,
            query_timeout: Duration::from_secs(300),
            max_queries: 64,
            max_ingest_streams: 64,
            max_prepared_statements: 1024,
            max_queries_per_user: 0,
            stall_timeout: Duration::from_secs(60),
            prepared_statement_ttl: Duration::from_secs(3600),
            max_message_bytes: 64 * 1024 * 1024,
            memory_limit: String::new(),
            max_spill_bytes: 0,
            auth_users: None,
            auth_secret: None,
            token_ttl: Duration::from_secs(3600),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_peer_ca: None,
            log_format: LogFormat::Text,
        }
    }
}

/// Compression of the batches in WAL records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalCompression {
    /// Arrow buffers as they are (fastest; best when the disk keeps up).
    None,
    /// LZ4 frames: cheap, for disks slower than the CPU.
    Lz4,
    /// zstd: smaller, more CPU.
    Zstd,
}
